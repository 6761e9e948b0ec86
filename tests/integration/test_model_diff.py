"""The review's model diff on the shipped example, checked against an independent computation
(scikit-learn on the unpacked artifacts), and its gate quantities deciding like any metric."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tests.conftest import EXAMPLE, FAST_INFERENCE, Project, fast_config, git

RULES = """\
    - metric: flip_rate
      max: {flip}
"""


@pytest.fixture(scope="module")
def example_pr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """The example trained on main, and a PR that changes one hyperparameter, trained too."""
    repo = tmp_path_factory.mktemp("diff") / "classifier"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__", ".mlops-ci"))
    (repo / ".gitignore").write_text(".mlops-ci/\n")
    git(repo, "init", "-q", "-b", "main")
    proj = Project(repo)
    proj.commit("example")
    proj.ok("train")
    proj.git("checkout", "-q", "-b", "fewer-trees")
    cfg = (repo / "mlops-ci.yaml").read_text().replace("n_estimators: 40", "n_estimators: 10")
    (repo / "mlops-ci.yaml").write_text(cfg)
    proj.commit("fewer trees")
    proj.ok("train")
    yield proj


def _artifact(proj: Project, ref: str) -> Path:
    run = json.loads(proj.ok("runs", "show", ref, "--json"))
    run = run.get("run", run)
    return Path(unquote(urlparse(run["artifact_uri"]).path))


def _predict(artifact: Path, where: Path, csv: Path) -> list[int]:
    """scikit-learn's own predictions from the unpacked artifact, fed as the serving contract
    feeds the model (rows → float32), in a process of its own (importing scikit-learn here
    would change this process's environment)."""
    with tarfile.open(artifact) as tar:
        tar.extractall(where, filter="data")
    code = (
        "import json, sys, joblib, numpy as np\n"
        "x = np.loadtxt(sys.argv[2], delimiter=',', skiprows=1)[:, :-1].astype(np.float32)\n"
        "print(json.dumps(joblib.load(sys.argv[1]).predict(x).tolist()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(where / "model.joblib"), str(csv)], capture_output=True, text=True, check=True
    ).stdout
    return [int(v) for v in json.loads(out)]


def test_a_hyperparameter_pr_gets_a_diff_that_an_independent_computation_confirms(example_pr: Project, tmp_path):
    report = json.loads(example_pr.ok("report", "--base", "main", "--json"))
    d = report["comparison"]["model_diff"]
    assert d["status"] == "ok", d["reason"]
    # independently: scikit-learn on the unpacked artifacts, fed as the serving contract feeds
    # the model (JSON rows → float32), on the test channel without its label column
    csv = example_pr.path / "data" / "test" / "test.csv"
    y = [int(float(line.rsplit(",", 1)[1])) for line in csv.read_text().splitlines()[1:]]
    base = _predict(_artifact(example_pr, "main"), tmp_path / "b", csv)
    head = _predict(_artifact(example_pr, "fewer-trees"), tmp_path / "h", csv)
    n = len(y)
    flips = sum(b != h for b, h in zip(base, head, strict=True))
    assert flips > 0  # the hyperparameter change moves some predictions: the test can tell
    assert d["rows"] == n == d["eval"]["rows"] and d["eval"]["labels"] is True
    assert d["changed"] == flips and d["flip_rate"] == pytest.approx(flips / n)
    classes = [int(c) for c in d["classification"]["classes"]]
    assert sorted(classes) == sorted(set(y))
    confusion = [[sum(1 for i in range(n) if base[i] == a and head[i] == b) for b in classes] for a in classes]
    assert d["classification"]["confusion"] == confusion
    correct = [sum(p[i] == y[i] for i in range(n)) / n for p in (base, head)]
    assert d["classification"]["accuracy"] == pytest.approx(correct)
    for row in d["classification"]["per_class"]:
        c = int(row["class"])
        for side, pred in (("baseline", base), ("head", head)):
            tp = sum(1 for i in range(n) if pred[i] == c == y[i])
            assert row[f"{side}_precision"] == pytest.approx(tp / sum(1 for p in pred if p == c))
            assert row[f"{side}_recall"] == pytest.approx(tp / sum(1 for v in y if v == c))
    # the changed rows: regressions (head wrong, baseline right) first, by row number
    changed = [i for i in range(n) if base[i] != head[i]]
    regressions = [i for i in changed if base[i] == y[i]]
    expect = (regressions + [i for i in changed if i not in regressions])[:5]
    assert [int(r["id"]) - 1 for r in d["top"]["rows"]] == expect
    first = d["top"]["rows"][0]
    assert first["baseline"] == str(base[expect[0]]) and first["head"] == str(head[expect[0]])
    assert d["top"]["columns"] == [f"f{i}" for i in range(8)]
    # serving figures for both sides, measured in this run
    ops = d["operational"]
    for side, ref in (("baseline", "main"), ("head", "fewer-trees")):
        assert ops[side]["artifact_mb"] == pytest.approx(_artifact(example_pr, ref).stat().st_size / 1e6)
        assert 0 < ops[side]["latency_p50_ms"] <= ops[side]["latency_p99_ms"]
        assert ops[side]["peak_memory_mb"] > 10 and ops[side]["load_s"] > 0
        assert ops[side]["requests"] == 200
    assert d["metrics"]["flip_rate"] == d["flip_rate"]
    assert d["metrics"]["latency_p99_ms"] == ops["head"]["latency_p99_ms"]
    assert d["baseline_metrics"]["latency_p99_ms"] == ops["baseline"]["latency_p99_ms"]


def test_the_comment_shows_flip_rate_confusion_changed_rows_and_serving_deltas(example_pr: Project, tmp_path):
    md = example_pr.ok("report", "--base", "main", "--html", str(tmp_path / "r.html"))
    section = md.split("### Model diff", 1)[1]
    assert "**Flip rate" in section and "prediction(s) changed · accuracy" in section
    assert "| baseline \\ head | 0 | 1 |" in section or "| baseline \\ head | 1 | 0 |" in section
    assert "| class | support | precision | recall |" in section
    assert "Top changed rows (5)" in section and "| row | f0 | f1 |" in section
    assert "| single-request latency p99 (ms) |" in section and "| artifact size (MB) |" in section
    assert "less confined" not in section  # this kernel has Landlock, and every limit was set
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!doctype html>") and "<script" not in page and "default-src 'none'" in page
    assert "Top changed rows" in page and "peak memory" in page


def test_the_gate_uses_the_report_s_numbers_and_a_flip_rate_rule_decides(example_pr: Project):
    first = json.loads(example_pr.ok("report", "--base", "main", "--json"))["comparison"]["model_diff"]
    rate = first["flip_rate"]
    cfg = example_pr.path / "mlops-ci.yaml"
    original = cfg.read_text()
    try:
        for limit, code in ((rate / 2, 1), (min(1.0, rate * 2), None)):
            cfg.write_text(
                original.replace("      severity: warn\n", "      severity: warn\n" + RULES.format(flip=limit))
            )
            example_pr.commit(f"flip_rate <= {limit}")
            example_pr.ok("train")  # reuses the model: only the rules changed
            got, out, _ = example_pr.cli("gate", "--base", "main", "--json")
            verdict = json.loads(out)
            rule = next(r for r in verdict["results"] if r["metric"] == "flip_rate")
            assert rule["value"] == rate  # the report's measurement, from the cache: no second opinion
            assert rule["passed"] is (code is None)
            # the accuracy regression of fewer trees fails the gate in both cases; the flip
            # rule is what differs
            assert got == 1
    finally:
        example_pr.git("reset", "-q", "--hard", "HEAD~2")


# -- the fast project: regression predictions, a latency rule, slices --------------------------
SLOW_INFERENCE = FAST_INFERENCE.replace(
    "def predict_fn(data, model):\n", "def predict_fn(data, model):\n    import time\n    time.sleep(0.004)\n"
)
DATA = "id,region,x,label\n" + "".join(f"r{i},{'eu' if i % 3 else 'us'},{i},{2 * i}\n" for i in range(1, 61))


def _fast(project: Project, **kw: object) -> None:
    (project.path / "data" / "rows.csv").write_text(DATA)
    extra = textwrap.dedent("""\
        review:
          eval_channel: train
          id_column: id
          slice_column: region
          exclude_columns: [region]
          latency_requests: 40
        """)
    rules = kw.pop("rules", "")
    text = fast_config(extra=extra, **kw)  # type: ignore[arg-type]
    text = text.replace("      max_regression: 5%\n", "      max_regression: 5%\n" + str(rules))
    (project.path / "mlops-ci.yaml").write_text(text)


def _main_and_branch(project: Project, rules: str, change: Callable[[], None]) -> None:
    """main trained with `rules`; then a branch with `change` made, trained too."""
    _fast(project, rules=rules)
    project.commit("data")
    project.ok("train")
    project.git("checkout", "-q", "-b", "change")
    change()
    project.commit("the change")
    project.ok("train")


def test_a_regressor_diff_has_deltas_slices_and_a_latency_rule_that_fails_when_it_should(project: Project):
    import numpy as np

    rule = "    - metric: latency_p50_ms\n      max_regression: 50%\n"

    def slower_and_bigger() -> None:
        (project.path / "inference.py").write_text(SLOW_INFERENCE)
        _fast(project, scale=1.5, rules=rule)

    _main_and_branch(project, rule, slower_and_bigger)
    code, out, err = project.cli("gate", "--base", "main", "--json")
    verdict = json.loads(out)
    lat = next(r for r in verdict["results"] if r["metric"] == "latency_p50_ms")
    assert code == 1 and lat["passed"] is False and lat["value"] > 4 > lat["baseline"], err
    d = json.loads(project.ok("report", "--base", "main", "--json"))["comparison"]["model_diff"]
    assert d["task"] == "regression" and d["changed"] == 60 and d["flip_rate"] == 1.0
    x = np.arange(1, 61, dtype=float)
    delta = 1.5 * x - x  # the models see x alone: id, region (excluded) and label are never sent
    stats = d["regression"]["delta"]
    assert stats["mean"] == pytest.approx(delta.mean()) and stats["max"] == pytest.approx(delta.max())
    assert stats["p50"] == pytest.approx(float(np.median(delta)))
    assert sum(d["regression"]["histogram"]["counts"]) == 60
    assert d["regression"]["mae"] == pytest.approx([np.abs(x - 2 * x).mean(), np.abs(1.5 * x - 2 * x).mean()])
    assert [r["id"] for r in d["top"]["rows"]] == ["r60", "r59", "r58", "r57", "r56"]  # largest change first
    groups = {g["value"]: g for g in d["slices"]["groups"]}
    us = x[x % 3 == 0]
    assert groups["us"]["rows"] == len(us) and groups["us"]["head"] == pytest.approx(np.abs(1.5 * us - 2 * us).mean())
    assert d["metrics"]["mae@region=us"] == groups["us"]["head"]
    assert d["baseline_metrics"]["mae@region=eu"] == groups["eu"]["baseline"]
    md = project.ok("report", "--base", "main")
    assert "xychart-beta" in md and "| head − baseline |" in md and "Slices by region" in md


def test_the_same_model_passes_a_latency_rule(project: Project):
    rule = "    - metric: latency_p50_ms\n      max_regression: 300%\n    - metric: flip_rate\n      max: 0\n"
    _main_and_branch(project, rule, lambda: (project.path / "README.md").write_text("docs only\n"))
    code, out, err = project.cli("gate", "--base", "main", "--json")
    assert code == 0, err
    results = {r["metric"]: r for r in json.loads(out)["results"]}
    assert results["flip_rate"]["value"] == 0 and results["latency_p50_ms"]["passed"]


def test_without_an_earlier_run_a_diff_rule_is_skipped_unless_a_baseline_is_required(project: Project):
    rule = "    - metric: flip_rate\n      max: 0.1\n"
    _fast(project, rules=rule)
    project.commit("first run of the project")
    project.ok("train")
    code, out, err = project.cli("gate", "--json")
    flip = next(r for r in json.loads(out)["results"] if r["metric"] == "flip_rate")
    assert code == 0 and flip["skipped"] is True and "no earlier run exists" in flip["reason"], err
    text = (project.path / "mlops-ci.yaml").read_text().replace("gate:\n", "gate:\n  require_baseline: true\n")
    (project.path / "mlops-ci.yaml").write_text(text)
    project.git("commit", "-q", "--amend", "-am", "first run, a baseline required")  # still no earlier run
    project.ok("train")
    code, out, _ = project.cli("gate", "--json")
    flip = next(r for r in json.loads(out)["results"] if r["metric"] == "flip_rate")
    assert code == 1 and flip["reason"] == "no model diff: no baseline run to compare predictions with"


def test_config_check_knows_the_diff_quantities(project: Project):
    rules = "    - metric: flip_rate\n      max: 0.1\n    - metric: accuracy@segment=a\n      min: 0.5\n"
    _fast(project, rules=rules)
    _, out, err = project.cli("config", "check")
    said = out + err
    assert "'flip_rate'" not in said  # a diff quantity, not a typo
    assert "'accuracy@segment=a' names the slice column 'segment', but review.slice_column is 'region'" in said
    text = (project.path / "mlops-ci.yaml").read_text().replace("  eval_channel: train\n", "")
    (project.path / "mlops-ci.yaml").write_text(text)
    _, out, err = project.cli("config", "check")
    assert "'flip_rate' comes from the model diff, and review.eval_channel 'test' is not one of" in out + err


def test_a_report_file_that_cannot_be_written_is_a_usage_error(project: Project, tmp_path: Path):
    project.ok("train")
    code, _, err = project.cli("report", "--html", str(tmp_path / "missing" / "r.html"))
    assert code == 2 and "--html" in err and "give a path in an existing directory" in err
