"""The team store for a team without a cloud account: the records in the repository's own git refs.

``store: git`` keeps ObjectStore's records (mlops_ci/backends/object_store.py) as JSON blobs in
the tree of one commit, ``refs/mlops-ci/store`` on the repository's ``origin``: outside
``refs/heads`` and ``refs/tags``, so no branch, tag, checkout or clone of the branches shows it.
Every write is a new commit with that one key changed, pushed with
``--force-with-lease=<ref>:<the commit it was built on>``: a compare-and-swap on the ref. When
another job pushed first, the write is checked again on the new tip (a key written by someone
else is a conflict, any other key is not) and retried. The commits have no parents: the ref is
the current state, not a history, so a fresh runner fetches one tree and nothing older; the
records themselves are immutable and carry their own times.

Artifacts are blobs too, each under its own ref ``refs/mlops-ci/artifacts/<sha256>`` (created
once), fetched only by a job that uses it. GitHub refuses files over 100 MB: a larger artifact is
refused with the fix (the S3 store).

URL: ``git`` (remote ``origin``, refs ``refs/mlops-ci``), or ``git+REMOTE`` where REMOTE is a
remote's name or URL, then optionally ``?max_artifact_mb=N`` and ``#NAMESPACE``. Under GitHub
Actions the job's token (``MLOPS_CI_GITHUB_TOKEN``, else ``GITHUB_TOKEN``) authenticates to the
remote when actions/checkout did not persist its own: the starter workflows check out with
``persist-credentials: false``. It is handed to git in its environment (GIT_CONFIG_*), never on a
command line, and sent only to the GitHub server's host.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import parse_qs, urlparse

from ..ci import detect
from ..errors import (
    AlreadyExists,
    ConfigError,
    GitError,
    IntegrityError,
    PermissionDenied,
    ServiceRefused,
    Transient,
)
from .object_store import ObjectStore, dumps

GITHUB_FILE_LIMIT_MB = 100  # GitHub refuses a push with a file over 100 MiB (docs: "About large files on GitHub")
_NAMESPACE = re.compile(r"^refs/(?!heads/|tags/|remotes/|pull/)[A-Za-z0-9][A-Za-z0-9._/-]*[A-Za-z0-9]\Z")
_IDENTITY = {
    "GIT_AUTHOR_NAME": "mlops-ci",
    "GIT_AUTHOR_EMAIL": "mlops-ci@users.noreply.github.com",
    "GIT_COMMITTER_NAME": "mlops-ci",
    "GIT_COMMITTER_EMAIL": "mlops-ci@users.noreply.github.com",
}


@dataclass(frozen=True)
class GitLocation:
    remote: str = "origin"
    namespace: str = "refs/mlops-ci"
    max_artifact_mb: float = GITHUB_FILE_LIMIT_MB

    @classmethod
    def parse(cls, url: str) -> GitLocation:
        if url != "git" and not url.startswith(("git+", "git#", "git?")):
            raise ConfigError(f"store '{url}' is not a git store (git, or git+REMOTE#refs/NAMESPACE)")
        rest, _, namespace = url[3:].partition("#")
        rest, _, query = rest.partition("?")
        remote = rest.removeprefix("+") or "origin"
        if "\n" in url or "\r" in url or remote.startswith("-") or remote.lower().startswith(("ext::", "fd::")):
            raise ConfigError(f"store {url!r}: not a remote name or URL")
        namespace = namespace.rstrip("/") or "refs/mlops-ci"
        if not _NAMESPACE.match(namespace) or ".." in namespace or "//" in namespace or ".lock" in namespace:
            raise ConfigError(
                f"store '{url}': '{namespace}' is not a ref namespace of its own; use refs/NAME (refs/heads and "
                "refs/tags would show the records as branches or tags)"
            )
        q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        if set(q) - {"max_artifact_mb"}:
            raise ConfigError(f"store '{url}': unknown option(s) {', '.join(sorted(set(q) - {'max_artifact_mb'}))}; "
                              "allowed: max_artifact_mb")  # fmt: skip
        limit = float(GITHUB_FILE_LIMIT_MB)
        if "max_artifact_mb" in q:
            try:
                limit = float(q["max_artifact_mb"])
            except ValueError:
                limit = -1.0
            if not 0 < limit <= GITHUB_FILE_LIMIT_MB:
                raise ConfigError(f"store '{url}': max_artifact_mb must be a number of MB above 0, at most "
                                  f"{GITHUB_FILE_LIMIT_MB} (GitHub refuses larger files)")  # fmt: skip
        return cls(remote, namespace, limit)


def repository_of(start: Path) -> Path:
    """The git directory of the repository that holds `start`."""
    try:
        out = subprocess.run(["git", "rev-parse", "--absolute-git-dir"], cwd=start, capture_output=True,
                             text=True, check=False)  # fmt: skip
    except FileNotFoundError:
        raise GitError("the git store needs git on PATH; install git") from None
    if out.returncode != 0:
        raise GitError(f"the git store keeps its records in the refs of this repository, and {start} is not in a "
                       "git repository; run inside a clone, or use another store")  # fmt: skip
    return Path(out.stdout.strip())


class GitStore(ObjectStore):
    kind = "git"

    def __init__(self, location: GitLocation, project: str, git_dir: Path, env: Mapping[str, str] | None = None, *,
                 clock: Callable[[], float] = time.time, max_age: float = 5.0):  # fmt: skip
        """`git_dir`: the repository whose object database holds the store's objects;
        `max_age`: seconds a snapshot of the ref serves reads before it is fetched again."""
        self.loc, self.project, self.clock, self.max_age = location, project, clock, max_age
        self.root = f"projects/{project}"
        self.git_dir = git_dir
        self.ref = f"{location.namespace}/store"
        self.uploaded_bytes = 0
        self._tip: str | None = None
        self._synced = -1e18
        self._reader: subprocess.Popen[bytes] | None = None
        self._env = self._git_env(dict(os.environ if env is None else env))
        u = urlparse(location.remote)  # the remote as shown and recorded: never with a password
        self._shown = location.remote if not u.password and not u.username else \
            u._replace(netloc=(u.hostname or "") + (f":{u.port}" if u.port else "")).geturl()  # fmt: skip

    # -- running git ------------------------------------------------------------------------------
    def _git_env(self, env: dict[str, str]) -> dict[str, str]:
        out = {k: v for k, v in env.items() if not k.startswith(("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"))}
        out.update(_IDENTITY)
        out["GIT_TERMINAL_PROMPT"] = "0"  # never wait for a password on a runner
        # the transports a store may use: never ext:: or fd:: (a remote that runs a command),
        # whatever the repository's or the user's git config allows
        out["GIT_ALLOW_PROTOCOL"] = "https:http:ssh:git:file"
        out["GIT_DIR"] = str(self.git_dir)
        job = detect(env)
        token = job.token
        u = urlparse(self.remote_url(out))
        github = (urlparse(job.server_url).hostname or "").lower()
        # the job's GitHub token goes to GitHub only (a store URL naming another host gets none),
        # never in clear text: https, or http to this machine (a test's server)
        local = u.scheme == "http" and u.hostname in ("127.0.0.1", "localhost", "::1")
        if token and ((u.scheme == "https" and (u.hostname or "").lower() == github) or local):
            scope = f"{u.scheme}://{u.netloc}/"
            if not self._has_header(out, scope):
                # what actions/checkout persists (an extraheader for the server), here for this
                # process only and only for the remote's host
                basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
                n = int(out.get("GIT_CONFIG_COUNT", "0") or 0)
                out[f"GIT_CONFIG_KEY_{n}"] = f"http.{scope}.extraheader"
                out[f"GIT_CONFIG_VALUE_{n}"] = f"AUTHORIZATION: basic {basic}"
                out["GIT_CONFIG_COUNT"] = str(n + 1)
        return out

    def remote_url(self, env: Mapping[str, str]) -> str:
        remote = self.loc.remote
        if "/" in remote or ":" in remote:  # a URL or a path, not a remote's name
            return remote
        r = subprocess.run(["git", "remote", "get-url", remote], env=dict(env), capture_output=True, text=True,
                           check=False)  # fmt: skip
        if r.returncode != 0:
            raise GitError(f"the git store pushes to the remote '{remote}', which this repository does not have; "
                           f"add it (git remote add {remote} URL) or name one: store: git+URL")  # fmt: skip
        return r.stdout.strip()

    @staticmethod
    def _has_header(env: Mapping[str, str], scope: str) -> bool:
        r = subprocess.run(["git", "config", "--get-urlmatch", "http.extraheader", scope], env=dict(env),
                           capture_output=True, text=True, check=False)  # fmt: skip
        return r.returncode == 0 and bool(r.stdout.strip())

    def _git(self, *args: str, input: bytes | None = None, extra: Mapping[str, str] | None = None,
             stdout: IO[bytes] | None = None) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
        env = {**self._env, **(extra or {})}
        return subprocess.run(["git", *args], input=input, env=env, check=False, stdout=stdout or subprocess.PIPE,
                              stderr=subprocess.PIPE)  # fmt: skip

    def _ok(self, r: subprocess.CompletedProcess[bytes], what: str) -> str:
        if r.returncode != 0:
            raise self._error(r.stderr.decode(errors="replace"), what)
        return (r.stdout or b"").decode(errors="replace").strip()

    def _error(self, said: str, what: str) -> Exception:
        lines = [line.strip() for line in said.splitlines() if line.strip()]
        last = " / ".join(lines[-2:])[:300] or "no message"
        low = said.lower()
        where = f"{self._shown} ({self.loc.namespace})"
        found = re.search(r"returned error: (\d{3})", low)  # git's http.c: "The requested URL returned error: 403"
        status = int(found.group(1)) if found else 0
        if status in (401, 403) or any(s in low for s in ("permission to", "permission denied", "authentication failed",
                                                          "could not read username", "write access")):  # fmt: skip
            return PermissionDenied(
                f"the git remote {where} refused to {what} ({last}); a workflow job that writes the store needs "
                "`permissions: contents: write`, and a token that can push (docs/store.md)"
            )
        if status in (429, 500, 502, 503, 504) or any(s in low for s in (
                "could not resolve host", "connection refused", "timed out", "connection reset", "failed to connect",
                "couldn't connect", "early eof", "the remote end hung up")):  # fmt: skip
            return Transient(f"cannot reach the git remote {where} to {what} ({last}); retry later")
        if status == 404 or "does not appear to be a git repository" in low or "not found" in low:
            return GitError(f"the git store's remote {where} cannot be read to {what} ({last}); check the remote")
        return ServiceRefused(f"git refused to {what} on {where}: {last}")

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.stdin.close()  # type: ignore[union-attr]
            reader.wait()
            reader.stdout.close()  # type: ignore[union-attr]

    def __del__(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # at interpreter exit the child ends with its stdin
            self.close()

    def integrity_problems(self) -> list[str]:
        """Nothing beyond the records: git checks every object against its id."""
        return []

    def remote_refs(self) -> list[str]:
        """The store's refs on the remote (`git ls-remote`), without fetching anything."""
        r = self._git("ls-remote", "--refs", self.loc.remote, f"{self.loc.namespace}/*")
        out = self._ok(r, f"list {self.loc.namespace}")
        return sorted(line.split("\t", 1)[1] for line in out.splitlines() if "\t" in line)

    # -- the snapshot of the ref ------------------------------------------------------------------
    def _fetch(self, ref: str) -> str | None:
        """Fetch `ref` from the remote; its commit, None when it does not exist. Through a ref of
        this process's own, so concurrent processes on one clone never share one."""
        tmp = f"refs/mlops-ci-fetch/{uuid.uuid4().hex}"
        r = self._git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules",
                      self.loc.remote, f"+{ref}:{tmp}")  # fmt: skip
        if r.returncode != 0:
            said = r.stderr.decode(errors="replace")
            if "couldn't find remote ref" in said.lower():
                return None
            raise self._error(said, f"fetch {ref}")
        try:
            tip = self._git("rev-parse", "--verify", "-q", f"{tmp}^{{commit}}")
            if tip.returncode != 0:
                raise IntegrityError(f"{ref} on {self._shown} is not a commit (pushed by something other than "
                                     "mlops-ci); nothing was changed: restore it from a good copy (git push "
                                     "--force-with-lease) or import a store export")  # fmt: skip
            commit = tip.stdout.decode().strip()
            # kept, so the next fetch negotiates from it and transfers only what changed (a
            # concurrent process may win the update: either tip serves)
            self._git("update-ref", f"refs/mlops-ci-cache/{ref.removeprefix('refs/')}", commit)
            return commit
        finally:
            self._git("update-ref", "-d", tmp)

    def _sync(self) -> None:
        self._tip = self._fetch(self.ref)
        self._synced = time.monotonic()

    def _refresh(self) -> None:
        self._sync()

    def _snapshot(self) -> str | None:
        if time.monotonic() - self._synced > self.max_age:
            self._sync()
        return self._tip

    def _read(self, spec: str) -> tuple[str, bytes] | None:
        """(blob id, content) of `spec` (`<commit>:<path>`), None when it does not exist. One
        `git cat-file --batch` serves every read of the process."""
        if "\n" in spec:  # one request per line: a newline would answer another question
            return None
        if self._reader is None or self._reader.poll() is not None:
            self._reader = subprocess.Popen(["git", "cat-file", "--batch"], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, env=self._env)  # fmt: skip
        assert self._reader.stdin is not None and self._reader.stdout is not None
        self._reader.stdin.write(spec.encode() + b"\n")
        self._reader.stdin.flush()
        line = self._reader.stdout.readline().decode(errors="replace").rstrip("\n")
        if line.endswith((" missing", " ambiguous")):  # "<spec> missing": the spec may have spaces
            return None
        header = line.split()
        if len(header) != 3 or not header[2].isdigit():
            raise ServiceRefused(f"git cat-file answered {line[:200]!r} for {spec[:200]!r}; retry")
        data = self._reader.stdout.read(int(header[2]) + 1)[:-1]
        if header[1] != "blob":  # a directory (or anything else) where a record should be
            raise IntegrityError(f"{spec.split(':', 1)[-1]} in {self.ref} on {self._shown} is a {header[1]}, not a "
                                 "record (written by something other than mlops-ci); nothing was changed: restore the "
                                 "ref from a good copy or import a store export")  # fmt: skip
        return header[0], data

    def _blob_id(self, tip: str | None, path: str) -> str | None:
        if tip is None:
            return None
        got = self._read(f"{tip}:{path}")
        return got[0] if got else None

    # -- the primitives -----------------------------------------------------------------------------
    def _get(self, key: str) -> tuple[object, str] | None:
        return self._get_at(self._snapshot(), key)

    def _get_at(self, tip: str | None, key: str) -> tuple[object, str] | None:
        got = self._read(f"{tip}:{key}") if tip else None
        if got is None:
            return None
        try:
            return json.loads(got[1]), got[0]
        except ValueError:
            raise IntegrityError(f"{key} in {self.ref} on {self._shown} is not a JSON record (written by "
                                 "something other than mlops-ci); nothing was changed: restore the ref from a good "
                                 "copy (git push --force-with-lease) or import a store export") from None  # fmt: skip

    def _create(self, key: str, body: bytes) -> str:
        oid = self._write(key, body, None)
        if oid is None:
            raise AlreadyExists(f"{key} already exists")
        return oid

    def _replace(self, key: str, body: bytes, etag: str | None) -> str | None:
        return self._write(key, body, etag)

    def _delete_if(self, key: str, etag: str) -> None:
        self._write(key, None, etag)

    def _list(self, prefix: str) -> list[str]:
        tip = self._snapshot()
        if tip is None:
            return []
        folder = prefix.rsplit("/", 1)[0]
        out = self._ok(self._git("ls-tree", "-r", "--name-only", "-z", tip, "--", folder + "/"), f"list {folder}")
        return sorted(k for k in out.split("\0") if k and k.startswith(prefix))

    @staticmethod
    def _check_key(key: str) -> None:
        """A key is one path of the tree: `update-index --index-info` reads one change per line,
        so a newline in an id from an imported file would add changes of its own."""
        parts = key.split("/")
        if any(c in key for c in '\n\r\0"\\') or any(p in ("", ".", "..") for p in parts):
            raise IntegrityError(f"{key!r} cannot be a record's key (a newline, quote, backslash or empty, . or .. "
                                 "part); nothing was written")  # fmt: skip

    def _hash(self, body: bytes, what: str) -> str:
        return self._ok(self._git("hash-object", "-w", "--stdin", input=body), f"write {what}")

    def _write(self, key: str, body: bytes | None, expect: str | None) -> str | None:
        """Set `key` to `body` (None: delete it) if its blob is still `expect` (None: absent).
        The new blob id ("" after a delete), or None when the key is not as expected."""
        self._check_key(key)
        blob = self._hash(body, key) if body is not None else ""
        done = self._swap(f"{'delete' if body is None else 'write'} {key}",
                          lambda: self._blob_id(self._tip, key) != expect, lambda: {key: blob or None})  # fmt: skip
        return blob if done else None

    def _batch(self, creates: Sequence[tuple[str, bytes]],
               updates: Sequence[tuple[str, Callable[[object], object], object]]) -> None:  # fmt: skip
        """All of it in one commit, one push: a run, its series and its index entry appear
        together or not at all (so there is no half-written run to guard against)."""
        for key in [*(k for k, _ in creates), *(k for k, _, _ in updates)]:
            self._check_key(key)
        blobs = {key: self._hash(body, key) for key, body in creates}
        taken: list[str] = []

        def blocked() -> bool:
            taken[:] = [key for key in blobs if self._blob_id(self._tip, key) is not None]
            return bool(taken)

        def changes() -> dict[str, str | None]:
            out: dict[str, str | None] = dict(blobs)
            for key, change, default in updates:  # applied to the tip the commit is built on
                got = self._get_at(self._tip, key)
                out[key] = self._hash(dumps(change(got[0] if got else default)), key)
            return out

        first = next(iter(blobs), next((k for k, _, _ in updates), ""))
        if not self._swap(f"write {first}" + (" and more" if len(blobs) + len(updates) > 1 else ""), blocked, changes):
            raise AlreadyExists(f"{taken[0]} already exists")

    def _swap(self, what: str, blocked: Callable[[], bool], changes: Callable[[], Mapping[str, str | None]]) -> bool:
        """The compare-and-swap of every write: build a commit of `changes()` on the tip and push
        it with a lease on that tip; when another job pushed first, fetch their tip and begin
        again. False when `blocked()` (the write's precondition fails) on a freshly fetched tip."""
        fresh = self._synced < 0  # never read: take the remote's tip first
        if fresh:
            self._sync()
        for attempt in range(60):
            if blocked():
                if fresh:
                    return False
                self._sync()  # maybe only our snapshot is old
                fresh = True
                continue
            commit = self._commit(self._tip, changes(), what)
            if self._push(commit, self.ref, self._tip):
                self._tip, self._synced = commit, time.monotonic()
                return True
            time.sleep(min(0.02 * 2 ** min(attempt, 6), 1.0) * random.random())  # noqa: S311 - jitter only
            self._sync()
            fresh = True
        raise Transient(f"too many concurrent writers on {self.ref} while trying to {what}; retry later")

    def _commit(self, parent: str | None, changes: Mapping[str, str | None], message: str) -> str:
        """A commit of `parent`'s tree with each key set to its blob (None: removed)."""
        index = self.git_dir / f"mlops-ci-index-{uuid.uuid4().hex}"
        extra = {"GIT_INDEX_FILE": str(index)}
        try:
            self._ok(self._git("read-tree", *([parent] if parent else ["--empty"]), extra=extra), "read the store")
            # --index-info: "<mode> <sha1>\t<path>" sets a path, mode 0 removes it (git-update-index(1))
            lines = "".join(f"100644 {blob}\t{key}\n" if blob else f"0 {'0' * 40}\t{key}\n"
                            for key, blob in changes.items())  # fmt: skip
            self._ok(self._git("update-index", "--index-info", input=lines.encode(), extra=extra), "stage the change")
            tree = self._ok(self._git("write-tree", extra=extra), "write the store's tree")
        finally:
            index.unlink(missing_ok=True)
        # no parent: the ref is the store's state, not its history (a fresh job fetches one tree)
        return self._ok(self._git("commit-tree", tree, "-m", f"mlops-ci: {message}"), "commit the store")

    def _push(self, commit: str, ref: str, expect: str | None) -> bool:
        """Compare-and-swap `ref` on the remote from `expect` (None: absent) to `commit`. False
        when the remote's ref is something else."""
        r = self._git("push", "--porcelain", "--quiet", "--no-verify", f"--force-with-lease={ref}:{expect or ''}",
                      self.loc.remote, f"{commit}:{ref}")  # fmt: skip
        if r.returncode == 0:
            return True
        said = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
        # the lease failed (stale info), or another push updated the ref between the remote's
        # answer and its update (receive-pack: "cannot lock ref ... but expected"; a push in progress
        # holds the ref's lock file)
        if any(s in said for s in ("stale info", "fetch first", "already exists", "cannot lock ref",
                                   "but expected", "incorrect old value", "failed to update ref")):  # fmt: skip
            return False
        raise self._error(said, f"push {ref}")

    # -- artifacts --------------------------------------------------------------------------------
    def put_artifact(self, path: Path, sha256: str) -> str:
        """A commit whose tree holds the artifact, under its own ref (created once: an artifact
        already there is not pushed again)."""
        size_mb = path.stat().st_size / 2**20
        if size_mb > self.loc.max_artifact_mb:
            raise ConfigError(
                f"the model artifact is {size_mb:.1f} MB, over the git store's limit of {self.loc.max_artifact_mb:g} "
                "MB (GitHub refuses files over 100 MB); keep large models in the S3 store (store: s3://bucket/prefix, "
                "docs/store.md)"
            )
        ref = f"{self.loc.namespace}/artifacts/{sha256}"
        uri = f"git+{self._shown}#{ref}"
        blob = self._ok(self._git("hash-object", "-w", "--", str(path)), f"store {path.name}")
        tree = self._ok(self._git("mktree", input=f"100644 blob {blob}\tmodel.tar.gz\n".encode()), "store the artifact")
        commit = self._ok(self._git("commit-tree", tree, "-m", f"mlops-ci: artifact {sha256}"), "store the artifact")
        if self._push(commit, ref, None):
            self.uploaded_bytes += path.stat().st_size
            return uri
        # the ref exists: it must hold this very file (same content, same blob id)
        there = self._fetch(ref)
        found = self._git("rev-parse", "--verify", "-q", f"{there}:model.tar.gz") if there else None
        if found is None or found.returncode != 0 or found.stdout.decode().strip() != blob:
            raise IntegrityError(f"{ref} on {self._shown} exists but does not hold this model.tar.gz; nothing "
                                 f"was recorded: delete it (git push {self._shown} --delete {ref}), train "
                                 "again")  # fmt: skip
        return uri

    def fetch_artifact(self, uri: str, cache: Path) -> Path:
        """Into `cache` (once); the caller verifies the digest before any use."""
        if not uri.startswith("git+") or "#" not in uri:
            raise ConfigError(f"artifact {uri} is not in a git store; it was recorded by another store")
        ref = uri.rsplit("#", 1)[1]
        if not ref.startswith(f"{self.loc.namespace}/artifacts/"):
            raise ConfigError(f"artifact {uri} is not under this store's refs ({self.loc.namespace})")
        dest = cache / f"{ref.rsplit('/', 1)[-1]}.tar.gz"
        if dest.is_file():
            return dest
        commit = self._fetch(ref)
        if commit is None:
            return dest  # missing: the caller reports it
        cache.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + f".part{os.getpid()}")
        with tmp.open("wb") as f:
            r = self._git("cat-file", "blob", f"{commit}:model.tar.gz", stdout=f)
        if r.returncode != 0:
            tmp.unlink(missing_ok=True)
            return dest  # no model.tar.gz in it: the caller reports the artifact missing
        tmp.replace(dest)
        return dest
