"""What an instance type means for SageMaker requests, without boto3 (config checks use it).

Facts, and where they come from:
- the Graviton (arm64) families the SageMaker Python SDK picks arm64 images for
  (`GRAVITON_ALLOWED_TARGET_INSTANCE_FAMILY`); the images themselves are in sagemaker_images.py;
- an instance type with local instance storage rejects a volume KMS key: "You can't request a
  VolumeKmsKeyId when using an instance type with local storage" (service model documentation
  of ResourceConfig.VolumeKmsKeyId and of CreateEndpointConfig.KmsKeyId). Its local storage is
  encrypted by the instance's hardware module.
"""

from __future__ import annotations

import re

GRAVITON_FAMILIES = frozenset({"m6g", "m6gd", "c6g", "c6gd", "c6gn", "c7g", "r6g", "r6gd"})

# GPU and accelerator families whose instances come with NVMe instance storage although their
# name has no `d` (EC2 "Instance store volumes" table).
_LOCAL_STORAGE_FAMILIES = ("g5", "g6", "g6e", "g7", "g7e", "p5", "p5e", "p5en", "trn1", "trn1n", "trn2", "inf2")


def family(instance_type: str) -> str:
    """`ml.m6gd.2xlarge` -> `m6gd`; `` when the name is not ml.<family>.<size>."""
    m = re.match(r"^ml\.([a-z0-9-]+)\.", instance_type)
    return m.group(1) if m else ""


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
