"""The AWS session mlops-ci uses (boto3): clients with the configured retries, errors turned
into mlops-ci's, and the S3 helpers every SageMaker part shares (content-addressed uploads,
prefix listings and downloads). Imported only when the config names AWS."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol, TypedDict

from ..config import AwsConfig
from ..errors import (
    BadCredentials,
    ConfigError,
    MlopsCiError,
    PermissionDenied,
    Refused,
    ServiceRefused,
    Transient,
)

if TYPE_CHECKING:
    pass


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


class _TrialSummary(_JobSummary, total=False):  # ListTrainingJobsForHyperParameterTuningJob
    CreationTime: object
    TunedHyperParameters: dict[str, str]


class _TuningSummary(TypedDict):
    HyperParameterTuningJobName: str
    HyperParameterTuningJobArn: str
    HyperParameterTuningJobStatus: str


class _Counters(TypedDict, total=False):
    Completed: int
    InProgress: int
    RetryableError: int
    NonRetryableError: int
    Stopped: int


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
    TrainingJobSummaries: list[_TrialSummary]
    # ListHyperParameterTuningJobs, DescribeHyperParameterTuningJob
    HyperParameterTuningJobSummaries: list[_TuningSummary]
    HyperParameterTuningJobStatus: str
    TrainingJobStatusCounters: _Counters
    TrainingJobArn: str
    TrainingJobStatus: str
    TuningJobArn: str  # a trial of a tuning job
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
    def create_hyper_parameter_tuning_job(self, **kwargs: object) -> Answer: ...
    def describe_log_streams(self, **kwargs: object) -> Answer: ...
    def get_log_events(self, **kwargs: object) -> Answer: ...
    def list_model_packages(self, **kwargs: object) -> Answer: ...
    def describe_scalable_targets(self, **kwargs: object) -> Answer: ...
    def invoke_endpoint(self, **kwargs: object) -> Answer: ...


def slug(text: str) -> str:
    """A SageMaker resource name part: letters, digits and single dashes."""
    return re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9-]", "-", text)).strip("-") or "x"


def short_hash(*parts: object) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def console_url(region: str, kind: str, name: str) -> str:
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/{kind}/{name}"


def tag_value(value: str) -> str:
    """A tag value as AWS accepts it: up to 256 letters, digits, spaces and _.:/=+-@."""
    return re.sub(r"[^\w.:/=+\-@ ]", "_", value)[:256]


def aws_tags(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": tag_value(v)} for k, v in sorted(tags.items()) if v]


def split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    return bucket, key


MAX_EVAL_BYTES = 2 << 30


def s3_objects(aws: Aws, uri: str, what: str, *, start_after: str = "") -> list[tuple[str, str, int]]:
    """(key, ETag, size) of every object under an S3 prefix (whose key sorts after `start_after`)."""
    bucket, prefix = split_s3(uri)
    objects: list[tuple[str, str, int]] = []
    after = {"StartAfter": start_after} if start_after else {}
    try:
        for page in aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, **after):
            objects += [(o["Key"], o["ETag"], int(o["Size"])) for o in page.get("Contents", [])]
    except aws.errors as exc:
        raise aws.error(exc, what) from None
    return objects


def etags_digest(objects: list[tuple[str, str, int]]) -> str:
    """What an S3 prefix held, without its data: sha256 over the objects' keys, ETags and sizes."""
    h = hashlib.sha256()
    for key, etag, size in objects:
        h.update(f"{key}\0{etag}\0{size}\n".encode())
    return h.hexdigest()


def download_prefix(aws: Aws, uri: str, cache: Path) -> tuple[Path, str]:
    """An S3 prefix (the review's evaluation channel) in `cache`, downloaded once: the
    directory is named by a digest over the objects' keys, ETags and sizes, the same digest
    `channel_data` records for a training channel."""
    bucket, prefix = split_s3(uri)
    objects = s3_objects(aws, uri, f"list the evaluation channel {uri}")
    if not objects:
        raise ConfigError(f"the evaluation channel {uri} holds no objects; upload the data or fix the URI")
    digest = etags_digest(objects)
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
        bucket, key = split_s3(uri)
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
        bucket, key = split_s3(uri)
        extra: dict[str, object] = {"Metadata": {"sha256": sha256}}
        if self.cfg.kms_key:
            extra.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=self.cfg.kms_key)
        try:
            self.client("s3").upload_file(str(path), bucket, key, ExtraArgs=extra)
        except self.errors as exc:
            raise self.error(exc, f"upload {uri}") from None
        return True

    def download(self, uri: str, dest: Path) -> bool:
        bucket, key = split_s3(uri)
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


def extract(archive: Path, dest: Path) -> None:
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
