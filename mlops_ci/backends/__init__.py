"""Service boundaries. Each backend module implements one of these Protocols and is imported
lazily by the pipeline, so the CLI never pays for an SDK it does not use."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..records import Deployment, EndpointState, ModelVersion, Run, Verdict


class Store(Protocol):
    """Durable record of runs, verdicts, model versions, deployments and endpoint state."""

    def record_run(self, run: Run, series: dict[str, list[float]]) -> None: ...
    def get_run(self, run_id: str) -> Run: ...
    def runs(self, project: str, *, sha: str | None = None, limit: int = 50) -> list[Run]: ...
    def latest_completed(self, project: str, sha: str, config_digest: str | None = None) -> Run | None: ...
    def shas_with_runs(self, project: str, shas: Iterable[str]) -> set[str]: ...
    def series(self, run_id: str) -> dict[str, list[float]]: ...
    def record_verdict(self, verdict: Verdict) -> None: ...
    def latest_verdict(self, run_id: str) -> Verdict | None: ...
    def get_verdict(self, verdict_id: str) -> Verdict | None: ...
    def promote(self, make: Callable[[int], ModelVersion], sha: str, project: str) -> tuple[ModelVersion, bool]: ...
    def versions(self, project: str) -> list[ModelVersion]: ...
    def version_for_sha(self, project: str, sha: str) -> ModelVersion | None: ...
    def get_version(self, project: str, version: int) -> ModelVersion | None: ...
    def record_deployment(self, deployment: Deployment) -> None: ...
    def deployments(self, project: str, endpoint: str | None = None) -> list[Deployment]: ...
    def endpoint_state(self, project: str, name: str) -> EndpointState | None: ...
    def put_endpoint_state(self, state: EndpointState) -> None: ...


@dataclass(frozen=True)
class TrainingSpec:
    job_name: str
    code_dir: Path
    entry_point: str
    hyperparameters: dict[str, Any]
    channels: dict[str, Path]
    metric_regexes: dict[str, str]
    environment: dict[str, str]
    python: str
    max_run: int


@dataclass
class TrainingResult:
    exit_code: int
    model_dir: Path
    output_dir: Path
    log_path: Path
    metrics: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)
    failure: str | None = None
    duration: float = 0.0


class DeploymentRecorder(Protocol):
    """Mirrors a rollout somewhere visible (e.g. GitHub deployments); never changes its outcome."""

    def begin(self, endpoint: str, version: int, sha: str, tag: str | None, kind: str) -> None: ...
    def end(self, outcome: str, url: str | None, detail: str) -> None: ...


class TrainingBackend(Protocol):
    def run(self, spec: TrainingSpec, workdir: Path, log: Callable[[str], None]) -> TrainingResult: ...
