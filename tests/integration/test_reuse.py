"""Models identified by their training inputs: reuse across commits (merge, squash, docs-only),
single-flight training, and the guards of CI jobs (runner-local state, fork code, checkout)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Project, fast_config


def runs(p: Project) -> list[dict[str, object]]:
    return json.loads(p.ok("runs", "--json"))


def test_a_docs_only_commit_reuses_the_run_and_points_at_the_original(project: Project):
    first = project.ok("train", "--json")
    (project.path / "README.md").write_text("# How to use the model\n")
    (project.path / "docs").mkdir()
    (project.path / "docs" / "guide.txt").write_text("more prose\n")
    docs = project.commit("docs only")
    code, out, err = project.cli("train", "--json")
    assert code == 0 and "same training inputs as" in err and "training fast at" not in err
    run = json.loads(out)["run"] if "run" in json.loads(out) else json.loads(out)
    original = json.loads(first)["run"] if "run" in json.loads(first) else json.loads(first)
    assert run["sha"] == docs and run["reused_from"] == original["run_id"]
    assert run["artifact_sha256"] == original["artifact_sha256"] and run["inputs_digest"] == original["inputs_digest"]
    lineage = json.loads(project.ok("lineage", docs, "--json"))
    assert lineage["run"]["reused_from"]["run_id"] == original["run_id"]
    assert "reused     the model of run" in project.ok("lineage", docs)


def test_a_code_change_or_a_changed_exclude_list_trains_again(project: Project):
    project.ok("train")
    (project.path / "train.py").write_text((project.path / "train.py").read_text() + "\n# a comment is code\n")
    project.commit("touch the script")
    _, _, err = project.cli("train")
    assert "training fast at" in err
    cfg = project.path / "mlops-ci.yaml"
    cfg.write_text(cfg.read_text().replace("  entry_point: train.py\n", "  entry_point: train.py\n  exclude: []\n", 1))
    project.commit("nothing excluded")
    _, _, err = project.cli("train")
    assert "training fast at" in err  # a different config digest: different inputs
    assert len(runs(project)) == 3


def test_a_merge_commit_can_be_released_without_its_own_gate(project: Project):
    project.ok("train")
    project.ok("gate")
    project.git("checkout", "-q", "-b", "tune")
    head = project.commit("better", quality=0.95)
    project.ok("train")
    project.ok("gate", "--base", "main")
    project.git("checkout", "-q", "main")
    project.git("merge", "-q", "--no-ff", "-m", "Merge tune", "tune")
    merged = project.git("rev-parse", "HEAD")
    project.git("tag", "v1.0.0")
    code, out, err = project.cli("promote", "v1.0.0", "--json")
    assert code == 0, err
    version = json.loads(out)["version"]
    assert version["sha"] == merged and "same training inputs as" in err
    verdicts = json.loads(project.ok("lineage", "v1.0.0", "--json"))["verdict"]
    assert verdicts["passed"] is True
    assert head != merged


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


@pytest.mark.parametrize("bad", ["/etc", "../up", "a\nb"])
def test_exclude_patterns_are_relative(project: Project, bad: str):
    (project.path / "mlops-ci.yaml").write_text(fast_config().replace(
        "  entry_point: train.py\n", f"  entry_point: train.py\n  exclude: [{json.dumps(bad)}]\n", 1))  # fmt: skip
    code, _, err = project.cli("config", "check")
    assert code == 2 and "training.exclude" in err


def test_config_extras_names_what_the_action_installs(project: Project, monkeypatch: pytest.MonkeyPatch):
    assert project.ok("config", "extras").strip() == ""
    monkeypatch.setenv("MLOPS_CI_STORE", "s3://bucket/prefix")
    assert project.ok("config", "extras").strip() == "s3"
