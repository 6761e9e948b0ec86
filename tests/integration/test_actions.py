"""The composite actions, starter workflows and `mlops-ci init`: static safety rules, and the
actions' own steps executed locally (see tests/actions_harness.py for why not `act`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import mlops_ci
from mlops_ci.scaffold import WORKFLOWS
from tests.actions_harness import Harness, runner_env
from tests.conftest import ROOT, Project
from tests.fakes.github_api import ALL_PERMISSIONS, FakeGitHub

ACTIONS = sorted((ROOT / "actions").glob("*/action.yml"))
WORKFLOW_FILES = sorted((ROOT / "workflow_templates").glob("*.yml")) + sorted(
    (ROOT / ".github" / "workflows").glob("*.yml")
)
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def _steps(doc: dict) -> Iterator[dict]:
    if "runs" in doc:
        yield from doc["runs"].get("steps", [])
    for job in (doc.get("jobs") or {}).values():
        yield from job.get("steps", [])


@pytest.mark.parametrize("path", ACTIONS + WORKFLOW_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_expression_in_run_blocks_and_third_party_actions_pinned(path: Path):
    text = path.read_text()
    doc = yaml.safe_load(text)
    for step in _steps(doc):
        if "run" in step:
            assert "${{" not in step["run"], f"{path.name}: pass values through env:, not into the script"
            assert "shell" in step or "runs" not in doc, f"{path.name}: composite steps need shell: bash"
        uses = step.get("uses")
        if uses and not uses.startswith("./"):
            assert PINNED.match(uses), f"{path.name}: {uses} is not pinned to a full commit SHA"
            assert re.search(re.escape(uses) + r" # v\d", text), f"{path.name}: {uses} lacks a # vX comment"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflows_have_least_privilege(path: Path):
    doc = yaml.safe_load(path.read_text())
    assert doc["permissions"] == {}, "top-level permissions: {} and per-job grants"
    for job in doc["jobs"].values():
        assert "permissions" in job
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False
    if "pull_request_target" in doc.get(True, doc.get("on", {})):
        # only the fork-training workflow, each job behind an approval, with the base's config
        assert path.name == "mlops-ci-fork-train.yml"
        for job in doc["jobs"].values():
            assert job["environment"] == "fork-training"
            assert job["steps"][-1]["run"].startswith("cp ../trusted/mlops-ci.yaml mlops-ci.yaml\n")
            assert all("run" not in step or "mlops-ci" in step["run"] for step in job["steps"])


def test_workflow_templates_are_the_packaged_ones_with_properties():
    for name in WORKFLOWS:
        shipped = (ROOT / "mlops_ci" / "templates" / "workflows" / name).read_text()
        assert (ROOT / "workflow_templates" / name).read_text() == shipped
        props = json.loads((ROOT / "workflow_templates" / name.replace(".yml", ".properties.json")).read_text())
        assert props["name"] and props["description"] and props["filePatterns"]
        assert f'MLOPS_CI_VERSION: "{mlops_ci.__version__}"' in shipped


def test_release_workflow_never_cancels_a_deploy_in_flight():
    doc = yaml.safe_load((ROOT / "workflow_templates" / "mlops-ci-release.yml").read_text())
    assert doc["concurrency"]["cancel-in-progress"] is False
    assert "environment" in doc["jobs"]["deploy"]


def test_init_writes_workflows_and_config_and_refuses_to_overwrite(tmp_path: Path):
    from tests.conftest import git

    git(tmp_path, "init", "-q")
    p = Project(tmp_path)
    out = p.ok("init")
    assert out.splitlines()[: len(WORKFLOWS) + 1] == [f"wrote {f}" for f in sorted(
        [f".github/workflows/{w}" for w in WORKFLOWS] + ["mlops-ci.yaml"])]  # fmt: skip
    assert p.ok("config", "check").startswith("mlops-ci.yaml: ok")
    assert ".mlops-ci/" in (tmp_path / ".gitignore").read_text()
    (tmp_path / "mlops-ci.yaml").write_text("project: mine\n")
    code, _, err = p.cli("init")
    assert code == 5 and "already exist" in err and "--force" in err
    assert (tmp_path / "mlops-ci.yaml").read_text() == "project: mine\n"  # nothing overwritten
    p.ok("init", "--force")
    assert (tmp_path / "mlops-ci.yaml").read_text().startswith("# mlops-ci configuration")


# -- executing the actions' own steps ---------------------------------------------------------

REPO = "acme/models"


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    fake = FakeGitHub(tokens={"tok": ALL_PERMISSIONS}).start()
    yield fake
    fake.stop()


def harness(project: Project, tmp_path: Path, gh: FakeGitHub, **extra: str) -> Harness:
    summary = tmp_path / "summary.md"
    summary.touch()
    env = runner_env({
        "GITHUB_API_URL": gh.base_url, "GITHUB_TOKEN": "tok", "GITHUB_REPOSITORY": REPO,
        "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_RUN_ID": "5", "MLOPS_CI_GITHUB_WRITE_INTERVAL": "0", **extra,
    })  # fmt: skip
    (tmp_path / "h").mkdir(exist_ok=True)
    return Harness(env, project.path, tmp_path / "h")


def action(verb: str) -> Path:
    return ROOT / "actions" / verb


def test_train_report_gate_through_the_actions_own_steps(project: Project, tmp_path: Path, gh: FakeGitHub):
    main_sha = project.git("rev-parse", "HEAD")
    push = harness(project, tmp_path, gh, GITHUB_SHA=main_sha, GITHUB_REF="refs/heads/main", GITHUB_EVENT_NAME="push")
    trained = push.run(action("train"), {"python-version": ""})
    assert trained.returncode == 0, trained.log
    assert trained.outputs["sha"] == main_sha and trained.outputs["run-id"].startswith(main_sha[:8])
    assert "mlops-ci " + mlops_ci.__version__ + " already installed" in trained.log

    project.git("checkout", "-q", "-b", "tune")
    head = project.commit("tune", quality=0.95)
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"number": 12, "pull_request": {
        "number": 12, "head": {"sha": head, "ref": "tune"}, "base": {"ref": "main"}}}))  # fmt: skip
    pr = harness(project, tmp_path, gh, GITHUB_SHA="f" * 40, GITHUB_REF="refs/pull/12/merge",
                 GITHUB_EVENT_NAME="pull_request", GITHUB_EVENT_PATH=str(event))  # fmt: skip
    assert pr.run(action("train"), {"python-version": ""}).outputs["sha"] == head
    reported = pr.run(action("report"), {"python-version": ""})
    assert reported.returncode == 0, reported.log
    assert reported.outputs["comment-url"].endswith(f"#issuecomment-{gh.pr_comments(REPO, 12)[0]['id']}")
    assert "| accuracy | 0.9 | 0.95 |" in gh.pr_comments(REPO, 12)[0]["body"]
    gated = pr.run(action("gate"), {"python-version": ""})
    assert gated.returncode == 0, gated.log
    assert (gated.outputs["verdict"], gated.outputs["conclusion"]) == ("passed", "success")
    (check,) = gh.check_runs.values()
    assert check["conclusion"] == "success" and check["head_sha"] == head
    assert gated.skipped_uses == []  # python-version "" skips setup-python via `if:`

    promoted = pr.run(action("promote"), {"python-version": "", "ref": head})
    assert promoted.returncode == 0 and promoted.outputs["model-version"] == "1"

    project.commit("worse", quality=0.5)
    push2 = harness(project, tmp_path, gh, GITHUB_SHA=project.git("rev-parse", "HEAD"), GITHUB_REF="refs/heads/tune")
    push2.run(action("train"), {"python-version": ""})
    failed = push2.run(action("gate"), {"python-version": "", "check": "false", "base": "main"})
    assert failed.returncode == 1 and failed.outputs["verdict"] == "failed"


def test_setup_python_step_is_pinned_and_used_by_default(project: Project, tmp_path: Path, gh: FakeGitHub):
    h = harness(project, tmp_path, gh, GITHUB_SHA=project.git("rev-parse", "HEAD"), GITHUB_REF="refs/heads/main")
    result = h.run(action("train"), {})
    assert result.returncode == 0, result.log
    assert result.skipped_uses == ["actions/setup-python@0b93645e9fea7318ecaed2b359559ac225c90a2b"]


def test_dry_run_input_changes_nothing(project: Project, tmp_path: Path, gh: FakeGitHub):
    h = harness(project, tmp_path, gh, GITHUB_SHA=project.git("rev-parse", "HEAD"), GITHUB_REF="refs/heads/main")
    result = h.run(action("train"), {"python-version": "", "dry-run": "true"})
    assert result.returncode == 0, result.log
    assert "dry run: nothing was changed" in result.log
    assert json.loads(project.ok("runs", "--json")) == []
