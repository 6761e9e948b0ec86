"""The stable front of a local endpoint: forwards to whichever model server `target.json`
names. A blue/green switch is one atomic rename of that file, so no request ever sees a
half-switched endpoint and the URL never changes across deploys.

Run as ``python -m mlops_ci.serving.router --state-dir D --ready-file F [--port N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TypedDict

from ._http import MAX_BODY, Server, default_processes, linger, reply
from ._http import Handler as BaseHandler
from .capture import Capturer, CaptureSettings
from .model_server import write_ready


class TargetFile(TypedDict, total=False):
    """target.json, as the endpoints front end writes it."""

    port: int
    version: int
    sha: str
    pid: int
    capture: CaptureSettings  # the endpoint's `capture:`, when it has one


class Target:
    def __init__(self, path: Path):
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._value: TargetFile | None = None
        self._lock = threading.Lock()

    def get(self) -> TargetFile | None:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)  # two renames in one tick differ by inode
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


STALE_AFTER = 50.0  # seconds idle after which a kept connection may have been closed (server: 60)


class Unanswered(ConnectionError):
    """The model server closed the connection before answering anything."""


class Answer:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status, self.headers, self.body = status, headers, body


class Link:
    """One keep-alive connection to a model server, spoken to directly: our model server always
    answers with a Content-Length, and http.client's generic parsing was most of the router's
    cost per request."""

    def __init__(self, port: int):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.used = time.monotonic()

    def close(self) -> None:
        self.sock.close()

    def open(self) -> bool:
        """Whether a kept connection can take a request: one the server closed (its worker
        died, it drained, it timed out) shows as readable with nothing to read, before anything
        is sent on it, so the request goes on a fresh connection instead of failing."""
        self.sock.setblocking(False)  # with a timeout set, recv would first wait for data
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True  # nothing to read: still open
        except OSError:
            return False
        finally:
            self.sock.settimeout(60)
        return False  # closed (b"") or bytes nobody asked for: out of step either way

    def exchange(self, head: bytes, body: bytes) -> tuple[Answer, bool]:
        """Send one request; the answer and whether the connection can be used again."""
        self.used = time.monotonic()
        self.sock.sendall(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.sock.sendall(body)
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            chunk = self.sock.recv(65536)
            if not chunk:
                if buf:
                    raise ConnectionError("the model server closed the connection mid-answer")
                raise Unanswered("the model server closed the connection")
            buf += chunk
            if len(buf) > 65536:
                raise ConnectionError("the model server sent an answer head over 64 KiB")
        lines = buf[:end].decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            raise ConnectionError(f"the model server sent a malformed status line {lines[0][:80]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        rest = buf[end + 4 :]
        keep = headers.get("connection", "").lower() != "close"
        if "content-length" in headers:
            size = int(headers["content-length"])
            while len(rest) < size:
                chunk = self.sock.recv(max(65536, size - len(rest)))
                if not chunk:
                    raise ConnectionError("the model server closed the connection mid-answer")
                rest += chunk
            data, self.buf = rest[:size], rest[size:]
        elif status < 200 or status in (204, 304):
            data, self.buf = b"", rest
        else:  # no length: the body runs to the end of the connection
            chunks = [rest]
            while chunk := self.sock.recv(65536):
                chunks.append(chunk)
            data, self.buf, keep = b"".join(chunks), b"", False
        # bytes after the answer (an answer the server sent early, a stray one) mean this
        # connection is out of step: never read them as the next request's answer
        return Answer(status, headers, data), keep and not self.buf


class Upstream:
    """Keep-alive connections to the model servers, one per worker thread and port. A reused
    connection the server has closed meanwhile (idle timeout, a drained old version) fails
    before any answer: the request is sent again once, on a fresh connection to the *current*
    target, so a blue/green switch loses no request."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _link(self, port: int) -> tuple[Link, bool]:
        links: dict[int, Link] = self._local.__dict__.setdefault("links", {})
        link = links.get(port)
        if link is not None and link.open():
            return link, True
        for old in links.values():  # the target moved: the old server is going away
            old.close()
        links.clear()
        link = links[port] = Link(port)
        return link, False

    def drop(self, port: int) -> None:
        link = self._local.__dict__.get("links", {}).pop(port, None)
        if link is not None:
            link.close()

    def send(
        self, target: Target, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[Answer, TargetFile]:
        # a folded header value keeps its line break: never let one reach the upstream head
        fields = "".join(f"{k}: {' '.join(v.split())}\r\n" for k, v in headers.items())
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{fields}Content-Length: {len(body)}\r\n\r\n"
        for attempt in (1, 2):
            t = target.get()
            if not t:
                raise LookupError("no model is deployed on this endpoint")
            port = int(t["port"])
            stale = False
            try:
                link, reused = self._link(port)
                stale = reused and time.monotonic() - link.used > STALE_AFTER
                answer, keep = link.exchange(head.encode("latin-1"), body)
            except (Unanswered, ConnectionResetError, BrokenPipeError, ConnectionRefusedError):
                self.drop(port)
                # Sent again only when nothing was answered and the request cannot have been
                # what broke the connection: the target moved (the old server drained and
                # closed it) or the connection sat idle to the server's idle timeout. A request
                # that crashed a worker is not sent to the next one.
                if attempt == 1 and (stale or target.get() != t):
                    continue
                raise
            except OSError:
                self.drop(port)
                raise
            if not keep:
                self.drop(port)
            return answer, t
        raise AssertionError("unreachable")


def make_handler(target: Target, capturer: Capturer | None = None) -> type[BaseHTTPRequestHandler]:
    upstream = Upstream()
    capture = capturer or Capturer()

    class Handler(BaseHandler):
        server_version = "mlops-ci-router"

        def _send(self, status: int, body: bytes, ctype: str, version: str = "") -> None:
            headers = {"Content-Type": ctype}
            if version:
                headers["X-Mlops-Ci-Version"] = version
            reply(self, status, body, headers)

        def _forward(self, method: str, body: bytes | None) -> None:
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
            started = time.perf_counter()
            try:
                answer, t = upstream.send(target, method, self.path, body or b"", headers)
            except LookupError as exc:
                self._send(503, json.dumps({"error": str(exc)}).encode(), "application/json")
                return
            except Unanswered:
                said = "the model server closed the connection without answering: this request may have crashed it"
                text = json.dumps({"error": f"{said} (see the endpoint's server.log)"}).encode()
                self._send(502, text, "application/json")
                return
            except OSError as exc:
                msg = json.dumps({"error": f"model server unreachable: {exc}"}).encode()
                self._send(502, msg, "application/json")
                return
            version = answer.headers.get("x-mlops-ci-version") or str(t.get("version", ""))
            ctype = answer.headers.get("content-type") or "application/octet-stream"
            self._send(answer.status, answer.body, ctype, version)
            settings = t.get("capture")
            if settings is not None and method == "POST" and self.path.split("?", 1)[0] == "/invocations":
                latency = (time.perf_counter() - started) * 1000.0
                request_type = self.headers.get("Content-Type") or "application/octet-stream"
                capture.offer(settings, body or b"", request_type, answer.body, ctype, answer.status, latency, version)

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
    # one process per CPU (up to 8) accepting on the one port: a single Python process
    # forwarding for 32 clients is bound by its interpreter lock
    ready = Path(a.ready_file)
    server.run(default_processes(), lambda: write_ready(ready, {"port": server.server_address[1], "pid": os.getpid()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
