"""Fault matrix, local store: crashes and concurrent writers lose nothing and leave nothing half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from mlops_ci.backends.sqlite_store import SqliteStore
from tests.conftest import Project
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
