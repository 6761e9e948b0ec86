"""Service boundaries. Each backend module implements one of these Protocols and is imported
lazily by the pipeline, so the CLI never pays for an SDK it does not use."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..records import Deployment, EndpointState, ModelVersion, Run, Verdict


class Store(Protocol):
    """Durable record of runs, verdicts, model versions, deployments and endpoint state."""

    def close(self) -> None: ...
    def integrity_problems(self) -> list[str]: ...  # the storage's own consistency (store check)
    def record_run(self, run: Run, series: Mapping[str, Sequence[float]]) -> None: ...
    def get_run(self, run_id: str) -> Run | None: ...
    def runs_by_prefix(self, prefix: str) -> list[Run]: ...
    def runs(self, project: str, *, sha: str | None = None, limit: int = 50) -> list[Run]: ...
    def latest_completed(self, project: str, sha: str, config_digest: str | None = None) -> Run | None: ...
    def latest_by_inputs(self, project: str, inputs_digest: str) -> Run | None: ...
    def shas_with_runs(self, project: str, shas: Iterable[str]) -> set[str]: ...
    def series(self, run_id: str) -> dict[str, Sequence[float]]: ...
    def record_verdict(self, verdict: Verdict) -> None: ...
    def latest_verdict(self, run_id: str) -> Verdict | None: ...
    def get_verdict(self, verdict_id: str) -> Verdict | None: ...
    def verdicts_for(self, run_id: str) -> list[Verdict]: ...
    def import_version(self, mv: ModelVersion) -> bool: ...
    def promote(self, make: Callable[[int], ModelVersion], sha: str, project: str) -> tuple[ModelVersion, bool]: ...
    def versions(self, project: str) -> list[ModelVersion]: ...
    def version_for_sha(self, project: str, sha: str) -> ModelVersion | None: ...
    def get_version(self, project: str, version: int) -> ModelVersion | None: ...
    def record_deployment(self, deployment: Deployment) -> None: ...
    def deployments(self, project: str, endpoint: str | None = None) -> list[Deployment]: ...
    def endpoint_state(self, project: str, name: str) -> EndpointState | None: ...
    def endpoint_states(self, project: str) -> list[EndpointState]: ...
    def put_endpoint_state(self, state: EndpointState) -> None: ...
    # `ttl`: how long a holder that died keeps the lock where it cannot be released by the OS
    # (an S3 lease); a flock dies with its process and ignores it
    def lock(self, name: str, owner: str, timeout: float, ttl: float = 3600.0) -> AbstractContextManager[None]: ...
    def put_artifact(self, path: Path, sha256: str) -> str: ...
    def fetch_artifact(self, uri: str, cache: Path) -> Path: ...


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
    sha: str = ""
    config_digest: str = ""
    tags: dict[str, str] = field(default_factory=dict)  # git provenance, for remote jobs
    channel_uris: dict[str, str] = field(default_factory=dict)  # remote backends read data from here
    # more environment once the job's name is known (e.g. the Comet experiment key derived from it)
    job_env: Callable[[str], dict[str, str]] | None = None


@dataclass
class TrainingResult:
    exit_code: int
    model_dir: Path
    output_dir: Path
    log_path: Path
    metrics: dict[str, float] = field(default_factory=dict)
    series: dict[str, Sequence[float]] = field(default_factory=dict)
    failure: str | None = None
    duration: float = 0.0
    links: dict[str, str] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)


class DeploymentRecorder(Protocol):
    """Mirrors a rollout somewhere visible (e.g. GitHub deployments); never changes its outcome."""

    def begin(self, endpoint: str, version: int, sha: str, tag: str | None, kind: str) -> None: ...
    def end(self, outcome: str, url: str | None, detail: str) -> None: ...
    def plan(self, endpoint: str, version: int, sha: str, tag: str | None, kind: str, url: str, detail: str
             ) -> list[dict[str, Any]]: ...  # fmt: skip


class TrainingBackend(Protocol):
    name: str

    def run(self, spec: TrainingSpec, workdir: Path, log: Callable[[str], None]) -> TrainingResult: ...


def run_url(env: Mapping[str, str]) -> str | None:
    """The GitHub Actions workflow run this process belongs to, if any."""
    server, repo, run = env.get("GITHUB_SERVER_URL"), env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID")
    return f"{server or 'https://github.com'}/{repo}/actions/runs/{run}" if repo and run else None


def owner_label(env: Mapping[str, str]) -> str:
    """Who holds a lock, for the message a waiting job prints: the workflow run URL under
    GitHub Actions, else this process."""
    return run_url(env) or f"pid {os.getpid()} on {os.uname().nodename}"
