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
- InvokeEndpoint needs an InService endpoint and answers for the model behind it.

Faults are injected per test: throttling, a failing job, a failing endpoint create/update,
a model that errors on invocation.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import threading
import time
from collections.abc import Iterator
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
    training_seconds: int = 120


@dataclass
class _Job:
    script: JobScript
    polls: int = 0
    stop: bool = False


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
        job = self.sm.training_jobs[name]
        job.algorithm_specification = params["AlgorithmSpecification"]  # moto replaces MetricDefinitions
        job.training_job_status, job.secondary_status = "InProgress", "Starting"
        job.final_metric_data_list = []
        job.secondary_status_transitions = [{"Status": "Starting", "StartTime": time.time(),
                                             "StatusMessage": "Launching requested ML instances"}]  # fmt: skip
        job.training_end_time = None
        self.jobs[name] = _Job(self.script)
        return self._json(start_response, 200, out)

    def _op_DescribeTrainingJob(self, params: dict[str, Any], environ: Any, start_response: Any) -> Iterator[bytes]:
        name = params["TrainingJobName"]
        if name in self.jobs:
            self._advance_job(name)
        return self._moto(environ, start_response)

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
        spot = bool(job.enable_managed_spot_training)
        job.training_time_in_seconds = script.training_seconds
        job.billable_time_in_seconds = int(script.training_seconds * (0.3 if spot else 1.0))
        self._put(job.model_artifacts["S3ModelArtifacts"], _targz(script.model_files))
        if script.output_files:
            self._put(job.model_artifacts["S3ModelArtifacts"].rsplit("/", 1)[0] + "/output.tar.gz",
                      _targz(script.output_files))  # fmt: skip
        job.training_job_status, job.secondary_status = "Completed", "Completed"
        job.secondary_status_transitions.append({"Status": "Completed", "StartTime": time.time(),
                                                 "StatusMessage": "Training job completed"})  # fmt: skip

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
