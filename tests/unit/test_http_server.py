"""The endpoints' HTTP server (mlops_ci.serving._http), in-process with short timeouts."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from mlops_ci.serving._http import Server, reply

RELEASE = threading.Event()


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if body == b"slow":
            RELEASE.wait(10)
        reply(self, 200, b"echo:" + body, {"Content-Type": "text/plain"})


@pytest.fixture
def server() -> Iterator[Server]:
    RELEASE.clear()
    srv = Server(("127.0.0.1", 0), Echo, workers=4, max_connections=50, idle_timeout=0.5, head_timeout=0.5)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    RELEASE.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def _connect(srv: Server) -> socket.socket:
    return socket.create_connection(srv.server_address[:2], timeout=5)


def _read_response(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1])
    while len(body) < length:
        body += s.recv(4096)
    return head + b"\r\n\r\n" + body


def test_a_response_is_one_write_and_keep_alive_is_kept(server: Server):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=5)
    for i in range(20):
        conn.request("POST", "/", body=f"{i}".encode())
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, f"echo:{i}".encode())
        assert resp.getheader("Connection") is None  # kept alive
    conn.close()


def test_pipelined_requests_are_answered_in_order(server: Server):
    with _connect(server) as s:
        s.sendall(b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\naPOST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nb")
        first, second = _read_response(s), _read_response(s)
    assert first.endswith(b"echo:a") and second.endswith(b"echo:b")


def test_an_idle_connection_is_closed_after_the_idle_timeout(server: Server):
    with _connect(server) as s:
        assert server.open_connections <= 1
        time.sleep(1.0)
        assert s.recv(10) == b""  # closed by the server, no answer to a request never sent
    assert server.open_connections == 0


def test_a_head_too_large_is_431(server: Server):
    with _connect(server) as s:
        s.sendall(b"POST / HTTP/1.1\r\nX-Big: " + b"a" * 70_000)
        assert s.recv(100).startswith(b"HTTP/1.1 431 ")


def test_over_max_connections_the_longest_idle_is_closed(server: Server):
    socks = [_connect(server) for _ in range(50)]
    time.sleep(0.1)
    newest = _connect(server)
    newest.sendall(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nok")
    assert _read_response(newest).endswith(b"echo:ok")
    assert socks[0].recv(10) == b""  # the oldest made room
    for s in [*socks, newest]:
        s.close()


def test_a_busy_worker_pool_queues_requests_instead_of_dropping_them(server: Server):
    slow = [_connect(server) for _ in range(4)]  # every worker held
    for s in slow:
        s.sendall(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nslow")
    time.sleep(0.1)
    waiting = _connect(server)
    waiting.sendall(b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nq")
    RELEASE.set()
    assert _read_response(waiting).endswith(b"echo:q")
    assert all(_read_response(s).endswith(b"echo:slow") for s in slow)
    for s in [*slow, waiting]:
        s.close()


def test_shutdown_lets_a_request_being_served_finish(server: Server):
    s = _connect(server)
    s.sendall(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nslow")
    time.sleep(0.1)
    stopper = threading.Thread(target=server.shutdown)
    stopper.start()
    time.sleep(0.1)
    RELEASE.set()
    assert _read_response(s).endswith(b"echo:slow")
    stopper.join(5)
    s.close()
