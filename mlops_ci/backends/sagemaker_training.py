"""SageMaker training jobs: the CreateTrainingJob request of a script-mode job, its start
(or the attempt already running), the wait with the job's log, and its cost facts."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .._files import LinkOutside, files_under, pack_deterministic
from .._untrusted import guard, inline
from ..config import ChannelSettings, Config
from ..distribution import hyperparameters as distribution_hyperparameters
from ..errors import (
    ConfigError,
    Refused,
)
from . import Context, TrainingResult, TrainingSpec, sagemaker_types
from .local_training import METRICS_FILE, MetricScanner, encode_hyperparameters, read_metrics_file

if TYPE_CHECKING:
    pass
from .aws import Answer, Aws, _JobSummary, aws_tags, console_url, etags_digest, extract, s3_objects, slug, tag_value
from .sagemaker import image_for

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL = ("Completed", "Failed", "Stopped")


def job_name(project: str, sha: str, config_digest: str, attempt: int) -> str:
    """Deterministic: a workflow re-run of the same commit and config finds the same job."""
    # The project part has a fixed length, so that every attempt shares one prefix (`jobs_of`).
    return f"{slug(project)[:40].rstrip('-')}-{sha[:8]}-{config_digest[:8]}-{attempt}"


# -- training ------------------------------------------------------------------------------
class SageMakerTrainer:
    """A TrainingBackend: the commit's source as a script-mode training job."""

    name = "sagemaker"

    def __init__(self, aws: Aws, cfg: Config, say: Callable[[str], None]):
        assert cfg.training.sagemaker is not None
        self.aws = aws
        self.cfg = cfg
        self.sm = cfg.training.sagemaker
        self.say = say

    @classmethod
    def from_context(cls, ctx: Context) -> SageMakerTrainer:
        return cls(ctx.aws(), ctx.cfg, ctx.say)

    # pure parts ------------------------------------------------------------------------
    def pack_source(self, code_dir: Path, dest: Path) -> tuple[Path, str]:
        try:
            entries = [(rel, p) for rel, p in files_under(code_dir) if "__pycache__" not in rel]
        except LinkOutside as err:
            raise Refused(f"training.source_dir: {err}; it is not uploaded. Commit the file itself") from None
        digest = pack_deterministic(entries, dest)
        return dest, digest

    def source_uri(self, digest: str) -> str:
        return self.aws.s3_uri("source", digest, "sourcedir.tar.gz")

    def request(self, spec: TrainingSpec, name: str, source_uri: str) -> dict[str, object]:
        """The CreateTrainingJob request, as the SageMaker SDK builds it for script mode."""
        sm, aws = self.sm, self.aws
        hps = encode_hyperparameters(spec.hyperparameters)
        hps.update(encode_hyperparameters({
            "sagemaker_program": spec.entry_point,
            "sagemaker_submit_directory": source_uri,
            "sagemaker_container_log_level": 20,
            "sagemaker_job_name": name,
            "sagemaker_region": aws.region,
            **distribution_hyperparameters(spec.distribution, sm.instance_type),
        }))  # fmt: skip
        resource: dict[str, object] = {
            "InstanceType": sm.instance_type, "InstanceCount": sm.instance_count, "VolumeSizeInGB": sm.volume_size,
        }  # fmt: skip
        if aws.cfg.kms_key and not sagemaker_types.has_local_storage(sm.instance_type):
            # local instance storage is encrypted by the instance and refuses a volume key
            resource["VolumeKmsKeyId"] = aws.cfg.kms_key
        if sm.keep_alive:
            resource["KeepAlivePeriodInSeconds"] = sm.keep_alive
        output: dict[str, object] = {"S3OutputPath": aws.s3_uri("output")}
        if aws.cfg.kms_key:
            output["KmsKeyId"] = aws.cfg.kms_key
        stopping: dict[str, object] = {"MaxRuntimeInSeconds": spec.max_run}
        req: dict[str, object] = {
            "TrainingJobName": name,
            "AlgorithmSpecification": {
                "TrainingImage": image_for(sm, None, aws.region, "training"),
                "TrainingInputMode": "File",
                "MetricDefinitions": [{"Name": k, "Regex": v} for k, v in spec.metric_regexes.items()],
            },
            "RoleArn": aws.cfg.role,
            "HyperParameters": hps,
            "InputDataConfig": [
                _channel(ch, uri, spec.channel_settings.get(ch)) for ch, uri in sorted(spec.channel_uris.items())
            ],
            "OutputDataConfig": output,
            "ResourceConfig": resource,
            "StoppingCondition": stopping,
            "Environment": {**spec.environment, **(spec.job_env(name) if spec.job_env else {})},
            "Tags": aws_tags(spec.tags),
        }
        if sm.retry_attempts:
            req["RetryStrategy"] = {"MaximumRetryAttempts": sm.retry_attempts}
        if not req["InputDataConfig"]:
            del req["InputDataConfig"]
        if not req["Environment"]:
            del req["Environment"]
        if sm.subnets or sm.security_group_ids:
            req["VpcConfig"] = {"Subnets": list(sm.subnets), "SecurityGroupIds": list(sm.security_group_ids)}
        if sm.spot:
            req["EnableManagedSpotTraining"] = True
            stopping["MaxWaitTimeInSeconds"] = sm.max_wait
            req["CheckpointConfig"] = {"S3Uri": sm.checkpoint_s3_uri or aws.s3_uri("checkpoints", name)}
        return req

    def channel_data(self, channels: Mapping[str, str]) -> dict[str, dict[str, str]]:
        """What each S3 channel held when the job was created: a digest over its objects'
        keys and ETags (the data itself never passes through this machine)."""
        data: dict[str, dict[str, str]] = {}
        for name, uri in channels.items():
            objects = s3_objects(self.aws, uri, f"list training channel {name} ({uri})")
            if not objects:
                raise ConfigError(f"training.channels.{name}: {uri} holds no objects; upload the data or fix the URI")
            data[name] = {
                "uri": uri,
                "s3_etags_sha256": etags_digest(objects),
                "objects": str(len(objects)),
                "source": "s3",
            }
        return data

    # jobs ------------------------------------------------------------------------------
    def jobs_of(self, project: str, sha: str, digest: str) -> list[_JobSummary]:
        """The attempts at this commit and config, oldest first."""
        stem = job_name(project, sha, digest, 0)[:-1]
        found: list[_JobSummary] = []
        kwargs: dict[str, object] = {"NameContains": stem, "MaxResults": 100}
        while True:
            page = self.aws.call("sagemaker", "list_training_jobs", "list training jobs", **kwargs)
            found += [j for j in page.get("TrainingJobSummaries", []) if j["TrainingJobName"].startswith(stem)]
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]

        def attempt(j: _JobSummary) -> int:
            tail = j["TrainingJobName"][len(stem) :]
            return int(tail) if tail.isdigit() else 0

        return sorted(found, key=attempt)

    def next_job(self, spec: TrainingSpec, project: str, fresh: bool = False) -> tuple[str, bool]:
        """(job name, exists): the running or completed attempt to attach to, else a new name
        (always a new one when `fresh`: --force)."""
        jobs = self.jobs_of(project, spec.sha, spec.config_digest)
        if not fresh and jobs and jobs[-1]["TrainingJobStatus"] in ("InProgress", "Stopping", "Completed"):
            return jobs[-1]["TrainingJobName"], True
        return job_name(project, spec.sha, spec.config_digest, len(jobs) + 1), False

    def start(self, spec: TrainingSpec, workdir: Path, project: str, fresh: bool = False) -> str:
        """Create the job unless this commit and config already has a live or finished one."""
        if spec.tags.get("mlops-ci:dirty"):  # a throw-away run: its own name, never attached to
            name, exists = slug(spec.job_name)[:63], False
        else:
            name, exists = self.next_job(spec, project, fresh)
        if exists:
            self.say(f"attaching to training job {name} (started earlier for this commit and config)")
            return name
        tarball, digest = self.pack_source(spec.code_dir, workdir / "sourcedir.tar.gz")
        uri = self.source_uri(digest)
        if self.aws.upload_once(tarball, uri, digest):
            self.say(f"uploaded the source ({tarball.stat().st_size} bytes) to {uri}")
        else:
            self.say(f"source unchanged, already at {uri}")
        req = self.request(spec, name, uri)
        try:
            self.aws.client("sagemaker").create_training_job(**req)
        except self.aws.errors as exc:
            if self.aws.code(exc) == "ResourceInUse":  # another runner created it a moment ago
                self.say(f"training job {name} was just created by another run; attaching to it")
                return name
            raise self.aws.error(exc, f"create training job {name}") from None
        self.say(f"created training job {name}: {console_url(self.aws.region, 'jobs', name)}")
        return name

    def run(self, spec: TrainingSpec, workdir: Path, log: Callable[[str], None]) -> TrainingResult:
        project = spec.tags.get("mlops-ci:project", "")
        name = self.start(spec, workdir, project)
        return self.wait(name, spec, workdir, log)

    def wait(self, name: str, spec: TrainingSpec, workdir: Path, log: Callable[[str], None]) -> TrainingResult:
        """Follow the job to its end: status changes, secondary status, and its CloudWatch log
        (with the MetricDefinitions applied to it, for the curves)."""
        started = time.monotonic()
        log_path = workdir / "train.log"
        base = workdir / "opt_ml"
        result = TrainingResult(exit_code=-1, model_dir=base / "model", output_dir=base / "output", log_path=log_path)
        scanner = MetricScanner(spec.metric_regexes)
        logs = _LogTail(self.aws, name)
        seen: tuple[str, str] = ("", "")
        desc: Answer = {}
        with open(log_path, "a", encoding="utf-8") as logf:

            def follow() -> None:
                for line in logs.poll():
                    logf.write(line + "\n")
                    scanner.feed(line)
                    log(line)

            while True:
                desc = self.aws.call("sagemaker", "describe_training_job", f"describe training job {name}",
                                     TrainingJobName=name)  # fmt: skip
                status, secondary = desc["TrainingJobStatus"], desc.get("SecondaryStatus", "")
                if (status, secondary) != seen:
                    transitions = desc.get("SecondaryStatusTransitions") or [{}]
                    message = transitions[-1].get("StatusMessage", "")
                    # StatusMessage can quote the script's failure: inert under Actions, on one line
                    self.say(guard(f"{name}: {status} / {secondary}" + (f" - {inline(message)}" if message else "")))
                    seen = (status, secondary)
                follow()
                if status in TERMINAL:
                    follow()  # what arrived between the last poll and the end
                    break
                time.sleep(self.aws.cfg.poll_seconds)
        result.duration = time.monotonic() - started
        result.links = {
            "training_job": desc["TrainingJobArn"],
            "console": console_url(self.aws.region, "jobs", name),
            "log": log_path.as_posix(),
            "cloudwatch": f"https://{self.aws.region}.console.aws.amazon.com/cloudwatch/home?region="
            f"{self.aws.region}#logsV2:log-groups/log-group/$252Faws$252Fsagemaker$252FTrainingJobs",
        }
        result.cost = _cost_facts(desc)
        result.series = dict(scanner.series)
        # A trial its tuning job stopped early (early_stopping: Auto, Hyperband) ended Stopped with its
        # model and final metrics kept (StopHyperParameterTuningJob: "All model artifacts output from
        # the training jobs are stored in Amazon S3"): it is a completed trial that trained less.
        if status == "Stopped" and desc.get("TuningJobArn") and desc.get("FinalMetricDataList"):
            self.say(f"{name} was stopped early by its tuning job; its model and metrics are the trial's")
            status = "Completed"
        if status != "Completed":
            result.exit_code = 1
            reason = desc.get("FailureReason") or f"the job ended {status}"
            result.failure = f"SageMaker training job {name} {status}: {reason}"
            return result
        result.exit_code = 0
        result.metrics = {k: v[-1] for k, v in scanner.series.items()}
        for m in desc.get("FinalMetricDataList", []):  # SageMaker's own reading of the same regexes
            if m.get("MetricName") in spec.metric_regexes:
                result.metrics[m["MetricName"]] = float(m["Value"])
        model_uri = desc.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        if not model_uri or not self.aws.download(model_uri, workdir / "model.tar.gz"):
            result.exit_code = 1
            result.failure = f"training job {name} completed but its model artifact {model_uri} is missing"
            return result
        extract(workdir / "model.tar.gz", result.model_dir)
        output_uri = model_uri.rsplit("/", 1)[0] + "/output.tar.gz"
        if self.aws.download(output_uri, workdir / "output.tar.gz"):
            extract(workdir / "output.tar.gz", result.output_dir / "data")
            mfile = result.output_dir / "data" / METRICS_FILE
            if mfile.is_file():
                try:
                    finals, series = read_metrics_file(mfile)
                except ValueError as exc:
                    result.exit_code, result.failure = 1, str(exc)
                    return result
                # the file wins where both name a metric, as in the local backend (docs/training.md: Metrics)
                result.metrics.update(finals)
                result.series.update(series)
        code = base / "code"  # the serving files packed into the artifact come from the source
        shutil.copytree(spec.code_dir, code, dirs_exist_ok=True)
        return result

    def cancel_superseded(self, project: str, branch: str, sha: str) -> list[str]:
        """Stop jobs of this project still running for older commits on `branch`."""
        stopped = []
        kwargs: dict[str, object] = {
            "StatusEquals": "InProgress",
            "NameContains": slug(project)[:40],
            "MaxResults": 100,
        }
        mine = re.compile(re.escape(slug(project)[:40].rstrip("-")) + r"-[0-9a-f]{8}-[0-9a-f]{8}-\d+")
        while True:
            page = self.aws.call("sagemaker", "list_training_jobs", "list training jobs", **kwargs)
            for job in page.get("TrainingJobSummaries", []):
                # NameContains also finds other projects' jobs (`xchurn-...` for `churn`); their
                # tags are not this role's to read (docs/iam scopes it to this project's jobs)
                if not mine.fullmatch(job["TrainingJobName"]):
                    continue
                tags = self.aws.call(
                    "sagemaker", "list_tags", "read training job tags", ResourceArn=job["TrainingJobArn"]
                )
                t = {x["Key"]: x["Value"] for x in tags.get("Tags", [])}
                same_branch = t.get("mlops-ci:branch") == tag_value(branch)
                if t.get("mlops-ci:project") == project and same_branch and t.get("mlops-ci:sha") != sha:
                    self.aws.call("sagemaker", "stop_training_job", f"stop {job['TrainingJobName']}",
                                  TrainingJobName=job["TrainingJobName"])  # fmt: skip
                    stopped.append(job["TrainingJobName"])
            if not page.get("NextToken"):
                return stopped
            kwargs["NextToken"] = page["NextToken"]


def _channel(name: str, uri: str, settings: ChannelSettings | None) -> dict[str, object]:
    """A Channel as the SDK's TrainingInput makes it: InputMode only when the channel sets one."""
    channel: dict[str, object] = {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": uri,
                "S3DataDistributionType": settings.distribution if settings else "FullyReplicated",
            }
        },
    }
    if settings is not None:
        channel["InputMode"] = settings.input_mode
    return channel


def _cost_facts(desc: Answer) -> dict[str, object]:
    rc = desc.get("ResourceConfig", {})
    facts: dict[str, object] = {
        "instance_type": rc.get("InstanceType"),
        "instance_count": rc.get("InstanceCount", 1),
        "spot": bool(desc.get("EnableManagedSpotTraining")),
    }
    if desc.get("BillableTimeInSeconds") is not None:
        facts["billable_seconds"] = int(desc["BillableTimeInSeconds"])
    if desc.get("TrainingTimeInSeconds") is not None:
        facts["training_seconds"] = int(desc["TrainingTimeInSeconds"])
    return facts


class _LogTail:
    """New lines of a job's CloudWatch log streams (one per instance) since the last poll."""

    def __init__(self, aws: Aws, job: str):
        self.aws, self.job = aws, job
        self.tokens: dict[str, str | None] = {}

    def poll(self) -> Iterator[str]:
        logs = self.aws.client("logs")
        try:
            streams = logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=self.job + "/")
        except self.aws.errors as exc:
            if self.aws.missing(exc):
                return  # the group or stream appears once the instances start
            raise self.aws.error(exc, f"read the log of {self.job}") from None
        for s in sorted(streams.get("logStreams", []), key=lambda s: s["logStreamName"]):
            stream = s["logStreamName"]
            while True:
                kwargs: dict[str, object] = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
                if self.tokens.get(stream):
                    kwargs["nextToken"] = self.tokens[stream]
                try:
                    page = logs.get_log_events(**kwargs)
                except self.aws.errors as exc:
                    raise self.aws.error(exc, f"read the log of {self.job}") from None
                for ev in page.get("events", []):
                    yield str(ev["message"]).rstrip("\n")
                token = page.get("nextForwardToken")
                if not page.get("events") or token == self.tokens.get(stream):
                    self.tokens[stream] = token
                    break
                self.tokens[stream] = token
