"""Pure gate evaluation. Fails closed: a missing or non-finite value never passes a rule."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import GateConfig, MetricGoal, Rule
from .records import RuleResult

# Why the baseline is what it is; decides how relative rules behave without one.
BASELINE_FOUND = "found"
BASELINE_NONE = "none"  # the whole first-parent history was searched: there is no earlier run
BASELINE_UNKNOWN = "unknown"  # search incomplete (shallow clone, limit, explicit baseline missing)


@dataclass(frozen=True)
class GateOutcome:
    passed: bool
    results: tuple[RuleResult, ...]


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def evaluate_rule(
    rule: Rule,
    metrics: dict[str, float],
    baseline: dict[str, float] | None,
    baseline_state: str,
    goals: dict[str, MetricGoal],
    require_baseline: bool,
) -> RuleResult:
    def result(
        passed: bool, reason: str, value: float | None = None, base: float | None = None, skipped: bool = False
    ) -> RuleResult:
        return RuleResult(
            metric=rule.metric,
            rule=rule.describe(),
            kind=rule.kind,
            severity=rule.severity,
            passed=passed,
            value=value,
            baseline=base,
            reason=reason,
            line=rule.line,
            skipped=skipped,
        )

    if rule.metric not in metrics:
        return result(False, f"metric '{rule.metric}' is missing from the run")
    value = metrics[rule.metric]
    if not math.isfinite(value):
        return result(False, f"metric '{rule.metric}' is {value}, not a finite number", value)
    if rule.kind == "required":
        return result(True, "present", value)
    assert rule.threshold is not None
    if rule.kind == "min":
        ok = value >= rule.threshold
        return result(ok, f"{_fmt(value)} {'>=' if ok else '<'} {_fmt(rule.threshold)}", value)
    if rule.kind == "max":
        ok = value <= rule.threshold
        return result(ok, f"{_fmt(value)} {'<=' if ok else '>'} {_fmt(rule.threshold)}", value)
    # max_regression
    if baseline is None:
        if baseline_state == BASELINE_NONE and not require_baseline:
            return result(True, "no earlier run exists to compare with; relative rule skipped", value, skipped=True)
        why = (
            "no baseline run and gate.require_baseline is true"
            if baseline_state == BASELINE_NONE
            else "baseline could not be determined"
        )
        return result(False, f"{why}; cannot check a regression", value)
    if rule.metric not in baseline:
        return result(False, f"baseline run has no metric '{rule.metric}'; cannot check a regression", value)
    old = baseline[rule.metric]
    if not math.isfinite(old):
        return result(False, f"baseline value of '{rule.metric}' is {old}; cannot check a regression", value, old)
    goal = goals[rule.metric]
    regression = (old - value) if goal.goal == "maximize" else (value - old)
    allowed = rule.threshold * abs(old) if rule.relative else rule.threshold
    ok = regression <= allowed + 1e-12
    if regression <= 0:
        reason = f"{_fmt(value)} vs {_fmt(old)}: no regression"
    else:
        amount = f"{regression / abs(old) * 100:.3g}%" if rule.relative and old else _fmt(regression)
        reason = f"{_fmt(value)} vs {_fmt(old)}: regressed by {amount}" + ("" if ok else " (over the limit)")
    return result(ok, reason, value, old)


def evaluate(
    gate: GateConfig,
    metrics: dict[str, float],
    baseline: dict[str, float] | None,
    baseline_state: str,
    goals: dict[str, MetricGoal],
) -> GateOutcome:
    results = tuple(
        evaluate_rule(r, metrics, baseline, baseline_state, goals, gate.require_baseline) for r in gate.rules
    )
    passed = all(r.passed or r.severity == "warn" for r in results)
    return GateOutcome(passed=passed, results=results)
