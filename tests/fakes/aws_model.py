"""Requests checked against botocore's own service model, as AWS checks them.

botocore validates what its client is given (required members, types) but not each shape's
`pattern`, `min`/`max` (length of strings, lists, maps and blobs; value of numbers) or `enum`;
moto accepts almost anything. AWS rejects a request that breaks any of them with
`ValidationException: 1 validation error detected: Value ... at '<member>' failed to satisfy
constraint: ...`. `violations()` names every broken constraint by member path, so a test fails
on a request SageMaker would refuse.

Where the checks come from:
- the constraints are the service model's (`botocore/data/<service>/<version>/service-2.json`);
- a pattern must match the whole value: AWS's validators match the full string (Java
  `Pattern.matches`). Smithy calls patterns unanchored, but many SageMaker patterns only work
  anchored: `CustomerMetadataValue` is `([\\p{L}\\p{Z}\\p{N}_.:\\/=+\\-@]*)${1,256}`, which a search
  would satisfy with the empty match at the end of any string;
- the patterns are Java regular expressions: `\\p{L}`-style classes need the `regex` package, and
  Java's UTF-16 surrogate pair ranges are rewritten as the code points they stand for.

Two places run the check: `FakeSageMaker` (tests/fakes/sagemaker.py) on the wire, for every JSON
protocol request (SageMaker, CloudWatch Logs, Application Auto Scaling, KMS) and InvokeEndpoint,
whichever process sent it; and `install()` in this process, through botocore's own
`provide-client-params` event, for every client of every service, S3 included.
"""

from __future__ import annotations

import base64
import functools
import threading
from typing import Any

import regex

# X-Amz-Target prefix (service model `targetPrefix`) -> botocore service name, for the JSON
# protocol services the backend calls.
TARGETS = {
    "SageMaker": "sagemaker",
    "Logs_20140328": "logs",
    "AnyScaleFrontendService": "application-autoscaling",
    "TrentService": "kms",
}


@functools.cache
def _model(service: str) -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


@functools.cache
def _pattern(java: str) -> Any:
    py = java.replace(r"\uD800\uDC00-\uDBFF\uDFFF", r"\U00010000-\U0010FFFF")
    return regex.compile(py)  # a pattern that does not compile fails the test loudly


def violations(service: str, operation: str, params: dict[str, Any], *, wire: bool = False) -> list[str]:
    """Every constraint of the service model that `params` breaks, as `member.path: what`.

    `wire=True` when `params` is the JSON body as sent (blobs are base64 text, timestamps numbers).
    """
    shape = _model(service).operation_model(operation).input_shape
    out: list[str] = []
    if shape is not None:
        _check(shape, params, operation, out, wire)
    return out


def _check(shape: Any, value: Any, path: str, out: list[str], wire: bool) -> None:
    meta = shape.metadata
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            out.append(f"{path}: expected a structure, got {type(value).__name__}")
            return
        if shape.is_document_type:
            return
        for name in shape.required_members:
            if name not in value:
                out.append(f"{path}.{name}: required member missing")
        for name, member in value.items():
            if name not in shape.members:
                out.append(f"{path}.{name}: not a member of {shape.name}")
                continue
            _check(shape.members[name], member, f"{path}.{name}", out, wire)
        return
    if kind == "list":
        if not isinstance(value, list):
            out.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        _length(meta, len(value), path, out, "items")
        for i, item in enumerate(value):
            _check(shape.member, item, f"{path}[{i}]", out, wire)
        return
    if kind == "map":
        if not isinstance(value, dict):
            out.append(f"{path}: expected a map, got {type(value).__name__}")
            return
        _length(meta, len(value), path, out, "entries")
        for key, item in value.items():
            _check(shape.key, key, f"{path}.key({key!r})", out, wire)
            _check(shape.value, item, f"{path}[{key!r}]", out, wire)
        return
    if kind == "string":
        if not isinstance(value, str):
            out.append(f"{path}: expected a string, got {type(value).__name__}")
            return
        _length(meta, len(value), path, out, "characters")
        if shape.enum and value not in shape.enum:
            out.append(f"{path}: {value!r} is not one of {sorted(shape.enum)}")
        if "pattern" in meta and not _pattern(meta["pattern"]).fullmatch(value):
            out.append(f"{path}: {value!r} does not match the pattern {meta['pattern']}")
        return
    if kind == "blob":
        if wire and isinstance(value, str):
            value = base64.b64decode(value)
        if isinstance(value, (bytes, bytearray)):
            _length(meta, len(value), path, out, "bytes")
        elif isinstance(value, str):
            _length(meta, len(value.encode()), path, out, "bytes")
        return
    if kind in ("integer", "long", "float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            out.append(f"{path}: expected a number, got {type(value).__name__}")
            return
        if kind in ("integer", "long") and not isinstance(value, int):
            out.append(f"{path}: expected an integer, got {value!r}")
        if "min" in meta and value < meta["min"]:
            out.append(f"{path}: {value} is below the minimum {meta['min']}")
        if "max" in meta and value > meta["max"]:
            out.append(f"{path}: {value} is above the maximum {meta['max']}")
        return
    if kind == "boolean" and not isinstance(value, bool):
        out.append(f"{path}: expected a boolean, got {type(value).__name__}")
    # timestamps: botocore serializes them itself; nothing in the model constrains them further


def _length(meta: dict[str, Any], n: int, path: str, out: list[str], unit: str) -> None:
    if "min" in meta and n < meta["min"]:
        out.append(f"{path}: {n} {unit}, fewer than the minimum {meta['min']}")
    if "max" in meta and n > meta["max"]:
        out.append(f"{path}: {n} {unit}, more than the maximum {meta['max']}")


def rest_violations(service: str, operation: str, uri: dict[str, str], headers: dict[str, str],
                    body: bytes) -> list[str]:  # fmt: skip
    """`violations()` for a REST request seen on the wire: its members come from the URI, the
    headers (by their `locationName`, case-insensitively) and the payload."""
    shape = _model(service).operation_model(operation).input_shape
    lower = {k.lower(): v for k, v in headers.items()}
    params: dict[str, Any] = {}
    for name, member in shape.members.items():
        where, wire_name = member.serialization.get("location"), member.serialization.get("name", name)
        if where == "uri" and wire_name in uri:
            params[name] = uri[wire_name]
        elif where == "header" and wire_name.lower() in lower:
            params[name] = lower[wire_name.lower()]
        elif where is None and shape.serialization.get("payload") == name and body:
            params[name] = body
    return violations(service, operation, params)


def message(found: list[str]) -> str:
    """AWS's wording for a rejected request."""
    n = len(found)
    return f"{n} validation error{'s' if n != 1 else ''} detected: " + "; ".join(found)


class Recorder:
    """Checks every request of every botocore client made in this process (S3 included) while
    installed; `found` holds `service.Operation.member: what` for each violation."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.service_name
        for v in violations(service, model.name, params):
            with self._lock:
                self.found.append(f"{service}.{v}")


def install(recorder: Recorder) -> Any:
    """Register `recorder` for every botocore session created from now on (clients made before
    keep their handlers); returns what `uninstall` needs."""
    import botocore.handlers

    entry = ("provide-client-params.*.*", recorder)
    botocore.handlers.BUILTIN_HANDLERS.append(entry)
    return entry


def uninstall(entry: Any) -> None:
    import botocore.handlers

    if entry in botocore.handlers.BUILTIN_HANDLERS:
        botocore.handlers.BUILTIN_HANDLERS.remove(entry)
