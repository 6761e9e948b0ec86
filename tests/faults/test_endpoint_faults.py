"""Fault matrix, endpoints: a failed rollout leaves the old version serving; concurrent deploys exclude each other."""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Project, serving_processes
from tests.integration.test_deploy import endpoint_state, invoke, release


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


def test_malformed_payloads_get_500_as_on_sagemaker_and_the_server_keeps_serving(project: Project):
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    url = endpoint_state(project, "production")["url"]

    def post(body: bytes, ctype: str = "application/json", accept: str = "application/json") -> tuple[int, bytes]:
        req = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": ctype, "Accept": accept})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            assert exc.headers["Content-Type"] == "text/html; charset=utf-8"  # the container's error page
            return exc.code, exc.read()

    # SageMaker's scikit-learn container answers each of these 500 (tests/integration/test_serving_oracle.py);
    # the page names what went wrong
    status, page = post(b"{not json")
    assert status == 500 and b"<title>500 Internal Server Error</title>" in page and b"JSONDecodeError" in page
    assert post(b'"a string"')[0] == 500
    assert post(b"1,2\n3,x", "text/csv")[0] == 500
    assert post(b"\x00\x01", "application/x-npy")[0] == 500
    assert b"Content type image/png is not supported" in post(b"[[1,2]]", "image/png")[1]
    assert post(b"[[1,2]]", "application/json; charset=utf-8")[0] == 500
    assert post(b"[[1,2]]", accept="application/xml")[0] == 500
    assert post(b'{"instances": [[1, 1]]}')[0] == 500
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
    assert post(b"1,2\n3,4", "text/csv", "text/csv") == (200, b"3.0\n7.0\n")

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


def test_a_new_server_that_cannot_start_leaves_the_old_version_serving(project: Project):
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    (project.path / "inference.py").write_text("raise ImportError('missing dependency: torch')\n")
    release(project, "v1.1.0", scale=3.0)
    code, _, err = project.cli("deploy", "v1.1.0")
    assert code == 7
    assert "the new model server exited with code 1" in err and "missing dependency: torch" in err
    assert "v1 is still serving" in err
    assert invoke(project, "production") == [3.0, 7.0]


def test_redeploying_the_live_version_changes_nothing(project: Project):
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    before = (json.loads(project.ok("endpoints", "--json")), project.ok("store", "export"))
    dep = json.loads(project.ok("deploy", "v1.0.0", "--json"))
    assert dep["outcome"] == "noop" and "nothing to do" in dep["detail"]
    assert (json.loads(project.ok("endpoints", "--json")), project.ok("store", "export")) == before


def test_a_server_killed_by_hand_shows_as_drift_and_a_broken_endpoint(project: Project):
    import os
    import signal

    from mlops_ci.backends.sqlite_store import SqliteStore

    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    store = SqliteStore(project.path / ".mlops-ci" / "store.db")
    pid = store.endpoint_state("fast", "production").server_pid
    store.close()
    os.kill(pid, signal.SIGKILL)  # someone killed the model server
    # Its workers die with it (PDEATHSIG), a moment later: until then status names them as strays.
    deadline = time.monotonic() + 10
    while True:
        code, out, err = project.cli("status", "--check")
        if "endpoint is Degraded" in out or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert code == 12 and "endpoint is Degraded" in out
    code, _, err = project.cli("invoke", "production", "--data", "[[1, 2]]")
    assert code == 10 and "no healthy model server" in err
    project.ok("deploy", "v1.0.0")  # a deploy repairs it
    assert invoke(project, "production") == [3.0, 7.0]


# -- the router and the model server under hostile or careless clients --------------------------
def _port(project: Project) -> int:
    from urllib.parse import urlparse

    port = urlparse(str(endpoint_state(project, "production")["url"])).port
    assert port is not None
    return port


def _post(port: int, body: bytes, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        resp = c.getresponse()
        return resp.status, resp.read()
    finally:
        if conn is None:
            c.close()


def test_thousands_of_idle_connections_neither_hold_nor_freeze_the_endpoint(project: Project):
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    port = _port(project)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(1500)]
    half = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
    for s in half:
        s.sendall(b"POST /invocations HTTP/1.1\r\nContent-Le")  # a head that never ends
    started = time.monotonic()
    assert _post(port, b"[[1, 2]]") == (200, b"[3.0]")
    for s in idle + half:
        s.close()  # all at once
    keep = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    assert [_post(port, b"[[1, 1]]", keep) for _ in range(50)] == [(200, b"[2.0]")] * 50
    keep.close()
    # before: 1,000 dropped at once froze the endpoint for 34 s (a thread each)
    assert time.monotonic() - started < 10
    assert invoke(project, "production") == [3.0, 7.0]


def test_a_request_head_that_never_ends_is_closed_with_408(project: Project):
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    s = socket.create_connection(("127.0.0.1", _port(project)), timeout=30)
    s.sendall(b"POST /invocations HTTP/1.1\r\n")
    for _ in range(3):
        time.sleep(1)
        s.sendall(b"X-Slow: 1\r\n")  # a byte now and then never extends the head's deadline
    with s:
        answer = s.recv(1000)
        assert answer.startswith(b"HTTP/1.1 408 ") and s.recv(1000) == b""


def test_invoke_with_a_body_over_6_mb_reports_the_endpoints_413(project: Project, tmp_path):
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    big = tmp_path / "big.json"
    big.write_bytes(b"[" + b"1," * (7 * 1024 * 1024 // 2) + b"1]")
    code, _, err = project.cli("invoke", "production", "--file", str(big))
    assert code == 2, err
    assert "endpoint production answered HTTP 413" in err and "exceeds the 6291456-byte limit" in err
    assert "does not answer" not in err
    assert invoke(project, "production") == [3.0, 7.0]


def test_json_nested_100000_deep_is_a_500_naming_the_nesting(project: Project):
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    status, body = _post(_port(project), b"[" * 100_000 + b"]" * 100_000)
    assert status == 500 and b"nested too deeply" in body  # 500 as SageMaker's container; the server lives
    assert invoke(project, "production") == [3.0, 7.0]


# -- a deploy killed at any point: nothing leaks, no history is lost ------------------------------
def _deploy_killed_at(project: Project, point: str, tmp_path: Path, ref: str = "v1.1.0") -> None:
    """Run `mlops-ci deploy ref` in its own process, let it reach `point`, then SIGKILL it."""
    paused = tmp_path / f"paused-at-{point.replace(' ', '-')}"
    env = {**os.environ, "MLOPS_CI_TEST_PAUSE": point, "MLOPS_CI_TEST_PAUSE_FILE": str(paused)}
    proc = subprocess.Popen([sys.executable, "-m", "mlops_ci", "-C", str(project.path), "deploy", ref], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 60
    while not paused.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, f"the deploy never reached {point!r}"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    if proc.stderr:
        proc.stderr.close()


def _history(project: Project) -> list[dict[str, object]]:
    """The endpoint's deployment records, as `store export` gives them."""
    lines = [json.loads(line) for line in project.ok("store", "export").splitlines() if line.strip()]
    return [r["deployment"] for r in lines if r["kind"] == "deployment" and r["deployment"]["endpoint"] == "production"]


def _endpoint_processes(project: Project) -> list[int]:
    return serving_processes(project.path / ".mlops-ci" / "endpoints" / "production")


def _released_twice(project: Project) -> None:
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    release(project, "v1.1.0", scale=2.0)


@pytest.mark.parametrize("point", ["green started", "before switch"])
def test_a_deploy_killed_before_the_switch_leaks_no_server(project: Project, tmp_path, point):
    _released_twice(project)
    before = _endpoint_processes(project)
    _deploy_killed_at(project, point, tmp_path)
    assert len(_endpoint_processes(project)) > len(before)  # the killed deploy's new server, untracked
    code, out, _ = project.cli("status", "--check")
    assert code == 12 and "untracked serving process(es)" in out and "a killed deploy left" in out
    code, _, err = project.cli("store", "check")
    assert code == 0 and "untracked serving process(es) running" in err
    assert invoke(project, "production") == [3.0, 7.0]  # v1 kept serving throughout
    deployed = json.loads(project.ok("deploy", "v1.1.0", "--json"))  # the next operation reaps, then deploys
    assert deployed["outcome"] == "succeeded" and invoke(project, "production") == [6.0, 14.0]
    live = endpoint_state(project, "production")
    assert live["version"] == 2
    assert "untracked" not in project.ok("status")
    assert [d["outcome"] for d in _history(project)] == ["succeeded", "succeeded"]
    project.ok("endpoint", "stop", "production")
    assert _endpoint_processes(project) == []


@pytest.mark.parametrize("point", ["switched", "state written"])
def test_a_deploy_killed_after_the_switch_is_recorded_by_the_next_operation(project: Project, tmp_path, point):
    _released_twice(project)
    _deploy_killed_at(project, point, tmp_path)
    assert invoke(project, "production") == [6.0, 14.0]  # traffic is on v2 already
    project.ok("rollback", "production")  # the next operation: records v2 first, so it rolls back to v1
    assert invoke(project, "production") == [3.0, 7.0]
    history = _history(project)
    assert [(d["version"], d["kind"], d["outcome"]) for d in history] == [
        (1, "deploy", "succeeded"), (2, "deploy", "succeeded"), (1, "rollback", "succeeded")
    ]  # fmt: skip
    assert "the deploying process was stopped after switching traffic" in str(history[1]["detail"])
    project.ok("store", "check")  # the recovered record is sealed and links to its version
    project.ok("endpoint", "stop", "production")
    assert _endpoint_processes(project) == []  # the old server, the new one, the router: all stopped


def test_a_deploy_killed_after_the_switch_then_redeployed_keeps_one_server(project: Project, tmp_path):
    _released_twice(project)
    _deploy_killed_at(project, "switched", tmp_path)
    again = json.loads(project.ok("deploy", "v1.1.0", "--json"))  # recovery records v2; v2 is live
    assert again["outcome"] == "noop"
    assert [(d["version"], d["outcome"]) for d in _history(project)] == [(1, "succeeded"), (2, "succeeded")]
    assert endpoint_state(project, "production")["version"] == 2
    assert "untracked" not in project.ok("status")
    # router + the live server and its workers: nothing of v1 is left
    workdirs = [p for p in _endpoint_processes(project) if b"versions/v1-" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert workdirs == []


def test_a_target_without_pids_from_an_older_mlops_ci_is_never_reaped(project: Project, tmp_path):
    _released_twice(project)
    _deploy_killed_at(project, "switched", tmp_path)
    # what an mlops-ci before kill-safe deploys leaves: a switch without pid or intent
    d = project.path / ".mlops-ci" / "endpoints" / "production"
    target = json.loads((d / "target.json").read_text())
    (d / "target.json").write_text(json.dumps({k: v for k, v in target.items() if k != "pid"}))
    (d / "intent.json").unlink()
    assert invoke(project, "production") == [6.0, 14.0]
    assert "untracked" not in project.ok("status")  # it cannot tell: it reports and stops nothing
    deployed = json.loads(project.ok("deploy", "v1.1.0", "--json"))  # not "nothing to do": a real rollout
    assert deployed["outcome"] == "succeeded" and invoke(project, "production") == [6.0, 14.0]
    project.ok("endpoint", "stop", "production")
    assert _endpoint_processes(project) == []


def test_a_router_started_by_a_killed_deploy_is_adopted_not_doubled(project: Project, tmp_path):
    _released_twice(project)
    os.kill(int(_endpoint_file(project, "router.ready")["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
    _deploy_killed_at(project, "green started", tmp_path)  # it started a new router, then died
    deployed = json.loads(project.ok("deploy", "v1.1.0", "--json"))
    assert deployed["outcome"] == "succeeded" and invoke(project, "production") == [6.0, 14.0]
    routers = [p for p in _endpoint_processes(project) if b"serving.router" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len({_parent_or_self(p, routers) for p in routers}) == 1  # one router (and its workers)


def test_a_request_that_kills_its_worker_is_not_sent_to_another_and_the_worker_is_replaced(
    project: Project, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "3")  # as SageMaker's containers read it
    (project.path / "inference.py").write_text(
        (project.path / "inference.py")
        .read_text()
        .replace(
            "def predict_fn(data, model):\n",
            "def predict_fn(data, model):\n    if data.tolist() == [[666.0, 666.0]]:\n"
            "        os.kill(os.getpid(), 9)  # a model that crashes its process on one input\n",
        )
    )
    project.commit("a model that crashes on one input")
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    server = int(_endpoint_file(project, "target.json")["pid"])  # type: ignore[call-overload]
    workers = _children(server)
    assert len(workers) == 3
    code, _, err = project.cli("invoke", "production", "--data", "[[666, 666]]")
    assert code == 2 and "answered HTTP 502" in err and "this request may have crashed it" in err
    # ...not sent again to a second worker, which it would kill too
    deadline = time.monotonic() + 10
    while len(_children(server)) < len(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(_children(server)) == len(workers)  # the supervisor replaced the dead one
    assert [invoke(project, "production") for _ in range(10)] == [[3.0, 7.0]] * 10
    server_log = next((project.path / ".mlops-ci").rglob("server.log"))
    deadline = time.monotonic() + 10
    while "exited; starting another" not in server_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)  # the supervisor says so once it has reaped the dead worker
    assert server_log.read_text().count("exited; starting another") == 1  # one worker died, not two


def _endpoint_file(project: Project, name: str) -> dict[str, object]:
    """router.ready (the router's port and pid) or target.json (the live model server's)."""
    return json.loads((project.path / ".mlops-ci" / "endpoints" / "production" / name).read_text())  # type: ignore[no-any-return]


def _children(pid: int) -> list[int]:
    """The living children of `pid` (a worker that died but is not reaped yet is a zombie: not)."""
    out = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            if int(ppid) == pid and state != "Z":
                out.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return out


def _parent_or_self(pid: int, among: list[int]) -> int:
    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return parent if parent in among else pid
