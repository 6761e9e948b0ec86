from __future__ import annotations

import math

from mlops_ci.compare import compare, diff_metrics, diff_params, direction, downsample
from mlops_ci.config import MetricGoal
from mlops_ci.records import Run

GOALS = {
    "acc": MetricGoal("acc", "maximize", tolerance=0.001),
    "loss": MetricGoal("loss", "minimize"),
}


def run(run_id: str, sha: str, metrics: dict[str, float], params: dict[str, object], digest: str = "d") -> Run:
    return Run(
        run_id=run_id,
        project="p",
        sha=sha,
        branch=None,
        config_digest=digest,
        status="completed",
        backend="local",
        started=0,
        finished=1,
        params=params,
        metrics=metrics,
    )


def test_direction_uses_goal_and_tolerance():
    assert direction(0.90, 0.95, GOALS["acc"]) == "better"
    assert direction(0.90, 0.85, GOALS["acc"]) == "worse"
    assert direction(0.9000, 0.9005, GOALS["acc"]) == "same"
    assert direction(1.0, 0.5, GOALS["loss"]) == "better"
    assert direction(1.0, 2.0, None) == "changed"
    assert direction(1.0, math.nan, GOALS["acc"]) == "changed"


def test_metric_diff_is_sorted_with_one_sided_metrics():
    d = diff_metrics({"acc": 0.8, "old": 1.0}, {"acc": 0.9, "new": 2.0, "loss": 0.5}, GOALS)
    assert [(m.name, m.direction) for m in d] == [
        ("acc", "better"),
        ("loss", "added"),
        ("new", "added"),
        ("old", "removed"),
    ]
    acc = d[0]
    assert acc.old == 0.8 and acc.new == 0.9
    assert math.isclose(acc.delta, 0.1) and math.isclose(acc.rel_delta, 0.125)


def test_relative_delta_of_zero_baseline_is_none():
    (m,) = diff_metrics({"acc": 0.0}, {"acc": 0.5}, GOALS)
    assert m.rel_delta is None and m.delta == 0.5


def test_param_diff():
    changes = diff_params({"lr": 0.1, "depth": 3, "gone": 1}, {"lr": 0.2, "depth": 3, "new": "x"})
    assert [(c.name, c.change, c.old, c.new) for c in changes] == [
        ("gone", "removed", 1, None),
        ("lr", "changed", 0.1, 0.2),
        ("new", "added", None, "x"),
    ]


def test_compare_is_json_serialisable_and_flags_config_change():
    import json

    head = run("h", "a" * 40, {"acc": 0.9}, {"lr": 0.2}, digest="new")
    base = run("b", "b" * 40, {"acc": 0.8}, {"lr": 0.1}, digest="old")
    c = compare("p", head, base, "", GOALS, {"loss": [3.0, 2.0]}, {"loss": [3.0, 2.5]})
    assert c.config_changed
    assert c.baseline is not None and c.baseline.run_id == "b"
    assert c.series == {"loss": {"head": [3.0, 2.0], "baseline": [3.0, 2.5]}}
    assert json.loads(json.dumps(c.to_dict()))["metrics"][0]["direction"] == "better"


def test_compare_without_baseline_lists_metrics_as_new():
    c = compare("p", run("h", "a" * 40, {"acc": 0.9}, {}), None, "no baseline", GOALS)
    assert c.baseline is None and [m.direction for m in c.metrics] == ["added"]


def test_downsample_keeps_ends_and_limit():
    pts = [float(i) for i in range(10_000)]
    small = downsample(pts, 60)
    assert len(small) == 60 and small[0] == 0.0 and small[-1] == 9999.0
    assert small == sorted(small)
    assert downsample([1.0, 2.0], 60) == [1.0, 2.0]
