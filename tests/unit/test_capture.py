"""A local endpoint's data capture (mlops_ci/serving/capture.py): SageMaker's Data Capture record
format, sampling, the size cap, rotation and the S3-like layout; the config keys."""

from __future__ import annotations

import base64
import json
import random
import re
from pathlib import Path

import pytest

from mlops_ci.serving import capture as cap


def settings(tmp_path: Path, **over: object) -> cap.CaptureSettings:
    s: cap.CaptureSettings = {"dir": str(tmp_path / "capture"), "endpoint": "production", "percent": 100,
                              "max_payload_bytes": 1024, "rotate_bytes": 1 << 20, "csv": ["text/csv"],
                              "json": ["application/json"]}  # fmt: skip
    s.update(over)  # type: ignore[typeddict-item]
    return s


def records(tmp_path: Path) -> list[dict[str, object]]:
    files = sorted((tmp_path / "capture").rglob("*.jsonl"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def test_a_record_is_sagemakers_data_capture_record(tmp_path: Path):
    s = settings(tmp_path)
    c = cap.Capturer()
    c.offer(s, b"1,2\n3,4", "text/csv", b'{"p": [0.5]}', "application/json; charset=utf-8", 200, 3.14159, "2")
    c.flush()
    [r] = records(tmp_path)
    data = r["captureData"]
    assert data == {  # type: ignore[comparison-overlap]
        "endpointInput": {"observedContentType": "text/csv", "mode": "INPUT", "data": "1,2\n3,4", "encoding": "CSV"},
        "endpointOutput": {"observedContentType": "application/json; charset=utf-8", "mode": "OUTPUT",
                           "data": '{"p": [0.5]}', "encoding": "JSON"},
    }  # fmt: skip
    meta = r["eventMetadata"]
    assert isinstance(meta, dict) and re.fullmatch(r"[0-9a-f-]{36}", meta["eventId"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", meta["inferenceTime"])
    assert r["eventVersion"] == "0"
    assert r["mlopsCi"] == {"status": 200, "latencyMs": 3.142, "version": "2"}
    # SageMaker's layout below the destination: <endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl
    [f] = list((tmp_path / "capture").rglob("*.jsonl"))
    rel = f.relative_to(tmp_path / "capture").parts
    assert rel[:2] == ("production", "AllTraffic") and re.fullmatch(r"\d{4}/\d\d/\d\d/\d\d", "/".join(rel[2:6]))
    assert meta["inferenceTime"][:13].replace("-", "/").replace("T", "/") == "/".join(rel[2:6])


def test_other_content_types_and_undecodable_text_are_base64(tmp_path: Path):
    s = settings(tmp_path)
    c = cap.Capturer()
    c.offer(s, b"\x00\xffraw", "application/x-npy", b"\xfe\xfe", "text/csv", 200, 1.0, "1")
    c.flush()
    [r] = records(tmp_path)
    data = r["captureData"]
    assert isinstance(data, dict)
    assert data["endpointInput"]["encoding"] == "BASE64"
    assert base64.b64decode(data["endpointInput"]["data"]) == b"\x00\xffraw"
    assert data["endpointOutput"]["encoding"] == "BASE64"  # declared CSV, not UTF-8: kept exactly
    assert base64.b64decode(data["endpointOutput"]["data"]) == b"\xfe\xfe"


def test_hostile_payloads_stay_one_json_line_each(tmp_path: Path):
    s = settings(tmp_path)
    c = cap.Capturer()
    evil = b'{"x": "a\\n::error::forged"}\n::warning::y\n##[error]z'
    for _ in range(3):
        c.offer(s, evil, "application/json", b"ok\n::error::", "text/plain", 200, 1.0, "1")
    c.flush()
    lines = [line for f in (tmp_path / "capture").rglob("*.jsonl") for line in f.read_text().splitlines()]
    assert len(lines) == 3 and all(line.startswith('{"captureData"') for line in lines)
    assert records(tmp_path)[0]["captureData"]["endpointInput"]["data"] == evil.decode()  # type: ignore[index]


def test_sampling_takes_the_configured_share(tmp_path: Path):
    c = cap.Capturer()
    random.seed(5)
    for _ in range(4000):
        c.offer(settings(tmp_path, percent=25), b"[1]", "application/json", b"[2]", "application/json", 200, 1.0, "1")
    c.offer(settings(tmp_path, percent=0), b"[1]", "application/json", b"[2]", "application/json", 200, 1.0, "1")
    c.flush()
    n = len(records(tmp_path))
    assert 900 <= n <= 1100, n  # 1000 expected; the binomial's standard deviation is 27


def test_a_payload_above_the_cap_is_dropped_and_counted_never_cut(tmp_path: Path):
    c = cap.Capturer()
    s = settings(tmp_path, max_payload_bytes=10)
    c.offer(s, b"x" * 11, "text/csv", b"1", "text/csv", 200, 1.0, "1")
    c.offer(s, b"1", "text/csv", b"y" * 11, "text/csv", 200, 1.0, "1")
    c.offer(s, b"x" * 10, "text/csv", b"1", "text/csv", 200, 1.0, "1")
    c.flush()
    assert c.dropped == 2
    [r] = records(tmp_path)
    assert r["captureData"]["endpointInput"]["data"] == "x" * 10  # type: ignore[index]


def test_files_rotate_at_their_size_limit(tmp_path: Path):
    c = cap.Capturer()
    s = settings(tmp_path, rotate_bytes=2048)
    for i in range(40):
        c.offer(s, json.dumps([i] * 20).encode(), "application/json", b"[0]", "application/json", 200, 1.0, "1")
        if i % 7 == 0:
            c.flush()  # several batches, as the writer thread writes them
    c.flush()
    files = list((tmp_path / "capture").rglob("*.jsonl"))
    assert len(files) > 1 and all(f.stat().st_size <= 2048 for f in files)
    assert sorted(r["captureData"]["endpointInput"]["data"] for r in records(tmp_path)) == sorted(  # type: ignore[index]
        json.dumps([i] * 20) for i in range(40)
    )


def test_the_writer_thread_writes_without_a_flush(tmp_path: Path):
    import time

    c = cap.Capturer()
    c.offer(settings(tmp_path), b"[1]", "application/json", b"[2]", "application/json", 200, 1.0, "1")
    deadline = time.monotonic() + 5
    while not records(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(records(tmp_path)) == 1


@pytest.mark.parametrize(
    ("capture", "message"),
    [
        ("{percent: 101}", "is a whole percentage: 0 to 100"),
        ("{destination: 's3://b/p'}", "only applies to an endpoint of a service"),
        ("{csv_content_types: ['text/csv; charset=utf-8']}", "is not a content type such as text/csv"),
        ("{csv_content_types: []}", "give 1 to 10 content types"),
        ("{rotate_bytes: 10}", "expected a whole number >= 1024"),
        ("{sampling: 5}", "sampling"),
    ],
)
def test_capture_config_refuses_what_cannot_work(tmp_path: Path, capture: str, message: str):
    from mlops_ci import config
    from mlops_ci.errors import ConfigError

    f = tmp_path / "mlops-ci.yaml"
    f.write_text(f"project: x\nendpoints:\n  - name: production\n    capture: {capture}\n")
    with pytest.raises(ConfigError) as err:
        config.load(f, {})
    assert message in str(err.value) and "endpoints.0.capture" in str(err.value)


def test_capture_true_is_the_defaults(tmp_path: Path):
    from mlops_ci import config

    f = tmp_path / "mlops-ci.yaml"
    f.write_text("project: x\nendpoints:\n  - name: a\n    capture: true\n  - name: b\n    capture: false\n")
    a, b = config.load(f, {}).endpoints
    assert a.capture == config.CaptureConfig() and a.capture.percent == 20 and b.capture is None
