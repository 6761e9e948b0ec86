"""The one rollout sequence, for every endpoint backend and for the dry run.

check → lock → read what serves (nothing to do if it is the version) → mirror the start (GitHub
deployment) → new version up beside the old → check it → switch traffic → check again → endpoint
state → deployment record → old version stops → mirror the end.

The endpoint backends (backends/local_endpoints.LocalRollout, backends/sagemaker_endpoints.SageMakerSteps)
only say how each step is done. Every write goes through an `Effects` sink: performed, or in a
dry run recorded in the plan, so the plan is the real run's writes in the real run's order.
"""

from __future__ import annotations

import time

from ..backends import DeploymentRecorder, Effects, EndpointBackend, StepFailed, pause
from ..backends.local_endpoints import LocalEndpoints
from ..config import EndpointConfig
from ..errors import DeployFailed, MlopsCiError
from ..records import Deployment, ModelVersion


def rollout(
    endpoints: LocalEndpoints,
    backend: EndpointBackend,
    ep: EndpointConfig,
    mv: ModelVersion,
    tag: str | None,
    kind: str,
    lock_timeout: float,
    fx: Effects,
) -> Deployment:
    """Roll `mv` out to `ep` on `backend` (kind: deploy | rollback); the deployment record, or
    in a dry run the planned one. A failed step leaves what served before serving (or says what
    serves instead) and raises DeployFailed after recording the failure."""
    recorder: DeploymentRecorder | None = endpoints.recorder
    started = time.time()
    steps = backend.steps(ep, mv, fx)
    steps.check()
    with fx.lock(lambda: endpoints.lock(ep.name, lock_timeout), endpoint=ep.name):
        live = steps.live()
        if live.current:
            return endpoints.noop(ep, mv, tag, kind, live.url, started)

        def detail() -> str:
            return endpoints.success_detail(kind, ep, mv, tag, steps.url(), live.old)

        if recorder:
            fx.each(
                "github",
                "request",
                lambda: recorder.begin(ep.name, mv.version, mv.sha, tag, kind),
                lambda: recorder.plan(ep.name, mv.version, mv.sha, tag, kind, steps.url(), detail())[:2],
            )
        try:
            steps.start()
            steps.verify()
            steps.switch({"tag": tag, "kind": kind, "started": started, "detail": detail()})
            steps.verify_live()
        except StepFailed as exc:  # only a real run fails: a planned step goes on as planned
            still = exc.still or (f"{live.old} is still serving" if live.serving else "nothing was serving before")
            endpoints.record(ep, mv, tag, kind, "failed", exc.reason, started)
            if recorder:
                recorder.end("failed", live.url, f"{exc.reason}; {still}")
            raise DeployFailed(f"{kind} of v{mv.version} to {ep.name} failed: {exc.reason}; {still}") from None
        except MlopsCiError as exc:
            # A refusal or a service's error mid-rollout (an upload denied, a router that cannot
            # start) keeps its own exit code and leaves the store as it was (a transient error
            # is retried without --retry-failed), but the GitHub deployment begun above ends.
            if recorder and not fx.dry_run:
                recorder.end("failed", live.url, exc.message)
            raise
        said = detail()
        fx(
            "store",
            "update endpoint state",
            lambda: endpoints.store.put_endpoint_state(steps.state()),
            None,
            endpoint=ep.name,
            version=mv.version,
        )
        pause("state written")
        planned = endpoints.deployment(ep, mv, tag, kind, "planned", f"dry run: would {said}", started)
        dep = fx(
            "store",
            "record deployment",
            lambda: endpoints.record(ep, mv, tag, kind, "succeeded", said, started),
            planned,
            endpoint=ep.name,
            version=mv.version,
            kind=kind,
            outcome="succeeded",
        )
        steps.retire()
        if recorder:
            fx.each(
                "github",
                "request",
                lambda: recorder.end("succeeded", steps.url(), said),
                lambda: recorder.plan(ep.name, mv.version, mv.sha, tag, kind, steps.url(), said)[2:],
            )
        return dep
