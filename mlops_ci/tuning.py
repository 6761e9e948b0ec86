"""`tuning:`: a hyperparameter search over a commit, as SageMaker's HyperParameterTuningJob has it
(objective, parameter ranges with their scaling, strategy, max jobs, max parallel jobs, early
stopping), and the trials a local search runs.

Every trial is a training run of the commit with its values on top of
`training.hyperparameters`; the best completed trial (by the objective's goal) becomes the commit's
run, the one the gate decides on. The names follow SageMaker's API (ContinuousParameterRange,
IntegerParameterRange, CategoricalParameterRange, ScalingType, Strategy) so the same block
means the same search on either trainer.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import dataclass
from typing import Any

STRATEGIES = ("Random", "Grid", "Bayesian", "Hyperband")
# run by the local trainer; Bayesian is optuna's TPE (the `tuning` extra): no optimiser of ours
LOCAL_STRATEGIES = ("Random", "Grid", "Bayesian")
TYPES = ("continuous", "integer", "categorical")
SCALINGS = ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")
EARLY_STOPPING = ("Off", "Auto")
TRIAL = "mlops-ci:trial"  # a trial run's link: its number in its search, 1..max_jobs
BEST = "mlops-ci:best-trial"  # the commit's run after a search: the number of the trial it is


@dataclass(frozen=True)
class ParameterRange:
    name: str
    type: str  # continuous | integer | categorical
    min: float | None = None
    max: float | None = None
    values: tuple[Any, ...] = ()
    scaling: str = "Auto"


@dataclass(frozen=True)
class TuningConfig:
    metric: str  # the objective
    goal: str  # maximize | minimize
    parameters: tuple[ParameterRange, ...]
    strategy: str = "Random"
    max_jobs: int = 10
    max_parallel: int = 1
    early_stopping: str = "Off"
    seed: int = 0


def grid_size(t: TuningConfig) -> int:
    return math.prod(len(p.values) for p in t.parameters)


def rounds(t: TuningConfig) -> int:
    """How many rounds of `max_parallel` trials a search takes (a parsed Grid's max_jobs is its size)."""
    return math.ceil(t.max_jobs / t.max_parallel)


def trials(t: TuningConfig) -> list[dict[str, Any]]:
    """The values of each trial of a Random or Grid search, in order: the same config gives the
    same trials (the seed), so a search run again finds the trials it already ran."""
    if t.strategy == "Grid":
        combos = itertools.product(*(p.values for p in t.parameters))
        return [dict(zip((p.name for p in t.parameters), combo, strict=True)) for combo in combos]
    if t.strategy != "Random":
        raise ValueError(f"{t.strategy} search is not run locally")
    rng = random.Random(t.seed)  # noqa: S311  (a search's draws, reproducible by design: no secret)
    return [{p.name: _sample(p, rng) for p in t.parameters} for _ in range(t.max_jobs)]


def _sample(p: ParameterRange, rng: random.Random) -> Any:
    if p.type == "categorical":
        return rng.choice(p.values)
    lo, hi = float(p.min), float(p.max)  # type: ignore[arg-type]
    if p.type == "integer":
        if p.scaling == "Logarithmic":
            return min(int(hi), int(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)))))
        return rng.randint(int(lo), int(hi))
    if p.scaling == "Logarithmic":
        value = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    elif p.scaling == "ReverseLogarithmic":  # dense near 1: 1 - a log-uniform draw of 1 - x
        value = 1.0 - math.exp(rng.uniform(math.log(1.0 - hi), math.log(1.0 - lo)))
    else:  # Auto and Linear: SageMaker's Auto picks a scale; here it is linear
        value = rng.uniform(lo, hi)
    return float(f"{min(max(value, lo), hi):.6g}")  # six significant digits: readable, and within the range


def distribution(p: ParameterRange) -> Any:
    """`p` as an optuna distribution (a Bayesian search). A ReverseLogarithmic range x is searched
    as 1 - x on a log scale, which is what the scaling means."""
    import optuna  # type: ignore[import-not-found,unused-ignore]

    d = optuna.distributions
    if p.type == "categorical":
        return d.CategoricalDistribution(list(p.values))
    lo, hi = float(p.min), float(p.max)  # type: ignore[arg-type]
    if p.type == "integer":
        return d.IntDistribution(int(lo), int(hi), log=p.scaling == "Logarithmic")
    if p.scaling == "ReverseLogarithmic":
        return d.FloatDistribution(1.0 - hi, 1.0 - lo, log=True)
    return d.FloatDistribution(lo, hi, log=p.scaling == "Logarithmic")


def from_distribution(p: ParameterRange, value: Any) -> Any:
    """A value optuna proposed for `p`, as a trial's hyperparameter (the same rounding as a draw)."""
    if p.type == "categorical":
        return value
    if p.type == "integer":
        return int(value)
    lo, hi = float(p.min), float(p.max)  # type: ignore[arg-type]
    x = 1.0 - float(value) if p.scaling == "ReverseLogarithmic" else float(value)
    return float(f"{min(max(x, lo), hi):.6g}")


def problems(t: TuningConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """What SageMaker would refuse in a tuning job, and what cannot be a search: (key path, message)."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    if t.max_parallel > t.max_jobs and t.strategy != "Grid":
        out.append((("max_parallel",), f"is more than max_jobs ({t.max_jobs})"))
    for p in t.parameters:
        at: tuple[str | int, ...] = ("parameters", p.name)
        if t.strategy == "Grid" and p.type != "categorical":
            out.append((at, "a Grid search takes categorical parameters only (SageMaker's rule): give values"))
        if p.type == "categorical":
            continue
        assert p.min is not None and p.max is not None
        if not p.min < p.max:
            out.append((at, f"min ({p.min:g}) must be less than max ({p.max:g})"))
        elif p.scaling == "Logarithmic" and p.min <= 0:
            out.append((at, "Logarithmic scaling needs min > 0"))
        elif p.scaling == "ReverseLogarithmic" and (p.type == "integer" or not (p.min >= 0 and p.max < 1)):
            out.append((at, "ReverseLogarithmic scaling is for continuous ranges within 0 <= x < 1"))
    return out


def best(runs: list[tuple[int, Any]], t: TuningConfig) -> tuple[int, Any] | None:
    """The best (trial number, run) by the objective: completed runs with a finite value of the
    metric only; a tie goes to the earlier trial."""
    scored = [
        (n, r)
        for n, r in runs
        if r.status == "completed" and isinstance(r.metrics.get(t.metric), float) and math.isfinite(r.metrics[t.metric])
    ]
    if not scored:
        return None
    sign = -1.0 if t.goal == "maximize" else 1.0
    return min(scored, key=lambda nr: (sign * nr[1].metrics[t.metric], nr[0]))


@dataclass(frozen=True)
class Trial:
    """One trial of a search: its number (1..), its values, and its training-config digest, made of
    the training configuration without the search, its number and its values: a trial is the same
    run whatever else of the search changes (max_parallel, max_jobs, the objective), and two
    trials that drew the same values are still two."""

    number: int
    values: dict[str, Any]
    digest: str
    job: str = ""  # on SageMaker: the training job its tuning job ran it as (not part of the digest)

    def links(self) -> dict[str, str]:
        return {TRIAL: str(self.number)}


# -- SageMaker's HyperParameterTuningJob ------------------------------------------------------
# Hyperband infers its MaxResource from one of these static hyperparameters (botocore's service
# model, HyperbandStrategyConfig.MaxResource), or the request is refused.
HYPERBAND_EPOCHS = ("epochs", "numepochs", "n-epochs", "n_epochs", "num_epochs")
MAX_RANGES = 30  # ParameterRanges: at most 30 hyperparameters in all (CategoricalParameterRange.Values too)


def sagemaker_ranges(t: TuningConfig) -> dict[str, list[dict[str, object]]]:
    """ParameterRanges as the SDK's tuner sends them for a framework estimator: bounds as strings,
    each categorical value as text JSON-encoded (`sagemaker_value`)."""
    out: dict[str, list[dict[str, object]]] = {
        "ContinuousParameterRanges": [], "IntegerParameterRanges": [], "CategoricalParameterRanges": [],
    }  # fmt: skip
    for p in t.parameters:
        if p.type == "categorical":
            out["CategoricalParameterRanges"].append({"Name": p.name, "Values": [sagemaker_value(v) for v in p.values]})
        elif p.type == "integer":
            bounds = {"MinValue": str(int(p.min or 0)), "MaxValue": str(int(p.max or 0))}
            out["IntegerParameterRanges"].append({"Name": p.name, **bounds, "ScalingType": p.scaling})
        else:
            bounds = {"MinValue": repr(float(p.min or 0.0)), "MaxValue": repr(float(p.max or 0.0))}
            out["ContinuousParameterRanges"].append({"Name": p.name, **bounds, "ScalingType": p.scaling})
    return out


def sagemaker_value(v: object) -> str:
    """A categorical value as the SDK's tuner sends it for a framework estimator: the value as text,
    then JSON-encoded (sagemaker/parameter.py, CategoricalParameter: 32 -> '"32"', True -> '"True"')."""
    return json.dumps(v if isinstance(v, str) else str(v))


def from_sagemaker(p: ParameterRange, text: str) -> object:
    """A value a tuning job chose for `p` (TunedHyperParameters: a string), as the config's type;
    ValueError when it is no value of the range."""
    if p.type == "categorical":
        for v in p.values:
            if sagemaker_value(v) == text:
                return v
        raise ValueError(f"{p.name}={text!r} is none of the configured values")
    x = float(text)
    lo, hi = float(p.min or 0), float(p.max or 0)
    slack = 1e-9 * max(1.0, abs(lo), abs(hi))  # a log-scale draw at a bound: exp(log(0.1)) = 0.10000000000000002
    if not math.isfinite(x) or not lo - slack <= x <= hi + slack:
        raise ValueError(f"{p.name}={text!r} is outside the configured range")
    x = min(max(x, lo), hi)
    if p.type == "integer":
        if x != round(x):
            raise ValueError(f"{p.name}={text!r} is not a whole number")
        return round(x)  # "5" or "5.0"
    return x
