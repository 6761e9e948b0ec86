"""Tamper evidence for the store's records: each one carries the digest of its own content and
of the records it rests on, so the chain run → verdict → model version → deployment can be
checked link by link before anything is promoted or deployed.

A digest alone shows a record was changed by hand or by a fault, not that it is genuine:
whoever can write the store can recompute digests. Forging needs a key once verdicts and
versions are signed (`gate.signing_key`, an AWS KMS asymmetric key, see `Signer`), because
the signature is checked against the key named in the committed mlops-ci.yaml, never against
anything the store says. docs/threat-model.md spells out what each attacker can do.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypedDict, TypeVar

from .ci import detect
from .errors import IntegrityError
from .records import Deployment, ModelVersion, Run, Verdict

Record = Run | Verdict | ModelVersion | Deployment
R = TypeVar("R", Run, Verdict, ModelVersion, Deployment)

_KIND: dict[type, str] = {Run: "run", Verdict: "verdict", ModelVersion: "version", Deployment: "deployment"}
# The seal itself, what is derived, and where the artifact happens to be kept: `store import`
# moves artifacts between stores, and a moved URI is caught by the artifact's own sha256.
_NOT_CONTENT = ("digest", "signature", "conclusion", "artifact_uri")


def canonical(obj: object) -> bytes:
    """One byte string per value: sorted keys, no spaces, UTF-8. Floats use Python's shortest
    round-trip repr, which JSON stores and loads unchanged, so a stored record re-hashes equal."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True).encode()


def content_digest(record: Record) -> str:
    body = {k: v for k, v in record.to_dict().items() if k not in _NOT_CONTENT}
    kind = _KIND[type(record)]
    return hashlib.sha256(f"mlops-ci/{kind}/v1\n".encode() + canonical(body)).hexdigest()


def series_digest(series: Mapping[str, Sequence[float]]) -> str:
    return hashlib.sha256(canonical({k: list(v) for k, v in sorted(series.items())})).hexdigest()


def seal(record: R) -> R:
    """The record with its digest set (recomputed: a copy made with dataclasses.replace never
    keeps the digest of what it was copied from)."""
    sealed: Any = dataclasses.replace(record, digest=content_digest(record))
    if isinstance(sealed, Verdict | ModelVersion):
        sealed = dataclasses.replace(sealed, signature={})
    return sealed  # type: ignore[no-any-return]


def seal_run(run: Run, series: Mapping[str, Sequence[float]]) -> Run:
    return seal(dataclasses.replace(run, series_sha256=series_digest(series)))


def describe(record: Record) -> str:
    if isinstance(record, Run):
        return f"run {record.run_id} (commit {record.sha[:8]})"
    if isinstance(record, Verdict):
        return f"verdict {record.verdict_id} (run {record.run_id})"
    if isinstance(record, ModelVersion):
        return f"{record.project} v{record.version} (commit {record.sha[:8]})"
    return f"deployment {record.deployment_id} ({record.endpoint}, v{record.version})"


_FIX = (
    "the store was edited or damaged after the record was written; restore the store from a backup "
    "(or re-train with `mlops-ci train --force` and gate again), and find out who can write to it"
)


def problem(record: Record) -> str | None:
    """Why `record` cannot be trusted as it is stored, or None."""
    if not record.digest:
        return (
            f"{describe(record)} carries no digest: it was written by an mlops-ci that did not seal its "
            "records, or by hand; re-train with `mlops-ci train --force` and gate again"
        )
    if content_digest(record) != record.digest:
        return f"{describe(record)} no longer matches its digest {record.digest[:12]}…: {_FIX}"
    return None


def link_problems(
    *,
    run: Run | None = None,
    series: Mapping[str, Sequence[float]] | None = None,
    verdict: Verdict | None = None,
    baseline: Run | None = None,
    version: ModelVersion | None = None,
    deployment: Deployment | None = None,
) -> list[str]:
    """Every broken seal and broken link among the records given (None = not checked)."""
    out = [p for r in (run, baseline, verdict, version, deployment) if r is not None and (p := problem(r))]
    if run is not None and series is not None and run.digest and run.series_sha256 != series_digest(series):
        out.append(f"the metric curves of {describe(run)} no longer match the run's series digest: {_FIX}")

    def link(child: Record, field: str, parent: Record | None) -> None:
        want = getattr(child, field)
        if parent is not None and parent.digest and want != parent.digest:
            out.append(
                f"{describe(child)} was made from another {describe(parent)} than the one stored "
                f"({field} {str(want)[:12] or 'missing'}…, the record's digest is {parent.digest[:12]}…): {_FIX}"
            )

    if verdict is not None:
        link(verdict, "run_digest", run)
        if baseline is not None and verdict.baseline_run_id == baseline.run_id:
            link(verdict, "baseline_digest", baseline)
    if version is not None:
        link(version, "verdict_digest", verdict)
        link(version, "run_digest", run)
        if run is not None and run.artifact_sha256 != version.artifact_sha256:
            out.append(
                f"{describe(version)} names artifact sha256 {version.artifact_sha256[:12]}…, but its "
                f"{describe(run)} recorded {(run.artifact_sha256 or '')[:12]}…: {_FIX}"
            )
    if deployment is not None:
        link(deployment, "version_digest", version)
    return out


def require(problems: Sequence[str], doing: str) -> None:
    """Refuse (exit 14) naming the first broken link."""
    if problems:
        more = f" (and {len(problems) - 1} more; `mlops-ci store check` lists all)" if len(problems) > 1 else ""
        raise IntegrityError(f"refusing to {doing}: {problems[0]}{more}")


# -- signatures ------------------------------------------------------------------------------
class KmsAnswer(TypedDict, total=False):
    """The fields of KMS's Sign, Verify and GetPublicKey answers that are read here."""

    KeyId: str
    Signature: bytes
    SignatureValid: bool
    KeyUsage: str
    SigningAlgorithms: list[str]


class SigningService(Protocol):
    """The two calls of AWS KMS an asymmetric signature needs (a boto3 KMS client has them)."""

    def sign(self, **kwargs: object) -> KmsAnswer: ...
    def verify(self, **kwargs: object) -> KmsAnswer: ...
    def get_public_key(self, **kwargs: object) -> KmsAnswer: ...


# Preference among the algorithms a key offers: the SHA-256 ones KMS has for EC and RSA keys.
_ALGORITHMS = ("ECDSA_SHA_256", "RSASSA_PSS_SHA_256", "RSASSA_PKCS1_V1_5_SHA_256")
# Under GitHub Actions the signature also binds who gated: ci.IDENTITY identifies the workflow run.


def unsigned_here(env: Mapping[str, str]) -> str | None:
    """Why a job must record its verdict unsigned, or None where it signs.

    Under GitHub Actions only a tag's job signs: the release workflow, whose protected
    environment is the only OIDC subject the role holding kms:Sign trusts (docs/iam/
    signing-key-policy.json). Branch and pull-request jobs run under the training role, which
    same-repository pull requests can use, so they must not be able to sign; their verdicts are
    advisory, and the release job gates the tagged commit again. Outside Actions whoever runs
    the gate signs with their own credentials, and the key policy decides whether they may."""
    job = detect(env)
    if not job.actions or job.tag_job:
        return None
    event = job.event_name or "workflow"
    return f"a {event} job on {job.ref or 'a branch'} does not sign (only a release tag's job does)"


def _message(kind: str, digest: str, identity: Mapping[str, str]) -> bytes:
    """What is signed: the record kind and digest plus the gating workflow's identity, as RAW
    text (KMS RAW messages may be up to 4096 bytes; this is a few hundred)."""
    lines = ["mlops-ci signature v1", f"kind: {kind}", f"digest: {digest}"]
    lines += [f"{k}: {identity[k]}" for k in sorted(identity)]
    return ("\n".join(lines) + "\n").encode()


class Signer:
    """Signs and verifies record digests with one KMS asymmetric key (KeyUsage SIGN_VERIFY).

    Verification always uses the key configured in the committed mlops-ci.yaml: a record that
    names another key (one an attacker owns) does not verify. Under GitHub Actions the key policy
    reserves kms:Sign for the role only the release job assumes by OIDC (docs/threat-model.md),
    which makes the signature the OIDC identity of the workflow that gated."""

    def __init__(self, key_id: str, kms: SigningService, errors: tuple[type[Exception], ...],
                 translate: Callable[[Exception, str], Exception]):  # fmt: skip
        self.key_id = key_id
        self.kms = kms
        self.errors = errors
        self.translate = translate
        self._algorithm: str | None = None

    def _call(self, op: str, what: str, **params: object) -> KmsAnswer:
        try:
            out: KmsAnswer = getattr(self.kms, op)(**params)
            return out
        except self.errors as exc:
            if type(exc).__name__ == "KMSInvalidSignatureException" or "InvalidSignature" in str(exc):
                return {"SignatureValid": False}
            raise self.translate(exc, what) from None

    def algorithm(self) -> str:
        if self._algorithm is None:
            key = self._call("get_public_key", f"read KMS key {self.key_id}", KeyId=self.key_id)
            offered = key.get("SigningAlgorithms") or []
            if key.get("KeyUsage") not in (None, "SIGN_VERIFY") or not offered:
                raise IntegrityError(
                    f"gate.signing_key {self.key_id} is not a signing key (KeyUsage {key.get('KeyUsage')}); "
                    "create an asymmetric KMS key with KeyUsage SIGN_VERIFY (e.g. KeySpec ECC_NIST_P256)"
                )
            self._algorithm = next((a for a in _ALGORITHMS if a in offered), offered[0])
        return self._algorithm

    def sign(self, record: Verdict | ModelVersion, env: Mapping[str, str]) -> dict[str, str]:
        identity = dict(detect(env).identity)
        kind = _KIND[type(record)]
        algorithm = self.algorithm()
        out = self._call(
            "sign", f"sign {describe(record)} with KMS key {self.key_id}", KeyId=self.key_id,
            Message=_message(kind, record.digest, identity), MessageType="RAW", SigningAlgorithm=algorithm,
        )  # fmt: skip
        return {
            "key_id": str(out.get("KeyId", self.key_id)),
            "algorithm": algorithm,
            "value": base64.b64encode(out["Signature"]).decode(),
            **{f"identity.{k}": v for k, v in identity.items()},
        }

    def check(self, record: Verdict | ModelVersion, env: Mapping[str, str]) -> str | None:
        """Why `record`'s signature does not hold under the configured key, or None. Under
        Actions, a signature made by a workflow of another repository does not hold either."""
        sig = record.signature
        if not sig.get("value"):
            return (
                f"{describe(record)} is not signed, but gate.signing_key requires signatures; "
                "gate (and promote) it again with access to the key"
            )
        identity = {k[len("identity.") :]: v for k, v in sig.items() if k.startswith("identity.")}
        try:
            raw = base64.b64decode(sig["value"], validate=True)
        except ValueError:
            raw = b""
        out = self._call(
            "verify", f"verify the signature of {describe(record)}", KeyId=self.key_id,
            Message=_message(_KIND[type(record)], record.digest, identity), MessageType="RAW",
            Signature=raw or b"\0", SigningAlgorithm=self.algorithm(),  # the key's, never the record's say
        )  # fmt: skip
        signed_in = identity.get("GITHUB_REPOSITORY")
        job = detect(env)
        here = job.repository if job.actions else None
        if out.get("SignatureValid") and signed_in and here and signed_in != here:
            return (
                f"{describe(record)} was signed by a workflow of {signed_in}, not of {here}; gate it in this repository"
            )
        if not out.get("SignatureValid"):
            return (
                f"the signature of {describe(record)} does not verify with KMS key {self.key_id}: the record "
                "or its signature was forged or altered; do not deploy it, and find out who can write the store"
            )
        return None
