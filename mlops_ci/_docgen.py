"""Generate docs/config-reference.md and docs/exit-codes.md from the code that decides.

    python -m mlops_ci._docgen            # rewrite both pages
    python -m mlops_ci._docgen --check    # exit 1 if either page differs from what the code says

The config reference cannot drift from the parser because it is made by the parser: the
example configurations below go through the real `config.parse` (and through it the backends'
own settings parsers, mlops_ci/settings/, which get the same reader) with a reader that records
every call the parser makes (the `allowed` keys of each `mapping`, the `choices` of each
`string`, which reader method checked each value and its `minimum`). Those records give
every key path the parser accepts, its type and allowed values. Defaults are read from the
`Config` that parsing minimal configurations produces, so they are the parser's too. Only
the descriptions are written by hand (`DESCRIPTIONS`), and generating fails when the parser
accepts a key that has no description or a description names a key the parser does not
accept. tests/unit/test_docs.py also checks that the examples reach every `mapping` call
and every `string(..., choices=...)` call in mlops_ci/config.py and the settings parsers the
backend tables name, so a new block of keys behind a new branch of the parser cannot go unseen.

Nothing here runs on any command's path; it is a development tool shipped with the package
so that the test can import it.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import config, kinds
from .errors import EXIT_CODES

DOCS = Path(__file__).resolve().parent.parent / "docs"
CONFIG_PAGE = "config-reference.md"
EXIT_PAGE = "exit-codes.md"
COMMAND = "python -m mlops_ci._docgen"

ITEM = "[]"  # a path segment standing for any element of a list
NAME = "<name>"  # a path segment standing for a name the user chooses (a metric, ...)

Key = tuple[str, ...]  # a normalized key path: ("endpoints", "[]", "smoke", "[]", "body")
RawPath = tuple[str | int, ...]


# -- the example configurations ------------------------------------------------------------
# Together they reach every branch of the parser that reads keys: the local backends, and
# SageMaker training, registry and endpoints with Comet tracking. Every key is set, so that
# every value goes through the reader method that checks it.
EXHAUSTIVE = {
    "local": """
project: churn
store: sqlite:///.mlops-ci/store.db
training:
  backend: local
  entry_point: train.py
  source_dir: .
  hyperparameters: {n_estimators: 40}
  channels: {train: data/train, validation: {uri: data/val, distribution: FullyReplicated, input_mode: File}}
  metric_definitions:
    - {name: accuracy, regex: "accuracy=([0-9.]+)"}
  environment: {LOG_LEVEL: info}
  python: python3
  max_run: 3600
  instance_count: 2
  distribution: {torch_distributed: {enabled: true}}
  exclude: ["*.md", docs/]
tracking:
  backend: local
metrics:
  accuracy: {goal: maximize, tolerance: 0.001}
gate:
  require_baseline: false
  signing_key: alias/churn-gate
  rules:
    - {metric: accuracy, min: 0.8, max: 1.0, max_regression: 0.01, required: true, severity: fail}
    - {metric: accuracy, max_regression: 2%}
baseline: {branch: main, max_commits: 1000}
review:
  model_diff: true
  eval_channel: train
  label_column: label
  id_column: customer_id
  slice_column: region
  exclude_columns: [signup_date, 3]
  task: classification
  content_type: text/csv
  batch_size: 100
  max_rows: 100000
  top_k: 5
  tolerance: 0.000001
  timeout: 300
  memory_mb: 4096
  latency_requests: 200
monitoring:
  channel: train
  max_rows: 10000
  psi: 0.2
  ks_pvalue: 0.01
  ks_statistic: 0.1
  prediction_psi: 0.2
  max_error_rate: 0.05
  max_p99_ms: 500
  max_violation_rate: 0.01
  min_records: 30
  retrain:
    workflow: mlops-ci-train.yml
    ref: main
    inputs: {force: true}
serving:
  entry_point: inference.py
  include: [features.py]
  python: python3
  image_uri: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/churn-inference:1
  environment: {SAGEMAKER_MODEL_SERVER_WORKERS: "1"}
endpoints:
  - name: production
    tags: ["v*"]
    port: 8080
    ready_timeout: 60
    backend: local
    capture:
      percent: 20
      csv_content_types: [text/csv]
      json_content_types: [application/json]
      max_payload_bytes: 1048576
      rotate_bytes: 16777216
    smoke:
      - body: [[0.1, 0.2]]
        content_type: application/json
        accept: application/json
        expect_status: 200
        expect_contains: "["
aws:
  region: eu-west-1
  prefix: mlops-ci
  kms_key: alias/churn
  retry_mode: adaptive
  max_attempts: 10
  poll_seconds: 30
  prices: {ml.m5.xlarge: 0.23}
registry:
  backend: local
  approval: Approved
tuning:
  objective: {metric: accuracy, goal: maximize}
  strategy: Random
  max_jobs: 8
  max_parallel: 2
  early_stopping: "Off"
  seed: 0
  parameters:
    learning_rate: {type: continuous, min: 0.0001, max: 0.1, scaling: Logarithmic}
    max_depth: {type: integer, min: 2, max: 8}
    criterion: {type: categorical, values: [gini, entropy]}
""",
    "sagemaker": """
project: churn
store: s3://acme-ml/store
training:
  backend: sagemaker
  channels: {train: {uri: "s3://acme-ml-data/churn/", distribution: ShardedByS3Key, input_mode: FastFile}}
  max_run: 3600
  distribution:
    mpi: {enabled: true, processes_per_host: 8, custom_mpi_options: "-verbose"}
    smdistributed: {modelparallel: {enabled: true, parameters: {partitions: 2}}}
  sagemaker:
    instance_type: ml.m5.xlarge
    instance_count: 1
    volume_size: 30
    image_uri: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/churn-training:1
    framework: huggingface
    framework_version: "4.49.0"
    py_version: py311
    base_framework_version: pytorch2.5.1
    subnets: [subnet-0abc]
    security_group_ids: [sg-0abc]
    spot: true
    max_wait: 7200
    checkpoint_s3_uri: s3://acme-ml/checkpoints/churn/
    keep_alive: 0
    retry_attempts: 2
tracking:
  backend: comet
  workspace: acme
  project_name: churn
  api_key_env: COMET_API_KEY
  mode: auto
  summary: last
  compare_url: "{server}/{workspace}/{project}/{baseline}/{head}/compare"
  model_name: churn
  deployed_status: Production
  retired_status: None
endpoints:
  - name: churn-prod
    backend: sagemaker
    tags: ["v*"]
    instance_type: ml.m5.large
    instance_count: 2
    capture: {percent: 5, destination: "s3://acme-ml/capture"}
    deployment:
      strategy: canary
      percent: 10
      wait_seconds: 300
      termination_wait_seconds: 0
      max_execution_timeout: 600
      alarms: [churn-prod-5xx]
    monitor_schedule:
      cron: "cron(0 0/6 ? * * *)"
      instance_type: ml.m5.xlarge
      instance_count: 1
      volume_size_gb: 20
      max_runtime_seconds: 3600
aws:
  role: arn:aws:iam::123456789012:role/churn-sagemaker-execution
  bucket: acme-ml
registry:
  backend: sagemaker
  model_package_group: churn
  approval: PendingManualApproval
""",
}

# The smallest configurations that open each block: a key they leave out has its default in
# the parsed Config.
MINIMAL = {
    "local": """
project: churn
training:
  metric_definitions:
    - {name: accuracy, regex: "accuracy=([0-9.]+)"}
metrics:
  accuracy: {goal: maximize}
gate:
  rules:
    - {metric: accuracy, min: 0.8}
endpoints:
  - name: production
    smoke:
      - body: [[0.1, 0.2]]
""",
    "sagemaker": """
project: churn
training:
  backend: sagemaker
  sagemaker: {image_uri: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/churn-training:1}
tracking: {backend: comet, workspace: acme}
endpoints:
  - {name: churn-prod, backend: sagemaker}
aws:
  role: arn:aws:iam::123456789012:role/churn-sagemaker-execution
  bucket: acme-ml
""",
}


# -- recording what the parser does --------------------------------------------------------
@dataclass
class Recording:
    """Every reader call of one or more parses, by raw path (list indices and names as written)."""

    allowed: dict[RawPath, tuple[str, ...]] = field(default_factory=dict)  # mapping() calls
    present: dict[RawPath, tuple[str, ...]] = field(default_factory=dict)  # keys each mapping held
    calls: list[tuple[str, RawPath, dict[str, object]]] = field(default_factory=list)  # (method, path, detail)
    lines: set[tuple[str, str, int]] = field(default_factory=set)  # (file, method, line) of the parsers' calls

    def normalize(self, path: RawPath) -> Key:
        """List indices become `[]`; a key no `mapping` call allowed (a metric's name, ...) becomes `<name>`."""
        out: list[str] = []
        for i, seg in enumerate(path):
            if isinstance(seg, int):
                out.append(ITEM)
            else:
                allowed = self.allowed.get(path[:i])
                out.append(seg if allowed is not None and seg in allowed else NAME)
        return tuple(out)


def parser_files() -> list[Path]:
    """The parser's modules: mlops_ci/config.py and every settings parser the backend tables name."""
    import importlib

    modules = {k.settings.partition(":")[0] for table in kinds.TABLES.values() for k in table.values() if k.settings}
    found = [importlib.import_module(m).__file__ for m in sorted(modules)]
    return [Path(f) for f in (config.__file__, *found) if f]


@contextmanager
def recording(rec: Recording) -> Iterator[None]:
    """Make `config.parse` use a reader that records into `rec` (restored afterwards)."""
    files = {str(f) for f in parser_files()}

    def note(method: str, path: RawPath, **detail: object) -> None:
        rec.calls.append((method, tuple(path), detail))
        caller = sys._getframe(2)
        if caller.f_code.co_filename in files:
            rec.lines.add((caller.f_code.co_filename, method, caller.f_lineno))

    class RecordingReader(config._Reader):
        def mapping(self, value: object, path: RawPath, allowed: tuple[str, ...]) -> dict[str, object]:
            rec.allowed[tuple(path)] = tuple(dict.fromkeys(rec.allowed.get(tuple(path), ()) + tuple(allowed)))
            if isinstance(value, dict):
                rec.present[tuple(path)] = tuple(str(k) for k in value)
            note("mapping", path, allowed=tuple(allowed))
            return super().mapping(value, path, allowed)

        def string(self, value: object, path: RawPath, *, choices: tuple[str, ...] = ()) -> str:
            note("string", path, choices=tuple(choices))
            return super().string(value, path, choices=choices)

        def number(self, value: object, path: RawPath) -> float:
            note("number", path)
            return super().number(value, path)

        def integer(self, value: object, path: RawPath, *, minimum: int = 0) -> int:
            note("integer", path, minimum=minimum)
            return super().integer(value, path, minimum=minimum)

        def boolean(self, value: object, path: RawPath) -> bool:
            note("boolean", path)
            return super().boolean(value, path)

        def seq(self, value: object, path: RawPath) -> list[object]:
            note("seq", path)
            return super().seq(value, path)

        def str_map(self, value: object, path: RawPath) -> dict[str, str]:
            note("str_map", path)
            return super().str_map(value, path)

    real = config._Reader
    config._Reader = RecordingReader  # type: ignore[misc]
    try:
        yield
    finally:
        config._Reader = real  # type: ignore[misc]


def parse_recorded(text: str, rec: Recording, name: str) -> config.Config:
    with recording(rec):
        return config.parse(text, f"<{name} example>", ".")


# -- what the parser accepts ---------------------------------------------------------------
@dataclass(frozen=True)
class Accepted:
    """A key the parser accepts, with what the parser says about it."""

    path: Key
    type: str | None  # None: the reader calls do not say (a description must)
    choices: tuple[str, ...]
    default: object  # _NO_DEFAULT when the minimal configs do not give one


_NO_DEFAULT = object()
_CONFLICT = object()


def accepted_keys(rec: Recording | None = None) -> list[Key]:
    """Every key path any `mapping` call allowed, in the parser's order (parents before children)."""
    if rec is None:
        rec = record_exhaustive()
    keys: dict[Key, None] = {}
    for raw, allowed in rec.allowed.items():
        parent = rec.normalize(raw)
        for key in allowed:
            keys[(*parent, key)] = None
    return _tree_order(list(keys))


def record_exhaustive() -> Recording:
    rec = Recording()
    for name, text in EXHAUSTIVE.items():
        parse_recorded(text, rec, name)
    return rec


def _tree_order(keys: list[Key]) -> list[Key]:
    """Depth first: each key followed by the keys under it (through `[]` and `<name>`)."""
    index = {k: i for i, k in enumerate(keys)}
    out: list[Key] = []

    def parent_of(k: Key) -> Key | None:
        p = k[:-1]
        while p and p[-1] in (ITEM, NAME):
            p = p[:-1]
        return p if p in index else None

    children: dict[Key | None, list[Key]] = {}
    for k in keys:
        children.setdefault(parent_of(k), []).append(k)

    def walk(k: Key) -> None:
        out.append(k)
        for c in sorted(children.get(k, []), key=index.__getitem__):
            walk(c)

    for top in sorted(children.get(None, []), key=index.__getitem__):
        walk(top)
    return out


def _kinds(rec: Recording) -> dict[Key, dict[str, dict[str, object]]]:
    """Reader methods called at each normalized path, with their detail (choices, minimum)."""
    kinds: dict[Key, dict[str, dict[str, object]]] = {}
    for method, raw, detail in rec.calls:
        seen = kinds.setdefault(rec.normalize(raw), {})
        if method == "string" and "string" in seen and seen["string"]["choices"] != detail["choices"]:
            raise ValueError(f"{dotted(rec.normalize(raw))}: the parser checks it with two lists of choices")
        if method == "string" and "string" in seen and not detail["choices"]:
            continue  # keep the call that gave choices, if any
        seen[method] = detail
    return kinds


def _type_of(path: Key, kinds: dict[Key, dict[str, dict[str, object]]]) -> str | None:
    here = kinds.get(path, {})
    item = kinds.get((*path, ITEM), {})
    named = kinds.get((*path, NAME), {})
    if "seq" in here:
        if "mapping" in item:
            return "list of mappings"
        if "string" in item and len(item) == 1:
            return "list of strings"
        return None
    if "str_map" in here:
        return "mapping of names to strings"
    if "mapping" in here:
        return "mapping"
    if not here and len(named) == 1:
        (method,) = named
        return {"mapping": "mapping of names to mappings", "number": "mapping of names to numbers"}.get(method)
    scalar = {k: v for k, v in here.items() if k in ("string", "number", "integer", "boolean")}
    if len(scalar) != 1:
        return None
    ((method, detail),) = scalar.items()
    if method == "integer":
        return f"whole number ≥ {detail['minimum']}"
    return {"string": "string", "number": "number", "boolean": "`true` or `false`"}[method]


def _defaults() -> dict[Key, object]:
    """The value each key left out of a minimal config gets; _CONFLICT when two configs disagree."""
    found: dict[Key, object] = {}
    for name, text in MINIMAL.items():
        rec = Recording()
        cfg = parse_recorded(text, rec, name)
        present = {(*rec.normalize(raw), k) for raw, keys in rec.present.items() for k in keys}
        for key in accepted_keys(rec):
            if key in present:
                continue
            value = _lookup(cfg, key)
            if value is _NO_DEFAULT:
                continue
            if key in found and found[key] != value:
                found[key] = _CONFLICT
            else:
                found[key] = value
    return found


def _lookup(obj: object, key: Key) -> object:
    """The attribute of the parsed Config at `key` (first list item, first named entry)."""
    for seg in key:
        if seg == ITEM:
            if not isinstance(obj, tuple) or not obj:
                return _NO_DEFAULT
            obj = obj[0]
        elif seg == NAME:
            if not isinstance(obj, dict) or not obj:
                return _NO_DEFAULT
            obj = next(iter(obj.values()))
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type) and hasattr(obj, seg):
            obj = getattr(obj, seg)
        else:
            return _NO_DEFAULT
    return obj


def parser_facts() -> list[Accepted]:
    rec = record_exhaustive()
    kinds = _kinds(rec)
    defaults = _defaults()
    out = []
    for key in accepted_keys(rec):
        choices = kinds.get(key, {}).get("string", {}).get("choices", ())  # what string() was given
        names = tuple(str(c) for c in choices) if isinstance(choices, tuple) else ()
        out.append(Accepted(key, _type_of(key, kinds), names, defaults.get(key, _NO_DEFAULT)))
    return out


def dotted(key: Key) -> str:
    """("endpoints", "[]", "smoke") → endpoints[].smoke; ("metrics", "<name>", "goal") → metrics.<name>.goal"""
    text = ""
    for seg in key:
        text += seg if seg == ITEM or not text else f".{seg}"
    return text


def uncovered_call_sites(rec: Recording | None = None) -> list[str]:
    """The `mapping(...)` and `string(..., choices=...)` calls of the parser's modules
    (parser_files) that the example configurations never reach: keys behind them would be
    missing from the page."""
    if rec is None:
        rec = record_exhaustive()
    missing = []
    for path in parser_files():
        shown = path.relative_to(Path(config.__file__).parent.parent).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            method = node.func.attr
            if method == "mapping" or (method == "string" and any(k.arg == "choices" for k in node.keywords)):
                end = node.end_lineno or node.lineno
                if not any(f == str(path) and m == method and node.lineno <= line <= end for f, m, line in rec.lines):
                    missing.append(f"{shown}:{node.lineno}: {ast.unparse(node)[:100]}")
    return missing


# -- the descriptions: the only hand-written part -------------------------------------------
@dataclass(frozen=True)
class Doc:
    text: str
    type: str | None = None  # where the reader calls do not say it (or not all of it)
    default: str | None = None  # markdown, where the parser gives none or two (never over one it gives)


SAME_DIR = "relative to the directory of `mlops-ci.yaml`"
DESCRIPTIONS: dict[str, Doc] = {
    "project": Doc(
        "The model's name: 1-63 letters, digits, `.`, `_` or `-`, starting with a letter or digit. Records in the "
        "store are kept per project, the gate's check run is named `mlops-ci / <project>` and SageMaker resource "
        "names start with it. `MLOPS_CI_PROJECT` overrides it.",
        default="required",
    ),
    "store": Doc(
        f"Where runs, verdicts, versions and deployments are recorded: `sqlite:///path` ({SAME_DIR} when "
        "relative), `git` (this repository's own refs, `refs/mlops-ci/*`; `git+REMOTE#refs/NAMESPACE`, "
        "`?max_artifact_mb=N`) or `s3://bucket/prefix` (with `?sse=AES256`, or `?sse=aws:kms&kms_key_id=...`). "
        "`MLOPS_CI_STORE` and `--store` override it; with none of the three, `MLOPS_CI_DEFAULT_STORE` (the starter "
        "workflows set it to `git`), else the SQLite default. See [the run store](store.md)."
    ),
    "training": Doc("How a commit is trained: SageMaker script mode, locally or as a SageMaker training job."),
    "training.backend": Doc(
        "`local` runs the entry point in a subprocess with the layout and `SM_*` variables of a SageMaker training "
        "container; `sagemaker` runs it as a SageMaker training job (`training.sagemaker`, `aws.role` and "
        "`aws.bucket` are then needed)."
    ),
    "training.entry_point": Doc(
        "The training script, relative to `source_dir`. It gets the hyperparameters as `--name value` arguments."
    ),
    "training.source_dir": Doc(
        f"The directory whose files, as of the commit and without `exclude`, are the job's source; {SAME_DIR}."
    ),
    "training.hyperparameters": Doc(
        "Passed to the script as arguments and in `SM_HPS`/`SM_HP_<NAME>`. Names are letters, digits, `_` or `-`, "
        "not starting with `sagemaker_`; every one needs a value. Values of secret-looking names are shown as "
        "`***`.",
        type="mapping of names to values",
    ),
    "training.channels": Doc(
        "Input data by channel name (letters, digits, `_` or `-`); each is `SM_CHANNEL_<NAME>` in the job. Locally "
        f"a directory {SAME_DIR} (committed data is taken from the commit) or an absolute one; with "
        "`backend: sagemaker` an `s3://` URI. Each channel's digest is recorded with the run. A channel written "
        "as a mapping also says how it reaches the hosts. See [several hosts](training.md#several-hosts).",
        type="mapping of names to strings or mappings",
    ),
    "training.channels.<name>.uri": Doc(
        "Where the channel's data is, as a channel given as a string.", type="string", default="required"
    ),
    "training.channels.<name>.distribution": Doc(
        "`FullyReplicated`: every host gets all of it; `ShardedByS3Key`: each host a disjoint share of its files "
        "(SageMaker's `S3DataDistributionType`)."
    ),
    "training.channels.<name>.input_mode": Doc(
        "`File` (copied before the script starts), `FastFile` (streamed on read; locally as `File`) or `Pipe` "
        "(a FIFO; SageMaker only): the channel's `InputMode`."
    ),
    "training.instance_count": Doc(
        "Hosts of the job, `algo-1`..`algo-N`: SageMaker instances, or processes on this machine with the local "
        "trainer (each with its own `/opt/ml` layout and `SM_CURRENT_HOST`). Only `algo-1`'s model and metrics are "
        "the run's. `training.sagemaker.instance_count` is the same setting."
    ),
    "training.distribution": Doc(
        "How the hosts train together, as the SageMaker SDK's `distribution` argument: one launcher, enabled with "
        "`enabled: true`. It becomes the hyperparameters the SDK sends. The local trainer emulates "
        "`torch_distributed` and refuses the others. See [several hosts](training.md#several-hosts).",
        type="mapping",
    ),
    "training.distribution.torch_distributed": Doc(
        "torchrun on every host (PyTorch images): `sagemaker_torch_distributed_enabled`. Locally each host gets "
        "torchrun's `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`, …"
    ),
    "training.distribution.torch_distributed.enabled": Doc("Whether the launcher is used.", default="required"),
    "training.distribution.pytorchddp": Doc(
        "PyTorch DDP under mpirun (PyTorch images): `sagemaker_pytorch_ddp_enabled`. `{enabled: true}`.",
        type="mapping",
    ),
    "training.distribution.mpi": Doc("mpirun across the hosts (Horovod and the like): `sagemaker_mpi_enabled`."),
    "training.distribution.mpi.enabled": Doc("Whether the launcher is used.", default="required"),
    "training.distribution.mpi.processes_per_host": Doc(
        "Processes per host (`sagemaker_mpi_num_of_processes_per_host`).", default="one per GPU, else 1"
    ),
    "training.distribution.mpi.custom_mpi_options": Doc("More mpirun options, on one line.", default='""'),
    "training.distribution.smdistributed": Doc("SageMaker's distributed training libraries."),
    "training.distribution.smdistributed.dataparallel": Doc(
        "The data parallelism library (`sagemaker_distributed_dataparallel_enabled`): `enabled`, and "
        "`custom_mpi_options`.",
        type="mapping",
    ),
    "training.distribution.smdistributed.modelparallel": Doc(
        "The model parallelism library, with `mpi` enabled: `enabled`, and its `parameters` (sent as `mp_parameters`)."
    ),
    "training.distribution.smdistributed.modelparallel.enabled": Doc(
        "Whether the library is used.", default="required"
    ),
    "training.distribution.smdistributed.modelparallel.parameters": Doc(
        "The library's parameters (`partitions`, `microbatches`, …)", type="mapping of names to values"
    ),
    "training.distribution.parameter_server": Doc(
        "TensorFlow parameter servers: `sagemaker_parameter_server_enabled`. `{enabled: true}`.", type="mapping"
    ),
    "training.distribution.multi_worker_mirrored_strategy": Doc(
        "TensorFlow's MultiWorkerMirroredStrategy: `sagemaker_multi_worker_mirrored_strategy_enabled`. "
        "`{enabled: true}`.",
        type="mapping",
    ),
    "training.metric_definitions": Doc(
        "Regular expressions applied to every line of the training log, like SageMaker's `MetricDefinitions`: "
        "each match is a point of the metric's series, the last one its final value."
    ),
    "training.metric_definitions[].name": Doc(
        "The metric's name: one line, no control characters, defined once.", default="required"
    ),
    "training.metric_definitions[].regex": Doc(
        "A Python regular expression whose first capture group is the number, e.g. `accuracy=([0-9.]+)`.",
        default="required",
    ),
    "training.environment": Doc(
        "More environment variables for the training job. Values of secret-looking names (containing `KEY`, "
        "`TOKEN`, `SECRET`, `PASSWORD`, `PASSWD` or `CREDENTIAL`) are masked in `config show` and left out of "
        "the training-config digest."
    ),
    "training.python": Doc(
        "The interpreter of a local training job. A `requirements.txt` in `source_dir` is installed into a "
        "virtualenv made from it.",
        default="the interpreter running mlops-ci",
    ),
    "training.max_run": Doc(
        "Seconds a training job may run, then it is stopped (SageMaker's `MaxRuntimeInSeconds`). A local "
        "`requirements.txt` install gets the same limit."
    ),
    "training.sagemaker": Doc(
        "The SageMaker training job; only with `backend: sagemaker`, and then required with `image_uri`, or "
        "`framework` and `framework_version`. See [Amazon SageMaker](sagemaker.md)."
    ),
    "training.sagemaker.instance_type": Doc(
        "The training instance type. It picks the framework image's processor (`g*` and `p*` types: GPU); a type "
        "the framework has no image for is refused: a GPU type with scikit-learn, a CPU type with Hugging Face "
        "training, a Graviton (arm64) type for any training."
    ),
    "training.sagemaker.instance_count": Doc("How many training instances (the same as `training.instance_count`)."),
    "training.sagemaker.volume_size": Doc("Size of each instance's ML storage volume, in GB."),
    "training.sagemaker.image_uri": Doc(
        "The training image, also served when `serving.image_uri` is not set. Without it, `framework` and "
        "`framework_version` pick SageMaker's image."
    ),
    "training.sagemaker.framework": Doc(
        "A framework whose SageMaker images to use: `sklearn`, `xgboost`, `pytorch`, `tensorflow` or `huggingface` "
        "(found in mlops-ci's own table of recent versions, in every region SageMaker has them; older versions and "
        "other frameworks need the SageMaker Python SDK installed; see [images](sagemaker.md#images)). Gives the "
        "inference image too when neither `serving.image_uri` nor `image_uri` is set."
    ),
    "training.sagemaker.framework_version": Doc(
        'The framework\'s version, e.g. `"1.2-1"` (quote it: it is used as text).', type="string"
    ),
    "training.sagemaker.py_version": Doc(
        "The Python tag of the framework image: `py3` for scikit-learn; PyTorch, TensorFlow and Hugging Face images "
        "are built for one each, e.g. `py311` for PyTorch 2.5.1 (a wrong one is refused, naming the right one)."
    ),
    "training.sagemaker.base_framework_version": Doc(
        "Only with `framework: huggingface`, and then required: the PyTorch build under the transformers version, "
        "as the SageMaker SDK names it, e.g. `pytorch2.5.1` (or `pytorch2.5`) with `framework_version: 4.49.0`."
    ),
    "training.sagemaker.subnets": Doc("VPC subnet ids of the job (SageMaker's `VpcConfig`)."),
    "training.sagemaker.security_group_ids": Doc("VPC security group ids of the job."),
    "training.sagemaker.spot": Doc("Managed spot training. Needs `max_wait`; cannot be combined with `keep_alive`."),
    "training.sagemaker.max_wait": Doc(
        "Only with `spot: true`: seconds to wait for spot capacity and train, at least `training.max_run`."
    ),
    "training.sagemaker.checkpoint_s3_uri": Doc(
        "With `spot: true`: the `s3://` URI the job's checkpoints go to.",
        default="`s3://<aws.bucket>/<aws.prefix>/checkpoints/<job name>`",
    ),
    "training.sagemaker.keep_alive": Doc(
        "Seconds SageMaker keeps a warm pool after the job, at most 21600; `0`: none. Not with `spot`."
    ),
    "training.sagemaker.retry_attempts": Doc(
        "How often SageMaker restarts the job after an internal error (its `RetryStrategy`), at most 30; `0`: never."
    ),
    "training.exclude": Doc(
        "Files under `source_dir` that training never reads, as `.gitignore` patterns anchored at `source_dir`: "
        "they are left out of the job's source and of the training-inputs digest, so a commit that changes only "
        "them reuses an earlier run. `[]` sends everything. Serving files are never excluded."
    ),
    "tracking": Doc("Where experiments are tracked besides the run store. See [Comet](comet.md)."),
    "tracking.backend": Doc(
        "`comet`: every run is a Comet experiment tied to its commit. The other `tracking` keys apply only with "
        "`comet`."
    ),
    "tracking.workspace": Doc("The Comet workspace.", default="required with `comet`"),
    "tracking.project_name": Doc("The Comet project.", default="the `project`"),
    "tracking.api_key_env": Doc(
        "The name of the environment variable that holds the Comet API key (never the key itself). The starter "
        "workflows pass only `COMET_API_KEY`."
    ),
    "tracking.mode": Doc("`auto`: online when the key is set, else offline archives."),
    "tracking.summary": Doc(
        "Which value of a series logged to Comet counts: the `last`, or the `best` by the metric's `goal`."
    ),
    "tracking.compare_url": Doc(
        "The link to Comet's diff view of two experiments in the PR comment. Placeholders `{server}`, "
        "`{workspace}`, `{project}`, `{baseline}`, `{head}`; it must contain the last two and start with "
        "`{server}` or `http(s)://`."
    ),
    "tracking.model_name": Doc("Set: `promote` also registers each version in Comet's model registry under this name."),
    "tracking.deployed_status": Doc("The registry status a deployed version gets."),
    "tracking.retired_status": Doc(
        "The registry status of the version it replaced, once that version is deployed nowhere (`None` is "
        "one of Comet's statuses here, not YAML's null)."
    ),
    "metrics": Doc(
        "Which way is better for each metric: decides better or worse in the report and what `max_regression` "
        "measures. `accuracy: maximize` is short for `accuracy: {goal: maximize}`.",
        type="mapping of metric names to mappings",
    ),
    "metrics.<name>.goal": Doc("`maximize` or `minimize`.", default="required"),
    "metrics.<name>.tolerance": Doc(
        "Noise band, at least 0: a change this small is shown as unchanged in the report (the gate does not use it)."
    ),
    "gate": Doc(
        "What a commit's run must pass before it can be promoted. The rules that decide are read from the "
        "`mlops-ci.yaml` committed at the judged commit (under GitHub Actions on a pull request: the base "
        "branch's)."
    ),
    "gate.rules": Doc(
        "Each rule needs `metric` and at least one of `min`, `max`, `max_regression`, `required`; a missing or "
        "non-finite value fails the rule."
    ),
    "gate.rules[].metric": Doc("The metric the rule checks.", default="required"),
    "gate.rules[].min": Doc("The value must be at least this."),
    "gate.rules[].max": Doc("The value must be at most this."),
    "gate.rules[].max_regression": Doc(
        "The most the value may get worse than the baseline run's, in the direction of `metrics.<name>.goal` "
        "(which must be set): a number is absolute, `2%` relative. Skipped when there is no earlier run at all "
        "(see `require_baseline`); failed when the baseline cannot be determined.",
        type="number, or a percentage such as `2%`",
    ),
    "gate.rules[].required": Doc("`true`: the metric must be present."),
    "gate.rules[].severity": Doc("`fail` blocks (the gate exits 1); `warn` is shown and never blocks."),
    "gate.require_baseline": Doc(
        "`true`: `max_regression` rules fail, instead of being skipped, when no earlier run exists."
    ),
    "gate.signing_key": Doc(
        "An AWS KMS asymmetric `SIGN_VERIFY` key (id, ARN or alias): verdicts and versions are signed with it and "
        "a deploy verifies both. See [the threat model](threat-model.md)."
    ),
    "review": Doc(
        "The model diff of the PR review ([review](review.md#the-model-diff)): the baseline's and the head's "
        "models, loaded through the serving contract in a confined process each, predict the evaluation "
        "channel; the comment shows what changed, and the gate can use `flip_rate`, the serving figures and "
        "per-slice metrics like any metric."
    ),
    "review.model_diff": Doc("`false` turns the model diff off (the report has no such section)."),
    "review.eval_channel": Doc(
        "The training channel whose `.csv` files both models predict (a directory here, or an `s3://` prefix "
        "downloaded once)."
    ),
    "review.label_column": Doc(
        "The column with the true value (a header name, or a 0-based index for files without a header); "
        "default: a column named `label`. Never sent to the models.",
        type="string or whole number",
    ),
    "review.id_column": Doc(
        "A column that names each row in the changed-rows table (default: the row number); never sent.",
        type="string or whole number",
    ),
    "review.slice_column": Doc(
        "A column whose values define groups: per-group flip rate and accuracy (MAE for regressors), as gate "
        "metrics `flip_rate@COLUMN=VALUE` and `accuracy@COLUMN=VALUE`. It stays a feature unless excluded.",
        type="string or whole number",
    ),
    "review.exclude_columns": Doc(
        "Columns never sent to the models (names or 0-based indexes).", type="list of strings or whole numbers"
    ),
    "review.task": Doc(
        "`auto` decides from the predictions: text, or at most 50 distinct whole numbers, or one score per "
        "class is a classifier; any other number is a regressor."
    ),
    "review.content_type": Doc(
        "How rows reach `input_fn`: `application/json` (a list of rows, numbers where a cell is one) or "
        "`text/csv` (the cells as read; one row is squeezed to 1-D, as SageMaker's container does)."
    ),
    "review.batch_size": Doc("Rows per request when predicting the channel and for the batch latency."),
    "review.max_rows": Doc("At most this many rows are predicted (the first ones); the report says so."),
    "review.top_k": Doc("How many changed rows are listed (regressors: the largest changes first)."),
    "review.tolerance": Doc(
        "A regressor's prediction counts as changed when it moves by more than this times the larger of 1 and "
        "the baseline's absolute value."
    ),
    "review.timeout": Doc(
        "Seconds each model may take for everything (load, predictions, latency); it is stopped after that and "
        "the diff says so."
    ),
    "review.memory_mb": Doc("Address-space limit of each model's process, in MiB; beyond it allocations fail."),
    "review.latency_requests": Doc(
        "Single-row requests per model for the latency figures (a tenth as many batches), in alternating rounds."
    ),
    "baseline": Doc("How the run a commit is compared with is found."),
    "baseline.branch": Doc("The base branch when neither `--base` nor the pull request names one."),
    "baseline.max_commits": Doc(
        "How far the search walks the history; when it stops there, the baseline is unknown and "
        "`max_regression` rules fail."
    ),
    "serving": Doc(
        "The serving code packed with the model under `code/` of `model.tar.gz` (SageMaker's layout), and how "
        "it is served."
    ),
    "serving.entry_point": Doc(
        "The inference script, relative to `training.source_dir` and committed: a top-level `.py` file, not "
        "named like a standard-library module, that defines `model_fn` (and may define `input_fn`, "
        "`predict_fn`, `output_fn`)."
    ),
    "serving.include": Doc("More files or directories, relative to `training.source_dir`, packed next to it."),
    "serving.python": Doc(
        "The interpreter of a local model server; its environment must have what the model needs.",
        default="the interpreter running mlops-ci",
    ),
    "serving.image_uri": Doc(
        "The SageMaker inference image.",
        default="`training.sagemaker.image_uri`, else the image of `training.sagemaker.framework`",
    ),
    "serving.environment": Doc(
        "Environment variables of the model server (locally its process's, on SageMaker the model's), e.g. "
        "`SAGEMAKER_MODEL_SERVER_WORKERS`. Secret-looking names are masked in `config show`."
    ),
    "endpoints": Doc(
        "Where models are deployed. `deploy TAG` picks the first endpoint one of whose `tags` patterns matches "
        "the tag; `--endpoint` names one."
    ),
    "endpoints[].name": Doc(
        "1-63 letters, digits, `.`, `_` or `-`, unique; with `backend: sagemaker` letters, digits and `-` only "
        "(it is the SageMaker endpoint's name).",
        default="required",
    ),
    "endpoints[].tags": Doc("Shell-style patterns of the release tags the endpoint gets, e.g. `v*-rc*`."),
    "endpoints[].port": Doc(
        "Local endpoints only: the port of the endpoint's URL (its router), at most 65535. `0`: a free port "
        "picked at the first deploy, then kept."
    ),
    "endpoints[].smoke": Doc(
        "Requests the new version must answer as expected before a deploy succeeds; when one fails, the previous "
        "version keeps serving (a SageMaker endpoint is rolled back to its previous configuration)."
    ),
    "endpoints[].smoke[].body": Doc(
        "The request body.", type="string (sent as is), or any other YAML value (sent as JSON)", default="required"
    ),
    "endpoints[].smoke[].content_type": Doc("The request's `Content-Type`."),
    "endpoints[].smoke[].accept": Doc("The request's `Accept`."),
    "endpoints[].smoke[].expect_status": Doc("The HTTP status the answer must have."),
    "endpoints[].smoke[].expect_contains": Doc("Text the answer's body must contain."),
    "endpoints[].ready_timeout": Doc(
        "Seconds to wait for the new model server to answer (local) or for the endpoint to be `InService` (SageMaker).",
        default="`60`; `3600` with `backend: sagemaker`",
    ),
    "monitoring": Doc(
        "Every run records baseline statistics of a training channel and of its model's predictions on it, and "
        "`mlops-ci monitor ENDPOINT` holds the endpoint's captured traffic to them with these thresholds (exit 16 "
        "past one). `true` for the defaults. Needs `serving.entry_point`. See [monitoring](monitoring.md).",
        type="`true` or a mapping",
        default="off",
    ),
    "monitoring.channel": Doc(
        "The training channel whose rows (a CSV table, as the model diff reads it) are the baseline."
    ),
    "monitoring.max_rows": Doc("Rows of the channel profiled, at least 100."),
    "monitoring.psi": Doc(
        "A feature drifted when its population stability index reaches this (0.1 moderate, 0.2 significant)."
    ),
    "monitoring.ks_pvalue": Doc("... or when its two-sample Kolmogorov-Smirnov p-value is below this ..."),
    "monitoring.ks_statistic": Doc("... with a KS statistic of at least this (a large window finds any difference)."),
    "monitoring.prediction_psi": Doc("The predictions drifted when their PSI reaches this."),
    "monitoring.max_error_rate": Doc(
        "An alert when more than this share of the answered requests are server errors (5xx)."
    ),
    "monitoring.max_p99_ms": Doc(
        "An alert when the 99th latency percentile passes this (milliseconds).", type="number", default="none"
    ),
    "monitoring.max_violation_rate": Doc(
        "An alert when more than this share of the rows break the schema (another width, text for a number, a "
        "missing field)."
    ),
    "monitoring.min_records": Doc("Below this many rows in the window, drift is not judged (the report says so)."),
    "monitoring.retrain": Doc(
        "What `mlops-ci monitor --post` dispatches once per new alert (when it opens the endpoint's issue): a "
        "`workflow_dispatch` of `workflow`, or a `repository_dispatch` of `event_type`. It trains; a human still "
        "merges, gates and tags.",
        type="mapping",
        default="nothing dispatched",
    ),
    "monitoring.retrain.workflow": Doc(
        "The workflow file to dispatch (it needs `on: workflow_dispatch`, as the starter `mlops-ci-train.yml` has); "
        "the job's token needs `actions: write`.",
        type="file name",
        default="none",
    ),
    "monitoring.retrain.ref": Doc("The branch the dispatched workflow runs on.", default="the default branch"),
    "monitoring.retrain.inputs": Doc(
        "The dispatched workflow's inputs (each one it declares; GitHub refuses others). `force` makes the starter "
        "train workflow train the branch's head again, although it has a run, on today's data.",
        type="mapping",
        default='`{force: "true"}`',
    ),
    "monitoring.retrain.event_type": Doc(
        "Instead of `workflow`: the `repository_dispatch` event type (1-100 characters; the job's token needs "
        "`contents: write`); its client_payload names the endpoint, version, commit, alerts and issue.",
        type="string",
        default="none",
    ),
    "endpoints[].capture": Doc(
        "Record a sample of the endpoint's requests and answers in SageMaker's Data Capture format (JSON Lines): "
        "`true` for the defaults, or a mapping. A local endpoint writes them under "
        "`.mlops-ci/endpoints/<name>/capture/<name>/AllTraffic/yyyy/mm/dd/hh/`; a SageMaker endpoint gets the "
        "endpoint config's `DataCaptureConfig`. See [data capture](deploy.md#data-capture).",
        type="`true`, `false` or a mapping",
        default="off",
    ),
    "endpoints[].capture.percent": Doc("The share of requests recorded, 0-100 (the SDK's default)."),
    "endpoints[].capture.csv_content_types": Doc(
        "Content types recorded as text with encoding `CSV` (others with `JSON`, or base64), at most 10."
    ),
    "endpoints[].capture.json_content_types": Doc("Content types recorded as text with encoding `JSON`, at most 10."),
    "endpoints[].capture.max_payload_bytes": Doc(
        "Local only: a request or answer larger than this is not recorded (counted, never cut)."
    ),
    "endpoints[].capture.rotate_bytes": Doc("Local only: a capture file's size limit (a new file also every hour)."),
    "endpoints[].capture.destination": Doc(
        "SageMaker only: the S3 URI below which SageMaker writes the records.",
        default="`s3://<aws.bucket>/<aws.prefix>/capture`",
    ),
    "endpoints[].backend": Doc(
        "`local`: a model server and a router on this machine; `sagemaker`: a SageMaker endpoint, updated blue/green."
    ),
    "endpoints[].instance_type": Doc("`sagemaker` only: the endpoint's instance type."),
    "endpoints[].instance_count": Doc(
        "`sagemaker` only: how many instances (a variant under auto scaling keeps the count it has)."
    ),
    "endpoints[].deployment": Doc("`sagemaker` only: how an update shifts traffic to the new version."),
    "endpoints[].deployment.strategy": Doc("`canary` and `linear` need `alarms`."),
    "endpoints[].deployment.percent": Doc(
        "The canary's size (at most 50) or the linear step (10-50), in % of the variant's instances."
    ),
    "endpoints[].deployment.wait_seconds": Doc("Baking period between traffic shifts, at most 3600."),
    "endpoints[].deployment.termination_wait_seconds": Doc(
        "Seconds before the old fleet is terminated after the shift, at most 3600."
    ),
    "endpoints[].deployment.max_execution_timeout": Doc("Limit of the whole update in seconds, at most 28800."),
    "endpoints[].deployment.alarms": Doc("CloudWatch alarm names: one in alarm during the update rolls it back."),
    "endpoints[].monitor_schedule": Doc(
        "`sagemaker` only, with `capture:`: the SageMaker Model Monitor data-quality schedule "
        "`mlops-ci monitor ENDPOINT --schedule` creates (or moves to the version served; it refuses an endpoint "
        "without this key): `true` for the defaults, or these settings. See "
        "[SageMaker Model Monitor](monitoring.md#sagemaker-model-monitor).",
        type="`true`, `false` or a mapping",
        default="none",
    ),
    "endpoints[].monitor_schedule.cron": Doc(
        "When the monitoring job runs: hourly `cron(0 * ? * * *)`, daily at an hour (UTC) `cron(0 8 ? * * *)`, or "
        "every N hours from an hour `cron(0 0/6 ? * * *)`: the schedules Model Monitor takes.",
        default="`cron(0 * ? * * *)` (hourly)",
    ),
    "endpoints[].monitor_schedule.instance_type": Doc(
        "The instance type of the baselining and monitoring jobs: one a processing job runs on.",
        default="`ml.m5.xlarge`",
    ),
    "endpoints[].monitor_schedule.instance_count": Doc("Instances of each job, 1-100.", default="`1`"),
    "endpoints[].monitor_schedule.volume_size_gb": Doc(
        "Each instance's storage volume in GB, 1-16384.", default="`20`"
    ),
    "endpoints[].monitor_schedule.max_runtime_seconds": Doc(
        "A job is stopped after this many seconds, 1-86400 and at most the schedule's interval (3600 hourly): "
        "SageMaker refuses a longer one.",
        default="`3600`",
    ),
    "aws": Doc("Where SageMaker work happens. See [Amazon SageMaker](sagemaker.md)."),
    "aws.region": Doc(
        "The region of the SageMaker (and KMS signing) calls.", default="`AWS_REGION`, else `AWS_DEFAULT_REGION`"
    ),
    "aws.role": Doc("The ARN of the execution role SageMaker assumes; required when anything runs on SageMaker."),
    "aws.bucket": Doc(
        "The bucket (a name, not a URI) for sources, job output and model data; required when anything runs "
        "on SageMaker."
    ),
    "aws.prefix": Doc("The key prefix in `bucket`: `source/`, `output/`, `models/` and `checkpoints/` go under it."),
    "aws.kms_key": Doc(
        "A KMS key for job output, uploads and the ML storage volumes (instance types with local storage get "
        "none: SageMaker refuses it there)."
    ),
    "aws.retry_mode": Doc(
        "botocore's retry mode for these AWS calls: throttling and 5xx answers are retried (the `s3://` store "
        "has its own client, in `standard` mode)."
    ),
    "aws.max_attempts": Doc("botocore's `max_attempts` for that retry mode."),
    "aws.poll_seconds": Doc("How often a wait asks SageMaker for news, in seconds."),
    "aws.prices": Doc(
        "USD per hour by instance type, each at least 0, over the built-in table of the PR report's training "
        "cost estimate, e.g. `{ml.m5.xlarge: 0.23}`."
    ),
    "registry": Doc("Where promoted versions are registered besides the run store."),
    "registry.backend": Doc(
        "`sagemaker`: each promoted version is also a model package in a SageMaker model package group (with "
        "`aws.role`, `aws.bucket` and an inference image)."
    ),
    "registry.model_package_group": Doc(
        "The model package group: 1-63 letters, digits or `-`.",
        default="the `project`, each character other than a letter, digit or `-` made `-`",
    ),
    "registry.approval": Doc(
        "The status of a new model package. `PendingManualApproval`: a deploy is refused until someone approves "
        "the package in SageMaker. Read from the `mlops-ci.yaml` committed at the promoted commit."
    ),
    "tuning": Doc(
        "A hyperparameter search per commit, as SageMaker's hyperparameter tuning job has it: every trial is a run "
        "of the commit with its values on top of `training.hyperparameters`, and the best completed trial becomes the "
        "commit's run, the one the gate decides on; the PR report ranks the trials. Locally: `Random`, `Grid` and "
        "`Bayesian`, `max_parallel` trials at once; on SageMaker one hyperparameter tuning job. See "
        "[a search](training.md#a-search).",
        type="mapping",
    ),
    "tuning.objective": Doc("The metric the search optimises.", type="mapping", default="required"),
    "tuning.objective.metric": Doc(
        "A metric of the runs (from `metric_definitions` or `metrics.json`; on SageMaker it needs a "
        "`metric_definitions` entry).",
        default="required",
    ),
    "tuning.objective.goal": Doc(
        "`maximize` or `minimize`; must agree with `metrics.<name>.goal` when that is declared.",
        default="`metrics.<name>.goal`",
    ),
    "tuning.parameters": Doc(
        "The searched hyperparameters by name (none of them also in `training.hyperparameters`).",
        type="mapping of names to ranges",
        default="required",
    ),
    "tuning.parameters.<name>.type": Doc(
        "`continuous` (`min`, `max`, `scaling`), `integer` (`min`, `max`, `scaling`) or `categorical` (`values`).",
        default="required",
    ),
    "tuning.parameters.<name>.min": Doc("The range's lower end (included).", type="number", default="required"),
    "tuning.parameters.<name>.max": Doc("The range's upper end (included).", type="number", default="required"),
    "tuning.parameters.<name>.values": Doc(
        "The choices of a categorical parameter: strings, numbers or booleans, each once.", type="list"
    ),
    "tuning.parameters.<name>.scaling": Doc(
        "`Auto`, `Linear`, `Logarithmic` (min > 0; each order of magnitude as likely) or `ReverseLogarithmic` "
        "(continuous, within 0 <= x < 1; dense near 1). Locally `Auto` is `Linear`."
    ),
    "tuning.strategy": Doc(
        "`Random`, `Grid` (categorical parameters only; every combination, so no `max_jobs`), `Bayesian` (locally "
        "optuna's TPE: the `tuning` extra) or `Hyperband` (SageMaker's)."
    ),
    "tuning.max_jobs": Doc("How many trials (a `Random` search).", default="10"),
    "tuning.max_parallel": Doc("How many trials run at once, at most `max_jobs`."),
    "tuning.early_stopping": Doc("`Off`, or `Auto` (SageMaker stops unpromising trials; not locally)."),
    "tuning.seed": Doc(
        "The random draws' seed: the same seed gives the same trials, so a search run again reuses them."
    ),
}


# -- rendering -------------------------------------------------------------------------------
GENERATED = f"<!-- Generated by `{COMMAND}` from {{source}}: do not edit by hand. -->"


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, int | str):
        return f"`{value}`"
    if isinstance(value, tuple | list | dict):
        return f"`{json.dumps(value)}`"
    raise TypeError(f"no way to show {value!r}")


def _cell(text: str, where: str) -> str:
    if "|" in text or "\n" in text:
        raise ValueError(f"{where}: a table cell cannot hold '|' or a line break: {text!r}")
    return text


def config_rows(facts: Sequence[Accepted] | None = None) -> list[tuple[Key, str, str, str]]:
    """(key, type, default, description) for every key the parser accepts; fails on a key without a
    description, a description of a key the parser does not accept, a type the parser does not
    show, and a hand-written default over one the parser gives."""
    if facts is None:
        facts = parser_facts()
    known = {dotted(f.path) for f in facts}
    problems = [f"{k}: described, but the parser does not accept it" for k in DESCRIPTIONS if k not in known]
    has_children = {f.path[:i] for f in facts for i in range(1, len(f.path))}
    rows = []
    for f in facts:
        name = dotted(f.path)
        doc = DESCRIPTIONS.get(name)
        if doc is None:
            problems.append(f"{name}: the parser accepts it, but DESCRIPTIONS has no entry for it")
            continue
        kind = doc.type or f.type
        if kind is None:
            problems.append(f"{name}: the parser's calls do not show its type; give the Doc a type")
            continue
        if f.choices:
            kind = "one of " + ", ".join(f"`{c}`" for c in f.choices)
        given = f.default
        if doc.default is not None:
            if given not in (None, _NO_DEFAULT, _CONFLICT):
                problems.append(f"{name}: the parser's default is {given!r}; drop the hand-written one")
            default = doc.default
        elif given is _CONFLICT:
            problems.append(f"{name}: its default depends on other keys; give the Doc a default")
            continue
        elif given in (None, _NO_DEFAULT) or f.path in has_children or dataclasses.is_dataclass(given):
            default = "—"
        else:
            default = _literal(given)
        rows.append((f.path, _cell(kind, name), _cell(default, name), _cell(doc.text, name)))
    if problems:
        raise ValueError("the config reference does not match the parser:\n  " + "\n  ".join(problems))
    return rows


def config_page() -> str:
    rows = config_rows()
    out = [
        "# Configuration reference",
        "",
        GENERATED.format(source="mlops_ci/config.py and mlops_ci/settings/"),
        "",
        "Every key `mlops-ci.yaml` accepts, as the parser in `mlops_ci/config.py` reads it, with the backends' "
        "own keys read by their parsers in `mlops_ci/settings/`: this page is "
        f"generated from them (`{COMMAND}`), and a test fails when the two differ.",
        "",
        "- `mlops-ci.yaml` is looked for in the working directory (or `-C DIR`) and its parents up to the "
        "repository root; `--config FILE` or `MLOPS_CI_CONFIG` names another file. Relative paths in it are "
        "relative to its directory.",
        "- Precedence: command-line flag > environment (`MLOPS_CI_CONFIG`, `MLOPS_CI_STORE`, `MLOPS_CI_PROJECT`) > "
        "file > the defaults below. `mlops-ci config show` prints the resolved configuration and where each "
        "override came from; `mlops-ci config check` validates the file and what it points at.",
        '- Unknown keys are errors (with a "did you mean"), and every error names `file:line:col`.',
        "- `[]` stands for each item of a list, `<name>` for a name you choose. A key with no default (—) is "
        "unset unless you set it.",
        "",
        "For a complete working file see "
        "[`examples/classifier/mlops-ci.yaml`](https://github.com/mlops-ci/mlops-ci/blob/main/examples/classifier/mlops-ci.yaml).",
    ]
    current = None
    for key, kind, default, text in rows:
        if key[0] != current:
            current = key[0]
            out += ["", f"## {current}", "", "| Key | Type | Default | Description |", "|---|---|---|---|"]
        out.append(f"| `{dotted(key)}` | {kind} | {default} | {text} |")
    return "\n".join(out) + "\n"


def exit_codes_page() -> str:
    out = [
        "# Exit codes",
        "",
        GENERATED.format(source="`mlops_ci.errors.EXIT_CODES`"),
        "",
        "Every command shares one table; `mlops-ci --help` prints it too. An error is one line on stderr "
        "naming the cause and the fix (plus a `::error::` annotation under GitHub Actions); `-v` adds the "
        "traceback. With `--json`, a failure also prints "
        '`{"error": {"exit_code": …, "kind": …, "message": …}}` on stdout, unless the command printed its '
        "result already (a failed gate prints its verdict). The [fault matrix](faults.md) lists which failure "
        "gives which code, and the test that proves it.",
        "",
        "| Code | Meaning |",
        "|---:|---|",
    ]
    out += [f"| {code} | {_cell(text, f'exit code {code}')} |" for code, text in EXIT_CODES.items()]
    return "\n".join(out) + "\n"


PAGES = {CONFIG_PAGE: config_page, EXIT_PAGE: exit_codes_page}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=COMMAND, description="Generate the config reference and exit-code pages.")
    p.add_argument("--docs", type=Path, default=DOCS, help="the docs directory (default: the checkout's docs/)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page is out of date")
    args = p.parse_args(argv)
    stale = []
    for name, render in PAGES.items():
        path = args.docs / name
        text = render()
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run `{COMMAND}`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
