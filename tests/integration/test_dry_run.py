"""--dry-run on every verb: resolves everything, makes no change and no mutating request, and
prints the plan the real run then follows (compared against the fake GitHub server's log)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import Project
from tests.fakes.github_api import FakeGitHub
from tests.integration.test_deploy import endpoint_state, invoke, release
from tests.integration.test_github import REPO, actions_env

MUTATING = ("POST", "PATCH", "PUT", "DELETE")


def state(project: Project) -> tuple[str, str]:
    """Everything a dry run must leave untouched: the store's records and the endpoints."""
    return project.ok("store", "export"), project.ok("endpoints", "--json")


def dry_run(project: Project, *args: str) -> dict:
    code, out, err = project.cli(*args, "--dry-run", "--json")
    assert code in (0, 1), err
    doc = json.loads(out)
    assert doc["dry_run"] is True
    return doc


def plan_of(project: Project, *args: str) -> list[dict]:
    return dry_run(project, *args)["plan"]


def github_calls(plan: list[dict]) -> list[tuple[str, str]]:
    return [(s["method"], s["path"]) for s in plan if s["target"] == "github"]


def real_calls(fake: FakeGitHub) -> list[tuple[str, str]]:
    return [(m, f"/repos/{REPO}{p.split(REPO, 1)[1]}") for m, p in fake.requests if m in MUTATING]


def same(planned: list[tuple[str, str]], real: list[tuple[str, str]]) -> bool:
    """Plans name objects that do not exist yet as {id}."""
    if len(planned) != len(real):
        return False
    return all(pm == rm and re.fullmatch(re.escape(pp).replace(r"\{id\}", r"\d+"), rp)
               for (pm, pp), (rm, rp) in zip(planned, real, strict=True))  # fmt: skip


def test_dry_run_deploy_changes_nothing_and_plans_what_the_real_deploy_does(
    project: Project, fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    release(project, "v1.0.0")
    release(project, "v2.0.0", scale=2.0)
    actions_env(monkeypatch, fake, tmp_path, project)
    monkeypatch.delenv("GITHUB_EVENT_PATH")
    project.ok("deploy", "v1.0.0")
    before = state(project)
    fake.requests.clear()

    doc = dry_run(project, "deploy", "v2.0.0")
    plan = doc["plan"]
    assert fake.writes() == 0  # zero mutating requests
    assert state(project) == before and invoke(project, "production") == [3.0, 7.0]
    actions = [s["action"] for s in plan if s["target"] != "github"]
    # the real deploy's order: the plan is the same code walked with its writes recorded
    assert actions == ["lock endpoint", "start model server", "smoke requests", "switch traffic",
                       "update endpoint state", "record deployment", "stop model server"]  # fmt: skip
    deployment_post = next(s for s in plan if s["target"] == "github")
    assert deployment_post["body"]["ref"] == project.git("rev-parse", "v2.0.0")
    assert deployment_post["body"]["environment"] == "production"

    code, out, err = project.cli("deploy", "v2.0.0", "--json")
    assert code == 0, err
    assert same(github_calls(plan), real_calls(fake))
    assert doc["result"]["detail"] == "dry run: would " + json.loads(out)["detail"]
    assert endpoint_state(project, "production")["version"] == 2
    assert dry_run(project, "deploy", "v2.0.0")["plan"] == []  # now live: nothing to do


def test_dry_run_report_and_gate_make_no_github_writes_and_match_the_real_calls(
    pr: Project, fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    actions_env(monkeypatch, fake, tmp_path, pr)
    before = state(pr)
    report_plan = plan_of(pr, "report", "--post")
    gate_plan = plan_of(pr, "gate", "--check")
    assert fake.writes() == 0 and fake.pr_comments(REPO, 7) == [] and fake.check_runs == {}
    assert state(pr) == before  # no verdict recorded
    assert [s["action"] for s in gate_plan if s["target"] == "store"] == ["record verdict"]
    (post,) = [s for s in report_plan if s["target"] == "github"]
    assert post["body"]["body"].startswith("<!-- mlops-ci:report project=fast -->")

    fake.requests.clear()
    pr.ok("report", "--post")
    assert same(github_calls(report_plan), real_calls(fake))
    assert fake.pr_comments(REPO, 7)[0]["body"] == post["body"]["body"]
    fake.requests.clear()
    pr.ok("gate", "--check")
    assert same(github_calls(gate_plan), real_calls(fake))

    # with the comment and check run in place, the next plans edit them instead of creating
    pr.commit("more", quality=0.95)
    actions_env(monkeypatch, fake, tmp_path, pr)
    pr.ok("train")
    assert github_calls(plan_of(pr, "report", "--post"))[0][0] == "PATCH"


def test_dry_run_train_and_promote_record_nothing(project: Project):
    plan = plan_of(project, "train")
    (job,) = [s for s in plan if s["action"] == "train"]
    assert job["command"] == ["python", "train.py", "--broken", "0", "--quality", "0.9", "--scale", "1.0"]
    assert job["channels"]["train"]["source"] == "commit"
    assert json.loads(project.ok("runs", "--json")) == []
    assert not (project.path / ".mlops-ci" / "runs").exists()

    project.ok("train")
    project.ok("gate")
    planned = [s for s in plan_of(project, "promote") if s["action"] == "register model version"]
    assert json.loads(project.ok("models", "--json")) == []
    real = json.loads(project.ok("promote", "--json"))["version"]
    assert [(p["version"], p["sha"]) for p in planned] == [(real["version"], real["sha"])]


def test_dry_run_gate_still_reports_a_failing_verdict(project: Project):
    project.ok("train")
    project.commit("worse", quality=0.5)
    project.ok("train")
    code, out, _ = project.cli("gate", "--dry-run")
    assert code == 1 and "dry run: nothing was changed" in out
    assert "FAIL" in out
