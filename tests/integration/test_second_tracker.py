"""A tracker plugs in through the table (mlops_ci/kinds.py) without touching the core:
tests/fakes/memo_tracker.py is one module, and one table line makes it `tracking.backend: memo`
(its implementation, and the parser of its own keys of `tracking`)."""

from __future__ import annotations

import json

import pytest

from mlops_ci import kinds
from tests.conftest import Project, fast_config
from tests.fakes.memo_tracker import MemoTracker

MEMO = kinds.Kind("memo", "Memo", "tests.fakes.memo_tracker:MemoTracker", settings="tests.fakes.memo_tracker:SETTINGS")


@pytest.fixture
def memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(kinds.TRACKING, "memo", MEMO)


def test_a_tracker_from_the_table_follows_train_report_promote_and_deploy(project: Project, memo: None):
    project.commit("memo", extra="tracking:\n  backend: memo\n  workspace: team\n  model_name: fast\n")
    run = json.loads(project.ok("train", "--json"))["run"]
    # the numbers the job logged to the tracker join its log's; the log's value wins where both have one
    assert run["metrics"]["memo_score"] == 0.5
    assert run["metrics"]["accuracy"] == pytest.approx(0.9)
    assert run["links"]["memo"].startswith("memo://memo-")
    report = json.loads(project.ok("report", "--json"))
    assert report["comparison"]["head"]["links"]["comet_project"] == "memo://project"  # the tracker link
    project.ok("gate")
    project.ok("promote")
    project.git("tag", "v1.0.0")
    project.ok("deploy", "v1.0.0")
    journal = MemoTracker(project.path / ".mlops-ci" / "memo.jsonl").events()
    assert [e["event"] for e in journal] == ["read", "tag", "register", "deployed"]
    assert journal[1]["run"] == run["run_id"]
    assert journal[3] == {"event": "deployed", "version": 1, "endpoint": "production"}


def test_a_name_that_is_not_in_the_table_is_a_config_error(project: Project):
    (project.path / "mlops-ci.yaml").write_text(fast_config(extra="tracking:\n  backend: memo\n"))
    code, _, err = project.cli("config", "check")
    assert code == 2
    assert "tracking.backend" in err and "memo" in err


def test_a_tracker_without_a_model_registry_is_not_made_by_promote_deploy_or_rollback(
    project: Project, monkeypatch: pytest.MonkeyPatch
):
    # Comet online with no key cannot be made (it says so at once); without tracking.model_name
    # promote, deploy and rollback have nothing to tell it, so they must not need it.
    project.ok("train")
    project.ok("gate")
    project.ok("promote")
    project.git("tag", "v1.0.0")
    project.ok("deploy", "v1.0.0")
    project.commit("v2", quality=0.95)
    project.ok("train")
    project.ok("gate")
    project.ok("promote")
    project.git("tag", "v2.0.0")
    project.ok("deploy", "v2.0.0")
    (project.path / "mlops-ci.yaml").write_text(
        fast_config(quality=0.95, extra="tracking: {backend: comet, workspace: acme, mode: online}\n")
    )
    monkeypatch.delenv("COMET_API_KEY", raising=False)
    code, _, err = project.cli("report")
    assert code == 2 and "tracking.mode: online needs the Comet API key" in err  # where Comet is needed, it is
    for args in (("promote", "v2.0.0"), ("deploy", "v2.0.0", "--dry-run"), ("rollback", "production", "--dry-run")):
        code, _, err = project.cli(*args)
        assert code == 0, f"{args}: {err}"
