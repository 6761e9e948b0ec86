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
