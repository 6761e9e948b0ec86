"""Fault matrix, git store: what a user can get wrong or meet on the remote, each one line with
the fix and an exit code of the table, and nothing recorded by halves."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Project, git
from tests.fakes.git_http import GitHttpServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitHttpServer]:
    s = GitHttpServer(tmp_path / "server", writers={"ghs_write"}).start()
    s.bare("acme/models")
    yield s
    s.stop()


def test_a_git_store_outside_a_git_repository_names_the_fix(tmp_path: Path):
    (tmp_path / "mlops-ci.yaml").write_text("project: p\n")
    code, _, err = Project(tmp_path).cli("--store", "git", "runs")
    assert code == 11
    assert "is not inside a git repository" in err and "git init" in err and len(err.strip().splitlines()) == 1


def test_a_missing_remote_names_the_fix(project: Project):
    code, _, err = project.cli("--store", "git", "runs")
    assert code == 11
    assert "pushes to the remote 'origin', which this repository does not have" in err
    assert "git remote add origin URL" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("url", "said"), [
    ("git#refs/heads/mlops", "is not a ref namespace of its own"),
    ("git#refs/tags/x", "is not a ref namespace of its own"),
    ("git?max_artifact_mb=500", "max_artifact_mb must be a number of MB from 1 to 100"),
    ("git?colour=blue", "unknown option(s) colour"),
    ("git+origin\n::error::x", "not a remote name or URL"),
])  # fmt: skip
def test_a_bad_git_store_url_is_a_config_error(project: Project, url: str, said: str):
    code, _, err = project.cli("--store", url, "runs")
    assert code == 2 and said in err, err
    assert "\n::error::x" not in err  # the hostile value never becomes a workflow command of its own


def test_a_push_without_write_access_names_the_permission(project: Project, server: GitHttpServer,
                                                           monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    project.git("remote", "add", "origin", f"{server.url}/acme/models.git")
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_read_only")
    code, _, err = project.cli("--store", "git", "train")
    assert code == 13, err
    assert "needs `permissions: contents: write`" in err
    assert server.pushes == [] and git(server.bare("acme/models"), "for-each-ref") == ""
    # with the job's write token the same training records its run
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_write")
    code, out, err = project.cli("--store", "git", "train", "--json")
    assert code == 0, err
    assert json.loads(out)["run"]["status"] == "completed"


def test_an_unreachable_remote_is_transient(project: Project):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    project.git("remote", "add", "origin", f"http://127.0.0.1:{port}/acme/models.git")
    code, _, err = project.cli("--store", "git", "runs")
    assert code == 9 and "cannot reach the git remote origin" in err and "retry later" in err


def test_an_artifact_over_the_limit_is_refused_with_the_fix(project: Project, tmp_path: Path):
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    project.git("remote", "add", "origin", str(bare))
    code, _, err = project.cli("--store", "git?max_artifact_mb=0.00001", "train")
    assert code == 2
    assert "over the git store's limit of 1e-05 MB (GitHub refuses files over 100 MB)" in err
    assert "store: s3://bucket/prefix" in err
    # no record of a run whose model is nowhere (the training lock came and went)
    assert "artifacts/" not in git(bare, "for-each-ref")
    assert json.loads(project.ok("--store", "git", "runs", "--json")) == []


def test_a_record_overwritten_by_hand_is_an_integrity_error(project: Project, tmp_path: Path):
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    project.git("remote", "add", "origin", str(bare))
    project.ok("--store", "git", "train")
    # someone pushes a tree where the index is not JSON
    hand = tmp_path / "hand"
    git(tmp_path, "clone", "-q", str(bare), str(hand))
    git(hand, "fetch", "-q", "origin", "refs/mlops-ci/store")
    git(hand, "checkout", "-q", "FETCH_HEAD")
    (hand / "projects" / "fast" / "index.json").write_text("<<<not json\n")
    git(hand, "commit", "-qam", "by hand")
    git(hand, "push", "-q", "--force", "origin", "HEAD:refs/mlops-ci/store")
    code, _, err = project.cli("--store", "git", "runs")
    assert code == 14, err
    assert "projects/fast/index.json in refs/mlops-ci/store on origin is not a JSON record" in err


def test_a_key_with_a_newline_never_desynchronises_the_reader(project: Project, tmp_path: Path):
    from mlops_ci.backends.git_store import GitLocation, GitStore

    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    project.git("remote", "add", "origin", str(bare))
    run = json.loads(project.ok("--store", "git", "train", "--json"))["run"]
    store = GitStore(GitLocation(), "fast", project.path / ".git", {"PATH": "/usr/bin:/bin"})
    # `git cat-file --batch` answers one question per line: this id would be two questions
    assert store.get_run(run["run_id"] + ".json\nHEAD:x") is None
    assert store.get_run(run["run_id"]).run_id == run["run_id"]  # the next answer is still its own
    store.close()
