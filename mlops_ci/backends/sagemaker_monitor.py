"""SageMaker Model Monitor: a data-quality monitoring schedule on a SageMaker endpoint mlops-ci
deployed, with the baseline of the served run's training channel.

The requests have the shapes of the SageMaker Python SDK's DefaultModelMonitor
(sagemaker/model_monitor/model_monitoring.py): `suggest_baseline` is a CreateProcessingJob of the
Model Monitor analyzer image, told what to do by its Environment (`dataset_format`,
`dataset_source`, `output_path`, `publish_cloudwatch_metrics`); `create_monitoring_schedule` is a
CreateDataQualityJobDefinition pointing at the baseline's statistics.json and constraints.json and
the endpoint, then a CreateMonitoringSchedule of type DataQuality. Every write goes through the
verb's Effects sink, so `--dry-run` plans the same requests the real run sends, in its order.

Names are deterministic: the baselining job and the job definition carry the endpoint, the model
version and a digest of their content (a name is never reused for other content); the schedule
is one per endpoint. A re-run finds what the earlier one created: the schedule already on this
job definition is left alone, a completed baselining job is reused. A schedule of an older
version is *updated* to the new job definition (UpdateMonitoringSchedule), not deleted and
created again: its name stays, and with it its execution history and the CloudWatch metrics
(dimension MonitoringSchedule) any alarm watches, and there is no window without a schedule.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._untrusted import inline
from ..config import Config
from ..errors import ConfigError, NotFound, Refused, ServiceRefused
from ..settings.sagemaker import SageMakerEndpointConfig, SageMakerMonitorSchedule
from . import Effects, sagemaker_images
from .aws import Answer, Aws, aws_tags, etags_digest, s3_objects, short_hash, slug, split_s3

if TYPE_CHECKING:
    from ..records import ModelVersion, Run

# The container paths the SDK's DefaultModelMonitor uses (model_monitoring.py: _CONTAINER_BASE_PATH,
# _BASELINE_DATASET_INPUT_NAME, _CONTAINER_OUTPUT_PATH, _CONTAINER_ENDPOINT_INPUT_PATH, _DEFAULT_OUTPUT_NAME)
BASE = "/opt/ml/processing"
DATASET_INPUT = "baseline_dataset_input"
DATASET_PATH = f"{BASE}/input/{DATASET_INPUT}"
OUTPUT_PATH = f"{BASE}/output"
ENDPOINT_PATH = f"{BASE}/input/endpoint"
OUTPUT_NAME = "monitoring_output"
DONE = ("Completed", "Failed", "Stopped")
MAX_ATTEMPTS = 20  # baselining jobs per version and content (a failed one is followed by the next)
HEAD_BYTES = 64 * 1024  # read of a CSV channel's first object, for its header


@dataclass(frozen=True)
class Dataset:
    """The baseline dataset: the served run's channel, as its run recorded it, and its format."""

    channel: str
    uri: str
    digest: str  # the channel's ETags digest (aws.etags_digest), as the run recorded it
    format: dict[str, object]  # the analyzer's dataset_format (the SDK's DatasetFormat.csv / .json)


def dataset_format(keys: list[str], first_line: Callable[[str], str]) -> dict[str, object]:
    """The analyzer's `dataset_format` for a channel of these object keys: CSV (`.csv`; a header when
    no cell of the first line is a number, as the model diff reads a CSV) or JSON lines (`.jsonl`).
    Anything else (Parquet, compressed, mixed files) is refused: the analyzer reads the baseline
    dataset as one format, and the captured traffic it is compared with is CSV or JSON."""
    files = [k for k in keys if not k.endswith("/")]
    kinds = {k.rsplit("/", 1)[-1].rpartition(".")[2].lower() for k in files}
    if kinds == {"csv"}:
        from ..model_diff import is_header

        header = is_header(next(csv.reader([first_line(files[0])]), []))
        # the SDK's DatasetFormat.csv(header, output_columns_position="START")
        return {"csv": {"header": header, "output_columns_position": "START"}}
    if kinds == {"jsonl"}:
        return {"json": {"lines": True}}  # the SDK's DatasetFormat.json(lines=True)
    found = ", ".join(sorted(f".{k}" for k in kinds)) or "no files"
    raise Refused(f"the baseline channel holds {found}; Model Monitor's baseline here is CSV (.csv) or JSON lines "
                  "(.jsonl) files of one kind: point the channel at those")  # fmt: skip


def _plain(answer: Answer | None) -> dict[str, Any] | None:
    """A Describe* answer as a plain mapping (Answer types only the fields other modules read)."""
    return None if answer is None else dict(answer)


class ModelMonitor:
    """The data-quality schedule of one SageMaker endpoint (`schedule`), its requests built by
    pure methods so that the dry run's plan is what the real run sends."""

    def __init__(self, aws: Aws, cfg: Config, ep: SageMakerEndpointConfig, fx: Effects, say: Callable[[str], None]):
        self.aws, self.cfg, self.ep, self.fx, self.say = aws, cfg, ep, fx, say
        self.s = ep.monitor_schedule or SageMakerMonitorSchedule()
        if not aws.cfg.role:
            raise ConfigError("aws.role is not set: the monitoring jobs run as SageMaker's execution role")
        self.role: str = aws.cfg.role
        try:
            self.image = sagemaker_images.model_monitor_uri(aws.region)
        except sagemaker_images.Unknown as exc:
            raise ConfigError(str(exc)) from None

    # -- where things are ------------------------------------------------------------------
    def baseline_uri(self, mv: ModelVersion) -> str:
        return self.aws.s3_uri("monitoring", self.ep.name, f"v{mv.version}", "baseline")

    def reports_uri(self) -> str:
        return self.aws.s3_uri("monitoring", self.ep.name, "reports")

    def schedule_name(self) -> str:
        name = slug(self.ep.name)
        # 63 characters at most: a longer endpoint name keeps a digest of all of it (no two collide)
        return (name if len(name) <= 54 else f"{name[:45]}-{short_hash(name)[:8]}") + "-monitor"

    def job_stem(self, mv: ModelVersion, data: Dataset) -> str:
        """The baselining jobs' names but the attempt: endpoint, version, content digest."""
        h = short_hash(data.uri, data.digest, data.format, self.image, self.role, self._cluster(),
                       self.s.max_runtime_seconds, self.baseline_uri(mv), self._network())  # fmt: skip
        return f"{slug(f'{self.ep.name}-v{mv.version}')[:40]}-baseline-{h}"

    def definition_name(self, mv: ModelVersion, job: str) -> str:
        h = short_hash(job, self.baseline_uri(mv), self.reports_uri(), self.image, self.role, self._cluster(),
                       self.s.max_runtime_seconds, self._network(), self.aws.cfg.kms_key)  # fmt: skip
        return f"{slug(f'{self.ep.name}-v{mv.version}')[:40]}-dq-{h}"

    # -- the baseline dataset --------------------------------------------------------------
    def dataset(self, run: Run, channel: str) -> Dataset:
        """The run's channel as it recorded it, checked to hold what the run trained on."""
        rec = run.data.get(channel)
        if not rec or not rec.get("uri", "").startswith("s3://"):
            have = ", ".join(sorted(run.data)) or "none"
            raise NotFound(f"run {run.run_id} recorded no S3 channel '{channel}' (its channels: {have}) to baseline "
                           "the endpoint's traffic on; set monitoring.channel to one it has")  # fmt: skip
        uri = rec["uri"]
        objects = s3_objects(self.aws, uri, f"list the baseline channel {uri}")
        digest = etags_digest(objects)
        if not objects or digest != rec.get("s3_etags_sha256"):
            raise Refused(f"channel '{channel}' ({uri}) is not what run {run.run_id} trained on (its objects changed "
                          "since): a baseline of it would not describe the model; deploy a version trained on "
                          "the current data")  # fmt: skip
        fmt = dataset_format([k for k, _, _ in objects], lambda key: self._first_line(uri, key))
        return Dataset(channel, uri, digest, fmt)

    def _first_line(self, uri: str, key: str) -> str:
        bucket, _ = split_s3(uri)
        what = f"read the first line of s3://{bucket}/{key}"
        span = f"bytes=0-{HEAD_BYTES - 1}"
        got: dict[str, Any] = dict(self.aws.call("s3", "get_object", what, Bucket=bucket, Key=key, Range=span))
        try:
            head: bytes = got["Body"].read()
        except self.aws.errors as exc:
            raise self.aws.error(exc, what) from None
        return head.decode("utf-8", "replace").splitlines()[0] if head.strip() else ""

    # -- requests --------------------------------------------------------------------------
    def _cluster(self) -> dict[str, object]:
        c: dict[str, object] = {"InstanceCount": self.s.instance_count, "InstanceType": self.s.instance_type,
                                "VolumeSizeInGB": self.s.volume_size_gb}  # fmt: skip
        if self.aws.cfg.kms_key:
            c["VolumeKmsKeyId"] = self.aws.cfg.kms_key
        return c

    def _network(self) -> dict[str, object] | None:
        """The training job's VPC, as the endpoint's model gets it (sagemaker_endpoints.model_request)."""
        sm = self.cfg.training.sagemaker
        if sm and (sm.subnets or sm.security_group_ids):
            return {"VpcConfig": {"Subnets": list(sm.subnets), "SecurityGroupIds": list(sm.security_group_ids)}}
        return None

    def _tags(self, mv: ModelVersion) -> list[dict[str, str]]:
        return aws_tags({"mlops-ci:project": self.cfg.project, "mlops-ci:endpoint": self.ep.name,
                         "mlops-ci:version": str(mv.version), "mlops-ci:sha": mv.sha})  # fmt: skip

    def baselining_request(self, mv: ModelVersion, data: Dataset, name: str) -> dict[str, object]:
        """DefaultModelMonitor.suggest_baseline's processing job: the analyzer reads the dataset
        and writes statistics.json and constraints.json to the output."""
        output: dict[str, object] = {"Outputs": [{
            "OutputName": OUTPUT_NAME, "AppManaged": False,
            "S3Output": {"S3Uri": self.baseline_uri(mv), "LocalPath": OUTPUT_PATH, "S3UploadMode": "EndOfJob"},
        }]}  # fmt: skip
        if self.aws.cfg.kms_key:
            output["KmsKeyId"] = self.aws.cfg.kms_key
        req: dict[str, object] = {
            "ProcessingJobName": name,
            "ProcessingInputs": [{
                "InputName": DATASET_INPUT, "AppManaged": False,
                "S3Input": {"S3Uri": data.uri, "LocalPath": DATASET_PATH, "S3DataType": "S3Prefix",
                            "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated"},
            }],
            "ProcessingOutputConfig": output,
            "ProcessingResources": {"ClusterConfig": self._cluster()},
            "StoppingCondition": {"MaxRuntimeInSeconds": self.s.max_runtime_seconds},
            "AppSpecification": {"ImageUri": self.image},
            "Environment": {
                "dataset_format": json.dumps(data.format),
                "dataset_source": DATASET_PATH,
                "output_path": OUTPUT_PATH,
                "publish_cloudwatch_metrics": "Disabled",  # the SDK: "Only supported for monitoring schedules"
            },
            "RoleArn": self.role,
            "Tags": self._tags(mv),
        }  # fmt: skip
        return self._networked(req)

    def definition_request(self, mv: ModelVersion, name: str, job: str) -> dict[str, object]:
        """DefaultModelMonitor.create_monitoring_schedule's job definition: the endpoint's captured
        traffic against the baseline, the reports (constraint_violations.json) under reports/."""
        base = self.baseline_uri(mv)
        output: dict[str, object] = {"MonitoringOutputs": [{"S3Output": {
            "S3Uri": self.reports_uri(), "LocalPath": OUTPUT_PATH, "S3UploadMode": "Continuous"}}]}  # fmt: skip
        if self.aws.cfg.kms_key:
            output["KmsKeyId"] = self.aws.cfg.kms_key
        req: dict[str, object] = {
            "JobDefinitionName": name,
            "DataQualityBaselineConfig": {"BaseliningJobName": job,
                                          "ConstraintsResource": {"S3Uri": f"{base}/constraints.json"},
                                          "StatisticsResource": {"S3Uri": f"{base}/statistics.json"}},
            "DataQualityAppSpecification": {"ImageUri": self.image,
                                            "Environment": {"publish_cloudwatch_metrics": "Enabled"}},
            "DataQualityJobInput": {"EndpointInput": {"EndpointName": self.ep.name, "LocalPath": ENDPOINT_PATH,
                                                      "S3InputMode": "File",
                                                      "S3DataDistributionType": "FullyReplicated"}},
            "DataQualityJobOutputConfig": output,
            "JobResources": {"ClusterConfig": self._cluster()},
            "RoleArn": self.role,
            "StoppingCondition": {"MaxRuntimeInSeconds": self.s.max_runtime_seconds},
            "Tags": self._tags(mv),
        }  # fmt: skip
        return self._networked(req)

    def _networked(self, req: dict[str, object]) -> dict[str, object]:
        """A job's request with the endpoint's NetworkConfig, when it has one."""
        network = self._network()
        return {**req, "NetworkConfig": network} if network else req

    def schedule_config(self, definition: str) -> dict[str, object]:
        return {"ScheduleConfig": {"ScheduleExpression": self.s.cron}, "MonitoringJobDefinitionName": definition,
                "MonitoringType": "DataQuality"}  # fmt: skip

    # -- the sequence ----------------------------------------------------------------------
    def schedule(self, mv: ModelVersion, run: Run, channel: str) -> dict[str, object]:
        """Baseline (reused when done), job definition (once per content), schedule (created,
        updated to this version, or left alone). Returns what it did."""
        name = self.schedule_name()
        current = _plain(self.aws.describe("describe_monitoring_schedule", f"describe monitoring schedule {name}",
                                                MonitoringScheduleName=name))  # fmt: skip
        data = self.dataset(run, channel)
        stem = self.job_stem(mv, data)
        job, reused = self.baselining_job(mv, data, stem)
        definition = self.definition_name(mv, job)
        out: dict[str, object] = {
            "endpoint": self.ep.name, "version": mv.version, "schedule": name, "job_definition": definition,
            "cron": self.s.cron, "baseline": {"job": job, "reused": reused, "uri": self.baseline_uri(mv),
                                              "channel": data.channel, "format": data.format},
            "reports": self.reports_uri(),
        }  # fmt: skip
        config: dict[str, Any] = current.get("MonitoringScheduleConfig", {}) if current else {}
        want = self.schedule_config(definition)
        same = (
            config.get("MonitoringJobDefinitionName") == definition
            and config.get("MonitoringType") == "DataQuality"
            and (config.get("ScheduleConfig") or {}).get("ScheduleExpression") == self.s.cron
        )
        if current and same:
            state = str(current.get("MonitoringScheduleStatus", ""))
            self.say(f"{self.ep.name}: monitoring schedule {name} already runs v{mv.version}'s job definition"
                     + ("" if state in ("Scheduled", "Pending", "") else f", but it is {state}: start it again "
                        f"(aws sagemaker start-monitoring-schedule --monitoring-schedule-name {name})"))  # fmt: skip
            return {**out, "status": "unchanged", "schedule_status": state}
        if self.aws.describe("describe_data_quality_job_definition", f"describe job definition {definition}",
                             JobDefinitionName=definition) is None:  # fmt: skip
            req = self.definition_request(mv, definition, job)
            self.fx("sagemaker", "CreateDataQualityJobDefinition",
                    lambda: self._create("create_data_quality_job_definition", req, f"job definition {definition}"),
                    None, request=req)  # fmt: skip
        sched: dict[str, object] = {"MonitoringScheduleName": name, "MonitoringScheduleConfig": want}
        if current is None:
            tags = aws_tags({"mlops-ci:project": self.cfg.project, "mlops-ci:endpoint": self.ep.name})
            create: dict[str, object] = {**sched, "Tags": tags}
            self.fx("sagemaker", "CreateMonitoringSchedule",
                    lambda: self._create("create_monitoring_schedule", create, f"monitoring schedule {name}"), None,
                    request=create)  # fmt: skip
            self.say(f"{self.ep.name}: monitoring schedule {name} ({self.s.cron}) on v{mv.version}")
            return {**out, "status": "created"}
        was = config.get("MonitoringJobDefinitionName")
        self.fx("sagemaker", "UpdateMonitoringSchedule",
                lambda: self.aws.call("sagemaker", "update_monitoring_schedule",
                                      f"update monitoring schedule {name}", **sched),
                None, request=sched)  # fmt: skip
        self.say(f"{self.ep.name}: monitoring schedule {name} moved from {was} to {definition}")
        return {**out, "status": "updated", "previous_job_definition": was}

    def _create(self, op: str, req: dict[str, object], what: str) -> None:
        try:
            getattr(self.aws.client("sagemaker"), op)(**req)
        except self.aws.errors as exc:
            if self.aws.code(exc) != "ResourceInUse":  # created meanwhile: same name, same content
                raise self.aws.error(exc, f"create {what}") from None

    def baselining_job(self, mv: ModelVersion, data: Dataset, stem: str) -> tuple[str, bool]:
        """(the job whose output is the baseline, reused): the last completed attempt, or the one
        running (waited for), or a new one after a failed one."""
        last: dict[str, Any] | None = None
        free: int | None = None  # the first attempt number not taken
        for attempt in range(1, MAX_ATTEMPTS + 1):
            d = _plain(self.aws.describe("describe_processing_job", "describe a baselining job",
                                         ProcessingJobName=f"{stem}-{attempt}"))  # fmt: skip
            if d is None:
                free = attempt
                break
            last = d
        if last is not None and last["ProcessingJobStatus"] == "Completed":
            name = str(last["ProcessingJobName"])
            if not self._missing(mv):
                self.say(f"{self.ep.name}: reusing baselining job {name}")
                return name, True
            self.say(f"{self.ep.name}: the output of baselining job {name} is gone; baselining again")
        if last is not None and last["ProcessingJobStatus"] not in DONE:
            name = str(last["ProcessingJobName"])
        else:
            if free is None:
                raise Refused(f"{MAX_ATTEMPTS} baselining jobs {stem}-N ran for v{mv.version} without a usable "
                              "baseline; read their FailureReason in SageMaker, fix the cause (data, role, instance "
                              "type), then change a monitor_schedule setting to start afresh")  # fmt: skip
            name = f"{stem}-{free}"
            req = self.baselining_request(mv, data, name)
            self.fx("sagemaker", "CreateProcessingJob",
                    lambda: self._create("create_processing_job", req, f"baselining job {name}"), None,
                    request=req)  # fmt: skip
        self.fx("sagemaker", "DescribeProcessingJob", lambda: self._wait(mv, name), None,
                request={"ProcessingJobName": name}, until="Completed")  # fmt: skip
        return name, False

    def _wait(self, mv: ModelVersion, name: str) -> None:
        """Poll the baselining job until it ends, bounded by its own MaxRuntimeInSeconds (SageMaker
        stops it then) plus time to start and upload."""
        limit = self.s.max_runtime_seconds + 1800
        deadline = time.monotonic() + limit
        status = ""
        while True:
            d = _plain(self.aws.describe("describe_processing_job", f"describe baselining job {name}",
                                         ProcessingJobName=name))  # fmt: skip
            if d is None:
                raise NotFound(f"baselining job {name} disappeared while waiting for it; run again")
            if d["ProcessingJobStatus"] != status:
                status = d["ProcessingJobStatus"]
                self.say(f"{self.ep.name}: baselining job {name}: {status}")
            if status == "Completed":
                self._check_baseline(mv, name)
                return
            if status in DONE:
                reason = inline(str(d.get("FailureReason") or d.get("ExitMessage") or "no reason given"))
                raise ServiceRefused(f"baselining job {name} ended {status}: {reason}; fix the cause, then run again "
                                     "(a new attempt is started)")  # fmt: skip
            if time.monotonic() > deadline:
                raise ServiceRefused(f"baselining job {name} still {status} after {limit}s; it keeps going in "
                                     "SageMaker: run again later to pick it up")  # fmt: skip
            time.sleep(self.aws.cfg.poll_seconds)

    def _missing(self, mv: ModelVersion) -> list[str]:
        base = self.baseline_uri(mv)
        files = (f"{base}/statistics.json", f"{base}/constraints.json")
        return [f for f in files if self.aws.s3_head(f) is None]

    def _check_baseline(self, mv: ModelVersion, job: str) -> None:
        missing = self._missing(mv)
        if missing:
            raise NotFound(f"baselining job {job} completed without writing {', '.join(missing)}; read its logs "
                           "(CloudWatch /aws/sagemaker/ProcessingJobs), fix the dataset, then run again")  # fmt: skip
