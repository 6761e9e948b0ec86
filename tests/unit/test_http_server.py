"""The endpoints' HTTP server (mlops_ci.serving._http), in-process with short timeouts."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from mlops_ci.serving._http import MAX_BODY, Handler, Server, reply

RELEASE = threading.Event()


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        if self.path == "/early":  # answers without reading the body, as a 404 does
            reply(self, 404, b"no such path", {})
            return
        if self.path == "/bug":
            raise RuntimeError("a handler bug")
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
    while not srv._serving:
        time.sleep(0.01)
    yield srv
    RELEASE.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def _connect(srv: Server) -> socket.socket:
    return socket.create_connection(srv.server_address[:2], timeout=5)


_PENDING: dict[int, bytes] = {}  # bytes read past a response, per socket


def _read_response(s: socket.socket) -> bytes:
    """One response (head and body by its Content-Length); fails on a close mid-way."""
    data = _PENDING.pop(s.fileno(), b"")

    def more() -> bytes:
        chunk = s.recv(4096)
        assert chunk, f"the server closed the connection after {data!r}"
        return chunk

    while b"\r\n\r\n" not in data:
        data += more()
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1])
    while len(body) < length:
        body += more()
    _PENDING[s.fileno()] = body[length:]
    return head + b"\r\n\r\n" + body[:length]


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


def test_a_body_the_handler_did_not_read_is_never_taken_for_the_next_request(server: Server):
    with _connect(server) as s:
        s.sendall(b"POST /early HTTP/1.1\r\nContent-Length: 38\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx")
        assert b" 404 " in _read_response(s)
        assert s.recv(100) == b""  # closed: the smuggled "request" in the body got no answer


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", b" 501 "),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\nx", b" 501 "),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy", b" 400 "),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b" 400 "),
    ],
)
def test_ambiguous_framing_is_refused_and_the_connection_closed(server: Server, head: bytes, status: bytes):
    with _connect(server) as s:
        s.sendall(head)
        assert status in s.recv(200).split(b"\r\n")[0] + b" "
        assert s.recv(100) == b""


def test_a_head_with_bare_line_feeds_is_answered(server: Server):
    with _connect(server) as s:
        s.sendall(b"POST / HTTP/1.1\nContent-Length: 2\n\nok")
        assert _read_response(s).endswith(b"echo:ok")


def test_slow_uploads_hold_no_worker_and_time_out_whole(server: Server):
    slow = [_connect(server) for _ in range(10)]  # more than the 4 workers
    for s in slow:
        s.sendall(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nx")  # 1 byte of 100
    with _connect(server) as s:
        s.sendall(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nok")
        assert _read_response(s).endswith(b"echo:ok")
    server.body_timeout = 0.3  # applies to bodies whose head arrives from now on
    with _connect(server) as s:
        s.sendall(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nx")
        for _ in range(5):  # a byte now and then does not extend the body's deadline
            time.sleep(0.1)
            with contextlib.suppress(OSError):
                s.sendall(b"x")
        assert s.recv(100).startswith(b"HTTP/1.1 408 ")
    for s in slow:
        s.close()


def test_a_handler_bug_is_a_500_not_a_silent_close(server: Server):
    with _connect(server) as s:
        s.sendall(b"POST /bug HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert s.recv(200).startswith(b"HTTP/1.1 500 ")


def test_a_port_in_use_is_an_os_error_naming_it(server: Server):
    with pytest.raises(OSError, match="Address already in use"):
        Server(server.server_address[:2], Echo)


class Limited(Handler):
    def do_POST(self) -> None:
        self.close_connection = True
        reply(self, 413, b"too large", {})


def test_expect_100_continue_for_an_oversized_body_is_answered_413_before_the_upload():
    srv = Server(("127.0.0.1", 0), Limited, workers=2)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with _connect(srv) as s:
            s.sendall(b"POST / HTTP/1.1\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (MAX_BODY + 1))
            assert s.recv(100).startswith(b"HTTP/1.1 413 ")  # never "100 Continue"
    finally:
        srv.shutdown()
        srv.server_close()
