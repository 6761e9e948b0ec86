"""`endpoints[].monitor_schedule` (mlops_ci/settings/sagemaker.py): what it parses to, and the values
the service model (or Model Monitor's schedules) refuse, refused at config time with the key path;
the Model Monitor analyzer image table against the SageMaker SDK's own `image_uris.retrieve`."""

from __future__ import annotations

import pytest

from mlops_ci import config
from mlops_ci.backends import sagemaker_images as si
from mlops_ci.errors import ConfigError
from mlops_ci.settings.sagemaker import PROCESSING_INSTANCE_TYPES, SageMakerEndpointConfig, SageMakerMonitorSchedule

HEAD = """\
project: churn
aws: {role: "arn:aws:iam::123456789012:role/x", bucket: ml-bucket, region: us-east-1}
serving: {image_uri: "1.dkr.ecr.us-east-1.amazonaws.com/x:1"}
endpoints:
  - name: churn-prod
    backend: {backend}
"""


def parse(lines: str, backend: str = "sagemaker") -> config.Config:
    return config.parse(HEAD.replace("{backend}", backend) + lines, "mlops-ci.yaml", "/repo")


def schedule_of(lines: str) -> SageMakerMonitorSchedule | None:
    ep = parse(lines).endpoints[0]
    assert isinstance(ep, SageMakerEndpointConfig)
    return ep.monitor_schedule


def test_true_gives_the_defaults_and_a_mapping_its_values():
    capture = "    capture: {percent: 20}\n"
    assert schedule_of(capture) is None
    assert schedule_of(capture + "    monitor_schedule: false\n") is None
    assert schedule_of(capture + "    monitor_schedule: true\n") == SageMakerMonitorSchedule(
        cron="cron(0 * ? * * *)", instance_type="ml.m5.xlarge", instance_count=1, volume_size_gb=20,
        max_runtime_seconds=3600)  # fmt: skip
    got = schedule_of(capture + "    monitor_schedule: {cron: 'cron(0 0/6 ? * * *)', instance_type: ml.c5.xlarge, "
                      "instance_count: 2, volume_size_gb: 50, max_runtime_seconds: 1800}\n")  # fmt: skip
    assert got == SageMakerMonitorSchedule("cron(0 0/6 ? * * *)", "ml.c5.xlarge", 2, 50, 1800)
    for cron in ("cron(0 * ? * * *)", "cron(0 8 ? * * *)", "cron(0 23 ? * * *)", "cron(0 1/12 ? * * *)"):
        assert schedule_of(capture + f"    monitor_schedule: {{cron: '{cron}'}}\n").cron == cron  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("setting", "path", "message"),
    [
        ("{cron: NOW}", "monitor_schedule.cron", "is not a schedule Model Monitor takes"),
        ("{cron: 'cron(*/5 * * * ? *)'}", "monitor_schedule.cron", "hourly 'cron(0 * ? * * *)'"),
        ("{cron: 'cron(0 24 ? * * *)'}", "monitor_schedule.cron", "is not a schedule"),
        ("{cron: 'rate(1 hour)'}", "monitor_schedule.cron", "is not a schedule"),
        ("{instance_type: ml.m5.huge}", "monitor_schedule.instance_type", "ProcessingInstanceType"),
        ("{instance_type: ml.inf1.xlarge}", "monitor_schedule.instance_type", "e.g. ml.m5.xlarge"),
        ("{instance_count: 0}", "monitor_schedule.instance_count", ">= 1"),
        ("{instance_count: 101}", "monitor_schedule.instance_count", "1-100"),
        ("{volume_size_gb: 16385}", "monitor_schedule.volume_size_gb", "1-16384"),
        ("{max_runtime_seconds: 86401}", "monitor_schedule.max_runtime_seconds", "1-86400"),
        # botocore's MonitoringStoppingCondition: not longer than the schedule's interval
        ("{max_runtime_seconds: 3601}", "monitor_schedule.max_runtime_seconds", "3600 s for 'cron(0 * ? * * *)'"),
        (
            "{cron: 'cron(0 0/6 ? * * *)', max_runtime_seconds: 21601}",
            "monitor_schedule.max_runtime_seconds",
            "21600 s",
        ),
        ("{max_runtime_seconds: 1.5}", "monitor_schedule.max_runtime_seconds", "whole number"),
        ("{crom: x}", "monitor_schedule", "crom"),
        ("yes please", "monitor_schedule", ""),
    ],
)
def test_values_sagemaker_refuses_are_refused_with_their_key_path(setting: str, path: str, message: str):
    with pytest.raises(ConfigError) as err:
        parse(f"    capture: {{percent: 20}}\n    monitor_schedule: {setting}\n")
    text = str(err.value)
    assert f"endpoints.0.{path}" in text and message in text and "\n" not in text


def test_it_needs_capture_and_a_sagemaker_endpoint():
    with pytest.raises(ConfigError, match=r"monitor_schedule: needs the endpoint's `capture:`.*add capture"):
        parse("    monitor_schedule: true\n")
    with pytest.raises(ConfigError, match="monitor_schedule"):
        parse("    capture: {percent: 20}\n    monitor_schedule: true\n", backend="local")


def test_the_instance_types_are_the_service_models():
    """Every instance type accepted is one botocore's model of ProcessingInstanceType (what the job
    definition's ClusterConfig takes) accepts, and the model's are all accepted."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    cluster = model.shape_for("MonitoringClusterConfig").members["InstanceType"]
    assert set(cluster.enum) == PROCESSING_INSTANCE_TYPES


def test_the_analyzer_image_is_the_sdks_in_every_region():
    image_uris = pytest.importorskip(
        "sagemaker.core.image_uris", reason="the SageMaker SDK (sagemaker-core, in the dev extra) is not installed"
    )
    import json
    from pathlib import Path

    table = json.loads((Path(image_uris.__file__).parent / "image_uri_config" / "model-monitor.json").read_text())
    sdk_regions = set(table["versions"][""]["registries"])
    assert sdk_regions == set(si.MODEL_MONITOR_ACCOUNTS)  # the same regions, none left out
    for region in sorted(sdk_regions):
        assert si.model_monitor_uri(region) == image_uris.retrieve("model-monitor", region), region
    with pytest.raises(si.Unknown, match="not listed for region xx-nowhere-1"):
        si.model_monitor_uri("xx-nowhere-1")
