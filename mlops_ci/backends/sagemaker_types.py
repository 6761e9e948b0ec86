"""What an instance type means for SageMaker requests, without boto3 (config checks use it).

Facts, and where they come from:
- scikit-learn images exist for CPU only, training and inference (the SageMaker Python SDK's
  `image_uri_config/sklearn.json` lists `"processors": ["cpu"]` for every version);
- Graviton (arm64) scikit-learn images exist for inference only, for 1.0-1, tagged
  `1.0-1-arm64-cpu-py3`, on the families the SDK allows (`GRAVITON_ALLOWED_TARGET_INSTANCE_FAMILY`);
- an instance type with local instance storage rejects a volume KMS key: "You can't request a
  VolumeKmsKeyId when using an instance type with local storage" (service model documentation
  of ResourceConfig.VolumeKmsKeyId and of CreateEndpointConfig.KmsKeyId). Its local storage is
  encrypted by the instance's hardware module.
"""

from __future__ import annotations

import re

GRAVITON_FAMILIES = frozenset({"m6g", "m6gd", "c6g", "c6gd", "c6gn", "c7g", "r6g", "r6gd"})
SKLEARN_ARM64_TAGS = {"1.0-1": "1.0-1-arm64-cpu-py3"}

# GPU and accelerator families whose instances come with NVMe instance storage although their
# name has no `d` (EC2 "Instance store volumes" table).
_LOCAL_STORAGE_FAMILIES = ("g5", "g6", "g6e", "g7", "g7e", "p5", "p5e", "p5en", "trn1", "trn1n", "trn2", "inf2")


def family(instance_type: str) -> str:
    """`ml.m6gd.2xlarge` -> `m6gd`; `` when the name is not ml.<family>.<size>."""
    m = re.match(r"^ml\.([a-z0-9-]+)\.", instance_type)
    return m.group(1) if m else ""


def is_gpu(instance_type: str) -> bool:
    return bool(re.match(r"^(p|g)\d", family(instance_type)))


def is_graviton(instance_type: str) -> bool:
    f = family(instance_type)
    return f in GRAVITON_FAMILIES or bool(re.match(r"^[a-z]+\d+g[a-z]*$", f))


def has_local_storage(instance_type: str) -> bool:
    f = family(instance_type)
    m = re.match(r"^([a-z]+)(\d+)([a-z]*)", f)
    if not m:
        return False
    if "d" in m.group(3):  # m5d, c6gd, r5d, g4dn, p3dn, p4d, p4de ...
        return True
    return f in _LOCAL_STORAGE_FAMILIES or f.startswith("p6")


def sklearn_image_problem(instance_type: str, version: str, scope: str) -> str | None:
    """Why no SageMaker scikit-learn image fits, or None. `scope`: training | inference."""
    if is_gpu(instance_type):
        return (f"SageMaker's scikit-learn images run on CPU only (there is no GPU image), so {instance_type} "
                "cannot run them: use a CPU instance type such as ml.m5.xlarge, or set image_uri to your own "
                "GPU image")  # fmt: skip
    if is_graviton(instance_type):
        if scope == "training":
            return (f"{instance_type} is a Graviton (arm64) type and SageMaker's scikit-learn training images are "
                    "x86 only: use an x86 type such as ml.m5.xlarge, or set image_uri")  # fmt: skip
        if family(instance_type) not in GRAVITON_FAMILIES:
            return (f"SageMaker's arm64 scikit-learn image runs on {', '.join(sorted(GRAVITON_FAMILIES))} only, not "
                    f"on {instance_type}: pick one of those, or set serving.image_uri")  # fmt: skip
        if version not in SKLEARN_ARM64_TAGS:
            return (f"SageMaker has an arm64 (Graviton) scikit-learn inference image for "
                    f"{', '.join(SKLEARN_ARM64_TAGS)} only, not for {version}: use an x86 endpoint instance type, "
                    "framework_version 1.0-1, or set serving.image_uri")  # fmt: skip
    return None


def sklearn_tag(instance_type: str, version: str, py_version: str, scope: str) -> str:
    """The image tag; call only when `sklearn_image_problem` found none."""
    if scope == "inference" and is_graviton(instance_type):
        return SKLEARN_ARM64_TAGS[version]
    return f"{version}-cpu-{py_version}"
