"""The HTTP/1.1 server under the router and the model server.

The standard library's ThreadingHTTPServer gives every connection a thread for its whole life,
with no timeout: 1,000 idle keep-alive connections are 1,000 blocked threads, and a client that
sends half a request holds its thread for ever. Here one selector thread owns every connection
*between* requests and reads each whole request (head, then body by its Content-Length) without
blocking, under deadlines; only a complete request goes to a bounded pool of worker threads,
which runs the handler for that one request and hands the connection back. So:

- an idle connection costs a file descriptor, not a thread, and is closed after `idle_timeout`;
- a request head must arrive whole within `head_timeout` of its first byte (slow loris), and
  its body within `body_timeout` of the head (slow uploads hold no worker while they trickle);
- at most `workers` requests run at once; at most `max_connections` are open: over that, the
  longest-idle connection is closed to make room (HTTP lets a server close an idle connection);
- framing is strict: Transfer-Encoding is refused (501), conflicting Content-Lengths are 400,
  and a connection whose request body was not consumed exactly is closed, never reused: what
  is left of a body must not be read as the next request;
- every accepted socket has TCP_NODELAY, and `reply` writes a response in one send: small
  separate writes under Nagle + delayed ACK cost a keep-alive client ~40 ms per request.

`run` serves in this process, or forks worker processes sharing the listening socket under a
supervisor that replaces a worker that dies and stops them all on SIGTERM.

Handlers are BaseHTTPRequestHandler subclasses, used one request at a time.
"""

from __future__ import annotations

import contextlib
import io
import os
import selectors
import signal
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler

MAX_HEAD = 64 * 1024  # request line + headers; more is 431
MAX_BODY = 6 * 1024 * 1024  # SageMaker real-time endpoints accept payloads up to 6 MB


def _plain(status: int, reason: str, message: str = "") -> bytes:
    body = message.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


def _head_end(buf: bytes) -> int:
    """Index just past the blank line ending a request head (CRLF or bare LF), or -1."""
    ends = [i + 4 for i in (buf.find(b"\r\n\r\n"),) if i >= 0] + [i + 2 for i in (buf.find(b"\n\n"),) if i >= 0]
    return min(ends) if ends else -1


class _Framing:
    """What a request head says about its body."""

    __slots__ = ("error", "expect", "length")

    def __init__(self, head: bytes):
        self.error: bytes | None = None
        self.length = 0
        self.expect = False
        lengths: set[bytes] = set()
        for line in head.split(b"\n")[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            key = name.strip().lower()
            if key == b"content-length":
                lengths.add(value.strip())
            elif key == b"transfer-encoding":
                self.error = _plain(501, "Not Implemented", "Transfer-Encoding is not supported; send a Content-Length")
                return
            elif key == b"expect" and value.strip().lower() == b"100-continue":
                self.expect = True
        if len(lengths) > 1 or any(not v.isdigit() for v in lengths):
            self.error = _plain(400, "Bad Request", "one Content-Length, a whole number, is required")
        elif lengths:
            self.length = int(next(iter(lengths)))


class _Reader:
    """The handler's rfile: the request already read by the selector (its head, usually its
    body), then the socket. `read(n)` never takes more than n bytes from the socket, and counts
    the body bytes taken, so the server knows whether the body was consumed exactly."""

    def __init__(self, sock: socket.socket, data: bytes, head_size: int, deadline: float):
        self.sock = sock
        self.buf = io.BytesIO(data)
        self.head_size = head_size
        self.deadline = deadline
        self.taken = 0

    def readline(self, limit: int = -1) -> bytes:
        if self.buf.tell() >= self.head_size:
            return b""  # the head is whole: a header parser never reads into the body
        return self.buf.readline(min(limit, self.head_size - self.buf.tell()) if limit >= 0 else -1)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            raise ValueError("a body is read by its Content-Length")
        out = bytearray(self.buf.read(n))
        while len(out) < n:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request body did not arrive in time")
            self.sock.settimeout(left)
            chunk = self.sock.recv(min(n - len(out), 1 << 20))
            if not chunk:
                raise ConnectionError("the client closed the connection mid-body")
            out += chunk
        self.taken += len(out)
        return bytes(out)

    def rest(self) -> bytes:
        return self.buf.read()

    def close(self) -> None:
        pass


class _Writer:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sent = False

    def write(self, data: bytes) -> int:
        self.sent = True
        self.sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Conn:
    __slots__ = ("addr", "buf", "deadline", "framing", "handler", "head", "sock")

    def __init__(self, sock: socket.socket, addr: tuple[str, int]):
        self.sock, self.addr = sock, addr
        self.buf = b""
        self.head = -1  # end of the current request's head in buf, once it has arrived
        self.framing: _Framing | None = None
        self.handler: BaseHTTPRequestHandler | None = None
        self.deadline = 0.0


class Handler(BaseHTTPRequestHandler):
    """The base of the router's and the model server's handlers: HTTP/1.1, requests logged to
    stderr (the endpoint's log), and `Expect: 100-continue` refused up front for a body over
    MAX_BODY (the handler's do_POST answers 413) instead of inviting the upload."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def handle_expect_100(self) -> bool:
        if int(self.headers.get("Content-Length") or 0) > MAX_BODY:
            self.do_POST()  # type: ignore[attr-defined]
            return False
        return super().handle_expect_100()


def _field(value: object) -> str:
    """A header value on one line: a folded or hostile value never starts a header of its own."""
    return " ".join(str(value).split())


def reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]) -> None:
    """Send a whole response with one write (status line, headers, body)."""
    phrase = handler.responses.get(status, ("",))[0]
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        f"Server: {handler.version_string()}",
        f"Date: {handler.date_time_string()}",
        *(f"{k}: {_field(v)}" for k, v in headers.items()),
        f"Content-Length: {len(body)}",
    ]
    if handler.close_connection:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    handler.wfile.write(head + body)
    handler.log_request(status, len(body))


def linger(sock: socket.socket, limit: int, seconds: float = 2.0) -> None:
    """After refusing a request whose body is still coming (413), read and drop it for a while
    before closing, so the client finishes sending and reads the answer instead of a reset."""
    end = time.monotonic() + seconds
    taken = 0
    try:
        sock.shutdown(socket.SHUT_WR)
        while taken < limit and (left := end - time.monotonic()) > 0:
            sock.settimeout(left)
            chunk = sock.recv(1 << 20)
            if not chunk:
                return
            taken += len(chunk)
    except OSError:
        return


class Server(socketserver.TCPServer):
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        workers: int = 32,
        max_connections: int = 4096,
        idle_timeout: float = 60.0,
        head_timeout: float = 10.0,
        body_timeout: float = 60.0,
        max_body: int = MAX_BODY,
    ):
        self.handler_class = handler
        self.workers, self.max_connections = workers, min(max_connections, _raise_fd_limit() - 64)
        self.idle_timeout, self.head_timeout, self.body_timeout = idle_timeout, head_timeout, body_timeout
        self.max_body = max_body
        self.children: set[int] = set()
        self._init_state()  # before binding: a failed bind calls server_close
        super().__init__(address, handler)

    def _init_state(self) -> None:
        """What each process has for itself (a forked worker makes its own)."""
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="http")
        self._back: deque[_Conn] = deque()  # connections a worker handed back
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._serving = False
        self._idle: dict[socket.socket, _Conn] = {}  # registered in the selector, oldest first
        self._busy: set[_Conn] = set()  # with a worker or waiting for one
        self._lock = threading.Lock()

    @property
    def open_connections(self) -> int:
        return len(self._idle) + len(self._busy)

    # selector thread ---------------------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.5) -> None:
        if self._stop.is_set():  # shut down before it started
            self._stopped.set()
            return
        sel = selectors.DefaultSelector()
        self.socket.setblocking(False)
        sel.register(self.socket, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._serving = True
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(self._next_timeout(poll_interval)):
                    if key.data == "accept":
                        self._accept(sel)
                    elif key.data == "wake":
                        self._take_back(sel)
                    else:
                        self._read(sel, key.data)
                self._expire(sel)
        finally:
            for conn in list(self._idle.values()):
                self._close(sel, conn)
            sel.close()
            self._stopped.set()

    def _next_timeout(self, poll_interval: float) -> float:
        if not self._idle:
            return poll_interval
        soonest = min(c.deadline for c in self._idle.values())
        return max(0.0, min(poll_interval, soonest - time.monotonic()))

    def _accept(self, sel: selectors.BaseSelector) -> None:
        for _ in range(256):  # a burst: take what is there, then serve the rest of the loop
            try:
                sock, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EMFILE and friends: make room, try again next round
                if not self._evict(sel):
                    time.sleep(0.01)  # nothing idle to close: do not spin
                return
            if self.open_connections >= self.max_connections and not self._evict(sel):
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._wait(sel, _Conn(sock, addr))

    def _wait(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        conn.deadline = time.monotonic() + (self.head_timeout if conn.buf else self.idle_timeout)
        self._idle[conn.sock] = conn
        sel.register(conn.sock, selectors.EVENT_READ, conn)

    def _evict(self, sel: selectors.BaseSelector) -> bool:
        """Close the longest-idle connection that is between requests."""
        for conn in self._idle.values():
            if not conn.buf:
                self._close(sel, conn)
                return True
        return False

    def _read(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(sel, conn)
            return
        if not conn.buf:  # the first byte of a request: its head has head_timeout to arrive
            conn.deadline = time.monotonic() + self.head_timeout
        conn.buf += data
        self._dispatch_if_ready(sel, conn)

    def _dispatch_if_ready(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        if conn.head < 0:
            end = _head_end(conn.buf[: MAX_HEAD + 4])
            if end < 0:
                if len(conn.buf) > MAX_HEAD:
                    self._refuse(sel, conn, _plain(431, "Request Header Fields Too Large"))
                return
            conn.head, conn.framing = end, _Framing(conn.buf[:end])
            if conn.framing.error:
                self._refuse(sel, conn, conn.framing.error)
                return
            conn.deadline = time.monotonic() + self.body_timeout  # the whole body, not each read
        framing = conn.framing
        assert framing is not None
        # An oversized body (the handler answers 413) or one awaiting `100 Continue` goes to the
        # handler at once; any other body is read here, so a slow upload holds no worker.
        if not (framing.expect or framing.length > self.max_body) and len(conn.buf) < conn.head + framing.length:
            return
        sel.unregister(conn.sock)
        del self._idle[conn.sock]
        with self._lock:
            self._busy.add(conn)
        self._pool.submit(self._serve, conn)

    def _refuse(self, sel: selectors.BaseSelector, conn: _Conn, answer: bytes) -> None:
        with contextlib.suppress(OSError):
            conn.sock.send(answer)
        self._close(sel, conn)

    def _take_back(self, sel: selectors.BaseSelector) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._wake_r.recv(4096):
                pass
        while True:
            with self._lock:
                if not self._back:
                    return
                conn = self._back.popleft()
                self._busy.discard(conn)
            if self._stop.is_set():
                conn.sock.close()
                continue
            conn.sock.setblocking(False)
            self._wait(sel, conn)
            if conn.buf:  # a pipelined request came with the last one
                self._dispatch_if_ready(sel, conn)

    def _expire(self, sel: selectors.BaseSelector) -> None:
        now = time.monotonic()
        for conn in [c for c in self._idle.values() if c.deadline <= now]:
            if conn.buf:  # a request that did not arrive in time
                self._refuse(sel, conn, _plain(408, "Request Timeout"))
            else:
                self._close(sel, conn)

    def _close(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        if self._idle.pop(conn.sock, None) is not None:
            sel.unregister(conn.sock)
        conn.sock.close()

    # worker threads ----------------------------------------------------------------------
    def _serve(self, conn: _Conn) -> None:
        keep = False
        h: BaseHTTPRequestHandler | None = None
        try:
            assert conn.framing is not None
            framing, head = conn.framing, conn.head
            conn.sock.settimeout(self.body_timeout)
            h = conn.handler or self._handler(conn)
            writer: _Writer = h.wfile  # type: ignore[assignment]
            writer.sent = False
            reader = _Reader(conn.sock, conn.buf, head, conn.deadline)
            conn.buf, conn.head, conn.framing = b"", -1, None
            h.rfile = reader  # type: ignore[assignment]
            h.close_connection = True
            h.handle_one_request()
            conn.buf = reader.rest()
            # a body not taken whole (a handler that answered early) would be read as a request
            exact = reader.taken == framing.length
            keep = exact and not h.close_connection and not self._stop.is_set()
        except OSError:
            keep = False
        except Exception:  # noqa: BLE001 - a handler bug must not take the worker with it
            import traceback

            traceback.print_exc()
            keep = False
            if h is not None and not h.wfile.sent:  # type: ignore[attr-defined]
                with contextlib.suppress(OSError):
                    conn.sock.sendall(_plain(500, "Internal Server Error", "the server failed on this request"))
        finally:
            if keep:
                with self._lock:
                    self._back.append(conn)
                with contextlib.suppress(OSError):
                    self._wake_w.send(b"\0")
            else:
                with self._lock:
                    self._busy.discard(conn)
                with contextlib.suppress(OSError):
                    conn.sock.close()

    def _handler(self, conn: _Conn) -> BaseHTTPRequestHandler:
        h = self.handler_class.__new__(self.handler_class)
        h.request = h.connection = conn.sock
        h.client_address = conn.addr
        h.server = self
        h.wfile = _Writer(conn.sock)  # type: ignore[assignment]
        conn.handler = h
        return h

    # life --------------------------------------------------------------------------------
    def run(self, processes: int, ready: Callable[[], None], poll_interval: float = 0.2) -> None:
        """Serve until SIGTERM: in this process, or (processes > 1, Linux) in that many forked
        workers, the model loaded once before and shared copy-on-write, as SageMaker's serving
        containers run one worker per CPU. This process then only supervises: a worker that
        dies is replaced, SIGTERM is passed on and every worker drains before it exits, and the
        workers die with it (PR_SET_PDEATHSIG) if it is killed."""
        if processes <= 1 or not hasattr(os, "fork") or sys.platform != "linux":
            signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=self.shutdown, daemon=True).start())
            ready()
            try:
                self.serve_forever(poll_interval)
            finally:
                self.server_close()
            return
        stopping = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
        for _ in range(processes):
            if self._fork_worker(poll_interval):
                return
        ready()
        last_fork = 0.0
        while not stopping.is_set():
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid and pid in self.children:
                self.children.discard(pid)
                sys.stderr.write(f"worker {pid} exited; starting another\n")
                time.sleep(max(0.0, last_fork + 0.5 - time.monotonic()))  # a crash loop forks twice a second
                last_fork = time.monotonic()
                if self._fork_worker(poll_interval):
                    return
            stopping.wait(0.1)
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while self.children:
            for pid in list(self.children):
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG)[0] == 0:
                        if time.monotonic() < deadline:
                            continue
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                self.children.discard(pid)
            time.sleep(0.02)
        super().server_close()

    def _fork_worker(self, poll_interval: float) -> bool:
        """Fork one worker; in the worker, serve until SIGTERM and exit (never returns)."""
        parent = os.getpid()
        pid = os.fork()
        if pid:
            self.children.add(pid)
            return False
        try:
            self.children = set()
            for s in (self._wake_r, self._wake_w):
                s.close()
            self._init_state()
            _die_with(parent)
            signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=self.shutdown, daemon=True).start())
            try:
                self.serve_forever(poll_interval)
            finally:
                self.server_close()
        finally:
            sys.stderr.flush()
            os._exit(0)

    def shutdown(self) -> None:
        """Stop accepting; idle connections close; requests being served finish."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if self._serving:
            self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=True)
        with self._lock:  # what workers handed back after the selector stopped, or never served
            for conn in [*self._back, *self._busy]:
                conn.sock.close()
            self._back.clear()
            self._busy.clear()
        for s in (self._wake_r, self._wake_w):
            s.close()


def _die_with(parent: int) -> None:
    """Linux: the kernel sends SIGTERM to this process when its parent dies (PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(0)


def _raise_fd_limit() -> int:
    """Lift the soft limit on open files to the hard one (1,024 by default on Linux: a burst of
    idle clients would otherwise exhaust it) and return it."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 65536
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        return int(soft) if soft != resource.RLIM_INFINITY else 65536
    except (ImportError, ValueError, OSError):
        return 1024


def default_processes() -> int:
    """The CPUs this process may use (its affinity, not the host's count), at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))
