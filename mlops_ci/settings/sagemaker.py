"""SageMaker's own settings: the training job (`training.sagemaker`), an endpoint's instances and
blue/green deployment (`endpoints[].instance_type`, `instance_count`, `deployment`), and what
serving on SageMaker needs of the rest of the file (an inference image that fits its instances).

The limits are SageMaker's, checked before any request (the API reference's wording); the image
facts are in mlops_ci/backends/sagemaker_images.py, imported only when a framework's image is
asked for. The entries of mlops_ci/kinds.py name TRAINING, ENDPOINT and REGISTRY.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ..config import (
    Config,
    EndpointConfig,
    KeyPath,
    Settings,
    TrainingConfig,
    core_fields,
    opt_string,
    settings_of,
    strings,
)
from ..distribution import TORCH_LAUNCHERS

TYPE_CHECKING = False  # as in config.py: only the type checker needs `typing`
if TYPE_CHECKING:
    from ..config import _Reader

TORCH_FRAMEWORKS = ("pytorch", "huggingface")  # the estimators that take the PyTorch launchers
_S3_URI = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?\Z"


@dataclass(frozen=True)
class SageMakerTraining:
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    volume_size: int = 30
    image_uri: str | None = None
    framework: str | None = None
    framework_version: str | None = None
    py_version: str = "py3"
    # huggingface: the PyTorch build under the transformers version, as the SDK names it (pytorch2.5.1).
    # Unset, it leaves the training digest as it was before the key existed.
    base_framework_version: str | None = field(default=None, metadata={"digest": "when set"})
    subnets: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    spot: bool = False
    max_wait: int | None = None
    checkpoint_s3_uri: str | None = None
    keep_alive: int = 0
    retry_attempts: int = 0  # RetryStrategy.MaximumRetryAttempts (1-30): restarts after an internal error


@dataclass(frozen=True)
class SageMakerTrainingConfig(TrainingConfig):
    """`training` with `backend: sagemaker`: the job's settings under `training.sagemaker`."""

    sagemaker: SageMakerTraining | None = None  # None: another trainer (never so in this class)


@dataclass(frozen=True)
class SageMakerDeployment:
    """Blue/green traffic shifting for a SageMaker endpoint update."""

    strategy: str = "all_at_once"  # all_at_once | canary | linear
    percent: int = 10  # canary size, or linear step
    wait_seconds: int = 300
    termination_wait_seconds: int = 0
    max_execution_timeout: int | None = None
    alarms: tuple[str, ...] = ()


# The schedules SageMaker Model Monitor takes: hourly, daily at an hour, or every N hours from an
# hour (the SDK's CronExpressionGenerator: hourly, daily, daily_every_x_hours). The service model
# gives ScheduleExpression only a length (1-256); "NOW" (a one-off run) is not a schedule.
MONITOR_CRON = r"^cron\(0 (\*|(1?[0-9]|2[0-3])(/([1-9]|1[0-9]|2[0-3]))?) \? \* \* \*\)\Z"

# The instance types a processing (and so a monitoring) job runs on: the enum of the service
# model's ProcessingInstanceType (botocore 1.40), family -> sizes; the settings import no SDK, and
# tests/unit/test_sagemaker_monitor_settings.py checks each one against botocore's model.
_PROCESSING_SIZES = """
t3: medium large xlarge 2xlarge
m4: xlarge 2xlarge 4xlarge 10xlarge 16xlarge
c4: xlarge 2xlarge 4xlarge 8xlarge
p2: xlarge 8xlarge 16xlarge
p3: 2xlarge 8xlarge 16xlarge
c5: xlarge 2xlarge 4xlarge 9xlarge 18xlarge
m5: large xlarge 2xlarge 4xlarge 12xlarge 24xlarge
r5 r5d: large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge
g4dn: xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge
g5 g6 g6e: xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 48xlarge
m6i r6i: large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 32xlarge
c6i: xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 32xlarge
m7i c7i r7i: large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 48xlarge
p5: 4xlarge
g7 g7e: 2xlarge 4xlarge 8xlarge 12xlarge 24xlarge 48xlarge
m8i r8i: large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 32xlarge 48xlarge 96xlarge
c8i: xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 32xlarge 48xlarge 96xlarge
m7i-flex m8i-flex r8i-flex: large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge
c7i-flex c8i-flex: xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge
"""
PROCESSING_INSTANCE_TYPES = frozenset(
    f"ml.{f}.{size}"
    for line in _PROCESSING_SIZES.strip().splitlines()
    for f in line.split(":")[0].split()
    for size in line.split(":")[1].split()
)


@dataclass(frozen=True)
class SageMakerMonitorSchedule:
    """`endpoints[].monitor_schedule`: a SageMaker Model Monitor data-quality schedule on the
    endpoint's captured traffic (mlops_ci/backends/sagemaker_monitor.py). The limits are the
    service model's (MonitoringClusterConfig, MonitoringStoppingCondition)."""

    cron: str = "cron(0 * ? * * *)"  # hourly, the SDK's CronExpressionGenerator.hourly()
    instance_type: str = "ml.m5.xlarge"  # the SDK's DefaultModelMonitor default
    instance_count: int = 1
    volume_size_gb: int = 20
    max_runtime_seconds: int = 3600


@dataclass(frozen=True)
class SageMakerEndpointConfig(EndpointConfig):
    """An endpoint with `backend: sagemaker`."""

    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    deployment: SageMakerDeployment = field(default_factory=SageMakerDeployment)
    monitor_schedule: SageMakerMonitorSchedule | None = None


# -- training -------------------------------------------------------------------------------
def _parse_training(r: _Reader, t: dict[str, object], tp: KeyPath, core: TrainingConfig) -> SageMakerTrainingConfig:
    sagemaker = _parse_sm_training(r, t.get("sagemaker"), (*tp, "sagemaker"))
    if sagemaker.max_wait is not None and sagemaker.max_wait < core.max_run:
        raise r.fail((*tp, "sagemaker", "max_wait"), f"must be >= training.max_run ({core.max_run}): it is the "
                     "whole wait for spot capacity plus the training time")  # fmt: skip
    for name, uri in core.channels.items():
        if not re.match(_S3_URI, uri):
            raise r.fail(
                (*tp, "channels", name),
                f"'{uri}' is not an S3 URI; SageMaker reads its channels from S3 (s3://bucket/prefix): "
                f"upload the data (aws s3 sync {uri} s3://...) and give its URI",
            )
    sm_raw = t.get("sagemaker")
    if isinstance(sm_raw, dict) and "instance_count" in sm_raw:
        if "instance_count" in t and core.instance_count != sagemaker.instance_count:
            raise r.fail((*tp, "sagemaker", "instance_count"), f"is {sagemaker.instance_count} but "
                         f"training.instance_count is {core.instance_count}: give it once, as "
                         "training.instance_count")  # fmt: skip
        core = replace(core, instance_count=sagemaker.instance_count)
    else:
        sagemaker = replace(sagemaker, instance_count=core.instance_count)
    launcher = core.distribution.launcher if core.distribution else None
    if launcher in TORCH_LAUNCHERS and sagemaker.framework not in (None, *TORCH_FRAMEWORKS):
        raise r.fail((*tp, "distribution", launcher), f"is launched by the PyTorch training toolkit; framework "
                     f"'{sagemaker.framework}' does not know it: use framework: pytorch (or huggingface), or "
                     "an image_uri of a PyTorch training image")  # fmt: skip
    return SageMakerTrainingConfig(**core_fields(core), sagemaker=sagemaker)


def _parse_sm_training(r: _Reader, raw: object, p: KeyPath) -> SageMakerTraining:
    keys = tuple(SageMakerTraining.__dataclass_fields__)
    m = r.mapping(raw, p, keys)
    d = SageMakerTraining()
    image_uri = opt_string(r, m, "image_uri", p)
    framework = opt_string(r, m, "framework", p)
    version = str(m["framework_version"]) if m.get("framework_version") is not None else None
    if image_uri is None and (framework is None or version is None):
        raise r.fail(p, "give image_uri, or framework and framework_version (e.g. framework: sklearn, "
                        "framework_version: '1.2-1') to pick a SageMaker training image")  # fmt: skip
    spot = r.boolean(m.get("spot", False), (*p, "spot"))
    max_wait = r.integer(m["max_wait"], (*p, "max_wait"), minimum=1) if m.get("max_wait") is not None else None
    if spot and max_wait is None:
        raise r.fail((*p, "spot"), "managed spot training needs max_wait (seconds, >= training.max_run)")
    if not spot and max_wait is not None:
        raise r.fail((*p, "max_wait"), "only applies with spot: true")
    keep_alive = r.integer(m.get("keep_alive", 0), (*p, "keep_alive"))
    if keep_alive > 21600:
        raise r.fail((*p, "keep_alive"), "SageMaker keeps a warm pool for at most 21600 seconds (6 hours)")
    if spot and keep_alive:
        raise r.fail((*p, "keep_alive"), "SageMaker warm pools cannot be used with managed spot training: "
                                         "drop keep_alive or spot")  # fmt: skip
    retries = r.integer(m.get("retry_attempts", 0), (*p, "retry_attempts"))
    if retries > 30:
        raise r.fail((*p, "retry_attempts"), "SageMaker retries a training job at most 30 times")
    instance_type = r.string(m.get("instance_type", d.instance_type), (*p, "instance_type"))
    py_version = r.string(m.get("py_version", d.py_version), (*p, "py_version"))
    base = _parse_base(r, m, p, framework, image_uri)
    if image_uri is None and framework is not None and version is not None:
        from ..backends.sagemaker_images import problem

        no = problem(framework, version, "training", instance_type, py_version=py_version, base=base)
        if no:
            raise r.fail((*p, no.key), str(no))
    checkpoint = opt_string(r, m, "checkpoint_s3_uri", p)
    if checkpoint and not re.match(_S3_URI, checkpoint):
        raise r.fail((*p, "checkpoint_s3_uri"), f"'{checkpoint}' is not an s3:// URI")
    return SageMakerTraining(
        instance_type=instance_type,
        instance_count=r.integer(m.get("instance_count", 1), (*p, "instance_count"), minimum=1),
        volume_size=r.integer(m.get("volume_size", d.volume_size), (*p, "volume_size"), minimum=1),
        image_uri=image_uri,
        framework=framework,
        framework_version=version,
        py_version=py_version,
        base_framework_version=base,
        subnets=strings(r, m.get("subnets"), (*p, "subnets")),
        security_group_ids=strings(r, m.get("security_group_ids"), (*p, "security_group_ids")),
        spot=spot,
        max_wait=max_wait,
        checkpoint_s3_uri=checkpoint,
        keep_alive=keep_alive,
        retry_attempts=retries,
    )


def _parse_base(
    r: _Reader, m: dict[str, object], p: KeyPath, framework: str | None, image_uri: str | None
) -> str | None:
    base = opt_string(r, m, "base_framework_version", p)
    if base is not None and framework != "huggingface":
        raise r.fail((*p, "base_framework_version"), "only applies with framework: huggingface, whose images are "
                     "named by the PyTorch version under them too")  # fmt: skip
    if base is not None and not re.match(r"^(pytorch|tensorflow)\d+(\.\d+)*\Z", base):
        raise r.fail((*p, "base_framework_version"), f"'{base}' is not a base framework version: the SDK's name "
                     "of the PyTorch build, e.g. pytorch2.5.1")  # fmt: skip
    if base is None and framework == "huggingface" and image_uri is None:
        raise r.fail((*p, "base_framework_version"), "is needed with framework: huggingface, whose images are "
                     "named by the PyTorch version under them too: e.g. pytorch2.5.1 with framework_version "
                     "4.49.0 (or set image_uri)")  # fmt: skip
    return base


def _advice(cfg: Config) -> list[tuple[str, KeyPath, str]]:
    """What `config check` warns of: settings SageMaker would ignore, and an image only the
    SageMaker Python SDK can find."""
    sm = cfg.training.sagemaker if isinstance(cfg.training, SageMakerTrainingConfig) else None
    out: list[tuple[str, KeyPath, str]] = []
    if sm is not None and sm.checkpoint_s3_uri and not sm.spot:
        out.append((
            "warning",
            ("training", "sagemaker", "checkpoint_s3_uri"),
            "is sent to SageMaker only with spot: true (to resume an interrupted spot job); without it, it is ignored",
        ))  # fmt: skip
    if sm is not None and sm.image_uri is None and sm.framework is not None and sm.framework_version is not None:
        from ..backends.sagemaker_images import Unknown, find

        try:
            find(sm.framework, sm.framework_version, "training", sm.instance_type, py_version=sm.py_version,
                 base=sm.base_framework_version)  # fmt: skip
        except Unknown as exc:
            why = f"{exc}: it is found only where the SageMaker Python SDK is installed (pip install sagemaker)"
            out.append(("warning", ("training", "sagemaker", "framework_version"), f"{why}; or set image_uri"))
    return out


# -- endpoints ------------------------------------------------------------------------------
def _parse_endpoint(r: _Reader, m: dict[str, object], ep: KeyPath, core: EndpointConfig) -> SageMakerEndpointConfig:
    if not re.match(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$", core.name):
        raise r.fail((*ep, "name"), "a SageMaker endpoint name uses letters, digits and '-' only")
    return SageMakerEndpointConfig(
        **core_fields(core),
        instance_type=r.string(m.get("instance_type", "ml.m5.large"), (*ep, "instance_type")),
        instance_count=r.integer(m.get("instance_count", 1), (*ep, "instance_count"), minimum=1),
        deployment=_parse_deployment(r, m.get("deployment"), (*ep, "deployment")),
        monitor_schedule=_parse_monitor_schedule(r, m, (*ep, "monitor_schedule"), core),
    )


def _parse_monitor_schedule(
    r: _Reader, m: dict[str, object], p: KeyPath, core: EndpointConfig
) -> SageMakerMonitorSchedule | None:
    """`monitor_schedule: true`, `false`, or a mapping of its settings."""
    raw = m.get("monitor_schedule")
    if raw is None or raw is False:
        return None
    d = SageMakerMonitorSchedule()
    if raw is True:
        out = d
    else:
        s = r.mapping(raw, p, tuple(SageMakerMonitorSchedule.__dataclass_fields__))
        cron = r.string(s.get("cron", d.cron), (*p, "cron"))
        if not re.match(MONITOR_CRON, cron):
            raise r.fail((*p, "cron"), f"'{cron}' is not a schedule Model Monitor takes: hourly "
                         "'cron(0 * ? * * *)', daily at an hour 'cron(0 8 ? * * *)', or every N hours from an hour "
                         "'cron(0 0/6 ? * * *)'")  # fmt: skip
        itype = r.string(s.get("instance_type", d.instance_type), (*p, "instance_type"))
        if itype not in PROCESSING_INSTANCE_TYPES:
            raise r.fail((*p, "instance_type"), f"'{itype}' is not an instance type SageMaker runs a monitoring job "
                         "on (ProcessingInstanceType): e.g. ml.m5.xlarge, ml.m5.large, ml.c5.xlarge")  # fmt: skip
        # the service model's ranges: InstanceCount 1-100, VolumeSizeInGB 1-16384, MaxRuntimeInSeconds 1-86400
        limits = {"instance_count": (d.instance_count, 100), "volume_size_gb": (d.volume_size_gb, 16384),
                  "max_runtime_seconds": (d.max_runtime_seconds, 86400)}  # fmt: skip
        values: dict[str, int] = {}
        for key, (default, top) in limits.items():
            values[key] = r.integer(s.get(key, default), (*p, key), minimum=1)
            if values[key] > top:
                raise r.fail((*p, key), f"SageMaker allows 1-{top}")
        # MonitoringStoppingCondition (botocore's model): "cannot exceed the frequency of the job ... up
        # to 3600 seconds for an hourly schedule"; the interval of the cron forms taken above
        every = re.match(MONITOR_CRON, cron).group(1)  # type: ignore[union-attr]
        interval = 3600 if every == "*" else 3600 * int(every.split("/")[1]) if "/" in every else 86400
        if values["max_runtime_seconds"] > interval:
            raise r.fail((*p, "max_runtime_seconds"), f"is longer than the schedule's interval ({interval} s for "
                         f"'{cron}'): SageMaker refuses a monitoring job that runs past its next start")  # fmt: skip
        out = SageMakerMonitorSchedule(cron=cron, instance_type=itype, **values)
    if core.capture is None:
        raise r.fail(p, "needs the endpoint's `capture:` (Model Monitor reads the captured traffic): add capture: "
                     "{percent: 20}")  # fmt: skip
    return out


def _parse_deployment(r: _Reader, raw: object, p: KeyPath) -> SageMakerDeployment:
    m = r.mapping(raw, p, tuple(SageMakerDeployment.__dataclass_fields__))
    percent = r.integer(m.get("percent", 10), (*p, "percent"), minimum=1)
    timeout = m.get("max_execution_timeout")
    strategy = r.string(m.get("strategy", "all_at_once"), (*p, "strategy"), choices=("all_at_once", "canary", "linear"))
    # Limits from the SageMaker API reference (TrafficRoutingConfig, BlueGreenUpdatePolicy)
    if strategy == "canary" and percent > 50:
        raise r.fail((*p, "percent"), "a canary must be at most 50% of the variant's instances (SageMaker's limit)")
    if strategy == "linear" and not 10 <= percent <= 50:
        raise r.fail((*p, "percent"), "a linear step must be 10-50% of the variant's instances (SageMaker's limit)")
    if percent > 100:
        raise r.fail((*p, "percent"), "is a share of capacity: 1-100")
    for key in ("wait_seconds", "termination_wait_seconds"):
        if key in m and r.integer(m[key], (*p, key)) > 3600:
            raise r.fail((*p, key), "SageMaker allows at most 3600 seconds (1 hour)")
    if timeout is not None and r.integer(timeout, (*p, "max_execution_timeout")) > 28800:
        raise r.fail((*p, "max_execution_timeout"), "SageMaker allows 600-28800 seconds (8 hours)")
    alarms = strings(r, m.get("alarms"), (*p, "alarms"))
    if strategy != "all_at_once" and not alarms:
        raise r.fail(
            (*p, "strategy"),
            f"a {strategy} rollout only protects anything with CloudWatch alarms to roll back on: add "
            "deployment.alarms (e.g. the endpoint's 5xx and latency alarms) or use strategy: all_at_once",
        )
    return SageMakerDeployment(
        strategy=strategy,
        percent=percent,
        wait_seconds=r.integer(m.get("wait_seconds", 300), (*p, "wait_seconds")),
        termination_wait_seconds=r.integer(m.get("termination_wait_seconds", 0), (*p, "termination_wait_seconds")),
        max_execution_timeout=r.integer(timeout, (*p, "max_execution_timeout"), minimum=600)
        if timeout is not None else None,
        alarms=alarms,
    )  # fmt: skip


# -- serving, whichever section puts a model on SageMaker ------------------------------------
def _check_serving(r: _Reader, cfg: Config) -> None:
    """An endpoint or a model package on SageMaker needs an inference image that runs on its
    instances: serving.image_uri, or the image of training.sagemaker's framework."""
    users: list[KeyPath] = [("endpoints", i) for i, e in enumerate(cfg.endpoints) if settings_of(e.kind) is ENDPOINT]
    if settings_of(cfg.registry.kind) is REGISTRY:
        users.append(("registry", "backend"))
    sm = cfg.training.sagemaker if isinstance(cfg.training, SageMakerTrainingConfig) else None
    serving = cfg.serving
    if users and serving.image_uri is None and (sm is None or (sm.image_uri is None and sm.framework is None)):
        raise r.fail(users[0], "SageMaker serving needs an inference image: set serving.image_uri, or "
                               "training.sagemaker.framework to use that framework's image")  # fmt: skip
    if serving.image_uri is None and sm is not None and sm.image_uri is None and sm.framework is not None:
        from ..backends.sagemaker_images import problem

        # each endpoint's instances, and a model package's (the first SageMaker endpoint's, else the training type)
        on: list[tuple[KeyPath, str]] = [
            (("endpoints", i, "instance_type"), e.instance_type)
            for i, e in enumerate(cfg.endpoints)
            if isinstance(e, SageMakerEndpointConfig)
        ]
        if settings_of(cfg.registry.kind) is REGISTRY and not on:
            on.append((("training", "sagemaker", "instance_type"), sm.instance_type))
        for where, instance_type in on:
            no = problem(sm.framework, sm.framework_version or "", "inference", instance_type,
                         py_version=sm.py_version, base=sm.base_framework_version)  # fmt: skip
            if no:
                raise r.fail(where if no.key == "instance_type" else ("training", "sagemaker", no.key), str(no))


def _check_training(r: _Reader, cfg: Config) -> None:
    if cfg.tuning is not None:
        _check_search(r, cfg)
    _check_serving(r, cfg)


def _check_search(r: _Reader, cfg: Config) -> None:
    """What a HyperParameterTuningJob refuses, or cannot see, in `tuning:` (botocore's service model
    and the API reference's wording)."""
    from .. import tuning as tun
    from ..distribution import hyperparameters
    from ..tuning import HYPERBAND_EPOCHS, MAX_RANGES

    t = cfg.tuning
    assert t is not None
    names = [d.name for d in cfg.training.metric_definitions]
    if t.metric not in names:
        # the tuning job reads the objective from the job's log, through the job's MetricDefinitions
        raise r.fail(("tuning", "objective", "metric"), f"'{t.metric}' has no training.metric_definitions "
                     "entry: a SageMaker tuning job reads its objective from the job's log by it; add one")  # fmt: skip
    # "Each value of a categorical hyperparameter range counts as a hyperparameter against the
    # limit" (Developer Guide, Define Hyperparameter Ranges)
    counted = sum(len(p.values) if p.type == "categorical" else 1 for p in t.parameters)
    if counted > MAX_RANGES:
        raise r.fail(("tuning", "parameters"), f"counts {counted} against a tuning job's limit of {MAX_RANGES} "
                     "(each categorical value counts as one); search fewer")  # fmt: skip
    for p in t.parameters:
        for i, v in enumerate(p.values):
            if len(tun.sagemaker_value(v)) > 256:
                raise r.fail(("tuning", "parameters", p.name, "values", i), "is longer than the 256 characters a "
                             "tuning job takes for a categorical value (JSON-encoded)")  # fmt: skip
    if len(cfg.training.environment) > 48:  # HyperParameterTrainingJobDefinition.Environment: at most 48
        raise r.fail(("training", "environment"), f"has {len(cfg.training.environment)} variables; a tuning job's "
                     "trials take at most 48")  # fmt: skip
    sm = cfg.training.sagemaker
    static = len(cfg.training.hyperparameters) + 5 + len(hyperparameters(cfg.training.distribution,
                                                                          sm.instance_type if sm else ""))  # fmt: skip
    if static + 1 + len(t.parameters) > 100:  # 5: sagemaker_program &c.; 1: _tuning_objective_metric
        raise r.fail(("training", "hyperparameters"), "with the searched ones and those SageMaker and mlops-ci add, "
                     "a trial would get more than the 100 hyperparameters a training job takes")  # fmt: skip
    if t.strategy == "Hyperband":
        if t.early_stopping != "Off":
            raise r.fail(("tuning", "early_stopping"), "must be Off with Hyperband, which stops trials itself "
                         "(SageMaker's rule)")  # fmt: skip
        epochs = [k for k in HYPERBAND_EPOCHS if k in cfg.training.hyperparameters]
        if not epochs:
            raise r.fail(("tuning", "strategy"), "Hyperband needs the number of epochs among training."
                         f"hyperparameters as one of {', '.join(HYPERBAND_EPOCHS)} (its maximum resource)")  # fmt: skip
        n = cfg.training.hyperparameters[epochs[0]]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 20_000:
            raise r.fail(("training", "hyperparameters", epochs[0]), "Hyperband takes a whole number of epochs "
                         "from 1 to 20,000 as its maximum resource (HyperbandStrategyConfig)")  # fmt: skip


TRAINING = Settings(SageMakerTrainingConfig, ("sagemaker",), _parse_training, _check_training, _advice)
ENDPOINT = Settings(
    SageMakerEndpointConfig,
    ("instance_type", "instance_count", "deployment", "monitor_schedule"),
    _parse_endpoint,
    _check_serving,
)
REGISTRY = Settings(check=_check_serving)  # its keys are the core's (registry.model_package_group, approval)
