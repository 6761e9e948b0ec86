from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mlops_ci.backends.sqlite_store import SCHEMA_VERSION, SqliteStore
from mlops_ci.errors import AlreadyExists, ConfigError, IntegrityError
from mlops_ci.records import ModelVersion, Run
from tests.conftest import as_lists


def make_run(run_id: str, sha: str = "a" * 40, status: str = "completed", finished: float = 1.0) -> Run:
    return Run(
        run_id=run_id,
        project="p",
        sha=sha,
        branch="main",
        config_digest="cfg",
        status=status,
        backend="local",
        started=0.0,
        finished=finished,
        params={"lr": 0.1},
        metrics={"acc": 0.9},
        artifact_uri="file:///x",
        artifact_sha256="f" * 64,
    )


def test_run_round_trip_with_series(tmp_path: Path):
    store = SqliteStore(tmp_path / "s.db")
    run = make_run("r1")
    store.record_run(run, {"loss": [1.0, 0.5]})
    assert store.get_run("r1") == run
    assert as_lists(store.series("r1")) == {"loss": [1.0, 0.5]}
    assert store.latest_completed("p", "a" * 40, "cfg") == run
    assert store.latest_completed("p", "a" * 40, "other") is None
    assert store.shas_with_runs("p", ["a" * 40, "b" * 40]) == {"a" * 40}


def test_failed_runs_are_never_baselines(tmp_path: Path):
    store = SqliteStore(tmp_path / "s.db")
    store.record_run(make_run("r1", status="failed"), {})
    assert store.latest_completed("p", "a" * 40) is None
    assert store.shas_with_runs("p", ["a" * 40]) == set()


def test_duplicate_run_id_is_rejected_and_nothing_half_written(tmp_path: Path):
    store = SqliteStore(tmp_path / "s.db")
    store.record_run(make_run("r1"), {"loss": [1.0]})
    with pytest.raises(AlreadyExists):
        store.record_run(make_run("r1"), {"other": [2.0]})
    assert as_lists(store.series("r1")) == {"loss": [1.0]}


def _mv(version: int, sha: str) -> ModelVersion:
    return ModelVersion("p", version, sha, "r", "v", "file:///x", "f" * 64, {}, "approved", 0.0)


def test_concurrent_promotes_get_distinct_gapless_versions(tmp_path: Path):
    SqliteStore(tmp_path / "s.db").close()

    def promote(i: int) -> int:
        store = SqliteStore(tmp_path / "s.db")
        try:
            mv, _ = store.promote(lambda v: _mv(v, f"{i:040d}"), f"{i:040d}", "p")
            return mv.version
        finally:
            store.close()

    with ThreadPoolExecutor(8) as pool:
        versions = sorted(pool.map(promote, range(20)))
    assert versions == list(range(1, 21))


def test_promote_same_sha_twice_is_idempotent(tmp_path: Path):
    store = SqliteStore(tmp_path / "s.db")
    first, created = store.promote(lambda v: _mv(v, "a" * 40), "a" * 40, "p")
    again, created_again = store.promote(lambda v: _mv(v, "a" * 40), "a" * 40, "p")
    assert (created, created_again) == (True, False)
    assert first == again and len(store.versions("p")) == 1


def test_newer_schema_is_refused(tmp_path: Path):
    db = tmp_path / "s.db"
    SqliteStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="newer than this mlops-ci understands"):
        SqliteStore(db)


def test_garbage_file_is_a_clear_error(tmp_path: Path):
    db = tmp_path / "s.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(IntegrityError, match="is not a SQLite database"):  # exit 14: the store's code
        SqliteStore(db)


def test_a_v1_store_is_migrated_in_place_and_found_by_inputs(tmp_path: Path):
    """A store written by the release before runs had an inputs digest (schema v1)."""
    import dataclasses
    import json

    from mlops_ci.backends import sqlite_store

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(sqlite_store._SCHEMA)
    conn.execute("PRAGMA user_version=1")
    old = dataclasses.asdict(make_run("r-old"))
    for key in ("inputs_digest", "reused_from"):  # a v1 body has neither
        old.pop(key)
    row = ("r-old", "p", "a" * 40, "main", "cfg", "completed", "local", 0.0, 1.0, 0, json.dumps(old))
    conn.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?)", row)
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert store.get_run("r-old") == make_run("r-old")  # read back with the new fields' defaults
    assert store.latest_by_inputs("p", "") is None  # an old run has no digest: never reused
    new = dataclasses.replace(make_run("r-new", sha="b" * 40), inputs_digest="d" * 64)
    store.record_run(new, {})
    assert store.latest_by_inputs("p", "d" * 64) == new
    assert store.latest_by_inputs("other", "d" * 64) is None
