"""A search over a commit (`tuning:`), locally: 8 trials, 2 at a time, every trial a run, the best
one the commit's run that the gate decides on and the report ranks. The objective is computed
here again from each trial's recorded values, by the formula the script uses: the ranking is
checked against an independent computation, not against what the tuner says."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from mlops_ci import tuning
from tests.conftest import Project, git

SCRIPT = textwrap.dedent(
    """
    import argparse, json, os, sys, time
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float)
    p.add_argument("--depth", type=int)
    p.add_argument("--solver")
    p.add_argument("--fixed", type=int)
    a, _ = p.parse_known_args()  # a trial also gets --_tuning_objective_metric, as on SageMaker
    running = os.environ["RUNNING_DIR"]
    me = os.path.join(running, str(os.getpid()))
    open(me, "w").close()
    time.sleep(0.4)  # long enough for the trials that run at once to overlap
    seen = len(os.listdir(running))
    os.remove(me)
    if a.solver == "fail" or a.depth == 99:
        sys.exit("this trial fails on purpose")
    score = 1.0 - abs(a.lr - 0.01) * 10 - abs(a.depth - 4) * 0.01 + (0.05 if a.solver == "adam" else 0)
    print(f"accuracy={score:.6f}")
    print(f"concurrent={seen}")
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as fh:
        json.dump(vars(a), fh)
    """
)

CONFIG = """\
project: tune
training:
  entry_point: train.py
  hyperparameters: {fixed: 3}
  environment: {RUNNING_DIR: %(running)s}
  metric_definitions:
    - {name: accuracy, regex: 'accuracy=([0-9.]+)'}
    - {name: concurrent, regex: 'concurrent=([0-9]+)'}
metrics:
  accuracy: {goal: maximize}
gate:
  rules: [{metric: accuracy, min: 0.5}]
tuning:
  objective: {metric: accuracy}
%(search)s
"""

RANDOM = """\
  max_jobs: 8
  max_parallel: 2
  seed: 7
  parameters:
    lr: {type: continuous, min: 0.0001, max: 0.1, scaling: Logarithmic}
    depth: {type: integer, min: 2, max: 8}
    solver: {type: categorical, values: [sgd, adam]}
"""


FIXED = "    lr: {type: categorical, values: [0.01]}\n    depth: {type: categorical, values: [4]}\n"


def score(values: dict[str, object]) -> float:
    """The script's objective, computed here from a trial's recorded values."""
    lr, depth = float(values["lr"]), int(values["depth"])  # type: ignore[arg-type]
    return round(1.0 - abs(lr - 0.01) * 10 - abs(depth - 4) * 0.01 + (0.05 if values["solver"] == "adam" else 0), 6)


def _project(tmp_path: Path, search: str = RANDOM) -> Project:
    repo = tmp_path / "tune"
    repo.mkdir()
    running = tmp_path / "running"
    running.mkdir()
    (repo / "train.py").write_text(SCRIPT)
    (repo / "mlops-ci.yaml").write_text(CONFIG % {"running": running, "search": search})
    (repo / ".gitignore").write_text(".mlops-ci/\n")
    git(repo, "init", "-q", "-b", "main")
    p = Project(repo)
    p.commit("search")
    return p


def _trials(p: Project, sha: str) -> list[dict[str, object]]:
    runs = json.loads(p.ok("runs", "--json", "--limit", "100"))
    return [r for r in runs if r["sha"] == sha and tuning.TRIAL in r["links"]]


def test_eight_trials_two_at_a_time_and_the_gate_decides_on_the_best(tmp_path: Path):
    p = _project(tmp_path)
    out = json.loads(p.ok("train", "--json"))
    run = out["run"]
    trials = _trials(p, run["sha"])
    assert sorted(int(t["links"][tuning.TRIAL]) for t in trials) == list(range(1, 9))
    assert all(t["status"] == "completed" and t["params"]["fixed"] == 3 for t in trials)
    # every trial's recorded objective is the script's formula over its recorded values
    for t in trials:
        assert t["metrics"]["accuracy"] == pytest.approx(score(t["params"]), abs=1e-6)
    # two at a time: never more, and they did overlap
    assert max(t["metrics"]["concurrent"] for t in trials) == 2
    best = max(trials, key=lambda t: (score(t["params"]), -int(t["links"][tuning.TRIAL])))
    assert run["reused_from"] == best["run_id"] and run["artifact_sha256"] == best["artifact_sha256"]
    assert run["params"] == best["params"] and run["metrics"]["accuracy"] == best["metrics"]["accuracy"]
    code, gate_out, err = p.cli("gate")
    assert code == 0, err
    assert f"{best['metrics']['accuracy']:g} >= 0.5" in gate_out

    md = p.ok("report")
    assert "### Tuning: best of 8 completed trial(s) of 8" in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and line.endswith("` |") and "trial" not in line]
    ranked = sorted(trials, key=lambda t: -score(t["params"]))[:5]
    assert [r.split("`")[-2] for r in rows] == [t["run_id"] for t in ranked]
    assert "★" in rows[0]
    report = json.loads(p.ok("report", "--json"))
    assert report["comparison"]["tuning"]["best_run"] == best["run_id"]

    listing = p.ok("runs")
    assert listing.count("[trial ") == 8 and f"{run['run_id']}" in listing

    # the same search again: every trial is found, none runs, the commit's run is the same
    again = json.loads(p.ok("train", "--json"))
    assert again["reused"] and again["run"]["run_id"] == run["run_id"]
    assert len(_trials(p, run["sha"])) == 8


def test_a_grid_search_runs_every_combination_and_a_failed_trial_does_not_stop_it(tmp_path: Path):
    grid = """\
  strategy: Grid
  max_parallel: 3
  parameters:
    lr: {type: categorical, values: [0.01, 0.05]}
    depth: {type: categorical, values: [4, 99]}
    solver: {type: categorical, values: [adam, sgd]}
"""
    p = _project(tmp_path, grid)
    code, out, err = p.cli("train", "--json")
    assert code == 0, err
    run = json.loads(out)["run"]
    trials = _trials(p, run["sha"])
    combos = {(t["params"]["lr"], t["params"]["depth"], t["params"]["solver"]) for t in trials}
    assert combos == {(lr, d, s) for lr in (0.01, 0.05) for d in (4, 99) for s in ("adam", "sgd")}
    assert sum(t["status"] == "failed" for t in trials) == 4  # depth 99 fails on purpose
    assert run["params"] == {"fixed": 3, "lr": 0.01, "depth": 4, "solver": "adam"}
    assert "4 trial(s) failed" in err
    assert "### Tuning: best of 4 completed trial(s) of 8" in p.ok("report")


def test_a_search_with_no_completed_trial_fails_and_records_no_commit_run(tmp_path: Path):
    p = _project(tmp_path, "  strategy: Grid\n  parameters:\n    solver: {type: categorical, values: [fail]}\n" + FIXED)
    code, _, err = p.cli("train")
    assert code == 6, err
    assert "has no completed trial with a finite 'accuracy' (1 of 1 trial(s) failed" in err
    runs = json.loads(p.ok("runs", "--json"))
    assert [r["status"] for r in runs] == ["failed"]


def test_a_search_without_a_best_trial_leaves_the_commit_without_a_run(tmp_path: Path):
    """Its trials completed but none has the objective: no trial is ever taken for the commit's run
    (gate, promote) or for a later commit's baseline."""
    p = _project(tmp_path, RANDOM.replace("max_jobs: 8", "max_jobs: 3"))
    cfg = (p.path / "mlops-ci.yaml").read_text()
    (p.path / "mlops-ci.yaml").write_text(cfg.replace("regex: 'accuracy=([0-9.]+)'", "regex: 'never=([0-9.]+)'"))
    first = p.commit("objective never printed")
    code, _, err = p.cli("train")
    assert code == 6 and "0 of 3 trial(s) failed, 3 completed without it" in err, err
    assert len(_trials(p, first)) == 3
    for verb in (("gate",), ("promote",)):
        code, _, err = p.cli(*verb)
        assert code == 4 and "it has no completed run" in err, (verb, err)
    (p.path / "mlops-ci.yaml").write_text(cfg)
    p.commit("objective printed")
    p.ok("train")
    report = json.loads(p.ok("report", "--json"))
    assert report["comparison"]["baseline"] is None  # the trials of the first commit are no baseline


def test_ties_identical_draws_and_a_search_run_again_on_another_commit(tmp_path: Path):
    """A tie goes to the earlier trial, in the search and on the leaderboard; two trials that drew
    the same values are two runs; the next commit reuses every trial and keeps the leaderboard."""
    same = "  max_jobs: 6\n  max_parallel: 3\n  parameters:\n    depth: {type: categorical, values: [4]}\n" + (
        "    lr: {type: categorical, values: [0.01]}\n    solver: {type: categorical, values: [adam]}\n"
    )
    p = _project(tmp_path, same)
    run = json.loads(p.ok("train", "--json"))["run"]
    trials = _trials(p, run["sha"])
    assert sorted(int(t["links"][tuning.TRIAL]) for t in trials) == list(range(1, 7))  # six runs, same values
    assert run["links"][tuning.BEST] == "1" and tuning.TRIAL not in run["links"]
    rows = [line for line in p.ok("report").splitlines() if line.startswith("| ") and line.endswith("` |")]
    assert rows[0].startswith("| 1 | 1 ★ |") and len(rows) == 5
    # another commit, the same inputs: every trial is reused, the leaderboard names this commit's runs
    sha = p.commit("docs only")
    code, _, err = p.cli("train")
    assert code == 0 and "training tune" not in err and err.count("reusing run") == 6, err
    report = json.loads(p.ok("report", "--json"))
    board = report["comparison"]["tuning"]
    assert board["best_run"] in {t["run_id"] for t in _trials(p, sha)} and board["completed"] == 6


def test_max_parallel_changes_no_trial(tmp_path: Path):
    p = _project(tmp_path)
    p.ok("train")
    cfg = (p.path / "mlops-ci.yaml").read_text()
    (p.path / "mlops-ci.yaml").write_text(cfg.replace("max_parallel: 2", "max_parallel: 1"))
    p.commit("one at a time")
    code, _, err = p.cli("train")
    assert code == 0 and "training tune" not in err, err  # every trial's run is found, none trains


def test_searched_names_keep_off_the_reserved_prefix(tmp_path: Path):
    p = _project(tmp_path, "  parameters: {sagemaker_program: {type: categorical, values: [evil.py]}}\n")
    code, _, err = p.cli("config", "check")
    assert code == 2 and "must not start with 'sagemaker_'" in err


def test_the_dry_run_plans_every_trial_and_records_nothing(tmp_path: Path):
    p = _project(tmp_path)
    code, out, err = p.cli("train", "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)["plan"]
    trains = [s for s in plan if s["action"] == "train"]
    assert len(trains) == 8 and len({json.dumps(s["command"]) for s in trains}) == 8
    assert all("--fixed" in s["command"] for s in trains)
    assert plan[-1]["action"] == "record run (best trial)"
    assert json.loads(p.ok("runs", "--json")) == []


def test_hostile_categorical_values_stay_inert_in_the_report(tmp_path: Path):
    evil = '"x|y\\n::error::forged <b>@team</b> `z`"'
    solver = f"    solver: {{type: categorical, values: [adam, {evil}]}}\n"
    p = _project(tmp_path, "  strategy: Grid\n  parameters:\n" + solver + FIXED)
    p.ok("train")
    md = p.ok("report")
    table = md[md.index("### Tuning") :]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == 2  # one line per trial: the value's line break did not split a row
    assert not any(line.startswith("::") for line in md.splitlines())
    assert "<b>" not in md and "@team" not in md


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ("  strategy: Hyperband\n  parameters: {lr: {type: continuous, min: 0.1, max: 1}}\n",
         "a Hyperband search is not run by the local trainer"),
        ("  strategy: Grid\n  parameters: {lr: {type: continuous, min: 0.1, max: 1}}\n",
         "a Grid search takes categorical parameters only"),
        ("  strategy: Grid\n  max_jobs: 3\n  parameters: {lr: {type: categorical, values: [1]}}\n",
         "leave max_jobs out"),
        ("  parameters: {fixed: {type: integer, min: 1, max: 3}}\n", "is also in training.hyperparameters"),
        ("  parameters: {lr: {type: continuous, min: 0, max: 1, scaling: Logarithmic}}\n", "needs min > 0"),
        ("  parameters: {lr: {type: continuous, min: 1, max: 1}}\n", "must be less than max"),
        ("  max_jobs: 2\n  max_parallel: 3\n  parameters: {lr: {type: continuous, min: 0.1, max: 1}}\n",
         "is more than max_jobs (2)"),
        ("  early_stopping: Auto\n  parameters: {lr: {type: continuous, min: 0.1, max: 1}}\n",
         "early stopping is SageMaker's"),
        ("  parameters: {lr: {type: categorical, values: [a, a]}}\n", "has a value twice"),
    ],
)  # fmt: skip
def test_a_search_that_cannot_run_fails_at_config_check(tmp_path: Path, search: str, message: str):
    p = _project(tmp_path, search)
    code, _, err = p.cli("config", "check")
    assert code == 2 and message in err, err


def test_the_objective_goal_must_agree_with_the_metric(tmp_path: Path):
    p = _project(tmp_path)
    cfg = (p.path / "mlops-ci.yaml").read_text().replace("objective: {metric: accuracy}",
                                                          "objective: {metric: accuracy, goal: minimize}")  # fmt: skip
    (p.path / "mlops-ci.yaml").write_text(cfg)
    code, _, err = p.cli("config", "check")
    assert code == 2 and "the gate and the search would pull opposite ways" in err


def test_a_forced_search_on_a_new_store_opens_it_once_before_its_trials(tmp_path: Path):
    """Two trials creating a new SQLite store at once collided ("database is locked", exit 9)."""
    p = _project(tmp_path)
    assert not (p.path / ".mlops-ci" / "store.db").exists()
    run = json.loads(p.ok("train", "--force", "--json"))["run"]
    assert len(_trials(p, run["sha"])) == 8


def test_a_bayesian_search_is_optunas_and_run_again_trains_nothing(tmp_path: Path):
    pytest.importorskip("optuna")
    p = _project(tmp_path, RANDOM.replace("  max_jobs: 8\n", "  strategy: Bayesian\n  max_jobs: 8\n"))
    assert p.ok("config", "extras").split() == ["tuning"]
    run = json.loads(p.ok("train", "--json"))["run"]
    trials = _trials(p, run["sha"])
    assert sorted(int(t["links"][tuning.TRIAL]) for t in trials) == list(range(1, 9))
    for t in trials:
        assert t["metrics"]["accuracy"] == pytest.approx(score(t["params"]), abs=1e-6)
        assert 0.0001 <= t["params"]["lr"] <= 0.1 and 2 <= t["params"]["depth"] <= 8
    assert max(t["metrics"]["concurrent"] for t in trials) == 2
    best = max(trials, key=lambda t: (score(t["params"]), -int(t["links"][tuning.TRIAL])))
    assert run["reused_from"] == best["run_id"]
    board = json.loads(p.ok("report", "--json"))["comparison"]["tuning"]
    assert board["strategy"] == "Bayesian" and board["trials"] == 8 and board["best_run"] == best["run_id"]
    # the same seed and the same results: on the next commit (the same inputs) optuna proposes the
    # same trials, whose runs are found, and none trains
    sha = p.commit("docs only")
    code, _, err = p.cli("train")
    assert code == 0 and "training tune" not in err and err.count("reusing run") == 8, err
    assert len(_trials(p, sha)) == 8


def test_a_trial_gets_the_objective_argument_sagemaker_adds(tmp_path: Path):
    """SageMaker adds `_tuning_objective_metric` to a trial's hyperparameters, and the training
    toolkit passes it on as an argument: a script that parses strictly fails locally as there."""
    p = _project(tmp_path, "  strategy: Grid\n  parameters:\n    solver: {type: categorical, values: [adam]}\n" + FIXED)
    script = p.path / "train.py"
    script.write_text(SCRIPT.replace("a, _ = p.parse_known_args()", "a = p.parse_args()"))
    p.commit("strict")
    code, _, err = p.cli("train")
    assert code == 6 and "unrecognized arguments: --_tuning_objective_metric accuracy" in err, err
    runs = json.loads(p.ok("runs", "--json"))
    assert "_tuning_objective_metric" not in runs[0]["params"]  # what is recorded: the trial's values
