"""Local training that honours the SageMaker script-mode contract.

The job gets the same layout and environment a SageMaker training container gives it:
``$SAGEMAKER_BASE_DIR`` with ``input/config/{hyperparameters,resourceconfig,inputdataconfig}.json``,
``input/data/<channel>/``, ``model/``, ``output/data/``, ``output/failure``, the ``SM_*``
variables, and hyperparameters as ``--name value`` arguments, so a script (or the
``sagemaker-training`` toolkit) cannot tell the difference. A ``requirements.txt`` in the source
directory is installed first, as the toolkit does, into a cached virtualenv (see ensure_venv).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..ci import FORGE_SECRETS
from ..config import ChannelSettings
from ..distribution import hyperparameters as distribution_hyperparameters
from ..errors import ConfigError
from . import Context, TrainingResult, TrainingSpec

HOST = "algo-1"
LOCAL_INSTANCE_TYPE = "local"  # what resourceconfig.json says the instances are
METRICS_FILE = "metrics.json"  # written by the script to $SM_OUTPUT_DATA_DIR (optional)


def encode_hyperparameters(hps: dict[str, Any]) -> dict[str, str]:
    """JSON-encode every value as the SageMaker SDK does for framework jobs."""
    return {k: json.dumps(v) for k, v in hps.items()}


def cmd_args(hps: dict[str, Any]) -> list[str]:
    """`--name value` pairs, sorted, as the training toolkit builds them (dicts as k=v,...)."""
    args: list[str] = []
    for key in sorted(hps):
        value = hps[key]
        args.append(f"--{key}" if len(key) > 1 else f"-{key}")
        if isinstance(value, dict):
            args.append(",".join(f"{k}={v}" for k, v in sorted(value.items())))
        else:
            args.append(str(value))
    return args


def _env_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def hosts_of(spec: TrainingSpec) -> list[str]:
    """algo-1..N, as SageMaker names the instances of a job."""
    return [f"algo-{i}" for i in range(1, max(spec.instance_count, 1) + 1)]


def shard(src: Path, index: int, count: int) -> list[Path]:
    """The files of channel `src` host `index` of `count` gets with ShardedByS3Key: every
    `count`-th object in key order, starting at its own. SageMaker promises each instance about
    1/N of the objects and no object twice, not which ones; this split is one such."""
    if src.is_file():
        return [Path(src.name)] if index == 0 else []
    keys = sorted((p.relative_to(src) for p in src.rglob("*") if p.is_file()), key=lambda p: p.as_posix())
    return keys[index::count]


def _copy_channel(src: Path, dest: Path, index: int, count: int, sharded: bool) -> None:
    if not sharded:
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            dest.mkdir(parents=True)
            shutil.copy2(src, dest / src.name)
        return
    dest.mkdir(parents=True)
    root = src if src.is_dir() else src.parent
    for rel in shard(src, index, count):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dest / rel)


def layout(base: Path, spec: TrainingSpec, host: str = HOST) -> dict[str, str]:
    """Create the /opt/ml layout of `host` under `base`; return the SM_* environment for the job
    there. With several hosts each has its own layout, and its share of a sharded channel."""
    hosts = hosts_of(spec)
    index = int(host.removeprefix("algo-")) - 1
    cfg = base / "input" / "config"
    for d in (cfg, base / "model", base / "output" / "data", base / "output" / "intermediate", base / "code"):
        d.mkdir(parents=True, exist_ok=True)
    framework = distribution_hyperparameters(spec.distribution, LOCAL_INSTANCE_TYPE)
    sm_hps = {
        **spec.hyperparameters,
        "sagemaker_program": spec.entry_point,
        "sagemaker_submit_directory": str(base / "code"),
        "sagemaker_job_name": spec.job_name,
        "sagemaker_container_log_level": 20,
        "sagemaker_region": "local",
        **framework,
    }
    (cfg / "hyperparameters.json").write_text(json.dumps(encode_hyperparameters(sm_hps), indent=2))
    group = "homogeneousCluster"
    resource = {
        "current_host": host,
        "current_instance_type": LOCAL_INSTANCE_TYPE,
        "current_group_name": group,
        "hosts": hosts,
        "instance_groups": [{"instance_group_name": group, "instance_type": LOCAL_INSTANCE_TYPE, "hosts": hosts}],
        "network_interface_name": "eth0",
    }
    (cfg / "resourceconfig.json").write_text(json.dumps(resource, indent=2))
    plain = ChannelSettings()
    settings = {name: spec.channel_settings.get(name, plain) for name in sorted(spec.channels)}
    channel_cfg = {
        name: {"TrainingInputMode": s.input_mode, "S3DistributionType": s.distribution, "RecordWrapperType": "None"}
        for name, s in settings.items()
    }
    (cfg / "inputdataconfig.json").write_text(json.dumps(channel_cfg, indent=2))
    for name, src in spec.channels.items():
        sharded = settings[name].distribution == "ShardedByS3Key"
        _copy_channel(src, base / "input" / "data" / name, index, len(hosts), sharded)

    user_hps = dict(spec.hyperparameters)
    channel_dirs = {name: str(base / "input" / "data" / name) for name in sorted(spec.channels)}
    user_args = cmd_args(user_hps)
    # the toolkit: a distribution enabled puts the (only) instance group in distribution
    distributed = [group] if any(v is True for k, v in framework.items() if k.endswith("_enabled")) else []
    training_env: dict[str, Any] = {
        "additional_framework_parameters": framework,
        "channel_input_dirs": channel_dirs,
        "current_host": host,
        "current_instance_type": LOCAL_INSTANCE_TYPE,
        "hosts": hosts,
        "hyperparameters": user_hps,
        "input_config_dir": str(cfg),
        "input_data_config": channel_cfg,
        "input_dir": str(base / "input"),
        "job_name": spec.job_name,
        "log_level": 20,
        "model_dir": str(base / "model"),
        "module_dir": str(base / "code"),
        "module_name": Path(spec.entry_point).stem,
        "network_interface_name": "eth0",
        "num_cpus": os.cpu_count() or 1,
        "num_gpus": 0,
        "output_data_dir": str(base / "output" / "data"),
        "output_dir": str(base / "output"),
        "output_intermediate_dir": str(base / "output" / "intermediate"),
        "resource_config": resource,
        "user_entry_point": spec.entry_point,
    }
    env = {
        "hosts": hosts,
        "network_interface_name": "eth0",
        "hps": user_hps,
        "user_entry_point": spec.entry_point,
        "framework_params": framework,
        "resource_config": resource,
        "input_data_config": channel_cfg,
        "output_data_dir": training_env["output_data_dir"],
        "channels": sorted(spec.channels),
        "current_host": host,
        "current_instance_type": LOCAL_INSTANCE_TYPE,
        "current_instance_group": group,
        "current_instance_group_hosts": hosts,
        "instance_groups": [group],
        "distribution_instance_groups": distributed,
        "is_hetero": False,
        "module_name": training_env["module_name"],
        "log_level": 20,
        "input_dir": training_env["input_dir"],
        "input_config_dir": training_env["input_config_dir"],
        "output_dir": training_env["output_dir"],
        "num_cpus": training_env["num_cpus"],
        "num_gpus": 0,
        "num_neurons": 0,
        "model_dir": training_env["model_dir"],
        "module_dir": training_env["module_dir"],
        "training_env": training_env,
        "user_args": user_args,
        "output_intermediate_dir": training_env["output_intermediate_dir"],
    }
    for name, path in channel_dirs.items():
        env[f"channel_{name}"] = path
    for key, value in user_hps.items():
        env[f"hp_{key}"] = value
    out = {f"SM_{k.upper()}": _env_value(v) for k, v in env.items()}
    out["SAGEMAKER_BASE_DIR"] = str(base)
    out["SAGEMAKER_PROGRAM"] = spec.entry_point
    out["TRAINING_JOB_NAME"] = spec.job_name
    return out


def torchrun_env(host_index: int, hosts: int, master_port: int, run_id: str) -> dict[str, str]:
    """What torchrun gives its worker on host `host_index` of `hosts`, one process per host as the
    toolkit starts it on CPU instances (`torchrun --nnodes N --nproc_per_node 1 --master_addr
    algo-1 --master_port 7777 --node_rank i`). Locally every host is this machine: the master is
    127.0.0.1 and the port a free one (7777 may be taken, and runs may overlap)."""
    return {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(master_port),
        "RANK": str(host_index),
        "WORLD_SIZE": str(hosts),
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "GROUP_RANK": str(host_index),
        "GROUP_WORLD_SIZE": str(hosts),
        "ROLE_RANK": str(host_index),
        "ROLE_WORLD_SIZE": str(hosts),
        "ROLE_NAME": "default",
        "TORCHELASTIC_RESTART_COUNT": "0",
        "TORCHELASTIC_MAX_RESTARTS": "0",
        "TORCHELASTIC_RUN_ID": run_id,
    }


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MetricScanner:
    """Applies MetricDefinitions to log lines the way SageMaker does: every match of the
    regex's first group is a data point; the final value is the last point."""

    def __init__(self, regexes: dict[str, str]):
        self.regexes = {name: re.compile(rx) for name, rx in regexes.items()}
        self.series: dict[str, list[float]] = {}  # appended to while the log streams

    def feed(self, line: str) -> None:
        for name, rx in self.regexes.items():
            for m in rx.finditer(line):
                try:
                    value = float(m.group(1))
                except (TypeError, ValueError, IndexError):
                    continue
                self.series.setdefault(name, []).append(value)


def read_metrics_file(path: Path) -> tuple[dict[str, float], dict[str, Sequence[float]]]:
    """`{"name": 0.93, "loss": [0.9, 0.5, 0.31]}` → (finals, series). Raises ValueError."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{METRICS_FILE} must hold a JSON object of metric name → number or list of numbers")
    finals: dict[str, float] = {}
    series: dict[str, Sequence[float]] = {}
    for name, value in data.items():
        if isinstance(value, bool):
            raise ValueError(f"{METRICS_FILE}: metric '{name}' is a boolean, not a number")
        if isinstance(value, int | float):
            finals[name] = float(value)
        elif isinstance(value, list) and value and not any(v is True or v is False for v in value[:1]):
            try:
                points = array("d", value)  # converts and type-checks in C: large series stay fast
            except TypeError:
                raise ValueError(
                    f"{METRICS_FILE}: metric '{name}' must be a number or a non-empty list of numbers"
                ) from None
            series[name] = points
            finals[name] = points[-1]
        else:
            raise ValueError(f"{METRICS_FILE}: metric '{name}' must be a number or a non-empty list of numbers")
    return finals, series


class LocalTrainingBackend:
    """Runs the entry point in a subprocess with the SageMaker layout under `workdir`.

    A ``requirements.txt`` in the source directory is installed before the script runs, as the
    training toolkit does in the container, but into a cached virtualenv under `venv_cache`
    (default: :func:`default_venv_cache`) so the configured interpreter is never modified.
    """

    name = "local"

    def __init__(self, venv_cache: Path | None = None) -> None:
        self.venv_cache = venv_cache

    @classmethod
    def from_context(cls, ctx: Context) -> LocalTrainingBackend:
        return cls(venv_cache=ctx.home / "venvs")

    def run(self, spec: TrainingSpec, workdir: Path, log: Callable[[str], None]) -> TrainingResult:
        hosts = hosts_of(spec)
        # algo-1 where a one-host job has always had its layout; the others beside it
        bases = {h: workdir / "opt_ml" if h == HOST else workdir / "hosts" / h / "opt_ml" for h in hosts}
        env_sm = {h: layout(bases[h], spec, h) for h in hosts}
        for h in hosts:
            shutil.copytree(spec.code_dir, bases[h] / "code", dirs_exist_ok=True)
        base = bases[HOST]
        code = base / "code"
        entry = code / spec.entry_point
        log_path = workdir / "train.log"
        result = TrainingResult(exit_code=-1, model_dir=base / "model", output_dir=base / "output", log_path=log_path)
        if not entry.is_file():
            result.failure = f"entry point {spec.entry_point} not found in the source at this commit"
            return result
        extra = spec.job_env(spec.job_name) if spec.job_env else {}
        # the job's GitHub token (it may push the git store's refs) is mlops-ci's, not the script's
        inherited = {k: v for k, v in os.environ.items() if k not in FORGE_SECRETS}
        torchrun = spec.distribution is not None and spec.distribution.launcher == "torch_distributed"
        port = free_port() if torchrun else 0
        envs: dict[str, dict[str, str]] = {}
        for i, h in enumerate(hosts):
            # the tracker's environment goes to the leader only: its metrics and model are the run's
            mine = extra if h == HOST else {}
            env = {**inherited, **spec.environment, **mine, **env_sm[h], "PYTHONUNBUFFERED": "1"}
            if torchrun:
                env.update(torchrun_env(i, len(hosts), port, spec.job_name))
            # the code as SageMaker has it, then the user's; a tracker's own directory (extra: a
            # sitecustomize, which must come first to be the one Python runs; it runs any it shadows)
            paths = (mine.get("PYTHONPATH", ""), str(bases[h] / "code"),
                     {**os.environ, **spec.environment}.get("PYTHONPATH", ""))  # fmt: skip
            env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
            envs[h] = env
        python = spec.python
        scanner = MetricScanner(spec.metric_regexes)
        with open(log_path, "w", encoding="utf-8") as logf:
            if (spec.code_dir / REQUIREMENTS).is_file():

                def note(line: str) -> None:
                    logf.write(f"{PIP_LOG_PREFIX}{line}\n")
                    log(f"{PIP_LOG_PREFIX}{line}")

                # pip sees the job's configured environment (PIP_INDEX_URL & co. in
                # training.environment), as the toolkit's pip sees the container's
                pip_env = {**inherited, **spec.environment, "PYTHONUNBUFFERED": "1"}
                cache = self.venv_cache or default_venv_cache()
                try:
                    venv = ensure_venv(cache, spec.code_dir, spec.python, pip_env, spec.max_run, note)
                except RequirementsFailed as exc:
                    # what the toolkit does with an InstallRequirementsError: failure file, exit 1
                    (base / "output" / "failure").write_text(exc.message + "\n", encoding="utf-8")
                    result.exit_code = 1
                    result.failure = exc.message
                    return result
                python = str(venv / "bin" / "python")
                # console scripts the requirements bring are on PATH, as they are in the container
                for env in envs.values():
                    env["PATH"] = os.pathsep.join(p for p in (str(venv / "bin"), env.get("PATH", "")) if p)

            start = time.monotonic()
            args = cmd_args(spec.hyperparameters)
            if len(hosts) == 1:

                def on_line(line: str) -> None:
                    logf.write(line)
                    scanner.feed(line)
                    log(line.rstrip("\n"))

                returncode, timed_out = _stream(
                    [python, str(entry), *args], cwd=code, env=envs[HOST], timeout=spec.max_run, on_line=on_line
                )
                failed = HOST
            else:
                outcomes = _run_hosts(python, args, spec, bases, envs, logf, scanner, log)
                failed = next((h for h in hosts if outcomes[h][0] != 0 and not outcomes[h][2]), HOST)
                returncode, timed_out = outcomes[failed][0], any(o[1] for o in outcomes.values())
        result.duration = time.monotonic() - start
        result.exit_code = returncode
        result.series = dict(scanner.series)
        result.metrics = {k: v[-1] for k, v in scanner.series.items()}
        failure_file = bases[failed] / "output" / "failure"
        if returncode != 0:
            text = failure_file.read_text(encoding="utf-8", errors="replace").strip() if failure_file.is_file() else ""
            if timed_out:
                text = f"stopped after max_run={spec.max_run}s"
            result.failure = text or f"the script exited with code {returncode} (see {log_path})"
            if len(hosts) > 1 and not timed_out:
                result.failure = f"{failed}: {result.failure}"
            return result
        if len(hosts) > 1:
            _leader_hints(bases, log)
        mfile = base / "output" / "data" / METRICS_FILE
        if mfile.is_file():
            try:
                finals, series = read_metrics_file(mfile)
            except ValueError as exc:
                result.exit_code = 1
                result.failure = str(exc)
                return result
            result.metrics.update(finals)
            result.series.update(series)
        bad = [k for k, v in result.metrics.items() if not math.isfinite(v)]
        for k in bad:
            log(f"mlops-ci: warning: metric {k} is {result.metrics[k]} (not finite); gates on it will fail")
        return result


def _leader_hints(bases: dict[str, Path], log: Callable[[str], None]) -> None:
    """A model or metrics.json written on another host than the leader is not the run's: say so."""
    for what, rel in (("SM_MODEL_DIR", Path("model")), (METRICS_FILE, Path("output") / "data" / METRICS_FILE)):
        leader = bases[HOST] / rel
        if (leader.is_dir() and any(leader.iterdir())) or leader.is_file():
            continue
        others = [h for h, b in bases.items() if h != HOST and ((b / rel).is_file() or (
            (b / rel).is_dir() and any((b / rel).iterdir())))]  # fmt: skip
        if others:
            log(f"mlops-ci: warning: {', '.join(others)} wrote {what} but {HOST} did not: only the leader's "
                f"({HOST}) are the run's; write them on {HOST} (SM_CURRENT_HOST)")  # fmt: skip


def _run_hosts(
    python: str,
    args: list[str],
    spec: TrainingSpec,
    bases: dict[str, Path],
    envs: dict[str, dict[str, str]],
    logf: Any,
    scanner: MetricScanner,
    log: Callable[[str], None],
) -> dict[str, tuple[int, bool, bool]]:
    """Run the script on every host at once, as SageMaker starts it on every instance; each
    line is logged as `[algo-k] line`, and only the leader's feed the metrics (its model is the
    run's). When one host fails the others are stopped, as SageMaker stops a job whose
    instance failed. Returns host → (exit code, timed out, stopped because another failed)."""
    lock = threading.Lock()
    procs: dict[str, subprocess.Popen[str]] = {}
    stopped: set[str] = set()
    outcomes: dict[str, tuple[int, bool, bool]] = {}
    errors: list[Exception] = []
    halted: list[str] = []  # set once a host failed: a host starting after that is stopped at once

    def stop_others(me: str) -> None:
        with lock:
            halted.append(me)
            for h, proc in procs.items():
                if h != me and h not in outcomes:
                    stopped.add(h)
                    _kill_group(proc)

    def host(h: str) -> None:
        def on_line(line: str) -> None:
            with lock:
                logf.write(f"[{h}] {line}")
                if h == HOST:
                    scanner.feed(line)
                log(f"[{h}] {line.rstrip(chr(10))}")

        def started(proc: subprocess.Popen[str]) -> None:
            with lock:
                procs[h] = proc
                if halted:
                    stopped.add(h)
                    _kill_group(proc)

        code = bases[h] / "code"
        try:
            rc, timed_out = _stream([python, str(code / spec.entry_point), *args], cwd=code, env=envs[h],
                                    timeout=spec.max_run, on_line=on_line, started=started)  # fmt: skip
        except Exception as exc:  # noqa: BLE001  (raised again in the caller's thread, below)
            errors.append(exc)
            rc, timed_out = -1, False
        with lock:
            outcomes[h] = (rc, timed_out, h in stopped)
        if rc != 0:
            stop_others(h)

    threads = [threading.Thread(target=host, args=(h,), name=f"mlops-ci-{h}", daemon=True) for h in bases]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException:  # Ctrl-C: stop every host, then let it through
        stop_others("")
        for t in threads:
            t.join(5)
        raise
    if errors:
        raise errors[0]
    return outcomes


def _stream(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    on_line: Callable[[str], None],
    started: Callable[[subprocess.Popen[str]], None] | None = None,
) -> tuple[int, bool]:
    """Run `argv` in its own process group, feeding each output line (stdout and stderr merged)
    to `on_line`; kill the whole group after `timeout` seconds. Returns (exit code, timed out).

    The job runs under `_watchdog` (the group's leader), which holds a pipe from this process:
    if this process dies, even by SIGKILL, the watchdog stops the group, and it enforces the
    deadline itself (a little after ours) should this process be alive but stuck."""
    from . import _watchdog

    backstop = max(timeout, 0.0) + 2.0  # ours fires first; this one only if we are stuck
    proc = subprocess.Popen(
        [sys.executable, "-I", str(Path(_watchdog.__file__).resolve()), f"{backstop:.3f}", "--", *argv],
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.PIPE,  # the lifeline: never written, closed only by our exit
        text=True,
        encoding="utf-8",
        errors="replace",
        start_new_session=True,
    )
    if started is not None:
        started(proc)
    timed_out = threading.Event()

    def on_timeout() -> None:
        timed_out.set()
        _kill_group(proc)

    timer = threading.Timer(max(timeout, 0.0), on_timeout)
    timer.daemon = True
    timer.start()
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            on_line(line)
        proc.wait()
    except BaseException:  # Ctrl-C or a failing log sink: never leave the job running
        _kill_group(proc)
        proc.wait()
        raise
    finally:
        timer.cancel()
        proc.stdout.close()
        if proc.stdin is not None:
            proc.stdin.close()
    return proc.returncode, timed_out.is_set()


# -- requirements.txt -----------------------------------------------------------------------
# The toolkit runs `python -m pip install -r requirements.txt` (cwd = the code dir) before a
# script entry point. Locally the configured interpreter must stay untouched, so the install goes
# into a virtualenv made from it, cached by what determines its content.

REQUIREMENTS = "requirements.txt"
PIP_LOG_PREFIX = "[requirements.txt] "  # marks install output in the job's log
_TAIL_LINES = 15

# What identifies the base interpreter, and the site-packages of a venv it lives in: a venv made
# from a venv's python is based on the *underlying* installation, so --system-site-packages alone
# would hide the packages of the configured venv.
_PROBE = (
    "import json, site, sys; venv = sys.prefix != sys.base_prefix; "
    "print(json.dumps({'version': sys.version, 'prefix': sys.prefix, "
    "'site': site.getsitepackages([sys.prefix]) if venv else []}))"
)


class RequirementsFailed(Exception):
    """requirements.txt could not be installed; `message` is the run's failure text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class _Interpreter:
    version: str
    prefix: str
    site: tuple[str, ...]  # site-packages of the venv the interpreter runs in, else empty


def default_venv_cache() -> Path:
    """`$XDG_CACHE_HOME/mlops-ci/venvs`, else `~/.cache/mlops-ci/venvs`."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # the XDG spec says a relative value is invalid and must be ignored
    root = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return root / "mlops-ci" / "venvs"


def _probe(python: str) -> _Interpreter:
    try:
        out = subprocess.run(
            [python, "-c", _PROBE], check=False, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RequirementsFailed(f"{REQUIREMENTS}: cannot run the training interpreter {python!r}: {exc}") from None
    try:
        if out.returncode != 0:
            last = out.stderr.strip().splitlines()[-1:]
            raise ValueError(last[0] if last else f"exit code {out.returncode}")
        facts = json.loads(out.stdout.strip().splitlines()[-1])
        return _Interpreter(str(facts["version"]), str(facts["prefix"]), tuple(str(d) for d in facts["site"]))
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise RequirementsFailed(f"{REQUIREMENTS}: cannot query the training interpreter {python!r}: {exc}") from None


def _venv_key(requirements: bytes, interpreter: _Interpreter) -> str:
    """sha256 over the requirements file and the base interpreter's version and prefix."""
    h = hashlib.sha256()
    for part in (requirements, interpreter.version.encode(), interpreter.prefix.encode()):
        h.update(len(part).to_bytes(8, "big"))  # length-prefixed: no two inputs hash alike
        h.update(part)
    return h.hexdigest()


def requirements_digest(code_dir: Path, python: str) -> str | None:
    """The venv cache key of `code_dir`'s requirements.txt under `python` (None without one); the
    venv is `<cache>/<first 16 hex digits>`. For plans: it runs `python` once, installs nothing."""
    req = code_dir / REQUIREMENTS
    if not req.is_file():
        return None
    try:
        return _venv_key(req.read_bytes(), _probe(python))
    except RequirementsFailed as exc:
        raise ConfigError(f"training.python: {exc.message}") from None


def ensure_venv(
    cache: Path,
    code_dir: Path,
    python: str,
    env: Mapping[str, str],
    timeout: float,
    note: Callable[[str], None],
) -> Path:
    """The venv for `code_dir`'s requirements.txt on top of `python`, built on first use.

    `<cache>/<key16>` only ever appears complete: the venv is built in `<key16>.venv-*` and a
    symlink to it is renamed into place on success. The venv directory is not itself renamed
    because a venv is not relocatable (pip writes absolute paths into the console scripts it
    installs). Builds of one key are serialised by an flock on `<key16>.lock`."""
    requirements = (code_dir / REQUIREMENTS).read_bytes()
    interpreter = _probe(python)
    key = _venv_key(requirements, interpreter)[:16]
    venv = cache / key
    if _complete(venv):
        note(f"reusing {venv} (same requirements.txt and interpreter)")
        return venv
    cache.mkdir(parents=True, exist_ok=True)
    with _exclusive(cache / f"{key}.lock"):
        if _complete(venv):
            note(f"reusing {venv}, built by a concurrent run")
            return venv
        _clear(cache, key)  # leftovers of a build that was killed
        build = Path(tempfile.mkdtemp(prefix=f"{key}.venv-", dir=cache))
        link = cache / f"{key}.link"
        try:
            _build(build, code_dir, python, interpreter, env, timeout, note)
            link.symlink_to(build.name)  # relative: the target sits next to it
            os.replace(link, venv)
        except BaseException:
            link.unlink(missing_ok=True)
            shutil.rmtree(build, ignore_errors=True)
            raise
    note(f"installed into {venv}")
    return venv


def _complete(venv: Path) -> bool:
    return (venv / "pyvenv.cfg").is_file() and (venv / "bin" / "python").exists()


def _clear(cache: Path, key: str) -> None:
    for stale in (cache / key, cache / f"{key}.link"):
        if stale.is_symlink() or stale.is_file():
            stale.unlink()
        elif stale.is_dir():
            shutil.rmtree(stale)
    for build in cache.glob(f"{key}.venv-*"):  # only reached when no complete venv links to one
        shutil.rmtree(build, ignore_errors=True)


def _build(
    build: Path,
    code_dir: Path,
    python: str,
    interpreter: _Interpreter,
    env: Mapping[str, str],
    timeout: float,
    note: Callable[[str], None],
) -> None:
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    deadline = time.monotonic() + timeout  # one max_run bound for creation and install together

    def on_line(line: str) -> None:
        line = line.rstrip("\n")
        tail.append(line)
        note(line)

    def step(argv: list[str], what: str) -> None:
        note("$ " + " ".join(argv))
        rc, timed_out = _stream(argv, cwd=code_dir, env=env, timeout=deadline - time.monotonic(), on_line=on_line)
        if timed_out:
            raise RequirementsFailed(_install_failure(f"{what} stopped after max_run={timeout:g}s", tail))
        if rc != 0:
            raise RequirementsFailed(_install_failure(f"{what} failed with exit code {rc}", tail))

    note(f"creating a virtualenv on top of {python}")
    # --system-site-packages: the base's packages stay importable, as a container's preinstalled
    # framework packages do; the requirements go on top
    step([python, "-m", "venv", "--system-site-packages", str(build)], "creating the virtualenv")
    if interpreter.site:
        line = "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in interpreter.site)
        for site_packages in build.glob("lib/python*/site-packages"):
            (site_packages / "_mlops_ci_base_venv.pth").write_text(line + "\n", encoding="utf-8")
    pip = [str(build / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-r", REQUIREMENTS]
    step(pip, f"pip install -r {REQUIREMENTS}")


def _install_failure(what: str, tail: deque[str]) -> str:
    # the first line is what `mlops-ci train` prints: give it pip's own verdict when there is one
    errors = [ln for ln in tail if ln.startswith("ERROR:")]
    reason = errors[-1] if errors else next((ln for ln in reversed(tail) if ln.strip()), "")
    head = f"{REQUIREMENTS}: {what}" + (f": {reason.strip()}" if reason else "")
    return head + "\nlast lines of its output:\n" + "\n".join(f"  {ln}" for ln in tail)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An exclusive flock on `path`, removed on release so no lock files pile up. A waiter
    that wakes on a file its holder removed locks the new file instead (checked by inode)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = path.stat().st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
        except BaseException:
            os.close(fd)
            raise
        if current:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still holding it: see the inode check above
        os.close(fd)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
