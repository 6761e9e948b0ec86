"""SageMaker's framework images (scikit-learn, XGBoost, PyTorch, TensorFlow, Hugging Face), found
without the SageMaker Python SDK.

The facts are the SDK's (sagemaker-core 2.27.0, `image_uri_config/<framework>.json` and the rules
of `image_uris.retrieve`), kept here in a shape of our own for the versions of about the last three
years (all scikit-learn versions; XGBoost from 1.3-1, the first with an arm64 build): an image is
`<account>.dkr.ecr.<region>.<dns suffix>/<repository>:<tag>`, where

- the account is per region: one for the Deep Learning Containers (PyTorch, TensorFlow, Hugging
  Face) in most regions, with exceptions; another table for scikit-learn and XGBoost;
- the tag is the version as written (an alias such as `2.1` stays `2.1`), the processor (`cpu` or
  `gpu`, from the instance family: g* and p* are GPUs) where the framework has several, the Python
  tag where the build names one, and a build suffix (CUDA / OS) where it has one; a Hugging Face
  tag starts with the PyTorch version (as written) and `-transformers<version>`; arm64 images of
  scikit-learn and XGBoost have tags of their own;
- Graviton (arm64) instances of the SDK's families get the `inference_graviton` builds, for
  inference only: there are no arm64 training images.

tests/unit/test_sagemaker_images.py compares every combination held here with the SDK's own
`retrieve`. A version or region not held here is `Unknown` (the caller may ask the SDK); a
combination SageMaker has no image for is `NoImage`, with what to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from .sagemaker_types import GRAVITON_FAMILIES, family, is_graviton

TRAINING, INFERENCE, ARM64 = "training", "inference", "arm64"  # ARM64: the SDK's inference_graviton
FRAMEWORKS = ("sklearn", "xgboost", "pytorch", "tensorflow", "huggingface")
IMAGE_KEY = {TRAINING: "training.sagemaker.image_uri", INFERENCE: "serving.image_uri"}
NAMES = {"sklearn": "scikit-learn", "xgboost": "XGBoost", "pytorch": "PyTorch", "tensorflow": "TensorFlow",
         "huggingface": "Hugging Face"}  # fmt: skip


class NoImage(Exception):
    """SageMaker has no image for this combination; `key` is the setting to change (instance_type,
    framework_version, py_version or base_framework_version) and the message says how."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class Unknown(Exception):
    """Not in this table (an older version, a Neuron image, another framework or region): the
    SageMaker Python SDK may know it."""


# -- registries -------------------------------------------------------------------------------
DLC_ACCOUNT = "763104351884"  # the Deep Learning Containers' account, except in these regions
_DLC_ACCOUNTS = {
    "af-south-1": "626614931356", "ap-east-1": "871362719292", "ap-east-2": "975050140332",
    "ap-northeast-3": "364406365360", "ap-south-2": "772153158452", "ap-southeast-3": "907027046896",
    "ap-southeast-4": "457447274322", "ap-southeast-5": "550225433462", "ap-southeast-6": "633930458069",
    "ap-southeast-7": "590183813437", "ca-west-1": "204538143572", "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807", "eu-central-2": "380420809688", "eu-isoe-west-1": "371248457586",
    "eu-south-1": "692866216735", "eu-south-2": "503227376785", "eusc-de-east-1": "204133271717",
    "il-central-1": "780543022126", "me-central-1": "914824155844", "me-south-1": "217643126080",
    "me-west-1": "124382933778", "mx-central-1": "637423239942", "us-gov-east-1": "446045086412",
    "us-gov-west-1": "442386744353", "us-iso-east-1": "886529160074", "us-isob-east-1": "094389454867",
    "us-isof-east-1": "303241398832", "us-isof-south-1": "454834333376",
}  # fmt: skip
_DLC_DEFAULT_REGIONS = frozenset({
    "ap-northeast-1", "ap-northeast-2", "ap-south-1", "ap-southeast-1", "ap-southeast-2", "ca-central-1",
    "eu-central-1", "eu-north-1", "eu-west-1", "eu-west-2", "eu-west-3", "sa-east-1", "us-east-1", "us-east-2",
    "us-west-1", "us-west-2",
})  # fmt: skip
# scikit-learn and XGBoost (the SageMaker-built algorithm containers): an account per region
ALGORITHM_ACCOUNTS = {
    "af-south-1": "510948584623", "ap-east-1": "651117190479", "ap-northeast-1": "354813040037",
    "ap-northeast-2": "366743142698", "ap-northeast-3": "867004704886", "ap-south-1": "720646828776",
    "ap-south-2": "628508329040", "ap-southeast-1": "121021644041", "ap-southeast-2": "783357654285",
    "ap-southeast-3": "951798379941", "ap-southeast-4": "106583098589", "ca-central-1": "341280168497",
    "ca-west-1": "190319476487", "cn-north-1": "450853457545", "cn-northwest-1": "451049120500",
    "eu-central-1": "492215442770", "eu-central-2": "680994064768", "eu-north-1": "662702820516",
    "eu-south-1": "978288397137", "eu-south-2": "104374241257", "eu-west-1": "141502667606",
    "eu-west-2": "764974769150", "eu-west-3": "659782779980", "il-central-1": "898809789911",
    "me-central-1": "272398656194", "me-south-1": "801668240914", "sa-east-1": "737474898029",
    "us-east-1": "683313688378", "us-east-2": "257758044811", "us-gov-east-1": "237065988967",
    "us-gov-west-1": "414596584902", "us-iso-east-1": "833128469047", "us-isob-east-1": "281123927165",
    "us-isof-east-1": "108575199400", "us-isof-south-1": "124985052026", "us-west-1": "746614075791",
    "us-west-2": "246618743249",
}  # fmt: skip
# ECR's DNS suffix outside the `aws` partition (botocore's endpoint data), by region prefix
_DNS_SUFFIXES = (
    ("cn-", "amazonaws.com.cn"), ("us-iso-", "c2s.ic.gov"), ("us-isob-", "sc2s.sgov.gov"),
    ("us-isof-", "csp.hci.ic.gov"), ("eu-isoe-", "cloud.adc-e.uk"), ("eusc-", "amazonaws.eu"),
)  # fmt: skip

# Which regions a build is in: the newer the build, the more regions, with a few exceptions.
_R45 = _DLC_DEFAULT_REGIONS | frozenset(_DLC_ACCOUNTS)
_R42 = _R45 - {"eu-isoe-west-1", "eusc-de-east-1", "me-west-1"}
_R40 = _R42 - {"us-isof-east-1", "us-isof-south-1"}
_R38 = _R40 - {"us-iso-east-1", "us-isob-east-1"}
_R39 = _R38 | {"me-west-1"}
_R35 = _R40 - {"ap-east-2", "ap-southeast-5", "ap-southeast-6", "ap-southeast-7", "mx-central-1"}
_R31 = _R35 - {"ap-south-2", "ap-southeast-4", "eu-central-2", "eu-south-2"}
_ALGO = frozenset(ALGORITHM_ACCOUNTS)


# -- builds -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Build:
    """One image build: a framework version in one scope."""

    repository: str
    regions: frozenset[str]
    py_versions: tuple[str, ...] = ()  # (): the tag names no Python version, and py_version is not asked
    suffix: Mapping[str, str] = field(default_factory=dict)  # per processor: how the tag ends
    tag: str = ""  # the whole tag, where it follows no pattern (arm64 scikit-learn and XGBoost)
    base: str = ""  # Hugging Face: the PyTorch build under it (`pytorch2.5.1`) ...
    base_alias: str = ""  # ... and its short name (`pytorch2.5`)


@dataclass(frozen=True)
class Images:
    """One framework's builds for one scope (training, inference or arm64 inference)."""

    processors: tuple[str, ...]  # (): one image for every instance type
    versions: Mapping[str, Build]
    aliases: Mapping[str, str] = field(default_factory=dict)  # `2.1` -> `2.1.0`
    algorithm: bool = False  # scikit-learn and XGBoost: ALGORITHM_ACCOUNTS, else the DLC accounts


def _minor(*versions: str) -> dict[str, str]:
    """The aliases `major.minor` -> `versions` (each the build a short version means)."""
    return {v.rsplit(".", 1)[0]: v for v in versions}


def _builds(repository: str, rows: str, suffix: Mapping[str, str] | None = None) -> dict[str, Build]:
    """Builds of one repository from `version:regions:py` rows (regions: the name of their set
    above; py: empty where the tag names no Python version)."""
    sets = {"R45": _R45, "R42": _R42, "R40": _R40, "R39": _R39, "R38": _R38}
    out = {}
    for row in rows.split():
        version, regions, py = row.split(":")
        out[version] = Build(repository, sets[regions], (py,) if py else (), suffix or {})
    return out


def _hf(
    repository: str, regions: frozenset[str], rows: str, suffixes: Mapping[str, Mapping[str, str]]
) -> dict[str, Build]:
    """Hugging Face builds from `version:base:py:suffixes` rows, each on one PyTorch version."""
    out = {}
    for row in rows.split():
        version, base, py, name = row.split(":")
        out[version] = Build(repository, regions, (py,), suffixes[name], base=base, base_alias=base.rsplit(".", 1)[0])
    return out


_CPU_GPU = ("cpu", "gpu")
_GRAVITON_20 = {"cpu": "ubuntu20.04-sagemaker"}
_GRAVITON_22 = {"cpu": "ubuntu22.04-sagemaker"}
_SKLEARN = {
    v: Build("sagemaker-scikit-learn", _ALGO, ("py3",))
    for v in ("0.20.0", "0.23-1", "1.0-1", "1.2-1", "1.4-2", "1.4-2-py312", "1.9-0")
}
_XGBOOST = {v: Build("sagemaker-xgboost", _ALGO) for v in ("1.3-1", "1.5-1", "1.7-1", "3.0-5", "3.2-0")}
_HF_TRAINING = {
    f"cu{c}": {"gpu": f"cu{c}-ubuntu{u}"}
    for c, u in (
        ("118", "20.04"),
        ("121", "20.04"),
        ("124", "22.04"),
        ("128", "22.04"),
        ("129", "22.04"),
        ("130", "22.04"),
    )
}
_HF_INFERENCE = {
    "cu118-20": {"gpu": "cu118-ubuntu20.04", "cpu": "ubuntu20.04"},
    "cu118-22": {"gpu": "cu118-ubuntu20.04", "cpu": "ubuntu22.04"},
    "cu121": {"gpu": "cu121-ubuntu22.04", "cpu": "ubuntu22.04"},
    "cu124": {"gpu": "cu124-ubuntu22.04", "cpu": "ubuntu22.04"},
}

IMAGES: dict[tuple[str, str], Images] = {
    ("sklearn", TRAINING): Images(("cpu",), _SKLEARN, algorithm=True),
    ("sklearn", INFERENCE): Images(("cpu",), {v: b for v, b in _SKLEARN.items() if v != "1.4-2"}, algorithm=True),
    ("sklearn", ARM64): Images(("cpu",), {"1.0-1": replace(_SKLEARN["1.0-1"], tag="1.0-1-arm64-cpu-py3")},
                               algorithm=True),
    ("xgboost", TRAINING): Images((), _XGBOOST, algorithm=True),
    ("xgboost", INFERENCE): Images((), _XGBOOST, algorithm=True),
    ("xgboost", ARM64): Images((), {v: replace(_XGBOOST[v], tag=f"{v}-arm64") for v in ("1.3-1", "1.5-1")},
                               algorithm=True),
    ("pytorch", TRAINING): Images(_CPU_GPU, _builds("pytorch-training", """
        2.0.0:R40:py310 2.0.1:R40:py310 2.1.0:R42:py310 2.2.0:R42:py310 2.3.0:R42:py311 2.4.0:R38:py311
        2.5.1:R38:py311 2.6.0:R38:py312 2.7.1:R38:py312 2.8.0:R39:py312 2.9.0:R45:py312 2.10.0:R45:py313"""),
        _minor("2.0.1", "2.1.0", "2.2.0", "2.3.0", "2.4.0", "2.5.1", "2.6.0", "2.7.1", "2.8.0", "2.9.0", "2.10.0")),
    ("pytorch", INFERENCE): Images(_CPU_GPU, _builds("pytorch-inference", """
        2.0.0:R40:py310 2.0.1:R40:py310 2.1.0:R42:py310 2.2.0:R42:py310 2.3.0:R38:py311 2.4.0:R38:py311
        2.5.1:R38:py311 2.6.0:R39:py312"""),
        _minor("2.0.1", "2.1.0", "2.2.0", "2.3.0", "2.4.0", "2.5.1", "2.6.0")),
    ("pytorch", ARM64): Images(("cpu",), {
        **_builds("pytorch-inference-graviton", """
            2.0.0:R38:py310 2.0.1:R38:py310 2.1.0:R38:py310 2.2.1:R38:py310 2.3.0:R38:py311""", _GRAVITON_20),
        **_builds("pytorch-inference-graviton", "2.4.0:R38:py311", _GRAVITON_22),
        **_builds("pytorch-inference-arm64", "2.6.0:R38:py312", _GRAVITON_22)},
        _minor("2.0.1", "2.1.0", "2.2.1", "2.3.0", "2.4.0", "2.6.0")),
    ("tensorflow", TRAINING): Images(_CPU_GPU, _builds("tensorflow-training", """
        2.12.0:R38:py310 2.13.0:R42:py310 2.14.1:R42:py310 2.16.2:R38:py310 2.18.0:R38:py310 2.19.0:R38:py312
        2.21.0:R45:py312"""),
        _minor("2.12.0", "2.13.0", "2.14.1", "2.16.2", "2.18.0", "2.19.0", "2.21.0")),
    ("tensorflow", INFERENCE): Images(_CPU_GPU, _builds("tensorflow-inference", """
        2.12.1:R40: 2.13.0:R42: 2.14.1:R42: 2.16.1:R38: 2.18.0:R38: 2.19.0:R38: 2.20.0:R38:py312"""),
        _minor("2.12.1", "2.13.0", "2.14.1", "2.16.1", "2.18.0", "2.19.0", "2.20.0")),
    ("tensorflow", ARM64): Images(("cpu",), _builds("tensorflow-inference-graviton", """
        2.12.1:R40:py310 2.13.0:R40:py310 2.14.1:R40:py310 2.16.1:R38:py310""", _GRAVITON_20),
        _minor("2.12.1", "2.13.0", "2.14.1", "2.16.1")),
    ("huggingface", TRAINING): Images(("gpu",), _hf("huggingface-pytorch-training", _R31, """
        4.28.1:pytorch2.0.0:py310:cu118 4.36.0:pytorch2.1.0:py310:cu121 4.46.1:pytorch2.3.0:py311:cu121
        4.48.0:pytorch2.3.0:py311:cu121 4.49.0:pytorch2.5.1:py311:cu124 4.55.0:pytorch2.7.1:py312:cu128
        4.56.2:pytorch2.8.0:py312:cu129 5.3.0:pytorch2.9.0:py312:cu130""", _HF_TRAINING),
        _minor("4.28.1", "4.36.0", "4.46.1", "4.48.0", "4.49.0", "4.55.0", "4.56.2", "5.3.0")),
    ("huggingface", INFERENCE): Images(("gpu", "cpu"), _hf("huggingface-pytorch-inference", _R35, """
        4.28.1:pytorch2.0.0:py310:cu118-20 4.37.0:pytorch2.1.0:py310:cu118-22 4.48.0:pytorch2.3.0:py311:cu121
        4.49.0:pytorch2.6.0:py312:cu124 4.51.3:pytorch2.6.0:py312:cu124 5.5.3:pytorch2.6.0:py312:cu124""",
        _HF_INFERENCE),
        _minor("4.28.1", "4.37.0", "4.49.0", "4.51.3", "5.5.3")),  # no `4.48` here: the SDK has none
}  # fmt: skip


# -- resolution -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Found:
    """The build an image comes from and its tag; `uri` places it in a region."""

    framework: str
    version: str
    scope: str
    images: Images
    build: Build
    tag: str

    def uri(self, region: str) -> str:
        if region not in self.build.regions:
            what = f"{NAMES[self.framework]} {self.version} {self.scope}"
            raise Unknown(f"mlops-ci's table has no SageMaker {what} image in {region} (it has "
                          f"{len(self.build.regions)} other regions)")  # fmt: skip
        if self.images.algorithm:
            account = ALGORITHM_ACCOUNTS[region]
        else:
            account = _DLC_ACCOUNTS.get(region, DLC_ACCOUNT)
        suffix = next((s for prefix, s in _DNS_SUFFIXES if region.startswith(prefix)), "amazonaws.com")
        return f"{account}.dkr.ecr.{region}.{suffix}/{self.build.repository}:{self.tag}"


def image_uri(framework: str, version: str, scope: str, instance_type: str, region: str, *,
              py_version: str | None, base: str | None = None) -> str:  # fmt: skip
    """The URI of SageMaker's `framework` image for `scope` (training | inference) on
    `instance_type` in `region`. Raises NoImage or Unknown."""
    return find(framework, version, scope, instance_type, py_version=py_version, base=base).uri(region)


def versions(framework: str) -> list[str]:
    """Every version (and alias) of `framework` held here, in any scope."""
    seen: dict[str, None] = {}
    for (fw, _), images in IMAGES.items():
        if fw == framework:
            seen.update(dict.fromkeys([*images.versions, *images.aliases]))
    return list(seen)


def find(framework: str, version: str, scope: str, instance_type: str, *,
         py_version: str | None, base: str | None = None) -> Found:  # fmt: skip
    """The build and tag of the image, whatever the region (see `image_uri`)."""
    if framework not in FRAMEWORKS:
        raise Unknown(f"mlops-ci finds the images of {', '.join(FRAMEWORKS)} itself, not of {framework}")
    fix = f"or set {IMAGE_KEY[scope]}"
    name = NAMES[framework]
    fam = family(instance_type)
    if fam.startswith(("inf", "trn")):
        if framework == "pytorch" or (framework == "huggingface" and fam.startswith("inf")):
            raise Unknown(f"mlops-ci's table has no Neuron (Inferentia/Trainium) {name} images, for {instance_type}")
        if fam.startswith("trn") or framework != "xgboost":  # XGBoost's images run on any x86 type
            chip = "Trainium" if fam.startswith("trn") else "Inferentia"
            raise NoImage("instance_type", f"{instance_type} is an AWS {chip} type and SageMaker has no "
                          f"{name} image for it (its Neuron images are PyTorch's): use a CPU or GPU instance "
                          f"type, {fix}")  # fmt: skip
    scope_of_table = scope
    if is_graviton(instance_type):
        if scope == TRAINING:
            raise NoImage("instance_type", f"{instance_type} is a Graviton (arm64) type and SageMaker's {name} "
                          f"training images are x86 only: use an x86 type such as ml.m5.xlarge, {fix}")  # fmt: skip
        if framework == "huggingface":
            raise NoImage("instance_type", f"SageMaker has no arm64 (Graviton) {name} image, so {instance_type} "
                          f"cannot serve it: use an x86 instance type, {fix}")  # fmt: skip
        if fam not in GRAVITON_FAMILIES:
            raise NoImage("instance_type", f"SageMaker's arm64 {name} images are for the Graviton families "
                          f"{', '.join(sorted(GRAVITON_FAMILIES))} (the SageMaker SDK's list), not {instance_type}: "
                          f"pick one of those, {fix}")  # fmt: skip
        scope_of_table = ARM64
    images = IMAGES[(framework, scope_of_table)]
    full = images.aliases.get(version, version)
    build = images.versions.get(full)
    if build is None:
        if version not in versions(framework):
            raise Unknown(f"mlops-ci's table of SageMaker {name} images has no version {version} (it has "
                          f"{', '.join(images.versions)} for {scope_of_table})")  # fmt: skip
        what = "arm64 (Graviton) inference" if scope_of_table == ARM64 else scope
        other = " or an x86 instance type" if scope_of_table == ARM64 else ""
        key = "instance_type" if scope_of_table == ARM64 else "framework_version"  # arm64: as much the type's doing
        raise NoImage(key, f"SageMaker has a {name} {what} image for {', '.join(images.versions)} "
                      f"only, not for {version}: pick one of those{other}, {fix}")  # fmt: skip
    processor = ""
    if images.processors:
        if not fam:
            raise NoImage("instance_type", f"'{instance_type}' is not a SageMaker instance type (ml.<family>.<size>)")
        processor = "gpu" if fam[0] in "gp" else "cpu"
        if processor not in images.processors:
            only, example = ("CPU", "ml.m5.xlarge") if processor == "gpu" else ("GPU", "ml.g5.xlarge")
            raise NoImage("instance_type", f"SageMaker's {name} {scope} images run on {only} only (there is no "
                          f"{processor.upper()} image), so {instance_type} cannot run them: use a {only} instance "
                          f"type such as {example}, {fix}")  # fmt: skip
        if fam == "p2" and framework in ("pytorch", "tensorflow"):
            raise NoImage("instance_type", f"SageMaker's {name} images of this version do not run on P2 "
                          f"instances (retired from PyTorch 1.13 and TensorFlow 2.12 on): use a newer GPU type such "
                          f"as ml.g5.xlarge, {fix}")  # fmt: skip
    if build.base and base not in (build.base, build.base_alias):
        raise NoImage("base_framework_version", f"SageMaker's {name} {full} {scope} image is built on "
                      f"{build.base}, not {base or 'an unnamed base'}: set training.sagemaker.base_framework_version: "
                      f"{build.base} (or {build.base_alias}), {fix}")  # fmt: skip
    if build.py_versions and py_version not in build.py_versions:
        raise NoImage("py_version", f"SageMaker's {name} {version} {scope} image is built for "
                      f"{' and '.join(build.py_versions)} only, not {py_version}: set training.sagemaker.py_version: "
                      f"{build.py_versions[0]}, {fix}")  # fmt: skip
    if build.tag:
        tag = build.tag
    else:
        py = py_version if build.py_versions else ""
        if build.base:  # the PyTorch version as written, then the transformers version in full
            prefix = f"{(base or '').removeprefix('pytorch')}-transformers{full}"
        else:
            prefix = version
        tag = "-".join(p for p in (prefix, processor, py, build.suffix.get(processor, "")) if p)
    return Found(framework, version, scope, images, build, tag)


def problem(framework: str, version: str, scope: str, instance_type: str, *,
            py_version: str | None, base: str | None = None) -> NoImage | None:  # fmt: skip
    """Why SageMaker has no such image (config checks), or None: found, or not in the table."""
    try:
        find(framework, version, scope, instance_type, py_version=py_version, base=base)
    except NoImage as exc:
        return exc
    except Unknown:
        return None
    return None


# -- SageMaker Model Monitor's analyzer --------------------------------------------------------
# The pre-built container of data-quality baselining and monitoring jobs, one account per region
# (sagemaker-core 2.27.0, image_uri_config/model-monitor.json; the image has no tag). Compared with
# the SDK's `image_uris.retrieve("model-monitor", region)` by tests/unit/test_sagemaker_images.py.
MODEL_MONITOR_REPOSITORY = "sagemaker-model-monitor-analyzer"
MODEL_MONITOR_ACCOUNTS = {
    "af-south-1": "875698925577", "ap-east-1": "001633400207", "ap-northeast-1": "574779866223",
    "ap-northeast-2": "709848358524", "ap-northeast-3": "990339680094", "ap-south-1": "126357580389",
    "ap-southeast-1": "245545462676", "ap-southeast-2": "563025443158", "ap-southeast-3": "669540362728",
    "ca-central-1": "536280801234", "cn-north-1": "453000072557", "cn-northwest-1": "453252182341",
    "eu-central-1": "048819808253", "eu-central-2": "590183933784", "eu-north-1": "895015795356",
    "eu-south-1": "933208885752", "eu-south-2": "437450045455", "eu-west-1": "468650794304",
    "eu-west-2": "749857270468", "eu-west-3": "680080141114", "il-central-1": "843974653677",
    "me-central-1": "588750061953", "me-south-1": "607024016150", "sa-east-1": "539772159869",
    "us-east-1": "156813124566", "us-east-2": "777275614652", "us-isof-east-1": "853188333426",
    "us-isof-south-1": "467912361380", "us-west-1": "890145073186", "us-west-2": "159807026194",
}  # fmt: skip


def model_monitor_uri(region: str) -> str:
    """The Model Monitor analyzer image in `region`; Unknown where SageMaker has none listed."""
    account = MODEL_MONITOR_ACCOUNTS.get(region)
    if account is None:
        raise Unknown(f"SageMaker Model Monitor's analyzer image is not listed for region {region} (it is in "
                      f"{len(MODEL_MONITOR_ACCOUNTS)} regions); use one of those")  # fmt: skip
    suffix = next((s for prefix, s in _DNS_SUFFIXES if region.startswith(prefix)), "amazonaws.com")
    return f"{account}.dkr.ecr.{region}.{suffix}/{MODEL_MONITOR_REPOSITORY}"
