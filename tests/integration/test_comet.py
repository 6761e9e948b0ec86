"""Comet tracking: the logging side with comet_ml in offline mode (real archives), the query side
through comet_ml.API against the fake Comet REST API (tests/fakes/comet.py), pointed at with
Comet's own COMET_URL_OVERRIDE. Every verb is a fresh `mlops-ci` process."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import git, run_cli
from tests.fakes.comet import FakeComet, serve

KEY = "comet-test-key-0123456789"

TRAIN = textwrap.dedent(
    '''
    """Logs the same numbers to the log (for MetricDefinitions) and to Comet (the helper)."""
    import argparse
    import json
    import os

    from mlops_ci.tracking import experiment

    p = argparse.ArgumentParser()
    p.add_argument("--quality", type=float, default=0.9)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()

    exp = experiment(auto_output_logging=False, log_code=False, log_env_details=False, display_summary_level=0)
    for epoch in range(args.epochs):
        loss = 1.0 / (epoch + 1) / args.quality
        print(f"epoch={epoch} loss={loss:.6f}")
        exp.log_metric("loss", round(loss, 6), step=epoch)
    print(f"accuracy={args.quality}")
    exp.log_metric("accuracy", args.quality, step=args.epochs)
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as fh:
        json.dump({"quality": args.quality}, fh)
    exp.end()
    '''
)


def config(quality: float = 0.9, tracking: str = "comet", mode: str = "auto") -> str:
    track = f"tracking: {{backend: comet, workspace: acme, mode: {mode}}}" if tracking == "comet" else ""
    return textwrap.dedent(
        f"""\
        project: fast
        {track}
        training:
          entry_point: train.py
          hyperparameters: {{quality: {quality}, epochs: 3}}
          metric_definitions:
            - {{name: accuracy, regex: "accuracy=([0-9.]+)"}}
            - {{name: loss, regex: "loss=([0-9.]+)"}}
        metrics:
          accuracy: {{goal: maximize}}
          loss: {{goal: minimize}}
        gate:
          rules:
            - {{metric: accuracy, min: 0.8, max_regression: 5%}}
        """
    )


class Repo:
    def __init__(self, path: Path, comet_url: str):
        self.path, self.comet_url = path, comet_url

    def git(self, *args: str) -> str:
        return git(self.path, *args)

    def commit(self, message: str, **kw: Any) -> str:
        (self.path / "mlops-ci.yaml").write_text(config(**kw))
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")

    def run(self, *args: str, online: bool = False, key: str = KEY) -> Any:
        env = {
            "COMET_URL_OVERRIDE": f"{self.comet_url}/clientlib/",
            "COMET_API_KEY": key if online else "",
            "COMET_HTTP_SESSION_RETRY_TOTAL": "0",
        }  # a 5xx of the fake fails at once, not after ~12 s
        return run_cli(*args, cwd=self.path, env=env)

    def ok(self, *args: str, online: bool = False) -> str:
        proc = self.run(*args, online=online)
        assert proc.returncode == 0, f"{args}: {proc.stderr}"
        assert KEY not in proc.stdout + proc.stderr
        return str(proc.stdout)


@pytest.fixture
def comet() -> Iterator[FakeComet]:
    fake = FakeComet(api_key=KEY)
    with serve(fake):
        yield fake


@pytest.fixture
def repo(tmp_path: Path, comet: FakeComet) -> Repo:
    path = tmp_path / "repo"
    path.mkdir()
    (path / "train.py").write_text(TRAIN)
    (path / ".gitignore").write_text(".mlops-ci/\n")
    git(path, "init", "-q", "-b", "main")
    r = Repo(path, comet.url)
    r.commit("initial")
    return r


def _archive(run: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with zipfile.ZipFile(run["links"]["comet_archive"]) as z:
        meta = json.loads(z.read("experiment.json"))
        messages = [json.loads(line) for line in z.read("messages.json").decode().splitlines()]
    return meta, messages


def test_the_helper_logs_an_offline_experiment_tagged_with_the_commit(repo: Repo):
    sha = repo.git("rev-parse", "HEAD")
    proc = repo.run("train")
    assert proc.returncode == 0, proc.stderr
    assert "comet upload" in proc.stderr  # how to upload the offline experiment later
    run = json.loads(repo.ok("runs", "show", "--json"))
    key = run["links"]["comet_experiment_key"]
    assert len(key) == 32 and run["links"]["comet_archive"].endswith(f"{key}.zip")
    meta, messages = _archive(run)
    assert meta["workspace"] == "acme" and meta["project_name"] == "fast" and meta["offline_id"] == key
    assert sha in meta["tags"] and "branch:main" in meta["tags"]
    others = {m["payload"]["key"]: m["payload"]["value"] for m in messages if m["type"] == "log_other"}
    assert others["git_sha"] == sha and others["git_branch"] == "main" and others["mlops_ci_run"] == run["run_id"]
    params = {m["payload"]["param"]["paramName"]: m["payload"]["param"]["paramValue"]
              for m in messages if m["type"] == "parameter_msg"}  # fmt: skip
    assert params["quality"] == 0.9 and params["epochs"] == 3  # the job's hyperparameters (SM_HPS)
    text = repo.ok("runs", "show")
    assert key in text and "comet_archive" in text


def _deltas(report: dict[str, Any]) -> dict[str, tuple[float, float, float]]:
    return {m["name"]: (m["old"], m["new"], m["delta"]) for m in report["comparison"]["metrics"]}


def test_the_report_from_comet_shows_the_store_deltas_plus_comet_links(repo: Repo, comet: FakeComet):
    repo.ok("train")
    base = json.loads(repo.ok("runs", "show", "--json"))
    repo.git("checkout", "-q", "-b", "better")
    repo.commit("better features", quality=0.95)
    repo.ok("train")
    head = json.loads(repo.ok("runs", "show", "--json"))

    (repo.path / "mlops-ci.yaml").write_text(config(quality=0.95, tracking="local"))
    from_store = json.loads(repo.ok("report", "--base", "main", "--json"))
    (repo.path / "mlops-ci.yaml").write_text(config(quality=0.95))

    for run in (base, head):  # the offline experiments reach Comet as `comet upload` sends them
        comet.upload(Path(run["links"]["comet_archive"]))
    from_comet = json.loads(repo.ok("report", "--base", "main", "--json", online=True))
    assert _deltas(from_comet) == _deltas(from_store)
    assert _deltas(from_comet)["accuracy"][:2] == (0.9, 0.95)
    hk, bk = head["links"]["comet_experiment_key"], base["links"]["comet_experiment_key"]
    links = from_comet["comparison"]["head"]["links"]
    assert links["comet"] == f"{comet.url}/acme/fast/{hk}"
    assert from_comet["comparison"]["baseline"]["links"]["comet"] == f"{comet.url}/acme/fast/{bk}"
    assert links["comet_compare"] == f"{comet.url}/acme/fast/{bk}/{hk}/compare"
    assert links["comet_project"] == f"{comet.url}/acme/fast"
    assert ("GET", "/api/rest/v2/experiment/metrics/summary", KEY) in comet.requests
    md = repo.ok("report", "--base", "main", online=True)
    assert f"[comet](<{comet.url}/acme/fast/{hk}>)" in md and "[comet\\_compare](<" in md
    assert "| accuracy | 0.9 | 0.95 |" in md
    # offline, the same numbers come from the archives
    assert _deltas(json.loads(repo.ok("report", "--base", "main", "--json"))) == _deltas(from_store)


def test_an_experiment_under_another_key_is_named_not_linked_or_used(repo: Repo, comet: FakeComet):
    """`comet upload --force-upload` lands a run's archive under a new key; so can anyone log an
    experiment naming the run and its commit (both are public). Neither is linked or used."""
    repo.ok("train")
    run = json.loads(repo.ok("runs", "show", "--json"))
    exp = comet.upload(Path(run["links"]["comet_archive"]))
    comet.rekey(exp, "0" * 32)
    exp.metrics["accuracy"] = [(3, 0.99, 0)]
    proc = repo.run("report", "--json", online=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert "comet" not in report["comparison"]["head"]["links"]
    assert _deltas(report)["accuracy"][1] == 0.9  # the numbers sealed at training
    assert f"experiment(s) {'0' * 32} claim commit" in proc.stderr and "--force-upload" in proc.stderr


def test_numbers_logged_to_the_runs_own_experiment_later_never_reach_the_gate(repo: Repo, comet: FakeComet):
    """The experiment key is public (it is in every comment's link) and anyone with the project's
    API key can log to it: the gate decides on the numbers sealed at training and says Comet
    differs."""
    repo.commit("weak model", quality=0.5)
    repo.ok("train")
    run = json.loads(repo.ok("runs", "show", "--json"))
    exp = comet.upload(Path(run["links"]["comet_archive"]))
    assert repo.run("gate", online=True).returncode == 1
    exp.metrics["accuracy"].append((999, 0.99, 0))  # ExistingExperiment(key).log_metric(..., step=999)
    exp.params["epochs"] = "300"  # and log_parameter: the comment shows what the run trained with
    proc = repo.run("gate", "--json", online=True)
    assert proc.returncode == 1, proc.stderr
    assert "now says accuracy=0.99, but 0.5 was recorded when it trained" in proc.stderr
    assert "now says epochs='300', but the run trained with 3" in proc.stderr
    assert repo.run("promote", online=True).returncode == 5
    report = json.loads(repo.ok("report", "--json", online=True))
    assert not any(p["name"] == "epochs" for p in report["comparison"].get("params", []))  # no baseline: no diff
    assert json.loads(repo.ok("runs", "show", "--json"))["params"]["epochs"] == 3


def test_the_log_wins_over_comet_for_a_metric_both_have(repo: Repo, comet: FakeComet):
    """Anyone with the project's key can log to a job's experiment while the job runs; only the
    job writes its log. A metric both have is recorded as the log has it, with a warning; one only
    Comet has is recorded from Comet."""
    (repo.path / "train.py").write_text(
        TRAIN.replace(
            'exp.log_metric("accuracy", args.quality, step=args.epochs)',
            'exp.log_metric("accuracy", 0.99, step=args.epochs)\nexp.log_metric("f1", 0.7, step=args.epochs)',
        )
    )
    repo.commit("comet says otherwise", quality=0.5)
    proc = repo.run("train")
    assert proc.returncode == 0, proc.stderr
    assert "says accuracy=0.99, the job's log 0.5: the log's value is recorded" in proc.stderr
    metrics = json.loads(repo.ok("runs", "show", "--json"))["metrics"]
    assert metrics["accuracy"] == 0.5 and metrics["f1"] == 0.7


def test_an_experiment_under_the_jobs_key_in_another_project_is_not_the_jobs(repo: Repo, comet: FakeComet):
    """A key is derived from a job's name (predictable for SageMaker jobs): an experiment under it
    in another workspace or project the API key can read is never sealed into the run."""
    comet.seed("evil", "elsewhere", "e" * 32, metrics={"accuracy": 0.99})
    comet.project("acme", "fast")
    code = (
        "import os; from pathlib import Path; from mlops_ci.config import load; from mlops_ci.backends.comet "
        "import Comet; c = Comet(load(Path('.'), os.environ), os.environ); print(c.at_training('e' * 32, {}, {}, {}))"
    )
    env = {**os.environ, "COMET_URL_OVERRIDE": f"{comet.url}/clientlib/", "COMET_API_KEY": KEY}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=repo.path, env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"


def test_a_foreign_experiment_claiming_the_commit_never_feeds_the_gate(repo: Repo, comet: FakeComet):
    """Someone's experiment logs our commit's SHA with better numbers: the gate judges the run's
    own numbers (sealed at training) and names the impostor."""
    sha = repo.commit("weak model", quality=0.5)
    repo.ok("train")
    comet.seed("acme", "fast", "f" * 32, others={"git_sha": sha}, metrics={"accuracy": 0.99, "loss": 0.01})
    proc = repo.run("gate", "--json", online=True)
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["passed"] is False
    assert f"experiment(s) {'f' * 32} claim commit {sha[:8]}" in proc.stderr and "ignored" in proc.stderr
    # Without the archive the sealed numbers decide all the same, still not the impostor's.
    run = json.loads(repo.ok("runs", "show", "--json"))
    Path(run["links"]["comet_archive"]).unlink()
    proc = repo.run("gate", "--json", online=True)
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["value"] == 0.5
    # The promote of a run whose gate failed is refused whatever Comet says.
    assert repo.run("promote", online=True).returncode == 5


def test_comet_tells_a_wrong_key_and_a_wrong_workspace_apart(repo: Repo, comet: FakeComet):
    repo.ok("train")
    proc = repo.run("report", online=True, key="not-the-key")
    assert proc.returncode == 13
    assert "Comet rejected the API key in $COMET_API_KEY" in proc.stderr and "not-the-key" not in proc.stderr
    (repo.path / "mlops-ci.yaml").write_text(config().replace("workspace: acme", "workspace: acmee"))
    proc = repo.run("report", online=True)  # no such project (yet): the numbers come from the archives
    assert proc.returncode == 0, proc.stderr
    assert "Comet has no project 'fast' in workspace 'acmee'" in proc.stderr and "a typo" in proc.stderr


def test_the_api_key_never_reaches_records_reports_or_the_job_arguments(repo: Repo, comet: FakeComet):
    proc = repo.run("config", "show", "--json", online=True)
    assert proc.returncode == 0 and KEY not in proc.stdout and "COMET_API_KEY" in proc.stdout  # the name only
    repo.ok("train", "--dry-run", "--json", online=True)
    proc = repo.run("train", online=True, key="")  # offline: the key never reaches the job
    assert proc.returncode == 0, proc.stderr
    run = json.loads(repo.ok("runs", "show", "--json"))
    repo.ok("report", "--json")
    db = sqlite3.connect(repo.path / ".mlops-ci" / "store.db")
    dump = "\n".join(db.iterdump())
    assert KEY not in dump
    hps = json.loads((Path(run["log_path"]).parent / "opt_ml" / "input" / "config" / "hyperparameters.json")
                     .read_text())  # fmt: skip
    assert not any("COMET" in k or KEY in v for k, v in hps.items())


INFERENCE = textwrap.dedent(
    """
    import json
    import os


    def model_fn(model_dir):
        with open(os.path.join(model_dir, "model.json")) as fh:
            return json.load(fh)


    def predict_fn(data, model):
        return [model["quality"] for _ in data.tolist()]
    """
)

REGISTRY = """\
serving:
  entry_point: inference.py
endpoints:
  - name: production
    tags: ["v*"]
    ready_timeout: 30
    smoke:
      - body: [[1, 2]]
"""


def _served(repo: Repo, registry: str) -> str:
    """Commit a config with a Comet registry (`registry`: extra tracking keys) and an endpoint."""
    (repo.path / "inference.py").write_text(INFERENCE)
    text = config().replace("mode: auto}", f"mode: auto, {registry}}}") + REGISTRY
    (repo.path / "mlops-ci.yaml").write_text(text)
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "serve it")
    return repo.git("rev-parse", "HEAD")


def test_promote_registers_in_comet_and_deploy_marks_the_version(repo: Repo, comet: FakeComet):
    sha = _served(repo, "model_name: fast-model")
    repo.ok("train")
    run = json.loads(repo.ok("runs", "show", "--json"))
    repo.ok("gate")
    comet.project("acme", "fast")
    proc = repo.run("promote", online=True)  # the experiment is not in Comet yet: nothing to register
    assert proc.returncode == 4 and "comet upload" in proc.stderr
    assert "fast v1 is recorded, but Comet's registry does not have it yet" in proc.stderr
    comet.upload(Path(run["links"]["comet_archive"]))  # the helper logged the job's model with it
    assert comet.experiments[run["links"]["comet_experiment_key"]].models == {"fast-model"}
    dry = json.loads(repo.ok("promote", "--dry-run", "--json", online=True))
    assert {"target": "comet", "action": "register model version", "model": "fast-model", "version": "1.0.0",
            "experiment_key": run["links"]["comet_experiment_key"]} in dry["plan"]  # fmt: skip
    assert ("acme", "fast-model") not in comet.registry
    repo.ok("promote", online=True)  # the store's v1 exists: this finishes the Comet part
    # The registry model did not exist: Comet says so with a 400 and sdk_error_code 42008, not a 404
    assert ("/api/rest/v2/registry-model/compact-details", 400, 42008) in comet.answers
    item = comet.registry[("acme", "fast-model")]["versions"]["1.0.0"]
    assert item["experimentKey"] == run["links"]["comet_experiment_key"]
    assert sha in item["tags"] and f"sha256:{run['artifact_sha256'][:16]}" in item["tags"]
    assert run["artifact_sha256"] in item["comment"] and sha in item["comment"]
    creates = [r for r in comet.requests if r[1].endswith("/write/registry-model/item/create")]
    assert "already registered" in repo.run("promote", online=True).stderr  # a second promote: a no-op
    assert len([r for r in comet.requests if r[1].endswith("/write/registry-model/item/create")]) == len(creates)


def test_a_registry_version_from_another_experiment_is_a_conflict_not_ours(repo: Repo, comet: FakeComet):
    _served(repo, "model_name: fast-model")
    repo.ok("train")
    run = json.loads(repo.ok("runs", "show", "--json"))
    comet.upload(Path(run["links"]["comet_archive"]))
    other = comet.seed("acme", "fast", "e" * 32)
    other.models.add("fast-model")
    comet.registry[("acme", "fast-model")] = {
        "id": "m1",
        "versions": {
            "1.0.0": {
                "registryModelItemId": "i1",
                "version": "1.0.0",
                "experimentKey": other.key,
                "experimentModelName": "fast-model",
                "comment": "",
                "tags": [],
                "status": "None",
                "createdAt": 0,
            }
        },
    }
    repo.ok("gate")
    proc = repo.run("promote", online=True)
    assert proc.returncode == 5, proc.stderr
    assert f"registered from experiment {other.key}, not from run {run['run_id']}'s experiment" in proc.stderr


def test_deploying_v2_moves_production_and_the_tag_off_v1(repo: Repo, comet: FakeComet):
    def release(tag: str) -> dict[str, Any]:
        repo.ok("train")
        run = json.loads(repo.ok("runs", "show", "--json"))
        comet.upload(Path(run["links"]["comet_archive"]))
        repo.ok("gate", "--base", "main")
        repo.ok("promote", online=True)
        repo.git("tag", tag)
        proc = repo.run("deploy", tag, online=True)
        assert proc.returncode == 0, proc.stderr
        return run

    _served(repo, "model_name: fast-model")
    try:
        release("v1.0.0")
        versions = comet.registry[("acme", "fast-model")]["versions"]
        assert versions["1.0.0"]["status"] == "Production" and "deployed:production" in versions["1.0.0"]["tags"]
        (repo.path / "mlops-ci.yaml").write_text(
            repo.path.joinpath("mlops-ci.yaml").read_text().replace("quality: 0.9", "quality: 0.95")
        )
        repo.git("commit", "-qam", "better")
        release("v2.0.0")
        assert versions["2.0.0"]["status"] == "Production" and "deployed:production" in versions["2.0.0"]["tags"]
        assert versions["1.0.0"]["status"] == "None" and "deployed:production" not in versions["1.0.0"]["tags"]
        proc = repo.run("rollback", "production", online=True)  # a rollback moves them back
        assert proc.returncode == 0, proc.stderr
        assert versions["1.0.0"]["status"] == "Production" and "deployed:production" in versions["1.0.0"]["tags"]
        assert versions["2.0.0"]["status"] == "None" and versions["2.0.0"]["tags"] == [
            t for t in versions["2.0.0"]["tags"] if not t.startswith("deployed:")
        ]
        comet.statuses = ("Staging", "Production")  # the organisation drops "None": retired_status is invalid
        proc = repo.run("deploy", "v2.0.0", online=True)
        assert proc.returncode == 2 and "tracking.retired_status 'None' is not a registry status" in proc.stderr
        proc = repo.run("rollback", "production", online=True)  # an emergency: never blocked by Comet
        assert proc.returncode == 0 and "the rollback goes on" in proc.stderr, proc.stderr
    finally:
        repo.run("endpoint", "stop", "production")


def _released(repo: Repo, comet: FakeComet, registry: str) -> None:
    """Served with a Comet registry (`registry`), trained, uploaded, gated, promoted, tagged v1.0.0."""
    _served(repo, registry)
    repo.ok("train")
    comet.upload(Path(json.loads(repo.ok("runs", "show", "--json"))["links"]["comet_archive"]))
    repo.ok("gate")
    repo.ok("promote", online=True)
    repo.git("tag", "v1.0.0")


def test_a_status_comet_does_not_allow_is_refused_before_the_deploy(repo: Repo, comet: FakeComet):
    _released(repo, comet, "model_name: fast-model, deployed_status: Live")
    try:
        proc = repo.run("deploy", "v1.0.0", online=True)
        assert proc.returncode == 2, proc.stderr
        assert "tracking.deployed_status 'Live' is not a registry status of Comet workspace acme" in proc.stderr
        assert "Production" in proc.stderr  # the allowed ones, as Comet lists them
        assert not repo.run("status", "--json").stdout.count('"InService"')  # nothing was deployed
    finally:
        repo.run("endpoint", "stop", "production")


def test_a_deploy_that_comet_cannot_record_still_succeeds_with_a_warning(repo: Repo, comet: FakeComet):
    _released(repo, comet, "model_name: fast-model")
    comet.broken.add("/api/rest/v2/registry-model/allowed_status_values")  # Comet is down before
    comet.broken.add("/api/rest/v2/write/registry-model/item/status")  # and after the rollout
    try:
        proc = repo.run("deploy", "v1.0.0", online=True)
        assert proc.returncode == 0, proc.stderr
        assert "Comet's registry statuses were not checked" in proc.stderr
        assert "Comet's registry was not updated" in proc.stderr
    finally:
        repo.run("endpoint", "stop", "production")


def test_a_script_that_makes_its_own_experiment_is_linked_without_code_changes(repo: Repo):
    (repo.path / "train.py").write_text(textwrap.dedent(
        """
        import os
        import comet_ml

        exp = comet_ml.start(experiment_config=comet_ml.ExperimentConfig(
            auto_output_logging=False, log_code=False, log_env_details=False, display_summary_level=0))
        print("accuracy=0.9")
        exp.log_metric("accuracy", 0.9)
        open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w").write("{}")
        exp.end()
        """
    ))  # fmt: skip
    repo.git("commit", "-qam", "plain comet_ml")
    repo.ok("train")
    run = json.loads(repo.ok("runs", "show", "--json"))
    meta, messages = _archive(run)  # found under the key mlops-ci gave the job
    assert meta["offline_id"] == run["links"]["comet_experiment_key"]
    assert meta["workspace"] == "acme" and meta["project_name"] == "fast"
    assert any(m["type"] == "metric_msg" and m["payload"]["metric"]["metricName"] == "accuracy" for m in messages)


def test_a_plain_comet_ml_experiment_trains_offline_as_the_trained_commit(repo: Repo):
    """A script that makes its own `comet_ml.Experiment()` (which needs a key and has no offline
    setting in comet_ml) trains with no key: in the job it is an OfflineExperiment under the key
    mlops-ci gave it, named and tagged with the trained commit by comet_ml itself, and never
    records the work tree's HEAD or a patch of its uncommitted edits."""
    (repo.path / "train.py").write_text(
        textwrap.dedent(
            """
            import os
            import pickle
            import comet_ml
            from comet_ml import Experiment

            import sitecustomize_of_the_repo  # noqa: F401 - the repo's own sitecustomize ran too

            assert pickle.loads(pickle.dumps(Experiment)) is comet_ml.Experiment
            exp = Experiment(auto_output_logging=False, log_code=False, display_summary_level=0)
            print("accuracy=0.9")
            exp.log_metric("accuracy", 0.9)
            open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w").write("{}")
            exp.end()
            """
        )
    )
    # a repository with a sitecustomize of its own: the offline one still runs first, then it
    (repo.path / "sitecustomize.py").write_text(
        "import sys, types\nsys.modules['sitecustomize_of_the_repo'] = types.ModuleType('x')\n"
    )
    (repo.path / "data").mkdir()
    (repo.path / "data" / "rows.csv").write_text("1,2\n")
    repo.git("add", "data")
    sha = repo.commit("plain comet_ml.Experiment")
    text = (repo.path / "mlops-ci.yaml").read_text().replace("training:\n", "training:\n  channels: {train: data}\n")
    (repo.path / "mlops-ci.yaml").write_text(text)
    repo.git("commit", "-qam", "a data channel")
    sha = repo.git("rev-parse", "HEAD")
    (repo.path / "README.md").write_text("later\n")
    repo.git("add", "README.md")
    repo.git("commit", "-qm", "a later commit")  # the work tree's HEAD is not the commit trained
    (repo.path / "scratch.py").write_text("print('never trained')\n")  # nor is an untracked file
    proc = repo.run("train", sha)
    assert proc.returncode == 0, proc.stderr
    run = json.loads(repo.ok("runs", "show", sha, "--json"))
    assert run["sha"] == sha
    meta, messages = _archive(run)
    assert meta["offline_id"] == run["links"]["comet_experiment_key"]
    others = {m["payload"]["key"]: m["payload"]["value"] for m in messages if m["type"] == "log_other"}
    assert others["git_sha"] == sha and others["mlops_ci_run"] == run["run_id"]
    assert others["data_train"] == f"data sha256:{run['data']['train']['sha256']}"
    assert others["Name"] == f"{sha[:8]} · main"
    kinds = {m["type"] for m in messages}
    assert "git_metadata_msg" not in kinds and "git_metadata" not in kinds
    assert not any(m["type"] == "file_upload" and m["payload"].get("upload_type") == "git-patch" for m in messages)


@pytest.mark.parametrize("how", ["key", "config file"])
def test_a_self_hosted_server_is_found_as_comet_ml_finds_it(repo: Repo, comet: FakeComet, tmp_path: Path, how: str):
    """No COMET_URL_OVERRIDE: the server comes from the API key (comet_ml's `<key>*<base64 JSON
    with baseUrl>` form) or from the file COMET_CONFIG names, and every link points at it."""
    import base64

    fake, path, r = comet, repo.path, repo
    if how == "key":
        embedded = base64.b64encode(json.dumps({"baseUrl": fake.url}).encode()).decode().rstrip("=")
        fake.api_key = key = f"abcdefghijklmnopqrstuvwxy*{embedded}"
        env = {"COMET_API_KEY": key}
    else:
        (tmp_path / "comet.config").write_text(f"[comet]\nurl_override = {fake.url}/clientlib/\n")
        env = {"COMET_API_KEY": KEY, "COMET_CONFIG": str(tmp_path / "comet.config")}
    env = {**env, "COMET_HTTP_SESSION_RETRY_TOTAL": "0"}
    assert run_cli("train", cwd=path, env={**env, "COMET_API_KEY": ""}).returncode == 0
    run = json.loads(r.ok("runs", "show", "--json"))
    fake.upload(Path(run["links"]["comet_archive"]))
    proc = run_cli("report", "--json", cwd=path, env=env)
    assert proc.returncode == 0, proc.stderr
    key_ = run["links"]["comet_experiment_key"]
    assert json.loads(proc.stdout)["comparison"]["head"]["links"]["comet"] == f"{fake.url}/acme/fast/{key_}"
    assert any(p == "/api/rest/v2/experiment/metrics/summary" for _, p, _ in fake.requests)
    # what a job and the compare link get: the same server (a SageMaker job has no config file)
    code = (
        "import os; from pathlib import Path; from mlops_ci.config import load; from mlops_ci.backends.comet "
        "import Comet; c = Comet(load(Path('.'), os.environ), os.environ); "
        "print(c.server, c.clientlib_url(), c.compare_url('a', 'b'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [fake.url, f"{fake.url}/clientlib/", f"{fake.url}/acme/fast/a/b/compare"]


def test_an_online_run_logs_to_comet_and_is_tagged_after_the_run(repo: Repo, comet: FakeComet):
    """Online end to end: the helper's experiment and a script's own `comet_ml.start()` land in
    Comet (the fake, over the wire comet_ml speaks) under the keys mlops-ci gave them; the script's
    own experiment gets the commit's tags after the run; a forced retrain is a new run with a new
    experiment (a restarted job resuming its own: tests/integration/test_comet_wire.py)."""
    comet.project("acme", "fast")
    sha = repo.git("rev-parse", "HEAD")
    proc = repo.run("train", online=True)
    assert proc.returncode == 0, proc.stderr
    run = json.loads(repo.ok("runs", "show", "--json"))
    key = run["links"]["comet_experiment_key"]
    exp = comet.experiments[key]
    assert (exp.workspace, exp.project) == ("acme", "fast") and "comet_archive" not in run["links"]
    assert [v for _, v, _ in exp.metrics["accuracy"]] == [0.9] and exp.others["git_sha"] == sha
    assert sha in exp.tags and "branch:main" in exp.tags
    assert run["links"]["comet"] == f"{comet.url}/acme/fast/{key}"
    assert not comet.unhandled
    assert "0.9" in repo.ok("report", online=True)  # the numbers read back from Comet

    (repo.path / "train.py").write_text(
        textwrap.dedent(
            """
            import os
            import comet_ml

            exp = comet_ml.start(experiment_config=comet_ml.ExperimentConfig(
                auto_output_logging=False, log_code=False, display_summary_level=0))
            print("accuracy=0.91")
            exp.log_metric("accuracy", 0.91)
            open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w").write("{}")
            exp.end()
            """
        )
    )
    sha = repo.commit("plain comet_ml.start")
    assert repo.run("train", online=True).returncode == 0
    run = json.loads(repo.ok("runs", "show", "--json"))
    exp = comet.experiments[run["links"]["comet_experiment_key"]]
    assert exp.others["git_sha"] == sha  # logged by comet_ml itself from COMET_LOG_OTHER_GIT_SHA
    assert sha in exp.tags and "branch:main" in exp.tags  # added by mlops-ci after the run
    assert repo.run("train", "--force", online=True).returncode == 0  # a new run: a new experiment
    assert json.loads(repo.ok("runs", "show", "--json"))["links"]["comet_experiment_key"] != exp.key
    assert not comet.unhandled and not comet.errors, (comet.unhandled, comet.errors)


def test_a_damaged_archive_and_an_old_comet_server_are_said_plainly(repo: Repo, comet: FakeComet):
    _served(repo, "model_name: fast-model")
    repo.ok("train")
    run = json.loads(repo.ok("runs", "show", "--json"))
    comet.upload(Path(run["links"]["comet_archive"]))
    repo.ok("gate")
    comet.version = "3.5.0"  # a self-hosted Comet older than comet_ml's model registry API
    proc = repo.run("promote", online=True)
    assert proc.returncode == 5, proc.stderr
    assert "needs a newer Comet server" in proc.stderr and "fast v1 is recorded" in proc.stderr
    Path(run["links"]["comet_archive"]).write_bytes(b"PK\x03\x04 cut short")
    proc = repo.run("report", "--json")  # offline: the archive is all there is
    assert proc.returncode == 0, proc.stderr
    assert "cannot read the Comet offline archive" in proc.stderr and "damaged" in proc.stderr


def test_the_model_diff_works_the_same_under_comet(repo: Repo, comet: FakeComet):
    (repo.path / "inference.py").write_text(
        "import json, os\n\n"
        "def model_fn(model_dir):\n"
        "    with open(os.path.join(model_dir, 'model.json')) as fh:\n"
        "        return json.load(fh)\n\n"
        "def predict_fn(data, model):\n"
        "    return [model['quality'] * row[0] for row in data.tolist()]\n"
    )
    (repo.path / "data").mkdir()
    (repo.path / "data" / "test.csv").write_text("x,label\n1.5,1\n2.5,2\n")

    def with_diff(quality: float) -> str:
        extra = "review: {latency_requests: 10}\nserving: {entry_point: inference.py}\n"
        return (
            config(quality=quality).replace("  hyperparameters:", "  channels: {test: data}\n  hyperparameters:")
            + extra
        )

    (repo.path / "mlops-ci.yaml").write_text(with_diff(0.9))
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "served")
    repo.ok("train")
    repo.git("checkout", "-q", "-b", "better")
    (repo.path / "mlops-ci.yaml").write_text(with_diff(0.95))
    repo.git("commit", "-q", "-am", "better")
    repo.ok("train")
    for ref in ("main", "better"):
        comet.upload(Path(json.loads(repo.ok("runs", "show", ref, "--json"))["links"]["comet_archive"]))
    report = json.loads(repo.ok("report", "--base", "main", "--json", online=True))
    d = report["comparison"]["model_diff"]
    assert report["comparison"]["head"]["links"]["comet"].startswith(comet.url)  # Comet's view of the runs
    assert d["status"] == "ok", d["reason"]
    assert d["task"] == "regression" and d["flip_rate"] == 1.0
    assert d["regression"]["mae"] == pytest.approx(
        [abs(0.9 * 1.5 - 1) / 2 + abs(0.9 * 2.5 - 2) / 2, abs(0.95 * 1.5 - 1) / 2 + abs(0.95 * 2.5 - 2) / 2]
    )
