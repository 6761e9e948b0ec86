"""The SageMaker model registry: a model package group per project, one package per
promoted commit."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from ..config import Config
from . import Context, Effects

if TYPE_CHECKING:
    from ..records import ModelVersion
from .aws import Answer, Aws, aws_tags, slug, tag_value
from .sagemaker import image_for, serving_env, serving_instance_type


def metrics_metadata(metrics: Mapping[str, float]) -> str:
    """Metrics as one model package metadata value: `name=value` pairs, space separated.

    CustomerMetadataProperties values allow only letters, digits, spaces and _.:/=+-@, 1 to 256
    of them (service model shape CustomerMetadataValue), so no JSON; names are sanitized like
    tag values and pairs that do not fit are left out whole, marked by a trailing `...`.
    """
    pairs = [f"{tag_value(k).replace(' ', '_')}={v:.6g}" for k, v in sorted(metrics.items())]
    out = ""
    for i, pair in enumerate(pairs):
        more = " ..." if i < len(pairs) - 1 else ""
        joined = f"{out} {pair}".strip()
        if len(joined) + len(more) > 256:
            return f"{out} ...".strip() if out else "..."
        out = joined
    return out


# -- model registry ------------------------------------------------------------------------


class SageMakerRegistry:
    """A model package group per project; one package per promoted commit."""

    def __init__(self, aws: Aws, cfg: Config):
        self.aws, self.cfg = aws, cfg
        self.group = cfg.registry.model_package_group or slug(cfg.project)[:63]

    @classmethod
    def from_context(cls, ctx: Context) -> SageMakerRegistry:
        return cls(ctx.aws(), ctx.cfg)

    def group_request(self) -> dict[str, object]:
        return {"ModelPackageGroupName": self.group,
                "ModelPackageGroupDescription": f"mlops-ci models of {self.cfg.project}"[:1024],
                "Tags": aws_tags({"mlops-ci:project": self.cfg.project})}  # fmt: skip

    def package_request(self, mv: ModelVersion, model_data: str) -> dict[str, object]:
        image = image_for(self.cfg.training.sagemaker, self.cfg.serving.image_uri, self.aws.region, "inference",
                          serving_instance_type(self.cfg))  # fmt: skip
        raw = {
            "git_sha": mv.sha,
            "artifact_sha256": mv.artifact_sha256,
            "verdict_id": mv.verdict_id,
            "gate": "passed",
            "mlops_ci_version": str(mv.version),
            "run_id": mv.run_id,
            "metrics": metrics_metadata(mv.metrics),
        }
        meta = {k: tag_value(v) for k, v in raw.items() if v}
        return {
            "ModelPackageGroupName": self.group,
            "ModelPackageDescription": f"{self.cfg.project} v{mv.version} from commit {mv.sha[:12]}",
            "InferenceSpecification": {
                "Containers": [
                    {"Image": image, "ModelDataUrl": model_data, "Environment": serving_env(self.cfg, self.aws.region)}
                ],
                "SupportedContentTypes": ["application/json", "text/csv"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            "ModelApprovalStatus": self.cfg.registry.approval,
            "CustomerMetadataProperties": meta,
            # SageMaker's own idempotency: a promote retried after a lost answer registers once
            "ClientToken": hashlib.sha256(f"{self.group}/{mv.sha}/{mv.artifact_sha256}".encode()).hexdigest()[:36],
            "Tags": aws_tags({"mlops-ci:project": self.cfg.project, "mlops-ci:sha": mv.sha}),
        }

    def packages(self) -> Iterator[Answer]:
        """Every package of the group, described (newest first)."""
        kwargs: dict[str, object] = {"ModelPackageGroupName": self.group, "MaxResults": 100, "SortOrder": "Descending"}
        while True:
            try:
                page = self.aws.client("sagemaker").list_model_packages(**kwargs)
            except self.aws.errors as exc:
                if self.aws.missing(exc):
                    return
                raise self.aws.error(exc, f"list model packages of {self.group}") from None
            for s in page.get("ModelPackageSummaryList", []):
                key = (self.aws.region, s["ModelPackageArn"])
                d = self.aws.described.get(key)
                if d is None:
                    d = self.aws.describe("describe_model_package", "describe a model package",
                                          ModelPackageName=s["ModelPackageArn"])  # fmt: skip
                    if d is None:
                        continue
                    self.aws.described[key] = d
                # what can change after registration (a human approving) comes fresh with the list
                now = d.copy()
                if "ModelApprovalStatus" in s:
                    now["ModelApprovalStatus"] = s["ModelApprovalStatus"]
                if "ModelPackageStatus" in s:
                    now["ModelPackageStatus"] = s["ModelPackageStatus"]
                yield now
            if not page.get("NextToken"):
                return
            kwargs["NextToken"] = page["NextToken"]

    def package_for(self, sha: str) -> Answer | None:
        for d in self.packages():
            if d.get("CustomerMetadataProperties", {}).get("git_sha") == sha:
                return d
        return None

    def create(self, mv: ModelVersion, model_data: str, fx: Effects) -> str | None:
        """Register the version as a package (its group first, if new); its ARN, None in a dry
        run. The caller has found no package of the commit (ClientToken covers a lost answer)."""
        if (
            self.aws.describe(
                "describe_model_package_group", "describe the model package group", ModelPackageGroupName=self.group
            )
            is None
        ):
            req = self.group_request()
            fx(
                "sagemaker",
                "CreateModelPackageGroup",
                lambda: self.aws.call(
                    "sagemaker", "create_model_package_group", f"create model package group {self.group}", **req
                ),
                None,
                request=req,
            )
        req = self.package_request(mv, model_data)
        out = fx(
            "sagemaker",
            "CreateModelPackage",
            lambda: self.aws.call(
                "sagemaker", "create_model_package", f"register {self.cfg.project} v{mv.version}", **req
            ),
            None,
            request=req,
        )
        return None if out is None else str(out["ModelPackageArn"])
