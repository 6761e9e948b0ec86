"""mlops_ci/backends/sagemaker_images.py against the SageMaker Python SDK's own `image_uris.retrieve`
(sagemaker-core, the dev extra): every combination the table holds resolves to the SDK's URI, and
what the SDK refuses is refused. The SDK is not a dependency of mlops-ci; without it these
comparisons are skipped (the error-message tests below still run)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from mlops_ci.backends import sagemaker_images as si
from mlops_ci.backends.sagemaker_types import GRAVITON_FAMILIES

CPU = ("ml.m5.xlarge", "ml.c5.2xlarge", "ml.r5.large", "ml.t3.medium")
GPU = ("ml.g4dn.xlarge", "ml.g5.2xlarge", "ml.g6.xlarge", "ml.p3.2xlarge", "ml.p4d.24xlarge", "ml.p5.48xlarge")
RETIRED = ("ml.p2.xlarge",)
NEURON = ("ml.inf1.xlarge", "ml.inf2.xlarge", "ml.trn1.2xlarge")
GRAVITON = tuple(f"ml.{f}.xlarge" for f in sorted(GRAVITON_FAMILIES))
OTHER_ARM = ("ml.m7g.large", "ml.c7gn.xlarge", "ml.r8g.large")  # arm64, but not in the SDK's Graviton list
X86 = CPU + GPU + RETIRED + NEURON
SDK_SCOPE = {si.TRAINING: "training", si.INFERENCE: "inference", si.ARM64: "inference_graviton"}
NOWHERE = "xx-nowhere-1"


def _sdk() -> ModuleType:
    return pytest.importorskip(
        "sagemaker.core.image_uris", reason="the SageMaker SDK (sagemaker-core, in the dev extra) is not installed"
    )


@pytest.fixture(scope="module")
def sdk() -> Iterator[ModuleType]:
    """The SDK's image_uris, with its two loaders cached (it reads a framework's JSON file and
    botocore's endpoint data on every call: 47 ms a call instead of 0.05 ms). Nothing else changes;
    the cached tables are compared with the files at the end."""
    image_uris = _sdk()
    from sagemaker.core import common_utils

    with pytest.MonkeyPatch.context() as mp:
        tables = functools.lru_cache(maxsize=None)(image_uris.config_for_framework)
        resolver = common_utils._botocore_resolver()
        mp.setattr(image_uris, "config_for_framework", tables)
        mp.setattr(common_utils, "_botocore_resolver", lambda: resolver)
        yield image_uris
        for framework in si.FRAMEWORKS:  # retrieve never changed a table it read
            path = Path(image_uris.__file__).parent / "image_uri_config" / f"{framework}.json"
            assert tables(framework) == json.loads(path.read_text()), framework


def sdk_uri(sdk: ModuleType, fw: str, scope: str, version: str, itype: str, region: str, py: str | None,
            base: str | None) -> str | None:  # fmt: skip
    """The SDK's URI, or None where it refuses (called as mlops_ci.backends.sagemaker.image_for calls it)."""
    extra = {"base_framework_version": base} if fw == "huggingface" else {}
    try:
        uri: str = sdk.retrieve(fw, region, version=version, py_version=py, instance_type=itype,
                                image_scope="training" if scope == si.TRAINING else "inference", **extra)  # fmt: skip
    except (ValueError, KeyError, NotImplementedError, AttributeError, TypeError):
        return None  # ValueError is its refusal; the others are how it fails on a missing Hugging Face base
    return uri


def ours(
    fw: str, scope: str, version: str, itype: str, region: str, py: str | None, base: str | None
) -> str | Exception:
    try:
        return si.image_uri(fw, version, scope, itype, region, py_version=py, base=base)
    except (si.NoImage, si.Unknown) as exc:
        return exc


def stricter_than_the_sdk(fw: str, scope: str, version: str, itype: str) -> str | None:
    """Where mlops-ci refuses on purpose what the SDK answers with an image that cannot work."""
    arm = si.family(itype) in GRAVITON_FAMILIES or itype in OTHER_ARM
    if arm and scope == si.TRAINING:
        return "Graviton training: the SDK answers with an arm64 inference image, or an x86 training image"
    if itype in OTHER_ARM:
        return "arm64 outside the SDK's Graviton families: the SDK answers with an x86 image"
    if fw == "sklearn" and arm and version != "1.0-1":
        return "the SDK answers any scikit-learn version on Graviton with its only arm64 image, 1.0-1's"
    return None


def names(images: si.Images, version: str) -> list[str]:
    """The version and every alias of it."""
    return [version, *(a for a, v in images.aliases.items() if v == version)]


def py_of(build: si.Build) -> str:
    return build.py_versions[0] if build.py_versions else "py3"  # py3: the config's default, ignored here


def bases(build: si.Build) -> list[str | None]:
    return [build.base, build.base_alias] if build.base else [None]


TABLES = sorted(si.IMAGES)


@pytest.mark.parametrize(("fw", "table"), TABLES, ids=[f"{f}-{t}" for f, t in TABLES])
def test_every_combination_in_the_table_is_the_sdks_image(sdk: ModuleType, fw: str, table: str):
    images = si.IMAGES[(fw, table)]
    scope = si.INFERENCE if table == si.ARM64 else table
    itypes = GRAVITON if table == si.ARM64 else X86
    checked = 0
    for version, build in images.versions.items():
        for name in names(images, version):
            for itype in itypes:
                for base in bases(build):
                    for region in sorted(build.regions):
                        mine = ours(fw, scope, name, itype, region, py_of(build), base)
                        if isinstance(mine, Exception):  # refusals: test_what_the_sdk_refuses_is_refused
                            break
                        assert mine == sdk_uri(sdk, fw, scope, name, itype, region, py_of(build), base), (
                            fw, scope, name, itype, region, base)  # fmt: skip
                        checked += 1
    # every build resolves on at least one instance type in each of its regions and names
    assert checked >= sum(len(b.regions) * len(names(images, v)) for v, b in images.versions.items())


def _refusals(images: si.Images, fw: str, table: str) -> Iterator[tuple[str, str, str, str, str | None, str | None]]:
    """(scope, version, instance type, region, py, base) at the table's edges: every instance type
    (Graviton, Neuron and retired ones too) with a right and a wrong Python and base, in one region
    (the region does not change a refusal); every region a build is not in; the versions of the
    framework's other scopes, and versions of none."""
    scope = si.INFERENCE if table == si.ARM64 else table
    itypes = GRAVITON + OTHER_ARM if table == si.ARM64 else X86 + GRAVITON + OTHER_ARM
    everywhere = sorted({r for t in si.IMAGES.values() for b in t.versions.values() for r in b.regions})
    for version, build in images.versions.items():
        region = sorted(build.regions)[0]
        for name in names(images, version):
            for itype in itypes:
                yield scope, name, itype, region, py_of(build), bases(build)[0]
                yield scope, name, itype, region, "py27", bases(build)[0]  # a Python no image has
                if build.base:
                    yield scope, name, itype, region, py_of(build), None
                    yield scope, name, itype, region, py_of(build), "pytorch1.13.1"
            itype = itypes[0] if table == si.ARM64 else ("ml.g5.xlarge" if fw == "huggingface" else CPU[0])
            for elsewhere in [r for r in everywhere if r not in build.regions] + [NOWHERE]:
                yield scope, name, itype, elsewhere, py_of(build), bases(build)[0]
    for name in [*si.versions(fw), "0.1", "9.9.9"]:  # versions of another scope, and of none
        if name not in images.versions and name not in images.aliases:
            yield scope, name, itypes[0], "us-east-1", "py3", "pytorch2.0.0" if fw == "huggingface" else None


@pytest.mark.parametrize(("fw", "table"), TABLES, ids=[f"{f}-{t}" for f, t in TABLES])
def test_what_the_sdk_refuses_is_refused(sdk: ModuleType, fw: str, table: str):
    refused = 0
    for scope, name, itype, region, py, base in _refusals(si.IMAGES[(fw, table)], fw, table):
        mine = ours(fw, scope, name, itype, region, py, base)
        theirs = sdk_uri(sdk, fw, scope, name, itype, region, py, base)
        where = (fw, scope, name, itype, region, py, base)
        if not isinstance(mine, Exception):
            assert mine == theirs, where
            continue
        refused += 1
        if theirs is not None:  # only an Unknown for a Neuron type leaves it to the SDK (its own tables)
            neuron = isinstance(mine, si.Unknown) and itype in NEURON
            assert neuron or stricter_than_the_sdk(fw, scope, name, itype), (where, theirs, mine)
    assert refused > 0


@pytest.mark.parametrize(("fw", "table"), TABLES, ids=[f"{f}-{t}" for f, t in TABLES])
def test_the_aliases_are_the_sdks(sdk: ModuleType, fw: str, table: str):
    # every short name the SDK accepts for a version held here is accepted, and none other
    images = si.IMAGES[(fw, table)]
    sdk_table = sdk.config_for_framework(fw)[SDK_SCOPE[table]]
    theirs = {a: v for a, v in sdk_table.get("version_aliases", {}).items() if v in images.versions}
    assert dict(images.aliases) == theirs
    for version, build in images.versions.items():
        config = sdk_table["versions"][version]
        if build.base:  # a Hugging Face version's base (the PyTorch build) and its short names
            assert {k for k in config if k != "version_aliases"} >= {build.base}
            assert config["version_aliases"] == {build.base_alias: build.base}


# -- the messages, with or without the SDK ----------------------------------------------------
def _refused(fw: str, version: str, scope: str, itype: str, *, py: str | None = "py3", base: str | None = None,
             region: str = "us-east-1") -> si.NoImage:  # fmt: skip
    with pytest.raises(si.NoImage) as caught:
        si.image_uri(fw, version, scope, itype, region, py_version=py, base=base)
    return caught.value


def test_a_gpu_type_with_scikit_learn_is_refused_naming_a_cpu_type():
    e = _refused("sklearn", "1.2-1", "training", "ml.g5.xlarge")
    assert e.key == "instance_type"
    assert str(e) == (
        "SageMaker's scikit-learn training images run on CPU only (there is no GPU image), so ml.g5.xlarge cannot "
        "run them: use a CPU instance type such as ml.m5.xlarge, or set training.sagemaker.image_uri"
    )
    e = _refused("huggingface", "4.49", "training", "ml.m5.xlarge", py="py311", base="pytorch2.5.1")
    assert "run on GPU only (there is no CPU image)" in str(e)
    assert "ml.g5.xlarge" in str(e)


@pytest.mark.parametrize("fw", si.FRAMEWORKS)
def test_graviton_training_is_refused_for_every_framework(fw: str):
    e = _refused(fw, "1.0-1", "training", "ml.c7g.xlarge")
    assert e.key == "instance_type"
    assert str(e) == (
        f"ml.c7g.xlarge is a Graviton (arm64) type and SageMaker's {si.NAMES[fw]} training images are x86 only: "
        "use an x86 type such as ml.m5.xlarge, or set training.sagemaker.image_uri"
    )


def test_graviton_inference_takes_the_arm64_build_where_there_is_one():
    uri = si.image_uri("pytorch", "2.2", "inference", "ml.c7g.xlarge", "eu-west-1", py_version="py310")
    assert (
        uri
        == "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-inference-graviton:2.2-cpu-py310-ubuntu20.04-sagemaker"
    )
    assert si.image_uri("xgboost", "1.5-1", "inference", "ml.m6g.large", "us-east-1", py_version="py3") == (
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.5-1-arm64"
    )
    e = _refused("pytorch", "2.5.1", "inference", "ml.c7g.xlarge", py="py311")
    assert (e.key, str(e)) == ("instance_type", (
        "SageMaker has a PyTorch arm64 (Graviton) inference image for 2.0.0, 2.0.1, 2.1.0, 2.2.1, 2.3.0, 2.4.0, "
        "2.6.0 only, not for 2.5.1: pick one of those or an x86 instance type, or set serving.image_uri"))  # fmt: skip
    e = _refused("pytorch", "2.6", "inference", "ml.m7g.large", py="py312")
    assert "for the Graviton families c6g, c6gd, c6gn, c7g, m6g, m6gd, r6g, r6gd (the SageMaker SDK's list)" in str(e)
    assert "no arm64 (Graviton) Hugging Face image" in str(_refused("huggingface", "4.49", "inference", "ml.c6g.large"))


def test_a_version_not_in_the_table_is_unknown_naming_the_versions_it_has():
    with pytest.raises(
        si.Unknown, match=r"has no version 1\.13\.1 \(it has 2\.0\.0, 2\.0\.1, .*, 2\.10\.0 for training\)"
    ):
        si.image_uri("pytorch", "1.13.1", "training", "ml.g5.xlarge", "us-east-1", py_version="py39")
    # a version held for the other scope only is no image at all
    e = _refused("pytorch", "2.10", "inference", "ml.g5.xlarge", py="py313")
    assert (e.key, str(e).split(":")[0]) == (
        "framework_version", "SageMaker has a PyTorch inference image for 2.0.0, 2.0.1, 2.1.0, 2.2.0, 2.3.0, 2.4.0, "
        "2.5.1, 2.6.0 only, not for 2.10")  # fmt: skip
    e = _refused("sklearn", "1.4-2", "inference", "ml.m5.large")
    assert "inference image for 0.20.0, 0.23-1, 1.0-1, 1.2-1, 1.4-2-py312, 1.9-0 only, not for 1.4-2" in str(e)


def test_a_region_not_in_the_table_is_unknown():
    with pytest.raises(si.Unknown) as caught:
        si.image_uri("pytorch", "2.4", "training", "ml.g5.xlarge", "eu-isoe-west-1", py_version="py311")
    assert str(caught.value) == (
        "mlops-ci's table has no SageMaker PyTorch 2.4 training image in eu-isoe-west-1 (it has 38 other regions)"
    )
    # the regions outside the aws partition have their own DNS suffix
    assert si.image_uri("pytorch", "2.9", "training", "ml.g5.xlarge", "eusc-de-east-1", py_version="py312") == (
        "204133271717.dkr.ecr.eusc-de-east-1.amazonaws.eu/pytorch-training:2.9-gpu-py312"
    )


def test_python_and_base_versions_name_what_to_set():
    e = _refused("pytorch", "2.5.1", "training", "ml.g5.xlarge")
    assert e.key == "py_version"
    assert str(e) == (
        "SageMaker's PyTorch 2.5.1 training image is built for py311 only, not py3: set "
        "training.sagemaker.py_version: py311, or set training.sagemaker.image_uri"
    )
    e = _refused("huggingface", "4.49", "inference", "ml.g5.xlarge", py="py312", base="pytorch2.5.1")
    assert e.key == "base_framework_version"
    assert str(e) == (
        "SageMaker's Hugging Face 4.49.0 inference image is built on pytorch2.6.0, not pytorch2.5.1: set "
        "training.sagemaker.base_framework_version: pytorch2.6.0 (or pytorch2.6), or set serving.image_uri"
    )
    e = _refused("tensorflow", "2.16", "training", "ml.p2.xlarge", py="py310")
    assert "do not run on P2 instances" in str(e)


def test_neuron_and_other_frameworks_are_left_to_the_sdk():
    with pytest.raises(si.Unknown, match="no Neuron"):
        si.image_uri("pytorch", "2.1", "training", "ml.trn1.2xlarge", "us-east-1", py_version="py310")
    with pytest.raises(si.Unknown, match="not of mxnet"):
        si.image_uri("mxnet", "1.9", "training", "ml.m5.xlarge", "us-east-1", py_version="py38")
    assert "Trainium" in str(_refused("tensorflow", "2.16", "training", "ml.trn1.2xlarge", py="py310"))
    assert si.problem("pytorch", "1.13.1", "training", "ml.g5.xlarge", py_version="py39") is None
    found = si.problem("sklearn", "1.2-1", "inference", "ml.g5.xlarge", py_version="py3")
    assert found is not None and found.key == "instance_type"


def test_image_for_uses_the_table_then_the_sdk_then_says_what_to_set(monkeypatch: pytest.MonkeyPatch):
    from mlops_ci.backends.sagemaker import image_for
    from mlops_ci.errors import ConfigError
    from mlops_ci.settings.sagemaker import SageMakerTraining

    pt = SageMakerTraining(
        framework="pytorch", framework_version="2.6", py_version="py312", instance_type="ml.g5.xlarge"
    )
    old = SageMakerTraining(
        framework="pytorch", framework_version="1.13.1", py_version="py39", instance_type="ml.g5.xlarge"
    )
    with monkeypatch.context() as mp:  # no SDK: `import sagemaker` fails
        mp.setitem(sys.modules, "sagemaker", None)
        mp.setitem(sys.modules, "sagemaker.core", None)
        assert image_for(pt, None, "eu-west-1", "training") == (
            "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.6-gpu-py312"
        )
        assert image_for(pt, None, "eu-west-1", "inference", "ml.c6g.large") == (
            "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-inference-arm64:2.6-cpu-py312-ubuntu22.04-sagemaker"
        )
        with pytest.raises(ConfigError, match="training images are x86 only"):
            image_for(pt, None, "eu-west-1", "training", "ml.c6g.large")
        with pytest.raises(ConfigError) as caught:
            image_for(old, None, "eu-west-1", "training")
        assert str(caught.value) == (
            "mlops-ci's table of SageMaker PyTorch images has no version 1.13.1 (it has 2.0.0, 2.0.1, 2.1.0, 2.2.0, "
            "2.3.0, 2.4.0, 2.5.1, 2.6.0, 2.7.1, 2.8.0, 2.9.0, 2.10.0 for training), and the SageMaker Python SDK that "
            "knows more is not installed: set training.sagemaker.image_uri to the image's URI, or pip install sagemaker"
        )
        nowhere = r"PyTorch 2\.6 inference image in eu-isoe-west-1 .*, and the SageMaker Python SDK that knows more"
        with pytest.raises(ConfigError, match=nowhere + r" is not installed: set serving\.image_uri"):
            image_for(pt, None, "eu-isoe-west-1", "inference", "ml.m5.large")
    _sdk()  # with it, an older version is the SDK's
    assert image_for(old, None, "eu-west-1", "training") == (
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:1.13.1-gpu-py39"
    )
