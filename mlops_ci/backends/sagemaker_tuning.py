"""A search (`tuning:`) on SageMaker: one HyperParameterTuningJob per commit and config, whose
training jobs are the trials.

The request is the SDK tuner's for a framework estimator: the TrainingJobDefinition is the
CreateTrainingJob request of the commit's job (mlops_ci/backends/sagemaker_training.py) without
its per-job fields, the searched names taken out of the static hyperparameters and given as
ParameterRanges. SageMaker names each trial's training job `<tuning job>-<NNN>-<8 hex>` and gives
it the tuning job's tags; a trial is recorded as a run by attaching to that job, as `wait` does.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from .. import tuning as tun
from .._untrusted import guard, inline
from ..errors import IntegrityError
from . import TrainingSpec
from .aws import Answer, _TrialSummary, _TuningSummary, console_url, slug, tag_value
from .sagemaker_training import SageMakerTrainer

TERMINAL = ("Completed", "Failed", "Stopped")
LIVE = ("InProgress", "Stopping", "Completed", "Stopped")  # attached to (a stopped one's completed trials count)
NAME_MAX = 32  # HyperParameterTuningJobName: 1-32 characters (botocore's service model)
PROJECT_PART = 12  # the project's part of a tuning job's name (docs/iam: PROJECT_SHORT)
ROUND_OVERHEAD = 900  # seconds a round of trials may spend starting instances and uploading, besides max_run


def tuning_job_name(project: str, sha: str, config_digest: str, attempt: int) -> str:
    """Deterministic, as a training job's name: a re-run of the same commit and config finds the
    same tuning job. 32 characters leave the project 12."""
    name = f"{slug(project)[:PROJECT_PART].rstrip('-')}-{sha[:7]}-{config_digest[:6]}-{attempt}"
    assert len(name) <= NAME_MAX, name
    return name


class SageMakerTuner:
    """The tuning job of a commit's search: its request, its start (or the attempt already
    running or done), its wait, and the trials it ran."""

    def __init__(self, trainer: SageMakerTrainer, t: tun.TuningConfig):
        self.trainer = trainer
        self.aws = trainer.aws
        self.t = t
        self.say = trainer.say

    def max_runtime(self, spec: TrainingSpec) -> int:
        """The tuning job's own limit: every round of `max_parallel` trials running to its own limit
        (max_wait on spot), with time to start; within the API's 120 s - 182.5 days."""
        sm = self.trainer.sm
        per_job = sm.max_wait if sm.spot else spec.max_run
        return max(120, min(15_768_000, tun.rounds(self.t) * (per_job + ROUND_OVERHEAD)))

    def request(self, spec: TrainingSpec, name: str, source_uri: str) -> dict[str, object]:
        """The CreateHyperParameterTuningJob request."""
        t = self.t
        job = self.trainer.request(spec, name, source_uri)
        static = {k: v for k, v in job["HyperParameters"].items() if k not in {p.name for p in t.parameters}}  # type: ignore[attr-defined]
        definition: dict[str, object] = {
            "StaticHyperParameters": static,
            "AlgorithmSpecification": job["AlgorithmSpecification"],
            "RoleArn": job["RoleArn"],
            "OutputDataConfig": job["OutputDataConfig"],
            "ResourceConfig": job["ResourceConfig"],
            "StoppingCondition": job["StoppingCondition"],
        }
        for key in ("InputDataConfig", "VpcConfig", "EnableManagedSpotTraining", "RetryStrategy", "Environment"):
            if key in job:
                definition[key] = job[key]
        # Every trial gets the same CheckpointConfig: SageMaker does not separate them, so a trial
        # resumed after a spot interruption would find the others' checkpoints. Only a location the
        # config names is passed on (docs/training.md: the script keeps its own under TRAINING_JOB_NAME).
        if "CheckpointConfig" in job and self.trainer.sm.checkpoint_s3_uri:
            definition["CheckpointConfig"] = job["CheckpointConfig"]
        limits: dict[str, object] = {"MaxParallelTrainingJobs": t.max_parallel,
                                     "MaxRuntimeInSeconds": self.max_runtime(spec)}  # fmt: skip
        if t.strategy != "Grid":  # a grid's size is its number of jobs (our Grid runs every combination too)
            limits["MaxNumberOfTrainingJobs"] = t.max_jobs
        objective = {"Type": "Maximize" if t.goal == "maximize" else "Minimize", "MetricName": t.metric}
        config: dict[str, object] = {
            "Strategy": t.strategy,
            "HyperParameterTuningJobObjective": objective,
            "ResourceLimits": limits,
            "ParameterRanges": tun.sagemaker_ranges(t),
            "TrainingJobEarlyStoppingType": t.early_stopping,
            "RandomSeed": t.seed,
        }
        return {
            "HyperParameterTuningJobName": name,
            "HyperParameterTuningJobConfig": config,
            "TrainingJobDefinition": definition,
            "Tags": job["Tags"],  # SageMaker gives them to every training job the tuning job launches
        }

    # -- jobs --------------------------------------------------------------------------------
    def jobs_of(self, project: str, sha: str, digest: str) -> list[_TuningSummary]:
        """The tuning jobs of this commit and config, oldest attempt first."""
        stem = tuning_job_name(project, sha, digest, 0)[:-1]
        found: list[_TuningSummary] = []
        kwargs: dict[str, object] = {"NameContains": stem, "MaxResults": 100}
        while True:
            page = self.aws.call("sagemaker", "list_hyper_parameter_tuning_jobs", "list tuning jobs", **kwargs)
            found += [j for j in page.get("HyperParameterTuningJobSummaries", [])
                      if j["HyperParameterTuningJobName"].startswith(stem)]  # fmt: skip
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]

        def attempt(j: _TuningSummary) -> int:
            tail = j["HyperParameterTuningJobName"][len(stem) :]
            return int(tail) if tail.isdigit() else 0

        return sorted(found, key=attempt)

    def next_job(self, project: str, sha: str, digest: str, fresh: bool = False) -> tuple[str, bool]:
        """(name, exists): the running or completed tuning job to attach to, else a new name (always
        a new one when `fresh`: --force)."""
        jobs = self.jobs_of(project, sha, digest)
        if not fresh and jobs and jobs[-1]["HyperParameterTuningJobStatus"] in LIVE:
            return str(jobs[-1]["HyperParameterTuningJobName"]), True
        return tuning_job_name(project, sha, digest, len(jobs) + 1), False

    def find_by_inputs(self, project: str, inputs: str, digest: str) -> str | None:
        """A tuning job of another commit (among this project's 100 newest) whose trials trained
        exactly these inputs under this config: its tags say so (`mlops-ci:inputs`, set at create)."""
        short = slug(project)[:PROJECT_PART].rstrip("-")
        mine = re.compile(re.escape(short) + r"-[0-9a-f]{7}-" + re.escape(digest[:6]) + r"-\d+")
        newest = {"NameContains": short, "SortBy": "CreationTime", "SortOrder": "Descending", "MaxResults": 100}
        page = self.aws.call("sagemaker", "list_hyper_parameter_tuning_jobs", "list tuning jobs", **newest)
        for job in page.get("HyperParameterTuningJobSummaries", []):
            name = job["HyperParameterTuningJobName"]
            # a stopped one is not reused for another commit: it was stopped before it searched enough
            if not mine.fullmatch(name) or job["HyperParameterTuningJobStatus"] not in ("InProgress", "Completed"):
                continue
            answer = self.aws.call("sagemaker", "list_tags", f"read the tags of tuning job {name}",
                                   ResourceArn=job["HyperParameterTuningJobArn"])  # fmt: skip
            tags = {t["Key"]: t["Value"] for t in answer.get("Tags", [])}
            found = (tags.get("mlops-ci:inputs"), tags.get("mlops-ci:project"), tags.get("mlops-ci:config-digest"))
            if found == (inputs, tag_value(project), digest):
                return name
        return None

    def cancel_superseded(self, project: str, branch: str, sha: str) -> list[str]:
        """Stop this project's tuning jobs still running for older commits on `branch` (their
        trials stop with them); what they completed stays recorded by nobody, as with training jobs."""
        short = slug(project)[:PROJECT_PART].rstrip("-")
        mine = re.compile(re.escape(short) + r"-[0-9a-f]{7}-[0-9a-f]{6}-\d+")
        stopped = []
        kwargs: dict[str, object] = {"NameContains": short, "StatusEquals": "InProgress", "MaxResults": 100}
        while True:
            page = self.aws.call("sagemaker", "list_hyper_parameter_tuning_jobs", "list tuning jobs", **kwargs)
            for job in page.get("HyperParameterTuningJobSummaries", []):
                name = job["HyperParameterTuningJobName"]
                if not mine.fullmatch(name):  # another project's that contains ours: not this role's to read
                    continue
                answer = self.aws.call("sagemaker", "list_tags", f"read the tags of tuning job {name}",
                                       ResourceArn=job["HyperParameterTuningJobArn"])  # fmt: skip
                t = {x["Key"]: x["Value"] for x in answer.get("Tags", [])}
                if (t.get("mlops-ci:project") == tag_value(project) and t.get("mlops-ci:branch") == tag_value(branch)
                        and t.get("mlops-ci:sha") != sha):  # fmt: skip
                    self.aws.call("sagemaker", "stop_hyper_parameter_tuning_job", f"stop tuning job {name}",
                                  HyperParameterTuningJobName=name)  # fmt: skip
                    stopped.append(name)
            if not page.get("NextToken"):
                return stopped
            kwargs["NextToken"] = page["NextToken"]

    def start(self, spec: TrainingSpec, workdir: Path, name: str, exists: bool) -> str:
        """Create tuning job `name`, or attach to it when it `exists`."""
        if exists:
            self.say(f"attaching to tuning job {name}")
            return name
        tarball, digest = self.trainer.pack_source(spec.code_dir, workdir / "sourcedir.tar.gz")
        uri = self.trainer.source_uri(digest)
        if self.aws.upload_once(tarball, uri, digest):
            self.say(f"uploaded the source ({tarball.stat().st_size} bytes) to {uri}")
        req = self.request(spec, name, uri)
        try:
            self.aws.client("sagemaker").create_hyper_parameter_tuning_job(**req)
        except self.aws.errors as exc:
            if self.aws.code(exc) in ("ResourceInUse", "ResourceInUseException"):
                self.say(f"tuning job {name} was just created by another run; attaching to it")
                return name
            raise self.aws.error(exc, f"create tuning job {name}") from None
        self.say(f"created tuning job {name}: {console_url(self.aws.region, 'hyper-tuning-jobs', name)}")
        return name

    def wait(self, name: str, sleep: Callable[[float], None] = time.sleep) -> Answer:
        """Follow the tuning job to its end, saying each change of its counts."""
        seen: tuple[object, ...] = ()
        while True:
            desc = self.aws.call("sagemaker", "describe_hyper_parameter_tuning_job", f"describe tuning job {name}",
                                 HyperParameterTuningJobName=name)  # fmt: skip
            status = desc["HyperParameterTuningJobStatus"]
            c = desc.get("TrainingJobStatusCounters", {})
            counts = (c.get("Completed", 0), c.get("InProgress", 0),
                      c.get("RetryableError", 0) + c.get("NonRetryableError", 0), c.get("Stopped", 0))  # fmt: skip
            if (status, *counts) != seen:
                reason = desc.get("FailureReason") if status == "Failed" else ""
                self.say(guard(f"{name}: {status} - {counts[0]} trial(s) completed, {counts[1]} running, "
                               f"{counts[2]} failed, {counts[3]} stopped of {self.t.max_jobs}"
                               + (f" - {inline(str(reason))}" if reason else "")))  # fmt: skip
                seen = (status, *counts)
            if status in TERMINAL:
                return desc
            sleep(self.aws.cfg.poll_seconds)

    def trials(self, name: str) -> list[tuple[str, dict[str, object], str]]:
        """The trials the tuning job ran, in the order it created them: (training job name, the
        values it chose as the config's types, status)."""
        summaries: list[_TrialSummary] = []
        kwargs: dict[str, object] = {"HyperParameterTuningJobName": name, "MaxResults": 100,
                                     "SortBy": "CreationTime", "SortOrder": "Ascending"}  # fmt: skip
        while True:
            page = self.aws.call("sagemaker", "list_training_jobs_for_hyper_parameter_tuning_job",
                                 f"list the training jobs of tuning job {name}", **kwargs)  # fmt: skip
            summaries += page.get("TrainingJobSummaries", [])
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        # botocore gives CreationTime as a datetime; the job names' NNN orders the same second
        summaries.sort(key=lambda s: (str(s.get("CreationTime") or ""), s["TrainingJobName"]))
        out = []
        for s in summaries:
            tuned = s.get("TunedHyperParameters", {})
            try:
                values = {p.name: tun.from_sagemaker(p, str(tuned[p.name])) for p in self.t.parameters}
            except (KeyError, ValueError) as exc:  # not a trial of this search: never recorded as one
                what = f"has no value for {exc}" if isinstance(exc, KeyError) else str(exc)
                raise IntegrityError(inline(
                    f"training job {s['TrainingJobName']} of tuning job {name}: {what}, so it is no trial of the "
                    "configured search; `mlops-ci train --force` starts a new tuning job")) from None  # fmt: skip
            out.append((str(s["TrainingJobName"]), values, str(s["TrainingJobStatus"])))
        return out
