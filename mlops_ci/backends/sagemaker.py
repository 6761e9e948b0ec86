"""Amazon SageMaker: training jobs, the model registry and endpoints, through boto3.

Imported only when the config names SageMaker (`pip install mlops-ci[sagemaker]`). Every request
is built by a pure function, so that a dry run prints exactly what the real run then sends.
Names are derived from content (commit, config digest, version, artifact digest), so that a
re-run finds what an earlier run created instead of creating it twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol, TypedDict

from .._files import LinkOutside, files_under, pack_deterministic
from .._untrusted import guard, inline
from ..config import AwsConfig, Config, EndpointConfig
from ..errors import (
    BadCredentials,
    Busy,
    ConfigError,
    DeployFailed,
    MlopsCiError,
    NotFound,
    PermissionDenied,
    Refused,
    ServiceRefused,
    Transient,
)
from ..settings.sagemaker import SageMakerTraining
from . import Context, Effects, Live, RolloutHost, StepFailed, TrainingResult, TrainingSpec, sagemaker_types
from .local_training import METRICS_FILE, MetricScanner, encode_hyperparameters, read_metrics_file

if TYPE_CHECKING:
    from ..records import EndpointState, ModelVersion

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL = ("Completed", "Failed", "Stopped")
BUSY_STATES = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting", "UpdateRollbackFailed")
VARIANT = "AllTraffic"

# Registries of the SageMaker scikit-learn images (the SDK's image_uris table); other frameworks
# resolve through the SageMaker SDK when it is installed, or take an explicit image_uri.
_SKLEARN_ACCOUNTS = {
    "us-east-1": "683313688378",
    "us-east-2": "257758044811",
    "us-west-1": "746614075791",
    "us-west-2": "246618743249",
    "eu-west-1": "141502667606",
}


# -- what the services answer -----------------------------------------------------------------
# The fields of the AWS answers that are read here, as the service models define them (every
# one optional: the code reads each with .get, or only where the operation always returns it).
class _S3Object(TypedDict):
    Key: str
    ETag: str
    Size: int


class _S3Page(TypedDict, total=False):
    Contents: list[_S3Object]


class _JobSummary(TypedDict):
    TrainingJobName: str
    TrainingJobArn: str
    TrainingJobStatus: str


class _Transition(TypedDict, total=False):
    StatusMessage: str


class _MetricData(TypedDict):
    MetricName: str
    Value: float


class _ModelArtifacts(TypedDict, total=False):
    S3ModelArtifacts: str


class _ResourceConfig(TypedDict, total=False):
    InstanceType: str
    InstanceCount: int


class _Tag(TypedDict):
    Key: str
    Value: str


class _LogStream(TypedDict):
    logStreamName: str


class _LogEvent(TypedDict):
    message: str


class _PackageSummary(TypedDict, total=False):
    ModelPackageArn: str
    ModelApprovalStatus: str
    ModelPackageStatus: str


class _ScalableTarget(TypedDict, total=False):
    MinCapacity: int
    MaxCapacity: int


class _Variant(TypedDict, total=False):
    VariantName: str
    InstanceType: str
    InitialInstanceCount: int
    CurrentInstanceCount: int


class _Body(Protocol):
    def read(self) -> bytes: ...


class Answer(TypedDict, total=False):
    """An answer of one of the AWS operations called here: the fields read from any of them."""

    NextToken: str
    Metadata: dict[str, str]  # s3 HeadObject
    Tags: list[_Tag]  # ListTags
    # ListTrainingJobs, DescribeTrainingJob
    TrainingJobSummaries: list[_JobSummary]
    TrainingJobArn: str
    TrainingJobStatus: str
    SecondaryStatus: str
    SecondaryStatusTransitions: list[_Transition]
    FailureReason: str
    FinalMetricDataList: list[_MetricData]
    ModelArtifacts: _ModelArtifacts
    ResourceConfig: _ResourceConfig
    EnableManagedSpotTraining: bool
    BillableTimeInSeconds: int
    TrainingTimeInSeconds: int
    # CloudWatch Logs DescribeLogStreams, GetLogEvents
    logStreams: list[_LogStream]
    events: list[_LogEvent]
    nextForwardToken: str
    # the model registry
    ModelPackageSummaryList: list[_PackageSummary]
    ModelPackageArn: str
    ModelApprovalStatus: str
    ModelPackageStatus: str
    CustomerMetadataProperties: dict[str, str]
    # endpoints, their configs and their scaling
    EndpointStatus: str
    EndpointConfigName: str
    EndpointConfigArn: str
    ProductionVariants: list[_Variant]
    ScalableTargets: list[_ScalableTarget]
    # InvokeEndpoint
    ContentType: str
    Body: _Body


class _Paginator(Protocol):
    def paginate(self, **kwargs: object) -> Iterator[_S3Page]: ...


class Client(Protocol):
    """The calls made here on boto3 clients (each on the service that has it); the rest go
    through Aws.call and Aws.describe by operation name."""

    def get_paginator(self, operation: str, /) -> _Paginator: ...
    def head_object(self, **kwargs: object) -> Answer: ...
    def upload_file(self, Filename: str, Bucket: str, Key: str, ExtraArgs: dict[str, object] | None = None) -> None: ...
    def download_file(self, Bucket: str, Key: str, Filename: str) -> None: ...
    def create_training_job(self, **kwargs: object) -> Answer: ...
    def describe_log_streams(self, **kwargs: object) -> Answer: ...
    def get_log_events(self, **kwargs: object) -> Answer: ...
    def list_model_packages(self, **kwargs: object) -> Answer: ...
    def describe_scalable_targets(self, **kwargs: object) -> Answer: ...
    def invoke_endpoint(self, **kwargs: object) -> Answer: ...


def _slug(text: str) -> str:
    """A SageMaker resource name part: letters, digits and single dashes."""
    return re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9-]", "-", text)).strip("-") or "x"


def _short_hash(*parts: object) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def job_name(project: str, sha: str, config_digest: str, attempt: int) -> str:
    """Deterministic: a workflow re-run of the same commit and config finds the same job."""
    # The project part has a fixed length, so that every attempt shares one prefix (`jobs_of`).
    return f"{_slug(project)[:40].rstrip('-')}-{sha[:8]}-{config_digest[:8]}-{attempt}"


def image_for(sm: SageMakerTraining | None, explicit: str | None, region: str, what: str,
              instance_type: str | None = None) -> str:  # fmt: skip
    """The image URI for `what` (training | inference) on `instance_type` (default: the training one)."""
    if explicit:
        return explicit
    if sm is not None and sm.image_uri:
        return sm.image_uri
    if sm is None or sm.framework is None or sm.framework_version is None:
        raise ConfigError(f"no {what} image: set an image_uri, or training.sagemaker.framework and framework_version")
    scope = "training" if what == "training" else "inference"
    itype = instance_type or sm.instance_type
    if sm.framework == "sklearn":
        problem = sagemaker_types.sklearn_image_problem(itype, sm.framework_version, scope)
        if problem:
            raise ConfigError(problem)
        if region in _SKLEARN_ACCOUNTS:
            tag = sagemaker_types.sklearn_tag(itype, sm.framework_version, sm.py_version, scope)
            return f"{_SKLEARN_ACCOUNTS[region]}.dkr.ecr.{region}.amazonaws.com/sagemaker-scikit-learn:{tag}"
    try:  # SageMaker Python SDK v3 moved image_uris into sagemaker-core; v2 has it at the top
        from sagemaker.core import image_uris  # type: ignore[import-not-found]
    except ImportError:
        try:
            from sagemaker import image_uris  # type: ignore[import-not-found,no-redef]
        except ImportError:
            raise ConfigError(
                f"cannot look up the {sm.framework} {sm.framework_version} image in {region}: the SageMaker Python "
                "SDK (v2 or v3) is not installed; set training.sagemaker.image_uri (and serving.image_uri), or "
                "pip install sagemaker"
            ) from None
    try:
        uri: str = image_uris.retrieve(sm.framework, region, version=sm.framework_version, py_version=sm.py_version,
                                       instance_type=itype, image_scope=scope)  # fmt: skip
    except (ValueError, NotImplementedError) as exc:
        raise ConfigError(f"no SageMaker {sm.framework} {sm.framework_version} {scope} image for {itype} in "
                          f"{region} ({exc}); set image_uri to an image you know exists") from None  # fmt: skip
    return uri


def serving_instance_type(cfg: Config) -> str | None:
    """The instance type a registered package is meant for: the first SageMaker endpoint's."""
    from ..settings.sagemaker import SageMakerEndpointConfig

    for ep in cfg.endpoints:
        if isinstance(ep, SageMakerEndpointConfig):
            return ep.instance_type
    return None


def console_url(region: str, kind: str, name: str) -> str:
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/{kind}/{name}"


def _tag_value(value: str) -> str:
    """A tag value as AWS accepts it: up to 256 letters, digits, spaces and _.:/=+-@."""
    return re.sub(r"[^\w.:/=+\-@ ]", "_", value)[:256]


def metrics_metadata(metrics: Mapping[str, float]) -> str:
    """Metrics as one model package metadata value: `name=value` pairs, space separated.

    CustomerMetadataProperties values allow only letters, digits, spaces and _.:/=+-@, 1 to 256
    of them (service model shape CustomerMetadataValue), so no JSON; names are sanitized like
    tag values and pairs that do not fit are left out whole, marked by a trailing `...`.
    """
    pairs = [f"{_tag_value(k).replace(' ', '_')}={v:.6g}" for k, v in sorted(metrics.items())]
    out = ""
    for i, pair in enumerate(pairs):
        more = " ..." if i < len(pairs) - 1 else ""
        joined = f"{out} {pair}".strip()
        if len(joined) + len(more) > 256:
            return f"{out} ...".strip() if out else "..."
        out = joined
    return out


def _tags(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": _tag_value(v)} for k, v in sorted(tags.items()) if v]


def _split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    return bucket, key


MAX_EVAL_BYTES = 2 << 30


def _s3_objects(aws: Aws, uri: str, what: str) -> list[tuple[str, str, int]]:
    """(key, ETag, size) of every object under an S3 prefix."""
    bucket, prefix = _split_s3(uri)
    objects: list[tuple[str, str, int]] = []
    try:
        for page in aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            objects += [(o["Key"], o["ETag"], int(o["Size"])) for o in page.get("Contents", [])]
    except aws.errors as exc:
        raise aws.error(exc, what) from None
    return objects


def _etags_digest(objects: list[tuple[str, str, int]]) -> str:
    """What an S3 prefix held, without its data: sha256 over the objects' keys, ETags and sizes."""
    h = hashlib.sha256()
    for key, etag, size in objects:
        h.update(f"{key}\0{etag}\0{size}\n".encode())
    return h.hexdigest()


def download_prefix(aws: Aws, uri: str, cache: Path) -> tuple[Path, str]:
    """An S3 prefix (the review's evaluation channel) in `cache`, downloaded once: the
    directory is named by a digest over the objects' keys, ETags and sizes, the same digest
    `channel_data` records for a training channel."""
    bucket, prefix = _split_s3(uri)
    objects = _s3_objects(aws, uri, f"list the evaluation channel {uri}")
    if not objects:
        raise ConfigError(f"the evaluation channel {uri} holds no objects; upload the data or fix the URI")
    digest = _etags_digest(objects)
    total = sum(size for _, _, size in objects)
    if total > MAX_EVAL_BYTES:
        raise Refused(
            f"the evaluation channel {uri} holds {total >> 20} MiB, over {MAX_EVAL_BYTES >> 20} MiB; "
            "point review.eval_channel at a smaller channel"
        )
    dest = cache / digest
    if (dest / ".complete").is_file():
        return dest, digest
    tmp = cache / f".{digest}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for key, _, _ in objects:
        rel = PurePosixPath(key[len(prefix) :].lstrip("/"))
        if key.endswith("/") or not rel.parts:
            continue
        if ".." in rel.parts:
            raise Refused(f"the evaluation channel {uri} has an object key with '..' ({key[:80]}); refusing it")
        target = tmp / Path(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            aws.client("s3").download_file(bucket, key, str(target))
        except aws.errors as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise aws.error(exc, f"download {key} of the evaluation channel") from None
    (tmp / ".complete").write_text(uri)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest, digest


# -- the session ---------------------------------------------------------------------------
class Aws:
    """boto3 clients with the configured region and retry mode, and error translation."""

    def __init__(self, cfg: AwsConfig, env: Mapping[str, str]):
        import boto3
        from botocore.config import Config as BotoConfig
        from botocore.exceptions import BotoCoreError, ClientError

        self.cfg = cfg
        # Package descriptions seen by this session, by (region, ARN): a promote or deploy looks a
        # package up more than once, and its metadata never changes after registration.
        self.described: dict[tuple[str, str], Answer] = {}
        region = cfg.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if not region:
            raise ConfigError("no AWS region: set aws.region in mlops-ci.yaml or AWS_REGION")
        self.region: str = region
        self.session = boto3.session.Session(region_name=region)
        # standard/adaptive retry: throttling and 5xx are retried with backoff (adaptive also
        # rate-limits this client), so a busy account slows a deploy down instead of failing it.
        self._config = BotoConfig(retries={"mode": cfg.retry_mode, "max_attempts": cfg.max_attempts})
        self._clients: dict[str, Client] = {}
        self.errors: tuple[type[Exception], ...] = (ClientError, BotoCoreError)

    def client(self, service: str) -> Client:
        if service not in self._clients:
            self._clients[service] = self.session.client(service, config=self._config)
        return self._clients[service]

    @staticmethod
    def code(exc: Exception) -> str:
        return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))

    @staticmethod
    def message(exc: Exception) -> str:
        return str(getattr(exc, "response", {}).get("Error", {}).get("Message", "")) or str(exc)

    def error(self, exc: Exception, what: str) -> MlopsCiError:
        code, msg = self.code(exc), self.message(exc)
        name = type(exc).__name__
        if name == "ParamValidationError":  # boto3 refused the request before sending it
            return ConfigError(f"invalid request to {what}: {exc}; check the SageMaker settings in mlops-ci.yaml")
        if name in ("NoCredentialsError", "PartialCredentialsError"):
            return BadCredentials(
                f"no AWS credentials to {what}; in GitHub Actions use OIDC (aws-actions/configure-aws-credentials "
                "with role-to-assume), locally AWS_PROFILE (docs/sagemaker.md)"
            )
        if code in ("UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException",
                    "InvalidAccessKeyId", "SignatureDoesNotMatch"):  # fmt: skip
            return BadCredentials(f"AWS rejected the credentials while trying to {what} ({code}); refresh them")
        if code in ("AccessDenied", "AccessDeniedException"):
            return PermissionDenied(
                f"AWS denied the runner's role permission to {what} ({msg}); grant it (docs/sagemaker.md has the "
                "least-privilege policy)"
            )
        if code in ("ThrottlingException", "Throttling", "TooManyRequestsException", "SlowDown",
                    "ServiceUnavailable", "InternalFailure", "InternalError") or not code:  # fmt: skip
            return Transient(
                f"AWS did not answer while trying to {what} ({code or msg}), even after retries; retry later"
            )
        if code == "ResourceLimitExceeded":
            return Refused(f"SageMaker quota reached while trying to {what}: {msg}; ask for a quota increase")
        return ServiceRefused(f"SageMaker refused to {what}: {code}: {msg}")

    def call(self, service: str, op: str, what: str, **params: object) -> Answer:
        try:
            out: Answer = getattr(self.client(service), op)(**params)
            return out
        except self.errors as exc:
            raise self.error(exc, what) from None

    def missing(self, exc: Exception) -> bool:
        """SageMaker says 'not found' as a ValidationException ("Could not find ...")."""
        code, msg = self.code(exc), self.message(exc)
        return code in ("ResourceNotFound", "ResourceNotFoundException", "404", "NoSuchKey", "NotFound") or (
            code == "ValidationException" and ("Could not find" in msg or "does not exist" in msg)
        )

    def describe(self, op: str, what: str, **params: object) -> Answer | None:
        """A SageMaker Describe* call; None when the resource does not exist."""
        try:
            out: Answer = getattr(self.client("sagemaker"), op)(**params)
            return out
        except self.errors as exc:
            if self.missing(exc):
                return None
            raise self.error(exc, what) from None

    def s3_head(self, uri: str) -> Answer | None:
        bucket, key = _split_s3(uri)
        try:
            out = self.client("s3").head_object(Bucket=bucket, Key=key)
            return out
        except self.errors as exc:
            if self.missing(exc):
                return None
            raise self.error(exc, f"read {uri}") from None

    def has_object(self, uri: str, sha256: str) -> bool:
        """Whether `uri` already holds the object with this sha256 (uploads record it as metadata)."""
        head = self.s3_head(uri)
        return head is not None and head.get("Metadata", {}).get("sha256") == sha256

    def upload_once(self, path: Path, uri: str, sha256: str) -> bool:
        """Upload `path` to `uri` unless an object with this sha256 is there. True if uploaded."""
        if self.has_object(uri, sha256):
            return False
        bucket, key = _split_s3(uri)
        extra: dict[str, object] = {"Metadata": {"sha256": sha256}}
        if self.cfg.kms_key:
            extra.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=self.cfg.kms_key)
        try:
            self.client("s3").upload_file(str(path), bucket, key, ExtraArgs=extra)
        except self.errors as exc:
            raise self.error(exc, f"upload {uri}") from None
        return True

    def download(self, uri: str, dest: Path) -> bool:
        bucket, key = _split_s3(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client("s3").download_file(bucket, key, str(dest))
        except self.errors as exc:
            if self.missing(exc):
                return False
            raise self.error(exc, f"download {uri}") from None
        return True

    def s3_uri(self, *parts: str) -> str:
        key = "/".join(p.strip("/") for p in (self.cfg.prefix, *parts) if p)
        return f"s3://{self.cfg.bucket}/{key}"


def _extract(archive: Path, dest: Path) -> None:
    """Unpack a job's tarball, refusing links and paths that leave `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
            return
        root = dest.resolve()  # Python < 3.10.12: the same checks by hand
        for member in tar.getmembers():
            target = (dest / member.name).resolve()
            if not (member.isfile() or member.isdir()) or not target.is_relative_to(root):
                raise Refused(f"{archive.name}: refusing {member.name!r} (a link, a device or outside the target)")
        tar.extractall(dest)  # noqa: S202 - every member checked above


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
                {
                    "ChannelName": ch,
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": uri,
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                }
                for ch, uri in sorted(spec.channel_uris.items())
            ],
            "OutputDataConfig": output,
            "ResourceConfig": resource,
            "StoppingCondition": stopping,
            "Environment": {**spec.environment, **(spec.job_env(name) if spec.job_env else {})},
            "Tags": _tags(spec.tags),
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
            objects = _s3_objects(self.aws, uri, f"list training channel {name} ({uri})")
            if not objects:
                raise ConfigError(f"training.channels.{name}: {uri} holds no objects; upload the data or fix the URI")
            data[name] = {
                "uri": uri,
                "s3_etags_sha256": _etags_digest(objects),
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
            name, exists = _slug(spec.job_name)[:63], False
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
        _extract(workdir / "model.tar.gz", result.model_dir)
        output_uri = model_uri.rsplit("/", 1)[0] + "/output.tar.gz"
        if self.aws.download(output_uri, workdir / "output.tar.gz"):
            _extract(workdir / "output.tar.gz", result.output_dir / "data")
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
            "NameContains": _slug(project)[:40],
            "MaxResults": 100,
        }
        mine = re.compile(re.escape(_slug(project)[:40].rstrip("-")) + r"-[0-9a-f]{8}-[0-9a-f]{8}-\d+")
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
                same_branch = t.get("mlops-ci:branch") == _tag_value(branch)
                if t.get("mlops-ci:project") == project and same_branch and t.get("mlops-ci:sha") != sha:
                    self.aws.call("sagemaker", "stop_training_job", f"stop {job['TrainingJobName']}",
                                  TrainingJobName=job["TrainingJobName"])  # fmt: skip
                    stopped.append(job["TrainingJobName"])
            if not page.get("NextToken"):
                return stopped
            kwargs["NextToken"] = page["NextToken"]


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


# -- model registry ------------------------------------------------------------------------


class SageMakerRegistry:
    """A model package group per project; one package per promoted commit."""

    def __init__(self, aws: Aws, cfg: Config):
        self.aws, self.cfg = aws, cfg
        self.group = cfg.registry.model_package_group or _slug(cfg.project)[:63]

    @classmethod
    def from_context(cls, ctx: Context) -> SageMakerRegistry:
        return cls(ctx.aws(), ctx.cfg)

    def group_request(self) -> dict[str, object]:
        return {"ModelPackageGroupName": self.group,
                "ModelPackageGroupDescription": f"mlops-ci models of {self.cfg.project}"[:1024],
                "Tags": _tags({"mlops-ci:project": self.cfg.project})}  # fmt: skip

    def package_request(self, mv: ModelVersion, model_data: str) -> dict[str, object]:
        image = image_for(self.cfg.training.sagemaker, self.cfg.serving.image_uri, self.aws.region, "inference",
                          serving_instance_type(self.cfg))  # fmt: skip
        raw = {
            "git_sha": mv.sha,
            "artifact_sha256": mv.artifact_sha256,
            "verdict_id": mv.verdict_id,
            "gate": "passed",
            "mlops_ci_version": str(mv.version),
            "run_id": mv.run_id,
            "metrics": metrics_metadata(mv.metrics),
        }
        meta = {k: _tag_value(v) for k, v in raw.items() if v}
        return {
            "ModelPackageGroupName": self.group,
            "ModelPackageDescription": f"{self.cfg.project} v{mv.version} from commit {mv.sha[:12]}",
            "InferenceSpecification": {
                "Containers": [
                    {"Image": image, "ModelDataUrl": model_data, "Environment": _serving_env(self.cfg, self.aws.region)}
                ],
                "SupportedContentTypes": ["application/json", "text/csv"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            "ModelApprovalStatus": self.cfg.registry.approval,
            "CustomerMetadataProperties": meta,
            # SageMaker's own idempotency: a promote retried after a lost answer registers once
            "ClientToken": hashlib.sha256(f"{self.group}/{mv.sha}/{mv.artifact_sha256}".encode()).hexdigest()[:36],
            "Tags": _tags({"mlops-ci:project": self.cfg.project, "mlops-ci:sha": mv.sha}),
        }

    def packages(self) -> Iterator[Answer]:
        """Every package of the group, described (newest first)."""
        kwargs: dict[str, object] = {"ModelPackageGroupName": self.group, "MaxResults": 100, "SortOrder": "Descending"}
        while True:
            try:
                page = self.aws.client("sagemaker").list_model_packages(**kwargs)
            except self.aws.errors as exc:
                if self.aws.missing(exc):
                    return
                raise self.aws.error(exc, f"list model packages of {self.group}") from None
            for s in page.get("ModelPackageSummaryList", []):
                key = (self.aws.region, s["ModelPackageArn"])
                d = self.aws.described.get(key)
                if d is None:
                    d = self.aws.describe("describe_model_package", "describe a model package",
                                          ModelPackageName=s["ModelPackageArn"])  # fmt: skip
                    if d is None:
                        continue
                    self.aws.described[key] = d
                # what can change after registration (a human approving) comes fresh with the list
                now = d.copy()
                if "ModelApprovalStatus" in s:
                    now["ModelApprovalStatus"] = s["ModelApprovalStatus"]
                if "ModelPackageStatus" in s:
                    now["ModelPackageStatus"] = s["ModelPackageStatus"]
                yield now
            if not page.get("NextToken"):
                return
            kwargs["NextToken"] = page["NextToken"]

    def package_for(self, sha: str) -> Answer | None:
        for d in self.packages():
            if d.get("CustomerMetadataProperties", {}).get("git_sha") == sha:
                return d
        return None

    def create(self, mv: ModelVersion, model_data: str, fx: Effects) -> str | None:
        """Register the version as a package (its group first, if new); its ARN, None in a dry
        run. The caller has found no package of the commit (ClientToken covers a lost answer)."""
        if (
            self.aws.describe(
                "describe_model_package_group", "describe the model package group", ModelPackageGroupName=self.group
            )
            is None
        ):
            req = self.group_request()
            fx(
                "sagemaker",
                "CreateModelPackageGroup",
                lambda: self.aws.call(
                    "sagemaker", "create_model_package_group", f"create model package group {self.group}", **req
                ),
                None,
                request=req,
            )
        req = self.package_request(mv, model_data)
        out = fx(
            "sagemaker",
            "CreateModelPackage",
            lambda: self.aws.call(
                "sagemaker", "create_model_package", f"register {self.cfg.project} v{mv.version}", **req
            ),
            None,
            request=req,
        )
        return None if out is None else str(out["ModelPackageArn"])


def _serving_env(cfg: Config, region: str) -> dict[str, str]:
    """The framework containers' script-mode serving contract: code/ inside model.tar.gz."""
    env = {"SAGEMAKER_CONTAINER_LOG_LEVEL": "20", "SAGEMAKER_REGION": region}
    if cfg.serving.entry_point:
        env["SAGEMAKER_PROGRAM"] = Path(cfg.serving.entry_point).name
        env["SAGEMAKER_SUBMIT_DIRECTORY"] = "/opt/ml/model/code"
    env.update(cfg.serving.environment)
    return env


def model_data_uri(aws: Aws, mv: ModelVersion, path: Path | None) -> tuple[str, bool]:
    """Where SageMaker reads the model from: the artifact itself when the store keeps it in S3,
    else a content-addressed copy under the configured bucket. (uri, would upload)."""
    if mv.artifact_uri.startswith("s3://"):
        return mv.artifact_uri, False
    uri = aws.s3_uri("models", mv.artifact_sha256, "model.tar.gz")
    if path is None:
        return uri, not aws.has_object(uri, mv.artifact_sha256)
    return uri, aws.upload_once(path, uri, mv.artifact_sha256)


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
        env = _serving_env(self.cfg, self.aws.region)
        model = _slug(f"{self.cfg.project}-v{mv.version}")[:54] + "-" + _short_hash(
            image, model_data, mv.artifact_sha256, env, self.aws.cfg.role)  # fmt: skip
        config = _slug(f"{self.ep.name}-v{mv.version}")[:54] + "-" + _short_hash(
            model, self.ep.instance_type, self.instance_count, self.aws.cfg.kms_key)  # fmt: skip
        return model, config

    def model_request(self, mv: ModelVersion, model: str, model_data: str) -> dict[str, object]:
        image = image_for(self.cfg.training.sagemaker, self.cfg.serving.image_uri, self.aws.region, "inference",
                          self.ep.instance_type)  # fmt: skip
        req: dict[str, object] = {
            "ModelName": model,
            "PrimaryContainer": {"Image": image, "ModelDataUrl": model_data,
                                 "Environment": _serving_env(self.cfg, self.aws.region)},
            "ExecutionRoleArn": self.aws.cfg.role,
            "Tags": _tags({"mlops-ci:project": self.cfg.project, "mlops-ci:sha": mv.sha,
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
            "Tags": _tags({"mlops-ci:project": self.cfg.project, "mlops-ci:sha": mv.sha,
                           "mlops-ci:version": str(mv.version)}),
        }  # fmt: skip
        if self.aws.cfg.kms_key and not sagemaker_types.has_local_storage(self.ep.instance_type):
            req["KmsKeyId"] = self.aws.cfg.kms_key  # the ML storage volume's key; local storage refuses one
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
                                  "Tags": _tags({"mlops-ci:project": self.cfg.project})}  # fmt: skip

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
        # Hashed again under the lock: the file may have changed while this deploy waited.
        mv = self.mv
        artifact = self.ws.verify_artifact(mv.artifact_uri, mv.artifact_sha256, what=f"v{mv.version}")
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
