"""Pure comparison of a run with its baseline → :class:`Comparison` (no I/O)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .config import MetricGoal
from .records import Comparison, MetricDelta, ParamChange, Run, RunRef


def ref(run: Run) -> RunRef:
    return RunRef(
        run_id=run.run_id,
        sha=run.sha,
        branch=run.branch,
        config_digest=run.config_digest,
        artifact_sha256=run.artifact_sha256,
        links=dict(run.links),
        cost=dict(run.cost),
    )


def direction(old: float, new: float, goal: MetricGoal | None) -> str:
    if not (math.isfinite(old) and math.isfinite(new)):
        return "changed" if not (math.isnan(old) and math.isnan(new)) else "same"
    delta = new - old
    tolerance = goal.tolerance if goal else 0.0
    if abs(delta) <= tolerance:
        return "same"
    if goal is None:
        return "changed"
    up_is_good = goal.goal == "maximize"
    return "better" if (delta > 0) == up_is_good else "worse"


def diff_metrics(old: dict[str, float], new: dict[str, float], goals: dict[str, MetricGoal]) -> tuple[MetricDelta, ...]:
    out = []
    for name in sorted(set(old) | set(new)):
        goal = goals.get(name)
        g = goal.goal if goal else None
        if name not in old:
            out.append(MetricDelta(name, None, new[name], None, None, g, "added"))
        elif name not in new:
            out.append(MetricDelta(name, old[name], None, None, None, g, "removed"))
        else:
            o, n = old[name], new[name]
            delta = n - o
            rel = delta / abs(o) if o not in (0.0,) and math.isfinite(o) else None
            out.append(MetricDelta(name, o, n, delta, rel, g, direction(o, n, goal)))
    return tuple(out)


def diff_params(old: dict[str, Any], new: dict[str, Any]) -> tuple[ParamChange, ...]:
    out = []
    for name in sorted(set(old) | set(new)):
        if name not in old:
            out.append(ParamChange(name, None, new[name], "added"))
        elif name not in new:
            out.append(ParamChange(name, old[name], None, "removed"))
        elif old[name] != new[name]:
            out.append(ParamChange(name, old[name], new[name], "changed"))
    return tuple(out)


def compare(
    project: str,
    head: Run,
    baseline: Run | None,
    baseline_note: str,
    goals: dict[str, MetricGoal],
    head_series: Mapping[str, Sequence[float]] | None = None,
    baseline_series: Mapping[str, Sequence[float]] | None = None,
) -> Comparison:
    base_metrics = baseline.metrics if baseline else {}
    metrics = (
        diff_metrics(base_metrics, head.metrics, goals)
        if baseline
        else tuple(
            MetricDelta(n, None, v, None, None, goals[n].goal if n in goals else None, "added")
            for n, v in sorted(head.metrics.items())
        )
    )
    params = diff_params(baseline.params, head.params) if baseline else ()
    series: dict[str, dict[str, Sequence[float]]] = {}
    hs, bs = head_series or {}, baseline_series or {}
    for name in sorted(set(hs) | set(bs)):
        entry = {}  # shared, not copied: series can be millions of points
        if name in hs:
            entry["head"] = hs[name]
        if name in bs:
            entry["baseline"] = bs[name]
        series[name] = entry
    return Comparison(
        project=project,
        head=ref(head),
        baseline=ref(baseline) if baseline else None,
        baseline_note=baseline_note,
        metrics=metrics,
        params=params,
        config_changed=bool(baseline and baseline.config_digest != head.config_digest),
        series=series,
    )


def downsample(points: Sequence[float], limit: int) -> list[float]:
    """At most `limit` points, evenly spaced, always keeping the first and the last."""
    n = len(points)
    if n <= limit:
        return list(points)
    if limit < 2:
        return [points[-1]]
    step = (n - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]
