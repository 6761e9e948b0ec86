"""`mlops-ci.yaml` → a typed, validated :class:`Config`.

Precedence: command-line flag > ``MLOPS_CI_*`` environment > file > packaged defaults.
Every error names ``file:line:col``, the key, and what is allowed; unknown keys fail with a
"did you mean".

This module reads the keys every backend of a kind shares. A backend's own keys (a training
service's job settings, a cloud endpoint's instance type, a tracker's workspace, ...) are read by
its own parser, which its entry in mlops_ci/kinds.py names (`Kind.settings`, a :class:`Settings`;
they live in mlops_ci/settings/): the chosen backend's parser gets its section and returns it
with its own fields added.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path

from . import _yamlload
from .distribution import Distribution
from .errors import ConfigError
from .kinds import ENDPOINTS, REGISTRY, TABLES, TRACKING, TRAINING, Kind
from .monitoring import Thresholds
from .tuning import ParameterRange, TuningConfig

TYPE_CHECKING = False  # `typing` costs ~5 ms of start-up; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any, TypeVar

    from _typeshed import DataclassInstance

    _S = TypeVar("_S")

CONFIG_FILE = "mlops-ci.yaml"
DEFAULT_STORE = "sqlite:///.mlops-ci/store.db"
DEFAULT_EXCLUDE = ("*.md", "docs/", ".github/", ".gitignore", ".gitattributes", "LICENSE", "LICENSE.txt")
GOALS = ("maximize", "minimize")
SEVERITIES = ("fail", "warn")
_SECRET_KEY = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.I)
# \Z, not $: `$` also matches before a trailing newline, so "prod\n" passed as a name.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
_HP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*\Z")
KeyPath = tuple[str | int, ...]  # where a value is in the file: ("endpoints", 0, "name")


@dataclass(frozen=True)
class Settings:
    """A backend's own keys in its section of mlops-ci.yaml and how they are read; its entry in
    mlops_ci/kinds.py names it (`Kind.settings`). The core reads the keys every backend of the
    kind shares into the core section (TrainingConfig, TrackingConfig, EndpointConfig, ...), then
    hands the chosen backend's `parse` the section's mapping as written, its path and that core
    section; `parse` returns a `section`: the core section's subclass with the backend's own
    fields. It fails as the core does, with `r.fail(path, message)`: file:line and the key."""

    section: type[DataclassInstance] | None = None  # what parse returns; its fields' defaults stand for them elsewhere
    keys: tuple[str, ...] = ()  # the keys it adds to its section (beside the core's, in this order)
    parse: Callable[[_Reader, dict[str, object], KeyPath, Any], Any] | None = None
    check: Callable[[_Reader, Config], None] | None = None  # across sections, once all are parsed
    advice: Callable[[Config], list[tuple[str, KeyPath, str]]] | None = None  # `config check` warnings


def settings_of(kind: Kind) -> Settings | None:
    """The parser of `kind`'s own settings (imported now), if it has any."""
    parser = kind.parser()
    if parser is not None and not isinstance(parser, Settings):
        raise TypeError(f"{kind.settings} is not a config.Settings")
    return parser


def core_fields(section: DataclassInstance) -> dict[str, Any]:
    """The fields of a parsed core section, to make the backend's subclass from."""
    return {f.name: getattr(section, f.name) for f in fields(section)}


class _Section:
    """A section whose backends may add keys of their own (Settings.section is the subclass the
    chosen one's parser returns). Read on a section of another backend, such a key has its
    default, as if it were not set: `cfg.training.<trainer>` is None unless that trainer runs."""

    _table = ""  # its table in kinds.TABLES

    def __getattr__(self, name: str) -> Any:  # only reached for an attribute the section lacks
        if not name.startswith("_"):
            for kind in TABLES[self._table].values():
                parser = settings_of(kind)
                for f in fields(parser.section) if parser and parser.section else ():
                    if f.name == name:
                        return f.default_factory() if f.default_factory is not MISSING else f.default
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")


@dataclass(frozen=True)
class MetricDefinition:
    name: str
    regex: str


@dataclass(frozen=True)
class ChannelSettings:
    """How a channel reaches the hosts: the S3 data source's distribution type and the channel's
    input mode of a training job (the local trainer emulates them)."""

    distribution: str = "FullyReplicated"  # every host gets all of it | ShardedByS3Key: 1/N of the objects each
    input_mode: str = "File"  # File (copied first) | FastFile (streamed on read) | Pipe (a FIFO)


CHANNEL_DISTRIBUTIONS = ("FullyReplicated", "ShardedByS3Key")
INPUT_MODES = ("File", "FastFile", "Pipe")


@dataclass(frozen=True)
class TrainingConfig(_Section):
    """How a commit is trained: the keys every trainer reads (its own: Settings of its kind)."""

    _table = "training"
    backend: str = "local"
    entry_point: str = "train.py"
    source_dir: str = "."
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    channels: dict[str, str] = field(default_factory=dict)
    metric_definitions: tuple[MetricDefinition, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)
    python: str | None = None
    max_run: int = 3600
    instance_count: int = 1  # hosts (algo-1..N): instances on SageMaker, processes locally
    distribution: Distribution | None = None  # how the hosts train together (the SDK's `distribution`)
    channel_settings: dict[str, ChannelSettings] = field(default_factory=dict)  # channels written as mappings
    # Files of source_dir that training never reads: left out of the job's source and of the
    # inputs digest, so a commit that changes only these reuses the model of an earlier one.
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE

    @property
    def kind(self) -> Kind:
        return TRAINING[self.backend]


@dataclass(frozen=True)
class AwsConfig:
    """The AWS account of every backend on AWS (`Kind.on_aws`), the s3:// store and the signing
    key: region, the execution role the service assumes, and the bucket (under `prefix`) for
    sources, job output and model data."""

    region: str | None = None
    role: str | None = None
    bucket: str | None = None
    prefix: str = "mlops-ci"
    kms_key: str | None = None
    retry_mode: str = "adaptive"
    max_attempts: int = 10
    poll_seconds: float = 30.0  # how often a wait asks the service for news
    prices: dict[str, float] = field(default_factory=dict)  # instance type → USD/hour, for cost estimates


@dataclass(frozen=True)
class RegistryConfig:
    backend: str = "local"
    model_package_group: str | None = None
    approval: str = "Approved"

    @property
    def kind(self) -> Kind:
        return REGISTRY[self.backend]


@dataclass(frozen=True)
class MetricGoal:
    name: str
    goal: str
    tolerance: float = 0.0


@dataclass(frozen=True)
class Rule:
    """One gate check. ``kind`` is min, max, max_regression or required."""

    metric: str
    kind: str
    threshold: float | None = None
    relative: bool = False
    severity: str = "fail"
    line: int | None = None

    def describe(self) -> str:
        if self.kind == "required":
            return f"{self.metric} is present"
        if self.kind == "min":
            return f"{self.metric} >= {self.threshold:g}"
        if self.kind == "max":
            return f"{self.metric} <= {self.threshold:g}"
        assert self.threshold is not None
        amount = f"{self.threshold * 100:g}%" if self.relative else f"{self.threshold:g} (absolute)"
        return f"{self.metric} regresses by at most {amount} vs baseline"


@dataclass(frozen=True)
class GateConfig:
    rules: tuple[Rule, ...] = ()
    require_baseline: bool = False
    # an AWS KMS asymmetric key (id, ARN or alias): verdicts and versions are signed with it and
    # a deploy verifies both; not part of the gate digest (it decides who may judge, not how)
    signing_key: str | None = None


@dataclass(frozen=True)
class BaselineConfig:
    branch: str = "main"
    max_commits: int = 1000


@dataclass(frozen=True)
class ReviewConfig:
    """The review's model diff (model_diff.py): both models on the evaluation channel."""

    model_diff: bool = True
    eval_channel: str = "test"
    label_column: str | None = None  # default: a column named "label", if the files have a header
    id_column: str | None = None
    slice_column: str | None = None
    exclude_columns: tuple[str, ...] = ()
    task: str = "auto"
    content_type: str = "application/json"
    batch_size: int = 100
    max_rows: int = 100_000
    top_k: int = 5
    tolerance: float = 1e-6
    timeout: float = 300.0
    memory_mb: int = 4096
    latency_requests: int = 200


@dataclass(frozen=True)
class ServingConfig:
    entry_point: str | None = None
    include: tuple[str, ...] = ()
    python: str | None = None
    image_uri: str | None = None  # the inference image, where a backend serves from one (default: its trainer's)
    environment: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SmokeRequest:
    body: str
    content_type: str = "application/json"
    accept: str = "application/json"
    expect_status: int = 200
    expect_contains: str | None = None


@dataclass(frozen=True)
class RetrainConfig:
    """`monitoring.retrain`: what `monitor --post` asks the forge to run when an endpoint's alert is
    new: a workflow_dispatch of `workflow` on `ref`, or a repository_dispatch of `event_type`. It
    trains and gates; a human still tags the release that deploys."""

    workflow: str | None = None
    ref: str | None = None  # None: the repository's default branch
    inputs: tuple[tuple[str, str], ...] = (("force", "true"),)  # the starter train workflow's input
    event_type: str | None = None


@dataclass(frozen=True)
class MonitoringConfig:
    """`monitoring:`: the training channel profiled with every run, and the thresholds `monitor`
    holds the captured traffic to (mlops_ci/monitoring.py)."""

    channel: str = "train"
    max_rows: int = 10_000
    thresholds: Thresholds = field(default_factory=Thresholds)
    retrain: RetrainConfig | None = None


@dataclass(frozen=True)
class CaptureConfig:
    """`endpoints[].capture`: a sample of the endpoint's requests and answers, in the Data Capture
    record format (mlops_ci/serving/capture.py; a service's endpoint: its own capture settings)."""

    percent: int = 20  # the SDK's default sampling percentage
    csv_content_types: tuple[str, ...] = ("text/csv",)
    json_content_types: tuple[str, ...] = ("application/json",)
    max_payload_bytes: int = 1024 * 1024  # local: a larger request or answer is not captured
    rotate_bytes: int = 16 * 1024 * 1024  # local: a capture file's size limit
    destination: str | None = None  # a service's endpoint: s3://... (default s3://<aws.bucket>/<aws.prefix>/capture)


@dataclass(frozen=True)
class EndpointConfig(_Section):
    """An endpoint: the keys every endpoint backend reads (its own: Settings of its kind)."""

    _table = "endpoints"
    name: str
    tags: tuple[str, ...] = ()
    port: int = 0
    smoke: tuple[SmokeRequest, ...] = ()
    ready_timeout: float = 60.0
    backend: str = "local"
    capture: CaptureConfig | None = None

    @property
    def kind(self) -> Kind:
        return ENDPOINTS[self.backend]


@dataclass(frozen=True)
class TrackingConfig(_Section):
    """Where data scientists look at experiments, besides the run store: the tracker's own keys
    are read by its kind's Settings."""

    _table = "tracking"
    backend: str = "local"

    @property
    def kind(self) -> Kind:
        return TRACKING[self.backend]


@dataclass(frozen=True)
class Config:
    project: str
    file: str
    root: str
    store: str = DEFAULT_STORE
    training: TrainingConfig = field(default_factory=TrainingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    metrics: dict[str, MetricGoal] = field(default_factory=dict)
    gate: GateConfig = field(default_factory=GateConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    review: ReviewConfig = field(default_factory=ReviewConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    endpoints: tuple[EndpointConfig, ...] = ()
    aws: AwsConfig = field(default_factory=AwsConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    tuning: TuningConfig | None = None  # a hyperparameter search per commit (mlops_ci/tuning.py)
    monitoring: MonitoringConfig | None = None  # baseline statistics at train time, `monitor` (monitoring.py)
    sources: dict[str, str] = field(default_factory=dict)

    def endpoint(self, name: str) -> EndpointConfig:
        for ep in self.endpoints:
            if ep.name == name:
                return ep
        names = [e.name for e in self.endpoints]
        raise ConfigError(
            f"endpoint '{name}' is not declared in {self.file}"
            + _did_you_mean(name, names)
            + f"; declared: {', '.join(names) or 'none'}"
        )

    def endpoint_setting(self, name: str, key: str) -> str:
        """Where `key` of endpoint `name` is set, for messages: `endpoints[1].ready_timeout in mlops-ci.yaml`."""
        i = next((i for i, ep in enumerate(self.endpoints) if ep.name == name), None)
        return f"endpoints[{i}].{key} in {self.file}" if i is not None else f"endpoints[].{key} in {self.file}"

    def extras(self) -> list[str]:
        """The package extras this configuration needs (for `pip install 'mlops-ci[...]'`)."""
        kinds = (self.training.kind, self.tracking.kind, self.registry.kind, *(e.kind for e in self.endpoints))
        needed = {k.extra for k in kinds if k.extra}
        if self.store.startswith("s3://"):
            needed.add("s3")
        if self.tuning is not None and self.tuning.strategy == "Bayesian" and not self.training.kind.remote:
            needed.add("tuning")  # the local trainer's Bayesian search is optuna's
        return sorted(needed)

    def on_aws(self) -> list[str]:
        """What of this configuration calls AWS (for messages): `training.backend is <name>`, ..."""
        sections = (("training", self.training.kind), ("registry", self.registry.kind))
        why = [f"{what}.backend is {k.name}" for what, k in sections if k.on_aws]
        return why + [f"endpoint {e.name} is on {e.kind.label}" for e in self.endpoints if e.kind.on_aws]

    def training_digest(self, *, search: bool = True) -> str:
        """What determines a training run: same digest on the same SHA → same run. `search`:
        with `tuning:` (the commit's run is a search's best); without it, what one trial's run
        rests on besides its values (verbs/tune.py)."""
        t = asdict(self.training)
        _drop_unset_new_keys(self.training, t)
        t["environment"] = {
            k: ("<secret>" if _SECRET_KEY.search(k) else v) for k, v in self.training.environment.items()
        }
        # the trainer's own settings are fields of its section (none for the local one, whose
        # digests stay as they were before there were others)
        payload: dict[str, Any] = {"project": self.project, "training": t, "serving": asdict(self.serving)}
        if self.tuning is not None and search:  # the commit's run is the best of a search: the search is part of it
            payload["tuning"] = asdict(self.tuning)
        if self.training.kind.on_aws:  # where it runs and as whom is part of what ran
            payload["aws"] = {k: v for k, v in asdict(self.aws).items() if k in ("region", "role", "bucket", "prefix")}
        if self.training.exclude == DEFAULT_EXCLUDE:  # unset, it leaves older runs' digests as they were
            payload["training"].pop("exclude")
        for key, unset in (("instance_count", 1), ("distribution", None), ("channel_settings", {})):
            if payload["training"][key] == unset:  # as for exclude: older runs keep their digests
                payload["training"].pop(key)
        for key in ("image_uri", "environment"):  # unset new keys leave the digests of older runs as they were
            if not payload["serving"][key]:
                payload["serving"].pop(key)
        return digest(payload)

    def gate_digest(self) -> str:
        """What determines a verdict: a promote needs a verdict under the current digest."""
        rules = [{k: v for k, v in asdict(r).items() if k != "line"} for r in self.gate.rules]
        goals = {k: asdict(v) for k, v in sorted(self.metrics.items())}
        payload = {"rules": rules, "goals": goals, "require_baseline": self.gate.require_baseline}
        return digest(payload)

    def to_display(self) -> dict[str, Any]:
        """The resolved config with secrets masked, for `config show`."""
        data = asdict(self)
        data.pop("sources")
        # every key of a section, as before the backends had sections of their own: another
        # backend's keys with the defaults they read as
        for key in ("training", "tracking"):
            _display_others(getattr(self, key), data[key])
        for ep, shown in zip(self.endpoints, data["endpoints"], strict=True):
            _display_others(ep, shown)
        data["training"]["environment"] = mask_secrets(self.training.environment)
        from ._untrusted import mask_params

        data["training"]["hyperparameters"] = mask_params(self.training.hyperparameters)
        data["serving"]["environment"] = mask_secrets(self.serving.environment)
        return data


def _drop_unset_new_keys(section: object, shown: dict[str, object]) -> None:
    """Leave out of a digest the fields marked `metadata={"digest": "when set"}` while they have
    their default: a key added to a backend's settings keeps the digests of older runs as they were."""
    if not is_dataclass(section):
        return
    for f in fields(section):
        value = getattr(section, f.name)
        if f.metadata.get("digest") == "when set" and value == f.default:
            shown.pop(f.name, None)
        elif is_dataclass(value) and isinstance(inner := shown.get(f.name), dict):
            _drop_unset_new_keys(value, inner)


def _display_others(section: _Section, shown: dict[str, Any]) -> None:
    for kind in TABLES[section._table].values():
        parser = settings_of(kind)
        for f in fields(parser.section) if parser and parser.section else ():
            if f.name not in shown:
                value = getattr(section, f.name)
                shown[f.name] = asdict(value) if is_dataclass(value) and not isinstance(value, type) else value


def mask_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """An environment with the values of secret-looking names (…KEY, …TOKEN, …SECRET) masked."""
    return {k: ("***" if _SECRET_KEY.search(k) else v) for k, v in env.items()}


def digest(payload: object) -> str:
    """sha256 of `payload`'s canonical JSON: the config digests, and the run's inputs digest."""
    import hashlib  # not at module level: `config check` never needs it
    import json

    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _did_you_mean(word: str, options: list[str] | tuple[str, ...]) -> str:
    import difflib  # only on the error path

    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


class _Reader:
    """Walks the loaded YAML, checking types and keys, with file:line in every error."""

    def __init__(self, loaded: _yamlload.Loaded):
        self.loaded = loaded

    def fail(self, path: tuple[str | int, ...], msg: str) -> ConfigError:
        where = self.loaded.where(path)
        from ._untrusted import inline  # a hostile key is shown, escaped, on the error's one line

        key = ".".join(inline(p) for p in path) or "<top level>"
        return ConfigError(f"{where}: {key}: {msg}", file=self.loaded.file, line=self.loaded.line(path))

    def mapping(self, value: object, path: tuple[str | int, ...], allowed: tuple[str, ...]) -> dict[str, object]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping with keys {', '.join(allowed)}, got {_kind(value)}")
        for key in value:
            if key not in allowed:
                raise self.fail(
                    (*path, key),
                    f"unknown key '{key}'{_did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}",
                )
        return value

    def string(self, value: object, path: tuple[str | int, ...], *, choices: tuple[str, ...] = ()) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected a non-empty string, got {_kind(value)}")
        if choices and value not in choices:
            raise self.fail(
                path, f"'{value}' is not allowed{_did_you_mean(value, choices)}; allowed: {', '.join(choices)}"
            )
        return value

    def number(self, value: object, path: tuple[str | int, ...]) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(path, f"expected a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise self.fail(path, f"expected a finite number, got {value}")
        return float(value)

    def integer(self, value: object, path: tuple[str | int, ...], *, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"expected a whole number, got {_kind(value)}")
        if value < minimum:
            raise self.fail(path, f"expected a whole number >= {minimum}, got {value}")
        return value

    def boolean(self, value: object, path: tuple[str | int, ...]) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, got {_kind(value)}")
        return value

    def seq(self, value: object, path: tuple[str | int, ...]) -> list[object]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list, got {_kind(value)}")
        return value

    def str_map(self, value: object, path: tuple[str | int, ...]) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping of names to strings, got {_kind(value)}")
        out = {}
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise self.fail((*path, k), f"expected a string, got {_kind(v)}")
            out[k] = str(v)
        return out


def _kind(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return f"a number ({value})"
    return f"'{value}'"


TOP_KEYS = (
    "project", "store", "training", "tracking", "metrics", "gate", "baseline", "serving", "endpoints", "aws",
    "registry", "review", "tuning", "monitoring",
)  # fmt: skip
# patterns compiled on first use (re caches them): a local-only config never pays for them
_ARN_ROLE = r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+\Z"
_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z"


def parse(text: str, file: str, root: str) -> Config:
    """Parse and validate config text. ``root`` is the repository root the paths are relative to."""
    loaded = _yamlload.load(text, file)
    r = _Reader(loaded)
    top = r.mapping(loaded.data, (), TOP_KEYS)
    if "project" not in top:
        raise r.fail((), "missing required key 'project' (a short name for this model, e.g. project: churn)")
    project = r.string(top["project"], ("project",))
    if not _NAME.match(project):
        raise r.fail(("project",), "use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
    store = r.string(top["store"], ("store",)) if "store" in top else DEFAULT_STORE
    _check_store(store, r, ("store",))

    training = _parse_training(r, top.get("training"))
    tracking = _parse_tracking(r, top.get("tracking"))
    metrics = _parse_metrics(r, top.get("metrics"))
    gate = _parse_gate(r, top.get("gate"), metrics)
    baseline_raw = r.mapping(top.get("baseline"), ("baseline",), ("branch", "max_commits"))
    baseline = BaselineConfig(
        branch=r.string(baseline_raw.get("branch", "main"), ("baseline", "branch")),
        max_commits=r.integer(baseline_raw.get("max_commits", 1000), ("baseline", "max_commits"), minimum=1),
    )
    review = _parse_review(r, top.get("review"))
    serving = _parse_serving(r, top.get("serving"))
    endpoints = _parse_endpoints(r, top.get("endpoints"))
    aws = _parse_aws(r, top.get("aws"))
    registry = _parse_registry(r, top.get("registry"))
    _check_aws_needed(r, training, registry, endpoints, aws)
    tuning = _parse_tuning(r, top.get("tuning"), metrics, training)
    monitoring = _parse_monitoring(r, top["monitoring"], training) if "monitoring" in top else None
    if monitoring is not None and not serving.entry_point:
        raise r.fail(("monitoring",), "needs serving.entry_point: the baseline statistics hold the model's "
                     "predictions on the channel, made through the serving contract (model_fn)")  # fmt: skip
    cfg = Config(
        project=project,
        file=file,
        root=root,
        store=store,
        training=training,
        tracking=tracking,
        metrics=metrics,
        gate=gate,
        baseline=baseline,
        review=review,
        serving=serving,
        endpoints=endpoints,
        aws=aws,
        registry=registry,
        tuning=tuning,
        monitoring=monitoring,
        sources=dict.fromkeys(top, "file"),
    )
    checks = [parser.check for parser in chosen_settings(cfg) if parser.check]
    for check in dict.fromkeys(checks):  # each once, though its backend serves several sections
        check(r, cfg)
    return cfg


def _parse_tuning(r: _Reader, raw: object, metrics: dict[str, MetricGoal], training: TrainingConfig
                  ) -> TuningConfig | None:  # fmt: skip
    """`tuning:`, a hyperparameter search per commit (mlops_ci/tuning.py)."""
    from . import tuning as tun

    if raw is None:
        return None
    p: KeyPath = ("tuning",)
    keys = ("objective", "parameters", "strategy", "max_jobs", "max_parallel", "early_stopping", "seed")
    m = r.mapping(raw, p, keys)
    for req in ("objective", "parameters"):
        if req not in m:
            raise r.fail(p, f"missing '{req}'")
    op = (*p, "objective")
    o = r.mapping(m["objective"], op, ("metric", "goal"))
    if "metric" not in o:
        raise r.fail(op, "missing 'metric' (the metric the search optimises, e.g. objective: {metric: accuracy})")
    metric = _metric_name(r, o["metric"], (*op, "metric"))
    declared = metrics[metric].goal if metric in metrics else None
    goal = r.string(o["goal"], (*op, "goal"), choices=("maximize", "minimize")) if "goal" in o else declared
    if goal is None:
        raise r.fail(op, f"give goal: maximize or minimize (or declare metrics.{metric}.goal)")
    if declared is not None and goal != declared:
        raise r.fail((*op, "goal"), f"is {goal}, but metrics.{metric}.goal is {declared}: the gate and the search "
                     "would pull opposite ways")  # fmt: skip
    pp = (*p, "parameters")
    if not isinstance(m["parameters"], dict):
        raise r.fail(pp, "expected a mapping of hyperparameter names to ranges")
    params_raw: dict[str, object] = m["parameters"]
    if not params_raw:
        raise r.fail(pp, "names no parameter to search")
    ranges = []
    for name, spec in params_raw.items():
        at = (*pp, name)
        from .settings.script_mode import RESERVED_BY, RESERVED_PREFIX

        if not isinstance(name, str) or not _HP_NAME.match(name) or name.startswith(RESERVED_PREFIX):
            raise r.fail(at, "hyperparameter names are letters, digits, '_' or '-' and must not start with "
                         f"'{RESERVED_PREFIX}' (reserved by {RESERVED_BY})")  # fmt: skip
        if name in training.hyperparameters:
            raise r.fail(at, "is also in training.hyperparameters: a searched parameter has no fixed value there")
        sm = r.mapping(spec, at, ("type", "min", "max", "values", "scaling"))
        kind = r.string(sm.get("type"), (*at, "type"), choices=tun.TYPES) if "type" in sm else None
        if kind is None:
            raise r.fail(at, "give type: continuous, integer or categorical")
        if kind == "categorical":
            for key in ("min", "max", "scaling"):
                if key in sm:
                    raise r.fail((*at, key), "only applies to continuous and integer ranges")
            values = r.seq(sm.get("values"), (*at, "values"))
            if not values:
                raise r.fail(at, "give values: the list of choices")
            for i, v in enumerate(values):
                if isinstance(v, dict | list) or v is None:
                    raise r.fail((*at, "values", i), "expected a string, number or boolean")
            if len(set(map(str, values))) != len(values):
                raise r.fail((*at, "values"), "has a value twice")
            ranges.append(ParameterRange(name, kind, values=tuple(values)))
            continue
        if "values" in sm:
            raise r.fail((*at, "values"), "only applies to categorical ranges")
        for key in ("min", "max"):
            if key not in sm:
                raise r.fail(at, f"missing '{key}'")
        if kind == "integer":
            lo, hi = (float(r.integer(sm[k], (*at, k), minimum=-(2**31))) for k in ("min", "max"))
        else:
            lo, hi = (r.number(sm[k], (*at, k)) for k in ("min", "max"))
        scaling = r.string(sm.get("scaling", "Auto"), (*at, "scaling"), choices=tun.SCALINGS)
        ranges.append(ParameterRange(name, kind, min=lo, max=hi, scaling=scaling))
    strategy = r.string(m.get("strategy", "Random"), (*p, "strategy"), choices=tun.STRATEGIES)
    if strategy == "Grid" and "max_jobs" in m:
        raise r.fail((*p, "max_jobs"), "a Grid search runs every combination: leave max_jobs out")
    max_jobs = r.integer(m.get("max_jobs", 10), (*p, "max_jobs"), minimum=1)
    t = TuningConfig(
        metric=metric,
        goal=goal,
        parameters=tuple(ranges),
        strategy=strategy,
        max_jobs=max_jobs,
        max_parallel=r.integer(m.get("max_parallel", 1), (*p, "max_parallel"), minimum=1),
        early_stopping=r.string(m.get("early_stopping", "Off"), (*p, "early_stopping"), choices=tun.EARLY_STOPPING),
        seed=r.integer(m.get("seed", 0), (*p, "seed")),
    )
    if strategy == "Grid":
        t = replace(t, max_jobs=tun.grid_size(t))
    for path, message in tun.problems(t):
        raise r.fail((*p, *path), message)
    return t


def chosen_settings(cfg: Config) -> list[Settings]:
    """The settings parsers of the backends `cfg` chose, each once (training, tracking, registry,
    endpoints)."""
    kinds = (cfg.training.kind, cfg.tracking.kind, cfg.registry.kind, *(e.kind for e in cfg.endpoints))
    parsers = [settings_of(k) for k in dict.fromkeys(kinds)]
    return list(dict.fromkeys(p for p in parsers if p is not None))


def _owned(table: Mapping[str, Kind]) -> dict[str, list[str]]:
    """The keys the backends of `table` add to its section → the backends that read each."""
    owned: dict[str, list[str]] = {}
    for kind in table.values():
        parser = settings_of(kind)
        for key in parser.keys if parser else ():
            owned.setdefault(key, []).append(kind.name)
    return owned


def _only_theirs(r: _Reader, m: dict[str, object], p: KeyPath, owned: dict[str, list[str]], backend: str,
                 setting: str) -> None:  # fmt: skip
    """A key that other backends of the section read is an error with this one: say whose it is."""
    for key in m:
        owners = owned.get(key, [backend])
        if backend not in owners:
            raise r.fail((*p, key), f"only applies with {setting}: {' or '.join(owners)}")


def _with_settings(r: _Reader, kind: Kind, m: dict[str, object], p: KeyPath, core: _S) -> _S:
    """`core` as the backend `kind` has it: with its own settings read by its parser."""
    parser = settings_of(kind)
    return parser.parse(r, m, p, core) if parser and parser.parse else core  # type: ignore[no-any-return]


def is_shared_store(url: str) -> bool:
    """A store every CI machine sees: S3, or the repository's own refs (git)."""
    return url.startswith(("s3://", "git+", "git#", "git?")) or url == "git"


def _check_store(store: str, r: _Reader | None, path: tuple[str | int, ...]) -> None:
    msg = None
    if store.startswith("s3://"):
        from .backends.s3_store import S3Location

        try:
            S3Location.parse(store)
        except ConfigError as exc:
            msg = exc.message
    elif is_shared_store(store):
        from .backends.git_store import GitLocation

        try:
            GitLocation.parse(store)
        except ConfigError as exc:
            msg = exc.message
    elif not store.startswith("sqlite:///"):
        msg = (f"'{store}' is not a supported store; use sqlite:///path/to/store.db, git (this repository's refs) "
               "or s3://bucket/prefix")  # fmt: skip
    if msg:
        if r is not None:
            raise r.fail(path, msg)
        raise ConfigError(f"store: {msg}")


def _parse_training(r: _Reader, raw: object) -> TrainingConfig:
    p: tuple[str | int, ...] = ("training",)
    keys = (
        "backend",
        "entry_point",
        "source_dir",
        "hyperparameters",
        "channels",
        "metric_definitions",
        "environment",
        "python",
        "max_run",
        "instance_count",
        "distribution",
    )
    owned = _owned(TRAINING)
    t = r.mapping(raw, p, (*keys, *owned, "exclude"))  # the trainers' keys where they always were
    hps_raw = t.get("hyperparameters") or {}
    if not isinstance(hps_raw, dict):
        raise r.fail((*p, "hyperparameters"), f"expected a mapping of names to values, got {_kind(hps_raw)}")
    from .settings.script_mode import RESERVED_BY, RESERVED_PREFIX

    for name, value in hps_raw.items():
        if not isinstance(name, str) or not _HP_NAME.match(name) or name.startswith(RESERVED_PREFIX):
            raise r.fail(
                (*p, "hyperparameters", name),
                "hyperparameter names are letters, digits, '_' or '-' and must not start with "
                f"'{RESERVED_PREFIX}' (reserved by {RESERVED_BY})",
            )
        if value is None:
            raise r.fail((*p, "hyperparameters", name), "has no value; give it one or remove it")
    channels, channel_settings = _channels(r, t.get("channels"), (*p, "channels"))
    defs = []
    first: dict[str, int | None] = {}  # metric name → line of its first definition
    for i, d in enumerate(r.seq(t.get("metric_definitions"), (*p, "metric_definitions"))):
        dp = (*p, "metric_definitions", i)
        dm = r.mapping(d, dp, ("name", "regex"))
        for req in ("name", "regex"):
            if req not in dm:
                raise r.fail(dp, f"missing '{req}' (each metric definition has a name and a regex)")
        regex = r.string(dm["regex"], (*dp, "regex"))
        try:
            compiled = re.compile(regex)
        except re.error as exc:
            raise r.fail((*dp, "regex"), f"invalid regular expression: {exc}") from None
        if compiled.groups < 1:
            raise r.fail((*dp, "regex"), "needs one capture group around the number, e.g. 'loss=([0-9.]+)'")
        name = _metric_name(r, dm["name"], (*dp, "name"))
        if name in first:
            # keeping the last one silently would gate on a regex the author may not expect
            raise r.fail((*dp, "name"), f"metric '{name}' is defined twice (lines {first[name]} and "
                         f"{r.loaded.line((*dp, 'name'))}); keep one definition per metric")  # fmt: skip
        first[name] = r.loaded.line((*dp, "name"))
        defs.append(MetricDefinition(name=name, regex=regex))
    backend = r.string(t.get("backend", "local"), (*p, "backend"), choices=tuple(TRAINING))
    max_run = r.integer(t.get("max_run", 3600), (*p, "max_run"), minimum=1)
    _only_theirs(r, {k: v for k, v in t.items() if v is not None}, p, owned, backend, "training.backend")
    core = TrainingConfig(
        backend=backend,
        entry_point=r.string(t.get("entry_point", "train.py"), (*p, "entry_point")),
        source_dir=r.string(t.get("source_dir", "."), (*p, "source_dir")),
        hyperparameters=dict(hps_raw),
        channels=channels,
        metric_definitions=tuple(defs),
        environment=r.str_map(t.get("environment"), (*p, "environment")),
        python=r.string(t["python"], (*p, "python")) if t.get("python") is not None else None,
        max_run=max_run,
        instance_count=r.integer(t.get("instance_count", 1), (*p, "instance_count"), minimum=1),
        distribution=_distribution(r, t.get("distribution"), (*p, "distribution")),
        channel_settings=channel_settings,
        exclude=_excludes(r, t, p),
    )
    return _with_settings(r, TRAINING[backend], t, p, core)


def _channels(r: _Reader, raw: object, p: KeyPath) -> tuple[dict[str, str], dict[str, ChannelSettings]]:
    """`name: where` or `name: {uri: where, distribution: ..., input_mode: ...}`."""
    if raw is None:
        return {}, {}
    if not isinstance(raw, dict):
        raise r.fail(p, f"expected a mapping of channel names to locations, got {_kind(raw)}")
    uris: dict[str, str] = {}
    settings: dict[str, ChannelSettings] = {}
    for name, value in raw.items():
        cp = (*p, name)
        if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_-]+\Z", name):
            raise r.fail(cp, "channel names are letters, digits, '_' or '-'")
        if not isinstance(value, dict):
            uris[name] = r.str_map({name: value}, p)[name]
            continue
        m = r.mapping(value, cp, ("uri", "distribution", "input_mode"))
        if "uri" not in m:
            raise r.fail(cp, "missing 'uri' (where the channel's data is: a directory, or an s3:// URI)")
        uris[name] = r.str_map({name: m["uri"]}, cp)[name]
        d = ChannelSettings()
        settings[name] = ChannelSettings(
            distribution=r.string(m.get("distribution", d.distribution), (*cp, "distribution"),
                                  choices=CHANNEL_DISTRIBUTIONS),
            input_mode=r.string(m.get("input_mode", d.input_mode), (*cp, "input_mode"), choices=INPUT_MODES),
        )  # fmt: skip
    return uris, settings


def _distribution(r: _Reader, raw: object, p: KeyPath) -> Distribution | None:
    """`training.distribution`, the SDK's shape (mlops_ci/distribution.py)."""
    from . import distribution as dist

    if raw is None:
        return None
    top = r.mapping(raw, p, tuple(dist.STRATEGIES))
    if not top:
        raise r.fail(p, "names no strategy; e.g. torch_distributed: {enabled: true}, or remove it")
    options: dict[str, dict[str, Any]] = {}

    def enabled(m: dict[str, object], sp: KeyPath) -> bool:
        if "enabled" not in m:
            raise r.fail(sp, "give enabled: true (or false)")
        return r.boolean(m["enabled"], (*sp, "enabled"))

    def mpi_options(m: dict[str, object], sp: KeyPath) -> str:
        text = m.get("custom_mpi_options", "")
        if text == "":
            return ""
        value = r.string(text, (*sp, "custom_mpi_options"))
        if any(ord(c) < 32 for c in value):
            raise r.fail((*sp, "custom_mpi_options"), "must be one line without control characters")
        return value

    for name, value in top.items():
        sp = (*p, name)
        m = r.mapping(value, sp, dist.STRATEGIES[name])
        if name == "smdistributed":
            libs: dict[str, Any] = {}
            for lib, lib_value in m.items():
                lp = (*sp, lib)
                lm = r.mapping(lib_value, lp, dist.SMDISTRIBUTED[lib])
                one: dict[str, Any] = {"enabled": enabled(lm, lp)}
                if lib == "dataparallel" and "custom_mpi_options" in lm:
                    one["custom_mpi_options"] = mpi_options(lm, lp)
                if lib == "modelparallel" and lm.get("parameters") is not None:
                    params = lm["parameters"]
                    if not isinstance(params, dict) or any(isinstance(v, dict | list) for v in params.values()):
                        raise r.fail((*lp, "parameters"), "expected a mapping of names to numbers, strings or booleans")
                    one["parameters"] = dict(params)
                libs[lib] = one
            if not libs:
                raise r.fail(sp, "names neither dataparallel nor modelparallel")
            options[name] = libs
            continue
        opts: dict[str, Any] = {"enabled": enabled(m, sp)}
        if name == "mpi":
            if m.get("processes_per_host") is not None:
                opts["processes_per_host"] = r.integer(m["processes_per_host"], (*sp, "processes_per_host"), minimum=1)
            if "custom_mpi_options" in m:
                opts["custom_mpi_options"] = mpi_options(m, sp)
        options[name] = opts
    for path, message in dist.problems(options):
        raise r.fail((*p, *path), message)
    return Distribution(options)


def _metric_name(r: _Reader, value: object, path: tuple[str | int, ...]) -> str:
    """A metric name: any text on one line. Line breaks and control characters would let it
    forge lines of our output (e.g. a GitHub workflow command); mlops_ci/_untrusted.py."""
    from ._untrusted import bad_name_chars

    name = r.string(value, path)
    bad = bad_name_chars(name)
    if bad:
        raise r.fail(path, f"metric names must not contain line breaks or control characters "
                     f"(found {', '.join(dict.fromkeys(bad))}); rename it")  # fmt: skip
    return name


def _excludes(r: _Reader, t: dict[str, object], p: tuple[str | int, ...]) -> tuple[str, ...]:
    if "exclude" not in t:
        return DEFAULT_EXCLUDE
    pats = strings(r, t["exclude"], (*p, "exclude"))
    for i, pat in enumerate(pats):
        if not pat or pat.startswith("/") or ".." in pat.split("/") or any(ord(c) < 32 for c in pat):
            raise r.fail((*p, "exclude", i), f"{pat!r} is not a relative path pattern (e.g. 'docs/' or '*.md')")
    return pats


def strings(r: _Reader, raw: object, path: tuple[str | int, ...]) -> tuple[str, ...]:
    """A list of non-empty strings (none when unset)."""
    return tuple(r.string(v, (*path, i)) for i, v in enumerate(r.seq(raw, path)))


def opt_string(r: _Reader, m: dict[str, object], key: str, path: tuple[str | int, ...]) -> str | None:
    """`m[key]` as a non-empty string, or None when unset."""
    return r.string(m[key], (*path, key)) if m.get(key) is not None else None


def _parse_tracking(r: _Reader, raw: object) -> TrackingConfig:
    p: tuple[str | int, ...] = ("tracking",)
    owned = _owned(TRACKING)
    m = r.mapping(raw, p, ("backend", *owned))
    backend = r.string(m.get("backend", "local"), (*p, "backend"), choices=tuple(TRACKING))
    _only_theirs(r, m, p, owned, backend, "tracking.backend")
    return _with_settings(r, TRACKING[backend], m, p, TrackingConfig(backend=backend))


def _parse_aws(r: _Reader, raw: object) -> AwsConfig:
    p: tuple[str | int, ...] = ("aws",)
    m = r.mapping(raw, p, tuple(AwsConfig.__dataclass_fields__))
    role = opt_string(r, m, "role", p)
    if role and not re.match(_ARN_ROLE, role):
        raise r.fail((*p, "role"), f"'{role}' is not an IAM role ARN (arn:aws:iam::123456789012:role/name)")
    bucket = opt_string(r, m, "bucket", p)
    if bucket and not re.match(_BUCKET, bucket):
        raise r.fail((*p, "bucket"), f"'{bucket}' is not a bucket name (give the name, not an s3:// URI)")
    return AwsConfig(
        region=opt_string(r, m, "region", p),
        role=role,
        bucket=bucket,
        prefix=r.string(m.get("prefix", "mlops-ci"), (*p, "prefix")).strip("/"),
        kms_key=opt_string(r, m, "kms_key", p),
        retry_mode=r.string(m.get("retry_mode", "adaptive"), (*p, "retry_mode"), choices=("standard", "adaptive")),
        max_attempts=r.integer(m.get("max_attempts", 10), (*p, "max_attempts"), minimum=1),
        poll_seconds=r.number(m.get("poll_seconds", 30.0), (*p, "poll_seconds")),
        prices=_prices(r, m.get("prices"), (*p, "prices")),
    )


def _prices(r: _Reader, raw: object, p: tuple[str | int, ...]) -> dict[str, float]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise r.fail(p, f"expected a mapping of instance types to USD per hour, got {_kind(raw)}")
    out = {}
    for itype, price in raw.items():
        value = r.number(price, (*p, itype))
        if value < 0:
            raise r.fail((*p, itype), "must be >= 0")
        out[str(itype)] = value
    return out


def _parse_registry(r: _Reader, raw: object) -> RegistryConfig:
    p: tuple[str | int, ...] = ("registry",)
    m = r.mapping(raw, p, tuple(RegistryConfig.__dataclass_fields__))
    group = opt_string(r, m, "model_package_group", p)
    if group and not re.match(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$", group):
        raise r.fail((*p, "model_package_group"), "use 1-63 letters, digits or '-'")
    return RegistryConfig(
        backend=r.string(m.get("backend", "local"), (*p, "backend"), choices=tuple(REGISTRY)),
        model_package_group=group,
        approval=r.string(m.get("approval", "Approved"), (*p, "approval"),
                          choices=("Approved", "PendingManualApproval")),
    )  # fmt: skip


def _check_aws_needed(
    r: _Reader,
    training: TrainingConfig,
    registry: RegistryConfig,
    endpoints: tuple[EndpointConfig, ...],
    aws: AwsConfig,
) -> None:
    """Anything on AWS needs the role and the bucket; say so where the user wrote it."""
    users: list[tuple[tuple[str | int, ...], Kind]] = []
    if training.kind.on_aws:
        users.append((("training", "backend"), training.kind))
    if registry.kind.on_aws:
        users.append((("registry", "backend"), registry.kind))
    users += [(("endpoints", i, "backend"), e.kind) for i, e in enumerate(endpoints) if e.kind.on_aws]
    if not users:
        return
    for key in ("role", "bucket"):
        if getattr(aws, key) is None:
            where, kind = users[0]
            raise r.fail(where, f"{kind.label} needs aws.{key} in {r.loaded.file} (the execution role ARN and the "
                                "S3 bucket for sources, output and models)")  # fmt: skip


def _parse_metrics(r: _Reader, raw: object) -> dict[str, MetricGoal]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise r.fail(("metrics",), f"expected a mapping of metric names to {{goal: ...}}, got {_kind(raw)}")
    out = {}
    for name, spec in raw.items():
        mp = ("metrics", name)
        _metric_name(r, name, mp)
        if isinstance(spec, str):
            spec = {"goal": spec}
        m = r.mapping(spec, mp, ("goal", "tolerance"))
        if "goal" not in m:
            raise r.fail(mp, "missing 'goal' (maximize or minimize)")
        tol = r.number(m.get("tolerance", 0.0), (*mp, "tolerance"))
        if tol < 0:
            raise r.fail((*mp, "tolerance"), "must be >= 0")
        out[name] = MetricGoal(name=name, goal=r.string(m["goal"], (*mp, "goal"), choices=GOALS), tolerance=tol)
    return out


_PERCENT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*%\s*$")


def _parse_gate(r: _Reader, raw: object, metrics: dict[str, MetricGoal]) -> GateConfig:
    g = r.mapping(raw, ("gate",), ("rules", "require_baseline", "signing_key"))
    rules: list[Rule] = []
    for i, item in enumerate(r.seq(g.get("rules"), ("gate", "rules"))):
        rp: tuple[str | int, ...] = ("gate", "rules", i)
        m = r.mapping(item, rp, ("metric", "min", "max", "max_regression", "required", "severity"))
        if "metric" not in m:
            raise r.fail(rp, "missing 'metric' (the metric this rule checks)")
        metric = _metric_name(r, m["metric"], (*rp, "metric"))
        severity = r.string(m.get("severity", "fail"), (*rp, "severity"), choices=SEVERITIES)
        line = r.loaded.line(rp)
        kinds = [k for k in ("min", "max", "max_regression", "required") if k in m]
        if not kinds:
            raise r.fail(rp, "a rule needs at least one of min, max, max_regression, required")
        for kind in kinds:
            kp = (*rp, kind)
            if kind == "required":
                if r.boolean(m[kind], kp):
                    rules.append(Rule(metric, "required", severity=severity, line=line))
                continue
            if kind == "max_regression":
                value = m[kind]
                relative = False
                if isinstance(value, str):
                    pm = _PERCENT.match(value)
                    if not pm:
                        raise r.fail(kp, f"expected a number or a percentage like '2%', got '{value}'")
                    threshold = float(pm.group(1)) / 100.0
                    relative = True
                else:
                    threshold = r.number(value, kp)
                if threshold < 0:
                    raise r.fail(kp, "must be >= 0")
                from .diff_metrics import direction  # the diff's quantities know their direction

                if metric.split("@", 1)[0] == "flip_rate":
                    raise r.fail(
                        kp,
                        f"'{metric}' already compares the head's model with the baseline's (the baseline has "
                        "none of its own): use max",
                    )

                if metric not in metrics and direction(metric) is None:
                    raise r.fail(
                        kp,
                        f"max_regression needs to know whether '{metric}' should go up or down: "
                        f"add metrics: {{{metric}: {{goal: maximize}}}} (or minimize)",
                    )
                rules.append(Rule(metric, kind, threshold, relative, severity, line))
                continue
            rules.append(Rule(metric, kind, r.number(m[kind], kp), False, severity, line))
    return GateConfig(
        rules=tuple(rules),
        require_baseline=r.boolean(g.get("require_baseline", False), ("gate", "require_baseline")),
        signing_key=opt_string(r, g, "signing_key", ("gate",)),
    )


_REVIEW_KEYS = tuple(f.name for f in fields(ReviewConfig))


def _parse_review(r: _Reader, raw: object) -> ReviewConfig:
    m = r.mapping(raw, ("review",), _REVIEW_KEYS)
    d = ReviewConfig()

    def name(v: object, path: tuple[str | int, ...]) -> str:
        """A column: a header name (one line, it names gate quantities) or a 0-based index."""
        if isinstance(v, int) and not isinstance(v, bool):
            return str(r.integer(v, path))
        return _metric_name(r, v, path)

    def column(key: str) -> str | None:
        v = m.get(key)
        return None if v is None else name(v, ("review", key))

    def positive(key: str, value: float, *, lo: float, hi: float) -> float:
        if not lo <= value <= hi:
            raise r.fail(("review", key), f"must be between {lo:.15g} and {hi:.15g}")
        return value

    excl = tuple(
        name(v, ("review", "exclude_columns", i))
        for i, v in enumerate(r.seq(m.get("exclude_columns"), ("review", "exclude_columns")))
    )
    return ReviewConfig(
        model_diff=r.boolean(m.get("model_diff", d.model_diff), ("review", "model_diff")),
        eval_channel=r.string(m.get("eval_channel", d.eval_channel), ("review", "eval_channel")),
        label_column=column("label_column"),
        id_column=column("id_column"),
        slice_column=column("slice_column"),
        exclude_columns=excl,
        task=r.string(m.get("task", d.task), ("review", "task"), choices=("auto", "classification", "regression")),
        content_type=r.string(
            m.get("content_type", d.content_type), ("review", "content_type"), choices=("application/json", "text/csv")
        ),
        batch_size=int(
            positive(
                "batch_size",
                r.integer(m.get("batch_size", d.batch_size), ("review", "batch_size"), minimum=1),
                lo=1,
                hi=100_000,
            )
        ),
        max_rows=r.integer(m.get("max_rows", d.max_rows), ("review", "max_rows"), minimum=1),
        top_k=int(positive("top_k", r.integer(m.get("top_k", d.top_k), ("review", "top_k")), lo=0, hi=100)),
        tolerance=positive(
            "tolerance", r.number(m.get("tolerance", d.tolerance), ("review", "tolerance")), lo=0, hi=1e300
        ),
        timeout=positive("timeout", r.number(m.get("timeout", d.timeout), ("review", "timeout")), lo=1, hi=86400),
        memory_mb=int(
            positive(
                "memory_mb", r.integer(m.get("memory_mb", d.memory_mb), ("review", "memory_mb")), lo=64, hi=1 << 20
            )
        ),
        latency_requests=r.integer(
            m.get("latency_requests", d.latency_requests), ("review", "latency_requests"), minimum=10
        ),
    )


def _parse_serving(r: _Reader, raw: object) -> ServingConfig:
    s = r.mapping(raw, ("serving",), ("entry_point", "include", "python", "image_uri", "environment"))
    from .serving.contract import check_serving_config  # what the serving container cannot start

    check_serving_config(r, s)
    include = tuple(
        r.string(v, ("serving", "include", i)) for i, v in enumerate(r.seq(s.get("include"), ("serving", "include")))
    )
    return ServingConfig(
        entry_point=r.string(s["entry_point"], ("serving", "entry_point")) if s.get("entry_point") else None,
        include=include,
        python=r.string(s["python"], ("serving", "python")) if s.get("python") else None,
        image_uri=opt_string(r, s, "image_uri", ("serving",)),
        environment=r.str_map(s.get("environment"), ("serving", "environment")),
    )


def _parse_endpoints(r: _Reader, raw: object) -> tuple[EndpointConfig, ...]:
    out: list[EndpointConfig] = []
    seen: set[str] = set()
    owned = _owned(ENDPOINTS)
    for i, item in enumerate(r.seq(raw, ("endpoints",))):
        ep = ("endpoints", i)
        m = r.mapping(item, ep, ("name", "tags", "port", "smoke", "ready_timeout", "backend", "capture", *owned))
        if "name" not in m:
            raise r.fail(ep, "missing 'name'")
        name = r.string(m["name"], (*ep, "name"))
        if not _NAME.match(name):
            raise r.fail((*ep, "name"), "use 1-63 letters, digits, '.', '_' or '-'")
        if name in seen:
            raise r.fail((*ep, "name"), f"endpoint '{name}' is declared twice")
        seen.add(name)
        tags = tuple(r.string(t, (*ep, "tags", j)) for j, t in enumerate(r.seq(m.get("tags"), (*ep, "tags"))))
        port = r.integer(m.get("port", 0), (*ep, "port"))
        if port > 65535:
            raise r.fail((*ep, "port"), "must be 0 (pick a free port) or 1-65535")
        smoke = []
        for j, sm in enumerate(r.seq(m.get("smoke"), (*ep, "smoke"))):
            sp = (*ep, "smoke", j)
            s = r.mapping(sm, sp, ("body", "content_type", "accept", "expect_status", "expect_contains"))
            if "body" not in s:
                raise r.fail(sp, "missing 'body' (the request payload to send)")
            body = s["body"]
            if not isinstance(body, str):
                import json

                body = json.dumps(body)
            smoke.append(
                SmokeRequest(
                    body=body,
                    content_type=r.string(s.get("content_type", "application/json"), (*sp, "content_type")),
                    accept=r.string(s.get("accept", "application/json"), (*sp, "accept")),
                    expect_status=r.integer(s.get("expect_status", 200), (*sp, "expect_status"), minimum=100),
                    expect_contains=(
                        r.string(s["expect_contains"], (*sp, "expect_contains"))
                        if s.get("expect_contains") is not None
                        else None
                    ),
                )
            )
        backend = r.string(m.get("backend", "local"), (*ep, "backend"), choices=tuple(ENDPOINTS))
        kind = ENDPOINTS[backend]
        _only_theirs(r, m, ep, owned, backend, "backend")
        if not kind.processes and "port" in m:
            raise r.fail((*ep, "port"), "only applies to a local endpoint")
        # a model server on this machine answers within a minute; a service's endpoint takes its time
        ready = r.number(m.get("ready_timeout", 60 if kind.processes else 3600), (*ep, "ready_timeout"))
        capture = _parse_capture(r, m["capture"], (*ep, "capture"), local=kind.processes) if "capture" in m else None
        core = EndpointConfig(name=name, tags=tags, port=port, smoke=tuple(smoke), ready_timeout=ready,
                              backend=backend, capture=capture)  # fmt: skip
        out.append(_with_settings(r, kind, m, ep, core))
    return tuple(out)


def _parse_monitoring(r: _Reader, raw: object, training: TrainingConfig) -> MonitoringConfig:
    """`monitoring:` (`true` for the defaults)."""
    p: KeyPath = ("monitoring",)
    if raw is True:
        raw = {}
    limits = ("psi", "ks_pvalue", "ks_statistic", "prediction_psi", "max_error_rate", "max_p99_ms",
              "max_violation_rate", "min_records")  # fmt: skip
    m = r.mapping(raw, p, ("channel", "max_rows", "retrain", *limits))
    channel = r.string(m.get("channel", "train"), (*p, "channel"))
    if training.channels and channel not in training.channels:
        raise r.fail((*p, "channel"), f"is not a training channel ({', '.join(sorted(training.channels))}): the "
                     "baseline statistics are of what the model was trained on")  # fmt: skip
    d = Thresholds()
    shares = {}
    for key in ("psi", "ks_pvalue", "ks_statistic", "prediction_psi", "max_error_rate", "max_violation_rate"):
        value = r.number(m.get(key, getattr(d, key)), (*p, key))
        if value < 0 or (key not in ("psi", "prediction_psi") and value > 1):
            raise r.fail((*p, key), "must be between 0 and 1" if key not in ("psi", "prediction_psi") else
                         "must be 0 or more (0.1: a moderate shift, 0.2: a significant one)")  # fmt: skip
        shares[key] = value
    p99 = r.number(m["max_p99_ms"], (*p, "max_p99_ms")) if m.get("max_p99_ms") is not None else None
    least = r.integer(m.get("min_records", d.min_records), (*p, "min_records"), minimum=1)
    thresholds = Thresholds(**shares, max_p99_ms=p99, min_records=least)
    max_rows = r.integer(m.get("max_rows", 10_000), (*p, "max_rows"), minimum=100)
    retrain = _parse_retrain(r, m["retrain"], (*p, "retrain")) if m.get("retrain") is not None else None
    return MonitoringConfig(channel=channel, max_rows=max_rows, thresholds=thresholds, retrain=retrain)


_WORKFLOW_FILE = re.compile(r"[A-Za-z0-9_.-]+\.ya?ml\Z")
_GIT_REF = re.compile(r"(?!-)(?!.*\.\.)[A-Za-z0-9_./-]{1,255}\Z")


def _parse_retrain(r: _Reader, raw: object, p: KeyPath) -> RetrainConfig:
    """`retrain: {workflow: mlops-ci-train.yml, ref: main, inputs: {...}}` or `{event_type: NAME}`."""
    m = r.mapping(raw, p, ("workflow", "ref", "inputs", "event_type"))
    if ("workflow" in m) == ("event_type" in m):
        raise r.fail(p, "names either `workflow` (a workflow_dispatch, e.g. mlops-ci-train.yml) or `event_type` "
                     "(a repository_dispatch), exactly one")  # fmt: skip
    if "event_type" in m:
        for key in ("ref", "inputs"):
            if key in m:
                raise r.fail((*p, key), "is for `workflow`: a repository_dispatch runs on the default branch and "
                             "carries the report in its client_payload")  # fmt: skip
        event = r.string(m["event_type"], (*p, "event_type"))
        if not 0 < len(event) <= 100 or not event.isprintable():
            raise r.fail((*p, "event_type"), "is 1 to 100 printable characters (GitHub's limit)")
        return RetrainConfig(event_type=event)
    workflow = r.string(m["workflow"], (*p, "workflow"))
    if not _WORKFLOW_FILE.match(workflow):
        raise r.fail((*p, "workflow"), "is a workflow's file name in .github/workflows, e.g. mlops-ci-train.yml")
    ref = r.string(m["ref"], (*p, "ref")) if m.get("ref") is not None else None
    if ref is not None and not _GIT_REF.match(ref):
        raise r.fail((*p, "ref"), "is a branch or tag name, e.g. main")
    inputs: tuple[tuple[str, str], ...] = RetrainConfig.inputs
    if "inputs" in m:
        given = m["inputs"] or {}  # any names: the workflow declares them
        if not isinstance(given, dict):
            raise r.fail((*p, "inputs"), f"expected a mapping of workflow inputs, got {_kind(given)}")
        pairs = []
        for name, value in given.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            if not isinstance(value, str | int | float) or not _HP_NAME.match(str(name)):
                raise r.fail((*p, "inputs", str(name)), "is a workflow input: a name and a string, number or boolean")
            pairs.append((str(name), str(value)))
        inputs = tuple(pairs)
    return RetrainConfig(workflow=workflow, ref=ref, inputs=inputs)


def _percent(r: _Reader, value: object, p: KeyPath) -> int:
    n = r.integer(value, p)
    if n > 100:
        raise r.fail(p, "is a whole percentage: 0 to 100")
    return n


_CONTENT_TYPE = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*/[a-zA-Z0-9](-*[a-zA-Z0-9.])*\Z")  # CaptureContentTypeHeader


def _parse_capture(r: _Reader, raw: object, p: KeyPath, *, local: bool) -> CaptureConfig | None:
    """`capture: true`, `false`, or a mapping of its settings."""
    if isinstance(raw, bool):
        return CaptureConfig() if raw else None
    keys = ("percent", "csv_content_types", "json_content_types", "max_payload_bytes", "rotate_bytes", "destination")
    m = r.mapping(raw, p, keys)
    only = ("max_payload_bytes", "rotate_bytes") if not local else ("destination",)
    for key in only:
        if key in m:
            where = "an endpoint of a service (a local one writes under .mlops-ci/)" if local else "a local endpoint"
            raise r.fail((*p, key), f"only applies to {where}")
    types: dict[str, tuple[str, ...]] = {}
    for key, default in (("csv_content_types", ("text/csv",)), ("json_content_types", ("application/json",))):
        values = tuple(r.string(v, (*p, key, i)) for i, v in enumerate(r.seq(m.get(key, list(default)), (*p, key))))
        if not 1 <= len(values) <= 10:
            raise r.fail((*p, key), "give 1 to 10 content types (the capture format's limit)")
        for i, v in enumerate(values):
            if len(v) > 256 or not _CONTENT_TYPE.match(v):
                raise r.fail((*p, key, i), f"'{v}' is not a content type such as text/csv (no parameters)")
        types[key] = values
    destination = opt_string(r, m, "destination", p)
    if destination is not None and not re.match(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?\Z", destination):
        raise r.fail((*p, "destination"), f"'{destination}' is not an s3:// URI")
    return CaptureConfig(
        percent=_percent(r, m.get("percent", 20), (*p, "percent")),
        csv_content_types=types["csv_content_types"],
        json_content_types=types["json_content_types"],
        max_payload_bytes=r.integer(m.get("max_payload_bytes", 1024 * 1024), (*p, "max_payload_bytes"), minimum=1),
        rotate_bytes=r.integer(m.get("rotate_bytes", 16 * 1024 * 1024), (*p, "rotate_bytes"), minimum=1024),
        destination=destination,
    )


def find_config(start: Path, explicit: str | None) -> Path:
    if explicit:
        path = Path(explicit)
        if not path.is_absolute():
            path = start / path
        if not path.is_file():
            raise ConfigError(f"config file {explicit} not found; pass an existing file with --config")
        return path.resolve()  # everything else is relative to its directory: never leave it relative
    here = start.resolve()
    for d in (here, *here.parents):
        cand = d / CONFIG_FILE
        if cand.is_file():
            return cand
        if (d / ".git").exists():
            break
    raise ConfigError(
        f"no {CONFIG_FILE} found in {start} or its parents up to the repository root; "
        "create one (`mlops-ci init` writes a starter) or pass --config"
    )


def load(
    start: Path,
    env: Mapping[str, str],
    *,
    config_path: str | None = None,
    store: str | None = None,
    project: str | None = None,
) -> Config:
    """Find, parse and resolve the config with precedence flag > env > file > defaults (for the
    store: --store > MLOPS_CI_STORE > mlops-ci.yaml > MLOPS_CI_DEFAULT_STORE > sqlite)."""
    path = find_config(start, config_path or env.get("MLOPS_CI_CONFIG"))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    rel = _display_path(path, start)
    cfg = parse(text, rel, str(path.parent))
    sources = dict(cfg.sources)
    updates: dict[str, Any] = {}
    for key, flag, env_name in (("store", store, "MLOPS_CI_STORE"), ("project", project, "MLOPS_CI_PROJECT")):
        if flag:
            updates[key], sources[key] = flag, "flag"
        elif env.get(env_name):
            updates[key], sources[key] = env[env_name], f"env {env_name}"
    if "store" not in updates and "store" not in sources and env.get("MLOPS_CI_DEFAULT_STORE"):
        # the store when neither --store, MLOPS_CI_STORE nor mlops-ci.yaml names one: the starter
        # workflows set it to `git`, the repository's own refs, so a team without a cloud
        # account needs no store at all
        updates["store"], sources["store"] = env["MLOPS_CI_DEFAULT_STORE"], "env MLOPS_CI_DEFAULT_STORE"
    if "store" in updates:
        _check_store(updates["store"], None, ("store",))
    if "project" in updates and not _NAME.match(updates["project"]):
        raise ConfigError(f"project '{updates['project']}' ({sources['project']}): use 1-63 letters, digits, . _ -")
    return replace(cfg, **updates, sources=sources)


def _display_path(path: Path, start: Path) -> str:
    try:
        return str(path.resolve().relative_to(start.resolve()))
    except ValueError:
        return str(path)
