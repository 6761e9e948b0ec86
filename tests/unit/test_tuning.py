"""The trials of a search (mlops_ci/tuning.py): reproducible, within their ranges, on their scale."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import pytest

from mlops_ci import tuning
from mlops_ci.tuning import ParameterRange, TuningConfig, best, grid_size, trials


def _search(*ranges: ParameterRange, strategy: str = "Random", jobs: int = 400, seed: int = 0) -> TuningConfig:
    return TuningConfig(metric="m", goal="maximize", parameters=ranges, strategy=strategy, max_jobs=jobs, seed=seed)


def test_the_same_seed_gives_the_same_trials_and_another_seed_others():
    r = ParameterRange("lr", "continuous", min=0.0, max=1.0)
    assert trials(_search(r, seed=1)) == trials(_search(r, seed=1))
    assert trials(_search(r, seed=1)) != trials(_search(r, seed=2))


def test_every_value_is_in_its_range_and_integers_are_integers():
    ranges = (
        ParameterRange("a", "continuous", min=-2.0, max=3.0),
        ParameterRange("b", "continuous", min=1e-5, max=1.0, scaling="Logarithmic"),
        ParameterRange("c", "continuous", min=0.9, max=0.9999, scaling="ReverseLogarithmic"),
        ParameterRange("d", "integer", min=2, max=9),
        ParameterRange("e", "integer", min=1, max=1000, scaling="Logarithmic"),
        ParameterRange("f", "categorical", values=("x", 3, True)),
    )
    got = trials(_search(*ranges))
    assert len(got) == 400
    for t in got:
        assert -2 <= t["a"] <= 3 and 1e-5 <= t["b"] <= 1 and 0.9 <= t["c"] <= 0.9999
        assert isinstance(t["d"], int) and 2 <= t["d"] <= 9 and isinstance(t["e"], int) and 1 <= t["e"] <= 1000
        assert t["f"] in ("x", 3, True)
    assert {t["d"] for t in got} == set(range(2, 10))  # both ends are reached


def test_logarithmic_scaling_spreads_evenly_over_the_orders_of_magnitude():
    got = [t["b"] for t in trials(_search(ParameterRange("b", "continuous", min=1e-6, max=1.0, scaling="Logarithmic")))]
    decades = [sum(1 for v in got if 10**-k > v >= 10 ** -(k + 1)) for k in range(6)]
    assert min(decades) > 40  # ~67 each; a linear draw would put ~360 in the top decade
    lin = [t["b"] for t in trials(_search(ParameterRange("b", "continuous", min=1e-6, max=1.0)))]
    assert statistics.median(lin) > 0.3 > statistics.median(got)


def test_a_grid_is_every_combination_in_order():
    ranges = (
        ParameterRange("a", "categorical", values=(1, 2)),
        ParameterRange("b", "categorical", values=("x", "y", "z")),
    )
    t = _search(*ranges, strategy="Grid")
    assert grid_size(t) == 6
    assert trials(t) == [{"a": a, "b": b} for a in (1, 2) for b in ("x", "y", "z")]


@dataclass
class _Run:
    status: str
    metrics: dict[str, float] = field(default_factory=dict)


def test_the_best_trial_skips_failed_and_non_finite_ones_and_a_tie_goes_to_the_earlier():
    values = [0.5, 9.0, math.nan, 0.7, 0.7, None]
    runs = [
        (i, _Run("failed" if i == 2 else "completed", {} if v is None else {"m": v}))
        for i, v in enumerate(values, start=1)
    ]
    assert best(runs, _search()) == (4, runs[3][1])
    minimize = TuningConfig(metric="m", goal="minimize", parameters=())
    assert best(runs, minimize) == (1, runs[0][1])
    assert best([(2, _Run("failed"))], _search()) is None


def test_optuna_searches_each_range_on_its_scale():
    optuna = pytest.importorskip("optuna")
    from mlops_ci.tuning import distribution, from_distribution

    rev = ParameterRange("m", "continuous", min=0.9, max=0.999, scaling="ReverseLogarithmic")
    d = distribution(rev)
    assert isinstance(d, optuna.distributions.FloatDistribution) and d.log
    assert (d.low, d.high) == (pytest.approx(0.001), pytest.approx(0.1))  # 1 - x, on a log scale
    assert from_distribution(rev, 0.01) == 0.99
    log_int = distribution(ParameterRange("n", "integer", min=1, max=1000, scaling="Logarithmic"))
    assert isinstance(log_int, optuna.distributions.IntDistribution) and log_int.log
    cat = distribution(ParameterRange("c", "categorical", values=("a", 2, True)))
    assert list(cat.choices) == ["a", 2, True]
    assert from_distribution(ParameterRange("x", "continuous", min=0.0, max=1.0), 0.123456789) == 0.123457


def test_sagemaker_values_are_the_sdks_and_read_back_within_their_ranges():
    t = tuning.TuningConfig(
        metric="accuracy", goal="maximize",
        parameters=(
            tuning.ParameterRange("lr", "continuous", min=0.0001, max=0.1, scaling="Logarithmic"),
            tuning.ParameterRange("depth", "integer", min=2, max=8),
            tuning.ParameterRange("batch", "categorical", values=(32, True, "adam")),
        ),
    )  # fmt: skip
    ranges = tuning.sagemaker_ranges(t)
    # the SDK's CategoricalParameter: the value as text, JSON-encoded (sagemaker/parameter.py)
    assert ranges["CategoricalParameterRanges"] == [{"Name": "batch", "Values": ['"32"', '"True"', '"adam"']}]
    lr, depth, batch = t.parameters
    assert tuning.from_sagemaker(batch, '"32"') == 32 and tuning.from_sagemaker(batch, '"True"') is True
    assert tuning.from_sagemaker(lr, "0.10000000000000002") == 0.1  # a log-scale draw at its bound
    assert tuning.from_sagemaker(depth, "5.0") == 5 and isinstance(tuning.from_sagemaker(depth, "5"), int)
    for p, text in ((lr, "0.2"), (depth, "5.5"), (depth, "9"), (batch, "32"), (lr, "nan")):
        with pytest.raises(ValueError):
            tuning.from_sagemaker(p, text)
