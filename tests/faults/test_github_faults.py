"""Fault matrix, GitHub: faults of the REST API through the real PyGithub client (fake clock)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from mlops_ci.errors import BadCredentials, PermissionDenied, Transient
from tests.conftest import Project
from tests.fakes.github_api import ACTIONS_BOT, ALL_PERMISSIONS, Account, FakeGitHub
from tests.integration.test_github import REPO, TOKEN, Clock, actions_env, client

M = "<!-- mlops-ci:report project=p -->"
# A contributor's comment that starts with the marker and mimics a report, with workflow
# commands and markup in it: it must never be edited, deleted or mistaken for ours.
MIMIC = f"{M}\n## mlops-ci report\n::error::gate failed\n##[group]x\n<details><img src=x onerror=alert(1)>`$(id)`"
ALICE = Account("alice", 501, installation=False)
MY_APP = Account("my-app[bot]", 9_100_001, installation=True)


@pytest.fixture
def accounts() -> Iterator[FakeGitHub]:
    """A fake where the token kinds differ: GITHUB_TOKEN (TOKEN), a PAT, a GitHub App token.
    Tokens are new to this process, so each test sees the identity question asked."""
    pat, app = f"github_pat_{uuid.uuid4().hex}", f"ghs_{uuid.uuid4().hex}"
    gh = FakeGitHub(tokens={TOKEN: ALL_PERMISSIONS, pat: ALL_PERMISSIONS, app: ALL_PERMISSIONS},
                    accounts={pat: ALICE, app: MY_APP}).start()  # fmt: skip
    yield gh
    gh.stop()


def token_of(fake: FakeGitHub, account: Account) -> str:
    return next(t for t, a in fake.accounts.items() if a == account)


def bodies(fake: FakeGitHub, number: int) -> list[tuple[str, str]]:
    return [(c["user"]["login"], c["body"]) for c in fake.pr_comments(REPO, number)]


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


# -- only our own comments are edited or deleted (issue 17) ---------------------------------


def test_a_marker_comment_by_someone_else_before_ours_is_left_alone(fake: FakeGitHub):
    theirs = fake._new_comment(REPO, 20, MIMIC, "contributor")
    gh = client(fake)
    # the dry-run plan and the real run agree: a new comment of ours, theirs untouched
    assert gh.plan_comment(20, MIMIC, M) == [
        {"method": "POST", "path": f"/repos/{REPO}/issues/20/comments", "body": {"body": MIMIC}}
    ]
    first = gh.upsert_comment(20, MIMIC, M)  # even a body identical to theirs is not "unchanged"
    assert first.action == "created" and first.comment_id != theirs["id"]
    second = gh.upsert_comment(20, f"{M}\nv2", M)
    assert second.action == "updated" and second.comment_id == first.comment_id
    assert bodies(fake, 20) == [("contributor", MIMIC), ("github-actions[bot]", f"{M}\nv2")]
    assert fake.count("PATCH", f"/comments/{theirs['id']}") == fake.count("DELETE") == 0


def test_a_marker_comment_by_someone_else_after_ours_is_not_deleted(fake: FakeGitHub):
    ours = fake._new_comment(REPO, 21, f"{M}\nold", "github-actions[bot]")
    fake._new_comment(REPO, 21, MIMIC, "contributor")
    fake._new_comment(REPO, 21, f"{M}\nsquatter", "github-actions")  # a human, not the Actions bot
    assert client(fake).plan_comment(21, f"{M}\nnew", M) == [
        {"method": "PATCH", "path": f"/repos/{REPO}/issues/comments/{ours['id']}", "body": {"body": f"{M}\nnew"}}
    ]
    result = client(fake).upsert_comment(21, f"{M}\nnew", M)
    assert result.action == "updated" and result.comment_id == ours["id"]
    assert bodies(fake, 21) == [
        ("github-actions[bot]", f"{M}\nnew"),
        ("contributor", MIMIC),
        ("github-actions", f"{M}\nsquatter"),
    ]
    assert fake.count("DELETE") == 0


def test_a_human_named_github_actions_is_not_the_actions_bot(fake: FakeGitHub):
    squat = fake._new_comment(REPO, 22, f"{M}\nmine now", "github-actions")
    assert squat["user"]["id"] != ACTIONS_BOT.id
    result = client(fake).upsert_comment(22, f"{M}\nreport", M)
    assert result.action == "created" and result.comment_id != squat["id"]
    assert bodies(fake, 22) == [("github-actions", f"{M}\nmine now"), ("github-actions[bot]", f"{M}\nreport")]


def test_only_our_duplicates_are_deleted(fake: FakeGitHub):
    keep = fake._new_comment(REPO, 23, f"{M}\njob 1", "github-actions[bot]")
    fake._new_comment(REPO, 23, MIMIC, "contributor")
    fake._new_comment(REPO, 23, f"{M}\njob 2", "github-actions[bot]")  # a concurrent job's
    result = client(fake).upsert_comment(23, f"{M}\nfinal", M)
    assert result.comment_id == keep["id"]
    assert bodies(fake, 23) == [("github-actions[bot]", f"{M}\nfinal"), ("contributor", MIMIC)]


def test_identity_is_asked_once_per_process():
    token = f"ghs_{uuid.uuid4().hex}"  # a token this process has never asked about
    gh = FakeGitHub(tokens={token: ALL_PERMISSIONS}).start()
    try:
        client(gh, token=token).upsert_comment(30, f"{M}\na", M)
        client(gh, token=token).upsert_comment(31, f"{M}\nb", M)  # a new client, same process
        client(gh, token=token).plan_comment(30, f"{M}\nc", M)
        assert len(gh.graphql) == 1 and gh.count("GET", "/user") == 0
        assert [c["user"]["login"] for n in (30, 31) for c in gh.pr_comments(REPO, n)] == ["github-actions[bot]"] * 2
    finally:
        gh.stop()


def test_an_app_token_is_known_by_graphql_viewer_and_leaves_github_actions_comments_alone(accounts: FakeGitHub):
    old = accounts._new_comment(REPO, 40, f"{M}\nfrom GITHUB_TOKEN days", "github-actions[bot]")
    mine = accounts._new_comment(REPO, 40, f"{M}\nold", "my-app[bot]")
    result = client(accounts, token=token_of(accounts, MY_APP)).upsert_comment(40, f"{M}\nnew", M)
    assert result.comment_id == mine["id"] and result.action == "updated"
    assert bodies(accounts, 40) == [("github-actions[bot]", old["body"]), ("my-app[bot]", f"{M}\nnew")]
    assert len(accounts.graphql) == 1  # the viewer question
    assert ("GET", "/user") not in accounts.requests  # installation tokens may not ask REST who they are
    assert client(accounts, token=token_of(accounts, MY_APP)).identity().login == "my-app[bot]"


def test_a_pat_is_known_by_get_user_when_graphql_is_unavailable(accounts: FakeGitHub):
    accounts.inject("POST", r"^/graphql$", 403, message="Resource not accessible by personal access token")
    accounts._new_comment(REPO, 41, f"{M}\nbot's", "github-actions[bot]")
    mine = accounts._new_comment(REPO, 41, f"{M}\nold", "alice")
    result = client(accounts, token=token_of(accounts, ALICE)).upsert_comment(41, f"{M}\nnew", M)
    assert result.comment_id == mine["id"]
    assert bodies(accounts, 41) == [("github-actions[bot]", f"{M}\nbot's"), ("alice", f"{M}\nnew")]
    assert accounts.count("GET", "/user") == 1


def test_identity_5xx_is_retried_then_succeeds(accounts: FakeGitHub):
    accounts.inject("POST", r"^/graphql$", 502, times=2)
    clock = Clock()
    client(accounts, token=token_of(accounts, MY_APP), clock=clock).upsert_comment(42, f"{M}\nx", M)
    assert clock.slept == [1.0, 2.0] and bodies(accounts, 42) == [("my-app[bot]", f"{M}\nx")]


def test_graphql_rate_limit_on_the_identity_question_waits_for_the_reset(accounts: FakeGitHub):
    clock = Clock()
    # GraphQL's primary limit is HTTP 200 with a RATE_LIMITED error (github/docs#22607)
    accounts.inject("POST", r"^/graphql$", 200, payload={"data": None, "errors": [
        {"type": "RATE_LIMITED", "message": "API rate limit exceeded for installation ID 1."}]},
        headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(clock.now) + 30)})  # fmt: skip
    client(accounts, token=token_of(accounts, MY_APP), clock=clock).upsert_comment(46, f"{M}\nx", M)
    assert clock.slept == [31.0] and bodies(accounts, 46) == [("my-app[bot]", f"{M}\nx")]
    assert accounts.count("GET", "/user") == 0  # a limit is waited out, not taken for "no identity"


def test_identity_that_keeps_failing_is_transient_exit_9_and_touches_nothing():
    token = f"ghs_{uuid.uuid4().hex}"
    gh = FakeGitHub(tokens={token: ALL_PERMISSIONS}).start()
    try:
        theirs = gh._new_comment(REPO, 43, MIMIC, "contributor")
        gh.inject("POST", r"^/graphql$", 503, times=100)
        with pytest.raises(Transient, match=r"could not ask GitHub which account .* HTTP 503 .* retry later") as err:
            client(gh, token=token).upsert_comment(43, f"{M}\nx", M)
        assert err.value.exit_code == 9
        assert gh.writes() == 0 and gh.pr_comments(REPO, 43) == [theirs]
    finally:
        gh.stop()


def test_unknown_identity_fails_closed_and_the_report_stays_in_the_step_summary(
    pr: Project, fake: FakeGitHub, tmp_path, monkeypatch
):
    # an installation token whose GraphQL is blocked: GET /user is 403 for it too
    fake.inject("POST", r"^/graphql$", 403, message="Resource not accessible by integration", times=100)
    theirs = fake._new_comment(REPO, 7, "<!-- mlops-ci:report project=fast -->\nnot the bot's", "contributor")
    token = f"ghs_{uuid.uuid4().hex}"  # not asked about before in this process
    fake.tokens[token] = ALL_PERMISSIONS
    summary = actions_env(monkeypatch, fake, tmp_path, pr, token=token)
    code, _, err = pr.cli("report", "--post")
    assert code == 0, err
    (warning,) = [line for line in err.splitlines() if line.startswith("::warning::could not tell which account")]
    assert "GraphQL viewer: HTTP 403" in warning and "GET /user: HTTP 403" in warning
    assert "it is in the job's step summary instead" in warning
    assert summary.read_text().startswith("<!-- mlops-ci:report project=fast -->")
    assert fake.writes() == 0 and fake.pr_comments(REPO, 7) == [theirs]


def test_unknown_identity_is_exit_13_from_the_client(accounts: FakeGitHub):
    accounts.inject("POST", r"^/graphql$", 404, message="Not Found", times=100)
    clock = Clock()
    with pytest.raises(PermissionDenied, match=r"could not tell which account .* so no PR comment was touched") as err:
        client(accounts, token=token_of(accounts, MY_APP), clock=clock).upsert_comment(44, f"{M}\nx", M)
    assert err.value.exit_code == 13 and not isinstance(err.value, BadCredentials)
    assert clock.slept == [] and accounts.writes() == 0


def test_a_bad_token_on_the_identity_question_is_bad_credentials(fake: FakeGitHub):
    with pytest.raises(BadCredentials, match="401 Bad credentials"):
        client(fake, token="ghs_not_a_token").upsert_comment(45, f"{M}\nx", M)
    assert fake.writes() == 0
