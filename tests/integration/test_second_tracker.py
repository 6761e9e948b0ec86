"""A tracker plugs in through the table (backends/registry.py) without touching the core:
tests/fakes/memo_tracker.py is one module, and one table line makes it `tracking.backend: memo`."""

from __future__ import annotations

import json

import pytest

from mlops_ci.backends import registry
from tests.conftest import Project, fast_config
from tests.fakes.memo_tracker import MemoTracker

MEMO = registry.Kind("memo", "Memo", "tests.fakes.memo_tracker:MemoTracker")


@pytest.fixture
def memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.TRACKING, "memo", MEMO)


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
