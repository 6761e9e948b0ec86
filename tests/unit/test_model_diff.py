"""The model diff's pure parts: reading the evaluation data, comparing predictions, rendering
(escaping everything that came from data or a model), and the `review:` settings."""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

import pytest

from mlops_ci.config import ReviewConfig, parse
from mlops_ci.diff_report import markdown, render_html
from mlops_ci.errors import ConfigError
from mlops_ci.model_diff import EvalTable, ModelFailed, compare_predictions, goal_of, infer_task, read_eval
from mlops_ci.records import Comparison, RunRef


def table(n: int, *, labels=None, slices=None, ids=None, columns=("x",)) -> EvalTable:  # type: ignore[no-untyped-def]
    raw = [[str(i)] * len(columns) for i in range(n)]
    return EvalTable(list(columns), raw, raw, labels, ids or [str(i + 1) for i in range(n)], slices, n, 1)


def test_classes_from_text_labels_and_from_scores_per_class():
    cfg = ReviewConfig(slice_column="country")
    y = ["cat", "dog", "dog", "bird"]
    base = ["cat", "dog", "cat", "bird"]
    head = ["cat", "cat", "dog", "bird"]
    d = compare_predictions(base, head, table(4, labels=y, slices=["fr", "fr", "de", "de"]), cfg)
    assert d["task"] == "classification" and d["changed"] == 2 and d["flip_rate"] == 0.5
    keys = d["classification"]["classes"]
    cell = {(a, b): d["classification"]["confusion"][keys.index(a)][keys.index(b)] for a in keys for b in keys}
    assert cell[("dog", "cat")] == 1 and cell[("cat", "dog")] == 1 and cell[("bird", "bird")] == 1
    assert d["classification"]["accuracy"] == [0.75, 0.75]
    dog = next(c for c in d["classification"]["per_class"] if c["class"] == "dog")
    assert (dog["baseline_precision"], dog["head_precision"], dog["baseline_recall"], dog["head_recall"]) == (
        1.0,
        1.0,
        0.5,
        0.5,
    )
    # row 2 (head wrong where the baseline was right) comes before row 3 (a fix)
    assert [r["id"] for r in d["top"]["rows"]] == ["2", "3"]
    groups = {g["value"]: g for g in d["slices"]["groups"]}
    assert groups["fr"]["baseline"] == 1.0 and groups["fr"]["head"] == 0.5  # the regression hides in one slice
    assert d["metrics"]["accuracy@country=fr"] == 0.5 and d["baseline_metrics"]["accuracy@country=fr"] == 1.0
    assert d["metrics"]["flip_rate@country=de"] == 0.5
    scores = compare_predictions([[0.9, 0.1], [0.2, 0.8]], [[0.4, 0.6], [0.1, 0.9]], table(2), ReviewConfig())
    assert scores["task"] == "classification" and scores["changed"] == 1 and scores["top"]["rows"][0]["head"] == "1"


def test_one_element_outputs_are_scalars_and_other_shapes_are_refused():
    # a regressor answering shape (n, 1), as Keras' Dense(1) does
    d = compare_predictions([[1.5], [2.5]], [[150.5], [2.5]], table(2), ReviewConfig())
    assert d["task"] == "regression" and d["changed"] == 1 and d["flip_rate"] == 0.5
    for bad, shown in (({"p": 1}, '{"p": 1}'), ([], "[]"), (["a", "b"], '["a", "b"]')):
        with pytest.raises(ModelFailed, match="the head model's prediction 2 is " + re.escape(shown)):
            compare_predictions([1, 2], [1, bad], table(2), ReviewConfig())
    assert compare_predictions([[[1.5]]], [[[2.5]]], table(1), ReviewConfig())["task"] == "regression"  # (n, 1, 1)
    with pytest.raises(ModelFailed, match="prediction 1 is too large"):
        compare_predictions([1], [10**400], table(1), ReviewConfig())


def test_labels_1_and_1_0_and_text_1_000000_are_one_class():
    d = compare_predictions([1, 0], [1.0, 0.0], table(2, labels=["1.000000", "0"]), ReviewConfig())
    assert d["changed"] == 0 and d["classification"]["accuracy"] == [1.0, 1.0]


def test_regression_deltas_match_an_independent_computation():
    base = [float(i) for i in range(101)]
    head = [v + (v % 7) * 0.5 - 1 for v in base]
    y = [str(v + 1) for v in base]
    d = compare_predictions(base, head, table(101, labels=y), ReviewConfig(top_k=3))
    delta = [h - b for b, h in zip(base, head, strict=True)]
    st = d["regression"]["delta"]
    assert st["mean"] == pytest.approx(statistics.fmean(delta))
    assert st["std"] == pytest.approx(statistics.pstdev(delta))
    ordered = sorted(delta)
    for q in (1, 25, 50, 99):  # numpy's default: linear between the closest ranks
        pos = q / 100 * (len(ordered) - 1)
        lo = math.floor(pos)
        want = ordered[lo] + (ordered[min(lo + 1, len(ordered) - 1)] - ordered[lo]) * (pos - lo)
        assert st[f"p{q:02d}"] == pytest.approx(want)
    assert sum(d["regression"]["histogram"]["counts"]) == 101
    assert d["regression"]["mae"] == pytest.approx([1.0, statistics.fmean(abs(h - float(t)) for h, t in zip(head, y))])
    assert d["changed"] == sum(1 for v in delta if v != 0)
    top = [abs(delta[int(r["id"]) - 1]) for r in d["top"]["rows"]]
    assert top == sorted(top, reverse=True) and top[0] == max(abs(v) for v in delta)


def test_non_finite_predictions_are_counted_not_fatal():
    d = compare_predictions([1.5, 2.5, math.nan], [1.5, math.inf, math.nan], table(3), ReviewConfig(task="regression"))
    assert d["regression"]["nonfinite"] == 2  # rows with a non-finite prediction on one side or both
    assert d["changed"] == 1  # inf vs 2.5 changed; nan vs nan did not


def test_the_task_is_inferred_from_the_predictions():
    assert infer_task([0, 1, 1], [1, 1, 0], "auto") == "classification"
    assert infer_task([0.5, 1.25], [0.5, 1.0], "auto") == "regression"
    assert infer_task(list(range(100)), list(range(100)), "auto") == "regression"
    assert infer_task([0.5], [0.5], "classification") == "classification"
    with pytest.raises(ModelFailed, match="not a number; set review.task: classification"):
        compare_predictions(["a"], ["b"], table(1), ReviewConfig(task="regression"))


def test_reading_the_channel(tmp_path: Path):
    (tmp_path / "a.csv").write_text("id,x,y,label\nr1,1,2,0\nr2,3,4,1\n")
    (tmp_path / "b.csv").write_text("id,x,y,label\nr3,5,6,1\n")
    t = read_eval(tmp_path, ReviewConfig(id_column="id", max_rows=2))
    assert t.columns == ["x", "y"] and t.rows == [[1.0, 2.0], [3.0, 4.0]] and t.labels == ["0", "1"]
    assert t.ids == ["r1", "r2"] and t.total == 3 and t.files == 2
    csv = read_eval(tmp_path, ReviewConfig(content_type="text/csv", exclude_columns=("id",)))
    assert csv.rows[0] == ["1", "2"]  # the cells as read
    (tmp_path / "c.csv").write_text("other,header\n1,2\n")
    with pytest.raises(ModelFailed, match="c.csv's header differs"):
        read_eval(tmp_path, ReviewConfig())
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "d.csv").write_text("0,1.5,2\n1,2.5,3\n")
    t = read_eval(bare, ReviewConfig(label_column="0"))
    assert t.columns == ["1", "2"] and t.labels == ["0", "1"]
    with pytest.raises(ModelFailed, match="review.label_column 'label' is not a column.*0-based index"):
        read_eval(bare, ReviewConfig(label_column="label"))
    (bare / "e.csv").write_text("0,1\n")
    with pytest.raises(ModelFailed, match="has 2 cells, not 3"):
        read_eval(bare, ReviewConfig())
    with pytest.raises(ModelFailed, match="has no .csv file"):
        read_eval(tmp_path / "nothing", ReviewConfig())


def test_every_slice_value_gets_gate_quantities_the_table_shows_the_largest(tmp_path: Path):
    values = [f"v{i % 30:02d}" for i in range(300)]
    d = compare_predictions(
        [0] * 300,
        [i % 2 for i in range(300)],
        table(300, labels=["0"] * 300, slices=values),
        ReviewConfig(slice_column="s"),
    )
    assert d["slices"]["values"] == 30 and len(d["slices"]["groups"]) == 20
    assert d["slices"]["groups"][-1]["value"] == "(other)" and d["slices"]["groups"][-1]["rows"] == 110
    assert "accuracy@s=v29" in d["metrics"] and "flip_rate@s=(other)" not in d["metrics"]


def test_a_cell_csv_cannot_read_is_a_diff_failure(tmp_path: Path):
    (tmp_path / "a.csv").write_text("x,label\n" + "1" * 200_000 + ",0\n")
    with pytest.raises(ModelFailed, match="not CSV the review can read"):
        read_eval(tmp_path, ReviewConfig())


def test_data_values_become_one_printable_line(tmp_path: Path):
    (tmp_path / "a.csv").write_text('id,region,x\n"a\nb",::error::x\x1b[31m,1\n')
    t = read_eval(tmp_path, ReviewConfig(id_column="id", slice_column="region"))
    assert t.ids == ["a?b"] and t.slices == ["::error::x?[31m"]


def test_diff_quantities_know_their_direction():
    assert goal_of("flip_rate").goal == "minimize"  # type: ignore[union-attr]
    assert goal_of("latency_p99_ms").goal == "minimize"  # type: ignore[union-attr]
    assert goal_of("accuracy@region=eu").goal == "maximize"  # type: ignore[union-attr]
    assert goal_of("mae@region=eu").goal == "minimize"  # type: ignore[union-attr]
    assert goal_of("accuracy") is None and goal_of("mae") is None  # the run's own metrics


HOSTILE = "::error::pwned\n##[error]x | <script>alert(1)</script> [a](https://evil.example) @org/team `x`"


def hostile_diff() -> dict:  # type: ignore[type-arg]
    row = {"id": HOSTILE, "features": [HOSTILE], "baseline": HOSTILE, "head": "1", "label": HOSTILE, "delta": None}
    return {
        "schema": "mlops-ci/model-diff/v1",
        "status": "ok",
        "reason": "",
        "task": "classification",
        "rows": 2,
        "changed": 1,
        "flip_rate": 0.5,
        "eval": {"channel": HOSTILE, "rows": 2, "total_rows": 2},
        "classification": {
            "classes": [HOSTILE, "1"],
            "confusion": [[1, 1], [0, 0]],
            "per_class": [{"class": HOSTILE, "support": 1}],
        },
        "top": {"columns": [HOSTILE], "rows": [row]},
        "slices": {"column": HOSTILE, "groups": [{"value": HOSTILE, "rows": 2, "flip_rate": 0.5, "metric": HOSTILE}]},
        "operational": {"baseline": {}, "head": {"latency_p50_ms": 1.0}},
        "sandbox": {"files": False, "limits": True, "note": HOSTILE},
    }


def test_values_from_data_and_models_are_inert_in_the_comment_and_the_page():
    md = "\n".join(markdown(hostile_diff(), html_link="https://github.com/o/r/actions/runs/1#artifacts"))
    for raw in ("<script>", "[a](https", "@org", "\n::error::", "\n##[error]", " | <"):
        assert raw not in md
    assert not any(line.startswith(("::", "##[")) for line in md.splitlines())
    ref = RunRef("h", "a" * 40, None, "d", None, {})
    page = render_html(Comparison("p", ref, None, "", (), (), False, {}, hostile_diff()), [], True)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_diff_that_could_not_run_says_why_in_one_line():
    md = markdown({"status": "failed", "reason": "the head model failed to load: x\ny"})
    assert md[-1] == "> ⚠️ The model diff could not run: the head model failed to load: x y"


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("review: {task: guess}\n", "'guess' is not allowed"),
        ("review: {timeout: 0}\n", "review.timeout: must be between 1 and 86400"),
        ("review: {memory_mb: 10}\n", "review.memory_mb: must be between 64 and 1048576"),
        ("review: {memory_mb: 99999999999999}\n", "review.memory_mb: must be between 64 and 1048576"),
        ("gate:\n  rules:\n    - {metric: flip_rate, max_regression: 1%}\n", "already compares the head's model"),
        ("review: {model_diffs: false}\n", "did you mean 'model_diff'"),
        ("review: {content_type: application/x-npy}\n", "allowed: application/json, text/csv"),
        ('review: {slice_column: "a\\nb"}\n', "line breaks or control characters"),
    ],
)
def test_bad_review_settings_fail_with_location(snippet: str, expected: str):
    with pytest.raises(ConfigError, match=expected) as exc:
        parse("project: x\n" + snippet, "mlops-ci.yaml", ".")
    assert exc.value.message.startswith("mlops-ci.yaml:")


def test_max_regression_on_a_diff_quantity_needs_no_declared_goal():
    cfg = parse(
        "project: x\ngate:\n  rules:\n    - {metric: latency_p99_ms, max_regression: 20%}\n"
        "    - {metric: accuracy@region=eu, max_regression: 0.01}\n",
        "mlops-ci.yaml",
        ".",
    )
    assert [r.metric for r in cfg.gate.rules] == ["latency_p99_ms", "accuracy@region=eu"]
    with pytest.raises(ConfigError, match="needs to know whether 'accuracy'"):
        parse("project: x\ngate:\n  rules:\n    - {metric: accuracy, max_regression: 1%}\n", "mlops-ci.yaml", ".")
