"""Local training that honours the SageMaker script-mode contract.

The job gets the same layout and environment a SageMaker training container gives it:
``$SAGEMAKER_BASE_DIR`` with ``input/config/{hyperparameters,resourceconfig,inputdataconfig}.json``,
``input/data/<channel>/``, ``model/``, ``output/data/``, ``output/failure``, the ``SM_*``
variables, and hyperparameters as ``--name value`` arguments, so a script (or the
``sagemaker-training`` toolkit) cannot tell the difference.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import TrainingResult, TrainingSpec

HOST = "algo-1"
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


def layout(base: Path, spec: TrainingSpec) -> dict[str, str]:
    """Create the /opt/ml layout under `base`; return the SM_* environment for the job."""
    cfg = base / "input" / "config"
    for d in (cfg, base / "model", base / "output" / "data", base / "output" / "intermediate", base / "code"):
        d.mkdir(parents=True, exist_ok=True)
    sm_hps = {
        **spec.hyperparameters,
        "sagemaker_program": spec.entry_point,
        "sagemaker_submit_directory": str(base / "code"),
        "sagemaker_job_name": spec.job_name,
        "sagemaker_container_log_level": 20,
        "sagemaker_region": "local",
    }
    (cfg / "hyperparameters.json").write_text(json.dumps(encode_hyperparameters(sm_hps), indent=2))
    resource = {
        "current_host": HOST,
        "current_instance_type": "local",
        "current_group_name": "homogeneousCluster",
        "hosts": [HOST],
        "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "local", "hosts": [HOST]}],
        "network_interface_name": "eth0",
    }
    (cfg / "resourceconfig.json").write_text(json.dumps(resource, indent=2))
    channel_cfg = {
        name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for name in sorted(spec.channels)
    }
    (cfg / "inputdataconfig.json").write_text(json.dumps(channel_cfg, indent=2))
    for name, src in spec.channels.items():
        dest = base / "input" / "data" / name
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            dest.mkdir(parents=True)
            shutil.copy2(src, dest / src.name)

    user_hps = dict(spec.hyperparameters)
    channel_dirs = {name: str(base / "input" / "data" / name) for name in sorted(spec.channels)}
    user_args = cmd_args(user_hps)
    training_env: dict[str, Any] = {
        "additional_framework_parameters": {},
        "channel_input_dirs": channel_dirs,
        "current_host": HOST,
        "current_instance_type": "local",
        "hosts": [HOST],
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
        "hosts": [HOST],
        "network_interface_name": "eth0",
        "hps": user_hps,
        "user_entry_point": spec.entry_point,
        "framework_params": {},
        "resource_config": resource,
        "input_data_config": channel_cfg,
        "output_data_dir": training_env["output_data_dir"],
        "channels": sorted(spec.channels),
        "current_host": HOST,
        "current_instance_type": "local",
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
    """Runs the entry point in a subprocess with the SageMaker layout under `workdir`."""

    name = "local"

    def run(self, spec: TrainingSpec, workdir: Path, log: Callable[[str], None]) -> TrainingResult:
        base = workdir / "opt_ml"
        env_sm = layout(base, spec)
        code = base / "code"
        shutil.copytree(spec.code_dir, code, dirs_exist_ok=True)
        entry = code / spec.entry_point
        log_path = workdir / "train.log"
        result = TrainingResult(exit_code=-1, model_dir=base / "model", output_dir=base / "output", log_path=log_path)
        if not entry.is_file():
            result.failure = f"entry point {spec.entry_point} not found in the source at this commit"
            return result
        extra = spec.job_env(spec.job_name) if spec.job_env else {}
        env = {**os.environ, **spec.environment, **extra, **env_sm, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), env.get("PYTHONPATH", "")) if p)
        argv = [spec.python, str(entry), *cmd_args(spec.hyperparameters)]
        scanner = MetricScanner(spec.metric_regexes)
        start = time.monotonic()
        with open(log_path, "w", encoding="utf-8") as logf:
            proc = subprocess.Popen(
                argv,
                cwd=code,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                encoding="utf-8",
                errors="replace",
                start_new_session=True,
            )
            timed_out = threading.Event()

            def on_timeout() -> None:
                timed_out.set()
                _kill_group(proc)

            timer = threading.Timer(spec.max_run, on_timeout)
            timer.daemon = True
            timer.start()
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    logf.write(line)
                    scanner.feed(line)
                    log(line.rstrip("\n"))
                proc.wait()
            except BaseException:  # Ctrl-C or a failing log sink: never leave the job running
                _kill_group(proc)
                proc.wait()
                raise
            finally:
                timer.cancel()
                proc.stdout.close()
        result.duration = time.monotonic() - start
        result.exit_code = proc.returncode
        result.series = dict(scanner.series)
        result.metrics = {k: v[-1] for k, v in scanner.series.items()}
        failure_file = base / "output" / "failure"
        if proc.returncode != 0:
            text = failure_file.read_text(encoding="utf-8", errors="replace").strip() if failure_file.is_file() else ""
            if timed_out.is_set():
                text = f"stopped after max_run={spec.max_run}s"
            result.failure = text or f"the script exited with code {proc.returncode} (see {log_path})"
            return result
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


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
