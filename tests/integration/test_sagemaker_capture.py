"""Data capture on a SageMaker endpoint: the endpoint config's DataCaptureConfig, from the same
`capture:` a local endpoint reads, checked against botocore's service model by the fake."""

from __future__ import annotations

import json

from tests.fakes.sagemaker import FakeSageMaker
from tests.integration import test_sagemaker as base
from tests.integration.test_sagemaker import BUCKET, Repo, sm_config

fake, repo = base.fake, base.repo  # its fixtures: the fake SageMaker, a repository of a project on it


def test_the_endpoint_config_captures_as_configured(repo: Repo, fake: FakeSageMaker):
    text = sm_config().replace("    deployment: {", "    capture: {percent: 35, json_content_types: [application/json, "
                               "application/jsonlines]}\n    deployment: {")  # fmt: skip
    assert "capture:" in text
    (repo.path / "mlops-ci.yaml").write_text(text)
    repo.commit("capture")
    base._released(repo, "v1.0.0")
    plan = json.loads(repo.ok("deploy", "v1.0.0", "--dry-run", "--json"))["plan"]
    [planned] = [p["request"] for p in plan if p["action"] == "CreateEndpointConfig"]
    repo.ok("deploy", "v1.0.0")
    [config] = fake.calls("CreateEndpointConfig")
    assert config == planned
    assert config["DataCaptureConfig"] == {
        "EnableCapture": True,
        "InitialSamplingPercentage": 35,
        "DestinationS3Uri": f"s3://{BUCKET}/mlops-ci/capture",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"],
                                     "JsonContentTypes": ["application/json", "application/jsonlines"]},
    }  # fmt: skip

    # another sampling percentage is another endpoint config (a name is never reused for other content)
    (repo.path / "mlops-ci.yaml").write_text(text.replace("percent: 35", "percent: 5"))
    repo.commit("less capture")
    base._released(repo, "v1.1.0")
    repo.ok("deploy", "v1.1.0")
    first, second = fake.calls("CreateEndpointConfig")
    assert second["DataCaptureConfig"]["InitialSamplingPercentage"] == 5
    assert second["EndpointConfigName"] != first["EndpointConfigName"]


def test_local_only_capture_keys_are_refused_on_sagemaker(repo: Repo):
    text = sm_config().replace("    deployment: {", "    capture: {rotate_bytes: 4096}\n    deployment: {")
    (repo.path / "mlops-ci.yaml").write_text(text)
    proc = repo.run("config", "check")
    assert proc.returncode == 2 and "capture.rotate_bytes: only applies to a local endpoint" in proc.stderr


def _record(row: list[float], answer: float, when: float) -> str:
    """One record as SageMaker's Data Capture writes it for a CSV request (AWS docs, "View Data
    Capture data": captureData.endpointInput/endpointOutput with observedContentType, mode, data,
    encoding; eventMetadata.eventId and inferenceTime; eventVersion "0")."""
    import time
    import uuid

    return json.dumps({
        "captureData": {
            "endpointInput": {"observedContentType": "text/csv", "mode": "INPUT",
                              "data": ",".join(map(str, row)), "encoding": "CSV"},
            "endpointOutput": {"observedContentType": "text/csv; charset=utf-8", "mode": "OUTPUT",
                               "data": str(answer), "encoding": "CSV"},
        },
        "eventMetadata": {"eventId": str(uuid.uuid4()),
                          "inferenceTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(when))},
        "eventVersion": "0",
    })  # fmt: skip


def test_monitor_reads_a_sagemaker_endpoints_capture_from_s3(repo: Repo, fake: FakeSageMaker):
    import random
    import time

    rng = random.Random(3)
    rows = [[round(rng.gauss(0, 1), 3), round(rng.gauss(5, 2), 3)] for _ in range(300)]
    fake.s3.put_object(Bucket="ml-data", Key="rows/part-0.csv",  # type: ignore[attr-defined]
                       Body=("f0,f1\n" + "".join(f"{a},{b}\n" for a, b in rows)).encode())  # fmt: skip
    text = sm_config().replace("    deployment: {", "    capture: {percent: 100}\n    deployment: {")
    (repo.path / "mlops-ci.yaml").write_text(text + "monitoring: {min_records: 50}\n")
    # the fake's training job writes its own model.json: a model that reads only what it holds
    inference = (repo.path / "inference.py").read_text()
    inference = inference.replace('if model["broken"]:', 'if model.get("broken"):')
    (repo.path / "inference.py").write_text(inference.replace('model["scale"]', 'model.get("scale", 1.0)'))
    repo.commit("monitor the endpoint")
    trained = repo.run("train")
    assert "baseline statistics of 300 row(s)" in trained.stderr, trained.stderr
    base._released(repo, "v1.0.0")
    repo.ok("deploy", "v1.0.0")
    now = time.time()

    def put(when: float, lines: list[str], name: str) -> None:
        hour = time.strftime("%Y/%m/%d/%H", time.gmtime(when))
        fake.s3.put_object(Bucket=BUCKET, Key=f"mlops-ci/capture/production/AllTraffic/{hour}/{name}.jsonl",  # type: ignore[attr-defined]
                           Body="\n".join(lines).encode())  # fmt: skip

    # three days ago, unshifted (outside the window); in the last hour, f0 moved by 2 standard deviations
    put(now - 3 * 86_400, [_record([rng.gauss(0, 1), rng.gauss(5, 2)], 1.0, now - 3 * 86_400) for _ in range(80)], "a")
    put(now - 60, [_record([round(rng.gauss(2, 1), 3), round(rng.gauss(5, 2), 3)], 1.0, now - 60)
                   for _ in range(120)], "b")  # fmt: skip
    proc = repo.run("monitor", "production", "--json")
    assert proc.returncode == 16, proc.stderr
    report = json.loads(proc.stdout)
    assert report["records"] == 120 and report["rows"] == 120
    assert report["features"]["f0"]["drift"] and not report["features"]["f1"]["drift"]
    # a week's window takes the old file's records too
    assert json.loads(repo.run("monitor", "production", "--json", "--since", "7d").stdout)["records"] == 200
