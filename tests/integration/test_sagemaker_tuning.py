"""A search (`tuning:`) on SageMaker: one HyperParameterTuningJob (checked against botocore's
service model by the fake), its training jobs recorded as the trials, the best one the commit's
run, the cost of every trial summed. The fake runs a tuning job as SageMaker does
(tests/fakes/sagemaker.py); each trial's objective is computed here again from its recorded
values, by the formula the fake's jobs print it with."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlops_ci import tuning
from tests.fakes.sagemaker import FakeSageMaker, JobScript
from tests.integration import test_sagemaker as base
from tests.integration.test_sagemaker import SKLEARN, Repo, sm_config

fake, repo = base.fake, base.repo  # its fixtures: the fake SageMaker, a repository of a project on it

SEARCH = """\
tuning:
  objective: {metric: accuracy}
  strategy: %(strategy)s
  max_jobs: 4
  max_parallel: 2
  seed: 11
  parameters:
    lr: {type: continuous, min: 0.0001, max: 0.1, scaling: Logarithmic}
    depth: {type: integer, min: 2, max: 8}
    optimizer: {type: categorical, values: [adam, sgd, "x\\n::error::y"]}
"""


def score(lr: float, depth: int, optimizer: str) -> float:
    return round(0.8 + depth * 0.01 + (0.05 if optimizer == "adam" else 0.0) - lr, 4)


def trial_script(hps: dict[str, str]) -> JobScript:
    """What a trial prints: its objective from the values SageMaker passed it (JSON, as the
    training toolkit decodes them)."""
    lr, depth, optimizer = float(hps["lr"]), int(hps["depth"]), json.loads(hps["optimizer"])
    if optimizer == "sgd":
        return JobScript(failure="AlgorithmError: sgd diverged")
    return JobScript(log=[f"accuracy={score(lr, depth, optimizer)}", "loss=0.2"],
                     model_files={"model.json": json.dumps(hps, sort_keys=True).encode()})  # fmt: skip


def _search(repo: Repo, strategy: str = "Random") -> str:
    (repo.path / "mlops-ci.yaml").write_text(sm_config() + SEARCH % {"strategy": strategy})
    return repo.commit("search")


def _trials(repo: Repo, sha: str) -> list[dict[str, Any]]:
    runs = json.loads(repo.ok("runs", "--json", "--limit", "100"))
    return [r for r in runs if r["sha"] == sha and tuning.TRIAL in r["links"]]


def test_a_search_is_one_tuning_job_whose_training_jobs_are_the_trials(repo: Repo, fake: FakeSageMaker):
    fake.trial_script = trial_script
    sha = _search(repo)
    out = repo.run("train", "--json")
    assert out.returncode == 0, out.stderr
    assert fake.calls("CreateTrainingJob") == []  # SageMaker starts the trials, not us
    [req] = fake.calls("CreateHyperParameterTuningJob")
    name = req["HyperParameterTuningJobName"]
    assert len(name) <= 32 and name.startswith(f"fast-{sha[:7]}-") and name.endswith("-1")
    config, definition = req["HyperParameterTuningJobConfig"], req["TrainingJobDefinition"]
    assert config["Strategy"] == "Random" and config["RandomSeed"] == 11
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "accuracy"}
    # every round of 2 trials may run to max_wait (spot: 7200 s) plus 900 s to start
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2,
                                        "MaxRuntimeInSeconds": 2 * (7200 + 900)}  # fmt: skip
    ranges = config["ParameterRanges"]
    assert ranges["ContinuousParameterRanges"] == [{"Name": "lr", "MinValue": "0.0001", "MaxValue": "0.1",
                                                    "ScalingType": "Logarithmic"}]  # fmt: skip
    assert ranges["IntegerParameterRanges"] == [{"Name": "depth", "MinValue": "2", "MaxValue": "8",
                                                 "ScalingType": "Auto"}]  # fmt: skip
    # categorical values JSON-encoded, as the SDK's tuner sends them for a framework estimator
    assert ranges["CategoricalParameterRanges"] == [{"Name": "optimizer",
                                                     "Values": ['"adam"', '"sgd"', '"x\\n::error::y"']}]  # fmt: skip
    static = definition["StaticHyperParameters"]
    assert {"lr", "depth", "optimizer"}.isdisjoint(static)
    assert json.loads(static["quality"]) == 0.9 and json.loads(static["sagemaker_program"]) == "train.py"
    assert json.loads(static["sagemaker_job_name"]) == name
    assert definition["AlgorithmSpecification"]["TrainingImage"] == SKLEARN
    assert [d["Name"] for d in definition["AlgorithmSpecification"]["MetricDefinitions"]] == ["accuracy", "loss"]
    assert definition["EnableManagedSpotTraining"] is True
    assert definition["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    # no checkpoint location shared by every trial unless the config names one (docs/training.md)
    assert "CheckpointConfig" not in definition
    assert definition["VpcConfig"] == {"Subnets": ["subnet-1"], "SecurityGroupIds": ["sg-1"]}
    tags = {t["Key"]: t["Value"] for t in req["Tags"]}
    assert tags["mlops-ci:sha"] == sha and tags["mlops-ci:project"] == "fast"

    # the trials: every training job the tuning job ran, numbered in the order SageMaker created them
    jobs = fake.tunings[name].trials
    assert len(jobs) == 4 and all(j.startswith(f"{name}-") for j in jobs)
    trials = sorted(_trials(repo, sha), key=lambda t: int(t["links"][tuning.TRIAL]))
    assert [t["links"]["training_job"].rsplit("/", 1)[1] for t in trials] == jobs
    for t, job in zip(trials, jobs, strict=True):
        passed = fake.sm.training_jobs[job].hyper_parameters
        p = t["params"]
        assert (p["lr"], p["depth"], json.dumps(p["optimizer"])) == (float(passed["lr"]), int(passed["depth"]),
                                                                      passed["optimizer"])  # fmt: skip
        assert p["quality"] == 0.9  # the static ones are the trial's too
        if p["optimizer"] == "sgd":
            assert t["status"] == "failed" and "sgd diverged" in t["failure"]
        else:
            assert t["status"] == "completed"
            assert t["metrics"]["accuracy"] == pytest.approx(score(p["lr"], p["depth"], p["optimizer"]))
    completed = [t for t in trials if t["status"] == "completed"]
    assert completed, "the seed should give at least one trial that completes"
    best = max(completed, key=lambda t: (score(t["params"]["lr"], t["params"]["depth"], t["params"]["optimizer"]),
                                         -int(t["links"][tuning.TRIAL])))  # fmt: skip
    run = json.loads(out.stdout)["run"]
    assert run["reused_from"] == best["run_id"] and run["artifact_sha256"] == best["artifact_sha256"]
    assert run["links"][tuning.BEST] == best["links"][tuning.TRIAL]
    # the commit's run costs what the whole search cost: every trial's billable time (spot: 36 s of 120)
    assert run["cost"]["trials"] == 4
    assert run["cost"]["billable_seconds"] == sum(t["cost"]["billable_seconds"] for t in trials) == 4 * 36
    assert run["cost"]["usd"] == pytest.approx(sum(t["cost"]["usd"] for t in trials), abs=1e-4)
    md = repo.ok("report")
    assert "4 trials of 1 × ml.m5.xlarge (spot)" in md
    assert f"### Tuning: best of {len(completed)} completed trial(s) of 4" in md
    table = md[md.index("### Tuning") :]
    rows = [line for line in table.splitlines() if line.startswith("| ") and line.endswith("` |")]
    assert len(rows) == 4  # a value's line break did not split a row, nor start a workflow command
    assert not any(line.startswith("::") for line in md.splitlines())

    # the report travels to a fork's comment job as an artifact: the search's cost is read back
    from mlops_ci.artifact import load_report

    repo.ok("report", "--json", "--output", ".mlops-ci/report.json")  # not committed: .mlops-ci/ is ignored
    comparison = load_report(repo.path / ".mlops-ci" / "report.json")[0]
    assert comparison.head.cost["trials"] == 4

    # the same search again: the commit has its run; on a fresh store (a workflow re-run elsewhere)
    # it attaches to the commit's tuning job and records its trials, starting nothing
    again = repo.run("train", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["run"]["run_id"] == run["run_id"]
    fresh = repo.run("train", "--json", store="sqlite:///.mlops-ci/other.db")
    assert fresh.returncode == 0, fresh.stderr
    assert f"attaching to tuning job {name}" in fresh.stderr
    assert json.loads(fresh.stdout)["run"]["reused_from"] is not None
    assert len(fake.calls("CreateHyperParameterTuningJob")) == 1 and fake.calls("CreateTrainingJob") == []

    # a later commit with the same training inputs records that tuning job's trials, starts none
    later = repo.commit("docs only")
    out = repo.run("train", "--json")
    assert out.returncode == 0, out.stderr
    assert f"same training inputs as tuning job {name}" in out.stderr
    assert len(fake.calls("CreateHyperParameterTuningJob")) == 1
    assert len(_trials(repo, later)) == 4 and json.loads(out.stdout)["run"]["artifact_sha256"] == run["artifact_sha256"]


def test_the_dry_run_prints_the_tuning_job_request_and_starts_nothing(repo: Repo, fake: FakeSageMaker):
    _search(repo, strategy="Bayesian")
    out = repo.run("train", "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    [step] = [s for s in plan["plan"] if s.get("action") == "CreateHyperParameterTuningJob"]
    req = step["request"]
    assert req["HyperParameterTuningJobConfig"]["Strategy"] == "Bayesian"
    assert req["TrainingJobDefinition"]["Environment"]["COMET_API_KEY"] != "do-not-leak"  # masked in the plan
    assert "do-not-leak" not in out.stdout + out.stderr
    # the planned request is one SageMaker accepts (botocore's service model)
    from tests.fakes import aws_model

    sent = dict(req)
    sent["TrainingJobDefinition"] = {**req["TrainingJobDefinition"],
                                     "Environment": {"COMET_API_KEY": "x", "LOG_LEVEL": "info"}}  # fmt: skip
    assert aws_model.violations("sagemaker", "CreateHyperParameterTuningJob", sent) == []
    assert [op for op in fake.mutating() if op != "PutObject"] == []


def test_a_search_where_every_trial_fails_gives_the_commit_no_run(repo: Repo, fake: FakeSageMaker):
    fake.script = JobScript(failure="AlgorithmError: out of memory")
    (repo.path / "mlops-ci.yaml").write_text(sm_config() + (SEARCH % {"strategy": "Random"}).replace(
        "max_jobs: 4", "max_jobs: 8"))  # fmt: skip
    sha = repo.commit("search")
    out = repo.run("train")
    assert out.returncode == 6, out.stderr  # training failed
    assert "has no completed trial" in out.stderr
    # SageMaker gives up after 5 failed trials and no success (those already running end): not 8
    assert "Failed" in out.stderr and "No training job succeeded after 5 attempts" in out.stderr
    trials = _trials(repo, sha)
    assert 5 <= len(trials) < 8 and all(t["status"] == "failed" for t in trials)
    runs = json.loads(repo.ok("runs", "--json", "--limit", "100"))
    assert not [r for r in runs if r["sha"] == sha and tuning.TRIAL not in r["links"]]


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ("  objective: {metric: f1}\n", "'f1' has no training.metric_definitions entry"),
        ("  strategy: Hyperband\n  early_stopping: Auto\n", "must be Off with Hyperband"),
        ("  strategy: Hyperband\n", "Hyperband needs the number of epochs among training.hyperparameters"),
    ],
)
def test_what_a_tuning_job_would_refuse_fails_at_config_check(repo: Repo, search: str, message: str):
    if "f1" in search:
        text = sm_config() + "tuning:\n  objective: {metric: f1, goal: maximize}\n"
    else:
        text = sm_config() + "tuning:\n  objective: {metric: accuracy}\n" + search
    text += "  parameters: {lr: {type: continuous, min: 0.001, max: 0.1}}\n"
    (repo.path / "mlops-ci.yaml").write_text(text)
    proc = repo.run("config", "check")
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_a_trial_stopped_early_by_its_tuning_job_is_a_completed_trial(repo: Repo, fake: FakeSageMaker):
    def script(hps: dict[str, str]) -> JobScript:
        got = trial_script(hps)
        if got.failure is None and int(hps["depth"]) < 5:  # the tuning job stops the weaker ones early
            got.stopped_early = True
        return got

    fake.trial_script = script
    sha = _search(repo)
    assert repo.run("train").returncode == 0
    trials = _trials(repo, sha)
    early = [t for t in trials if t["params"]["depth"] < 5 and t["params"]["optimizer"] != "sgd"]
    assert early, "the seed should give a trial stopped early"
    assert all(t["status"] == "completed" and t["artifact_sha256"] for t in early)


def test_cancel_superseded_stops_the_tuning_job_of_an_older_commit(repo: Repo, fake: FakeSageMaker):
    old = _search(repo)
    plan = json.loads(repo.ok("train", "--dry-run", "--json"))["plan"]
    [req] = [p["request"] for p in plan if p.get("action") == "CreateHyperParameterTuningJob"]
    fake.client.create_hyper_parameter_tuning_job(**req)  # type: ignore[attr-defined]  (the older commit's, running)
    (repo.path / "features.py").write_text("SCALE = 2\n")  # other training inputs: a search of its own
    new = repo.commit("newer")
    out = repo.run("train", "--cancel-superseded")
    assert out.returncode == 0, out.stderr
    [stopped] = fake.calls("StopHyperParameterTuningJob")
    assert stopped["HyperParameterTuningJobName"] == req["HyperParameterTuningJobName"]
    assert f"superseded by {new[:8]}" in out.stderr and old != new


def test_wait_says_a_search_is_followed_by_train(repo: Repo):
    _search(repo)
    out = repo.run("wait")
    assert out.returncode == 2 and "`mlops-ci train`" in out.stderr


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("LOG_LEVEL: info}", "LOG_LEVEL: info, " + ", ".join(f"V{i}: x" for i in range(47)) + "}"),
         "has 49 variables; a tuning job's trials take at most 48"),
        (lambda t: t.replace("values: [adam, sgd", "values: [" + ", ".join(f"v{i}" for i in range(28)) + ", sgd"),
         "(each categorical value counts as one)"),
        (lambda t: t.replace("values: [adam, sgd", "values: [" + "a" * 255 + ", sgd"),
         "longer than the 256 characters"),
        (lambda t: t.replace("solver: \"lbfgs\"}", "solver: \"lbfgs\", epochs: 50000}").replace(
            "strategy: Random", "strategy: Hyperband"), "from 1 to 20,000"),
    ],
)  # fmt: skip
def test_more_of_what_a_tuning_job_refuses_fails_at_config_check(repo: Repo, edit: Any, message: str):
    text = edit(sm_config() + SEARCH % {"strategy": "Random"})
    (repo.path / "mlops-ci.yaml").write_text(text)
    proc = repo.run("config", "check")
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
