"""`mlops-ci monitor ENDPOINT --schedule`: on a SageMaker endpoint, a SageMaker Model Monitor
data-quality schedule instead of the local comparison of `monitor` (verbs/monitor.py): a baseline
of the served run's training channel, a job definition on the endpoint's captured traffic, an
hourly (by default) schedule. The requests are mlops_ci/backends/sagemaker_monitor.py's; every
write goes through `ws.fx`, so with `ws.dry_run` the result's `plan` lists them unsent."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, NotFound, UsageError
from ..refs import RefKind
from ..workspace import Workspace


def schedule(ws: Workspace, endpoint: str) -> dict[str, Any]:
    """Create or update the Model Monitor schedule of `endpoint` for the version it serves.
    Returns what was done (`status`: created | updated | unchanged), with `plan` in a dry run."""
    from ..settings.sagemaker import SageMakerEndpointConfig

    cfg = ws.cfg
    ep = next((e for e in cfg.endpoints if e.name == endpoint), None)
    if ep is None:
        raise NotFound(f"no endpoint named {endpoint} in {cfg.file} ({', '.join(e.name for e in cfg.endpoints)})")
    if not isinstance(ep, SageMakerEndpointConfig):
        raise UsageError(f"endpoint {endpoint} is on {ep.backend}: a Model Monitor schedule is SageMaker's; run "
                         f"`mlops-ci monitor {endpoint}` without --schedule to compare its capture here")  # fmt: skip
    if ep.capture is None:
        raise ConfigError(f"{cfg.file}: endpoint {endpoint} has no `capture:`, so Model Monitor has no traffic to "
                          "read; add capture: {percent: 20} and deploy")  # fmt: skip
    if ep.monitor_schedule is None:
        raise ConfigError(f"{cfg.file}: endpoint {endpoint} has no `monitor_schedule:`; add monitor_schedule: true "
                          "(hourly, ml.m5.xlarge) or its settings (docs/config-reference.md)")  # fmt: skip
    target = ws.resolve(endpoint, frozenset({RefKind.ENDPOINT}), what="monitor --schedule")
    run, mv = target.run, target.version
    if run is None or mv is None:
        raise NotFound(f"endpoint {endpoint} serves no model version; deploy one first")
    channel = cfg.monitoring.channel if cfg.monitoring else "train"
    from ..backends.sagemaker_monitor import ModelMonitor

    monitor = ModelMonitor(ws.aws(), cfg, ep, ws.fx, ws.say)
    out: dict[str, Any] = {**monitor.schedule(mv, run, channel), "sha": mv.sha, "run_id": run.run_id}
    if ws.dry_run:
        out["plan"] = list(ws.plan)
    return out
