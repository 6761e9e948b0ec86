"""The team stores' shared logic: records as immutable JSON objects under keys, written with
conditional writes only. The S3 store and the git store differ in the five primitives below.

Key layout under ``<root>/projects/<project>/``::

    runs/<run_id>.json                  the run (create-once); written last: its commit point
    runs/<run_id>.series.json           its metric series (create-once, written first)
    index.json                          {sha → newest completed run, run summaries} (conditional)
    verdicts/<verdict_id>.json          a verdict (create-once)
    run-verdicts/<run_id>/<time>-<id>   pointer to the run's verdicts, newest last (create-once)
    versions/<00000001>.json            model version N; creating it claims N (create-once)
    version-by-sha/<sha>.json           claim, then the version of a SHA (conditional)
    deployments/<endpoint>/<time>-<id>.json   (create-once)
    endpoints/<name>.json               endpoint state (mutable)
    locks/<name>.json                   deploy lease: owner, expiry (create-once / conditional takeover)

Create-once writes fail when the key exists, updates name the version (ETag, blob id) they
replace and are retried on conflict, so two CI jobs can never overwrite each other. Lookups by
SHA and of the baseline history read one index object, never a listing.
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import AlreadyExists, Busy, ConfigError, IntegrityError, Transient
from ..records import Deployment, EndpointState, ModelVersion, RuleResult, Run, Verdict

CLAIM_LEASE = 600.0  # seconds a half-finished promote of a SHA blocks others before takeover


def dumps(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, allow_nan=True).encode()


class ObjectStore:
    """Subclasses set `project`, `clock`, `root` and `kind` and implement the primitives."""

    project: str
    root: str
    kind: str
    clock: Callable[[], float]

    # -- the primitives ------------------------------------------------------------------------
    def _create(self, key: str, body: bytes) -> str:
        """Write `key` only if it does not exist; its version tag. Raises AlreadyExists."""
        raise NotImplementedError

    def _get(self, key: str) -> tuple[Any, str] | None:
        """The JSON at `key` and its version tag, None when it does not exist."""
        raise NotImplementedError

    def _replace(self, key: str, body: bytes, etag: str | None) -> str | None:
        """Write `key` if its version is still `etag` (None: if it does not exist). The new
        version tag, or None when someone else changed it first."""
        raise NotImplementedError

    def _list(self, prefix: str) -> list[str]:
        """Every key that starts with `prefix`, sorted."""
        raise NotImplementedError

    def _delete_if(self, key: str, etag: str) -> None:
        """Delete `key` if its version is still `etag`; nothing when it changed or is gone."""
        raise NotImplementedError

    def _batch(self, creates: Sequence[tuple[str, bytes]],
               updates: Sequence[tuple[str, Callable[[Any], Any], Any]]) -> None:  # fmt: skip
        """Create each of `creates` (create-once, raising AlreadyExists), then apply each update
        (`_update`'s key, change, default). One at a time, in this order, so the last create is
        the commit point of what a crash could leave half-written; a store that can write them
        all at once (git: one commit) does."""
        for key, body in creates:
            self._create(key, body)
        for key, change, default in updates:
            self._update(key, change, default)

    def _refresh(self) -> None:
        """Before reading again in a wait loop: a store that reads a snapshot takes a new one."""

    # -- shared -------------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def _update(self, key: str, change: Callable[[Any], Any], default: Any) -> Any:
        """Read-modify-write, conditional on the version read, retried on conflict."""
        for attempt in range(50):
            got = self._get(key)
            data, etag = got if got else (default, None)
            new = change(data)
            if self._replace(key, dumps(new), etag) is not None:
                return new
            time.sleep(min(0.02 * 2 ** min(attempt, 6), 1.0) * random.random())  # noqa: S311 - jitter only
        raise Transient(f"too much contention updating {key}; retry later")

    # -- runs -------------------------------------------------------------------------------
    def record_run(self, run: Run, series: Mapping[str, Sequence[float]]) -> None:
        creates = [
            (self._key("runs", f"{run.run_id}.series.json"), dumps({k: list(v) for k, v in series.items()})),
            (self._key("runs", f"{run.run_id}.json"), dumps(run.to_dict())),  # the commit point
        ]
        summary = {
            "run_id": run.run_id, "sha": run.sha, "status": run.status, "config_digest": run.config_digest,
            "finished": run.finished, "dirty": run.dirty, "inputs_digest": run.inputs_digest,
        }  # fmt: skip

        def add(index: dict[str, Any]) -> dict[str, Any]:
            index.setdefault("runs", {})[run.run_id] = summary
            if run.status == "completed" and not run.dirty:
                index.setdefault("shas", {})[run.sha] = max(index.get("shas", {}).get(run.sha, 0), run.finished)
            return index

        self._batch(creates, [(self._key("index.json"), add, {"runs": {}, "shas": {}})])

    def _index(self) -> dict[str, Any]:
        got = self._get(self._key("index.json"))
        return got[0] if got else {"runs": {}, "shas": {}}

    def get_run(self, run_id: str) -> Run | None:
        got = self._get(self._key("runs", f"{run_id}.json"))
        return Run(**got[0]) if got else None

    def runs_by_prefix(self, prefix: str) -> list[Run]:
        ids = sorted(r for r in self._index()["runs"] if r.startswith(prefix))[:3]
        return [r for r in (self.get_run(i) for i in ids) if r]

    def _summaries(self, project: str, sha: str | None = None) -> list[dict[str, Any]]:
        self._check_project(project)
        rows = list(self._index()["runs"].values())
        if sha:
            rows = [r for r in rows if r["sha"] == sha]
        return sorted(rows, key=lambda r: (r["finished"], r["run_id"]), reverse=True)

    def runs(self, project: str, *, sha: str | None = None, limit: int = 50) -> list[Run]:
        return [r for r in (self.get_run(s["run_id"]) for s in self._summaries(project, sha)[:limit]) if r]

    def latest_completed(self, project: str, sha: str, config_digest: str | None = None) -> Run | None:
        for s in self._summaries(project, sha):
            if s["status"] == "completed" and not s["dirty"] and config_digest in (None, s["config_digest"]):
                return self.get_run(s["run_id"])
        return None

    def latest_by_inputs(self, project: str, inputs_digest: str) -> Run | None:
        for s in self._summaries(project) if inputs_digest else []:
            if s["status"] == "completed" and not s["dirty"] and s.get("inputs_digest") == inputs_digest:
                return self.get_run(s["run_id"])
        return None

    def shas_with_runs(self, project: str, shas: Iterable[str]) -> set[str]:
        self._check_project(project)
        have = self._index().get("shas", {})
        return {s for s in shas if s in have}

    def series(self, run_id: str) -> dict[str, Sequence[float]]:
        got = self._get(self._key("runs", f"{run_id}.series.json"))
        return got[0] if got else {}

    def _check_project(self, project: str) -> None:
        if project != self.project:
            raise ConfigError(f"this {self.kind} store is opened for project {self.project}, not {project}")

    # -- verdicts ---------------------------------------------------------------------------
    def record_verdict(self, verdict: Verdict) -> None:
        body = verdict.to_dict()
        body.pop("conclusion")
        stamp = f"{int(verdict.created * 1e6):020d}-{verdict.verdict_id}"
        self._batch([(self._key("verdicts", f"{verdict.verdict_id}.json"), dumps(body)),
                     (self._key("run-verdicts", verdict.run_id, stamp), b"{}")], [])  # fmt: skip

    def get_verdict(self, verdict_id: str) -> Verdict | None:
        got = self._get(self._key("verdicts", f"{verdict_id}.json"))
        if not got:
            return None
        d = got[0]
        d["results"] = tuple(RuleResult(**r) for r in d["results"])
        return Verdict(**d)

    def verdicts_for(self, run_id: str) -> list[Verdict]:
        keys = self._list(self._key("run-verdicts", run_id) + "/")
        return [v for v in (self.get_verdict(k.rsplit("-", 1)[-1]) for k in keys) if v]

    def import_version(self, mv: ModelVersion) -> bool:
        """Create a version with its number (store import). False when it exists already."""
        self._check_project(mv.project)
        if self.version_for_sha(mv.project, mv.sha) is not None:
            return False
        try:
            self._create(self._key("versions", f"{mv.version:08d}.json"), dumps(mv.to_dict()))
        except AlreadyExists:
            return False
        self._update(self._key("version-by-sha", f"{mv.sha}.json"), lambda _: {"version": mv.version}, {})
        self._update(
            self._key("versions-next.json"), lambda d: {"next": max(int(d.get("next", 1)), mv.version + 1)}, {}
        )
        return True

    def latest_verdict(self, run_id: str) -> Verdict | None:
        keys = self._list(self._key("run-verdicts", run_id) + "/")
        if not keys:
            return None
        return self.get_verdict(keys[-1].rsplit("-", 1)[-1])

    # -- model versions ---------------------------------------------------------------------
    def promote(self, make: Callable[[int], ModelVersion], sha: str, project: str) -> tuple[ModelVersion, bool]:
        """Claim the SHA, then claim the next free version number by creating its object.
        Concurrent promotes of different SHAs get distinct, gapless numbers; of the same SHA,
        one version."""
        self._check_project(project)
        pointer = self._key("version-by-sha", f"{sha}.json")
        me = uuid.uuid4().hex
        deadline = self.clock() + CLAIM_LEASE
        while True:
            got = self._get(pointer)
            if got is None:
                etag = self._replace(pointer, dumps({"claim": me, "at": self.clock()}), None)
                if etag is not None:
                    break
                continue
            data, old = got
            if "version" in data:
                existing = self.get_version(project, int(data["version"]))
                if existing is None:
                    raise IntegrityError(
                        f"version-by-sha/{sha} names v{data['version']}, which is missing; run `store check`"
                    )
                return existing, False
            if self.clock() - float(data.get("at", 0)) > CLAIM_LEASE:  # a crashed promote: take over
                etag = self._replace(pointer, dumps({"claim": me, "at": self.clock()}), old)
                if etag is not None:
                    break
                continue
            if self.clock() > deadline:
                raise Busy(f"another promote of {sha[:8]} has been in progress since {data.get('at')}; retry later")
            time.sleep(0.2)
            self._refresh()
        counter = self._get(self._key("versions-next.json"))
        n = int(counter[0]["next"]) if counter else 1
        while True:
            mv = make(n)
            try:
                self._create(self._key("versions", f"{n:08d}.json"), dumps(mv.to_dict()))
                break
            except AlreadyExists:
                n += 1
        self._update(self._key("versions-next.json"), lambda d: {"next": max(int(d.get("next", 1)), n + 1)}, {})
        if self._replace(pointer, dumps({"version": n}), etag) is None:
            raise Busy(f"the claim on {sha[:8]} was taken over while promoting; v{n} exists, run `store check`")
        return mv, True

    def _objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Every JSON object under `prefix` (a listing, then one GET each)."""
        for key in self._list(prefix):
            got = self._get(key)
            if got:
                yield got[0]

    def versions(self, project: str) -> list[ModelVersion]:
        self._check_project(project)
        out = [ModelVersion(**d) for d in self._objects(self._key("versions") + "/")]
        return sorted(out, key=lambda v: v.version)

    def version_for_sha(self, project: str, sha: str) -> ModelVersion | None:
        self._check_project(project)
        got = self._get(self._key("version-by-sha", f"{sha}.json"))
        if not got or "version" not in got[0]:
            return None
        return self.get_version(project, int(got[0]["version"]))

    def get_version(self, project: str, version: int) -> ModelVersion | None:
        self._check_project(project)
        got = self._get(self._key("versions", f"{version:08d}.json"))
        return ModelVersion(**got[0]) if got else None

    # -- deployments, endpoints, locks -------------------------------------------------------
    def record_deployment(self, deployment: Deployment) -> None:
        stamp = f"{int(deployment.finished * 1e6):020d}-{deployment.deployment_id}"
        self._create(self._key("deployments", deployment.endpoint, f"{stamp}.json"), dumps(deployment.to_dict()))

    def deployments(self, project: str, endpoint: str | None = None) -> list[Deployment]:
        self._check_project(project)
        prefix = self._key("deployments", endpoint) + "/" if endpoint else self._key("deployments") + "/"
        out = [Deployment(**d) for d in self._objects(prefix)]
        return sorted(out, key=lambda d: (d.finished, d.deployment_id))

    def endpoint_state(self, project: str, name: str) -> EndpointState | None:
        self._check_project(project)
        got = self._get(self._key("endpoints", f"{name}.json"))
        return EndpointState(**got[0]) if got else None

    def endpoint_states(self, project: str) -> list[EndpointState]:
        self._check_project(project)
        out = [EndpointState(**d) for d in self._objects(self._key("endpoints") + "/")]
        return sorted(out, key=lambda s: s.name)

    def put_endpoint_state(self, state: EndpointState) -> None:
        self._update(self._key("endpoints", f"{state.name}.json"), lambda _: state.to_dict(), {})

    @contextmanager
    def lock(self, name: str, owner: str, timeout: float, ttl: float = 3600.0) -> Iterator[None]:
        """A lease object: created once; taken over only after it expired; released on exit."""
        key = self._key("locks", re.sub(r"[^A-Za-z0-9._-]", "-", name) + ".json")
        deadline = self.clock() + timeout
        me: dict[str, object] = {"owner": owner, "token": uuid.uuid4().hex}
        wait = 0.1
        while True:
            me["expires"] = self.clock() + ttl
            got = self._get(key)
            if got is None:
                etag = self._replace(key, dumps(me), None)
            elif float(got[0].get("expires", 0)) < self.clock():
                etag = self._replace(key, dumps(me), got[1])  # expired lease: take it over
            else:
                etag = None
                if self.clock() >= deadline:
                    raise Busy(
                        f"{name} is locked by {got[0].get('owner', 'someone')} until "
                        f"{time.strftime('%H:%M:%S', time.localtime(float(got[0]['expires'])))}; wait for it "
                        "or pass a longer --lock-timeout"
                    )
            if etag is not None:
                break
            time.sleep(wait)
            wait = min(wait * 2, 2.0)  # a long wait (a training in flight) polls gently
            self._refresh()
        try:
            yield
        finally:
            self._delete_if(key, etag)  # a lease we no longer hold expires on its own
