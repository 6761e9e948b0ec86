"""Local inference server honouring the SageMaker serving contract.

``GET /ping`` → 200 when the model is loaded; ``POST /invocations`` → the prediction. The
artifact's sha256 is verified before anything in it is loaded. The project's ``inference.py``
(packed into the artifact under ``code/``) may define ``model_fn``, ``input_fn``,
``predict_fn`` and ``output_fn``; defaults handle JSON, CSV and NPY.

Run as ``python -m mlops_ci.serving.model_server --artifact A --sha256 H --workdir D``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import io
import json
import os
import sys
import tarfile
import traceback
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import ModuleType
from typing import Any

from ._http import MAX_BODY, Server, default_processes, linger, reply
from ._http import Handler as BaseHandler

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _base_type(content_type: str | None) -> str:
    return (content_type or JSON).split(";")[0].strip().lower() or JSON


def default_input_fn(body: bytes, content_type: str) -> Any:
    import numpy as np

    ctype = _base_type(content_type)
    try:
        if ctype == JSON:
            data = json.loads(body.decode("utf-8"))
            if isinstance(data, dict) and "instances" in data:
                data = data["instances"]
            return np.asarray(data, dtype=float)
        if ctype == CSV:
            rows = [r for r in csv.reader(io.StringIO(body.decode("utf-8"))) if r]
            return np.asarray([[float(x) for x in r] for r in rows], dtype=float)
        if ctype == NPY:
            return np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, UnicodeDecodeError, TypeError) as exc:
        raise BadRequest(400, f"could not parse the {ctype} payload: {exc}") from None
    except RecursionError:  # [[[[…]]]] 100,000 deep: the caller's input, not a server fault
        raise BadRequest(400, f"could not parse the {ctype} payload: nested too deeply") from None
    raise BadRequest(415, f"unsupported content type {ctype}; send {JSON}, {CSV} or {NPY}")


def default_predict_fn(data: Any, model: Any) -> Any:
    return model.predict(data)


def default_output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    import numpy as np

    atype = _base_type(accept if accept and accept != "*/*" else JSON)
    arr = np.asarray(prediction)
    if atype == JSON:
        return json.dumps(arr.tolist()).encode(), JSON
    if atype == CSV:
        buf = io.StringIO()
        writer = csv.writer(buf)
        for row in arr.reshape(len(arr), -1) if arr.ndim else [[arr.item()]]:
            writer.writerow(list(row))
        return buf.getvalue().encode(), CSV
    if atype == NPY:
        buf2 = io.BytesIO()
        np.save(buf2, arr, allow_pickle=False)
        return buf2.getvalue(), NPY
    raise BadRequest(406, f"cannot produce {atype}; accept {JSON}, {CSV} or {NPY}")


def default_model_fn(model_dir: str) -> Any:
    for name in ("model.joblib", "model.pkl", "model.pickle"):
        path = Path(model_dir) / name
        if path.is_file():
            import joblib

            return joblib.load(path)
    raise RuntimeError(
        f"no model_fn in inference.py and no model.joblib/model.pkl in {model_dir}; define model_fn(model_dir)"
    )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Model:
    def __init__(self, model_dir: Path, entry: str | None):
        self.module: ModuleType | None = None
        code = model_dir / "code"
        if entry and (code / entry).is_file():
            sys.path.insert(0, str(code))
            spec = importlib.util.spec_from_file_location("inference", code / entry)
            assert spec and spec.loader
            self.module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(self.module)
        model_fn = getattr(self.module, "model_fn", default_model_fn)
        self.model = model_fn(str(model_dir))
        self.input_fn = getattr(self.module, "input_fn", default_input_fn)
        self.predict_fn = getattr(self.module, "predict_fn", default_predict_fn)
        self.output_fn = getattr(self.module, "output_fn", None)

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        data = self.input_fn(body, content_type)
        try:
            prediction = self.predict_fn(data, self.model)
        except (ValueError, TypeError, IndexError) as exc:
            # The model rejected the input (wrong shape, wrong type): the caller's fault.
            raise BadRequest(400, f"the model rejected the input: {exc}") from None
        if self.output_fn is None:
            return default_output_fn(prediction, accept)
        result = self.output_fn(prediction, accept)
        if isinstance(result, tuple):
            payload, ctype = result
        else:
            payload, ctype = result, _base_type(accept)
        return (payload.encode() if isinstance(payload, str) else bytes(payload)), ctype


def make_handler(model: Model, meta: dict[str, Any]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHandler):
        server_version = "mlops-ci-model-server"

        def _send(self, status: int, body: bytes, ctype: str = JSON) -> None:
            reply(self, status, body, {"Content-Type": ctype, "X-Mlops-Ci-Version": str(meta.get("version", ""))})

        def _error(self, status: int, message: str) -> None:
            self._send(status, json.dumps({"error": message}).encode())

        def do_GET(self) -> None:
            if self.path == "/ping":
                self._send(200, json.dumps({"status": "healthy", **meta}).encode())
            else:
                self._error(404, f"no such path {self.path}; use GET /ping or POST /invocations")

        def do_POST(self) -> None:
            if self.path != "/invocations":
                self._error(404, f"no such path {self.path}; use POST /invocations")
                return
            length_header = self.headers.get("Content-Length")
            try:
                length = int(length_header) if length_header is not None else -1
            except ValueError:
                length = -1
            if length < 0:
                self._error(411, "Content-Length is required")
                return
            if length > MAX_BODY:
                self.close_connection = True
                self._error(413, f"payload of {length} bytes exceeds the {MAX_BODY}-byte limit")
                linger(self.connection, length)
                return
            body = self.rfile.read(length)
            try:
                payload, ctype = model.invoke(
                    body,
                    self.headers.get("Content-Type", JSON),
                    self.headers.get("Accept", JSON),
                )
            except BadRequest as exc:
                self._error(exc.status, str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - a model bug must not kill the server
                traceback.print_exc()
                self._error(500, f"inference failed: {type(exc).__name__}: {exc}")
                return
            self._send(200, payload, ctype)

    return Handler


def write_ready(path: Path, info: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mlops-ci-model-server")
    p.add_argument("--artifact", required=True)
    p.add_argument("--sha256", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--entry", default=None)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--ready-file", required=True)
    p.add_argument("--version", default="")
    p.add_argument("--sha", default="")
    a = p.parse_args(argv)
    artifact = Path(a.artifact)
    actual = sha256_file(artifact)
    if actual != a.sha256:
        print(f"refusing to load {artifact}: sha256 {actual} != recorded {a.sha256}", file=sys.stderr)
        return 3
    model_dir = Path(a.workdir) / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(artifact) as tar:
        tar.extractall(model_dir, filter="data")
    model = Model(model_dir, a.entry)
    meta = {"version": a.version, "sha": a.sha, "artifact_sha256": a.sha256}
    server = Server((a.host, a.port), make_handler(model, meta))
    ready = Path(a.ready_file)
    server.run(_processes(), lambda: write_ready(ready, {"port": server.server_address[1], "pid": os.getpid()}))
    return 0


def _processes() -> int:
    """One worker process per CPU this process may use (at most 8), or
    SAGEMAKER_MODEL_SERVER_WORKERS, as SageMaker's containers. A model whose libraries start
    threads at load (OpenMP) and misbehave after fork: set it to 1."""
    raw = os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS", "")
    try:
        return max(1, min(64, int(raw))) if raw else default_processes()
    except ValueError:
        return default_processes()


if __name__ == "__main__":
    sys.exit(main())
