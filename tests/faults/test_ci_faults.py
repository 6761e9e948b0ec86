"""CI faults: state that would die with the runner, fork code on a runner with credentials, a
checkout of another commit, two jobs training one commit, a reused failing verdict."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Project


def runs(p: Project) -> list[dict[str, object]]:
    return json.loads(p.ok("runs", "--json"))


def test_a_failed_gate_is_reused_too(project: Project):
    project.ok("train")
    project.ok("gate")
    project.git("checkout", "-q", "-b", "worse")
    project.commit("worse", quality=0.5)
    project.ok("train")
    assert project.cli("gate", "--base", "main")[0] == 1
    project.git("checkout", "-q", "main")
    project.git("merge", "-q", "--squash", "worse")
    project.git("commit", "-q", "-m", "squashed")
    code, _, err = project.cli("promote")
    assert code == 5 and "failed the gate" in err


SLOW_TRAIN = """
import os, time
time.sleep(float(os.environ.get("SLOW", "0")))
print("accuracy=0.9")
open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w").write("{}")
"""


def test_two_concurrent_trainings_of_one_commit_make_one_run(project: Project):
    (project.path / "train.py").write_text(SLOW_TRAIN)
    cfg = project.path / "mlops-ci.yaml"
    cfg.write_text(cfg.read_text().replace("  channels:", "  environment: {SLOW: '2'}\n  channels:", 1))
    project.commit("slow")
    cmd = [sys.executable, "-m", "mlops_ci", "-C", str(project.path), "train"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    time.sleep(0.5)
    procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    errs = [e for _, e in results]
    assert sum("training fast at" in e for e in errs) == 1, errs
    assert any("waiting:" in e and "same training inputs" in e for e in errs), errs
    assert len(runs(project)) == 1


def test_remote_only_jobs_refuse_local_training(project: Project, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLOPS_CI_REMOTE_ONLY", "true")
    code, _, err = project.cli("train")
    assert code == 5 and "run the commit's code on this runner" in err
    assert runs(project) == []
    assert not (project.path / ".mlops-ci" / "runs").exists() or not any(
        (project.path / ".mlops-ci" / "runs").iterdir()
    )


def test_under_actions_a_store_on_the_runner_is_an_error_unless_allowed(project: Project, monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    code, _, err = project.cli("train")
    assert code == 2 and "MLOPS_CI_STORE" in err and "MLOPS_CI_ALLOW_RUNNER_STORE=true" in err
    monkeypatch.setenv("MLOPS_CI_ALLOW_RUNNER_STORE", "true")
    project.ok("train")
    project.ok("gate")
    project.ok("promote")
    code, _, err = project.cli("deploy", "HEAD", "--endpoint", "staging")
    assert code == 2 and "die with the job" in err and "MLOPS_CI_ALLOW_RUNNER_ENDPOINTS" in err


def test_a_checkout_of_another_commit_with_another_config_is_refused(project: Project, monkeypatch, tmp_path: Path):
    project.git("checkout", "-q", "-b", "feature")
    head = project.commit("feature", quality=0.95)
    project.git("checkout", "-q", "main")
    project.commit("main moved", quality=0.91)  # the checkout (like a merge ref) has another config
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"number": 3, "pull_request": {"number": 3, "head": {"sha": head, "ref": "feature"},
                                                               "base": {"ref": "main"}}}))  # fmt: skip
    for k, v in {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_PATH": str(event), "GITHUB_EVENT_NAME": "pull_request",
                 "MLOPS_CI_ALLOW_RUNNER_STORE": "true"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    for verb in ("train", "report", "gate"):
        code, _, err = project.cli(verb)
        assert code == 5 and f"the commit to work on is {head[:8]}" in err and "head.sha" in err, (verb, err)
