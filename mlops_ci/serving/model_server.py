"""Local inference server honouring the SageMaker serving contract.

``GET /ping`` → 200 when the model is loaded; ``POST /invocations`` → the prediction, answered
as SageMaker's scikit-learn container answers it (see contract.py: exact content types, float32
input, every failure a 500 with an HTML body). The artifact's sha256 is verified before anything
in it is loaded. The entry point (``serving.entry_point``, packed under ``code/``) must define
``model_fn`` and may define ``input_fn``, ``predict_fn`` and ``output_fn`` (or ``transform_fn``);
without it, or without ``model_fn``, the server does not start, as the container does not.

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
from typing import TYPE_CHECKING, Protocol

from ._http import MAX_BODY, Server, default_processes, linger, reply
from ._http import Handler as BaseHandler
from .contract import (
    ANY,
    CSV,
    DEFAULT_ACCEPT_ENV,
    ERROR_CONTENT_TYPE,
    ERROR_STATUS,
    JSON,
    NPY,
    UTF8_TYPES,
    ContractError,
    content_type_for,
    entry_point_problem,
    error_body,
    no_entry_point_message,
    no_model_fn_message,
)

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray


def default_input_fn(content: str | bytes, content_type: str) -> object:
    """The container's: decode by the exact content type, then JSON and CSV as float32."""
    import numpy as np

    if content_type == JSON:
        try:
            array = np.array(json.loads(content))
        except RecursionError:  # [[[[…]]]] 100,000 deep: a 500 as there, with a message that says so
            raise ValueError("could not parse the application/json payload: nested too deeply") from None
    elif content_type == CSV:
        array = _csv_to_numpy(content)
    elif content_type == NPY:
        # The container loads with allow_pickle=True; a local endpoint never unpickles a request.
        array = np.load(io.BytesIO(content if isinstance(content, bytes) else content.encode()), allow_pickle=False)
    else:
        raise ValueError(
            f"Content type {content_type} is not supported by this framework; send exactly {JSON}, {CSV} or "
            f"{NPY}, or define input_fn"
        )
    return array.astype(np.float32) if content_type in UTF8_TYPES else array


def _csv_to_numpy(content: str | bytes) -> NDArray[np.generic]:
    """sagemaker-containers' csv_to_numpy: rows squeezed (one row: 1-D), strings to float64."""
    import numpy as np

    text = content.decode("utf-8", errors="replace") if isinstance(content, bytes) else content
    reader = csv.reader(io.StringIO(text), delimiter=",", quotechar='"', doublequote=True, strict=True)
    array = np.array(list(reader)).squeeze()
    try:
        return array.astype(None)
    except ValueError:
        return array  # the float32 cast after it raises, naming the value


class _Predictor(Protocol):
    def predict(self, data: object, /) -> object: ...


def default_predict_fn(data: object, model: _Predictor) -> object:
    return model.predict(data)


def encode(prediction: object, accept: str) -> bytes:
    """sagemaker-containers' encoders: JSON, CSV (1-D as a column, "\n" line ends) or NPY."""
    import numpy as np

    if accept == JSON:
        return json.dumps(prediction, default=_tolist).encode()
    if accept == CSV:
        array = np.array(prediction)
        if len(array.shape) == 1:
            array = np.reshape(array, (array.shape[0], 1))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n", delimiter=",", quotechar='"', doublequote=True, strict=True)
        writer.writerows(array)
        return buf.getvalue().encode()
    if accept == NPY:
        out = io.BytesIO()
        np.save(out, np.asanyarray(prediction))  # what np.save itself does first
        return out.getvalue()
    raise ValueError(f"Content type {accept} is not supported by this framework; accept exactly {JSON}, {CSV} or {NPY}")


def _tolist(value: object) -> object:
    if hasattr(value, "tolist"):
        return value.tolist()
    return json.JSONEncoder().default(value)


def default_output_fn(prediction: object, accept: str) -> tuple[bytes, str]:
    return encode(prediction, accept), accept


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def unpack_verified(artifact: Path, sha256: str, model_dir: Path) -> str | None:
    """Unpack `artifact` into `model_dir` only if it still has the recorded sha256; else why not."""
    actual = sha256_file(artifact)
    if actual != sha256:
        return f"refusing to load {artifact}: sha256 {actual} != recorded {sha256}"
    model_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(artifact) as tar:
        tar.extractall(model_dir, filter="data")
    return None


class Model:
    """The entry point's hooks, loaded as the container loads them: by module name from code/,
    model_fn required, input_fn/predict_fn/output_fn (or transform_fn) optional."""

    def __init__(self, model_dir: Path, entry: str | None):
        if not entry:
            raise ContractError(no_entry_point_message())
        problem = entry_point_problem(entry)
        if problem:
            raise ContractError(problem)
        code = model_dir / "code"
        path = code / entry
        if not path.is_file():
            raise ContractError(
                f"serving.entry_point {entry} is not in the artifact (code/{entry}); SageMaker's container would "
                "not start: train again with the file committed"
            )
        if str(code) not in sys.path:
            sys.path.insert(0, str(code))
        name = path.stem
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec and spec.loader
        self.module: ModuleType = importlib.util.module_from_spec(spec)
        sys.modules[name] = self.module
        spec.loader.exec_module(self.module)
        model_fn = getattr(self.module, "model_fn", None)
        if model_fn is None:
            raise ContractError(no_model_fn_message(entry))
        self.transform_fn = getattr(self.module, "transform_fn", None)
        hooks = [h for h in ("input_fn", "predict_fn", "output_fn") if getattr(self.module, h, None)]
        if self.transform_fn and hooks:
            raise ContractError(
                f"serving.entry_point {entry} defines transform_fn and {', '.join(hooks)}: SageMaker's container "
                "does not start with both; keep one or the other"
            )
        self.model = model_fn(str(model_dir))
        self.input_fn = getattr(self.module, "input_fn", None) or default_input_fn
        self.predict_fn = getattr(self.module, "predict_fn", None) or default_predict_fn
        self.output_fn = getattr(self.module, "output_fn", None) or default_output_fn

    def transform(self, content: str | bytes, content_type: str, accept: str) -> object:
        if self.transform_fn is not None:
            return self.transform_fn(self.model, content, content_type, accept)
        data = self.input_fn(content, content_type)
        prediction = self.predict_fn(data, self.model)
        return self.output_fn(prediction, accept)


def default_accept() -> str:
    return os.environ.get(DEFAULT_ACCEPT_ENV) or JSON


def respond(model: Model, body: bytes, content_type: str | None, accept: str | None,
            fallback_accept: str | None = None) -> tuple[int, str, bytes]:  # fmt: skip
    """One POST /invocations as the container answers it: (status, Content-Type, body).
    `content_type` is the request's ContentType or Content-Type header, `accept` its Accept."""
    ctype = content_type or JSON
    if not accept or accept == ANY:
        accept = fallback_accept or default_accept()
    content: str | bytes = body.decode("utf-8", errors="replace") if ctype in UTF8_TYPES else body
    try:
        result = model.transform(content, ctype, accept)
        return _response(result)
    except Exception as exc:  # noqa: BLE001 - the container answers every failure with a 500
        traceback.print_exc()
        return ERROR_STATUS, ERROR_CONTENT_TYPE, error_body(f"inference failed: {type(exc).__name__}: {exc}")


def _response(result: object) -> tuple[int, str, bytes]:
    """What Flask makes of a hook's return value, as the container hands it over."""
    if isinstance(result, tuple):  # (body, mimetype): the container's Response(body, mimetype=...)
        payload, mimetype = result[0], result[1]
        return 200, content_type_for(mimetype or JSON), _bytes(payload)
    if hasattr(result, "get_data") and hasattr(result, "status_code"):  # a Flask/werkzeug Response
        ctype = getattr(result, "content_type")  # noqa: B009 - hasattr above narrowed only the two members it checked
        return int(result.status_code), str(ctype), bytes(result.get_data())
    if isinstance(result, (str, bytes, bytearray)):
        return 200, content_type_for("text/html"), _bytes(result)
    if isinstance(result, (dict, list)):  # Flask's jsonify
        return 200, JSON, (json.dumps(result, separators=(",", ":"), sort_keys=True) + "\n").encode()
    raise TypeError(f"the serving hook returned {type(result).__name__}; return (body, content type) or a body")


def _bytes(payload: object) -> bytes:
    if isinstance(payload, str):
        return payload.encode()
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    raise TypeError(f"the serving hook returned a {type(payload).__name__} body; return str or bytes")


def make_handler(model: Model, meta: dict[str, object]) -> type[BaseHTTPRequestHandler]:
    accept_default = default_accept()  # read once at startup, as the container's ServingEnv

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
            status, ctype, payload = respond(
                model,
                body,
                self.headers.get("ContentType") or self.headers.get("Content-Type"),
                self.headers.get("Accept"),
                accept_default,
            )
            self._send(status, payload, ctype)

    return Handler


def write_ready(path: Path, info: dict[str, object]) -> None:
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
    model_dir = Path(a.workdir) / "model"
    problem = unpack_verified(Path(a.artifact), a.sha256, model_dir)
    if problem:
        print(problem, file=sys.stderr)
        return 3
    try:
        model = Model(model_dir, a.entry)
    except ContractError as exc:  # SageMaker's container would not start either: one line, then exit
        print(f"the model server cannot start: {exc}", file=sys.stderr)
        return 2
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
