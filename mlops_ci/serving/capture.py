"""Data capture of a local endpoint: a sample of its requests and answers, written as JSON Lines
in SageMaker's Data Capture record format, under the layout SageMaker uses below its destination
(`<endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl`), so one reader reads both.

A record, as SageMaker writes it (its Model Monitor documentation and the records it produces):

    {"captureData": {"endpointInput": {"observedContentType": "text/csv", "mode": "INPUT",
                                       "data": "1,2,3", "encoding": "CSV"},
                     "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                                        "data": "[0.9]", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "<uuid>", "inferenceTime": "2026-12-06T05:14:00.123Z"},
     "eventVersion": "0"}

The encoding follows the content type as DataCaptureConfig.CaptureContentTypeHeader has it: CSV
for its CSV types, JSON for its JSON types, BASE64 for the rest. A local record adds what
SageMaker's lacks and `monitor` reads (status, latency, version) under "mlopsCi"; readers of
SageMaker's format ignore it.

On the request path a record costs a sampling draw and an append to a deque; a writer thread per
process encodes and writes them in batches (the router runs several processes: each writes its own
files). A payload above the size cap is not captured (counted, never truncated: a cut record would
be wrong data); a file rotates at its size limit and at every hour.
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import TypedDict

from ..monitoring import media_type

VARIANT = "AllTraffic"  # SageMaker's variant name for a single-model endpoint (and ours)
FLUSH_SECONDS = 0.25


class CaptureSettings(TypedDict):
    """What target.json carries for the router: the endpoint's `capture:` and where to write."""

    dir: str
    endpoint: str
    percent: int
    max_payload_bytes: int
    rotate_bytes: int
    csv: list[str]
    json: list[str]


def encode(body: bytes, content_type: str, mode: str, csv_types: list[str], json_types: list[str]) -> dict[str, str]:
    """One side of a record: its data as text for a CSV or JSON content type, else base64."""
    media = media_type(content_type)
    encoding = "CSV" if media in csv_types else "JSON" if media in json_types else "BASE64"
    if encoding != "BASE64":
        try:
            data = body.decode("utf-8")
        except UnicodeDecodeError:  # declared text, sent bytes: kept exactly, as base64
            encoding = "BASE64"
    if encoding == "BASE64":
        data = base64.b64encode(body).decode("ascii")
    return {"observedContentType": content_type, "mode": mode, "data": data, "encoding": encoding}


def record(s: CaptureSettings, when: float, request: bytes, request_type: str, answer: bytes, answer_type: str,
           status: int, latency_ms: float, version: str) -> dict[str, object]:  # fmt: skip
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when * 1000) % 1000:03d}Z"
    return {
        "captureData": {
            "endpointInput": encode(request, request_type, "INPUT", s["csv"], s["json"]),
            "endpointOutput": encode(answer, answer_type, "OUTPUT", s["csv"], s["json"]),
        },
        "eventMetadata": {"eventId": str(uuid.uuid4()), "inferenceTime": stamp},
        "eventVersion": "0",
        "mlopsCi": {"status": status, "latencyMs": round(latency_ms, 3), "version": version},
    }


class Capturer:
    """The capture of one router process."""

    def __init__(self) -> None:
        self._queue: deque[tuple[CaptureSettings, float, bytes, str, bytes, str, int, float, str]] = deque()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one writer at a time (flush also runs from tests and at exit)
        self._file: tuple[Path, int] | None = None  # the open file's path and size
        self.dropped = 0  # payloads above the size cap

    def offer(self, s: CaptureSettings, request: bytes, request_type: str, answer: bytes, answer_type: str,
              status: int, latency_ms: float, version: str) -> None:  # fmt: skip
        """On the request path: sample, and queue what the writer writes."""
        if s["percent"] <= 0 or (s["percent"] < 100 and random.random() * 100 >= s["percent"]):  # noqa: S311
            return
        if len(request) > s["max_payload_bytes"] or len(answer) > s["max_payload_bytes"]:
            self.dropped += 1
            return
        self._queue.append((s, time.time(), request, request_type, answer, answer_type, status, latency_ms, version))
        if self._pid != os.getpid():  # first record of this process (the router forks its workers)
            with self._lock:
                if self._pid != os.getpid():
                    self._pid = os.getpid()
                    self._file = None  # the parent's file is the parent's
                    self._thread = threading.Thread(target=self._run, name="mlops-ci-capture", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write what is queued (the writer thread does, every quarter second)."""
        with self._lock:
            self._write()

    def _write(self) -> None:
        lines: dict[Path, list[str]] = {}
        while self._queue:
            s, when, req, rtype, ans, atype, status, latency, version = self._queue.popleft()
            hour = time.strftime("%Y/%m/%d/%H", time.gmtime(when))
            folder = Path(s["dir"]) / s["endpoint"] / VARIANT / hour
            line = json.dumps(record(s, when, req, rtype, ans, atype, status, latency, version), separators=(",", ":"))
            path = self._target(folder, len(line) + 1, s["rotate_bytes"])
            lines.setdefault(path, []).append(line)
        for path, batch in lines.items():
            with open(path, "a", encoding="utf-8") as fh:
                fh.write("\n".join(batch) + "\n")

    def _target(self, folder: Path, size: int, limit: int) -> Path:
        """The file a record of `size` bytes goes to: the open one, unless its hour is over or it
        would pass `limit`; then a new one, named by this process and the time."""
        if self._file is not None:
            path, used = self._file
            if path.parent == folder and used + size <= max(limit, size):
                self._file = (path, used + size)
                return path
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{os.getpid()}-{time.time_ns()}.jsonl"
        self._file = (path, size)
        return path
