"""`mlops-ci deploy`, `rollback` and the endpoint verbs: the endpoints service of a workspace,
with what deploying needs from the other verbs (the run of a commit, the tracker's registry)."""

from __future__ import annotations

from ..backends.local_endpoints import LocalEndpoints
from ..records import ModelVersion
from ..workspace import Workspace
from .train import head_run


def endpoints(ws: Workspace) -> LocalEndpoints:
    return LocalEndpoints(ws, recorder=ws.deployment_recorder(), runs=lambda ref: head_run(ws, ref),
                          registry=RegistryFollows(ws))  # fmt: skip


class RegistryFollows:
    """The tracker's model registry follows deploys."""

    def __init__(self, ws: Workspace):
        self.ws = ws

    def check_registry_statuses(self, *, rollback: bool) -> None:
        """Before a deploy changes anything: the Comet registry statuses it will set exist in the
        workspace (a wrong one refuses the deploy now, rather than a warning after it). Comet is
        beside mlops-ci's registry, never in the way: when it cannot answer, or for a rollback
        (an emergency), a problem is a warning and the rollout goes on."""
        t = self.ws.cfg.tracking
        tracker = self.ws.tracker()
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
        tracker = self.ws.tracker()
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
