"""`mlops-ci.yaml` → a typed, validated :class:`Config`.

Precedence: command-line flag > ``MLOPS_CI_*`` environment > file > packaged defaults.
Every error names ``file:line:col``, the key, and what is allowed; unknown keys fail with a
"did you mean".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from . import _yamlload
from .errors import ConfigError

TYPE_CHECKING = False  # `typing` costs ~5 ms of start-up; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

CONFIG_FILE = "mlops-ci.yaml"
DEFAULT_STORE = "sqlite:///.mlops-ci/store.db"
GOALS = ("maximize", "minimize")
SEVERITIES = ("fail", "warn")
_SECRET_KEY = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.I)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class MetricDefinition:
    name: str
    regex: str


@dataclass(frozen=True)
class TrainingConfig:
    backend: str = "local"
    entry_point: str = "train.py"
    source_dir: str = "."
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    channels: dict[str, str] = field(default_factory=dict)
    metric_definitions: tuple[MetricDefinition, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)
    python: str | None = None
    max_run: int = 3600


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
        amount = f"{self.threshold * 100:g}%" if self.relative else f"{self.threshold:g}"
        return f"{self.metric} regresses by at most {amount} vs baseline"


@dataclass(frozen=True)
class GateConfig:
    rules: tuple[Rule, ...] = ()
    require_baseline: bool = False


@dataclass(frozen=True)
class BaselineConfig:
    branch: str = "main"
    max_commits: int = 1000


@dataclass(frozen=True)
class ServingConfig:
    entry_point: str | None = None
    include: tuple[str, ...] = ()
    python: str | None = None


@dataclass(frozen=True)
class SmokeRequest:
    body: str
    content_type: str = "application/json"
    accept: str = "application/json"
    expect_status: int = 200
    expect_contains: str | None = None


@dataclass(frozen=True)
class EndpointConfig:
    name: str
    tags: tuple[str, ...] = ()
    port: int = 0
    smoke: tuple[SmokeRequest, ...] = ()
    ready_timeout: float = 60.0


@dataclass(frozen=True)
class TrackingConfig:
    backend: str = "local"


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
    serving: ServingConfig = field(default_factory=ServingConfig)
    endpoints: tuple[EndpointConfig, ...] = ()
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

    def training_digest(self) -> str:
        """What determines a training run: same digest on the same SHA → same run."""
        t = asdict(self.training)
        t["environment"] = {
            k: ("<secret>" if _SECRET_KEY.search(k) else v) for k, v in self.training.environment.items()
        }
        payload = {"project": self.project, "training": t, "serving": asdict(self.serving)}
        return _digest(payload)

    def gate_digest(self) -> str:
        """What determines a verdict: a promote needs a verdict under the current digest."""
        rules = [{k: v for k, v in asdict(r).items() if k != "line"} for r in self.gate.rules]
        goals = {k: asdict(v) for k, v in sorted(self.metrics.items())}
        payload = {"rules": rules, "goals": goals, "require_baseline": self.gate.require_baseline}
        return _digest(payload)

    def to_display(self) -> dict[str, Any]:
        """The resolved config with secrets masked, for `config show`."""
        data = asdict(self)
        data.pop("sources")
        env = data["training"]["environment"]
        for k in env:
            if _SECRET_KEY.search(k):
                env[k] = "***"
        return data


def _digest(payload: Any) -> str:
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
        key = ".".join(str(p) for p in path) or "<top level>"
        return ConfigError(f"{where}: {key}: {msg}", file=self.loaded.file, line=self.loaded.line(path))

    def mapping(self, value: Any, path: tuple[str | int, ...], allowed: tuple[str, ...]) -> dict[str, Any]:
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

    def string(self, value: Any, path: tuple[str | int, ...], *, choices: tuple[str, ...] = ()) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected a non-empty string, got {_kind(value)}")
        if choices and value not in choices:
            raise self.fail(
                path, f"'{value}' is not allowed{_did_you_mean(value, choices)}; allowed: {', '.join(choices)}"
            )
        return value

    def number(self, value: Any, path: tuple[str | int, ...]) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(path, f"expected a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise self.fail(path, f"expected a finite number, got {value}")
        return float(value)

    def integer(self, value: Any, path: tuple[str | int, ...], *, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"expected a whole number, got {_kind(value)}")
        if value < minimum:
            raise self.fail(path, f"expected a whole number >= {minimum}, got {value}")
        return value

    def boolean(self, value: Any, path: tuple[str | int, ...]) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, got {_kind(value)}")
        return value

    def seq(self, value: Any, path: tuple[str | int, ...]) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list, got {_kind(value)}")
        return value

    def str_map(self, value: Any, path: tuple[str | int, ...]) -> dict[str, str]:
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


def _kind(value: Any) -> str:
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


TOP_KEYS = ("project", "store", "training", "tracking", "metrics", "gate", "baseline", "serving", "endpoints")


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
    tracking_raw = r.mapping(top.get("tracking"), ("tracking",), ("backend",))
    tracking = TrackingConfig(
        backend=r.string(tracking_raw.get("backend", "local"), ("tracking", "backend"), choices=("local",))
    )
    metrics = _parse_metrics(r, top.get("metrics"))
    gate = _parse_gate(r, top.get("gate"), metrics)
    baseline_raw = r.mapping(top.get("baseline"), ("baseline",), ("branch", "max_commits"))
    baseline = BaselineConfig(
        branch=r.string(baseline_raw.get("branch", "main"), ("baseline", "branch")),
        max_commits=r.integer(baseline_raw.get("max_commits", 1000), ("baseline", "max_commits"), minimum=1),
    )
    serving = _parse_serving(r, top.get("serving"))
    endpoints = _parse_endpoints(r, top.get("endpoints"))
    return Config(
        project=project,
        file=file,
        root=root,
        store=store,
        training=training,
        tracking=tracking,
        metrics=metrics,
        gate=gate,
        baseline=baseline,
        serving=serving,
        endpoints=endpoints,
        sources=dict.fromkeys(top, "file"),
    )


def _check_store(store: str, r: _Reader | None, path: tuple[str | int, ...]) -> None:
    msg = None
    if store.startswith("s3://"):
        from .backends.s3_store import S3Location

        try:
            S3Location.parse(store)
        except ConfigError as exc:
            msg = exc.message
    elif not store.startswith("sqlite:///"):
        msg = f"'{store}' is not a supported store; use sqlite:///path/to/store.db or s3://bucket/prefix"
    if msg:
        if r is not None:
            raise r.fail(path, msg)
        raise ConfigError(f"store: {msg}")


def _parse_training(r: _Reader, raw: Any) -> TrainingConfig:
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
    )
    t = r.mapping(raw, p, keys)
    hps_raw = t.get("hyperparameters") or {}
    if not isinstance(hps_raw, dict):
        raise r.fail((*p, "hyperparameters"), f"expected a mapping of names to values, got {_kind(hps_raw)}")
    for name, value in hps_raw.items():
        if not _HP_NAME.match(name) or name.startswith("sagemaker_"):
            raise r.fail(
                (*p, "hyperparameters", name),
                "hyperparameter names are letters, digits, '_' or '-' and must not start with "
                "'sagemaker_' (reserved by SageMaker)",
            )
        if value is None:
            raise r.fail((*p, "hyperparameters", name), "has no value; give it one or remove it")
    channels = r.str_map(t.get("channels"), (*p, "channels"))
    for name in channels:
        if not re.match(r"^[A-Za-z0-9_-]+$", name):
            raise r.fail((*p, "channels", name), "channel names are letters, digits, '_' or '-'")
    defs = []
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
        defs.append(MetricDefinition(name=r.string(dm["name"], (*dp, "name")), regex=regex))
    return TrainingConfig(
        backend=r.string(t.get("backend", "local"), (*p, "backend"), choices=("local",)),
        entry_point=r.string(t.get("entry_point", "train.py"), (*p, "entry_point")),
        source_dir=r.string(t.get("source_dir", "."), (*p, "source_dir")),
        hyperparameters=dict(hps_raw),
        channels=channels,
        metric_definitions=tuple(defs),
        environment=r.str_map(t.get("environment"), (*p, "environment")),
        python=r.string(t["python"], (*p, "python")) if t.get("python") is not None else None,
        max_run=r.integer(t.get("max_run", 3600), (*p, "max_run"), minimum=1),
    )


def _parse_metrics(r: _Reader, raw: Any) -> dict[str, MetricGoal]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise r.fail(("metrics",), f"expected a mapping of metric names to {{goal: ...}}, got {_kind(raw)}")
    out = {}
    for name, spec in raw.items():
        mp = ("metrics", name)
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


def _parse_gate(r: _Reader, raw: Any, metrics: dict[str, MetricGoal]) -> GateConfig:
    g = r.mapping(raw, ("gate",), ("rules", "require_baseline"))
    rules: list[Rule] = []
    for i, item in enumerate(r.seq(g.get("rules"), ("gate", "rules"))):
        rp: tuple[str | int, ...] = ("gate", "rules", i)
        m = r.mapping(item, rp, ("metric", "min", "max", "max_regression", "required", "severity"))
        if "metric" not in m:
            raise r.fail(rp, "missing 'metric' (the metric this rule checks)")
        metric = r.string(m["metric"], (*rp, "metric"))
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
                if metric not in metrics:
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
    )


def _parse_serving(r: _Reader, raw: Any) -> ServingConfig:
    s = r.mapping(raw, ("serving",), ("entry_point", "include", "python"))
    include = tuple(
        r.string(v, ("serving", "include", i)) for i, v in enumerate(r.seq(s.get("include"), ("serving", "include")))
    )
    return ServingConfig(
        entry_point=r.string(s["entry_point"], ("serving", "entry_point")) if s.get("entry_point") else None,
        include=include,
        python=r.string(s["python"], ("serving", "python")) if s.get("python") else None,
    )


def _parse_endpoints(r: _Reader, raw: Any) -> tuple[EndpointConfig, ...]:
    out: list[EndpointConfig] = []
    seen: set[str] = set()
    for i, item in enumerate(r.seq(raw, ("endpoints",))):
        ep = ("endpoints", i)
        m = r.mapping(item, ep, ("name", "tags", "port", "smoke", "ready_timeout"))
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
        ready = r.number(m.get("ready_timeout", 60), (*ep, "ready_timeout"))
        out.append(EndpointConfig(name=name, tags=tags, port=port, smoke=tuple(smoke), ready_timeout=ready))
    return tuple(out)


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
    """Find, parse and resolve the config with precedence flag > env > file > defaults."""
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
