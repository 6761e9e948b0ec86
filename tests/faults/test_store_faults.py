"""Fault matrix, local store: crashes and concurrent writers lose nothing and leave nothing half-written."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from mlops_ci.backends.sqlite_store import SqliteStore
from mlops_ci.errors import Busy
from tests.conftest import Project
from tests.integration.test_deploy import release
from tests.unit.backends.test_sqlite_store import make_run


def _write_runs(args: tuple[str, str, int]) -> None:
    path, prefix, n = args
    store = SqliteStore(Path(path))
    for i in range(n):
        store.record_run(make_run(f"{prefix}-{i}", finished=float(i)), {"loss": [float(i)]})
    store.close()


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path):
    path = str(tmp_path / "s.db")
    SqliteStore(Path(path)).close()
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_write_runs, [(path, "x", 50), (path, "y", 50)]))
    store = SqliteStore(Path(path))
    assert len(store.runs("p", limit=1000)) == 100


def test_kill_9_during_writes_leaves_a_consistent_store(tmp_path: Path):
    db = tmp_path / "s.db"
    SqliteStore(db).close()
    writer = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[3])!r})
        from pathlib import Path
        from tests.unit.backends.test_sqlite_store import make_run
        from mlops_ci.backends.sqlite_store import SqliteStore
        store = SqliteStore(Path({str(db)!r}))
        print("ready", flush=True)
        i = 0
        while True:
            store.record_run(make_run(f"r{{i}}"), {{"s%d" % k: [float(k)] * 50 for k in range(20)}})
            i += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    store = SqliteStore(db)
    runs = store.runs("p", limit=100_000)
    assert runs, "the writer should have committed some runs before it was killed"
    for run in runs:  # every visible run is whole: all 20 series were written with it
        assert len(store.series(run.run_id)) == 20
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_store_check_finds_a_tampered_artifact_and_a_lost_verdict(project: Project):
    import json
    import sqlite3

    project.ok("train")
    project.ok("gate")
    project.ok("promote")
    assert project.ok("store", "check").strip().endswith(": ok")
    run = json.loads(project.ok("runs", "show", "--json"))
    with open(run["artifact_uri"].removeprefix("file://"), "ab") as fh:
        fh.write(b"bit rot")
    db = sqlite3.connect(project.path / ".mlops-ci" / "store.db")
    db.execute("DELETE FROM verdicts")
    db.commit()
    db.close()
    code, out, err = project.cli("store", "check")
    assert code == 14 and "2 problem(s)" in err  # the shared artifact is reported once
    assert f"run {run['run_id']}: artifact" in out and "does not match its sha256" in out
    assert "v1: its verdict" in out and "provenance missing" in out


def test_the_lease_owner_is_the_workflow_run_url():
    from mlops_ci.backends import owner_label

    env = {"GITHUB_SERVER_URL": "https://ghe.example", "GITHUB_REPOSITORY": "acme/models", "GITHUB_RUN_ID": "42"}
    assert owner_label(env) == "https://ghe.example/acme/models/actions/runs/42"
    assert owner_label({}).startswith("pid ")


# -- a damaged store file --------------------------------------------------------------------
def _store_file(project: Project) -> Path:
    return project.path / ".mlops-ci" / "store.db"


def test_a_zero_byte_store_is_an_integrity_error_not_a_new_store(project: Project):
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    db = _store_file(project)
    for extra in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        extra.unlink(missing_ok=True)
    db.write_bytes(b"")  # truncated by a full disk, a bad copy, a botched restore
    for verb in (("status",), ("runs",), ("store", "check"), ("train",)):
        code, _, err = project.cli(*verb)
        assert code == 14, (verb, err)
        assert "is empty (0 bytes)" in err and "restore it from a backup" in err
    assert db.stat().st_size == 0  # not re-created, not written


def test_a_file_that_is_not_sqlite_is_refused_by_its_header(project: Project):
    project.ok("train")
    _store_file(project).write_bytes(b"PK\x03\x04 this is a zip file, not a store" + b"\0" * 4096)
    code, _, err = project.cli("runs")
    assert code == 14 and "is not a SQLite database (wrong header)" in err


def test_garbage_mid_file_is_found_by_store_check_and_stops_writers(project: Project):
    for i in range(6):  # enough records for several b-tree pages
        project.commit(f"c{i}", scale=1.0 + i)
        project.ok("train")
    project.ok("gate")
    db = _store_file(project)
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0  # checkpointed on close
    size = db.stat().st_size
    assert size > 5 * 4096
    with open(db, "r+b") as fh:
        fh.seek(2 * 4096)  # a page inside the tables, past the header and the schema
        fh.write(os.urandom(4096))
    before = db.read_bytes()
    code, out, err = project.cli("store", "check")
    assert code == 14, err
    assert "is damaged" in out and "Traceback" not in err  # every quick_check finding, on stdout
    for verb in (("gate",), ("train", "--force"), ("promote",)):
        code, _, err = project.cli(*verb)
        assert code == 14, (verb, err)
        assert "is damaged" in err
    assert db.read_bytes() == before  # nobody wrote into the damaged file


def test_a_waiter_that_times_out_leaves_the_holders_name(tmp_path: Path):
    db = tmp_path / "s.db"
    SqliteStore(db).close()
    ready = tmp_path / "held"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import time
            from pathlib import Path
            from mlops_ci.backends.sqlite_store import SqliteStore
            with SqliteStore(Path({str(db)!r})).lock("deploy-prod", "job 1 of run 42", timeout=5):
                Path({str(ready)!r}).write_text("yes")
                time.sleep(30)
        """),
        ]
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        store = SqliteStore(db)
        for _ in range(2):  # the second waiter still learns who holds it
            try:
                with store.lock("deploy-prod", "a waiter", timeout=0.2):
                    raise AssertionError("the lock was not held")
            except Busy as exc:
                assert "job 1 of run 42" in exc.message
    finally:
        holder.kill()
        holder.wait()


def test_lock_timeout_must_be_a_finite_number(project: Project):
    from mlops_ci.cli import main

    for bad in ("nan", "inf", "-1", "soon"):
        err = io.StringIO()
        with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(err):
            main(["-C", str(project.path), "deploy", "v1.0.0", "--lock-timeout", bad])
        assert exc.value.code == 2
        assert "--lock-timeout" in err.getvalue() and "expected" in err.getvalue()


def test_closing_stdout_early_is_not_an_internal_error(project: Project):
    store = SqliteStore(_store_file(project))
    for i in range(400):  # about 400 kB of JSON: far more than a pipe holds
        store.record_run(make_run(f"r{i:04d}", finished=float(i)), {"loss": [float(i)]})
    store.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops_ci", "-C", str(project.path), "runs", "--json", "--limit", "400"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "MLOPS_CI_PROJECT": "p"},
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(1) == b"["
    proc.stdout.close()  # what `| head -c1` does
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0, err
    assert err == ""
