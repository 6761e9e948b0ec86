"""`mlops-ci deploy`, `rollback` and the endpoint verbs: what gets deployed (resolution, the
approved version, its provenance and artifact checked again) and what follows a deploy (the
tracker's registry), over the endpoints service of a workspace (backends/local_endpoints.py)."""

from __future__ import annotations

from .. import integrity
from ..backends.local_endpoints import LocalEndpoints
from ..config import EndpointConfig
from ..errors import NotFound, Refused, UsageError
from ..records import Deployment, ModelVersion
from ..refs import RefKind
from ..workspace import Workspace
from .rollout import rollout
from .train import head_run


def endpoints(ws: Workspace) -> LocalEndpoints:
    return LocalEndpoints(ws, recorder=ws.deployment_recorder())


class Deployer:
    """deploy and rollback: what is deployed (the approved, verified version of a release tag's
    commit), checks before, the tracker's registry after; the endpoints service rolls it out."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.endpoints = endpoints(ws)

    # -- resolution ----------------------------------------------------------------------
    def _resolve(self, ref: str | None, endpoint: str | None) -> tuple[str, str | None, EndpointConfig]:
        ws = self.ws
        target = ws.resolve(ref, what="deploy")
        if target.kind is RefKind.HEAD:
            if target.tag is None:
                raise UsageError("no ref given and HEAD has no tag; pass a release tag or SHA: mlops-ci deploy v1.2.0")
            target = ws.resolve(target.tag, frozenset({RefKind.TAG}), what="deploy of HEAD's tag")
        sha, tag = target.sha, target.tag
        if target.kind is not RefKind.TAG:  # a SHA, branch or run: the release tag on its commit, if any
            at = ws.git.tags_at(sha)
            tag = at[-1] if at else None
        if endpoint is None:
            if tag is None:
                raise UsageError(f"{sha[:8]} has no tag to match an endpoint; pass --endpoint NAME")
            endpoint = ws.endpoint_for_tag(tag)
        return sha, tag, ws.cfg.endpoint(endpoint)

    def approved_version(self, sha: str) -> ModelVersion:
        """The approved version of `sha`, with its provenance and artifact re-checked."""
        ws = self.ws
        mv = self.ws.store.version_for_sha(self.ws.project, sha)
        if mv is None:
            # Explain precisely why: no run, failed gate, no gate, or just not promoted.
            run = head_run(self.ws, sha)
            ws.check_provenance(run)
            raise Refused(f"commit {sha[:8]} passed the gate but was never promoted; run `mlops-ci promote {sha[:8]}`")
        if mv.stage != "approved":
            raise Refused(f"{self.ws.project} v{mv.version} is {mv.stage}, not approved; it cannot be deployed")
        verdict = self.ws.store.get_verdict(mv.verdict_id)
        if verdict is None or not verdict.passed or verdict.sha != sha:
            raise Refused(
                f"{self.ws.project} v{mv.version} has no passing gate verdict on record (provenance missing); "
                "refusing to deploy"
            )
        ws.verify_version(mv)
        ws.verify_artifact(mv.artifact_uri, mv.artifact_sha256, what=f"{self.ws.project} v{mv.version}")
        return mv

    # -- verbs ---------------------------------------------------------------------------
    def deploy(
        self, ref: str | None, *, endpoint: str | None = None, retry_failed: bool = False, lock_timeout: float = 60.0
    ) -> Deployment:
        sha, tag, ep = self._resolve(ref, endpoint)
        self._preflight(ep)
        if tag is not None:
            self._check_tag_not_moved(tag, sha)
        mv = self.approved_version(sha)
        if not retry_failed:
            history = [d for d in self.ws.store.deployments(self.ws.project, ep.name) if d.sha == sha]
            if history and history[-1].outcome == "failed":
                raise Refused(
                    f"{sha[:8]} already failed to deploy to {ep.name} ({history[-1].detail}); it is not "
                    "retried automatically: fix it with a new commit, or pass --retry-failed"
                )
        return self._announce(self._rollout(ep, mv, tag, "deploy", lock_timeout), mv)

    def _check_tag_not_moved(self, tag: str, sha: str) -> None:
        """A release tag names one commit forever: one that was deployed (or was live) as another
        commit has been force-moved, and deploying it would ship a different model under the same
        version name without anyone deciding to."""
        before = [d for d in self.ws.store.deployments(self.ws.project) if d.tag == tag and d.outcome != "failed"]
        if before and before[-1].sha != sha:
            d = before[-1]
            raise Refused(
                f"release tag {tag} now points at {sha[:8]}, but deployment {d.deployment_id} deployed {tag} as "
                f"{d.sha[:8]} to {d.endpoint}: the tag was moved; release tags are immutable, so tag "
                f"{sha[:8]} with a new version"
            )

    def rollback(self, name: str, *, lock_timeout: float = 60.0) -> Deployment:
        ep = self.ws.cfg.endpoint(name)
        self._preflight(ep, rollback=True)
        if ep.kind.processes and not self.ws.dry_run:
            with self.endpoints.lock(name, lock_timeout):  # "previous" is only known once a killed deploy is recorded
                self.endpoints.recover(name)
        state = self.ws.store.endpoint_state(self.ws.project, name)
        live = state.version if state and state.status == "InService" else None
        previous = [
            d
            for d in self.ws.store.deployments(self.ws.project, name)
            if d.outcome == "succeeded" and d.version != live
        ]
        if not previous:
            raise NotFound(f"endpoint {name} has no earlier successful version to roll back to")
        target = previous[-1]
        mv = self.ws.store.get_version(self.ws.project, target.version)
        if mv is None:
            raise NotFound(f"{self.ws.project} v{target.version} is no longer in the registry")
        integrity.require(integrity.link_problems(deployment=target, version=mv), f"roll {name} back")
        self.ws.verify_version(mv)
        self.ws.verify_artifact(mv.artifact_uri, mv.artifact_sha256, what=f"{self.ws.project} v{mv.version}")
        return self._announce(self._rollout(ep, mv, target.tag, "rollback", lock_timeout), mv)

    def _rollout(self, ep: EndpointConfig, mv: ModelVersion, tag: str | None, kind: str, timeout: float) -> Deployment:
        return rollout(self.endpoints, self.endpoints.backend(ep), ep, mv, tag, kind, timeout, self.ws.fx)

    def _preflight(self, ep: EndpointConfig, *, rollback: bool = False) -> None:
        self.ws.guard_store()
        self.check_registry_statuses(rollback=rollback)
        if ep.kind.processes and not self.ws.dry_run:
            self.ws.runner_guard(
                f"endpoint {ep.name} is a local model server, which would run on this runner and die with the "
                "job while its deployment record says it is live; use backend: sagemaker for CI deploys",
                "MLOPS_CI_ALLOW_RUNNER_ENDPOINTS",
            )

    def _announce(self, dep: Deployment, mv: ModelVersion) -> Deployment:
        if dep.outcome == "succeeded":
            self.deployed(mv, dep.endpoint)
        return dep

    def check_registry_statuses(self, *, rollback: bool) -> None:
        """Before a deploy changes anything: the Comet registry statuses it will set exist in the
        workspace (a wrong one refuses the deploy now, rather than a warning after it). Comet is
        beside mlops-ci's registry, never in the way: when it cannot answer, or for a rollback
        (an emergency), a problem is a warning and the rollout goes on."""
        t = self.ws.cfg.tracking
        tracker = self.ws.tracker() if t.model_name else None  # a tracker with no registry is not made here
        if tracker is None or not t.model_name:
            return
        from ..errors import ConfigError, MlopsCiError

        try:
            problem = tracker.status_problem() if tracker.online else None
        except MlopsCiError as exc:
            self.ws.warn(f"Comet's registry statuses were not checked ({exc.message}); its registry may not follow")
            return
        if problem and not rollback:
            raise ConfigError(problem)
        if problem:
            self.ws.warn(f"{problem}; the rollback goes on, Comet's registry will not follow it")

    def deployed(self, mv: ModelVersion, endpoint: str) -> None:
        """After a successful rollout: the Comet registry version gets the deployed status."""
        t = self.ws.cfg.tracking
        tracker = self.ws.tracker() if t.model_name else None
        if tracker is None or not t.model_name or not tracker.online:
            return
        from ..errors import MlopsCiError

        try:
            demoted = tracker.mark_deployed(mv, endpoint)
            self.ws.say(
                f"Comet model registry: {t.model_name} {mv.version}.0.0 is {t.deployed_status} on {endpoint}"
                + "".join(f"; {v} is {t.retired_status}" for v in demoted)
            )
        except MlopsCiError as exc:
            self.ws.warn(f"the deploy succeeded, but Comet's registry was not updated: {exc.message}")
