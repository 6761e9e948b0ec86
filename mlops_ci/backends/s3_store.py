"""The team store: immutable JSON objects in S3, the way teams already trust Terraform state.

The records and their key layout are ObjectStore's (mlops_ci/backends/object_store.py), under
``s3://bucket/prefix/projects/<project>/``. Create-once writes use ``If-None-Match: *``, pointer
updates ``If-Match: <etag>`` with retries, so two CI jobs can never overwrite each other.
Objects are written with the configured server-side encryption and never with an ACL.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypedDict
from urllib.parse import parse_qs, urlparse

from ..errors import AlreadyExists, ConfigError, MlopsCiError, PermissionDenied, ServiceRefused, Transient
from .object_store import ObjectStore


class _Body(Protocol):
    def read(self) -> bytes: ...


class _Written(TypedDict):
    ETag: str


class _Object(TypedDict):
    Body: _Body
    ETag: str


class _Listed(TypedDict):
    Key: str


class _Listing(TypedDict, total=False):
    Contents: list[_Listed]
    IsTruncated: bool
    NextContinuationToken: str


class S3Client(Protocol):
    """The calls the store makes on a boto3 S3 client, with the parts of the answers it reads."""

    def put_object(self, **kwargs: object) -> _Written: ...
    def get_object(self, **kwargs: object) -> _Object: ...
    def list_objects_v2(self, **kwargs: object) -> _Listing: ...
    def delete_object(self, **kwargs: object) -> object: ...
    def head_object(self, **kwargs: object) -> object: ...
    def upload_file(self, Filename: str, Bucket: str, Key: str, ExtraArgs: dict[str, object] | None = None) -> None: ...
    def download_file(self, Bucket: str, Key: str, Filename: str) -> None: ...


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str
    sse: str | None = None
    kms_key_id: str | None = None

    @classmethod
    def parse(cls, url: str) -> S3Location:
        u = urlparse(url)
        if u.scheme != "s3" or not u.netloc:
            raise ConfigError(f"store '{url}' is not an s3://bucket/prefix URL")
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        unknown = set(q) - {"sse", "kms_key_id"}
        if unknown:
            raise ConfigError(
                f"store '{url}': unknown option(s) {', '.join(sorted(unknown))}; allowed: sse, kms_key_id"
            )
        sse = q.get("sse")
        if sse not in (None, "AES256", "aws:kms"):
            raise ConfigError(f"store '{url}': sse must be AES256 or aws:kms")
        if q.get("kms_key_id") and sse != "aws:kms":
            raise ConfigError(f"store '{url}': kms_key_id needs sse=aws:kms")
        return cls(u.netloc, u.path.strip("/"), sse, q.get("kms_key_id"))


class S3Store(ObjectStore):
    kind = "S3"

    def __init__(
        self,
        location: S3Location,
        project: str,
        client: S3Client | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ):
        self.loc = location
        self.project = project
        self.clock = clock
        if client is None:
            import boto3
            from botocore.config import Config

            # boto3 honours AWS_ENDPOINT_URL(_S3), AWS_REGION and the OIDC web-identity variables
            # standard retry mode: throttling and 5xx retried with backoff (AWS_MAX_ATTEMPTS, default 3)
            client = boto3.client("s3", config=Config(retries={"mode": "standard"}))
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors: tuple[type[Exception], ...] = (ClientError, BotoCoreError)
        self.s3 = client
        self.uploaded_bytes = 0
        self.root = "/".join(p for p in (location.prefix, "projects", project) if p)

    def close(self) -> None:
        pass

    def integrity_problems(self) -> list[str]:
        """Nothing beyond the records themselves: each object is whole (S3 writes are atomic) and
        every record is checked against its digest by `store check`."""
        return []

    # -- low level --------------------------------------------------------------------------
    def _extra(self) -> dict[str, str]:
        extra = {"ContentType": "application/json"}
        if self.loc.sse:
            extra["ServerSideEncryption"] = self.loc.sse
        if self.loc.kms_key_id:
            extra["SSEKMSKeyId"] = self.loc.kms_key_id
        return extra

    def _error(self, exc: Exception, what: str) -> MlopsCiError:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if not code:  # no answer at all: connection refused, DNS, timeout
            return Transient(f"cannot reach S3 to {what} ({exc}); retry later")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
            return PermissionDenied(
                f"S3 refused to {what} in s3://{self.loc.bucket}/{self.loc.prefix} ({code}); the role needs "
                "s3:GetObject, s3:PutObject, s3:ListBucket and s3:DeleteObject on that prefix (docs/store.md)"
            )
        if code == "NoSuchBucket":
            return ConfigError(f"the store bucket {self.loc.bucket} does not exist; create it (docs/store.md)")
        if code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"):
            return Transient(f"S3 is unavailable or throttling ({code}) while trying to {what}; retry later")
        said = getattr(exc, "response", {}).get("Error", {}).get("Message", "") or exc
        return ServiceRefused(f"S3 refused to {what}: {code}: {said}")

    @staticmethod
    def _code(exc: Exception) -> str:
        return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))

    def _create(self, key: str, body: bytes) -> str:
        """Write `key` only if it does not exist. Raises AlreadyExists."""
        try:
            r = self.s3.put_object(Bucket=self.loc.bucket, Key=key, Body=body, IfNoneMatch="*", **self._extra())
        except self._errors as exc:
            if self._code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise AlreadyExists(f"{key} already exists") from None
            raise self._error(exc, f"write {key}") from None
        return str(r["ETag"])

    def _get(self, key: str) -> tuple[object, str] | None:
        try:
            r = self.s3.get_object(Bucket=self.loc.bucket, Key=key)
        except self._errors as exc:
            if self._code(exc) in ("NoSuchKey", "404"):
                return None
            raise self._error(exc, f"read {key}") from None
        return json.loads(r["Body"].read()), str(r["ETag"])

    def _replace(self, key: str, body: bytes, etag: str | None) -> str | None:
        """Write `key` if its ETag is still `etag` (None: if it does not exist). Returns the new
        ETag, or None when someone else changed it first."""
        cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            r = self.s3.put_object(Bucket=self.loc.bucket, Key=key, Body=body, **cond, **self._extra())
        except self._errors as exc:
            if self._code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"):
                return None
            raise self._error(exc, f"update {key}") from None
        return str(r["ETag"])

    def _list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        token: str | None = None
        while True:
            kw: dict[str, object] = {"Bucket": self.loc.bucket, "Prefix": prefix}
            if token:
                kw["ContinuationToken"] = token
            try:
                r = self.s3.list_objects_v2(**kw)
            except self._errors as exc:
                raise self._error(exc, f"list {prefix}") from None
            keys += [o["Key"] for o in r.get("Contents", [])]
            if not r.get("IsTruncated"):
                return sorted(keys)
            token = r["NextContinuationToken"]

    def _delete_if(self, key: str, etag: str) -> None:
        try:
            self.s3.delete_object(Bucket=self.loc.bucket, Key=key, IfMatch=etag)
        except self._errors as exc:  # changed or gone: no longer ours
            if self._code(exc) not in ("PreconditionFailed", "NoSuchKey"):
                raise self._error(exc, f"delete {key}") from None

    # -- artifacts ---------------------------------------------------------------------------
    def put_artifact(self, path: Path, sha256: str) -> str:
        """Upload under its own sha256 (our digest: an S3 multipart ETag is not one). An
        artifact already there is not uploaded again."""
        key = self._key("artifacts", f"{sha256}.tar.gz")
        uri = f"s3://{self.loc.bucket}/{key}"
        try:
            self.s3.head_object(Bucket=self.loc.bucket, Key=key)
            return uri
        except self._errors as exc:
            if self._code(exc) not in ("404", "NoSuchKey", "NotFound"):
                raise self._error(exc, f"check {key}") from None
        extra: dict[str, object] = {k: v for k, v in self._extra().items() if k != "ContentType"}
        extra["Metadata"] = {"sha256": sha256}
        try:
            self.s3.upload_file(str(path), self.loc.bucket, key, ExtraArgs=extra)
        except self._errors as exc:
            raise self._error(exc, f"upload {key}") from None
        self.uploaded_bytes += path.stat().st_size
        return uri

    def fetch_artifact(self, uri: str, cache: Path) -> Path:
        """Download into `cache` (once); the caller verifies the digest before any use."""
        u = urlparse(uri)
        if u.scheme != "s3":
            raise ConfigError(f"artifact {uri} is not in S3; this run was recorded by a local store")
        dest = cache / Path(u.path).name
        if dest.is_file():
            return dest
        cache.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + f".part{os.getpid()}")
        try:
            self.s3.download_file(u.netloc, u.path.lstrip("/"), str(tmp))
        except self._errors as exc:
            tmp.unlink(missing_ok=True)
            if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                return dest  # missing: the caller reports it
            raise self._error(exc, f"download {uri}") from None
        tmp.replace(dest)
        return dest
