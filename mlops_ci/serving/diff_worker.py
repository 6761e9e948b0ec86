"""One model of the review's model diff, in a confined process (see sandbox.py).

It verifies and unpacks the artifact into its directory, confines itself, then loads the model
through the serving contract (model_server.Model: `model_fn`, `input_fn`, `predict_fn`,
`output_fn`, or `transform_fn`), so any framework works as it would on an endpoint. Then it
answers the parent's commands, one JSON line each way over two pipes (the model's own prints go
to the log, never into the answers):

    {"op": "load"}                                       → {"ok", "seconds", "confinement"}
    {"op": "predict", "rows": FILE, "batch": B}          → {"ok", "predictions", "seconds"}
    {"op": "latency", "rows": FILE, "batch": B, "n": K, "start": S}  → {"ok", "ms": [...]}
    {"op": "quit"}                                       → {"ok", "peak_mb"}

FILE holds one JSON array of request rows. Any failure is {"ok": false, "error": "..."}.
Run as ``python -m mlops_ci.serving.diff_worker --dir D --artifact A --sha256 H --cmd-fd R
--reply-fd W [--entry E] --memory-mb M --cpu-seconds C --content-type T``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .contract import JSON, ContractError

if TYPE_CHECKING:
    from .model_server import Model


def _answer(out: TextIO, reply: dict[str, object]) -> None:
    out.write(json.dumps(reply, allow_nan=True, default=_plain) + "\n")
    out.flush()


def _plain(value: object) -> object:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _encode(rows: list[list[object]], content_type: str) -> str:
    if content_type == JSON:
        return json.dumps(rows)
    return "\n".join(",".join(str(v) for v in row) for row in rows)  # text/csv, as the rows were read


def _predictions(model: Model | None, rows: list[list[object]], content_type: str) -> list[object]:
    from .model_server import _response

    if model is None:  # a predict before a load: the error it always was
        raise AttributeError("'NoneType' object has no attribute 'transform'")

    # the container's path without its catch-all: a MemoryError stays a MemoryError
    status, ctype, body = _response(model.transform(_encode(rows, content_type), content_type, JSON))
    if status != 200:
        text = body.decode("utf-8", "replace")
        raise RuntimeError(f"the model answered {status}: {text[:300]}")
    if not ctype.startswith(JSON):
        raise RuntimeError(f"the model answered {ctype}, not {JSON}; its output_fn must honour Accept: {JSON}")
    out = json.loads(body)
    if isinstance(out, dict) and isinstance(out.get("predictions"), list):
        out = out["predictions"]
    if not isinstance(out, list):
        out = [out]
    if len(out) != len(rows):
        raise RuntimeError(f"the model answered {len(out)} prediction(s) for {len(rows)} row(s)")
    return out


def _error(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "MemoryError: the model needed more memory than the sandbox allows"
    if isinstance(exc, PermissionError):
        return f"PermissionError: {exc} (the sandbox allows writes only inside the model's own directory)"
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:497] + "…"


def _peak_mb() -> float:
    """This process's peak resident memory. On Linux VmHWM: ru_maxrss would report the parent's
    size, which exec carries over into the new process's accounting."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB elsewhere


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mlops-ci-diff-worker")
    p.add_argument("--dir", required=True)
    p.add_argument("--artifact", required=True)
    p.add_argument("--sha256", required=True)
    p.add_argument("--entry", default=None)
    p.add_argument("--cmd-fd", type=int, required=True)
    p.add_argument("--reply-fd", type=int, required=True)
    p.add_argument("--memory-mb", type=int, required=True)
    p.add_argument("--cpu-seconds", type=int, required=True)
    p.add_argument("--content-type", default=JSON)
    a = p.parse_args(argv)
    commands = os.fdopen(a.cmd_fd, "r", encoding="utf-8")
    out = os.fdopen(a.reply_fd, "w", encoding="utf-8")
    home = Path(a.dir)

    from .model_server import Model, unpack_verified
    from .sandbox import confine

    model_dir = home / "model"
    problem = unpack_verified(Path(a.artifact), a.sha256, model_dir)
    if problem:
        _answer(out, {"ok": False, "error": problem})
        return 0
    confinement = confine(home, memory_mb=a.memory_mb, cpu_seconds=a.cpu_seconds)
    model: Model | None = None
    loaded: dict[str, list[list[object]]] = {}  # the rows file, read once: every latency round samples it

    def rows_of(path: str) -> list[list[object]]:
        if path not in loaded:
            loaded[path] = json.loads(Path(path).read_text())
        return loaded[path]

    for line in commands:
        cmd = json.loads(line)
        op = cmd.get("op")
        try:
            if op == "load":
                t0 = time.perf_counter()
                model = Model(model_dir, a.entry)
                _answer(out, {"ok": True, "seconds": time.perf_counter() - t0, "confinement": confinement.__dict__})
            elif op == "predict":
                rows = rows_of(cmd["rows"])
                batch, preds = int(cmd["batch"]), []
                t0 = time.perf_counter()
                for i in range(0, len(rows), batch):
                    preds += _predictions(model, rows[i : i + batch], a.content_type)
                _answer(out, {"ok": True, "predictions": preds, "seconds": time.perf_counter() - t0})
            elif op == "latency":
                rows = rows_of(cmd["rows"])
                batch, n, start, ms = int(cmd["batch"]), int(cmd["n"]), int(cmd["start"]), []
                for k in range(n):
                    i = (start + k * batch) % max(1, len(rows) - batch + 1)
                    chunk = rows[i : i + batch]
                    t0 = time.perf_counter()
                    _predictions(model, chunk, a.content_type)
                    ms.append((time.perf_counter() - t0) * 1000.0)
                _answer(out, {"ok": True, "ms": ms})
            elif op == "quit":
                _answer(out, {"ok": True, "peak_mb": _peak_mb()})
                return 0
            else:
                _answer(out, {"ok": False, "error": f"unknown command {op!r}"})
        except ContractError as exc:
            _answer(out, {"ok": False, "error": str(exc)})
        except BaseException as exc:  # the model's own code: any failure (SystemExit too) is an answer
            if isinstance(exc, KeyboardInterrupt):
                raise
            _answer(out, {"ok": False, "error": _error(exc)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
