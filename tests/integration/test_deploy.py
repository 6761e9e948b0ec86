"""deploy / invoke / rollback / status / endpoints against real local endpoint processes."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.conftest import Project


def release(project: Project, tag: str, **config: object) -> str:
    """Commit (optionally changing the config), train, gate, promote and tag."""
    sha = project.commit(f"release {tag}", **config) if config else project.git("rev-parse", "HEAD")
    project.ok("train")
    project.ok("gate", "--base", "main")
    project.ok("promote")
    project.git("tag", tag)
    return sha


def invoke(project: Project, endpoint: str, body: str = "[[1, 2], [3, 4]]") -> object:
    return json.loads(project.ok("invoke", endpoint, "--data", body))


def endpoint_state(project: Project, name: str) -> dict[str, object]:
    return {e["name"]: e for e in json.loads(project.ok("endpoints", "--json"))}[name]


def test_tag_deploys_the_approved_model_and_serves_predictions(project: Project):
    sha = release(project, "v1.0.0")
    runs_before = len(json.loads(project.ok("runs", "--json")))
    dep = json.loads(project.ok("deploy", "v1.0.0", "--json"))
    assert (dep["endpoint"], dep["version"], dep["sha"], dep["tag"], dep["outcome"]) == (
        "production",
        1,
        sha,
        "v1.0.0",
        "succeeded",
    )
    assert len(json.loads(project.ok("runs", "--json"))) == runs_before  # never retrains
    assert invoke(project, "production") == [3.0, 7.0]
    state = endpoint_state(project, "production")
    assert state["status"] == "InService" and state["version"] == 1
    # the endpoint outlives the CLI and speaks the SageMaker serving contract
    with urllib.request.urlopen(f"{state['url']}/ping", timeout=5) as resp:
        assert resp.status == 200
    models = json.loads(project.ok("models", "--json"))
    assert models[0]["live_on"] == ["production"]


def test_rc_tags_go_to_staging(project: Project):
    release(project, "v1.0.0-rc1")
    dep = json.loads(project.ok("deploy", "v1.0.0-rc1", "--json"))
    assert dep["endpoint"] == "staging"


def test_untrained_tag_is_refused(project: Project):
    project.git("tag", "v9.9.9")
    code, _, err = project.cli("deploy", "v9.9.9")
    assert code == 4 and "has no completed run" in err


def test_smoke_expectation_on_the_body(project: Project):
    release(project, "v1.0.0", scale=10.0, smoke_expect="30")  # [[1, 2]] → [30.0]
    project.ok("deploy", "v1.0.0")
    release(project, "v1.1.0", scale=0.5, smoke_expect="30")  # → [1.5]
    code, _, err = project.cli("deploy", "v1.1.0")
    assert code == 7 and "does not contain '30'" in err
    assert invoke(project, "production", "[[1, 2]]") == [30.0]


def test_rollback_restores_the_previous_version(project: Project):
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    release(project, "v2.0.0", scale=2.0)
    project.ok("deploy", "v2.0.0")
    url = endpoint_state(project, "production")["url"]
    assert invoke(project, "production") == [6.0, 14.0]
    dep = json.loads(project.ok("rollback", "production", "--json"))
    assert (dep["kind"], dep["version"], dep["outcome"]) == ("rollback", 1, "succeeded")
    assert invoke(project, "production") == [3.0, 7.0]
    assert endpoint_state(project, "production")["url"] == url  # the URL never changes


def test_rollback_without_history(project: Project):
    code, _, err = project.cli("rollback", "production")
    assert code == 4 and "no earlier successful version" in err


def test_status_reports_drift_when_live_differs_from_declared(project: Project):
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    rows = {r["name"]: r for r in json.loads(project.ok("status", "--json"))}
    assert rows["production"]["drift"] == ""
    assert project.cli("status", "--check")[0] == 0
    release(project, "v2.0.0", scale=2.0)  # approved and tagged, not deployed yet
    rows = {r["name"]: r for r in json.loads(project.ok("status", "--json"))}
    assert rows["production"]["declared_version"] == 2 and rows["production"]["live_version"] == 1
    assert rows["production"]["drift"] == "declared v2 (v2.0.0) but v1 is live"
    code, out, err = project.cli("status", "--check")
    assert code == 12 and "DRIFT" in out and "production" in err


def test_endpoint_down_is_drift(project: Project):
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    project.ok("endpoint", "stop", "production")
    rows = {r["name"]: r for r in json.loads(project.ok("status", "--json"))}
    assert rows["production"]["drift"] == "declared v1 (v1.0.0) but endpoint is Stopped"
    code, _, err = project.cli("invoke", "production", "--data", "[[1, 2]]")
    assert code == 4 and "not running" in err
    project.ok("deploy", "v1.0.0")  # a stopped endpoint comes back on deploy
    assert invoke(project, "production") == [3.0, 7.0]


@pytest.mark.parametrize("bad", ["--endpoint=nope"])
def test_unknown_endpoint(project: Project, bad: str):
    release(project, "v1.0.0")
    code, _, err = project.cli("deploy", "v1.0.0", bad)
    assert code == 2 and "endpoint 'nope' is not declared" in err


def test_tag_matching_no_endpoint(project: Project):
    release(project, "release-1")
    code, _, err = project.cli("deploy", "release-1")
    assert code == 2 and "matches no endpoint" in err
