"""SageMaker endpoints: one declared endpoint (its requests, live state, smoke requests) and
the steps of a rollout to it (verbs/rollout.py runs them)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .._untrusted import guard, inline
from ..config import Config, EndpointConfig
from ..errors import (
    Busy,
    DeployFailed,
    NotFound,
    Refused,
)
from . import Effects, Live, RolloutHost, StepFailed, sagemaker_types

if TYPE_CHECKING:
    from ..records import EndpointState, ModelVersion
from .aws import Answer, Aws, aws_tags, s3_objects, short_hash, slug, split_s3
from .sagemaker import VARIANT, image_for, model_data_uri, serving_env
from .sagemaker_registry import SageMakerRegistry

BUSY_STATES = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting", "UpdateRollbackFailed")


# -- endpoints -----------------------------------------------------------------------------
class SageMakerEndpoint:
    """One declared SageMaker endpoint: blue/green updates with SageMaker's deployment guardrails."""

    def __init__(self, aws: Aws, cfg: Config, ep: EndpointConfig, say: Callable[[str], None]):
        self.aws, self.cfg, self.ep, self.say = aws, cfg, ep, say
        self.instance_count = ep.instance_count  # an auto-scaled endpoint keeps the count it scaled to

    def follow_autoscaling(self, d: Answer) -> None:
        """An endpoint under Application Auto Scaling keeps its current instance count (a deploy
        does not undo the scaling), and its instance type cannot change while it is registered:
        SageMaker refuses that update, so it is refused here first, with the way out."""
        resource = f"endpoint/{self.ep.name}/variant/{VARIANT}"
        try:
            out = self.aws.client("application-autoscaling").describe_scalable_targets(
                ServiceNamespace="sagemaker", ResourceIds=[resource],
                ScalableDimension="sagemaker:variant:DesiredInstanceCount")  # fmt: skip
        except self.aws.errors as exc:
            raise self.aws.error(exc, f"read the auto scaling of endpoint {self.ep.name}") from None
        targets = out.get("ScalableTargets", [])
        if not targets:
            return
        current = self.aws.describe("describe_endpoint_config", "describe an endpoint config",
                                    EndpointConfigName=d["EndpointConfigName"]) or {}  # fmt: skip
        variant = (current.get("ProductionVariants") or [{}])[0]
        if variant.get("InstanceType") and variant["InstanceType"] != self.ep.instance_type:
            raise Refused(
                f"endpoint {self.ep.name} is auto scaled ({resource}) and SageMaker does not change the instance type "
                f"({variant['InstanceType']} -> {self.ep.instance_type}) of an auto-scaled variant: deregister the "
                "scalable target, deploy, then register it again"
            )
        variants = d.get("ProductionVariants", [])
        live = [v.get("CurrentInstanceCount") for v in variants if v.get("VariantName") == VARIANT]
        t = targets[0]
        count = live[0] if live and live[0] else self.ep.instance_count
        self.instance_count = max(int(t.get("MinCapacity", 1)), min(int(t.get("MaxCapacity", count)), int(count)))

    def names(self, mv: ModelVersion, model_data: str) -> tuple[str, str]:
        """Model and EndpointConfig names carry the version and a digest of their content, so a
        name is never reused for anything else."""
        image = image_for(self.cfg.training.sagemaker, self.cfg.serving.image_uri, self.aws.region, "inference",
                          self.ep.instance_type)  # fmt: skip
        env = serving_env(self.cfg, self.aws.region)
        model = slug(f"{self.cfg.project}-v{mv.version}")[:54] + "-" + short_hash(
            image, model_data, mv.artifact_sha256, env, self.aws.cfg.role)  # fmt: skip
        config = slug(f"{self.ep.name}-v{mv.version}")[:54] + "-" + short_hash(
            model, self.ep.instance_type, self.instance_count, self.aws.cfg.kms_key, self.data_capture())  # fmt: skip
        return model, config

    def data_capture(self) -> dict[str, object] | None:
        """The endpoint config's DataCaptureConfig, from `capture:` (the SDK's DataCaptureConfig with
        both capture modes); the model's execution role writes the records to the destination."""
        c = self.ep.capture
        if c is None:
            return None
        out: dict[str, object] = {
            "EnableCapture": True,
            "InitialSamplingPercentage": c.percent,
            "DestinationS3Uri": c.destination or self.aws.s3_uri("capture"),
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"CsvContentTypes": list(c.csv_content_types),
                                         "JsonContentTypes": list(c.json_content_types)},
        }  # fmt: skip
        if self.aws.cfg.kms_key:
            out["KmsKeyId"] = self.aws.cfg.kms_key
        return out

    def model_request(self, mv: ModelVersion, model: str, model_data: str) -> dict[str, object]:
        image = image_for(self.cfg.training.sagemaker, self.cfg.serving.image_uri, self.aws.region, "inference",
                          self.ep.instance_type)  # fmt: skip
        req: dict[str, object] = {
            "ModelName": model,
            "PrimaryContainer": {"Image": image, "ModelDataUrl": model_data,
                                 "Environment": serving_env(self.cfg, self.aws.region)},
            "ExecutionRoleArn": self.aws.cfg.role,
            "Tags": aws_tags({"mlops-ci:project": self.cfg.project, "mlops-ci:sha": mv.sha,
                           "mlops-ci:version": str(mv.version), "mlops-ci:artifact-sha256": mv.artifact_sha256}),
        }  # fmt: skip
        sm = self.cfg.training.sagemaker
        if sm and (sm.subnets or sm.security_group_ids):
            req["VpcConfig"] = {"Subnets": list(sm.subnets), "SecurityGroupIds": list(sm.security_group_ids)}
        return req

    def config_request(self, mv: ModelVersion, model: str, config: str) -> dict[str, object]:
        req: dict[str, object] = {
            "EndpointConfigName": config,
            "ProductionVariants": [{"VariantName": VARIANT, "ModelName": model, "InstanceType": self.ep.instance_type,
                                    "InitialInstanceCount": self.instance_count, "InitialVariantWeight": 1.0}],
            "Tags": aws_tags({"mlops-ci:project": self.cfg.project, "mlops-ci:sha": mv.sha,
                           "mlops-ci:version": str(mv.version)}),
        }  # fmt: skip
        if self.aws.cfg.kms_key and not sagemaker_types.has_local_storage(self.ep.instance_type):
            req["KmsKeyId"] = self.aws.cfg.kms_key  # the ML storage volume's key; local storage refuses one
        capture = self.data_capture()
        if capture is not None:
            req["DataCaptureConfig"] = capture
        return req

    def deployment_config(self) -> dict[str, object]:
        d = self.ep.deployment
        routing: dict[str, object] = {"Type": d.strategy.upper(), "WaitIntervalInSeconds": d.wait_seconds}
        if d.strategy == "canary":
            routing["CanarySize"] = {"Type": "CAPACITY_PERCENT", "Value": d.percent}
        elif d.strategy == "linear":
            routing["LinearStepSize"] = {"Type": "CAPACITY_PERCENT", "Value": d.percent}
        policy: dict[str, object] = {"TrafficRoutingConfiguration": routing,
                                  "TerminationWaitInSeconds": d.termination_wait_seconds}  # fmt: skip
        if d.max_execution_timeout:
            policy["MaximumExecutionTimeoutInSeconds"] = d.max_execution_timeout
        out: dict[str, object] = {"BlueGreenUpdatePolicy": policy}
        if d.alarms:
            out["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": a} for a in d.alarms]}
        return out

    def endpoint_request(self, config: str, mv: ModelVersion, exists: bool) -> tuple[str, dict[str, object]]:
        if exists:
            return "UpdateEndpoint", {"EndpointName": self.ep.name, "EndpointConfigName": config,
                                      "DeploymentConfig": self.deployment_config()}  # fmt: skip
        return "CreateEndpoint", {"EndpointName": self.ep.name, "EndpointConfigName": config,
                                  "DeploymentConfig": self.deployment_config(),
                                  "Tags": aws_tags({"mlops-ci:project": self.cfg.project})}  # fmt: skip

    # live state ------------------------------------------------------------------------
    def describe(self) -> Answer | None:
        return self.aws.describe("describe_endpoint", f"describe endpoint {self.ep.name}", EndpointName=self.ep.name)

    def live(self) -> dict[str, object]:
        """status, config, version, sha, instance type and count of what the endpoint serves."""
        d = self.describe()
        if d is None:
            return {"status": "NotDeployed"}
        out: dict[str, object] = {"status": d["EndpointStatus"], "config": d.get("EndpointConfigName"),
                               "failure": d.get("FailureReason")}  # fmt: skip
        cfg = self.aws.describe("describe_endpoint_config", "describe an endpoint config",
                                EndpointConfigName=d["EndpointConfigName"])  # fmt: skip
        if cfg:
            variant = (cfg.get("ProductionVariants") or [{}])[0]
            out["instance_type"] = variant.get("InstanceType")
            out["instance_count"] = variant.get("InitialInstanceCount")
            tags = self.aws.call("sagemaker", "list_tags", "read endpoint config tags",
                                 ResourceArn=cfg["EndpointConfigArn"]).get("Tags", [])  # fmt: skip
            t = {x["Key"]: x["Value"] for x in tags}
            out["version"] = int(t["mlops-ci:version"]) if t.get("mlops-ci:version", "").isdigit() else None
            out["sha"] = t.get("mlops-ci:sha")
        return out

    def wait(self, want: str, timeout: float) -> Answer:
        """Poll until the endpoint settles (InService or Failed); report status changes."""
        from ..progress import Wait

        setting = self.cfg.endpoint_setting(self.ep.name, "ready_timeout")
        wait = Wait(lambda line: self.say(guard(line)), f"{self.ep.name}: waiting for {want}", timeout, setting)
        while True:
            d = self.describe()
            if d is None:
                raise DeployFailed(f"endpoint {self.ep.name} disappeared while waiting for it")
            status = d["EndpointStatus"]
            reason = f" ({inline(d['FailureReason'])})" if d.get("FailureReason") else ""
            wait.update(f"{status}{reason}")
            if status in ("InService", "Failed", "OutOfService", "UpdateRollbackFailed"):
                wait.close(status)
                return d
            if wait.expired():
                wait.close(f"still {status}")
                raise DeployFailed(
                    f"endpoint {self.ep.name} still {status} after {timeout:g}s (waiting for {want}), the limit "
                    f"{setting} sets; it keeps going in SageMaker: check the console, then `mlops-ci status`"
                )
            time.sleep(self.aws.cfg.poll_seconds)

    def create_once(self, kind: str, request: dict[str, object]) -> bool:
        """CreateModel / CreateEndpointConfig unless it exists (same name = same content)."""
        op = {
            "Model": ("describe_model", "ModelName", "create_model"),
            "EndpointConfig": ("describe_endpoint_config", "EndpointConfigName", "create_endpoint_config"),
        }[kind]
        name = request[op[1]]
        if self.aws.describe(op[0], f"describe {kind} {name}", **{op[1]: name}) is not None:
            return False
        try:
            getattr(self.aws.client("sagemaker"), op[2])(**request)
        except self.aws.errors as exc:
            if "already exist" in self.aws.message(exc):
                return False
            raise self.aws.error(exc, f"create {kind} {name}") from None
        return True

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[int, str, bytes]:
        try:
            r = self.aws.client("sagemaker-runtime").invoke_endpoint(
                EndpointName=self.ep.name, Body=body, ContentType=content_type, Accept=accept)  # fmt: skip
        except self.aws.errors as exc:
            code = self.aws.code(exc)
            if code == "ModelError":
                resp = getattr(exc, "response", {})
                status = int(resp.get("OriginalStatusCode") or 500)
                return status, "text/plain", str(resp.get("OriginalMessage") or self.aws.message(exc)).encode()
            if code == "ValidationError" or self.aws.missing(exc):
                raise NotFound(f"endpoint {self.ep.name} is not serving: {self.aws.message(exc)}") from None
            raise self.aws.error(exc, f"invoke endpoint {self.ep.name}") from None
        return 200, str(r.get("ContentType", "")), r["Body"].read()

    def smoke(self) -> str | None:
        for i, s in enumerate(self.ep.smoke, start=1):
            status, _, data = self.invoke(s.body.encode(), s.content_type, s.accept)
            text = data.decode("utf-8", "replace")
            if status != s.expect_status:
                return f"smoke request {i} got HTTP {status} (expected {s.expect_status}): {text[:200]}"
            if s.expect_contains is not None and s.expect_contains not in text:
                return f"smoke request {i}: response does not contain {s.expect_contains!r}: {text[:200]}"
        return None

    def busy(self, d: Answer) -> None:
        if d["EndpointStatus"] in BUSY_STATES:
            raise Busy(f"endpoint {self.ep.name} is {d['EndpointStatus']} (another deploy, or SageMaker itself); "
                       "wait for it to settle, then deploy again")  # fmt: skip


def capture_destination(aws: Aws, ep: EndpointConfig) -> str:
    """Where a SageMaker endpoint's Data Capture goes: `capture.destination`, else <store>/capture."""
    return ep.capture.destination if ep.capture and ep.capture.destination else aws.s3_uri("capture")


def captured(aws: Aws, ep: EndpointConfig, since: float, max_files: int) -> list[str]:
    """The texts of the Data Capture files of endpoint `ep` from the hour of `since` on, the newest
    `max_files` of them. SageMaker writes {destination}/{endpoint}/{variant}/yyyy/mm/dd/hh/*.jsonl
    (AWS docs, "Capture data from real-time endpoint": "s3://.../endpoint-name/AllTraffic/2020/05/
    26/23/"), so the keys sort by hour and the listing starts after the window's first hour."""
    bucket, prefix = split_s3(capture_destination(aws, ep))
    base = f"{prefix.strip('/')}/{ep.name}/{VARIANT}/".lstrip("/")
    first = base + time.strftime("%Y/%m/%d/%H", time.gmtime(since))
    where = f"list the data capture of endpoint {ep.name} (s3://{bucket}/{base})"
    listed = s3_objects(aws, f"s3://{bucket}/{base}", where, start_after=first)
    keys = [key for key, _, _ in listed if key.endswith(".jsonl")]
    texts = []
    for key in sorted(keys)[-max_files:]:
        got = aws.call("s3", "get_object", f"read the data capture file s3://{bucket}/{key}", Bucket=bucket, Key=key)
        texts.append(got["Body"].read().decode("utf-8", errors="replace"))
    return texts


def runtime_url(region: str, name: str) -> str:
    return f"https://runtime.sagemaker.{region}.amazonaws.com/endpoints/{name}/invocations"


class SageMakerRollout:
    """deploy / rollback onto a SageMaker endpoint, for the endpoints front end (`host`),
    which owns resolution, the lock and the deployment history."""

    def __init__(self, host: RolloutHost, aws: Aws):
        self.host, self.aws = host, aws
        self.ws = host.ws
        self.cfg: Config = host.ws.cfg

    def endpoint(self, ep: EndpointConfig) -> SageMakerEndpoint:
        return SageMakerEndpoint(self.aws, self.cfg, ep, self.ws.say)

    def approved_package(self, mv: ModelVersion) -> str | None:
        """With the SageMaker registry, its package must exist and be Approved (a human may be
        the approver: registry.approval: PendingManualApproval)."""
        if not self.cfg.registry.kind.on_aws:  # the store is the registry: nothing else to ask
            return None
        pkg = SageMakerRegistry(self.aws, self.cfg).package_for(mv.sha)
        if pkg is None:
            raise Refused(f"{self.cfg.project} v{mv.version} is not in the SageMaker model registry; run "
                          f"`mlops-ci promote {mv.sha[:8]}` to register it")  # fmt: skip
        if pkg.get("ModelApprovalStatus") != "Approved":
            raise Refused(
                f"model package {pkg['ModelPackageArn']} is {pkg.get('ModelApprovalStatus')}, not Approved; approve "
                "it in SageMaker (aws sagemaker update-model-package --model-approval-status Approved) and deploy again"
            )
        return str(pkg["ModelPackageArn"])

    def steps(self, ep: EndpointConfig, mv: ModelVersion, fx: Effects) -> SageMakerSteps:
        return SageMakerSteps(self, ep, mv, fx)

    def _gone(self, name: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.aws.describe("describe_endpoint", f"describe endpoint {name}", EndpointName=name) is not None:
            if time.monotonic() > deadline:
                raise DeployFailed(f"endpoint {name} is still being deleted after {timeout:g}s; try again later")
            time.sleep(self.aws.cfg.poll_seconds)

    def stop(self, ep: EndpointConfig) -> None:
        """Delete the endpoint (its models and configs stay, so a rollback can recreate it)."""
        if self.endpoint(ep).describe() is None:
            raise NotFound(f"endpoint {ep.name} does not exist in SageMaker")
        self.aws.call("sagemaker", "delete_endpoint", f"delete endpoint {ep.name}", EndpointName=ep.name)

    def health(self, ep: EndpointConfig) -> dict[str, object]:
        return self.endpoint(ep).live()


class SageMakerSteps:
    """The steps of one rollout to a SageMaker endpoint (verbs/rollout.py runs them): model and
    endpoint config created once each (content-addressed names), then CreateEndpoint or a
    blue/green UpdateEndpoint, which SageMaker switches itself; the smoke requests go through the
    endpoint once it serves, and a failure rolls it back to the old config."""

    def __init__(self, rollout: SageMakerRollout, ep: EndpointConfig, mv: ModelVersion, fx: Effects):
        self.r, self.ep, self.mv, self.fx = rollout, ep, mv, fx
        self.aws, self.ws = rollout.aws, rollout.ws
        self.sme = rollout.endpoint(ep)
        self.d: Answer | None = None  # the endpoint as described under the lock
        self.artifact = Path()  # the verified artifact, once `live` has hashed it under the lock
        self.data, self.upload = "", False
        self.model = self.config = ""
        self.old = "nothing"  # how messages name what serves
        self.old_config: str | None = None  # the endpoint config serving when the rollout began

    def check(self) -> None:
        self.r.approved_package(self.mv)

    def live(self) -> Live:
        ep, mv, sme = self.ep, self.mv, self.sme
        d = self.d = sme.describe()
        if d is not None:
            sme.busy(d)
            if d["EndpointStatus"] not in ("Failed", "OutOfService"):
                sme.follow_autoscaling(d)
        # Hashed again under the lock (a read, in a dry run too): the artifact may have changed
        # while this deploy waited, and SageMaker is about to be pointed at it.
        self.artifact = self.ws.verify_artifact(mv.artifact_uri, mv.artifact_sha256, what=f"v{mv.version}")
        self.data, self.upload = model_data_uri(self.aws, mv, None)
        self.model, self.config = sme.names(mv, self.data)
        url = runtime_url(self.aws.region, ep.name)
        current = d is not None and d.get("EndpointConfigName") == self.config and d["EndpointStatus"] == "InService"
        state = self.r.host.store.endpoint_state(self.ws.cfg.project, ep.name)
        version = state.version if state and state.status == "InService" and d is not None else None
        in_service = d is not None and d["EndpointStatus"] == "InService"
        self.old_config = d.get("EndpointConfigName") if d is not None and in_service else None
        if version:
            self.old = f"v{version}"
        elif d is not None:
            self.old = f"endpoint config {d.get('EndpointConfigName')}"
        return Live(version=version, old=self.old, serving=self.old_config is not None, current=current, url=url)

    def url(self) -> str:
        return runtime_url(self.aws.region, self.ep.name)

    def start(self) -> None:
        ep, mv, sme, fx, say = self.ep, self.mv, self.sme, self.fx, self.ws.say
        if self.upload:
            fx("sagemaker", "s3:PutObject", self._upload, None, uri=self.data, sha256=mv.artifact_sha256)
        if self.aws.describe("describe_model", "describe a model", ModelName=self.model) is None:
            req = sme.model_request(mv, self.model, self.data)
            if fx("sagemaker", "CreateModel", lambda: sme.create_once("Model", req), False, request=req):
                say(f"{ep.name}: created model {self.model}")
        if (
            self.aws.describe("describe_endpoint_config", "describe an endpoint config", EndpointConfigName=self.config)
            is None
        ):
            req = sme.config_request(mv, self.model, self.config)
            if fx(
                "sagemaker", "CreateEndpointConfig", lambda: sme.create_once("EndpointConfig", req), False, request=req
            ):
                say(f"{ep.name}: created endpoint config {self.config}")
        d = self.d
        if d is not None and d["EndpointStatus"] in ("Failed", "OutOfService"):
            fx("sagemaker", "DeleteEndpoint", self._delete_broken, None, request={"EndpointName": ep.name})
            self.d = None

    def _upload(self) -> None:
        mv, artifact = self.mv, self.artifact
        if self.aws.upload_once(artifact, self.data, mv.artifact_sha256):
            self.ws.say(f"uploaded the model ({artifact.stat().st_size} bytes) to {self.data}")

    def _delete_broken(self) -> None:
        assert self.d is not None
        self.ws.say(f"{self.ep.name}: deleting the {self.d['EndpointStatus']} endpoint so that it can be created again")
        self.aws.call("sagemaker", "delete_endpoint", f"delete endpoint {self.ep.name}", EndpointName=self.ep.name)
        self.r._gone(self.ep.name)

    def verify(self) -> None:
        pass  # SageMaker checks the new fleet itself before it moves traffic (and its alarms, if any)

    def switch(self, record: Mapping[str, object]) -> None:
        op, req = self.sme.endpoint_request(self.config, self.mv, self.d is not None)
        self.fx("sagemaker", op, lambda: self._switch(op, req), None, request=req)

    def _switch(self, op: str, req: dict[str, object]) -> None:
        ep, aws, existed = self.ep, self.aws, self.d is not None
        self.ws.say(
            f"{ep.name}: {op} to {self.config} ({ep.deployment.strategy.replace('_', '-')} blue/green) from {self.old}"
        )
        try:
            getattr(aws.client("sagemaker"), "update_endpoint" if existed else "create_endpoint")(**req)
        except aws.errors as exc:
            raise StepFailed(aws.error(exc, f"{op} {ep.name}").message) from None
        final = self.sme.wait("InService", ep.ready_timeout)
        if final["EndpointStatus"] != "InService" or final.get("EndpointConfigName") != self.config:
            reason = final.get("FailureReason") or f"the endpoint ended {final['EndpointStatus']}"
            still = None
            if not existed and final["EndpointStatus"] != "InService":
                aws.call("sagemaker", "delete_endpoint", f"delete endpoint {ep.name}", EndpointName=ep.name)
                still = "the failed endpoint was deleted; nothing was serving before"
            elif final.get("EndpointConfigName") == self.old_config:
                still = f"SageMaker rolled back: {self.old} is still serving"
            raise StepFailed(reason, still)

    def verify_live(self) -> None:
        self.fx(
            "sagemaker",
            "InvokeEndpoint",
            self._smoke,
            None,
            endpoint=self.ep.name,
            requests=[s.body for s in self.ep.smoke],
        )

    def _smoke(self) -> None:
        ep, aws = self.ep, self.aws
        problem = self.sme.smoke()
        if not problem:
            return
        if self.old_config:
            self.ws.say(f"{ep.name}: smoke failed; rolling back to {self.old_config}")
            aws.call(
                "sagemaker",
                "update_endpoint",
                f"roll {ep.name} back",
                EndpointName=ep.name,
                EndpointConfigName=self.old_config,
            )
            back = self.sme.wait("the rollback", ep.ready_timeout)
            still = (
                f"rolled back: {self.old} is serving again"
                if back.get("EndpointConfigName") == self.old_config
                else f"the rollback ended {back['EndpointStatus']}: check the endpoint"
            )
        else:
            aws.call("sagemaker", "delete_endpoint", f"delete endpoint {ep.name}", EndpointName=ep.name)
            still = "the new endpoint was deleted; nothing was serving before"
        raise StepFailed(problem, still)

    def state(self) -> EndpointState:
        from ..records import EndpointState

        return EndpointState(
            project=self.ws.cfg.project,
            name=self.ep.name,
            url=self.url(),
            router_pid=None,
            router_port=None,
            server_pid=None,
            server_port=None,
            version=self.mv.version,
            sha=self.mv.sha,
            status="InService",
            updated=time.time(),
        )

    def retire(self) -> None:
        pass  # SageMaker retires the old fleet itself once the new one serves
