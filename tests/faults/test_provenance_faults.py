"""Fault matrix, gate and provenance: nothing without a passed gate, a matching digest and a provenance record."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Project, fast_config
from tests.integration.test_deploy import endpoint_state, invoke, release


def test_tag_on_a_commit_that_never_passed_the_gate_is_refused(project: Project):
    project.ok("train")
    project.git("tag", "v0.1.0")
    code, _, err = project.cli("deploy", "v0.1.0")
    assert code == 5 and "never went through the gate" in err
    assert endpoint_state(project, "production")["status"] == "NotDeployed"
    project.ok("gate")
    code, _, err = project.cli("deploy", "v0.1.0")
    assert code == 5 and "passed the gate but was never promoted" in err

    project.commit("bad", quality=0.5)
    project.ok("train")
    assert project.cli("gate")[0] == 1
    project.git("tag", "v0.2.0")
    code, _, err = project.cli("deploy", "v0.2.0")
    assert code == 5 and "failed the gate" in err


def test_tampered_artifact_is_refused_before_touching_the_endpoint(project: Project):
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    project.commit("v2", scale=2.0)
    release(project, "v2.0.0")
    mv = json.loads(project.ok("models", "--json"))[-1]
    Path(mv["artifact_uri"].removeprefix("file://")).write_bytes(b"evil model")
    code, _, err = project.cli("deploy", "v2.0.0")
    assert code == 5 and "artifact digest mismatch" in err
    assert endpoint_state(project, "production")["version"] == 1
    assert invoke(project, "production") == [3.0, 7.0]


def test_missing_required_metric_fails_the_gate(reviewed):
    """A metric the run lacks fails the gate (fail closed); training already warned of it."""
    project, _, _ = reviewed
    project.commit("no accuracy", drop="accuracy")
    code, _, err = project.cli("train")
    assert code == 0  # said at once, so the gate's failure below is no surprise
    assert "training.metric_definitions 'accuracy' matched no line of the log" in err and "has: " in err
    code, out, _ = project.cli("gate", "--json")
    assert code == 1
    verdict = json.loads(out)
    assert not verdict["passed"]
    assert {r["reason"] for r in verdict["results"]} == {"metric 'accuracy' is missing from the run"}


def test_unknown_base_branch_fails_closed(project: Project):
    project.ok("train")
    code, out, _ = project.cli("gate", "--base", "develop")
    assert code == 1
    assert "base branch 'develop' not found" in out


def test_missing_provenance_record_refuses_the_deploy(project: Project):
    import sqlite3

    release(project, "v1.0.0")
    db = sqlite3.connect(project.path / ".mlops-ci" / "store.db")
    db.execute("DELETE FROM verdicts")  # the verdict record is lost
    db.commit()
    db.close()
    code, _, err = project.cli("deploy", "v1.0.0")
    assert code == 5 and "no passing gate verdict on record (provenance missing)" in err
    assert endpoint_state(project, "production")["status"] == "NotDeployed"


def test_unreachable_store_fails_closed_and_records_nothing(project: Project, tmp_path: Path):
    import socket

    from tests.conftest import run_module

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"MLOPS_CI_STORE": "s3://team-store/ml", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
           "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1",
           "AWS_MAX_ATTEMPTS": "1"}  # fmt: skip
    proc = run_module("gate", cwd=project.path, env=env)
    assert proc.returncode == 9
    assert "cannot reach S3" in proc.stderr and "retry later" in proc.stderr
    assert json.loads(project.ok("runs", "--json")) == []  # nothing recorded anywhere


def test_a_gate_rule_on_a_metric_no_run_has_is_said_at_training(project: Project):
    """A misspelled metric in a gate rule would later read as a failed gate, like a regression."""
    rules = "    - metric: accuracy\n      min: 0.8\n      max_regression: 5%\n"
    text = fast_config().replace(rules, rules + "    - metric: acuracy\n      min: 0.5\n")
    assert "acuracy" in text
    (project.path / "mlops-ci.yaml").write_text(text)
    project.commit("a typo in the gate")
    code, _, err = project.cli("train")
    assert code == 0
    assert "gate rule on 'acuracy': this run has no such metric (it has: accuracy, loss, rows)" in err
