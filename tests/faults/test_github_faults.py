"""Fault matrix, GitHub: faults of the REST API through the real PyGithub client (fake clock)."""

from __future__ import annotations

import threading

import pytest

from mlops_ci.errors import PermissionDenied, Transient
from tests.conftest import Project
from tests.fakes.github_api import FakeGitHub
from tests.integration.test_github import REPO, Clock, actions_env, client


def test_fork_pr_with_read_only_token_degrades_to_the_step_summary(pr: Project, fake, tmp_path, monkeypatch):
    summary = actions_env(monkeypatch, fake, tmp_path, pr, token="ro-token")
    code, _, err = pr.cli("report", "--post")
    assert code == 0
    assert "::warning::" in err and "pull-requests: write" in err
    assert summary.read_text().startswith("<!-- mlops-ci:report project=fast -->")
    assert fake.pr_comments(REPO, 7) == []


def test_bad_token_is_exit_13_and_never_printed(pr: Project, fake, tmp_path, monkeypatch):
    actions_env(monkeypatch, fake, tmp_path, pr, token="ghp_wrongtoken_do_not_print")
    code, out, err = pr.cli("gate", "--check")
    assert code == 13
    assert "401 Bad credentials" in err
    assert "ghp_wrongtoken_do_not_print" not in out + err


def test_marker_on_page_two_of_300_comments(fake: FakeGitHub):
    fake.add_comments(REPO, 1, 150)
    fake._new_comment(REPO, 1, "<!-- mlops-ci:report project=p -->\nold", "github-actions[bot]")
    fake.add_comments(REPO, 1, 150)
    fake.requests.clear()
    result = client(fake).upsert_comment(
        1, "<!-- mlops-ci:report project=p -->\nnew", "<!-- mlops-ci:report project=p -->"
    )
    assert result.action == "updated"
    ours = [c for c in fake.pr_comments(REPO, 1) if c["body"].endswith("new")]
    assert len(ours) == 1 and len(fake.pr_comments(REPO, 1)) == 301
    # page 1; page 1 again (PyGithub's `reversed` reads the Link header); pages 4, 3, 2; PATCH
    assert fake.count("GET") == 5 and fake.count("PATCH") == 1


def test_post_that_stores_then_502s_is_not_posted_twice(fake: FakeGitHub):
    fake.inject("POST", r"/issues/3/comments$", 502, message="Bad Gateway", after=True)
    clock = Clock()
    result = client(fake, clock=clock).upsert_comment(3, "<!-- m -->\nbody", "<!-- m -->")
    assert len(fake.pr_comments(REPO, 3)) == 1
    assert result.comment_id == fake.pr_comments(REPO, 3)[0]["id"]
    assert clock.slept == [1.0]


def test_transient_502s_are_retried(fake: FakeGitHub):
    fake.inject("GET", r"/issues/4/comments$", 502, times=2)
    clock = Clock()
    client(fake, clock=clock).upsert_comment(4, "<!-- m -->\nx", "<!-- m -->")
    assert clock.slept == [1.0, 2.0] and len(fake.pr_comments(REPO, 4)) == 1


def test_secondary_rate_limit_honours_retry_after(fake: FakeGitHub):
    fake.inject("POST", r"/check-runs$", 403, message="You have exceeded a secondary rate limit",
                headers={"Retry-After": "7"})  # fmt: skip
    clock = Clock()
    assert client(fake, clock=clock).publish_check("a" * 40, "c", "success", "t", "s", [], None) == "check"
    assert clock.slept == [7.0] and len(fake.check_runs) == 1


def test_rate_limit_reset_header(fake: FakeGitHub):
    clock = Clock()
    reset = int(clock.now) + 42
    fake.inject("GET", r"/comments$", 403, message="API rate limit exceeded",
                headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)})  # fmt: skip
    client(fake, clock=clock).upsert_comment(5, "<!-- m -->\nx", "<!-- m -->")
    assert clock.slept == [43.0]


def test_429_without_retry_after_backs_off_from_a_minute(fake: FakeGitHub):
    fake.inject("GET", r"/comments$", 429, message="Too many requests", times=2)
    clock = Clock()
    client(fake, clock=clock).upsert_comment(6, "<!-- m -->\nx", "<!-- m -->")
    assert clock.slept == [60.0, 120.0]


def test_endless_throttling_is_bounded_and_transient(fake: FakeGitHub):
    fake.inject("GET", r"/comments$", 502, times=100)
    clock = Clock()
    with pytest.raises(Transient, match=r"kept answering HTTP 502 .* retry later"):
        client(fake, clock=clock).upsert_comment(8, "<!-- m -->\nx", "<!-- m -->")
    assert sum(clock.slept) <= 600 and fake.pr_comments(REPO, 8) == []


def test_missing_permission_is_not_retried_and_names_it(fake: FakeGitHub):
    clock = Clock()
    with pytest.raises(PermissionDenied, match=r"lacks the `pull-requests:write` permission .* pull-requests: write"):
        client(fake, token="ro-token", clock=clock).upsert_comment(9, "<!-- m -->\nx", "<!-- m -->")
    assert clock.slept == []
    assert fake.count("POST") == 1


def test_concurrent_posts_leave_one_comment(fake: FakeGitHub):
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def post(i: int) -> None:
        try:
            barrier.wait()
            client(fake).upsert_comment(10, f"<!-- m -->\njob {i}", "<!-- m -->")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    comments = fake.pr_comments(REPO, 10)
    assert len(comments) == 1 and comments[0]["body"].startswith("<!-- m -->\njob ")
