from __future__ import annotations

import math

from mlops_ci.config import GateConfig, MetricGoal, Rule
from mlops_ci.gate import BASELINE_FOUND, BASELINE_NONE, BASELINE_UNKNOWN, evaluate

GOALS = {"acc": MetricGoal("acc", "maximize"), "loss": MetricGoal("loss", "minimize")}


def gate(*rules: Rule, require_baseline: bool = False) -> GateConfig:
    return GateConfig(rules=rules, require_baseline=require_baseline)


def test_absolute_rules():
    g = gate(Rule("acc", "min", 0.8), Rule("loss", "max", 0.5))
    assert evaluate(g, {"acc": 0.85, "loss": 0.4}, None, BASELINE_NONE, GOALS).passed
    out = evaluate(g, {"acc": 0.75, "loss": 0.4}, None, BASELINE_NONE, GOALS)
    assert not out.passed
    assert [r.passed for r in out.results] == [False, True]
    assert out.results[0].reason == "0.75 < 0.8"


def test_missing_metric_fails_closed():
    out = evaluate(gate(Rule("acc", "min", 0.0)), {"loss": 1.0}, None, BASELINE_NONE, GOALS)
    assert not out.passed
    assert "missing" in out.results[0].reason


def test_required_metric():
    g = gate(Rule("f1", "required"))
    assert evaluate(g, {"f1": 0.1}, None, BASELINE_NONE, GOALS).passed
    assert not evaluate(g, {}, None, BASELINE_NONE, GOALS).passed


def test_nan_never_passes():
    out = evaluate(gate(Rule("acc", "max", 1.0)), {"acc": math.nan}, None, BASELINE_NONE, GOALS)
    assert not out.passed and "not a finite number" in out.results[0].reason


def test_relative_regression_percent_and_absolute():
    rel = gate(Rule("acc", "max_regression", 0.02, relative=True))
    assert evaluate(rel, {"acc": 0.985}, {"acc": 1.0}, BASELINE_FOUND, GOALS).passed
    bad = evaluate(rel, {"acc": 0.97}, {"acc": 1.0}, BASELINE_FOUND, GOALS)
    assert not bad.passed and "regressed by 3%" in bad.results[0].reason
    absolute = gate(Rule("loss", "max_regression", 0.1))
    assert evaluate(absolute, {"loss": 0.55}, {"loss": 0.5}, BASELINE_FOUND, GOALS).passed
    assert not evaluate(absolute, {"loss": 0.65}, {"loss": 0.5}, BASELINE_FOUND, GOALS).passed
    # improvements never count as regressions
    assert evaluate(absolute, {"loss": 0.1}, {"loss": 0.5}, BASELINE_FOUND, GOALS).passed


def test_no_baseline_anywhere_skips_relative_rules():
    out = evaluate(gate(Rule("acc", "max_regression", 0.01)), {"acc": 0.5}, None, BASELINE_NONE, GOALS)
    assert out.passed and out.results[0].skipped


def test_require_baseline_makes_first_run_fail():
    g = gate(Rule("acc", "max_regression", 0.01), require_baseline=True)
    assert not evaluate(g, {"acc": 0.5}, None, BASELINE_NONE, GOALS).passed


def test_unknown_baseline_fails_closed():
    out = evaluate(gate(Rule("acc", "max_regression", 0.01)), {"acc": 0.5}, None, BASELINE_UNKNOWN, GOALS)
    assert not out.passed and "could not be determined" in out.results[0].reason


def test_baseline_without_the_metric_fails():
    out = evaluate(gate(Rule("acc", "max_regression", 0.01)), {"acc": 0.5}, {"loss": 1}, BASELINE_FOUND, GOALS)
    assert not out.passed and "baseline run has no metric" in out.results[0].reason


def test_warn_severity_never_blocks():
    out = evaluate(gate(Rule("acc", "min", 0.9, severity="warn")), {"acc": 0.1}, None, BASELINE_NONE, GOALS)
    assert out.passed and not out.results[0].passed
