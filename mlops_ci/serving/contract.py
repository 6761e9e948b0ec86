"""What SageMaker's scikit-learn serving container does with a request, written down once.

The local model server follows it, and the configuration refuses what the container cannot
start. The rules come from the container's serving code (sagemaker-scikit-learn-container with
sagemaker-containers); tests/integration/test_serving_oracle.py checks them against that code.

- The entry point is imported by module name from ``code/`` (``SAGEMAKER_PROGRAM`` is a file
  name), and it must define ``model_fn``: the container has no default loader.
- Content-Type (default ``application/json``) and Accept (absent or ``*/*``:
  ``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT``, default ``application/json``) are compared as exact
  strings with ``application/json``, ``text/csv`` and ``application/x-npy``: parameters
  (``; charset=utf-8``) or a list of types are not understood.
- JSON and CSV bodies become float32 arrays; a CSV body is squeezed (one row: a 1-D array).
- Any failure (unsupported type, unparsable body, a model that rejects the input, a hook that
  raises) is a 500 with an HTML body.
"""

from __future__ import annotations

import html
import sys
from pathlib import PurePosixPath
from typing import Protocol

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
ANY = "*/*"
UTF8_TYPES = (JSON, CSV)  # the request body reaches input_fn as str for these, bytes otherwise
DEFAULT_ACCEPT_ENV = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"

ERROR_STATUS = 500
ERROR_CONTENT_TYPE = "text/html; charset=utf-8"

# werkzeug's get_content_type: the mimetypes that get "; charset=utf-8" besides text/*
_CHARSET_MIMETYPES = {
    "application/ecmascript",
    "application/javascript",
    "application/sql",
    "application/xml",
    "application/xml-dtd",
    "application/xml-external-parsed-entity",
}


class ContractError(Exception):
    """The model cannot be served as SageMaker would serve it (the container would not start)."""


def entry_point_problem(entry_point: str) -> str | None:
    """Why SageMaker's container could not import `entry_point` (serving.entry_point), or None."""
    path = PurePosixPath(entry_point.replace("\\", "/"))
    if len(path.parts) > 1:
        return (
            f"serving.entry_point {entry_point}: SageMaker imports the entry point by file name from code/ "
            f"(SAGEMAKER_PROGRAM={path.name}), so one in a subdirectory is never found and the endpoint fails "
            f"to start; move it to the top of the source dir (a top-level {path.name} may import the rest, "
            "listed in serving.include)"
        )
    if path.suffix != ".py":
        stem = path.stem or "inference"
        return f"serving.entry_point {entry_point}: SageMaker imports a Python file; name it {stem}.py"
    if path.stem in sys.stdlib_module_names:
        return (
            f"serving.entry_point {entry_point}: SageMaker imports it as module {path.stem!r}, which is the standard "
            "library's, so the endpoint fails to start; rename it (e.g. inference.py)"
        )
    return None


class _Reader(Protocol):
    def fail(self, path: tuple[str | int, ...], msg: str, /) -> Exception: ...


def check_serving_config(r: _Reader, s: dict[str, object]) -> None:
    """Config-time check of the `serving:` mapping `s` (r: config._Reader, whose fail() names the line)."""
    if s.get("entry_point") and isinstance(s["entry_point"], str):
        problem = entry_point_problem(s["entry_point"])
        if problem:
            raise r.fail(("serving", "entry_point"), problem)


def no_entry_point_message() -> str:
    return (
        "no serving entry point: SageMaker's scikit-learn container imports SAGEMAKER_PROGRAM from code/ and does "
        "not start without one; set serving.entry_point to a script that defines model_fn(model_dir)"
    )


def no_model_fn_message(entry: str) -> str:
    return (
        f"serving.entry_point {entry} defines no model_fn: SageMaker's scikit-learn container has no default model "
        "loader and does not start; add def model_fn(model_dir): return joblib.load(os.path.join(model_dir, "
        "'model.joblib'))"
    )


def content_type_for(mimetype: str) -> str:
    """The Content-Type the container's Flask answers with for `mimetype` (werkzeug's rule)."""
    if mimetype.startswith("text/") or mimetype in _CHARSET_MIMETYPES or mimetype.endswith("+xml"):
        return f"{mimetype}; charset=utf-8"
    return mimetype


def error_body(message: str) -> bytes:
    """The container's 500 page (Flask's), with what went wrong in place of its generic sentence."""
    return (
        "<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n"
        f"<h1>Internal Server Error</h1>\n<p>{html.escape(message)}</p>\n"
    ).encode()
