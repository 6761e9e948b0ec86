from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mlops_ci.context import Git, load_context
from mlops_ci.errors import GitError, NotFound
from tests.conftest import Project, git


def test_local_context(project: Project):
    ctx = load_context(project.path, {})
    assert ctx.sha == project.git("rev-parse", "HEAD")
    assert (ctx.branch, ctx.tag, ctx.pr_number, ctx.dirty, ctx.shallow) == ("main", None, None, False, False)
    (project.path / "train.py").write_text("changed\n")
    assert load_context(project.path, {}).dirty


def test_untracked_files_do_not_make_the_tree_dirty(project: Project):
    (project.path / "notes.txt").write_text("scratch\n")
    assert not load_context(project.path, {}).dirty


def test_pull_request_event_uses_the_pr_head_not_the_merge_commit(project: Project, tmp_path: Path):
    head = project.git("rev-parse", "HEAD")
    event = tmp_path / "event.json"
    event.write_text(
        json.dumps(
            {
                "number": 17,
                "pull_request": {"number": 17, "head": {"sha": head, "ref": "feature/x"}, "base": {"ref": "develop"}},
            }
        )
    )
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_SHA": "f" * 40,
        "GITHUB_REF": "refs/pull/17/merge",
        "GITHUB_REPOSITORY": "acme/models",
    }
    ctx = load_context(project.path, env)
    assert (ctx.sha, ctx.branch, ctx.base_ref, ctx.pr_number) == (head, "feature/x", "develop", 17)
    assert ctx.repository == "acme/models" and ctx.event_name == "pull_request"


def test_push_of_a_tag(project: Project):
    sha = project.git("rev-parse", "HEAD")
    project.git("tag", "v1.2.0")
    env = {"GITHUB_ACTIONS": "true", "GITHUB_SHA": sha, "GITHUB_REF": "refs/tags/v1.2.0"}
    assert load_context(project.path, env).tag == "v1.2.0"
    assert load_context(project.path, {}).tag == "v1.2.0"  # also found from git alone


def test_detached_head_has_no_branch(project: Project):
    project.git("checkout", "-q", "--detach")
    assert load_context(project.path, {}).branch is None


def test_resolve(project: Project):
    g = Git(project.path)
    sha = project.git("rev-parse", "HEAD")
    assert g.resolve("main") == sha == g.resolve(sha[:7])
    with pytest.raises(NotFound, match="does not name a commit"):
        g.resolve("nope")
    with pytest.raises(NotFound):
        g.resolve("--output=/tmp/x")  # option injection through a ref is refused


def test_not_a_repository(tmp_path: Path):
    with pytest.raises(GitError, match="not inside a git repository"):
        Git(tmp_path)


def test_repository_without_commits(tmp_path: Path):
    git(tmp_path, "init", "-q")
    with pytest.raises(GitError, match="no commits yet"):
        Git(tmp_path).head_sha()


def test_shallow_clone_baseline_fails_closed_with_the_fetch_depth_hint(project: Project, tmp_path: Path):
    project.ok("train")
    for i in range(3):
        project.commit(f"main {i}")
    project.git("checkout", "-q", "-b", "feature")
    project.commit("feature work", quality=0.95)
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", "--no-single-branch", f"file://{project.path}", str(clone)],
        check=True,
    )
    git(clone, "checkout", "-q", "feature")
    store = f"sqlite:///{project.path / '.mlops-ci' / 'store.db'}"  # shared, as a team store would be
    c = Project(clone)
    c.ok("--store", store, "train")  # the head can be trained in a shallow clone
    code, out, _ = c.cli("--store", store, "gate", "--base", "origin/main")
    assert code == 1
    assert "shallow" in out and "fetch-depth: 0" in out


@pytest.mark.parametrize(
    ("event_name", "payload", "ref", "expect"),
    [
        ("release", {"release": {"tag_name": "v2.0.0"}}, "refs/tags/v2.0.0", ("tag", "v2.0.0")),
        ("workflow_dispatch", {"inputs": {}}, "refs/heads/main", ("branch", "main")),
        ("push", {"ref": "refs/heads/dev"}, "refs/heads/dev", ("branch", "dev")),
    ],
)
def test_other_actions_events(project: Project, tmp_path: Path, event_name, payload, ref, expect):
    sha = project.git("rev-parse", "HEAD")
    project.git("tag", "v2.0.0")
    event = tmp_path / "event.json"
    event.write_text(json.dumps(payload))
    env = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": event_name, "GITHUB_EVENT_PATH": str(event),
           "GITHUB_SHA": sha, "GITHUB_REF": ref}  # fmt: skip
    ctx = load_context(project.path, env)
    assert ctx.sha == sha and getattr(ctx, expect[0]) == expect[1]


def test_pull_request_target_payload_names_the_pr_head(project: Project, tmp_path: Path):
    head = project.git("rev-parse", "HEAD")
    event = tmp_path / "event.json"
    event.write_text(
        json.dumps({"pull_request": {"number": 3, "head": {"sha": head, "ref": "f"}, "base": {"ref": "main"}}})
    )
    env = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request_target", "GITHUB_EVENT_PATH": str(event),
           "GITHUB_SHA": "e" * 40}  # fmt: skip
    ctx = load_context(project.path, env)
    assert (ctx.sha, ctx.pr_number, ctx.base_ref) == (head, 3, "main")
