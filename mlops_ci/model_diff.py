"""The review's model diff: what the head's model predicts differently from the baseline's on
the evaluation channel, and what it costs to serve (size, load time, latency, memory).

Both models run in confined worker processes (serving/diff_worker.py, serving/sandbox.py) that
load them through the serving contract, so any framework works. Their latencies are measured
side by side in one run, in alternating rounds, so a busy machine slows both alike. The result
is a plain JSON-able dict (schema below, validated again by artifact.py when it comes from a
fork's report) and gate quantities: `flip_rate` and the operational figures of `OPERATIONAL`
for both sides, per-slice `flip_rate@COL=VALUE` and `accuracy@COL=VALUE` / `mae@COL=VALUE`.

A model that loops, allocates without bound, writes outside its directory or crashes gives a
diff with status "failed" and a one-line reason; the review still posts, and a gate rule on a
diff quantity fails closed on the missing value.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import MetricGoal, ReviewConfig
from .diff_metrics import OPERATIONAL, direction

SCHEMA = "mlops-ci/model-diff/v1"
MAX_CLASSES = 20  # the confusion table's size; rarer classes are counted as "(other)"
MAX_SLICES = 20  # rows of the slice table
MAX_SLICE_METRICS = 1000  # slice values that get gate quantities (the largest ones)
MAX_FEATURES_SHOWN = 8
MAX_CELL = 40
MAX_REPLY = 512 << 20
_HERE = Path(__file__).resolve().parent.parent


def goal_of(name: str) -> MetricGoal | None:
    """The built-in direction of a model-diff quantity (for max_regression rules), or None."""
    goal = direction(name)
    return MetricGoal(name=name, goal=goal) if goal else None


class ModelFailed(Exception):
    """One of the two models could not be measured; the message is one line naming the fix."""


# -- the evaluation table ---------------------------------------------------------------------
@dataclass
class EvalTable:
    columns: list[str]  # the feature columns, in the order sent to the model
    rows: list[list[object]]  # feature values as sent (numbers where a cell is one, else text)
    raw: list[list[str]]  # the same cells as read, for display
    labels: list[str] | None
    ids: list[str]
    slices: list[str] | None
    total: int  # rows in the channel (rows may hold the first max_rows of them)
    files: int


def _number(cell: str) -> Any:
    try:
        v = float(cell)
    except ValueError:
        return cell
    return v if math.isfinite(v) else cell


def is_header(row: list[str]) -> bool:
    """A CSV's first row is a header when no cell is a number (a headerless row with a text label
    is data) and some cell is not blank: how the model diff, the baseline statistics and the Model
    Monitor baseline read a channel."""
    return all(isinstance(_number(c), str) for c in row) and any(c.strip() for c in row)


def _printable(value: str) -> str:
    """A row id or slice value from the data, made one short printable line: it names a row in
    the comment and a gate quantity (flip_rate@COLUMN=VALUE) in logs."""
    text = "".join(ch if ch.isprintable() else "?" for ch in value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _column(spec: str | None, header: list[str] | None, width: int, key: str) -> int | None:
    if spec is None:
        return None
    if header is not None and spec in header:
        return header.index(spec)
    if spec.isdigit() and int(spec) < width:
        return int(spec)
    named = (
        f"; the header has {', '.join(header[:12])}" if header else " (the files have no header: use a 0-based index)"
    )
    raise ModelFailed(f"review.{key} '{spec}' is not a column of the evaluation data{named}; fix review.{key}")


def read_eval(directory: Path, cfg: ReviewConfig) -> EvalTable:
    try:
        return _read_eval(directory, cfg)
    except csv.Error as exc:
        raise ModelFailed(f"the evaluation data is not CSV the review can read ({exc}); fix the file") from None
    except UnicodeError as exc:
        raise ModelFailed(f"the evaluation data cannot be read: {exc}") from None


def _read_eval(directory: Path, cfg: ReviewConfig) -> EvalTable:
    files = sorted(p for p in directory.rglob("*.csv") if p.is_file()) if directory.is_dir() else [directory]
    if not files or not files[0].is_file():
        raise ModelFailed(f"the evaluation channel '{cfg.eval_channel}' has no .csv file; set review.eval_channel")
    header: list[str] | None = None
    data: list[list[str]] = []
    total = 0
    for f in files:
        with f.open(newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.reader(fh)
            first = True
            for row in reader:
                if not row:
                    continue
                if first:
                    first = False
                    if is_header(row):
                        if header is None:
                            header = row
                        elif row != header:
                            raise ModelFailed(
                                f"{f.name}'s header differs from the first file's; align the evaluation files"
                            )
                        continue
                total += 1
                if len(data) < cfg.max_rows:
                    data.append(row)
    if not data:
        raise ModelFailed(f"the evaluation channel '{cfg.eval_channel}' has no rows")
    width = len(header) if header else len(data[0])
    for i, row in enumerate(data):
        if len(row) != width:
            raise ModelFailed(f"row {i + 1} of the evaluation data has {len(row)} cells, not {width}; fix the file")
    label_spec = (
        cfg.label_column if cfg.label_column is not None else ("label" if header and "label" in header else None)
    )
    label = _column(label_spec, header, width, "label_column")
    ident = _column(cfg.id_column, header, width, "id_column")
    sliced = _column(cfg.slice_column, header, width, "slice_column")
    dropped = {label, ident} | {_column(c, header, width, "exclude_columns") for c in cfg.exclude_columns}
    keep = [i for i in range(width) if i not in dropped]
    names = [header[i] if header else str(i) for i in keep]
    raw = [[row[i] for i in keep] for row in data]
    rows: list[list[Any]] = [[_number(c) for c in r] for r in raw] if cfg.content_type == "application/json" else raw
    return EvalTable(
        columns=names,
        rows=rows,
        raw=raw,
        labels=[row[label] for row in data] if label is not None else None,
        ids=[_printable(row[ident]) for row in data] if ident is not None else [str(i + 1) for i in range(len(data))],
        slices=[_printable(row[sliced]) for row in data] if sliced is not None else None,
        total=total,
        files=len(files),
    )


# -- the worker processes ---------------------------------------------------------------------
@dataclass
class Side:
    name: str  # "baseline" or "head"
    artifact: Path
    sha256: str
    entry: str | None
    python: str
    environment: dict[str, str] = field(default_factory=dict)


# what each command's answer must hold (besides "ok")
_ANSWERS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "load": {"seconds": (int, float), "confinement": dict},
    "predict": {"predictions": list},
    "latency": {"ms": list},
    "quit": {"peak_mb": (int, float)},
}


class _Worker:
    def __init__(self, side: Side, home: Path, cfg: ReviewConfig, token: str):
        self.side, self.home, self.cfg = side, home, cfg
        home.mkdir(parents=True)
        self.log = home / "model.log"
        cmd_r, self.cmd_w = os.pipe()
        self.rep_r, rep_w = os.pipe()
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "SYSTEMROOT")}
        env.update(side.environment)  # serving.environment: what the endpoint's container gets
        env.update(
            {
                "HOME": str(home),
                "TMPDIR": str(home),
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONNOUSERSITE": "1",
                "PYTHONPATH": str(_HERE),
                "OMP_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
                _MARK: token,
            }
        )
        argv = [
            side.python,
            "-m",
            "mlops_ci.serving.diff_worker",
            "--dir",
            str(home),
            "--artifact",
            str(side.artifact),
            "--sha256",
            side.sha256,
            "--cmd-fd",
            str(cmd_r),
            "--reply-fd",
            str(rep_w),
            "--memory-mb",
            str(cfg.memory_mb),
            "--cpu-seconds",
            str(int(cfg.timeout) + 5),
            "--content-type",
            cfg.content_type,
        ]
        if side.entry:
            argv += ["--entry", side.entry]
        with self.log.open("wb") as log:
            try:
                self.proc = subprocess.Popen(
                    argv,
                    cwd=home,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(cmd_r, rep_w),
                    start_new_session=True,
                )
            except OSError as exc:
                raise ModelFailed(
                    f"cannot start {side.python} for the {side.name} model: {exc.strerror}; check serving.python"
                ) from None
            finally:
                os.close(cmd_r)
                os.close(rep_w)
        self.used = 0.0  # seconds spent waiting for this model's answers
        self.buf = bytearray()

    def ask(self, phase: str, **cmd: Any) -> dict[str, Any]:
        """Send one command; its answer, checked. `phase` names it in a failure ("load", "predict
        the channel", ...). The time until the answer counts against this model's review.timeout."""
        start = time.monotonic()
        try:
            os.write(self.cmd_w, (json.dumps(cmd) + "\n").encode())
        except BrokenPipeError:
            raise self._died() from None
        searched = 0
        while (end := self.buf.find(b"\n", searched)) < 0:
            searched = len(self.buf)
            left = self.cfg.timeout - self.used - (time.monotonic() - start)
            if left <= 0:
                self.kill()
                raise ModelFailed(
                    f"the {self.side.name} model did not finish within {self.cfg.timeout:g} s (review.timeout) and "
                    f"was stopped while it was asked to {phase}; make it faster, or raise review.timeout"
                )
            ready, _, _ = select.select([self.rep_r], [], [], min(left, 0.5))
            if not ready:
                if self.proc.poll() is not None:  # dead, though a child of it may hold the pipe open
                    raise self._died()
                continue
            chunk = os.read(self.rep_r, 1 << 20)
            if not chunk:
                raise self._died()
            self.buf += chunk  # a bytearray: appending does not copy what came before
            if len(self.buf) > MAX_REPLY:
                self.kill()
                raise ModelFailed(
                    f"the {self.side.name} model's predictions exceed {MAX_REPLY >> 20} MiB; lower review.max_rows"
                )
        self.used += time.monotonic() - start
        line = bytes(self.buf[:end])
        del self.buf[: end + 1]
        try:
            reply = json.loads(line)
        except (ValueError, RecursionError):
            reply = None
        if not isinstance(reply, dict):
            raise self._forged(phase)
        if not reply.get("ok"):
            raise ModelFailed(
                f"the {self.side.name} model failed to {phase}: {_one_line(reply.get('error'))}"
                f"{self._hint(str(reply.get('error')))}"
            )
        want = _ANSWERS[cmd["op"]]
        if any(not isinstance(reply.get(k), t) or isinstance(reply.get(k), bool) for k, t in want.items()):
            raise self._forged(phase)
        figures = [reply[k] for k in want if want[k] == (int, float)] + (reply["ms"] if cmd["op"] == "latency" else [])
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1e12 for v in figures):
            raise self._forged(phase)  # NaN fails 0 <= v
        if cmd["op"] == "latency" and len(reply["ms"]) != cmd["n"]:
            raise self._forged(phase)
        if cmd["op"] == "load":
            c = reply["confinement"]
            if (
                set(c) != {"files", "network", "limits", "note"}
                or not all(isinstance(c[k], bool) for k in ("files", "network", "limits"))
                or not isinstance(c["note"], str)
            ):
                raise self._forged(phase)
            reply["confinement"] = {**c, "note": _one_line(c["note"])}
        return reply

    def _forged(self, phase: str) -> ModelFailed:
        self.kill()
        return ModelFailed(
            f"the {self.side.name} model's process answered something that is not the diff worker's when asked to "
            f"{phase} (its code wrote to the worker's reply pipe); its figures cannot be trusted"
        )

    def _hint(self, error: str) -> str:
        if error.startswith("MemoryError"):
            return f" (limit {self.cfg.memory_mb} MiB: review.memory_mb)"
        return ""

    def _died(self) -> ModelFailed:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        try:
            how = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
        except ValueError:
            how = f"signal {-code}"
        if code == -signal.SIGXCPU:
            how += f": over its CPU limit ({int(self.cfg.timeout) + 5} s, review.timeout)"
        elif code == -signal.SIGKILL:
            how += ": killed, e.g. by the kernel when the machine ran out of memory"
        tail = _tail(self.log)
        return ModelFailed(
            f"the {self.side.name} model's process died ({how})" + (f"; its last output: {tail}" if tail else "")
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        for fd in (self.cmd_w, self.rep_r):
            with contextlib.suppress(OSError):
                os.close(fd)


def _one_line(text: object) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= 300 else s[:297] + "…"


def _tail(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return _one_line(lines[-1]) if lines else ""


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q))


def measure(base: Side, head: Side, table: EvalTable, cfg: ReviewConfig, scratch: Path) -> dict[str, Any]:
    """Run both models; their predictions and operational figures. Raises ModelFailed."""
    rows_file = scratch / "rows.json"
    rows_file.write_text(json.dumps(table.rows))
    workers: list[_Worker] = []
    before = _descendants()
    token = uuid.uuid4().hex
    _subreaper(True)  # what the models start stays below this process, however it detaches
    try:
        for side in (base, head):
            workers.append(_Worker(side, scratch / side.name, cfg, token))
        out: dict[str, Any] = {}
        for w in workers:
            loaded = w.ask("load", op="load")
            out[w.side.name] = {
                "load_s": loaded["seconds"],
                "confinement": loaded["confinement"],
                "artifact_mb": w.side.artifact.stat().st_size / 1e6,
            }
        for w in workers:
            got = w.ask("predict the channel", op="predict", rows=str(rows_file), batch=cfg.batch_size)
            if len(got["predictions"]) != len(table.rows):
                raise w._forged("predict the channel")
            out[w.side.name]["predictions"] = got["predictions"]
        singles: dict[str, list[float]] = {w.side.name: [] for w in workers}
        batches: dict[str, list[float]] = {w.side.name: [] for w in workers}
        n_single, n_batch = cfg.latency_requests, max(5, cfg.latency_requests // 10)
        rounds = 10
        single = "answer single-row requests" + (
            " (text/csv squeezes one row to 1-D, as SageMaker's container does; review.content_type: "
            "application/json sends [[...]])"
            if cfg.content_type == "text/csv"
            else ""
        )
        for w in workers:  # warm-up, not counted
            w.ask(single, op="latency", rows=str(rows_file), batch=1, n=3, start=0)
        for r in range(rounds):
            for w in workers if r % 2 == 0 else reversed(workers):  # alternate who goes first
                name = w.side.name
                singles[name] += w.ask(
                    single, op="latency", rows=str(rows_file), batch=1, n=max(1, n_single // rounds), start=r * 7919
                )["ms"]
                batches[name] += w.ask(
                    "answer batch requests",
                    op="latency",
                    rows=str(rows_file),
                    batch=min(cfg.batch_size, len(table.rows)),
                    n=max(1, n_batch // rounds),
                    start=r * 104729,
                )["ms"]
        for w in workers:
            name = w.side.name
            peak = w.ask("finish", op="quit")["peak_mb"]
            out[name].update(
                {
                    "latency_p50_ms": _percentile(singles[name], 50),
                    "latency_p99_ms": _percentile(singles[name], 99),
                    "batch_latency_p50_ms": _percentile(batches[name], 50),
                    "batch_latency_p99_ms": _percentile(batches[name], 99),
                    "peak_memory_mb": peak,
                    "requests": len(singles[name]),
                    "batches": len(batches[name]),
                }
            )
        return out
    finally:
        left = _kill_strays(before, token, {w.proc.pid for w in workers})
        for w in workers:
            w.close()
        _subreaper(False)
        if left:
            print(f"mlops-ci: warning: {left} process(es) the models started could not be stopped", file=sys.stderr)


def predict(side: Side, table: EvalTable, cfg: ReviewConfig, scratch: Path) -> list[Any]:
    """One model's predictions on the table, from its confined worker (the monitoring baseline).
    Raises ModelFailed."""
    rows_file = scratch / "rows.json"
    rows_file.write_text(json.dumps(table.rows))
    before = _descendants()
    token = uuid.uuid4().hex
    _subreaper(True)
    worker: _Worker | None = None
    try:
        worker = _Worker(side, scratch / side.name, cfg, token)
        worker.ask("load", op="load")
        got = worker.ask("predict the channel", op="predict", rows=str(rows_file), batch=cfg.batch_size)
        if len(got["predictions"]) != len(table.rows):
            raise worker._forged("predict the channel")
        worker.ask("finish", op="quit")
        predictions: list[Any] = got["predictions"]
        return predictions
    finally:
        _kill_strays(before, token, {worker.proc.pid} if worker else set())
        if worker is not None:
            worker.close()
        _subreaper(False)


def _libc() -> Any:
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


_MARK = "MLOPS_CI_DIFF_RUN"  # in every worker's environment, so its detached descendants are known
_reaper_lock = threading.Lock()
_reapers = [0]  # diffs running in this process


def _subreaper(on: bool) -> None:
    """PR_SET_CHILD_SUBREAPER (Linux): orphans of the workers' children become ours, not init's.
    Counted, so that two diffs in one process (threads) do not switch it off under each other."""
    if not sys.platform.startswith("linux"):
        return
    with _reaper_lock:
        _reapers[0] += 1 if on else -1
        if (on and _reapers[0] == 1) or (not on and _reapers[0] == 0):
            _libc().prctl(36, 1 if on else 0, 0, 0, 0)


def _tree() -> dict[int, int]:
    """pid → parent pid of every process (Linux /proc; elsewhere none are known)."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            parent[int(stat.parent.name)] = int(text.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return parent


def _descendants(parent: dict[int, int] | None = None) -> set[int]:
    """The processes below this one."""
    parent = _tree() if parent is None else parent
    found: set[int] = set()
    frontier = {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return found


def _strays(before: set[int], token: str, roots: set[int]) -> set[int]:
    """The processes below this one that the workers started: below a worker, or reparented to
    this process (the subreaper) and carrying the workers' token. Another thread's processes
    are neither."""
    parent, me, out = _tree(), os.getpid(), set()
    for pid in _descendants(parent) - before:
        p = pid
        while p in parent and p != me and p not in roots:
            p = parent[p]
        if p in roots:
            out.add(pid)
            continue
        with contextlib.suppress(OSError):
            if f"{_MARK}={token}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                out.add(pid)
    return out


def _kill_strays(before: set[int], token: str, roots: set[int]) -> int:
    """Stop everything the workers started (SIGSTOP until no new process appears: a fork bomb
    cannot outrun it), then kill it and reap what became ours. The workers themselves are left
    to their Popen. How many could not be killed within 30 s."""
    deadline = time.monotonic() + 30
    frozen: set[int] = set()
    while time.monotonic() < deadline:
        new = _strays(before, token, roots) - frozen
        if not new:
            break
        for pid in new:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGSTOP)
        frozen |= new
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    left = frozen - roots
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not ours to reap: gone once its parent (a stray too) is
                done = pid if not Path(f"/proc/{pid}").exists() else 0
            if done:
                left.discard(pid)
        left &= _strays(before, token, roots) | {p for p in left if Path(f"/proc/{p}").exists()}
        if left:
            time.sleep(0.02)
    return len(left)


# -- comparing predictions (pure) -------------------------------------------------------------
def _label(v: object) -> str:
    """One class label as text, so 1, 1.0, "1" and "1.000000" are the same class."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)) or (isinstance(v, str) and not isinstance(_number(v), str)):
        f = float(v)
        if math.isfinite(f) and f == int(f):
            return str(int(f))
        return repr(f)
    return str(v)


def _labels(values: list[Any]) -> list[str]:
    """_label of each value (the argmax of a list of scores), once per distinct value."""
    seen: dict[tuple[type, Any], str] = {}
    out = []
    for v in values:
        if isinstance(v, list):
            out.append(_argmax(v))
            continue
        key = (type(v), v)
        got = seen.get(key)
        if got is None:
            got = seen[key] = _label(v)
        out.append(got)
    return out


def _argmax(v: list[Any]) -> str:
    return str(max(range(len(v)), key=lambda i: float(v[i])))


def normalize(predictions: list[object], side: str) -> list[object]:
    """Each prediction as a number, a text, or a list of at least two finite-able numbers (one
    score per class). A one-element list is its element (a regressor's (n, 1) output, Keras'
    Dense(1)); anything else is refused with the row it was found in."""
    out: list[object] = []
    for i, v in enumerate(predictions):
        while isinstance(v, list) and len(v) == 1:
            v = v[0]
        if isinstance(v, (bool, str)):
            out.append(v)
        elif isinstance(v, (int, float)):
            try:
                out.append(float(v) if isinstance(v, int) and abs(v) > 2**53 else v)
            except OverflowError:
                raise ModelFailed(
                    f"the {side} model's prediction {i + 1} is too large for a number; fix its output_fn"
                ) from None
        elif isinstance(v, list) and v and all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in v):
            try:
                out.append([float(s) for s in v])
            except OverflowError:
                raise ModelFailed(f"the {side} model's prediction {i + 1} has a score too large for a number") from None
        else:
            shown = json.dumps(v, default=str)[:40]
            raise ModelFailed(
                f"the {side} model's prediction {i + 1} is {shown}: predictions must be numbers, texts or one score "
                'per class; make output_fn answer that (or a JSON object with such a list under "predictions")'
            )
    return out


def infer_task(base: list[object], head: list[object], task: str) -> str:
    if task != "auto":
        return task
    values = base + head
    if any(isinstance(v, list) for v in values):
        return "classification"  # one score per class
    if all(isinstance(v, (str, bool)) for v in values):
        return "classification"
    if all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v == int(v) for v in values
    ):
        return "classification" if len(set(values)) <= 50 else "regression"
    return "regression"


def _scalar(v: object, side: str, i: int) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ModelFailed(
            f"the {side} model's prediction {i + 1} is {str(v)[:40]!r}, not a number; set review.task: classification"
        )
    return float(v)


def _label_value(v: str, i: int) -> float:
    f = _number(v)
    if isinstance(f, str):
        raise ModelFailed(
            f"the label of row {i + 1} is {v[:40]!r}, not a number, but the models are compared as regressors; "
            "set review.task: classification, or review.label_column"
        )
    return float(f)


def _short(text: str) -> str:
    """A value for display: one printable line of at most MAX_CELL characters."""
    return _printable(text)


def _cells(table: EvalTable, i: int) -> list[str]:
    return [_short(c) for c in table.raw[i][:MAX_FEATURES_SHOWN]]


def compare_predictions(base: list[Any], head: list[Any], table: EvalTable, cfg: ReviewConfig) -> dict[str, Any]:
    """Flip rate, confusion or delta distribution, top changed rows and slices."""
    base, head = normalize(base, "baseline"), normalize(head, "head")
    n = len(head)
    task = infer_task(base, head, cfg.task)
    out: dict[str, Any] = {"task": task, "rows": n}
    metrics: dict[str, float] = {}
    base_metrics: dict[str, float] = {}
    order: list[int]
    if task == "classification":
        b, h = _labels(base), _labels(head)
        changed = [b[i] != h[i] for i in range(n)]
        y = _labels(table.labels) if table.labels is not None else None
        counts = Counter(b) + Counter(h) + (Counter(y) if y else Counter())
        classes = [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_CLASSES]]
        other = len(counts) > len(classes)
        keys = classes + (["(other)"] if other else [])
        index = {c: k for k, c in enumerate(classes)}
        confusion = [[0] * len(keys) for _ in keys]
        for i in range(n):
            confusion[index.get(b[i], len(classes))][index.get(h[i], len(classes))] += 1
        cls: dict[str, Any] = {"classes": [_short(k) for k in keys], "confusion": confusion}
        if y is not None:
            cls["accuracy"] = [sum(b[i] == y[i] for i in range(n)) / n, sum(h[i] == y[i] for i in range(n)) / n]
            per = []
            for c in classes:
                row: dict[str, Any] = {"class": _short(c), "support": sum(1 for v in y if v == c)}
                for side, pred in (("baseline", b), ("head", h)):
                    tp = sum(1 for i in range(n) if pred[i] == c and y[i] == c)
                    predicted = sum(1 for v in pred if v == c)
                    row[f"{side}_precision"] = tp / predicted if predicted else None
                    row[f"{side}_recall"] = tp / row["support"] if row["support"] else None
                per.append(row)
            cls["per_class"] = per
        out["classification"] = cls

        # regressions first (head wrong where the baseline was right), then fixes, then the rest
        def rank(i: int) -> tuple[int, int]:
            if y is None:
                return (0, i)
            return (0 if b[i] == y[i] else 1 if h[i] == y[i] else 2, i)

        order = sorted((i for i in range(n) if changed[i]), key=rank)
        shown_b, shown_h, shown_y, delta = b, h, y, None
        correct = (lambda p, i: 1.0 if p[i] == y[i] else 0.0) if y is not None else None
        metric_name = "accuracy"
    else:
        bf = [_scalar(v, "baseline", i) for i, v in enumerate(base)]
        hf = [_scalar(v, "head", i) for i, v in enumerate(head)]
        import numpy as np

        with np.errstate(all="ignore"):
            d = np.asarray(hf, dtype=float) - np.asarray(bf, dtype=float)
        delta = d.tolist()
        # a change beyond the tolerance; a non-finite prediction on one side only is a change too
        same_nonfinite = [not math.isfinite(bf[i]) and repr(bf[i]) == repr(hf[i]) for i in range(n)]
        changed = [
            not same_nonfinite[i] and not abs(delta[i]) <= cfg.tolerance * max(1.0, abs(bf[i])) for i in range(n)
        ]
        finite = d[np.isfinite(d)]
        reg: dict[str, Any] = {"nonfinite": int(n - finite.size)}
        if finite.size:
            stats = {
                "mean": float(finite.mean()),
                "std": float(finite.std()),
                "min": float(finite.min()),
                "max": float(finite.max()),
            }
            for q in (1, 5, 25, 50, 75, 95, 99):
                stats[f"p{q:02d}"] = float(np.percentile(finite, q))
            lo, hi = stats["min"], stats["max"]
            counts_h, edges = np.histogram(finite, bins=20, range=(lo, hi) if hi > lo else (lo - 0.5, hi + 0.5))
            reg["delta"] = stats
            reg["histogram"] = {"edges": edges.tolist(), "counts": counts_h.tolist()}
        yv = [_label_value(v, i) for i, v in enumerate(table.labels)] if table.labels is not None else None
        if yv is not None:
            with np.errstate(all="ignore"):
                for values, k in ((bf, 0), (hf, 1)):
                    err = np.asarray(values) - np.asarray(yv)
                    reg.setdefault("mae", [0.0, 0.0])[k] = float(np.abs(err).mean())
                    reg.setdefault("rmse", [0.0, 0.0])[k] = float(np.sqrt((err**2).mean()))
        out["regression"] = reg
        order = sorted(
            (i for i in range(n) if changed[i]),
            key=lambda i: (-abs(delta[i]) if math.isfinite(delta[i]) else -math.inf, i),
        )
        shown_b, shown_h, shown_y = [f"{v:.6g}" for v in bf], [f"{v:.6g}" for v in hf], table.labels
        correct = (lambda p, i: abs(p[i] - yv[i])) if yv is not None else None
        metric_name = "mae"
    flips = sum(changed)
    out["changed"] = flips
    out["flip_rate"] = flips / n if n else 0.0
    metrics["flip_rate"] = out["flip_rate"]
    out["top"] = {
        "columns": table.columns[:MAX_FEATURES_SHOWN],
        "rows": [
            {
                "id": table.ids[i],
                "features": _cells(table, i),
                "baseline": _short(shown_b[i]),
                "head": _short(shown_h[i]),
                "label": _short(shown_y[i]) if shown_y is not None else None,
                "delta": delta[i] if delta is not None else None,
            }
            for i in order[: cfg.top_k]
        ],
    }
    if table.slices is not None:
        groups: dict[str, list[int]] = {}
        for i, v in enumerate(table.slices):
            groups.setdefault(v, []).append(i)
        ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        pred_b = b if task == "classification" else bf
        pred_h = h if task == "classification" else hf

        def group(value: str, idx: list[int]) -> dict[str, Any]:
            g: dict[str, object] = {
                "value": value,
                "rows": len(idx),
                "flip_rate": sum(changed[i] for i in idx) / len(idx),
            }
            if correct is not None:
                g["metric"] = metric_name
                g["baseline"] = sum(correct(pred_b, i) for i in idx) / len(idx)
                g["head"] = sum(correct(pred_h, i) for i in idx) / len(idx)
            return g

        # gate quantities for the MAX_SLICE_METRICS largest values; the table shows the largest ones
        for value, idx in ranked[:MAX_SLICE_METRICS]:
            g, key = group(value, idx), f"{cfg.slice_column}={value}"
            metrics[f"flip_rate@{key}"] = g["flip_rate"]
            if "metric" in g:
                metrics[f"{metric_name}@{key}"] = g["head"]
                base_metrics[f"{metric_name}@{key}"] = g["baseline"]
        shown = ranked
        if len(ranked) > MAX_SLICES:
            shown = [*ranked[: MAX_SLICES - 1], ("(other)", [i for _, idx in ranked[MAX_SLICES - 1 :] for i in idx])]
        out["slices"] = {"column": cfg.slice_column, "values": len(ranked), "groups": [group(v, i) for v, i in shown]}
    out["metrics"] = metrics
    out["baseline_metrics"] = base_metrics
    return out


# -- the whole diff ---------------------------------------------------------------------------
def run(
    base: Side, head: Side, data: Path, cfg: ReviewConfig, cache: Path | None, data_digest: str
) -> dict[str, object]:
    """The model diff, from the cache when the same two artifacts were compared on the same
    data with the same settings (the report and the gate of one job see the same numbers).
    `cache` must be a directory no commit can write (the caller uses one inside .git)."""
    from .artifact import conform_model_diff
    from .config import digest

    key = digest(
        {
            "v": SCHEMA,
            "base": base.sha256,
            "head": head.sha256,
            "data": data_digest,
            "review": asdict(cfg),
            "entries": [base.entry, head.entry],
            "python": [base.python, head.python],
            "environment": [base.environment, head.environment],  # serving.environment can change answers
        }
    )
    hit = cache / f"{key}.json" if cache else None
    if hit is not None and hit.is_file():
        try:
            cached = conform_model_diff(json.loads(hit.read_text()))
            if cached is not None and cached.get("schema") == SCHEMA and cached.get("status") == "ok":
                cached["cached"] = True
                return cached
        except (OSError, ValueError, RecursionError):
            pass  # measured again
    result = _compute(base, head, data, cfg)
    if hit is not None and result["status"] == "ok":  # a failure is tried again (it may have been the machine)
        tmp = hit.with_name(f".{hit.name}.{os.getpid()}")
        try:
            hit.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(result, default=str))
            os.replace(tmp, hit)
        except OSError:  # not kept: the gate measures again
            with contextlib.suppress(OSError):
                tmp.unlink()
    return result


def failed(reason: str, *, status: str = "failed") -> dict[str, object]:
    return {"schema": SCHEMA, "status": status, "reason": reason, "metrics": {}, "baseline_metrics": {}}


def _compute(base: Side, head: Side, data: Path, cfg: ReviewConfig) -> dict[str, object]:
    t0 = time.monotonic()
    try:
        table = read_eval(data, cfg)
        with tempfile.TemporaryDirectory(prefix="mlops-ci-diff-") as scratch:
            measured = measure(base, head, table, cfg, Path(scratch))
        try:
            diff = compare_predictions(
                measured["baseline"].pop("predictions"), measured["head"].pop("predictions"), table, cfg
            )
        except (TypeError, ValueError, OverflowError, ArithmeticError) as exc:  # answers normalize() let through
            raise ModelFailed(f"the two models' predictions cannot be compared: {type(exc).__name__}: {exc}") from None
    except ModelFailed as exc:
        return failed(str(exc))
    confinement = measured["head"].pop("confinement")
    measured["baseline"].pop("confinement", None)
    for name in OPERATIONAL:
        diff["metrics"][name] = measured["head"][name]
        diff["baseline_metrics"][name] = measured["baseline"][name]
    return {
        "schema": SCHEMA,
        "status": "ok",
        "reason": "",
        "eval": {
            "channel": cfg.eval_channel,
            "rows": len(table.rows),
            "total_rows": table.total,
            "files": table.files,
            "labels": table.labels is not None,
            "columns": len(table.columns),
        },
        **diff,
        "operational": {"baseline": measured["baseline"], "head": measured["head"]},
        "sandbox": {
            **confinement,  # checked in ask(): files, network, limits, note
            "timeout_s": cfg.timeout,
            "memory_mb": cfg.memory_mb,
            "python": Path(head.python).name,
        },
        "seconds": time.monotonic() - t0,
    }
