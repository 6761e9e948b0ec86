"""Service boundaries. Each backend module implements one of these Protocols and is imported
lazily through mlops_ci/kinds.py, so the CLI never pays for an SDK it does not use."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..records import Deployment, EndpointState, ModelVersion, Run, Verdict

if TYPE_CHECKING:  # pragma: no cover
    from ..config import ChannelSettings, Config, EndpointConfig, MetricGoal
    from ..distribution import Distribution
    from .aws import Aws


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
    instance_count: int = 1  # hosts algo-1..N; only algo-1's model is the run's
    distribution: Distribution | None = None  # training.distribution (mlops_ci/distribution.py)
    channel_settings: dict[str, ChannelSettings] = field(default_factory=dict)  # FullyReplicated/File unless here


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


@dataclass(frozen=True)
class Context:
    """What a backend gets from the workspace that chose it (mlops_ci/kinds.py): each
    implementation is made with `Impl.from_context(ctx)`."""

    cfg: Config
    env: Mapping[str, str]
    home: Path  # the project's state directory (.mlops-ci)
    say: Callable[[str], None]
    aws: Callable[[], Aws]  # the one AWS session of the process, made on first use


T = TypeVar("T")


class Effects:
    """Every write of a rollout goes through this sink: performed, or, in a dry run, recorded in
    the plan (`would`) with the value the step goes on with instead of its result. The dry run
    walks the same code as the real run, so its plan is what the real run does, in its order."""

    def __init__(self, dry_run: bool, would: Callable[..., None]):
        self.dry_run = dry_run
        self._would_now = would
        self._held: list[dict[str, object]] = []  # a dry run's lock, planned with the first write under it

    def _would(self, target: str, action: str, **detail: object) -> None:
        for lock in self._held:
            self._would_now("local", "lock endpoint", **lock)
        self._held.clear()
        self._would_now(target, action, **detail)

    def __call__(self, target: str, action: str, perform: Callable[[], T], planned: T, **detail: object) -> T:
        if self.dry_run:
            self._would(target, action, **detail)
            return planned
        return perform()

    def each(
        self,
        target: str,
        action: str,
        perform: Callable[[], T],
        planned: Callable[[], Sequence[Mapping[str, Any]]],
    ) -> T | None:
        """One write made of several requests (a GitHub deployment and its status): performed
        once, or planned request by request (`planned` is only called in a dry run: None)."""
        if self.dry_run:
            for req in planned():
                self._would(target, action, **req)
            return None
        return perform()

    @contextmanager
    def lock(self, take: Callable[[], AbstractContextManager[None]], **detail: object) -> Iterator[None]:
        """The endpoint's lock; a dry run plans it only if it plans a write under it (a deploy
        of what already serves takes the lock, reads, and writes nothing)."""
        if not self.dry_run:
            with take():
                yield
            return
        self._held.append(detail)
        try:
            yield
        finally:
            if detail in self._held:
                self._held.remove(detail)


@dataclass(frozen=True)
class Live:
    """What an endpoint serves when a rollout starts, as its backend reads it under the lock."""

    version: int | None  # the version serving, as far as mlops-ci knows
    old: str  # how messages name what serves: "v3", "endpoint config …", "nothing"
    serving: bool  # something serves that a failed rollout leaves serving
    current: bool  # it already serves the version being rolled out: nothing to do
    url: str | None  # where the endpoint answers now, if it does


class StepFailed(Exception):
    """A rollout step failed after cleaning up after itself; `still` says what serves now when
    that is not simply what served before (a rollback, a deleted endpoint)."""

    def __init__(self, reason: str, still: str | None = None):
        super().__init__(reason)
        self.reason, self.still = reason, still


class RolloutSteps(Protocol):
    """One rollout of one version to one endpoint, step by step as its backend does them;
    verbs/rollout.py runs them in the one order. Each write goes through the rollout's Effects."""

    def check(self) -> None: ...  # before the lock: refusals only (no write)
    def live(self) -> Live: ...  # under the lock: what serves now
    def url(self) -> str: ...  # where it will serve (a prediction until `start` has run)
    def start(self) -> None: ...  # the new version up beside the old one
    def verify(self) -> None: ...  # checks before traffic reaches the new version
    # traffic to the new version; `record`: tag, kind, started and detail of the deployment record
    # to be written, for a backend that finishes it after a crash (local_endpoints.recover)
    def switch(self, record: Mapping[str, object]) -> None: ...
    def verify_live(self) -> None: ...  # checks once it serves
    def state(self) -> EndpointState: ...  # what the store records as live
    def retire(self) -> None: ...  # the old version stops


class EndpointBackend(Protocol):
    """An endpoint service (endpoints.backend, mlops_ci/kinds.py): the steps of a rollout."""

    def steps(self, ep: EndpointConfig, mv: ModelVersion, fx: Effects) -> RolloutSteps: ...


def pause(point: str) -> None:
    """Fault-injection point for the kill tests (tests/faults): with MLOPS_CI_TEST_PAUSE=point
    the deploying process says so in MLOPS_CI_TEST_PAUSE_FILE and waits there to be killed."""
    if os.environ.get("MLOPS_CI_TEST_PAUSE") == point and os.environ.get("MLOPS_CI_TEST_PAUSE_FILE"):
        import time

        Path(os.environ["MLOPS_CI_TEST_PAUSE_FILE"]).write_text(str(os.getpid()))
        time.sleep(600)


class RolloutHost(Protocol):
    """What an endpoint backend's steps use of the endpoints front end
    (local_endpoints.LocalEndpoints): the store, and of the workspace its config, progress and
    artifact check."""

    @property
    def store(self) -> Store: ...
    @property
    def ws(self) -> RolloutWorkspace: ...


class RolloutWorkspace(Protocol):
    @property
    def cfg(self) -> Config: ...
    def say(self, msg: str) -> None: ...
    def verify_artifact(self, uri: str | None, digest: str | None, *, what: str) -> Path: ...


class TrainingBackend(Protocol):
    name: str

    def run(self, spec: TrainingSpec, workdir: Path, log: Callable[[str], None]) -> TrainingResult: ...


@dataclass(frozen=True)
class Fetched:
    """An artifact fetched from the store and hashed: the one check before anything uses one."""

    path: Path
    actual: str | None  # its sha256; None: the store has no such file

    def matches(self, digest: str) -> bool:
        return self.actual == digest


def fetch_checked(store: Store, uri: str, cache: Path) -> Fetched:
    """Fetch the artifact at `uri` into `cache` and hash it (a store's refusal is raised)."""
    from .._files import sha256_file

    path = store.fetch_artifact(uri, cache)
    return Fetched(path, sha256_file(path) if path.is_file() else None)


class Tracker(Protocol):
    """Where data scientists look at experiments (tracking.backend). mlops-ci's own records stay
    the truth: a tracker adds links and the numbers a job logged to it, read once at training."""

    online: bool

    def experiment_key(self, job_name: str) -> str: ...
    def job_env(
        self,
        key: str,
        provenance: Mapping[str, str],
        offline_dir: str,
        *,
        name: str,
        others: Mapping[str, str],
        local: bool,
    ) -> Mapping[str, str]: ...
    def collect(self, key: str, output_dir: Path, keep: Path) -> dict[str, str]: ...
    def at_training(
        self, key: str, links: Mapping[str, str], goals: Mapping[str, MetricGoal], params: Mapping[str, Any]
    ) -> tuple[dict[str, float], dict[str, Sequence[float]]] | None: ...
    def tag(self, run: Run, provenance: Mapping[str, str], tags: list[str]) -> None: ...
    def numbers(self, run: Run, goals: Mapping[str, MetricGoal]) -> TrackedNumbers: ...
    def project_url(self) -> str: ...
    def compare_url(self, baseline: str, head: str) -> str: ...
    # its model registry (tracking.model_name), beside the store's
    def registry_version(self, mv: ModelVersion) -> str: ...
    def register(self, mv: ModelVersion, run: Run, package: str | None = None) -> tuple[str, bool]: ...
    def status_problem(self) -> str | None: ...
    def mark_deployed(self, mv: ModelVersion, endpoint: str) -> list[str]: ...


class ModelRegistry(Protocol):
    """A model registry beside the store's versions (registry.backend); only a passed gate adds to it."""

    def packages(self) -> Iterable[Mapping[str, object]]: ...  # what it holds of this project
    def package_for(self, sha: str) -> Mapping[str, object] | None: ...


class TrackedNumbers(Protocol):
    """What a tracker says of a run now (links and parameters for the report; numbers only to warn)."""

    @property
    def link(self) -> str | None: ...
    @property
    def metrics(self) -> dict[str, float] | None: ...
    @property
    def params(self) -> dict[str, Any] | None: ...
    @property
    def notes(self) -> Sequence[str]: ...


def run_url(env: Mapping[str, str]) -> str | None:
    """The GitHub Actions workflow run this process belongs to, if any."""
    from ..ci import detect

    return detect(env).run_url


def owner_label(env: Mapping[str, str]) -> str:
    """Who holds a lock, for the message a waiting job prints: the workflow run URL under
    GitHub Actions, else this process."""
    return run_url(env) or f"pid {os.getpid()} on {os.uname().nodename}"
