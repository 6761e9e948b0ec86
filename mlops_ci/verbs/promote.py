"""`mlops-ci promote`: register the model of a commit that passed the gate, in the store and the
registries beside it."""

from __future__ import annotations

import dataclasses
import time

from .. import integrity
from ..errors import Refused
from ..records import ModelVersion, Run
from ..workspace import Workspace
from .train import head_run


class Promotion:
    """Promotes runs of one workspace."""

    def __init__(self, ws: Workspace):
        self.ws = ws

    # -- promote --------------------------------------------------------------------------
    def promote(self, ref: str | None = None) -> tuple[ModelVersion, bool]:
        self.ws.guard_store()
        run = head_run(self.ws, ref)
        existing = self.ws.store.version_for_sha(self.ws.project, run.sha)
        if existing:  # a promote cut short before registering: finish it, from a record that holds
            self.ws.verify_version(existing)
            self._register_tracked(existing, self.ws.store.get_run(existing.run_id) or run, self._package(existing))
            return existing, False
        verdict = self.ws.check_provenance(run)
        if (
            self.ws.signer(run.sha) is not None
            and (why := integrity.unsigned_here(self.ws.env))
            and not self.ws.dry_run
        ):
            raise Refused(f"gate.signing_key is set and {why}: promote in the release workflow (a tag's job)")
        self.ws.verify_artifact(run.artifact_uri, run.artifact_sha256, what=f"run {run.run_id}")

        def make(version: int) -> ModelVersion:
            assert run.artifact_uri and run.artifact_sha256
            return ModelVersion(
                project=self.ws.project,
                version=version,
                sha=run.sha,
                run_id=run.run_id,
                verdict_id=verdict.verdict_id,
                artifact_uri=run.artifact_uri,
                artifact_sha256=run.artifact_sha256,
                metrics=dict(run.metrics),
                stage="approved",
                created=time.time(),
                run_digest=run.digest,
                verdict_digest=verdict.digest,
            )

        signer = self.ws.signer(run.sha)

        def sealed(version: int) -> ModelVersion:
            mv = integrity.seal(make(version))
            return dataclasses.replace(mv, signature=signer.sign(mv, self.ws.env)) if signer else mv

        planned = make(max((v.version for v in self.ws.store.versions(self.ws.project)), default=0) + 1)
        mv, created = self.ws.fx(
            "store",
            "register model version",
            lambda: self.ws.store.promote(sealed, run.sha, self.ws.project),
            (planned, True),
            version=planned.version,
            sha=planned.sha,
            artifact_sha256=planned.artifact_sha256,
            verdict_id=planned.verdict_id,
        )
        self._register_tracked(mv, run, self._package(mv))
        return mv, created

    def _package(self, mv: ModelVersion) -> str | None:
        """The version's SageMaker model package ARN, registering it first, with that registry."""
        return self.register_package(mv) if self.ws.cfg.registry.kind.impl else None

    def _register_tracked(self, mv: ModelVersion, run: Run, package: str | None = None) -> None:
        """The tracker's model registry, beside the store's (and SageMaker's), never instead of the gate."""
        t = self.ws.cfg.tracking
        comet = self.ws.tracker() if t.model_name else None  # a tracker with no registry is not made here
        if comet is None or not t.model_name:
            return
        version = comet.registry_version(mv)
        if not comet.online:
            self.ws.warn(
                f"{t.model_name} {version} is not registered in Comet: no API key in ${t.api_key_env} (offline)"
            )
            return

        def register() -> None:
            from ..errors import MlopsCiError

            try:
                label, created = comet.register(mv, run, package)
            except MlopsCiError as exc:  # the store's version stands; promote again resumes from here
                exc.message = (
                    f"{self.ws.project} v{mv.version} is recorded, but Comet's registry does not have it yet: "
                    f"{exc.message} (then `mlops-ci promote {mv.sha[:8]}` finishes it)"
                )
                raise
            self.ws.say(f"Comet model registry: {label}" + ("" if created else " (already registered)"))

        self.ws.fx(
            "comet",
            "register model version",
            register,
            None,
            model=t.model_name,
            version=version,
            experiment_key=run.links.get("comet_experiment_key"),
        )

    def register_package(self, mv: ModelVersion) -> str | None:
        """The version as a model package in the SageMaker registry (idempotent by SHA);
        only ever called behind a passed gate."""
        from ..backends.sagemaker import model_data_uri
        from ..backends.sagemaker_registry import SageMakerRegistry

        # Whether a package needs a human's approval is policy: the committed config's, like the gate's
        approval = self.ws.policy(mv.sha)[0].registry.approval
        cfg = dataclasses.replace(self.ws.cfg, registry=dataclasses.replace(self.ws.cfg.registry, approval=approval))
        reg = SageMakerRegistry(self.ws.aws(), cfg)
        found = reg.package_for(mv.sha)
        if found is not None:
            self.ws.say(f"model package {found['ModelPackageArn']} ({found.get('ModelApprovalStatus')})")
            return str(found["ModelPackageArn"])
        fx, aws = self.ws.fx, self.ws.aws()
        path = self.ws.verify_artifact(mv.artifact_uri, mv.artifact_sha256, what=f"{self.ws.project} v{mv.version}")
        data, upload = model_data_uri(aws, mv, None)
        if upload:
            fx(
                "sagemaker",
                "s3:PutObject",
                lambda: aws.upload_once(path, data, mv.artifact_sha256),
                False,
                uri=data,
                sha256=mv.artifact_sha256,
            )
        arn = reg.create(mv, data, fx)
        if arn is not None:
            self.ws.say(f"registered model package {arn} ({approval})")
        return arn
