"""Amazon SageMaker: what training, the model registry and endpoints share (the framework
images, the script-mode serving environment, where SageMaker reads a model from).

The parts: sagemaker_training.py (training jobs), sagemaker_registry.py (model packages),
sagemaker_endpoints.py (endpoints and their rollout steps), over aws.py (the session). Every
request is built by a pure function, so that a dry run prints exactly what the real run then
sends. Names are derived from content (commit, config digest, version, artifact digest), so
that a re-run finds what an earlier run created instead of creating it twice. Imported only
when the config names SageMaker (`pip install mlops-ci[sagemaker]`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Config
from ..errors import (
    ConfigError,
)
from ..settings.sagemaker import SageMakerTraining
from . import sagemaker_images

if TYPE_CHECKING:
    from ..records import ModelVersion
from .aws import Aws

VARIANT = "AllTraffic"


def image_for(sm: SageMakerTraining | None, explicit: str | None, region: str, what: str,
              instance_type: str | None = None) -> str:  # fmt: skip
    """The image URI for `what` (training | inference) on `instance_type` (default: the training one):
    an explicit one, else the framework's from mlops-ci's table (sagemaker_images.py), else from
    the SageMaker Python SDK where it is installed (older versions, other frameworks and regions)."""
    if explicit:
        return explicit
    if sm is not None and sm.image_uri:
        return sm.image_uri
    if sm is None or sm.framework is None or sm.framework_version is None:
        raise ConfigError(f"no {what} image: set an image_uri, or training.sagemaker.framework and framework_version")
    scope = "training" if what == "training" else "inference"
    itype = instance_type or sm.instance_type
    try:
        return sagemaker_images.image_uri(sm.framework, sm.framework_version, scope, itype, region,
                                          py_version=sm.py_version, base=sm.base_framework_version)  # fmt: skip
    except sagemaker_images.NoImage as exc:
        raise ConfigError(str(exc)) from None
    except sagemaker_images.Unknown as exc:
        unknown = str(exc)
    try:  # SageMaker Python SDK v3 moved image_uris into sagemaker-core; v2 has it at the top
        from sagemaker.core import image_uris  # type: ignore[import-not-found,import-untyped]
    except ImportError:
        try:
            from sagemaker import image_uris  # type: ignore[import-not-found,import-untyped,no-redef]
        except ImportError:
            raise ConfigError(
                f"{unknown}, and the SageMaker Python SDK that knows more is not installed: set "
                f"{sagemaker_images.IMAGE_KEY[scope]} to the image's URI, or pip install sagemaker"
            ) from None
    extra = {"base_framework_version": sm.base_framework_version} if sm.base_framework_version else {}
    try:
        uri: str = image_uris.retrieve(sm.framework, region, version=sm.framework_version, py_version=sm.py_version,
                                       instance_type=itype, image_scope=scope, **extra)  # fmt: skip
    except (ValueError, NotImplementedError) as exc:
        raise ConfigError(f"no SageMaker {sm.framework} {sm.framework_version} {scope} image for {itype} in "
                          f"{region} ({exc}); set image_uri to an image you know exists") from None  # fmt: skip
    return uri


def serving_instance_type(cfg: Config) -> str | None:
    """The instance type a registered package is meant for: the first SageMaker endpoint's."""
    from ..settings.sagemaker import SageMakerEndpointConfig

    for ep in cfg.endpoints:
        if isinstance(ep, SageMakerEndpointConfig):
            return ep.instance_type
    return None


def serving_env(cfg: Config, region: str) -> dict[str, str]:
    """The framework containers' script-mode serving contract: code/ inside model.tar.gz."""
    env = {"SAGEMAKER_CONTAINER_LOG_LEVEL": "20", "SAGEMAKER_REGION": region}
    if cfg.serving.entry_point:
        env["SAGEMAKER_PROGRAM"] = Path(cfg.serving.entry_point).name
        env["SAGEMAKER_SUBMIT_DIRECTORY"] = "/opt/ml/model/code"
    env.update(cfg.serving.environment)
    return env


def model_data_uri(aws: Aws, mv: ModelVersion, path: Path | None) -> tuple[str, bool]:
    """Where SageMaker reads the model from: the artifact itself when the store keeps it in S3,
    else a content-addressed copy under the configured bucket. (uri, would upload)."""
    if mv.artifact_uri.startswith("s3://"):
        return mv.artifact_uri, False
    uri = aws.s3_uri("models", mv.artifact_sha256, "model.tar.gz")
    if path is None:
        return uri, not aws.has_object(uri, mv.artifact_sha256)
    return uri, aws.upload_once(path, uri, mv.artifact_sha256)
