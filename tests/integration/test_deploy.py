"""deploy / invoke / rollback / status / endpoints against real local endpoint processes."""

from __future__ import annotations

import fcntl
import json
import threading
import urllib.request
from pathlib import Path

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


def test_untrained_tag_is_refused(project: Project):
    project.git("tag", "v9.9.9")
    code, _, err = project.cli("deploy", "v9.9.9")
    assert code == 4 and "has no completed run" in err


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


def test_failing_smoke_test_leaves_the_previous_version_serving(project: Project):
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    release(project, "v1.1.0", broken=1)  # passes the gate, but cannot predict
    code, _, err = project.cli("deploy", "v1.1.0")
    assert code == 7
    assert "smoke request 1 got HTTP 500" in err and "v1 is still serving" in err
    assert endpoint_state(project, "production")["version"] == 1
    assert invoke(project, "production") == [3.0, 7.0]
    deployments = json.loads(project.ok("deploy", "v1.0.0", "--json"))  # live version: no-op
    assert deployments["outcome"] == "noop"
    # a SHA that failed here is not retried without an explicit flag
    code, _, err = project.cli("deploy", "v1.1.0")
    assert code == 5 and "already failed to deploy" in err and "--retry-failed" in err


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


def test_malformed_payloads_get_4xx_and_the_server_keeps_serving(project: Project):
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    url = endpoint_state(project, "production")["url"]

    def post(body: bytes, ctype: str = "application/json", accept: str = "application/json") -> tuple[int, bytes]:
        req = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": ctype, "Accept": accept})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    assert post(b"{not json")[0] == 400
    assert post(b'"a string"')[0] == 400
    assert post(b"1,2\n3,x", "text/csv")[0] == 400
    assert post(b"\x00\x01", "application/x-npy")[0] == 400
    assert post(b"[[1,2]]", "image/png")[0] == 415
    assert post(b"[[1,2]]", accept="application/xml")[0] == 406
    # An oversized payload is refused from its Content-Length, before the body is read.
    import http.client
    from urllib.parse import urlparse

    conn = http.client.HTTPConnection(urlparse(url).hostname, urlparse(url).port, timeout=10)
    conn.putrequest("POST", "/invocations")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(6 * 1024 * 1024 + 1))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
    assert post(b"1,2\n3,4", "text/csv", "text/csv") == (200, b"3.0\r\n7.0\r\n")
    assert json.loads(post(b'{"instances": [[1, 1]]}')[1]) == [2.0]

    results: list[object] = []

    def one() -> None:
        try:
            results.append(post(b"[[1, 2]]")[0])
        except Exception as exc:
            results.append(repr(exc))

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 20


def test_a_second_deploy_to_the_same_endpoint_waits_then_fails_naming_the_holder(project: Project):
    release(project, "v1.0.0")
    lock = project.path / ".mlops-ci" / "locks" / "endpoint-fast-production.lock"  # next to the store
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write("pid 4242 since 12:00:00 (workflow run 99)")
        fh.flush()
        code, _, err = project.cli("deploy", "v1.0.0", "--lock-timeout", "0.3")
    assert code == 8
    assert "endpoint fast/production is locked by pid 4242 since 12:00:00 (workflow run 99)" in err
    assert endpoint_state(project, "production")["status"] == "NotDeployed"
    project.ok("deploy", "v1.0.0")  # once released, the deploy goes through


def test_concurrent_deploys_serialise(project: Project):
    release(project, "v1.0.0")
    release(project, "v2.0.0", scale=2.0)
    codes: dict[str, int] = {}

    def deploy(tag: str) -> None:
        from tests.conftest import run_module

        codes[tag] = run_module("deploy", tag, cwd=project.path).returncode

    threads = [threading.Thread(target=deploy, args=(t,)) for t in ("v1.0.0", "v2.0.0")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == {"v1.0.0": 0, "v2.0.0": 0}
    history = [d for d in json.loads(project.ok("endpoints", "--json")) if d["name"] == "production"]
    assert history[0]["status"] == "InService"
    live = history[0]["version"]
    assert invoke(project, "production") == ([3.0, 7.0] if live == 1 else [6.0, 14.0])


@pytest.mark.parametrize("bad", ["--endpoint=nope"])
def test_unknown_endpoint(project: Project, bad: str):
    release(project, "v1.0.0")
    code, _, err = project.cli("deploy", "v1.0.0", bad)
    assert code == 2 and "endpoint 'nope' is not declared" in err


def test_tag_matching_no_endpoint(project: Project):
    release(project, "release-1")
    code, _, err = project.cli("deploy", "release-1")
    assert code == 2 and "matches no endpoint" in err
