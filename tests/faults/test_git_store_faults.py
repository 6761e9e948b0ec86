"""Fault matrix, git store: what a user can get wrong or meet on the remote, each one line with
the fix and an exit code of the table, and nothing recorded by halves."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from mlops_ci.backends.git_store import GitLocation, GitStore
from mlops_ci.errors import IntegrityError, Transient
from mlops_ci.records import Run
from tests.conftest import Project, git
from tests.fakes.git_http import GitHttpServer


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
    ("git?max_artifact_mb=500", "max_artifact_mb must be a number of MB above 0, at most 100"),
    ("git?colour=blue", "unknown option(s) colour"),
    ("git+origin\n::error::x", "not a remote name or URL"),
    ("git+ext::sh -c id", "not a remote name or URL"),
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
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    project.git("remote", "add", "origin", str(bare))
    run = json.loads(project.ok("--store", "git", "train", "--json"))["run"]
    store = GitStore(GitLocation(), "fast", project.path / ".git", {"PATH": "/usr/bin:/bin"})
    # `git cat-file --batch` answers one question per line: this id would be two questions
    assert store.get_run(run["run_id"] + ".json\nHEAD:x") is None
    assert store.get_run(run["run_id"]).run_id == run["run_id"]  # the next answer is still its own
    store.close()


def _store(tmp_path: Path, remote: str = "origin") -> tuple[Path, GitStore]:
    bare = tmp_path / "origin.git"
    if not bare.exists():
        git(tmp_path, "init", "-q", "--bare", str(bare))
    clone = tmp_path / f"c{len(list(tmp_path.glob('c*')))}"
    git(tmp_path, "init", "-q", str(clone))
    git(clone, "remote", "add", "origin", str(bare))
    return bare, GitStore(GitLocation.parse(f"git+{remote}"), "p", clone / ".git", {"PATH": "/usr/bin:/bin"})


def _run(run_id: str) -> Run:
    return Run(run_id=run_id, project="p", sha="a" * 40, branch="main", config_digest="c", status="completed",
               backend="local", started=0.0, finished=1.0, params={}, metrics={"acc": 0.9})  # fmt: skip


def test_an_id_cannot_add_changes_of_its_own_to_a_commit(tmp_path: Path):
    # `update-index --index-info` reads one change per line: an imported run id with a newline
    # and a removal line of its own would delete another record
    _, store = _store(tmp_path)
    store.record_run(_run("good"), {})
    hostile = "x.json\n0 " + "0" * 40 + "\tprojects/p/runs/good"
    with pytest.raises(IntegrityError, match="cannot be a record's key"):
        store.record_run(_run(hostile), {})
    _, fresh = _store(tmp_path)
    assert fresh.get_run("good") is not None and [r.run_id for r in fresh.runs("p")] == ["good"]


def test_a_name_with_a_space_is_not_found_not_a_crash(tmp_path: Path):
    _, store = _store(tmp_path)
    store.record_run(_run("r1"), {})
    assert store.get_run("a b") is None and store.endpoint_state("p", "a b") is None
    assert store.get_run("r1") is not None


def test_a_directory_or_a_blob_where_the_store_should_be_is_an_integrity_error(tmp_path: Path):
    bare, store = _store(tmp_path)
    store.record_run(_run("r1"), {})
    # index.json replaced by a directory: never read as "no runs", never overwritten by the next run
    hand = tmp_path / "hand"
    git(tmp_path, "clone", "-q", str(bare), str(hand))
    git(hand, "fetch", "-q", "origin", "refs/mlops-ci/store")
    git(hand, "checkout", "-q", "FETCH_HEAD")
    (hand / "projects/p/index.json").unlink()
    (hand / "projects/p/index.json").mkdir()
    (hand / "projects/p/index.json/x").write_text("x")
    git(hand, "add", "-A")
    git(hand, "commit", "-qm", "by hand")
    git(hand, "push", "-q", "--force", "origin", "HEAD:refs/mlops-ci/store")
    _, fresh = _store(tmp_path)
    with pytest.raises(IntegrityError, match="index.json in refs/mlops-ci/store on origin is a tree, not a record"):
        fresh.runs("p")
    with pytest.raises(IntegrityError):
        fresh.record_run(_run("r2"), {})
    # a blob pushed as the store's ref
    blob = git(hand, "rev-parse", "HEAD:projects/p/index.json/x")  # any blob
    git(hand, "push", "-q", "--force", "origin", f"{blob}:refs/mlops-ci/store")
    _, fresh = _store(tmp_path)
    with pytest.raises(IntegrityError, match="refs/mlops-ci/store on origin is not a commit"):
        fresh.runs("p")


def test_an_artifact_ref_that_holds_something_else_is_refused_not_trusted(tmp_path: Path):
    bare, store = _store(tmp_path)
    model = tmp_path / "model.tar.gz"
    model.write_bytes(b"the model")
    digest = "b" * 64
    # someone created the ref with another tree first
    hand = tmp_path / "hand"
    git(tmp_path, "init", "-q", str(hand))
    git(hand, "commit", "-q", "--allow-empty", "-m", "not a model")
    git(hand, "push", "-q", str(bare), f"HEAD:refs/mlops-ci/artifacts/{digest}")
    with pytest.raises(IntegrityError, match="exists but does not hold this model.tar.gz"):
        store.put_artifact(model, digest)
    # and reading it gives no file: the caller reports the artifact missing
    assert not store.fetch_artifact(f"git+origin#refs/mlops-ci/artifacts/{digest}", tmp_path / "cache").exists()


def test_a_password_in_the_store_url_is_never_recorded_or_shown(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clone = tmp_path / "c"
    git(tmp_path, "init", "-q", str(clone))
    url = f"http://bob:S3cretPW@127.0.0.1:{port}/o/r.git"
    store = GitStore(GitLocation.parse(f"git+{url}"), "p", clone / ".git", {"PATH": "/usr/bin:/bin"})
    with pytest.raises(Transient) as err:
        store.runs("p")
    assert "S3cretPW" not in err.value.message and f"127.0.0.1:{port}" in err.value.message
    assert "S3cretPW" not in store._shown
