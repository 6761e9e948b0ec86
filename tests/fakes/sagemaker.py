"""Amazon SageMaker (+ S3, CloudWatch Logs) at its HTTP API, on 127.0.0.1.

moto's server application serves the requests, in this process so that the fake can reach
moto's backends. Where moto is missing an API or behaves unlike AWS, this layer implements
the real behaviour in front of it:

- UpdateEndpoint and StopTrainingJob (missing in moto 5.2);
- status transitions: jobs go InProgress (Starting, Downloading, Training, Uploading) before
  Completed/Failed; endpoints go Creating/Updating (and RollingBack on a failed update) before
  InService/Failed, a few DescribeX calls apart, as a poller sees them on AWS;
- a duplicate training-job name is ResourceInUse (moto silently overwrites);
- the job's MetricDefinitions are kept and FinalMetricDataList is what they match in the job's
  log (moto replaces both with constants); the log is written to CloudWatch Logs under
  /aws/sagemaker/TrainingJobs, the model to ModelArtifacts.S3ModelArtifacts;
- InvokeEndpoint needs an InService endpoint and answers for the model behind it;
- hyperparameter tuning jobs run (moto 5.2 stores one as Completed with a constant best job and
  never starts a training job; ListTrainingJobsForHyperParameterTuningJob is missing): see
  `_op_CreateHyperParameterTuningJob`.
- SageMaker Model Monitor (moto 5.2 has none of it): processing jobs that run (a baselining job
  writes statistics.json and constraints.json of its dataset), data-quality job definitions and
  monitoring schedules: see `_op_CreateProcessingJob`.

Faults are injected per test: throttling, a failing job, a failing endpoint create/update,
a model that errors on invocation.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import random
import re
import secrets
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from tests.fakes import aws_model

ACCOUNT = "123456789012"
REGION = "us-east-1"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
PHASES = ("Starting", "Downloading", "Training", "Uploading")


@dataclass
class JobScript:
    """What a training job 'does' in the fake: the log it prints, the model it writes."""

    log: list[str] = field(default_factory=lambda: ["epoch 1 loss=0.50", "epoch 2 loss=0.31", "accuracy=0.91"])
    model_files: dict[str, bytes] = field(default_factory=lambda: {"model.json": b'{"weights": [1, 2, 3]}'})
    output_files: dict[str, bytes] = field(default_factory=dict)
    failure: str | None = None  # ends Failed with this FailureReason
    stopped_early: bool = False  # a trial its tuning job stops early: Stopped, its metrics and model kept
    training_seconds: int = 120


@dataclass
class _Job:
    script: JobScript
    polls: int = 0
    stop: bool = False


@dataclass
class _Tuning:
    request: dict[str, Any]
    draws: list[dict[str, str]]  # each trial's values, as TunedHyperParameters has them, in launch order
    trials: list[str] = field(default_factory=list)  # its training jobs, in creation order
    stop: bool = False
    failure: str = ""


@dataclass
class _Pending:
    kind: str  # create | update | rollback
    target: str
    previous: str | None
    failure: str | None
    polls: int = 0


class FakeSageMaker:
    def __init__(self, steps: int = 2):
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        self.moto = DomainDispatcherApplication(create_backend_app)
        self.steps = steps  # DescribeX calls per status phase
        self.lock = threading.RLock()
        self.requests: list[tuple[str, dict[str, Any]]] = []  # every SageMaker operation, in order
        self.script = JobScript()  # what the next jobs do
        self.jobs: dict[str, _Job] = {}
        self.pending: dict[str, _Pending] = {}
        self.fail_create: str | None = None  # next CreateEndpoint ends Failed with this reason
        self.fail_update: str | None = None  # next UpdateEndpoint rolls back with this reason
        self.model_errors: dict[str, tuple[int, str]] = {}  # model name prefix -> (status, message)
        self.faults: dict[str, list[tuple[int, str, str]]] = {}  # operation -> errors for its next calls
        self.violations: list[str] = []  # requests AWS would refuse (tests/fakes/aws_model.py); a test fails on any
        self.tunings: dict[str, _Tuning] = {}
        # what a tuning job's trial 'does', from its HyperParameters (default: `script`)
        self.trial_script: Callable[[dict[str, str]], JobScript] | None = None
        # Model Monitor: processing jobs (request, status, polls), job definitions, schedules
        self.processing: dict[str, dict[str, Any]] = {}
        self.job_definitions: dict[str, dict[str, Any]] = {}
        self.schedules: dict[str, dict[str, Any]] = {}
        self.baseline_failure: str | None = None  # the next baselining jobs end Failed with this FailureReason
        self.baseline_writes = True  # False: a baselining job completes without writing its files

    # -- inspection ----------------------------------------------------------------------
    @property
    def sm(self) -> Any:
        from moto.sagemaker.models import sagemaker_backends

        return sagemaker_backends[ACCOUNT][REGION]

    def calls(self, op: str) -> list[dict[str, Any]]:
        return [params for name, params in self.requests if name == op]

    def mutating(self) -> list[str]:
        reads = ("Describe", "List", "Search", "Get")
        return [name for name, _ in self.requests if not name.startswith(reads)]

    def fail(self, op: str, code: str, message: str, *, times: int = 1, status: int = 400) -> None:
        """Answer the next `times` calls of `op` with this error, as AWS does."""
        self.faults.setdefault(op, []).extend([(status, code, message)] * times)

    def throttle(self, op: str, times: int) -> None:
        self.fail(op, "ThrottlingException", "Rate exceeded", times=times)

    # -- WSGI ----------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        path = environ.get("PATH_INFO", "")
        with self.lock:
            prefix, _, op = target.partition(".")
            if prefix in aws_model.TARGETS:
                params = json.loads(body or b"{}")
                found = aws_model.violations(aws_model.TARGETS[prefix], op, params, wire=True)
                if found:  # as AWS answers: 400 ValidationException, nothing done
                    self.violations.extend(f"{aws_model.TARGETS[prefix]}.{v}" for v in found)
                    return self._error(start_response, 400, "ValidationException", aws_model.message(found))
            if prefix == "SageMaker":
                self.requests.append((op, params))
                if self.faults.get(op):
                    status, code, message = self.faults[op].pop(0)
                    return self._error(start_response, status, code, message)
                handler = getattr(self, f"_op_{op}", None)
                if handler is not None:
                    return handler(params, environ, start_response)  # type: ignore[no-any-return]
                return self._moto(environ, start_response)
            m = re.fullmatch(r"/endpoints/([^/]+)/invocations", path)
            if m and environ.get("REQUEST_METHOD") == "POST":
                headers = {k[5:].replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
                headers["Content-Type"] = environ.get("CONTENT_TYPE", "")
                found = aws_model.rest_violations("sagemaker-runtime", "InvokeEndpoint",
                                                  {"EndpointName": unquote(m.group(1))}, headers, body)  # fmt: skip
                if found:
                    self.violations.extend(f"sagemaker-runtime.{v}" for v in found)
                    data = json.dumps({"message": aws_model.message(found)}).encode()
                    start_response("400 Bad Request", [("Content-Type", "application/json"),
                                                       ("x-amzn-ErrorType", "ValidationError")])  # fmt: skip
                    return iter([data])
                self.requests.append(("InvokeEndpoint", {"EndpointName": m.group(1)}))
                return self._invoke(m.group(1), body, environ, start_response)
            return self._moto(environ, start_response)

    def _moto(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        return self.moto(environ, start_response)  # type: ignore[no-any-return]

    def _forward(self, op: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Run a SageMaker operation through moto; (status, parsed body)."""
        body = json.dumps(params).encode()
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": "/", "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
            "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/x-amz-json-1.1",
            "HTTP_HOST": "api.sagemaker.us-east-1.amazonaws.com", "HTTP_X_AMZ_TARGET": f"SageMaker.{op}",
            "HTTP_AUTHORIZATION": f"AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/sagemaker/aws4_request, "
                                  "SignedHeaders=host, Signature=x",
            "wsgi.errors": io.StringIO(), "wsgi.version": (1, 0), "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False,
        }  # fmt: skip
        status: list[str] = []

        def start(s: str, headers: Any, exc_info: Any = None) -> None:
            status.append(s)

        out = b"".join(self.moto(environ, start))
        return int(status[0].split()[0]), json.loads(out or b"{}")

    @staticmethod
    def _json(start_response: Any, status: int, payload: dict[str, Any]) -> Iterator[bytes]:
        data = json.dumps(payload, default=str).encode()
        headers = [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(data)))]
        start_response(f"{status} {'OK' if status == 200 else 'Bad Request'}", headers)
        return iter([data])

    def _error(self, start_response: Any, status: int, code: str, message: str) -> Iterator[bytes]:
        return self._json(start_response, status, {"__type": code, "message": message})

    # -- training jobs -------------------------------------------------------------------
    def _op_CreateTrainingJob(self, params: dict[str, Any], environ: Any, start_response: Any) -> Iterator[bytes]:
        name = params["TrainingJobName"]
        if name in self.sm.training_jobs:
            return self._error(start_response, 400, "ResourceInUse",
                               f"Training job names must be unique within an AWS account and region, and a training "
                               f"job with this name already exists ({name})")  # fmt: skip
        status, out = self._forward("CreateTrainingJob", params)
        if status != 200:
            return self._json(start_response, status, out)
        self._started(name, params, self.script)
        return self._json(start_response, 200, out)

    def _started(self, name: str, params: dict[str, Any], script: JobScript) -> None:
        job = self.sm.training_jobs[name]
        job.algorithm_specification = params["AlgorithmSpecification"]  # moto replaces MetricDefinitions
        job.training_job_status, job.secondary_status = "InProgress", "Starting"
        job.final_metric_data_list = []
        job.secondary_status_transitions = [{"Status": "Starting", "StartTime": time.time(),
                                             "StatusMessage": "Launching requested ML instances"}]  # fmt: skip
        job.training_end_time = None
        self.jobs[name] = _Job(script)

    # -- hyperparameter tuning jobs ------------------------------------------------------
    # What SageMaker does with a tuning job, as its API reference and SDK say it:
    # - "This name is the prefix for the names of all training jobs that this tuning job launches"
    #   (CreateHyperParameterTuningJob); they are named <tuning job>-<NNN>-<8 hex>, as in the
    #   DescribeTrainingJob answers of real tuning jobs (e.g. xgboost-190407-1532-005-0e830ada);
    # - the tuning job's tags are added to the training jobs it launches (CreateHyperParameterTuningJob, Tags);
    # - each training job's HyperParameters are the static ones, the values chosen for it and
    #   `_tuning_objective_metric`, which SageMaker also adds to StaticHyperParameters (the SDK's
    #   HyperparameterTuner.attach deletes it from there: sagemaker/tuner.py);
    # - at most MaxParallelTrainingJobs run at once, MaxNumberOfTrainingJobs in all (a Grid: every
    #   combination of the categorical values); TrainingJobStatusCounters count them.
    # The values are drawn at random (seeded by RandomSeed) whatever the Strategy: which values
    # SageMaker's optimiser picks is its own; each is within its range and typed as the range is.
    def _op_CreateHyperParameterTuningJob(self, params: dict[str, Any], environ: Any, start_response: Any
                                          ) -> Iterator[bytes]:  # fmt: skip
        name = params["HyperParameterTuningJobName"]
        if name.lower() in (n.lower() for n in self.tunings):  # "The name is not case sensitive"
            return self._error(start_response, 400, "ResourceInUse",
                               f"Hyper Parameter Tuning Job with name {name} already exists.")  # fmt: skip
        status, out = self._forward("CreateHyperParameterTuningJob", params)
        if status != 200:
            return self._json(start_response, status, out)
        config = params["HyperParameterTuningJobConfig"]
        definition = params["TrainingJobDefinition"]
        statics = definition.setdefault("StaticHyperParameters", {})
        statics.setdefault("_tuning_objective_metric", config["HyperParameterTuningJobObjective"]["MetricName"])
        self.tunings[name] = _Tuning(params, _draws(config))
        self.sm.hyper_parameter_tuning_jobs[name].hyper_parameter_tuning_job_status = "InProgress"
        self._advance_tuning(name, launch_only=True)
        return self._json(start_response, 200, out)

    def _launch(self, name: str, values: dict[str, str]) -> None:
        tuning = self.tunings[name]
        definition = tuning.request["TrainingJobDefinition"]
        job = f"{name}-{len(tuning.trials) + 1:03d}-{secrets.token_hex(4)}"
        req = {k: v for k, v in definition.items() if k != "StaticHyperParameters"}
        req.update(TrainingJobName=job, HyperParameters={**definition["StaticHyperParameters"], **values},
                   Tags=tuning.request.get("Tags", []))  # fmt: skip
        status, out = self._forward("CreateTrainingJob", req)
        assert status == 200, out
        self._started(job, req, self.trial_script(req["HyperParameters"]) if self.trial_script else self.script)
        self.sm.training_jobs[job].tuning_job_name = name
        tuning.trials.append(job)

    def _advance_tuning(self, name: str, launch_only: bool = False) -> None:
        tuning = self.tunings[name]
        limits = tuning.request["HyperParameterTuningJobConfig"]["ResourceLimits"]
        if not launch_only:
            for job in tuning.trials:
                self._advance_job(job)
        jobs = [self.sm.training_jobs[j] for j in tuning.trials]
        running = sum(1 for j in jobs if j.training_job_status in ("InProgress", "Stopping"))
        failed = sum(1 for j in jobs if j.training_job_status == "Failed")
        if failed >= 5 and not any(j.training_job_status in ("Completed", "Stopped") for j in jobs):
            # SageMaker gives up on a search whose first trials all fail, with this reason
            # (aws/amazon-sagemaker-examples#2437: "No training job succeeded after 5 attempts. ...")
            tuning.stop = True
            tuning.failure = ("No training job succeeded after 5 attempts. Please take a look at the training job "
                              "failures to get more details.")  # fmt: skip
        while (not tuning.stop and running < limits["MaxParallelTrainingJobs"]
               and len(tuning.trials) < len(tuning.draws)):  # fmt: skip
            self._launch(name, tuning.draws[len(tuning.trials)])
            running += 1
        jobs = [self.sm.training_jobs[j] for j in tuning.trials]
        done = all(j.training_job_status in ("Completed", "Failed", "Stopped") for j in jobs)
        moto_job = self.sm.hyper_parameter_tuning_jobs[name]
        if done and (tuning.stop or len(tuning.trials) == len(tuning.draws)):
            if tuning.failure:
                moto_job.hyper_parameter_tuning_job_status = "Failed"
            elif tuning.stop:
                moto_job.hyper_parameter_tuning_job_status = "Stopped"
            else:  # fewer than 5 trials, all failed: what SageMaker says then is not documented; Completed here
                moto_job.hyper_parameter_tuning_job_status = "Completed"
            moto_job.hyper_parameter_tuning_end_time = time.time()

    def _objective(self, name: str, job: Any) -> float | None:
        metric = self.tunings[name].request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]
        values = [m["Value"] for m in job.final_metric_data_list or [] if m["MetricName"] == metric["MetricName"]]
        return float(values[-1]) if values else None

    def _trial_summary(self, name: str, job_name: str) -> dict[str, Any]:
        tuning = self.tunings[name]
        job = self.sm.training_jobs[job_name]
        ranged = {r["Name"] for kind in tuning.request["HyperParameterTuningJobConfig"]["ParameterRanges"].values()
                  for r in kind}  # fmt: skip
        summary: dict[str, Any] = {
            "TrainingJobName": job_name, "TrainingJobArn": job.arn, "TuningJobName": name,
            "CreationTime": job.creation_time, "TrainingJobStatus": job.training_job_status,
            "TunedHyperParameters": {k: v for k, v in job.hyper_parameters.items() if k in ranged},
        }  # fmt: skip
        value = self._objective(name, job)
        metric = tuning.request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]
        if value is not None:
            summary["FinalHyperParameterTuningJobObjectiveMetric"] = {"Type": metric["Type"],
                                                                       "MetricName": metric["MetricName"],
                                                                       "Value": value}  # fmt: skip
        if job.training_job_status in ("InProgress", "Stopping"):
            summary["ObjectiveStatus"] = "Pending"
        else:
            summary["ObjectiveStatus"] = "Succeeded" if value is not None else "Failed"
        if job.training_job_status == "Failed":
            summary["FailureReason"] = job.failure_reason
        return summary

    def _no_tuning(self, name: str, start_response: Any) -> Iterator[bytes]:
        return self._error(start_response, 400, "ResourceNotFound",
                           f"Amazon SageMaker can't find a tuning job with name {name}")  # fmt: skip

    def _op_DescribeHyperParameterTuningJob(self, params: dict[str, Any], environ: Any, start_response: Any
                                            ) -> Iterator[bytes]:  # fmt: skip
        name = params["HyperParameterTuningJobName"]
        if name not in self.tunings:
            return self._no_tuning(name, start_response)
        self._advance_tuning(name)
        tuning, moto_job = self.tunings[name], self.sm.hyper_parameter_tuning_jobs[name]
        jobs = [self.sm.training_jobs[j] for j in tuning.trials]
        status = [j.training_job_status for j in jobs]
        summaries = [self._trial_summary(name, j) for j in tuning.trials]
        objective = [s for s in summaries if "FinalHyperParameterTuningJobObjectiveMetric" in s]
        answer: dict[str, Any] = {
            "HyperParameterTuningJobName": name, "HyperParameterTuningJobArn": moto_job.arn,
            "HyperParameterTuningJobConfig": tuning.request["HyperParameterTuningJobConfig"],
            "TrainingJobDefinition": tuning.request["TrainingJobDefinition"],
            "HyperParameterTuningJobStatus": moto_job.hyper_parameter_tuning_job_status,
            "CreationTime": moto_job.creation_time, "LastModifiedTime": time.time(),
            "TrainingJobStatusCounters": {
                "Completed": status.count("Completed"),
                "InProgress": status.count("InProgress") + status.count("Stopping"),
                "RetryableError": 0, "NonRetryableError": status.count("Failed"), "Stopped": status.count("Stopped"),
            },
            "ObjectiveStatusCounters": {
                "Succeeded": len(objective), "Pending": sum(1 for s in summaries if s["ObjectiveStatus"] == "Pending"),
                "Failed": sum(1 for s in summaries if s["ObjectiveStatus"] == "Failed"),
            },
        }  # fmt: skip
        if objective:
            sign = 1 if tuning.request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"][
                "Type"] == "Maximize" else -1  # fmt: skip
            key = "FinalHyperParameterTuningJobObjectiveMetric"
            answer["BestTrainingJob"] = max(objective, key=lambda s: sign * s[key]["Value"])
        if moto_job.hyper_parameter_tuning_job_status in ("Completed", "Failed", "Stopped"):
            answer["HyperParameterTuningEndTime"] = moto_job.hyper_parameter_tuning_end_time
        if tuning.failure:
            answer["FailureReason"] = tuning.failure
        return self._json(start_response, 200, answer)

    def _op_ListTrainingJobsForHyperParameterTuningJob(self, params: dict[str, Any], environ: Any, start_response: Any
                                                       ) -> Iterator[bytes]:  # fmt: skip
        name = params["HyperParameterTuningJobName"]
        if name not in self.tunings:
            return self._no_tuning(name, start_response)
        summaries = [self._trial_summary(name, j) for j in self.tunings[name].trials]
        key = {"Name": "TrainingJobName", "CreationTime": "CreationTime", "Status": "TrainingJobStatus"}.get(
            params.get("SortBy", "CreationTime"), "CreationTime")  # fmt: skip
        summaries.sort(key=lambda s: (s[key], s["TrainingJobName"]), reverse=params.get("SortOrder") == "Descending")
        start = int(params.get("NextToken") or 0)
        size = int(params.get("MaxResults", 10))  # the API's default page is 10
        page: dict[str, Any] = {"TrainingJobSummaries": summaries[start : start + size]}
        if start + size < len(summaries):
            page["NextToken"] = str(start + size)
        return self._json(start_response, 200, page)

    def _op_StopHyperParameterTuningJob(self, params: dict[str, Any], environ: Any, start_response: Any
                                        ) -> Iterator[bytes]:  # fmt: skip
        name = params["HyperParameterTuningJobName"]
        if name not in self.tunings:
            return self._no_tuning(name, start_response)
        tuning = self.tunings[name]
        tuning.stop = True
        self.sm.hyper_parameter_tuning_jobs[name].hyper_parameter_tuning_job_status = "Stopping"
        for job in tuning.trials:
            if self.sm.training_jobs[job].training_job_status == "InProgress":
                self.sm.training_jobs[job].training_job_status = "Stopping"
                self.jobs[job].stop = True
        return self._json(start_response, 200, {})

    def _op_DescribeTrainingJob(self, params: dict[str, Any], environ: Any, start_response: Any) -> Iterator[bytes]:
        name = params["TrainingJobName"]
        if name in self.jobs:
            self._advance_job(name)
        tuning = getattr(self.sm.training_jobs.get(name), "tuning_job_name", None)
        if tuning is None:
            return self._moto(environ, start_response)
        status, out = self._forward("DescribeTrainingJob", params)  # moto's answer has no TuningJobArn
        out["TuningJobArn"] = self.sm.hyper_parameter_tuning_jobs[tuning].arn
        return self._json(start_response, status, out)

    def _op_StopTrainingJob(self, params: dict[str, Any], environ: Any, start_response: Any) -> Iterator[bytes]:
        name = params["TrainingJobName"]
        job = self.sm.training_jobs.get(name)
        if job is None:
            return self._error(start_response, 400, "ValidationException", f"Requested resource not found: {name}")
        if job.training_job_status != "InProgress":
            return self._error(start_response, 400, "ValidationException",
                               f"The request was rejected because the training job is in status "
                               f"{job.training_job_status}.")  # fmt: skip
        job.training_job_status, job.secondary_status = "Stopping", "Stopping"
        self.jobs[name].stop = True
        return self._json(start_response, 200, {})

    def _advance_job(self, name: str) -> None:
        state, job = self.jobs[name], self.sm.training_jobs[name]
        if job.training_job_status in ("Completed", "Failed", "Stopped"):
            return
        state.polls += 1
        if state.stop:
            job.training_job_status, job.secondary_status = "Stopped", "Stopped"
            return
        phase = state.polls // self.steps
        if phase < len(PHASES):
            if job.secondary_status != PHASES[phase]:
                job.secondary_status = PHASES[phase]
                job.secondary_status_transitions.append({"Status": PHASES[phase], "StartTime": time.time(),
                                                         "StatusMessage": f"{PHASES[phase]} phase"})  # fmt: skip
                if PHASES[phase] == "Training":
                    self._write_log(name, state.script.log)
            return
        script = state.script
        job.training_end_time = time.time()
        spot = bool(job.enable_managed_spot_training)
        # a failed job is billed for the time it ran too (DescribeTrainingJob: BillableTimeInSeconds)
        job.training_time_in_seconds = script.training_seconds
        job.billable_time_in_seconds = int(script.training_seconds * (0.3 if spot else 1.0))
        if script.failure:
            job.training_job_status, job.secondary_status = "Failed", "Failed"
            job.failure_reason = script.failure
            job.secondary_status_transitions.append({"Status": "Failed", "StartTime": time.time(),
                                                     "StatusMessage": "Training job failed"})  # fmt: skip
            return
        finals = {}
        for d in job.algorithm_specification.get("MetricDefinitions", []):
            for line in script.log:
                for m in re.finditer(d["Regex"], line):
                    finals[d["Name"]] = float(m.group(1))
        job.final_metric_data_list = [
            {"MetricName": k, "Value": v, "Timestamp": time.time()} for k, v in finals.items()
        ]
        self._put(job.model_artifacts["S3ModelArtifacts"], _targz(script.model_files))
        if script.output_files:
            self._put(job.model_artifacts["S3ModelArtifacts"].rsplit("/", 1)[0] + "/output.tar.gz",
                      _targz(script.output_files))  # fmt: skip
        end = "Stopped" if script.stopped_early else "Completed"
        job.training_job_status, job.secondary_status = end, end
        job.secondary_status_transitions.append({"Status": end, "StartTime": time.time(),
                                                 "StatusMessage": f"Training job {end.lower()}"})  # fmt: skip

    def _write_log(self, job: str, lines: list[str]) -> None:
        from moto.logs.models import logs_backends

        logs = logs_backends[ACCOUNT][REGION]
        if LOG_GROUP not in logs.groups:
            logs.create_log_group(LOG_GROUP, {})
        stream = f"{job}/algo-1-1700000000"
        logs.create_log_stream(LOG_GROUP, stream)
        now = int(time.time() * 1000)
        logs.put_log_events(
            LOG_GROUP, stream, [{"timestamp": now + i, "message": line} for i, line in enumerate(lines)]
        )

    def _put(self, uri: str, data: bytes) -> None:
        from moto.s3.models import s3_backends

        bucket, _, key = uri[len("s3://") :].partition("/")
        s3_backends[ACCOUNT]["aws"].put_object(bucket, key, data)

    # -- endpoints -----------------------------------------------------------------------
    def _op_CreateEndpoint(self, params: dict[str, Any], environ: Any, start_response: Any) -> Iterator[bytes]:
        name = params["EndpointName"]
        if name in self.sm.endpoints:
            return self._error(start_response, 400, "ValidationException",
                               f"Cannot create already existing endpoint \"arn:aws:sagemaker:{REGION}:{ACCOUNT}:"
                               f"endpoint/{name}\".")  # fmt: skip
        status, out = self._forward("CreateEndpoint", params)
        if status != 200:
            return self._json(start_response, status, out)
        ep = self.sm.endpoints[name]
        ep.endpoint_status = "Creating"
        if params.get("DeploymentConfig"):
            ep.last_deployment_config = params["DeploymentConfig"]
        self.pending[name] = _Pending("create", params["EndpointConfigName"], None, self.fail_create)
        self.fail_create = None
        return self._json(start_response, 200, out)

    def _op_UpdateEndpoint(self, params: dict[str, Any], environ: Any, start_response: Any) -> Iterator[bytes]:
        name, config = params["EndpointName"], params["EndpointConfigName"]
        ep = self.sm.endpoints.get(name)
        if ep is None:
            arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{name}"
            return self._error(start_response, 400, "ValidationException", f'Could not find endpoint "{arn}".')
        if config not in self.sm.endpoint_configs:
            return self._error(start_response, 400, "ValidationException",
                               f"Could not find endpoint configuration \"{config}\".")  # fmt: skip
        if ep.endpoint_status != "InService":
            return self._error(start_response, 400, "ValidationException",
                               f"Cannot update in-progress endpoint \"{name}\".")  # fmt: skip
        ep.endpoint_status = "Updating"
        ep.failure_reason = None
        if params.get("DeploymentConfig"):
            ep.last_deployment_config = params["DeploymentConfig"]
        self.pending[name] = _Pending("update", config, ep.endpoint_config_name, self.fail_update)
        self.fail_update = None
        return self._json(start_response, 200, {"EndpointArn": ep.arn})

    def _op_DescribeEndpoint(self, params: dict[str, Any], environ: Any, start_response: Any) -> Iterator[bytes]:
        name = params["EndpointName"]
        p = self.pending.get(name)
        ep = self.sm.endpoints.get(name)
        if p is not None and ep is not None:
            p.polls += 1
            if p.polls >= self.steps:
                self._settle(name, ep, p)
        return self._moto(environ, start_response)

    def _settle(self, name: str, ep: Any, p: _Pending) -> None:
        if p.kind == "create":
            del self.pending[name]
            if p.failure:
                ep.endpoint_status, ep.failure_reason = "Failed", p.failure
            else:
                ep.endpoint_status = "InService"
            return
        if p.kind == "update" and p.failure:  # blue/green: green failed, traffic never left blue
            ep.endpoint_status = "RollingBack"
            ep.failure_reason = p.failure
            self.pending[name] = _Pending("rollback", p.previous or p.target, None, None)
            return
        del self.pending[name]
        cfg = self.sm.endpoint_configs[p.target]
        ep.endpoint_config_name = p.target
        ep.production_variants = ep._process_production_variants(cfg.production_variants)
        ep.endpoint_status = "InService"
        ep.last_modified_time = time.time()

    def _op_DeleteEndpoint(self, params: dict[str, Any], environ: Any, start_response: Any) -> Iterator[bytes]:
        self.pending.pop(params["EndpointName"], None)
        return self._moto(environ, start_response)

    # -- Model Monitor -------------------------------------------------------------------
    # What SageMaker does, as its API reference and Developer Guide say it:
    # - a processing job goes InProgress, then Completed/Failed/Stopped (DescribeProcessingJob,
    #   ProcessingJobStatus), with FailureReason when it failed; names are unique per account and
    #   region: a second create is ResourceInUse (CreateProcessingJob, Errors);
    # - the Model Monitor analyzer, run as a baselining job (Developer Guide, "Create a Baseline";
    #   the SDK's DefaultModelMonitor.suggest_baseline), reads the dataset at its `dataset_source`
    #   in the format of `dataset_format` and writes statistics.json and constraints.json to its
    #   `output_path`, which the job uploads to the output's S3Uri; the files' shapes are the
    #   Developer Guide's "Schema for Statistics" and "Schema for Constraints" (a headerless CSV's
    #   columns are named _c0, _c1, ... as Spark names them);
    # - Describe* of something that does not exist is ResourceNotFound (the operations' Errors in the
    #   service model); a job definition or schedule name already taken is ResourceInUse;
    # - a schedule is Pending, then Scheduled (DescribeMonitoringSchedule, MonitoringScheduleStatus);
    #   UpdateMonitoringSchedule replaces its MonitoringScheduleConfig.
    def _arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{name.lower()}"

    def _not_found(self, start_response: Any, what: str) -> Iterator[bytes]:
        return self._error(start_response, 400, "ResourceNotFound", f"Could not find {what}.")

    def _op_CreateProcessingJob(self, params: dict[str, Any], environ: Any, start_response: Any) -> Iterator[bytes]:
        name = params["ProcessingJobName"]
        if name in self.processing:
            arn = self._arn("processing-job", name)
            return self._error(start_response, 400, "ResourceInUse", f"Job name must be unique within an AWS "
                               f"account and region, and a job with this name already exists ({arn})")  # fmt: skip
        self.processing[name] = {"request": params, "status": "InProgress", "polls": 0, "created": time.time(),
                                 "failure": self.baseline_failure}  # fmt: skip
        return self._json(start_response, 200, {"ProcessingJobArn": self._arn("processing-job", name)})

    def _op_DescribeProcessingJob(self, params: dict[str, Any], environ: Any, start_response: Any) -> Iterator[bytes]:
        name = params["ProcessingJobName"]
        job = self.processing.get(name)
        if job is None:
            return self._not_found(start_response, f"requested job with name {name}")
        if job["status"] == "InProgress":
            job["polls"] += 1
            if job["polls"] >= self.steps:
                self._finish_processing(job)
        req = job["request"]
        out = {k: req[k] for k in ("ProcessingJobName", "ProcessingInputs", "ProcessingOutputConfig",
                                   "ProcessingResources", "StoppingCondition", "AppSpecification", "Environment",
                                   "RoleArn") if k in req}  # fmt: skip
        out.update(ProcessingJobArn=self._arn("processing-job", name), ProcessingJobStatus=job["status"],
                   CreationTime=job["created"], LastModifiedTime=time.time())  # fmt: skip
        if job["status"] == "Failed":
            out["FailureReason"] = job["failure"]
        if job["status"] in ("Completed", "Failed"):
            out["ProcessingEndTime"] = time.time()
        return self._json(start_response, 200, out)

    def _finish_processing(self, job: dict[str, Any]) -> None:
        if job["failure"]:
            job["status"] = "Failed"
            return
        job["status"] = "Completed"
        req = job["request"]
        env = req.get("Environment", {})
        if not self.baseline_writes or "dataset_format" not in env:
            return
        fmt = json.loads(env["dataset_format"])
        rows, names = _read_dataset(req["ProcessingInputs"][0]["S3Input"]["S3Uri"], fmt)
        out = req["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"].rstrip("/")
        stats, constraints = _baseline(rows, names)
        self._put(f"{out}/statistics.json", json.dumps(stats).encode())
        self._put(f"{out}/constraints.json", json.dumps(constraints).encode())

    def _op_CreateDataQualityJobDefinition(self, params: dict[str, Any], environ: Any, start_response: Any
                                           ) -> Iterator[bytes]:  # fmt: skip
        name = params["JobDefinitionName"]
        if name in self.job_definitions:
            return self._error(start_response, 400, "ResourceInUse", f"Job definition {name} already exists.")
        self.job_definitions[name] = {"request": params, "created": time.time()}
        return self._json(start_response, 200, {"JobDefinitionArn": self._arn("data-quality-job-definition", name)})

    def _op_DescribeDataQualityJobDefinition(self, params: dict[str, Any], environ: Any, start_response: Any
                                             ) -> Iterator[bytes]:  # fmt: skip
        name = params["JobDefinitionName"]
        d = self.job_definitions.get(name)
        if d is None:
            return self._not_found(start_response, f"job definition {name}")
        out = {k: v for k, v in d["request"].items() if k != "Tags"}
        out.update(JobDefinitionArn=self._arn("data-quality-job-definition", name), CreationTime=d["created"])
        return self._json(start_response, 200, out)

    def _op_CreateMonitoringSchedule(self, params: dict[str, Any], environ: Any, start_response: Any
                                     ) -> Iterator[bytes]:  # fmt: skip
        name = params["MonitoringScheduleName"]
        if name in self.schedules:
            return self._error(start_response, 400, "ResourceInUse", f"Monitoring schedule {name} already exists.")
        problem = self._schedule_problem(params["MonitoringScheduleConfig"])
        if problem:
            return self._error(start_response, 400, "ValidationException", problem)
        now = time.time()
        self.schedules[name] = {"config": params["MonitoringScheduleConfig"], "status": "Pending", "created": now,
                                "modified": now, "polls": 0}  # fmt: skip
        return self._json(start_response, 200, {"MonitoringScheduleArn": self._arn("monitoring-schedule", name)})

    def _schedule_problem(self, config: dict[str, Any]) -> str | None:
        definition = config.get("MonitoringJobDefinitionName")
        if definition not in self.job_definitions:
            return f"Could not find job definition {definition}."
        if config.get("MonitoringType") != "DataQuality":
            return f"Job definition {definition} is a DataQuality job definition, not {config.get('MonitoringType')}."
        return None

    def _op_UpdateMonitoringSchedule(self, params: dict[str, Any], environ: Any, start_response: Any
                                     ) -> Iterator[bytes]:  # fmt: skip
        name = params["MonitoringScheduleName"]
        sched = self.schedules.get(name)
        if sched is None:
            return self._not_found(start_response, f"monitoring schedule {name}")
        problem = self._schedule_problem(params["MonitoringScheduleConfig"])
        if problem:
            return self._error(start_response, 400, "ValidationException", problem)
        sched.update(config=params["MonitoringScheduleConfig"], status="Pending", modified=time.time(), polls=0)
        return self._json(start_response, 200, {"MonitoringScheduleArn": self._arn("monitoring-schedule", name)})

    def _op_DescribeMonitoringSchedule(self, params: dict[str, Any], environ: Any, start_response: Any
                                       ) -> Iterator[bytes]:  # fmt: skip
        name = params["MonitoringScheduleName"]
        sched = self.schedules.get(name)
        if sched is None:
            return self._not_found(start_response, f"monitoring schedule {name}")
        sched["polls"] += 1
        if sched["status"] == "Pending" and sched["polls"] >= self.steps:
            sched["status"] = "Scheduled"
        definition = self.job_definitions[sched["config"]["MonitoringJobDefinitionName"]]["request"]
        return self._json(start_response, 200, {
            "MonitoringScheduleArn": self._arn("monitoring-schedule", name), "MonitoringScheduleName": name,
            "MonitoringScheduleStatus": sched["status"], "MonitoringType": sched["config"]["MonitoringType"],
            "CreationTime": sched["created"], "LastModifiedTime": sched["modified"],
            "MonitoringScheduleConfig": sched["config"],
            "EndpointName": definition["DataQualityJobInput"]["EndpointInput"]["EndpointName"],
        })  # fmt: skip

    def _invoke(self, name: str, body: bytes, environ: Any, start_response: Any) -> Iterator[bytes]:
        ep = self.sm.endpoints.get(name)
        if ep is None or ep.endpoint_status not in ("InService", "Updating", "RollingBack"):
            data = json.dumps({"message": f"Endpoint {name} of account {ACCOUNT} not found."}).encode()
            start_response("400 Bad Request", [("Content-Type", "application/json"),
                                               ("x-amzn-ErrorType", "ValidationError")])  # fmt: skip
            return iter([data])
        cfg = self.sm.endpoint_configs[ep.endpoint_config_name]
        model = cfg.production_variants[0]["ModelName"]
        for prefix, (status, message) in self.model_errors.items():
            if model.startswith(prefix):
                data = json.dumps({"message": f"Received server error ({status}) from primary with message "
                                   f"\"{message}\".", "OriginalStatusCode": status, "OriginalMessage": message,
                                   "LogStreamArn": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/"
                                   f"Endpoints/{name}"}).encode()  # fmt: skip
                start_response("424 Failed Dependency", [("Content-Type", "application/json"),
                                                         ("x-amzn-ErrorType", "ModelError")])  # fmt: skip
                return iter([data])
        accept = environ.get("HTTP_ACCEPT") or "application/json"
        answer = json.dumps({"model": model, "request": body.decode("utf-8", "replace")}).encode()
        start_response("200 OK", [("Content-Type", accept), ("x-Amzn-Invoked-Production-Variant", "AllTraffic")])
        return iter([answer])


def _draws(config: dict[str, Any]) -> list[dict[str, str]]:
    """Each trial's values as SageMaker passes them: strings, within the ranges."""
    ranges = config.get("ParameterRanges", {})
    categorical = ranges.get("CategoricalParameterRanges", [])
    if config["Strategy"] == "Grid":
        names = [r["Name"] for r in categorical]
        combos = itertools.product(*(r["Values"] for r in categorical))
        return [dict(zip(names, combo, strict=True)) for combo in combos]
    rng = random.Random(config.get("RandomSeed", 0))
    out = []
    for _ in range(config["ResourceLimits"]["MaxNumberOfTrainingJobs"]):
        values = {r["Name"]: rng.choice(r["Values"]) for r in categorical}
        for r in ranges.get("IntegerParameterRanges", []):
            values[r["Name"]] = str(rng.randint(int(r["MinValue"]), int(r["MaxValue"])))
        for r in ranges.get("ContinuousParameterRanges", []):
            lo, hi = float(r["MinValue"]), float(r["MaxValue"])
            if r.get("ScalingType") == "Logarithmic":
                x = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            else:
                x = rng.uniform(lo, hi)
            values[r["Name"]] = repr(min(max(x, lo), hi))
        out.append(values)
    return out


def _read_dataset(uri: str, fmt: dict[str, Any]) -> tuple[list[list[Any]], list[str]]:
    """The rows of a baselining job's dataset (every object under the prefix, in moto's S3)."""
    import csv

    from moto.s3.models import s3_backends

    s3 = s3_backends[ACCOUNT]["aws"]
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    keys, _, _, _ = s3.list_objects(s3.get_bucket(bucket), prefix, None, None, None)
    rows: list[list[Any]] = []
    names: list[str] = []
    for key in sorted(keys, key=lambda k: k.name):
        text = key.value.decode("utf-8", "replace")
        if "csv" in fmt:
            lines = list(csv.reader(text.splitlines()))
            if fmt["csv"].get("header") and lines:
                names, lines = names or lines[0], lines[1:]
            rows += [r for r in lines if r]
        else:
            for line in text.splitlines():
                if line.strip():
                    obj = json.loads(line)
                    names = names or list(obj)
                    rows.append([obj.get(n) for n in names])
    width = max((len(r) for r in rows), default=0)
    return rows, names or [f"_c{i}" for i in range(width)]


def _baseline(rows: list[list[Any]], names: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """statistics.json and constraints.json as the analyzer writes them (Developer Guide, "Schema
    for Statistics" and "Schema for Constraints"), for the features of `rows`."""
    features, constraints = [], []
    for i, name in enumerate(names):
        cells = [r[i] if i < len(r) else None for r in rows]
        present = [c for c in cells if c not in (None, "")]
        try:
            nums = [float(c) for c in present]
        except (TypeError, ValueError):
            nums = []
        common = {"num_present": len(present), "num_missing": len(cells) - len(present)}
        if nums and len(nums) == len(present):
            kind = "Integral" if all(x.is_integer() for x in nums) else "Fractional"
            mean = sum(nums) / len(nums)
            std = (sum((x - mean) ** 2 for x in nums) / len(nums)) ** 0.5
            features.append({"name": name, "inferred_type": kind, "numerical_statistics": {
                "common": common, "mean": mean, "sum": sum(nums), "std_dev": std, "min": min(nums),
                "max": max(nums)}})  # fmt: skip
            constraints.append({"name": name, "inferred_type": kind, "completeness": len(present) / max(len(cells), 1),
                                "num_constraints": {"is_non_negative": min(nums) >= 0}})  # fmt: skip
        else:
            kind = "String"
            features.append({"name": name, "inferred_type": kind, "string_statistics": {
                "common": common, "distinct_count": float(len(set(map(str, present))))}})  # fmt: skip
            constraints.append({"name": name, "inferred_type": kind,
                                "completeness": len(present) / max(len(cells), 1)})  # fmt: skip
    stats = {"version": 0.0, "dataset": {"item_count": len(rows)}, "features": features}
    distribution = {"perform_comparison": "Enabled", "comparison_threshold": 0.1, "comparison_method": "Robust"}
    config = {"evaluate_constraints": "Enabled", "emit_metrics": "Enabled", "datatype_check_threshold": 1.0,
              "domain_content_threshold": 1.0, "distribution_constraints": distribution}  # fmt: skip
    return stats, {"version": 0.0, "features": constraints, "monitoring_config": config}


def _targz(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


@contextmanager
def serve(fake: FakeSageMaker) -> Iterator[str]:
    """Serve `fake` on 127.0.0.1; yields its URL (for AWS_ENDPOINT_URL)."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, fake, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
