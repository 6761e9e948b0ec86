"""A SageMaker Model Monitor data-quality schedule on a SageMaker endpoint (`monitor --schedule`,
mlops_ci/verbs/monitor_schedule.py), against the fake SageMaker, which checks every request
against botocore's service model. The verb is called in this process as the CLI would call it,
with the test's AWS environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import aws_model
from tests.fakes.sagemaker import REGION, FakeSageMaker
from tests.integration import test_sagemaker as base
from tests.integration.test_sagemaker import BUCKET, DATA, ROLE, Repo, sm_config

fake, repo = base.fake, base.repo  # its fixtures: the fake SageMaker, a repository of a project on it

MONITOR = "    capture: {percent: 20}\n    monitor_schedule: {instance_type: ml.m5.large, volume_size_gb: 10}\n"
ANALYZER = f"156813124566.dkr.ecr.{REGION}.amazonaws.com/sagemaker-model-monitor-analyzer"
CREATES = ["CreateProcessingJob", "CreateDataQualityJobDefinition", "CreateMonitoringSchedule",
           "UpdateMonitoringSchedule"]  # fmt: skip


def monitored(quality: float = 0.9, extra: str = MONITOR) -> str:
    text = sm_config(quality=quality).replace("    deployment: {", extra + "    deployment: {")
    assert extra in text
    return text


def released(repo: Repo, tag: str, quality: float = 0.9) -> None:
    (repo.path / "mlops-ci.yaml").write_text(monitored(quality))
    repo.commit(f"release {tag}")
    base._released(repo, tag)
    repo.ok("deploy", tag)


def schedule(repo: Repo, *, dry_run: bool = False) -> dict[str, Any]:
    """`mlops-ci monitor production --schedule --json [--dry-run]`: its result (with the dry run's
    plan), or an error as {"exit": code, "error": message}."""
    proc = repo.run("monitor", "production", "--schedule", "--json", *(["--dry-run"] if dry_run else []))
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.startswith("mlops-ci: error: ")]
        assert len(lines) == 1, proc.stderr
        return {"exit": proc.returncode, "error": lines[0].removeprefix("mlops-ci: error: ")}
    doc = json.loads(proc.stdout)
    return {**doc["result"], "plan": doc["plan"]} if dry_run else doc


def creates(fake: FakeSageMaker) -> list[str]:
    return [op for op in fake.mutating() if op in CREATES]


def test_dry_run_plans_the_four_requests_the_real_run_sends(repo: Repo, fake: FakeSageMaker):
    released(repo, "v1.0.0")
    before = len(fake.mutating())
    out = schedule(repo, dry_run=True)
    assert out.get("status") == "created", out
    assert len(fake.mutating()) == before  # a dry run reads only
    plan = [p for p in out["plan"] if p["target"] == "sagemaker"]
    assert [p["action"] for p in plan] == ["CreateProcessingJob", "DescribeProcessingJob",
                                           "CreateDataQualityJobDefinition", "CreateMonitoringSchedule"]  # fmt: skip
    for p in plan:  # each one as SageMaker would take it
        assert aws_model.violations("sagemaker", p["action"], p["request"]) == [], p

    job, poll, definition, sched = (p["request"] for p in plan)
    uri = f"s3://{BUCKET}/mlops-ci/monitoring/production/v1/baseline"
    assert job["AppSpecification"] == {"ImageUri": ANALYZER}
    assert job["ProcessingInputs"][0]["S3Input"]["S3Uri"] == DATA
    assert job["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] == uri
    csv_format = {"csv": {"header": False, "output_columns_position": "START"}}
    assert json.loads(job["Environment"]["dataset_format"]) == csv_format
    assert job["Environment"]["dataset_source"] == job["ProcessingInputs"][0]["S3Input"]["LocalPath"]
    assert job["Environment"]["output_path"] == job["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["LocalPath"]
    assert job["ProcessingResources"]["ClusterConfig"] == {"InstanceCount": 1, "InstanceType": "ml.m5.large",
                                                           "VolumeSizeInGB": 10}  # fmt: skip
    assert job["RoleArn"] == definition["RoleArn"] == ROLE
    assert job["NetworkConfig"] == {"VpcConfig": {"Subnets": ["subnet-1"], "SecurityGroupIds": ["sg-1"]}}
    assert poll == {"ProcessingJobName": job["ProcessingJobName"]}
    assert definition["DataQualityBaselineConfig"] == {
        "BaseliningJobName": job["ProcessingJobName"], "ConstraintsResource": {"S3Uri": f"{uri}/constraints.json"},
        "StatisticsResource": {"S3Uri": f"{uri}/statistics.json"}}  # fmt: skip
    assert definition["DataQualityJobInput"]["EndpointInput"]["EndpointName"] == "production"
    reports = definition["DataQualityJobOutputConfig"]["MonitoringOutputs"][0]["S3Output"]["S3Uri"]
    assert reports == f"s3://{BUCKET}/mlops-ci/monitoring/production/reports"
    assert sched["MonitoringScheduleConfig"] == {"ScheduleConfig": {"ScheduleExpression": "cron(0 * ? * * *)"},
                                                 "MonitoringJobDefinitionName": definition["JobDefinitionName"],
                                                 "MonitoringType": "DataQuality"}  # fmt: skip

    out = schedule(repo)
    assert out["status"] == "created", out
    assert creates(fake) == ["CreateProcessingJob", "CreateDataQualityJobDefinition", "CreateMonitoringSchedule"]
    for p in plan:
        if p["action"].startswith("Create"):
            assert fake.calls(p["action"]) == [p["request"]]
    stats = json.loads(fake.s3.get_object(Bucket=BUCKET, Key="mlops-ci/monitoring/production/v1/baseline/"
                                          "statistics.json")["Body"].read())  # type: ignore[attr-defined]  # fmt: skip
    assert stats["dataset"]["item_count"] == 3 and stats["features"][0]["name"] == "_c0"


def test_a_second_run_is_unchanged_and_a_new_version_updates_the_schedule(repo: Repo, fake: FakeSageMaker):
    released(repo, "v1.0.0")
    first = schedule(repo)
    assert first["status"] == "created", first
    n = len(fake.requests)
    again = schedule(repo)
    assert again["status"] == "unchanged" and again["job_definition"] == first["job_definition"]
    assert not [op for op, _ in fake.requests[n:] if op in CREATES]
    again = schedule(repo, dry_run=True)
    assert again["status"] == "unchanged" and [p for p in again["plan"] if p["target"] == "sagemaker"] == []

    released(repo, "v1.1.0", quality=0.95)
    plan = [p for p in schedule(repo, dry_run=True)["plan"] if p["target"] == "sagemaker"]
    assert [p["action"] for p in plan] == ["CreateProcessingJob", "DescribeProcessingJob",
                                           "CreateDataQualityJobDefinition", "UpdateMonitoringSchedule"]  # fmt: skip
    for p in plan:
        assert aws_model.violations("sagemaker", p["action"], p["request"]) == [], p
    out = schedule(repo)
    assert out["status"] == "updated" and out["previous_job_definition"] == first["job_definition"]
    assert out["version"] == 2 and out["schedule"] == first["schedule"]  # one schedule per endpoint: updated
    (update,) = fake.calls("UpdateMonitoringSchedule")
    assert update == plan[-1]["request"]
    assert update["MonitoringScheduleConfig"]["MonitoringJobDefinitionName"] == out["job_definition"]
    assert "-v2-" in out["job_definition"] and "/v2/baseline" in out["baseline"]["uri"]
    assert len(fake.calls("CreateMonitoringSchedule")) == 1
    assert fake.client.describe_monitoring_schedule(MonitoringScheduleName=out["schedule"])[  # type: ignore[attr-defined]
        "MonitoringScheduleConfig"]["MonitoringJobDefinitionName"] == out["job_definition"]  # fmt: skip


def test_a_failed_baselining_job_names_its_reason_and_the_next_run_starts_another(repo: Repo, fake: FakeSageMaker):
    released(repo, "v1.0.0")
    fake.baseline_failure = "ClientError: Cannot read the dataset: no columns"
    out = schedule(repo)
    assert out["exit"] == 15 and "Cannot read the dataset: no columns" in out["error"]
    assert not fake.calls("CreateDataQualityJobDefinition") and not fake.calls("CreateMonitoringSchedule")
    fake.baseline_failure = None
    out = schedule(repo)
    assert out["status"] == "created", out
    first, second = (c["ProcessingJobName"] for c in fake.calls("CreateProcessingJob"))
    assert first.endswith("-1") and second.endswith("-2") and first[:-2] == second[:-2]
    assert out["baseline"]["job"] == second


def test_a_completed_baseline_is_reused_and_missing_baseline_files_are_said(repo: Repo, fake: FakeSageMaker):
    released(repo, "v1.0.0")
    fake.baseline_writes = False
    out = schedule(repo)
    assert out["exit"] == 4 and "statistics.json" in out["error"] and "completed without writing" in out["error"]
    assert not fake.calls("CreateMonitoringSchedule")
    fake.baseline_writes = True  # the output gone: baselined again, then that job is reused
    out = schedule(repo)
    assert out["status"] == "created" and out["baseline"]["reused"] is False
    assert len(fake.calls("CreateProcessingJob")) == 2
    fake.s3.delete_object(Bucket=BUCKET, Key="mlops-ci/monitoring/production/v1/baseline/constraints.json")  # type: ignore[attr-defined]
    fake.job_definitions.clear()
    fake.schedules.clear()  # as if deleted in the console: made again, on a new baseline
    out = schedule(repo)
    assert out["status"] == "created" and len(fake.calls("CreateProcessingJob")) == 3


def test_a_channel_changed_since_training_is_refused(repo: Repo, fake: FakeSageMaker):
    released(repo, "v1.0.0")
    fake.s3.put_object(Bucket="ml-data", Key="rows/part-0.csv", Body=b"a,b\n1,2\n")  # type: ignore[attr-defined]
    out = schedule(repo)
    assert out["exit"] == 5 and "is not what run" in out["error"] and DATA in out["error"]
    assert creates(fake) == []


def test_a_header_row_and_json_lines_set_the_dataset_format(tmp_path: Path):
    from mlops_ci.backends.sagemaker_monitor import dataset_format
    from mlops_ci.errors import Refused

    assert dataset_format(["d/a.csv", "d/b.csv"], lambda k: "age,city,score") == {
        "csv": {"header": True, "output_columns_position": "START"}}  # fmt: skip
    assert dataset_format(["d/a.csv"], lambda k: "3,Paris,0.5")["csv"]["header"] is False  # type: ignore[index]
    assert dataset_format(["d/", "d/a.jsonl"], lambda k: "{}") == {"json": {"lines": True}}
    for keys in (["d/a.parquet"], ["d/a.csv", "d/b.jsonl"], ["d/a.csv.gz"], []):
        with pytest.raises(Refused, match="CSV .* or JSON lines"):
            dataset_format(keys, lambda k: "")


def test_an_endpoint_without_capture_and_a_local_endpoint_are_refused(repo: Repo, fake: FakeSageMaker):
    base._released(repo, "v1.0.0")
    repo.ok("deploy", "v1.0.0")  # sm_config(): no capture
    out = schedule(repo)
    assert out["exit"] == 2 and "has no `capture:`" in out["error"]
    local = "  - name: production\n    backend: local\n    capture: {percent: 20}\n"
    text = sm_config().split("endpoints:\n")[0] + "endpoints:\n" + local
    (repo.path / "mlops-ci.yaml").write_text(text)
    out = schedule(repo)
    assert out["exit"] == 2 and "is on local" in out["error"] and "without --schedule" in out["error"]
    assert creates(fake) == []


def test_an_endpoint_that_serves_nothing_is_not_found(repo: Repo, fake: FakeSageMaker):
    (repo.path / "mlops-ci.yaml").write_text(monitored())
    repo.commit("monitor")
    out = schedule(repo)
    assert out["exit"] == 4, out
    assert creates(fake) == []


def test_an_endpoint_without_monitor_schedule_is_refused(repo: Repo, fake: FakeSageMaker):
    (repo.path / "mlops-ci.yaml").write_text(monitored(extra="    capture: {percent: 20}\n"))
    repo.commit("capture only")
    out = schedule(repo)
    assert out["exit"] == 2 and "has no `monitor_schedule:`" in out["error"]
    assert "add monitor_schedule: true" in out["error"]


def test_a_run_without_the_monitoring_channel_has_no_baseline(repo: Repo, fake: FakeSageMaker):
    released(repo, "v1.0.0")  # trained on the channel `train` only
    text = monitored().replace(f"    train: {DATA}\n", f"    train: {DATA}\n    holdout: s3://ml-data/holdout/\n")
    (repo.path / "mlops-ci.yaml").write_text(text + "monitoring: {channel: holdout}\n")
    out = schedule(repo)
    assert out["exit"] == 4 and "recorded no S3 channel 'holdout'" in out["error"]
    assert "(its channels: train)" in out["error"]
    assert creates(fake) == []
