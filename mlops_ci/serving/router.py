"""The stable front of a local endpoint: forwards to whichever model server `target.json`
names. A blue/green switch is one atomic rename of that file, so no request ever sees a
half-switched endpoint and the URL never changes across deploys.

Run as ``python -m mlops_ci.serving.router --state-dir D --ready-file F [--port N]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from ._http import Server, linger, reply
from .model_server import MAX_BODY, write_ready


class Target:
    def __init__(self, path: Path):
        self.path = path
        self._stamp: int | None = None
        self._value: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def get(self) -> dict[str, Any] | None:
        try:
            stamp = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._value = json.loads(self.path.read_text())
                except (OSError, ValueError):
                    return self._value
                self._stamp = stamp
            return self._value


class Upstream:
    """Keep-alive connections to the model servers, one per worker thread and port. A reused
    connection the server has closed meanwhile (idle timeout, a drained old version) fails
    before any answer: the request is sent again once, on a fresh connection to the *current*
    target, so a blue/green switch loses no request."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _conn(self, port: int) -> tuple[http.client.HTTPConnection, bool]:
        conns: dict[int, http.client.HTTPConnection] = self._local.__dict__.setdefault("conns", {})
        conn = conns.get(port)
        if conn is not None:
            return conn, True
        for old in conns.values():  # the target moved: the old server is going away
            old.close()
        conns.clear()
        conn = conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        return conn, False

    def drop(self, port: int) -> None:
        conn = self._local.__dict__.get("conns", {}).pop(port, None)
        if conn is not None:
            conn.close()

    def send(
        self, target: Target, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[http.client.HTTPResponse, bytes, dict[str, Any]]:
        for attempt in (1, 2):
            t = target.get()
            if not t:
                raise LookupError("no model is deployed on this endpoint")
            port = int(t["port"])
            conn, reused = self._conn(port)
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionRefusedError):
                self.drop(port)
                if attempt == 1 and (reused or target.get() != t):
                    continue  # nothing was answered: the server closed an idle connection or went away
                raise
            except OSError:
                self.drop(port)
                raise
            if resp.will_close:
                self.drop(port)
            return resp, data, t
        raise AssertionError("unreachable")


def make_handler(target: Target) -> type[BaseHTTPRequestHandler]:
    upstream = Upstream()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "mlops-ci-router"

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

        def _send(self, status: int, body: bytes, ctype: str, version: str = "") -> None:
            headers = {"Content-Type": ctype}
            if version:
                headers["X-Mlops-Ci-Version"] = version
            reply(self, status, body, headers)

        def _forward(self, method: str, body: bytes | None) -> None:
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
            if body is not None:
                headers["Content-Length"] = str(len(body))
            try:
                resp, data, t = upstream.send(target, method, self.path, body, headers)
            except LookupError as exc:
                self._send(503, json.dumps({"error": str(exc)}).encode(), "application/json")
                return
            except OSError as exc:
                msg = json.dumps({"error": f"model server unreachable: {exc}"}).encode()
                self._send(502, msg, "application/json")
                return
            version = resp.getheader("X-Mlops-Ci-Version") or str(t.get("version", ""))
            self._send(resp.status, data, resp.getheader("Content-Type") or "application/octet-stream", version)

        def do_GET(self) -> None:
            if self.path == "/_mlops_ci/router":
                self._send(200, json.dumps({"target": target.get()}).encode(), "application/json")
                return
            self._forward("GET", None)

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length", "-1"))
            except ValueError:
                length = -1
            if length < 0:
                self._send(411, b'{"error": "Content-Length is required"}', "application/json")
                return
            if length > MAX_BODY:
                self.close_connection = True
                self._send(
                    413,
                    json.dumps({"error": f"payload of {length} bytes exceeds the {MAX_BODY}-byte limit"}).encode(),
                    "application/json",
                )
                linger(self.connection, length)
                return
            self._forward("POST", self.rfile.read(length))

    return Handler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mlops-ci-router")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--ready-file", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    a = p.parse_args(argv)
    target = Target(Path(a.state_dir) / "target.json")
    server = Server((a.host, a.port), make_handler(target))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    write_ready(Path(a.ready_file), {"port": server.server_address[1], "pid": os.getpid()})
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
