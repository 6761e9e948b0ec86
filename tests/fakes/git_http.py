"""A git server over HTTP for the tests: git's own `git http-backend` (the smart protocol, and the
dumb one for clients that want it) behind a small CGI bridge, so fetches and pushes are real
git on both sides. Like GitHub it takes a token as HTTP Basic auth, `x-access-token:<token>`
(the form actions/checkout persists as `http.https://github.com/.extraheader`); a push
(git-receive-pack) needs a token of `writers`, a fetch needs none (a public repository).

What `git http-backend` needs is documented in git-http-backend(1): GIT_PROJECT_ROOT,
GIT_HTTP_EXPORT_ALL, PATH_INFO, QUERY_STRING, REQUEST_METHOD, CONTENT_TYPE, and REMOTE_USER
for receive-pack, which it refuses to anonymous users. It reads the request body whole from its
stdin (gzip-encoded when HTTP_CONTENT_ENCODING says so); git sends bodies over http.postBuffer
chunked, so the bridge de-chunks them first.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

BACKEND = [os.path.join(subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout
                        .strip(), "git-http-backend")]  # fmt: skip


class GitHttpServer:
    def __init__(self, root: Path, writers: set[str] | None = None):
        self.root, self.writers = root, set(writers or ())
        self.pushes: list[tuple[str, str]] = []  # (user, path) of every accepted receive-pack
        self.refused: list[str] = []  # why a request was refused
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _user(self) -> str | None:
                auth = self.headers.get("Authorization", "")
                if not auth.lower().startswith("basic "):
                    return None
                try:
                    _, _, token = base64.b64decode(auth[6:]).decode().partition(":")
                except ValueError:
                    return None
                return token if token in server.writers else None

            def _deny(self, why: str) -> None:
                server.refused.append(why)
                body = f"{why}\n".encode()
                self.send_response(401 if "credentials" in why else 403)
                self.send_header("WWW-Authenticate", 'Basic realm="fake GitHub"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _serve(self) -> None:
                url = urlsplit(self.path)
                body = self._body() if self.command == "POST" else b""
                push = url.path.endswith("/git-receive-pack") or "service=git-receive-pack" in url.query
                user = self._user()
                if push and user is None:
                    # GitHub answers a push without (valid) credentials with 401 and a Basic challenge
                    self._deny("push without valid credentials")
                    return
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "GIT_PROJECT_ROOT": str(server.root), "GIT_HTTP_EXPORT_ALL": "1",
                    "PATH_INFO": url.path, "QUERY_STRING": url.query, "REQUEST_METHOD": self.command,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                    "REMOTE_USER": user or "", "REMOTE_ADDR": "127.0.0.1",
                }  # fmt: skip
                out = subprocess.run(BACKEND, input=body, env=env, capture_output=True, check=False).stdout
                head, _, payload = out.partition(b"\r\n\r\n")
                if not _:
                    head, _, payload = out.partition(b"\n\n")
                status, headers = 200, []
                for line in head.decode(errors="replace").splitlines():
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.strip().split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                if push and url.path.endswith("/git-receive-pack") and status == 200:
                    server.pushes.append((user or "", url.path))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _serve
            do_POST = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> GitHttpServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def bare(self, name: str) -> Path:
        """The bare repository `name` (OWNER/REPO), created empty and pushable when missing."""
        path = self.root / f"{name}.git"
        if not path.exists():
            path.mkdir(parents=True)
            subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
            subprocess.run(["git", "--git-dir", str(path), "config", "http.receivepack", "true"], check=True)
        return path
