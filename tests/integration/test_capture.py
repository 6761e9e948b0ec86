"""Data capture on a real local endpoint: the router (several processes) records what it
forwards, in SageMaker's Data Capture format, and a deploy that changes `capture:` changes it."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from tests.conftest import Project, fast_config
from tests.integration.test_deploy import endpoint_state, release

PRODUCTION = '  - name: production\n    tags: ["v*"]\n'


def with_capture(capture: str) -> str:
    text = fast_config()
    assert PRODUCTION in text
    return text.replace(PRODUCTION, PRODUCTION + f"    capture: {capture}\n")


def post(url: str, body: bytes, ctype: str) -> tuple[int, bytes]:
    req = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": ctype}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def captured(project: Project, want: int) -> list[dict[str, object]]:
    root = project.path / ".mlops-ci" / "endpoints" / "production" / "capture"
    deadline = time.monotonic() + 10
    while True:
        found = [json.loads(line) for f in sorted(root.rglob("*.jsonl")) for line in f.read_text().splitlines()]
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_the_router_captures_what_it_forwards(project: Project):
    (project.path / "mlops-ci.yaml").write_text(with_capture("{percent: 100}"))
    project.commit("capture on")
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    url = str(endpoint_state(project, "production")["url"])
    sent = [json.dumps([[i, i + 1]]).encode() for i in range(6)]
    answers = [post(url, body, "application/json") for body in sent]
    assert all(status == 200 for status, _ in answers)
    bad = post(url, b"1,2\n::error::x", "text/csv")
    assert bad[0] >= 400
    records = captured(project, 7)
    assert len(records) == 7  # every request, once (the deploy's smoke requests go to the model server directly)
    by_input = {r["captureData"]["endpointInput"]["data"]: r for r in records}  # type: ignore[index]
    for body, (_, answer) in zip(sent, answers, strict=True):
        r = by_input[body.decode()]
        assert r["captureData"]["endpointInput"]["encoding"] == "JSON"  # type: ignore[index]
        assert r["captureData"]["endpointOutput"]["data"] == answer.decode()  # type: ignore[index]
        assert r["mlopsCi"]["status"] == 200 and r["mlopsCi"]["version"] == "1"  # type: ignore[index]
    error = by_input["1,2\n::error::x"]
    assert error["captureData"]["endpointInput"]["encoding"] == "CSV"  # type: ignore[index]
    assert error["mlopsCi"]["status"] == bad[0]  # type: ignore[index]
    root = project.path / ".mlops-ci" / "endpoints" / "production" / "capture"
    for f in root.rglob("*.jsonl"):  # SageMaker's layout: <endpoint>/<variant>/yyyy/mm/dd/hh/<file>
        assert f.relative_to(root).parts[:2] == ("production", "AllTraffic") and len(f.relative_to(root).parts) == 7

    # capture off in the next release: the router, still the same process, stops capturing
    (project.path / "mlops-ci.yaml").write_text(fast_config())
    project.commit("capture off")
    release(project, "v1.0.1")
    project.ok("deploy", "v1.0.1")
    assert post(url, b"[[9, 9]]", "application/json")[0] == 200
    time.sleep(0.6)  # two of the writer's flush intervals
    assert len(captured(project, 8)) == 7
    project.ok("endpoint", "stop", "production")
