"""One contract, three stores: the same behaviour from the embedded SQLite store, the S3 team
store (moto, in process) and the git store (a bare repository standing for GitHub, one clone
per store opened, as one per CI machine). Where a case needs a store-specific fault, the fault is
injected at the service boundary (a failing S3 client, a failing SQLite statement, a remote
whose hook refuses a push), never in our code."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mlops_ci.backends.git_store import GitLocation, GitStore
from mlops_ci.backends.s3_store import S3Location, S3Store
from mlops_ci.backends.sqlite_store import SqliteStore
from mlops_ci.errors import AlreadyExists, Busy
from mlops_ci.records import Deployment, EndpointState, ModelVersion, RuleResult, Run, Verdict
from tests.conftest import as_lists, git
from tests.fakes.s3 import AtomicRequests

BUCKET = "mlops-ci-contract"
Factory = Callable[[], Any]


def git_machines(tmp_path: Path) -> Callable[[], GitStore]:
    """A bare "origin" and a factory of stores, each on a fresh clone of its own."""
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    count = iter(range(10_000))

    def machine() -> GitStore:
        clone = tmp_path / f"machine{next(count)}"
        git(tmp_path, "init", "-q", str(clone))
        git(clone, "remote", "add", "origin", str(origin))
        return GitStore(GitLocation(), "p", clone / ".git", env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})

    return machine


@pytest.fixture(params=["sqlite", "s3", "git"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    if request.param == "sqlite":
        yield lambda: SqliteStore(tmp_path / "store.db")
        return
    if request.param == "git":
        yield git_machines(tmp_path)
        return
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = AtomicRequests(boto3.client("s3", region_name="us-east-1"))
        client.create_bucket(Bucket=BUCKET)
        yield lambda: S3Store(S3Location(BUCKET, "team/store"), "p", client)


def run(run_id: str, sha: str = "a" * 40, *, status: str = "completed", finished: float = 1.0,
        digest: str = "cfg", dirty: bool = False) -> Run:  # fmt: skip
    return Run(
        run_id=run_id, project="p", sha=sha, branch="main", config_digest=digest, status=status, backend="local",
        started=0.0, finished=finished, params={"lr": 0.1}, metrics={"acc": 0.9}, artifact_uri="file:///x",
        artifact_sha256="f" * 64, dirty=dirty,
    )  # fmt: skip


def verdict(vid: str, run_id: str, created: float, passed: bool = True) -> Verdict:
    r = RuleResult("acc", "acc >= 0.5", "min", "fail", passed, 0.9, None, "ok", 3)
    return Verdict(vid, run_id, "p", "a" * 40, passed, "g", None, None, "", (r,), created)


def mv(version: int, sha: str) -> ModelVersion:
    return ModelVersion("p", version, sha, "r", "v", "file:///x", "f" * 64, {"acc": 0.9}, "approved", 0.0)


def test_run_round_trip_and_lookups(make: Factory):
    s = make()
    s.record_run(run("aaaaaaaa-1", finished=1.0), {"loss": [1.0, 0.5]})
    s.record_run(run("aaaaaaaa-2", finished=2.0, digest="other"), {})
    s.record_run(run("bbbbbbbb-1", "b" * 40, finished=3.0), {})
    assert s.get_run("aaaaaaaa-1") == run("aaaaaaaa-1", finished=1.0)
    assert s.get_run("nope") is None
    assert as_lists(s.series("aaaaaaaa-1")) == {"loss": [1.0, 0.5]}
    assert [r.run_id for r in s.runs("p")] == ["bbbbbbbb-1", "aaaaaaaa-2", "aaaaaaaa-1"]
    assert [r.run_id for r in s.runs("p", sha="a" * 40, limit=1)] == ["aaaaaaaa-2"]
    assert s.latest_completed("p", "a" * 40).run_id == "aaaaaaaa-2"
    assert s.latest_completed("p", "a" * 40, "cfg").run_id == "aaaaaaaa-1"
    assert s.shas_with_runs("p", ["a" * 40, "c" * 40, "b" * 40]) == {"a" * 40, "b" * 40}
    assert [r.run_id for r in s.runs_by_prefix("bbbb")] == ["bbbbbbbb-1"]


def test_runs_are_found_by_their_training_inputs(make: Factory):
    import dataclasses

    s = make()
    d = "d" * 64
    s.record_run(dataclasses.replace(run("aaaaaaaa-1", finished=1.0), inputs_digest=d), {})
    s.record_run(dataclasses.replace(run("aaaaaaaa-2", finished=2.0), inputs_digest=d), {})
    s.record_run(dataclasses.replace(run("bbbbbbbb-1", "b" * 40, finished=3.0, status="failed"), inputs_digest=d), {})
    s.record_run(dataclasses.replace(run("cccccccc-1", "c" * 40, finished=4.0, dirty=True), inputs_digest=d), {})
    s.record_run(dataclasses.replace(run("dddddddd-1", "d" * 40, finished=5.0), inputs_digest="e" * 64), {})
    assert s.latest_by_inputs("p", d).run_id == "aaaaaaaa-2"  # newest completed, never failed or dirty
    assert s.latest_by_inputs("p", "f" * 64) is None
    assert s.latest_by_inputs("p", "") is None  # runs recorded before digests existed are never matched


def test_failed_and_dirty_runs_are_never_baselines(make: Factory):
    s = make()
    s.record_run(run("r1", status="failed"), {})
    s.record_run(run("r2", dirty=True), {})
    assert s.latest_completed("p", "a" * 40) is None
    assert s.shas_with_runs("p", ["a" * 40]) == set()
    assert len(s.runs("p")) == 2


def test_create_once_never_overwrites(make: Factory):
    s = make()
    s.record_run(run("r1"), {"loss": [1.0]})
    with pytest.raises(AlreadyExists):
        s.record_run(run("r1", sha="b" * 40), {"loss": [9.0]})
    assert s.get_run("r1").sha == "a" * 40 and as_lists(s.series("r1")) == {"loss": [1.0]}
    s.record_verdict(verdict("v1", "r1", 1.0))
    with pytest.raises(AlreadyExists):
        s.record_verdict(verdict("v1", "r1", 2.0, passed=False))
    assert s.get_verdict("v1").passed


def test_concurrent_writers_lose_nothing(make: Factory):
    make()  # create the schema / bucket layout before the race

    def write(worker: int) -> None:
        store = make()
        for i in range(10):
            store.record_run(run(f"w{worker}-{i}", f"{worker:02d}{i:038d}", finished=float(i)), {"x": [1.0]})

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(write, range(6)))
    s = make()
    assert len(s.runs("p", limit=1000)) == 60
    assert len(s.shas_with_runs("p", [f"{w:02d}{i:038d}" for w in range(6) for i in range(10)])) == 60


def test_crash_between_writes_leaves_no_visible_half_run(make: Factory):
    s = make()
    s.record_run(run("ok"), {})
    if isinstance(s, S3Store):
        real = s.s3

        class DiesOnSecondPut:  # the series is written, then the process "dies"
            def __init__(self) -> None:
                self.puts = 0

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def put_object(self, **kw: Any) -> Any:
                self.puts += 1
                if self.puts == 2:
                    raise KeyboardInterrupt("killed")
                return real.put_object(**kw)

        s.s3 = DiesOnSecondPut()
    elif isinstance(s, GitStore):  # the remote refuses the push (a run is one commit: whole or absent)
        hook = s.git_dir.parent.parent / "origin.git" / "hooks" / "pre-receive"
        hook.write_text('#!/bin/sh\necho "killed" >&2\nexit 1\n')
        hook.chmod(0o755)
    else:
        s.conn.execute("CREATE TRIGGER die BEFORE INSERT ON series BEGIN SELECT RAISE(ABORT, 'killed'); END")
    with pytest.raises((KeyboardInterrupt, Exception)):
        s.record_run(run("half", "c" * 40), {"x": [1.0]})
    fresh = make()
    assert fresh.get_run("half") is None
    assert [r.run_id for r in fresh.runs("p")] == ["ok"]
    assert fresh.shas_with_runs("p", ["c" * 40]) == set()


def test_latest_verdict(make: Factory):
    s = make()
    s.record_run(run("r1"), {})
    assert s.latest_verdict("r1") is None
    s.record_verdict(verdict("v1", "r1", 1.0, passed=False))
    s.record_verdict(verdict("v2", "r1", 2.0))
    latest = s.latest_verdict("r1")
    assert latest.verdict_id == "v2" and latest.results[0].line == 3
    assert s.get_verdict("v1").passed is False


def test_promote_is_idempotent_per_sha(make: Factory):
    s = make()
    first, created = s.promote(lambda n: mv(n, "a" * 40), "a" * 40, "p")
    again, created_again = s.promote(lambda n: mv(n, "a" * 40), "a" * 40, "p")
    assert (first.version, created, created_again) == (1, True, False) and again == first
    assert s.version_for_sha("p", "a" * 40) == first
    assert s.get_version("p", 1) == first and s.get_version("p", 2) is None


def test_concurrent_promotes_get_gapless_distinct_versions(make: Factory):
    make()

    def promote(i: int) -> int:
        sha = f"{i:040d}"
        return make().promote(lambda n: mv(n, sha), sha, "p")[0].version

    with ThreadPoolExecutor(8) as pool:
        versions = sorted(pool.map(promote, range(16)))
    assert versions == list(range(1, 17))
    assert [v.version for v in make().versions("p")] == list(range(1, 17))


def test_concurrent_promotes_of_one_sha_make_one_version(make: Factory):
    make()
    with ThreadPoolExecutor(6) as pool:
        versions = set(pool.map(lambda _: make().promote(lambda n: mv(n, "d" * 40), "d" * 40, "p")[0].version,
                                range(6)))  # fmt: skip
    assert versions == {1} and len(make().versions("p")) == 1


def test_deployments_and_endpoint_state(make: Factory):
    s = make()
    for i, outcome in enumerate(["succeeded", "failed", "succeeded"]):
        s.record_deployment(Deployment(f"d{i}", "p", "prod", i + 1, "a" * 40, None, "deploy", outcome, "", i, i + 0.5))
    s.record_deployment(Deployment("s0", "p", "staging", 1, "a" * 40, None, "deploy", "succeeded", "", 0, 9.0))
    assert [d.deployment_id for d in s.deployments("p", "prod")] == ["d0", "d1", "d2"]
    assert len(s.deployments("p")) == 4
    assert s.endpoint_state("p", "prod") is None
    st = EndpointState("p", "prod", "http://x", 1, 2, 3, 4, 2, "a" * 40, "InService", 1.0)
    s.put_endpoint_state(st)
    s.put_endpoint_state(EndpointState("p", "prod", "http://x", 1, 2, 3, 4, 3, "a" * 40, "InService", 2.0))
    assert s.endpoint_state("p", "prod").version == 3
    assert [e.name for e in s.endpoint_states("p")] == ["prod"]


def test_lock_contention_names_the_holder(make: Factory):
    s = make()
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with make().lock("endpoint p/prod", "https://ci.example/runs/7", timeout=5):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(10)
    with (
        pytest.raises(Busy, match=r"endpoint p/prod is locked by https://ci.example/runs/7"),
        s.lock("endpoint p/prod", "me", timeout=0.3),
    ):
        pass
    release.set()
    t.join()
    with s.lock("endpoint p/prod", "me", timeout=5):  # free again
        pass


def test_artifacts_round_trip(make: Factory, tmp_path: Path):
    import hashlib

    s = make()
    f = tmp_path / "model.tar.gz"
    f.write_bytes(b"model bytes")
    digest = hashlib.sha256(b"model bytes").hexdigest()
    uri = s.put_artifact(f, digest)
    assert uri == s.put_artifact(f, digest)  # content-addressed: same URI, no second upload
    got = s.fetch_artifact(uri, tmp_path / "cache")
    assert got.read_bytes() == b"model bytes"
