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

from .model_server import MAX_BODY, Server, write_ready


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


def make_handler(target: Target) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "mlops-ci-router"

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

        def _send(self, status: int, body: bytes, ctype: str, version: str = "") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if version:
                self.send_header("X-Mlops-Ci-Version", version)
            self.end_headers()
            self.wfile.write(body)

        def _forward(self, method: str, body: bytes | None) -> None:
            t = target.get()
            if not t:
                self._send(503, b'{"error": "no model is deployed on this endpoint"}', "application/json")
                return
            conn = http.client.HTTPConnection("127.0.0.1", int(t["port"]), timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
            if body is not None:
                headers["Content-Length"] = str(len(body))
            try:
                conn.request(method, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except OSError as exc:
                msg = json.dumps({"error": f"model server unreachable: {exc}"}).encode()
                self._send(502, msg, "application/json")
                return
            finally:
                conn.close()
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
                self._send(413, b'{"error": "payload too large"}', "application/json")
                self.close_connection = True
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
