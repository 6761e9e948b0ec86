"""Report artifacts from untrusted runs (fork PRs), treated strictly as data.

The second stage of the fork-safe pattern downloads the JSON report that the unprivileged
`pull_request` run uploaded. Everything in it may be forged, so it is size-capped, parsed
into typed records with every field checked, and the comment is re-rendered from those
records with the usual escaping: no markdown or HTML from the artifact is ever posted as is,
and no code from it runs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import Refused
from .records import Comparison, MetricDelta, ParamChange, RuleResult, RunRef

MAX_BYTES = 20 * 1024 * 1024
MAX_METRICS = 5000
MAX_PARAMS = 5000
MAX_SERIES_POINTS = 1000
MAX_TEXT = 2000
_SHA = re.compile(r"^[0-9a-f]{40}$")
_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DIRECTIONS = {"better", "worse", "same", "changed", "added", "removed"}


class _Bad(Exception):
    pass


def _obj(v: Any, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _Bad(f"{where} must be an object")
    extra = set(v) - keys
    if extra:
        raise _Bad(f"{where} has unexpected field(s) {', '.join(sorted(extra)[:5])}")
    return v


def _str(v: object, where: str, *, optional: bool = False, pattern: re.Pattern[str] | None = None) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str) or len(v) > MAX_TEXT:
        raise _Bad(f"{where} must be a string of at most {MAX_TEXT} characters")
    if pattern and not pattern.match(v):
        raise _Bad(f"{where} is not valid")
    return v


def _num(v: object, where: str, *, optional: bool = True) -> float | None:
    if v is None and optional:
        return None
    if isinstance(v, str) and v in ("nan", "inf", "-inf"):
        return float(v)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _Bad(f"{where} must be a number")
    try:
        return float(v)
    except OverflowError:
        raise _Bad(f"{where} is too large a number") from None


def _scalar(v: object, where: str) -> object:
    if v is None or isinstance(v, bool | int | float):
        return v
    return _str(v, where)


# trials: a search's cost is every trial's, summed
_COST_NUMBERS = ("instance_count", "billable_seconds", "training_seconds", "spot_savings_pct", "usd_per_hour", "usd",
                 "on_demand_usd", "trials")  # fmt: skip
_COST_TEXT = ("instance_type", "price_source")


def _cost(v: object, where: str) -> dict[str, object]:
    d = _obj(v, where, {*_COST_NUMBERS, *_COST_TEXT, "spot"})
    out: dict[str, object] = {}
    for k in _COST_NUMBERS:
        if d.get(k) is not None:
            out[k] = _num(d[k], f"{where}.{k}")
    for k in _COST_TEXT:
        if d.get(k) is not None:
            out[k] = _str(d[k], f"{where}.{k}")
    if "spot" in d:
        if not isinstance(d["spot"], bool):
            raise _Bad(f"{where}.spot must be true or false")
        out["spot"] = d["spot"]
    return out


def _ref(v: object, where: str) -> RunRef:
    d = _obj(v, where, {"run_id", "sha", "branch", "config_digest", "artifact_sha256", "links", "cost"})
    links = _obj(d.get("links") or {}, f"{where}.links", set((d.get("links") or {}).keys()))
    if len(links) > 20:
        raise _Bad(f"{where}.links has too many entries")
    return RunRef(
        run_id=str(_str(d.get("run_id"), f"{where}.run_id")),
        sha=str(_str(d.get("sha"), f"{where}.sha", pattern=_SHA)),
        branch=_str(d.get("branch"), f"{where}.branch", optional=True),
        config_digest=str(_str(d.get("config_digest"), f"{where}.config_digest")),
        artifact_sha256=_str(d.get("artifact_sha256"), f"{where}.artifact_sha256", optional=True),
        links={str(_str(k, f"{where}.links")): str(_str(val, f"{where}.links")) for k, val in links.items()},
        cost=_cost(d.get("cost") or {}, f"{where}.cost"),
    )


# The model diff's shape (model_diff.py): a type, a tuple of allowed strings, a dict of
# fields (each optional), [item] for a list, ("map", value) for an object of any names.
_NUM, _INT = "number", "whole number"
_FIG = ("map", _NUM)
_DIFF: dict[str, object] = {
    "schema": str,
    "status": ("ok", "failed", "skipped"),
    "reason": str,
    "cached": bool,
    "seconds": _NUM,
    "task": ("classification", "regression"),
    "rows": _INT,
    "changed": _INT,
    "flip_rate": _NUM,
    "eval": {"channel": str, "rows": _INT, "total_rows": _INT, "files": _INT, "labels": bool, "columns": _INT},
    "classification": {
        "classes": [str],
        "confusion": [[_INT]],
        "accuracy": [_NUM],
        "per_class": [
            {
                "class": str,
                "support": _INT,
                "baseline_precision": _NUM,
                "head_precision": _NUM,
                "baseline_recall": _NUM,
                "head_recall": _NUM,
            }
        ],
    },
    "regression": {
        "nonfinite": _INT,
        "delta": _FIG,
        "histogram": {"edges": [_NUM], "counts": [_INT]},
        "mae": [_NUM],
        "rmse": [_NUM],
    },
    "top": {
        "columns": [str],
        "rows": [{"id": str, "features": [str], "baseline": str, "head": str, "label": str, "delta": _NUM}],
    },
    "slices": {
        "column": str,
        "values": _INT,
        "groups": [{"value": str, "rows": _INT, "flip_rate": _NUM, "metric": str, "baseline": _NUM, "head": _NUM}],
    },
    "metrics": _FIG,
    "baseline_metrics": _FIG,
    "operational": {"baseline": _FIG, "head": _FIG},
    "sandbox": {
        "timeout_s": _NUM,
        "memory_mb": _INT,
        "files": bool,
        "network": bool,
        "limits": bool,
        "note": str,
        "python": str,
    },
}
MAX_DIFF_ITEMS = 10_000
_SCALAR = "scalar"  # a hyperparameter value: string, number, boolean
# A search's leaderboard (verbs/tune.py): a fork's artifact may carry one; it is checked like the rest.
_TUNING: dict[str, object] = {
    "metric": str,
    "goal": ("maximize", "minimize"),
    "strategy": ("Random", "Grid", "Bayesian", "Hyperband"),
    "trials": _INT,
    "completed": _INT,
    "best_run": str,
    "top": [
        {"trial": _INT, "run_id": str, "status": ("completed", "failed"), "objective": _NUM, "values": ("map", _SCALAR)}
    ],
}


def _conform(v: Any, spec: Any, where: str) -> Any:
    """`v` checked against `spec` (above); a field may be null, an item of a list or map not."""
    if v is None:
        return None
    if spec is str:
        return _str(v, where)
    if spec == _SCALAR:
        return _scalar(v, where)
    if spec is bool:
        if not isinstance(v, bool):
            raise _Bad(f"{where} must be true or false")
        return v
    if spec == _NUM:
        return _num(v, where)
    if spec == _INT:
        if isinstance(v, bool) or not isinstance(v, int) or abs(v) > 2**53:
            raise _Bad(f"{where} must be a whole number of at most 2**53")
        return v
    if isinstance(spec, tuple) and spec and spec[0] == "map":
        if not isinstance(v, dict) or len(v) > MAX_DIFF_ITEMS:
            raise _Bad(f"{where} must be an object of at most {MAX_DIFF_ITEMS} entries")
        return {str(_str(k, f"{where} name")): _item(x, spec[1], f"{where}[{k!r}]") for k, x in v.items()}
    if isinstance(spec, tuple):
        if v not in spec:
            raise _Bad(f"{where} must be one of {', '.join(spec)}")
        return v
    if isinstance(spec, list):
        if not isinstance(v, list) or len(v) > MAX_DIFF_ITEMS:
            raise _Bad(f"{where} must be a list of at most {MAX_DIFF_ITEMS}")
        return [_item(x, spec[0], f"{where}[{i}]") for i, x in enumerate(v)]
    d = _obj(v, where, set(spec))
    return {k: _conform(x, spec[k], f"{where}.{k}") for k, x in d.items()}


def _item(v: object, spec: object, where: str) -> object:
    if v is None:
        raise _Bad(f"{where} must not be null")
    return _conform(v, spec, where)


def _tuning(v: object) -> dict[str, Any] | None:
    t = _conform(v, _TUNING, "comparison.tuning")
    if t is not None and (not isinstance(t.get("top"), list) or len(t["top"]) > 20):
        raise _Bad("comparison.tuning.top must be a list of at most 20 trials")
    for key in ("metric", "goal", "strategy", "trials", "completed"):
        if t is not None and t.get(key) is None:
            raise _Bad(f"comparison.tuning.{key} is missing")
    for i, row in enumerate(t["top"] if t else []):
        if row.get("run_id") is None or row.get("trial") is None or not isinstance(row.get("values"), dict):
            raise _Bad(f"comparison.tuning.top[{i}] needs trial, run_id and values")
    return t  # type: ignore[no-any-return]


def conform_model_diff(data: object) -> dict[str, object] | None:
    """A model diff read back (the review's cache) if it has the shape of one, else None."""
    try:
        checked = _conform(data, _DIFF, "model_diff")
    except (_Bad, OverflowError):
        return None
    return checked if isinstance(checked, dict) else None


def load_report(path: Path) -> tuple[Comparison, list[RuleResult], bool, dict[str, Any]]:
    """Validate a `mlops-ci report --json` artifact. Raises Refused naming the first problem."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise Refused(f"cannot read the report artifact {path}: {exc.strerror}") from None
    if size > MAX_BYTES:
        raise Refused(f"the report artifact is {size} bytes, over the {MAX_BYTES}-byte limit; refusing it")
    try:
        data = json.loads(path.read_bytes())
        return _parse(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(f"the report artifact is not valid JSON ({str(exc)[:100]}); refusing it") from None
    except (_Bad, RecursionError, OverflowError) as exc:
        raise Refused(f"the report artifact is malformed: {exc}; refusing it") from None


def _parse(data: Any) -> tuple[Comparison, list[RuleResult], bool, dict[str, Any]]:
    top = _obj(data, "the report", {"schema", "marker", "gate", "comparison", "context"})
    if top.get("schema") != "mlops-ci/report/v1":
        raise _Bad("schema must be mlops-ci/report/v1")
    gate = _obj(top.get("gate"), "gate", {"passed", "results"})
    if not isinstance(gate.get("passed"), bool) or not isinstance(gate.get("results"), list):
        raise _Bad("gate needs passed (boolean) and results (list)")
    if len(gate["results"]) > 500:
        raise _Bad("too many gate results")
    results = []
    for i, r in enumerate(gate["results"]):
        w = f"gate.results[{i}]"
        d = _obj(
            r, w, {"metric", "rule", "kind", "severity", "passed", "value", "baseline", "reason", "line", "skipped"}
        )
        if not isinstance(d.get("passed"), bool) or not isinstance(d.get("skipped", False), bool):
            raise _Bad(f"{w}.passed and .skipped must be booleans")
        line = d.get("line")
        if line is not None and (isinstance(line, bool) or not isinstance(line, int)):
            raise _Bad(f"{w}.line must be a whole number")
        results.append(RuleResult(
            metric=str(_str(d.get("metric"), f"{w}.metric")), rule=str(_str(d.get("rule"), f"{w}.rule")),
            kind=str(_str(d.get("kind"), f"{w}.kind")), severity=str(_str(d.get("severity"), f"{w}.severity")),
            passed=d["passed"], value=_num(d.get("value"), f"{w}.value"),
            baseline=_num(d.get("baseline"), f"{w}.baseline"),
            reason=str(_str(d.get("reason"), f"{w}.reason")), line=line, skipped=d.get("skipped", False),
        ))  # fmt: skip
    fields = {
        "project",
        "head",
        "baseline",
        "baseline_note",
        "metrics",
        "params",
        "config_changed",
        "series",
        "model_diff",
        "tuning",
    }
    c = _obj(top.get("comparison"), "comparison", fields)
    project = str(_str(c.get("project"), "comparison.project", pattern=_PROJECT))
    metrics_raw, params_raw = c.get("metrics"), c.get("params")
    if not isinstance(metrics_raw, list) or len(metrics_raw) > MAX_METRICS:
        raise _Bad(f"comparison.metrics must be a list of at most {MAX_METRICS}")
    if not isinstance(params_raw, list) or len(params_raw) > MAX_PARAMS:
        raise _Bad(f"comparison.params must be a list of at most {MAX_PARAMS}")
    metrics = []
    for i, m in enumerate(metrics_raw):
        w = f"comparison.metrics[{i}]"
        d = _obj(m, w, {"name", "old", "new", "delta", "rel_delta", "goal", "direction"})
        if d.get("direction") not in DIRECTIONS:
            raise _Bad(f"{w}.direction is not valid")
        metrics.append(MetricDelta(
            name=str(_str(d.get("name"), f"{w}.name")), old=_num(d.get("old"), f"{w}.old"),
            new=_num(d.get("new"), f"{w}.new"), delta=_num(d.get("delta"), f"{w}.delta"),
            rel_delta=_num(d.get("rel_delta"), f"{w}.rel_delta"), goal=_str(d.get("goal"), f"{w}.goal", optional=True),
            direction=d["direction"],
        ))  # fmt: skip
    params = []
    for i, p in enumerate(params_raw):
        w = f"comparison.params[{i}]"
        d = _obj(p, w, {"name", "old", "new", "change"})
        if d.get("change") not in ("added", "removed", "changed"):
            raise _Bad(f"{w}.change is not valid")
        params.append(ParamChange(str(_str(d.get("name"), f"{w}.name")), _scalar(d.get("old"), f"{w}.old"),
                                  _scalar(d.get("new"), f"{w}.new"), d["change"]))  # fmt: skip
    series_raw = c.get("series") or {}
    if not isinstance(series_raw, dict) or len(series_raw) > MAX_METRICS:
        raise _Bad("comparison.series must be an object of at most 5000 series")
    series: dict[str, dict[str, Sequence[float]]] = {}
    for name, entry in series_raw.items():
        e = _obj(entry, f"comparison.series[{_str(name, 'series name')!r}]", {"head", "baseline"})
        series[name] = {}
        for side, pts in e.items():
            if not isinstance(pts, list) or len(pts) > MAX_SERIES_POINTS:
                raise _Bad(f"series {name!r}.{side} must be a list of at most {MAX_SERIES_POINTS} points")
            series[name][side] = [math.nan if p is None else float(_num(p, "series point", optional=False) or 0.0)
                                  for p in pts]  # fmt: skip
    if not isinstance(c.get("config_changed"), bool):
        raise _Bad("comparison.config_changed must be a boolean")
    comparison = Comparison(
        project=project, head=_ref(c.get("head"), "comparison.head"),
        baseline=_ref(c["baseline"], "comparison.baseline") if c.get("baseline") is not None else None,
        baseline_note=str(_str(c.get("baseline_note", ""), "comparison.baseline_note")),
        metrics=tuple(metrics), params=tuple(params), config_changed=c["config_changed"], series=series,
        model_diff=_conform(c.get("model_diff"), _DIFF, "comparison.model_diff"),
        tuning=_tuning(c.get("tuning")),
    )  # fmt: skip
    ctx = _obj(top.get("context") or {}, "context", {"pr", "head_ref", "base_ref"})
    pr = ctx.get("pr")
    if pr is not None and (isinstance(pr, bool) or not isinstance(pr, int) or pr <= 0):
        raise _Bad("context.pr must be a positive whole number")
    context = {
        "pr": pr,
        "head_ref": _str(ctx.get("head_ref"), "context.head_ref", optional=True),
        "base_ref": _str(ctx.get("base_ref"), "context.base_ref", optional=True),
    }
    return comparison, results, gate["passed"], context
