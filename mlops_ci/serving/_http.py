"""The HTTP/1.1 server under the router and the model server.

The standard library's ThreadingHTTPServer gives every connection a thread for its whole life,
with no timeout: 1,000 idle keep-alive connections are 1,000 blocked threads, and a client that
sends half a request head holds its thread for ever. Here one selector thread owns every
connection *between* requests and reads request heads without blocking, each under a deadline;
only a complete head goes to a bounded pool of worker threads, which runs the handler for that
one request and hands the connection back. So:

- an idle connection costs a file descriptor, not a thread, and is closed after `idle_timeout`;
- a request head must arrive whole within `head_timeout` of its first byte (slow-loris);
- a body must keep arriving (`body_timeout` per read) and a response must keep leaving;
- at most `workers` requests run at once; at most `max_connections` are open: over that, the
  longest-idle connection is closed to make room (HTTP lets a server close an idle connection);
- every accepted socket has TCP_NODELAY, and `reply` writes a response in one send: small
  separate writes under Nagle + delayed ACK cost a keep-alive client ~40 ms per request.

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
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from typing import Any

MAX_HEAD = 64 * 1024  # request line + headers; more is 431


class _Reader:
    """The handler's rfile: the request head already read by the selector, then the socket.
    `read(n)` never takes more than n bytes from the socket, so a pipelined next request stays
    for the next round."""

    def __init__(self, sock: socket.socket, head: bytes):
        self.sock = sock
        self.buf = io.BytesIO(head)

    def readline(self, limit: int = -1) -> bytes:
        return self.buf.readline(limit)  # the head is complete: headers never read past it

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            raise ValueError("a body is read by its Content-Length")
        out = bytearray(self.buf.read(n))
        while len(out) < n:
            chunk = self.sock.recv(min(n - len(out), 1 << 20))
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def rest(self) -> bytes:
        return self.buf.read()

    def close(self) -> None:
        pass


class _Writer:
    def __init__(self, sock: socket.socket):
        self.sock = sock

    def write(self, data: bytes) -> int:
        self.sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Conn:
    __slots__ = ("addr", "buf", "deadline", "handler", "idle_since", "sock")

    def __init__(self, sock: socket.socket, addr: Any):
        self.sock, self.addr = sock, addr
        self.buf = b""
        self.handler: BaseHTTPRequestHandler | None = None
        self.idle_since = self.deadline = 0.0


def reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]) -> None:
    """Send a whole response with one write (status line, headers, body)."""
    phrase = handler.responses.get(status, ("",))[0]
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        f"Server: {handler.version_string()}",
        f"Date: {handler.date_time_string()}",
        *(f"{k}: {v}" for k, v in headers.items()),
        f"Content-Length: {len(body)}",
    ]
    if handler.close_connection:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "strict")
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
        body_timeout: float = 30.0,
    ):
        super().__init__(address, handler)
        self.handler_class = handler
        self.workers, self.max_connections = workers, min(max_connections, _raise_fd_limit() - 64)
        self.idle_timeout, self.head_timeout, self.body_timeout = idle_timeout, head_timeout, body_timeout
        self.children: list[int] = []
        self._init_state()

    def _init_state(self) -> None:
        """What each process has for itself (after prefork, a child makes its own)."""
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="http")
        self._back: deque[_Conn] = deque()  # connections a worker handed back
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._idle: dict[socket.socket, _Conn] = {}  # registered in the selector, oldest first
        self._busy: set[_Conn] = set()  # with a worker or waiting for one
        self._lock = threading.Lock()

    @property
    def open_connections(self) -> int:
        return len(self._idle) + len(self._busy)

    # selector thread ---------------------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.5) -> None:
        sel = selectors.DefaultSelector()
        self.socket.setblocking(False)
        sel.register(self.socket, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
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
        now = time.monotonic()
        conn.idle_since = now
        conn.deadline = now + (self.head_timeout if conn.buf else self.idle_timeout)
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
            data = conn.sock.recv(MAX_HEAD)
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
        end = conn.buf.find(b"\r\n\r\n")
        if end < 0 and len(conn.buf) <= MAX_HEAD:
            return
        sel.unregister(conn.sock)
        del self._idle[conn.sock]
        with self._lock:
            self._busy.add(conn)
        self._pool.submit(self._serve, conn, end >= 0 and end + 4 <= MAX_HEAD)

    def _take_back(self, sel: selectors.BaseSelector) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            with self._lock:
                if not self._back:
                    return
                conn = self._back.popleft()
            with self._lock:
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
            if conn.buf:  # a head that did not arrive in time
                self._try_send(
                    conn.sock, b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            self._close(sel, conn)

    def _close(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        if self._idle.pop(conn.sock, None) is not None:
            sel.unregister(conn.sock)
        conn.sock.close()

    @staticmethod
    def _try_send(sock: socket.socket, data: bytes) -> None:
        with contextlib.suppress(OSError):
            sock.send(data)

    # worker threads ----------------------------------------------------------------------
    def _serve(self, conn: _Conn, complete: bool) -> None:
        keep = False
        try:
            conn.sock.settimeout(self.body_timeout)
            if not complete:
                conn.sock.sendall(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
                                  b"Connection: close\r\n\r\n")  # fmt: skip
                return
            end = conn.buf.index(b"\r\n\r\n") + 4
            head, conn.buf = conn.buf[:end], conn.buf[end:]
            h = conn.handler or self._handler(conn)
            reader = _Reader(conn.sock, head + conn.buf)
            conn.buf = b""
            h.rfile = reader  # type: ignore[assignment]
            h.close_connection = True
            h.handle_one_request()
            conn.buf = reader.rest()
            keep = not h.close_connection and not self._stop.is_set()
        except OSError:
            keep = False
        except Exception:  # noqa: BLE001 - a handler bug must not take the worker with it
            import traceback

            traceback.print_exc()
            keep = False
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
    def prefork(self, processes: int) -> bool:
        """Fork `processes - 1` copies that accept on the same listening socket (the model is
        loaded once, before, and shared copy-on-write), as SageMaker's serving containers run
        one worker per CPU. Call before any thread starts. True in a child, which dies with its
        parent: a killed server never leaves workers behind."""
        parent = os.getpid()
        for _ in range(processes - 1):
            pid = os.fork()
            if pid == 0:
                self.children = []
                self._init_state()
                _die_with(parent)
                return True
            self.children.append(pid)
        return False

    def stop_children(self, sig: int = signal.SIGTERM) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def shutdown(self) -> None:
        """Stop accepting; idle connections close; requests being served finish."""
        self.stop_children()
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=True)
        for s in (self._wake_r, self._wake_w):
            s.close()
        deadline = time.monotonic() + 10
        for pid in self.children:
            while True:
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if done:
                    break
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.02)


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
