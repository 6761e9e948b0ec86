"""Plain typed data passed between the core, the backends and the renderers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Run:
    """One training run of one commit under one training config."""

    run_id: str
    project: str
    sha: str
    branch: str | None
    config_digest: str
    status: str  # completed | failed
    backend: str
    started: float
    finished: float
    params: dict[str, object] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    artifact_uri: str | None = None
    artifact_sha256: str | None = None
    log_path: str | None = None
    links: dict[str, str] = field(default_factory=dict)
    data: dict[str, dict[str, str]] = field(default_factory=dict)
    failure: str | None = None
    dirty: bool = False
    cost: dict[str, Any] = field(default_factory=dict)  # remote training: instance, billable seconds, spot
    # digest of everything training reads (source under source_dir, channel digests, training
    # config); equal digests mean the same model, so a later commit reuses the run
    inputs_digest: str = ""
    reused_from: str | None = None  # the run that actually trained this model (same inputs)
    series_sha256: str = ""  # digest of the metric curves, which the store keeps apart
    digest: str = ""  # sha256 of everything above (integrity.py); "" = never sealed

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def data_summary(d: dict[str, str]) -> str:
    """One input channel as recorded by a run: a local tree's sha256, or an S3 prefix's
    object count and the digest of its keys and ETags."""
    if "sha256" in d:
        return f"{d['uri']} sha256 {d['sha256'][:16]} ({d.get('source', '?')})"
    return f"{d['uri']} {d.get('objects', '?')} object(s), ETags sha256 {d.get('s3_etags_sha256', '?')[:16]}"


@dataclass(frozen=True)
class RuleResult:
    metric: str
    rule: str  # human description, e.g. "accuracy >= 0.9"
    kind: str
    severity: str
    passed: bool
    value: float | None
    baseline: float | None
    reason: str
    line: int | None = None
    skipped: bool = False

    @property
    def status(self) -> str:
        """skipped | pass | fail | warn (a failed rule of severity warn): what every view of a
        verdict shows for the rule."""
        if self.skipped:
            return "skipped"
        return "pass" if self.passed else "fail" if self.severity == "fail" else "warn"


@dataclass(frozen=True)
class Verdict:
    verdict_id: str
    run_id: str
    project: str
    sha: str
    passed: bool
    gate_digest: str
    baseline_run_id: str | None
    baseline_sha: str | None
    baseline_note: str
    results: tuple[RuleResult, ...]
    created: float
    reused_from: str | None = None  # the verdict copied, when the run reuses another commit's run
    gate_source: str = ""  # where the rules came from: "<sha8>:<path>" of a committed mlops-ci.yaml
    run_digest: str = ""  # the digest of the run judged, and of its baseline: the chain's links
    baseline_digest: str | None = None
    digest: str = ""
    signature: dict[str, str] = field(default_factory=dict)  # KMS signature of `digest` (optional)

    @property
    def conclusion(self) -> str:
        if not self.passed:
            return "failure"
        if any(not r.passed and not r.skipped for r in self.results):
            return "success-with-warnings"
        return "success"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["conclusion"] = self.conclusion
        return d


@dataclass(frozen=True)
class ModelVersion:
    project: str
    version: int
    sha: str
    run_id: str
    verdict_id: str
    artifact_uri: str
    artifact_sha256: str
    metrics: dict[str, float]
    stage: str  # approved | retired
    created: float
    run_digest: str = ""
    verdict_digest: str = ""
    digest: str = ""
    signature: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Deployment:
    deployment_id: str
    project: str
    endpoint: str
    version: int
    sha: str
    tag: str | None
    kind: str  # deploy | rollback
    outcome: str  # succeeded | failed | noop
    detail: str
    started: float
    finished: float
    version_digest: str = ""
    digest: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class EndpointState:
    project: str
    name: str
    url: str | None
    router_pid: int | None
    router_port: int | None
    server_pid: int | None
    server_port: int | None
    version: int | None
    sha: str | None
    status: str  # InService | Stopped
    updated: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class MetricDelta:
    name: str
    old: float | None
    new: float | None
    delta: float | None
    rel_delta: float | None
    goal: str | None
    direction: str  # better | worse | same | changed | added | removed


@dataclass(frozen=True)
class ParamChange:
    name: str
    old: object
    new: object
    change: str  # added | removed | changed


@dataclass(frozen=True)
class RunRef:
    run_id: str
    sha: str
    branch: str | None
    config_digest: str
    artifact_sha256: str | None
    links: dict[str, str]
    cost: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison:
    project: str
    head: RunRef
    baseline: RunRef | None
    baseline_note: str
    metrics: tuple[MetricDelta, ...]
    params: tuple[ParamChange, ...]
    config_changed: bool
    series: dict[str, dict[str, Sequence[float]]]
    model_diff: dict[str, Any] | None = None  # model_diff.py's result, when the review made one
    tuning: dict[str, Any] | None = None  # the search behind the head run (verbs/tune.py's leaderboard)

    def to_dict(self, series: dict[str, dict[str, list[float | None]]] | None = None) -> dict[str, object]:
        """Shallow, fast conversion (asdict deep-copies every series point). `series`
        replaces the full series, e.g. with downsampled ones for a report."""
        return {
            "project": self.project,
            "head": asdict(self.head),
            "baseline": asdict(self.baseline) if self.baseline else None,
            "baseline_note": self.baseline_note,
            "metrics": [dict(m.__dict__) for m in self.metrics],
            "params": [dict(p.__dict__) for p in self.params],
            "config_changed": self.config_changed,
            "model_diff": self.model_diff,
            "tuning": self.tuning,
            "series": {n: {k: list(v) for k, v in e.items()} for n, e in self.series.items()}
            if series is None
            else series,
        }
