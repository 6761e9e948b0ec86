"""Local endpoints: a stable router process in front of one model server per version.

Blue/green rollout: start the new (green) server, wait for /ping, run the smoke requests
against it directly, switch the router (atomic rename), confirm through the router, then
stop the old (blue) server. Any failure before the switch leaves blue serving untouched.
A per-endpoint file lock makes concurrent deploys wait or fail naming the holder.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .. import integrity
from ..config import EndpointConfig
from ..errors import Busy, ConfigError, DeployFailed, EndpointBroken, NotFound
from ..progress import Wait
from ..records import Deployment, EndpointState, ModelVersion
from . import DeploymentRecorder, Effects, EndpointBackend, Live, StepFailed, Store, owner_label, pause

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Config
    from ..context import Git, GitContext
    from .aws import Aws


class Host(Protocol):
    """What deploying needs from the workspace that runs it (workspace.Workspace): its config,
    git and store, and its checks of provenance and integrity. A backend sees
    this much of the verbs' layer and no more (no import of it: tests/unit/test_architecture.py)."""

    cfg: Config
    env: Mapping[str, str]
    git: Git
    home: Path

    @property
    def project(self) -> str: ...
    @property
    def store(self) -> Store: ...
    @property
    def ctx(self) -> GitContext: ...
    def say(self, msg: str) -> None: ...
    def aws(self) -> Aws: ...
    def verify_artifact(self, uri: str | None, digest: str | None, *, what: str) -> Path: ...
    def endpoint_for_tag(self, tag: str) -> str: ...


_PKG_PARENT = str(Path(__file__).resolve().parents[2])


def _http(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        # the server may answer (413) before taking the whole body: read what it said
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _terminate(pid: int | None, grace: float = 5.0) -> None:
    if not _alive(pid):
        return
    assert pid is not None
    try:
        os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):  # gone, or not ours to stop
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _serving_processes(d: Path) -> dict[int, int]:
    """{pid: parent pid} of every mlops-ci router or model server of the endpoint whose
    directory is `d`, found by its command line (`--state-dir d`, `--workdir d/versions/…`):
    a server whose deploy was killed before its pid was written anywhere is found too.
    Linux (/proc); elsewhere the records written at spawn are all there is."""
    found: dict[int, int] = {}
    proc = Path("/proc")
    if not (proc / "self" / "cmdline").exists():
        return found
    mark = os.fsencode(str(d))
    inside = mark + os.fsencode(os.sep)
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if not any(a in (b"mlops_ci.serving.router", b"mlops_ci.serving.model_server") for a in args):
            continue
        if any(a == mark or a.startswith(inside) for a in args):
            found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def _is_serving(pid: int) -> bool:
    """Whether `pid` is an mlops-ci router or model server (where /proc can tell; else assumed)."""
    try:
        args = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not (Path("/proc") / "self" / "cmdline").exists()
    except OSError:
        return False
    return any(a in (b"mlops_ci.serving.router", b"mlops_ci.serving.model_server") for a in args)


def capture_root(home: Path, name: str) -> Path:
    """The capture root of local endpoint `name` in the workspace `home` (docs/deploy.md: data capture)."""
    return home / "endpoints" / name / "capture"


class LocalEndpoints:
    def __init__(self, ws: Host, recorder: DeploymentRecorder | None = None):
        self.ws = ws
        self.recorder = recorder
        self.store = ws.store
        self.project = ws.project
        self.base = ws.home / "endpoints"
        self.ws_home = ws.home

    # -- helpers -------------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        d = self.base / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    @contextmanager
    def lock(self, name: str, timeout: float) -> Iterator[None]:
        """Deploys to one endpoint are serialised by the store's lock (a file lock for SQLite,
        a lease object for S3), so jobs on different machines exclude each other too."""
        with self.store.lock(f"endpoint {self.project}/{name}", owner_label(self.ws.env), timeout):
            yield

    def _spawn(self, d: Path, argv: list[str], log: Path, ready: Path, timeout: float,
               environment: dict[str, str] | None = None, wait: Wait | None = None) -> dict[str, Any]:  # fmt: skip
        ready.unlink(missing_ok=True)
        # Written before the process exists, its pid right after: a deploy killed at any point
        # leaves a record (and on Linux the command line names the endpoint) for the next
        # operation on the endpoint to reap.
        records = d / "processes"
        records.mkdir(exist_ok=True)
        record = records / f"{uuid.uuid4().hex[:12]}.json"
        record.write_text(json.dumps({"argv": argv, "pid": None, "since": time.time()}))
        env = {**os.environ, **(environment or {})}  # serving.environment: the container's Environment
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PKG_PARENT, env.get("PYTHONPATH", "")) if p)
        # A detached server in its own session that outlives the CLI: posix_spawn rather than
        # Popen, whose handle would complain about a child it never waited for.
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null_fd = os.open(os.devnull, os.O_RDONLY)
        try:
            pid = os.posix_spawnp(
                argv[0],
                argv,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, null_fd, 0),
                    (os.POSIX_SPAWN_DUP2, log_fd, 1),
                    (os.POSIX_SPAWN_DUP2, log_fd, 2),
                ],
                setsid=True,
            )
        except OSError as exc:
            raise _StartFailed(f"could not start {argv[0]}: {exc.strerror}") from None
        finally:
            os.close(log_fd)
            os.close(null_fd)
        record.write_text(json.dumps({"argv": argv, "pid": pid, "since": time.time()}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready.is_file():
                info: dict[str, Any] = json.loads(ready.read_text())
                info["pid"] = pid
                if wait:
                    wait.close("ready")
                return info
            exited, status = os.waitpid(pid, os.WNOHANG)
            if exited:
                code = os.waitstatus_to_exitcode(status)
                tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
                if wait:
                    wait.close(f"exited with code {code}")
                raise _StartFailed(f"exited with code {code}: {' '.join(tail) or 'no output'}")
            if wait:
                wait.update("loading the model")
            time.sleep(0.05)
        _terminate(pid)
        if wait:
            wait.close("not ready")
            raise _StartFailed(
                f"was not ready after {timeout:g}s, the limit {wait.setting} sets: raise it for a model that "
                f"loads slowly, or see why in {log}"
            )
        raise _StartFailed(f"not ready after {timeout:g}s (see {log})")

    # -- processes: nothing a killed deploy started outlives the next operation ----------------
    def _processes(self, name: str) -> dict[int, int]:
        """{pid: parent pid} of every serving process of endpoint `name` alive now: those
        found by command line, and those recorded at spawn (all there is off Linux)."""
        d = self._dir(name)
        found = _serving_processes(d)
        scanned = (Path("/proc") / "self" / "cmdline").exists()
        for rec in sorted((d / "processes").glob("*.json")):
            try:
                info = json.loads(rec.read_text())
            except (OSError, ValueError):
                info = {}
            pid = info.get("pid")
            if isinstance(pid, int) and _alive(pid) and (pid in found or not scanned):
                found.setdefault(pid, 0)
            elif pid is not None or time.time() - float(info.get("since", 0)) > 60:
                rec.unlink(missing_ok=True)  # exited, or a spawn that never happened
        return found

    def _target(self, name: str) -> dict[str, Any] | None:
        try:
            target = json.loads((self._dir(name) / "target.json").read_text())
        except (OSError, ValueError):
            return None
        return target if isinstance(target, dict) else None

    def _kept(self, name: str, state: EndpointState | None) -> set[int] | None:
        """The processes that are the endpoint: its router and the server the router targets;
        None when that cannot be told (a target written by an mlops-ci that did not record pids)."""
        d = self._dir(name)
        keep = {p for p in (state.router_pid, state.server_pid) if p} if state else set()
        target = self._target(name)
        if target is not None and not isinstance(target.get("pid"), int):
            return None
        if target is not None:
            keep.add(int(target["pid"]))
        try:
            pid = json.loads((d / "router.ready").read_text()).get("pid")
        except (OSError, ValueError, AttributeError):
            pid = None
        if isinstance(pid, int):
            keep.add(pid)
        return keep

    def orphans(self, name: str) -> list[int]:
        """Serving processes of `name` that nothing tracks (a deploy killed mid-way), with the
        workers of each (a model server runs one per CPU)."""
        keep = self._kept(name, self.store.endpoint_state(self.project, name))
        if keep is None:
            return []  # never stop what might be the live server
        procs = self._processes(name)
        return sorted(pid for pid, parent in procs.items() if pid not in keep and parent not in keep)

    def strays(self) -> dict[str, list[int]]:
        """Untracked serving processes of every local endpoint of this project (one being
        deployed right now is skipped: its new server is not yet the endpoint)."""
        found: dict[str, list[int]] = {}
        if not self.base.is_dir():
            return found
        for d in sorted(p for p in self.base.iterdir() if p.is_dir()):
            try:
                with self.lock(d.name, 0):
                    stray = self.orphans(d.name)
            except Busy:
                continue
            if stray:
                found[d.name] = stray
        return found

    def _reap(self, name: str) -> None:
        """Under the endpoint's lock: finish or undo a switch a killed deploy left half done,
        then stop every serving process that is not the endpoint."""
        self.recover(name)
        for pid in self.orphans(name):
            self.ws.say(f"{name}: stopping untracked model server or router (pid {pid}) a killed deploy left running")
            _terminate(pid)

    def recover(self, name: str) -> None:
        intent_file = self._dir(name) / "intent.json"
        try:
            intent = json.loads(intent_file.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            intent_file.unlink(missing_ok=True)
            return
        target = self._target(name)
        green = intent["green"]
        switched = target is not None and target.get("pid") == green["pid"] and _alive(green["pid"])
        if switched and self._confirm(int(intent["router"]["port"]), str(intent["version"])):
            # the switch happened: what the killed deploy did not get to write, write now
            mv = self.store.get_version(self.project, int(intent["version"]))
            self.store.put_endpoint_state(
                EndpointState(project=self.project, name=name, url=intent["url"], router_pid=intent["router"]["pid"],
                              router_port=intent["router"]["port"], server_pid=green["pid"],
                              server_port=green["port"], version=int(intent["version"]), sha=intent["sha"],
                              status="InService", updated=time.time())
            )  # fmt: skip
            ep = self._declared(name)
            done = [d for d in self.store.deployments(self.project, name) if d.started == intent["started"]]
            if mv is not None and ep is not None and not done:
                self.record(ep, mv, intent["tag"], intent["kind"], "succeeded",
                             f"{intent['detail']} (recorded by the next operation on {name}: the deploying "
                             "process was stopped after switching traffic)", float(intent["started"]))  # fmt: skip
            self.ws.say(f"{name}: completed the record of an interrupted {intent['kind']} of v{intent['version']}")
        intent_file.unlink(missing_ok=True)

    def _router_ok(self, state: EndpointState | None) -> bool:
        if not state or not state.router_port or not _alive(state.router_pid):
            return False
        return self._router_answers(state.router_port)

    @staticmethod
    def _router_answers(port: int) -> bool:
        try:
            status, _, _ = _http(port, "GET", "/_mlops_ci/router", timeout=5)
        except TimeoutError:
            return True  # accepted, but every worker is busy: up and loaded, not down
        except OSError:
            return False
        return status == 200

    def _server_version(self, port: int | None) -> str | None:
        if not port:
            return None
        try:
            status, headers, _ = _http(port, "GET", "/ping", timeout=5)
        except OSError:
            return None
        return headers.get("x-mlops-ci-version") if status == 200 else None

    def _ensure_router(self, ep: EndpointConfig, state: EndpointState | None) -> tuple[int, int]:
        if state and self._router_ok(state):
            assert state.router_port and state.router_pid
            return state.router_port, state.router_pid
        d = self._dir(ep.name)
        try:  # a router a killed deploy started: the store does not know it, its ready file does
            ready = json.loads((d / "router.ready").read_text())
            port, pid = int(ready["port"]), int(ready["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        else:
            if pid in self._processes(ep.name) and self._router_answers(port):
                return port, pid
        port = ep.port or (state.router_port if state and state.router_port else 0)
        argv = [
            sys.executable,
            "-m",
            "mlops_ci.serving.router",
            "--state-dir",
            str(d),
            "--ready-file",
            str(d / "router.ready"),
            "--port",
            str(port),
        ]
        try:
            info = self._spawn(d, argv, d / "router.log", d / "router.ready", 15)
        except _StartFailed as exc:
            raise DeployFailed(f"could not start the router of endpoint {ep.name} on port {port}: {exc}") from None
        return int(info["port"]), int(info["pid"])

    def capture_dir(self, name: str) -> Path:
        """Where endpoint `name` writes its capture: `<endpoint>/AllTraffic/yyyy/mm/dd/hh/*.jsonl` below."""
        self._dir(name)
        return capture_root(self.ws_home, name)

    def capture_settings(self, ep: EndpointConfig) -> dict[str, object]:
        """The `capture` entry of target.json (nothing without `capture:`): the router reads it with
        every request, so a deploy changes it together with the version."""
        c = ep.capture
        if c is None:
            return {}
        return {"capture": {"dir": str(self.capture_dir(ep.name)), "endpoint": ep.name, "percent": c.percent,
                            "max_payload_bytes": c.max_payload_bytes, "rotate_bytes": c.rotate_bytes,
                            "csv": list(c.csv_content_types), "json": list(c.json_content_types)}}  # fmt: skip

    def _write_target(self, name: str, target: dict[str, Any] | None) -> None:
        d = self._dir(name)
        path = d / "target.json"
        if target is None:
            path.unlink(missing_ok=True)
            return
        tmp = d / f"target.json.{os.getpid()}"
        tmp.write_text(json.dumps(target))
        os.replace(tmp, path)

    def success_detail(
        self, kind: str, ep: EndpointConfig, mv: ModelVersion, tag: str | None, url: str, old: str
    ) -> str:
        where = f"{mv.sha[:8]}" + (f", {tag}" if tag else "")
        return f"{kind}: {ep.name} now serves {self.project} v{mv.version} ({where}) at {url}; was {old}"

    def _live(self, state: EndpointState | None) -> tuple[int | None, int | None, int | None]:
        """(port, pid, version) of the model server actually serving, or Nones: the one the
        store names, if the router targets it too and it answers."""
        if not state or state.status != "InService" or self._server_version(state.server_port) is None:
            return None, None, None
        target = self._target(state.name)
        if target is not None and target.get("port") != state.server_port:
            return None, None, None  # the router serves something else: a full rollout sets it right
        return state.server_port, state.server_pid, state.version

    def deployment(self, ep: EndpointConfig, mv: ModelVersion, tag: str | None, kind: str, outcome: str,
                    detail: str, started: float, deployment_id: str = "-") -> Deployment:  # fmt: skip
        return integrity.seal(Deployment(
            deployment_id=deployment_id, project=self.project, endpoint=ep.name, version=mv.version, sha=mv.sha,
            tag=tag, kind=kind, outcome=outcome, detail=detail, started=started, finished=time.time(),
            version_digest=mv.digest,
        ))  # fmt: skip

    def noop(self, ep: EndpointConfig, mv: ModelVersion, tag: str | None, kind: str, url: str | None,
              started: float) -> Deployment:  # fmt: skip
        detail = f"{ep.name} already serves {self.project} v{mv.version} ({mv.sha[:8]}) at {url}; nothing to do"
        return self.deployment(ep, mv, tag, kind, "noop", detail, started)

    def backend(self, ep: EndpointConfig) -> EndpointBackend:
        """The service that runs endpoint `ep`: these local processes, or its backend's entry in
        mlops_ci/kinds.py."""
        return self if ep.kind.processes else self._managed(ep)

    def steps(self, ep: EndpointConfig, mv: ModelVersion, fx: Effects) -> LocalRollout:
        return LocalRollout(self, ep, mv, fx)

    def _confirm(self, router_port: int, version: str) -> bool:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                status, headers, _ = _http(router_port, "GET", "/ping", timeout=2)
                if status == 200 and headers.get("x-mlops-ci-version") == version:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def _smoke(self, port: int, smoke: Any) -> str | None:
        try:
            status, _, body = _http(
                port,
                "POST",
                "/invocations",
                smoke.body.encode(),
                {"Content-Type": smoke.content_type, "Accept": smoke.accept},
                timeout=30,
            )
        except OSError as exc:
            return f"could not connect: {exc}"
        text = body.decode("utf-8", errors="replace")
        if status != smoke.expect_status:
            return f"got HTTP {status} (expected {smoke.expect_status}): {text[:200]}"
        if smoke.expect_contains is not None and smoke.expect_contains not in text:
            return f"response does not contain {smoke.expect_contains!r}: {text[:200]}"
        return None

    def record(
        self,
        ep: EndpointConfig,
        mv: ModelVersion,
        tag: str | None,
        kind: str,
        outcome: str,
        detail: str,
        started: float,
    ) -> Deployment:
        dep = self.deployment(ep, mv, tag, kind, outcome, detail, started, uuid.uuid4().hex[:16])
        self.store.record_deployment(dep)
        return dep

    def _managed(self, ep: EndpointConfig) -> Any:
        """The service that runs endpoint `ep` (its backend's entry in mlops_ci/kinds.py)."""
        return ep.kind.load()(self, self.ws.aws())  # type: ignore[operator]

    def _remote_view(self, ep: EndpointConfig) -> tuple[str, int | None, str | None, dict[str, Any]]:
        """(status, live version, live sha, the whole description) of a SageMaker endpoint."""
        live: dict[str, Any] = self._managed(ep).health(ep)
        serving = live["status"] == "InService"
        return live["status"], live.get("version") if serving else None, live.get("sha") if serving else None, live

    def _declared(self, name: str) -> EndpointConfig | None:
        return next((e for e in self.ws.cfg.endpoints if e.name == name), None)

    def _unknown(self, name: str) -> NotFound:
        """`name` is neither declared nor ever deployed: most likely a typo, not a stopped endpoint."""
        import difflib

        from .._untrusted import inline

        names = [e.name for e in self.ws.cfg.endpoints]
        names += [s.name for s in self.store.endpoint_states(self.project) if s.name not in names]
        match = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f"did you mean '{match[0]}'? " if match else ""
        known = ", ".join(names) or "none"
        return NotFound(f"no endpoint '{inline(name)}' in {self.ws.cfg.file} or the store; {hint}endpoints: {known}")

    def stop(self, name: str) -> None:
        ep = self._declared(name)
        state = self.store.endpoint_state(self.project, name)
        if ep is not None and not ep.kind.processes:
            with self.lock(name, 30):
                self._managed(ep).stop(ep)
                if state is not None:
                    self.store.put_endpoint_state(replace(state, status="Stopped", updated=time.time()))
            return
        if state is None:
            if ep is None:
                raise self._unknown(name)
            raise NotFound(f"endpoint {name} has never been deployed")
        with self.lock(name, 30):
            self.recover(name)
            state = self.store.endpoint_state(self.project, name) or state
            ours = self._processes(name)
            for pid in (state.server_pid, state.router_pid):
                if pid and _is_serving(pid):  # a recorded pid reused by another process is not ours to stop
                    _terminate(pid, grace=15)
            for pid in ours:  # and whatever a killed deploy left running
                _terminate(pid)
            self._write_target(name, None)
            self.store.put_endpoint_state(
                replace(state, status="Stopped", router_pid=None, server_pid=None, updated=time.time())
            )

    def invoke(self, name: str, body: bytes, content_type: str, accept: str) -> tuple[int, str, bytes]:
        ep = self._declared(name)
        if ep is not None and not ep.kind.processes:
            result: tuple[int, str, bytes] = self._managed(ep).endpoint(ep).invoke(body, content_type, accept)
            return result
        state = self.store.endpoint_state(self.project, name)
        if state is None and ep is None:
            raise self._unknown(name)
        if state is None or state.status != "InService" or not state.router_port:
            raise NotFound(f"endpoint {name} is not running; deploy a version to it first")
        try:
            status, headers, data = _http(
                state.router_port,
                "POST",
                "/invocations",
                body,
                {"Content-Type": content_type, "Accept": accept},
                timeout=60,
            )
        except OSError as exc:
            raise EndpointBroken(
                f"endpoint {name} at {state.url} does not answer ({exc}); `mlops-ci deploy` or `rollback` restarts it"
            ) from None
        said = data.decode("utf-8", "replace")
        if (
            status in (502, 503)
            and headers.get("server", "").startswith("mlops-ci-router")
            and ("unreachable" in said or "no model is deployed" in said)
        ):
            # the router is up, but no healthy model server is behind it
            raise EndpointBroken(
                f"endpoint {name} at {state.url} has no healthy model server "
                f"({data.decode('utf-8', 'replace')[:200]}); `mlops-ci deploy` or `rollback` starts one"
            )
        return status, headers.get("content-type", ""), data

    def listing(self) -> list[dict[str, Any]]:
        rows = []
        declared = {e.name for e in self.ws.cfg.endpoints}
        states = {s.name: s for s in self.store.endpoint_states(self.project)}
        for name in [e.name for e in self.ws.cfg.endpoints] + sorted(set(states) - declared):
            st = states.get(name)
            ep = self._declared(name)
            if ep is not None and not ep.kind.processes:
                status, version, sha, _ = self._remote_view(ep)
                rows.append({"name": name, "declared": True, "status": status, "version": version, "sha": sha,
                             "url": st.url if st else None})  # fmt: skip
                continue
            rows.append(
                {
                    "name": name,
                    "declared": name in declared,
                    "status": self._health(st),
                    "version": st.version if st and st.status == "InService" else None,
                    "sha": st.sha if st and st.status == "InService" else None,
                    "url": st.url if st else None,
                }
            )
        return rows

    def _health(self, st: EndpointState | None) -> str:
        if st is None:
            return "NotDeployed"
        if st.status != "InService":
            return st.status
        if not self._router_ok(st):
            return "Down"
        live = self._server_version(st.router_port)
        if live != str(st.version):
            return "Degraded"
        return "InService"

    def status(self) -> list[dict[str, Any]]:
        tags = self.ws.git.tags()
        rows = []
        strays = self.strays()
        for ep in self.ws.cfg.endpoints:
            best: tuple[int, str] | None = None
            for tag, sha in tags.items():
                try:
                    routed = self.ws.endpoint_for_tag(tag)
                except ConfigError:
                    continue
                if routed != ep.name:
                    continue
                mv = self.store.version_for_sha(self.project, sha)
                if mv and mv.stage == "approved" and (best is None or mv.version > best[0]):
                    best = (mv.version, tag)
            st = self.store.endpoint_state(self.project, ep.name)
            extra = ""
            if not ep.kind.processes:
                health, live_version, live_sha, live = self._remote_view(ep)
                declared = (ep.instance_type, ep.instance_count)
                actual = (live.get("instance_type"), live.get("instance_count"))
                if health == "InService" and actual != declared:
                    extra = f"runs {actual[1]} x {actual[0]} but {declared[1]} x {declared[0]} is declared"
            else:
                health = self._health(st)
                live_version = st.version if st and health == "InService" else None
                live_sha = st.sha if st and live_version else None
            drift = ""
            if best and live_version != best[0]:
                drift = f"declared v{best[0]} ({best[1]}) but " + (
                    f"v{live_version} is live" if live_version else f"endpoint is {health}"
                )
            elif not best and live_version:
                drift = f"v{live_version} is live but no approved tag routes to {ep.name}"
            elif health in ("Down", "Degraded", "Failed", "OutOfService"):
                drift = f"endpoint is {health}"
            stray = strays.get(ep.name, []) if ep.kind.processes else []
            if stray:
                extra = "; ".join(x for x in (extra, f"{len(stray)} untracked serving process(es) running (pid "
                    f"{', '.join(map(str, stray))}) that a killed deploy left; the next deploy, rollback or "
                    f"`mlops-ci endpoint stop {ep.name}` stops them") if x)  # fmt: skip
            drift = "; ".join(x for x in (drift, extra) if x)
            rows.append(
                {
                    "name": ep.name,
                    "declared_version": best[0] if best else None,
                    "declared_tag": best[1] if best else None,
                    "live_version": live_version,
                    "live_sha": live_sha,
                    "health": health,
                    "drift": drift,
                    "url": st.url if st else None,
                }
            )
        return rows


class _StartFailed(Exception):
    pass


class LocalRollout:
    """The steps of one rollout to a local endpoint (verbs/rollout.py runs them): a model server
    for the new version beside the old one, smoke requests straight to it, the router switched
    (an atomic rename, confirmed through the router), then the old server stopped."""

    def __init__(self, eps: LocalEndpoints, ep: EndpointConfig, mv: ModelVersion, fx: Effects):
        self.eps, self.ep, self.mv, self.fx = eps, ep, mv, fx
        self.ws = eps.ws
        self.st: EndpointState | None = None  # the endpoint's record when the rollout began
        self.blue: tuple[int | None, int | None, int | None] = (None, None, None)  # port, pid, version
        self.router_up = False
        self.router: tuple[int, int] | None = None  # port, pid
        self.green: tuple[int, int] | None = None  # port, pid
        self.intent: Path | None = None

    def check(self) -> None:
        pass  # the store's version is all there is to check, and the deploy verb has

    def live(self) -> Live:
        eps, name = self.eps, self.ep.name
        if (eps._dir(name) / "intent.json").exists() or eps.orphans(name):
            self.fx("local", "finish or undo what a killed deploy left", lambda: eps._reap(name), None, endpoint=name)
        self.st = eps.store.endpoint_state(eps.project, name)
        self.blue = eps._live(self.st)
        self.router_up = eps._router_ok(self.st)
        version = self.blue[2]
        return Live(
            version=version,
            old=f"v{version}" if version else "nothing",
            serving=version is not None,
            current=version == self.mv.version and self.router_up,
            url=self.st.url if self.st else None,
        )

    def url(self) -> str:
        if self.router is not None:
            return f"http://127.0.0.1:{self.router[0]}"
        if self.router_up and self.st is not None and self.st.url:
            return self.st.url
        st = self.st
        port = self.ep.port or (st.router_port if st and st.router_port else None)
        return f"http://127.0.0.1:{port or '<free port>'}"

    def start(self) -> None:
        ep, mv, st = self.ep, self.mv, self.st
        if self.router_up and st is not None and st.router_port and st.router_pid:
            self.router = st.router_port, st.router_pid
        else:
            self.router = self.fx(
                "local", "start router", lambda: self.eps._ensure_router(ep, st), None, endpoint=ep.name, url=self.url()
            )
        self.green = self.fx(
            "local",
            "start model server",
            self._start_server,
            None,
            version=mv.version,
            sha=mv.sha,
            artifact=mv.artifact_uri,
            artifact_sha256=mv.artifact_sha256,
            entry=self.ws.cfg.serving.entry_point,
        )

    def _start_server(self) -> tuple[int, int]:
        ep, mv, ws = self.ep, self.mv, self.ws
        d = self.eps._dir(ep.name)
        workdir = d / "versions" / f"v{mv.version}-{uuid.uuid4().hex[:6]}"
        workdir.mkdir(parents=True)
        # Hashed again under the lock: the file may have changed while this deploy waited.
        artifact = ws.verify_artifact(mv.artifact_uri, mv.artifact_sha256, what=f"v{mv.version}")
        argv = [
            ws.cfg.serving.python or sys.executable,
            "-m",
            "mlops_ci.serving.model_server",
            "--artifact",
            str(artifact),
            "--sha256",
            mv.artifact_sha256,
            "--workdir",
            str(workdir),
            "--ready-file",
            str(workdir / "ready"),
            "--version",
            str(mv.version),
            "--sha",
            mv.sha,
        ]
        if ws.cfg.serving.entry_point:
            argv += ["--entry", ws.cfg.serving.entry_point]
        old = f"v{self.blue[2]}" if self.blue[2] else "nothing"
        ws.say(f"{ep.name}: starting v{mv.version} ({mv.sha[:8]}) beside {old}")
        try:
            wait = Wait(
                ws.say,
                f"{ep.name}: v{mv.version}'s model server",
                ep.ready_timeout,
                ws.cfg.endpoint_setting(ep.name, "ready_timeout"),
            )
            info = self.eps._spawn(
                d, argv, workdir / "server.log", workdir / "ready", ep.ready_timeout, ws.cfg.serving.environment, wait
            )
        except _StartFailed as exc:
            raise StepFailed(f"the new model server {exc}") from None
        port, pid = int(info["port"]), int(info["pid"])
        pause("green started")
        if self.eps._server_version(port) != str(mv.version):
            _terminate(pid)
            raise StepFailed("the new model server did not answer /ping")
        return port, pid

    def verify(self) -> None:
        self.fx("local", "smoke requests", self._smoke, None, requests=[s.body for s in self.ep.smoke])

    def _smoke(self) -> None:
        assert self.green is not None
        for i, smoke in enumerate(self.ep.smoke, start=1):
            problem = self.eps._smoke(self.green[0], smoke)
            if problem:
                _terminate(self.green[1])
                raise StepFailed(f"smoke request {i} {problem}")
        self.ws.say(
            f"{self.ep.name}: v{self.mv.version} healthy, {len(self.ep.smoke)} smoke request(s) passed; "
            "switching traffic"
        )

    def switch(self, record: Mapping[str, object]) -> None:
        self.fx(
            "local",
            "switch traffic",
            lambda: self._switch(record),
            None,
            endpoint=self.ep.name,
            to_version=self.mv.version,
            from_version=self.blue[2],
        )

    def _switch(self, record: Mapping[str, object]) -> None:
        assert self.green is not None and self.router is not None
        eps, ep, mv, st = self.eps, self.ep, self.mv, self.st
        (green_port, green_pid), (router_port, router_pid) = self.green, self.router
        blue_port, blue_pid, blue_version = self.blue
        # The switch, the endpoint state and the deployment record are three writes: an intent
        # written first lets the next operation finish them if this process dies.
        self.intent = eps._dir(ep.name) / "intent.json"
        self.intent.write_text(
            json.dumps(
                {
                    **record,
                    "version": mv.version,
                    "sha": mv.sha,
                    "url": self.url(),
                    "green": {"pid": green_pid, "port": green_port},
                    "router": {"pid": router_pid, "port": router_port},
                }
            )
        )
        pause("before switch")
        capture = eps.capture_settings(ep)
        eps._write_target(ep.name, {"port": green_port, "version": mv.version, "sha": mv.sha, "pid": green_pid,
                                    **capture})  # fmt: skip
        pause("switched")
        if not eps._confirm(router_port, str(mv.version)):
            back = {"port": blue_port, "version": blue_version, "sha": st.sha if st else None, "pid": blue_pid,
                    **capture}  # fmt: skip
            eps._write_target(ep.name, back if blue_port else None)
            self.intent.unlink(missing_ok=True)
            _terminate(green_pid)
            raise StepFailed("the router did not switch to the new version")

    def verify_live(self) -> None:
        pass  # the switch was confirmed through the router; the smoke requests ran before it

    def state(self) -> EndpointState:
        assert self.green is not None and self.router is not None
        return EndpointState(
            project=self.eps.project,
            name=self.ep.name,
            url=self.url(),
            router_pid=self.router[1],
            router_port=self.router[0],
            server_pid=self.green[1],
            server_port=self.green[0],
            version=self.mv.version,
            sha=self.mv.sha,
            status="InService",
            updated=time.time(),
        )

    def retire(self) -> None:
        if self.intent is not None:
            self.intent.unlink(missing_ok=True)
        blue_pid = self.blue[1]
        if blue_pid and (self.green is None or blue_pid != self.green[1]):
            self.fx("local", "stop model server", lambda: self._stop(blue_pid), None, version=self.blue[2])

    @staticmethod
    def _stop(pid: int) -> None:
        time.sleep(0.2)  # requests already forwarded to blue finish: it drains on SIGTERM
        _terminate(pid, grace=15)
