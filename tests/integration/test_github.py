"""The GitHub surface through the real PyGithub client against the local fake REST server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_ci.backends.github import GitHubClient, GitHubSettings, RetryPolicy
from tests.conftest import Project
from tests.fakes.github_api import ALL_PERMISSIONS, READ_ONLY, FakeGitHub
from tests.integration.test_deploy import release

REPO = "acme/models"
TOKEN = "ghs_supersecrettoken123"


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    gh = FakeGitHub(
        tokens={TOKEN: ALL_PERMISSIONS, "ro-token": READ_ONLY, "no-checks": ALL_PERMISSIONS - {"checks:write"}}
    )
    gh.start()
    yield gh
    gh.stop()


class Clock:
    """A fake clock: sleeping advances time instantly."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.slept: list[float] = []

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s

    def time(self) -> float:
        return self.now


def client(fake: FakeGitHub, token: str = TOKEN, clock: Clock | None = None) -> GitHubClient:
    clock = clock or Clock()
    settings = GitHubSettings(fake.base_url, token, REPO, "https://github.example", "77", "1", write_interval=0)
    return GitHubClient(settings, retry=RetryPolicy(sleep=clock.sleep, clock=clock.time))


def actions_env(monkeypatch: pytest.MonkeyPatch, fake: FakeGitHub, tmp_path: Path, project: Project, *,
                token: str = TOKEN, number: int = 7, head_ref: str = "tune", title: str = "Tune") -> Path:  # fmt: skip
    head = project.git("rev-parse", "HEAD")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({
        "number": number,
        "pull_request": {"number": number, "title": title, "head": {"sha": head, "ref": head_ref},
                         "base": {"ref": "main"}},
    }))  # fmt: skip
    summary = tmp_path / "summary.md"
    summary.touch()
    for k, v in {
        "GITHUB_ACTIONS": "true", "GITHUB_API_URL": fake.base_url, "GITHUB_TOKEN": token,
        "GITHUB_REPOSITORY": REPO, "GITHUB_EVENT_NAME": "pull_request", "GITHUB_EVENT_PATH": str(event),
        "GITHUB_SHA": "0" * 40, "GITHUB_REF": f"refs/pull/{number}/merge", "GITHUB_RUN_ID": "77",
        "GITHUB_RUN_ATTEMPT": "1", "GITHUB_SERVER_URL": "https://github.example", "GITHUB_STEP_SUMMARY": str(summary),
        "MLOPS_CI_GITHUB_WRITE_INTERVAL": "0", "MLOPS_CI_ALLOW_RUNNER_STORE": "true",
        "MLOPS_CI_ALLOW_RUNNER_ENDPOINTS": "true",
    }.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    return summary


@pytest.fixture
def pr(project: Project) -> Project:
    project.ok("train")
    project.git("checkout", "-q", "-b", "tune")
    project.commit("tune", quality=0.93)
    project.ok("train")
    return project


def test_report_twice_leaves_one_updated_comment(pr: Project, fake: FakeGitHub, tmp_path, monkeypatch):
    actions_env(monkeypatch, fake, tmp_path, pr)
    fake.add_comments(REPO, 7, 3)
    code, _, err = pr.cli("report", "--post")
    assert code == 0, err
    assert "PR comment created" in err
    calls_first = list(fake.requests)
    pr.commit("tune more", quality=0.95)
    actions_env(monkeypatch, fake, tmp_path, pr)  # the synchronize event names the new head
    pr.ok("train")
    fake.requests.clear()
    code, _, err = pr.cli("report", "--post")
    assert code == 0 and "PR comment updated" in err
    ours = [c for c in fake.pr_comments(REPO, 7) if c["body"].startswith("<!-- mlops-ci:report project=fast -->")]
    assert len(ours) == 1
    assert "| accuracy | 0.9 | 0.95 | +0.05 (+5.56%) | 🟢 better |" in ours[0]["body"]
    assert len(fake.pr_comments(REPO, 7)) == 4
    # API calls: GET page 1 + POST + GET (duplicate check) when creating; GET + PATCH when updating
    assert [m for m, _ in calls_first] == ["GET", "POST", "GET"]
    assert fake.requests == [
        ("GET", f"/repos/{REPO}/issues/7/comments"),
        ("PATCH", f"/repos/{REPO}/issues/comments/{ours[0]['id']}"),
    ]


def test_the_pr_head_not_the_merge_commit_is_reported(pr: Project, fake: FakeGitHub, tmp_path, monkeypatch):
    actions_env(monkeypatch, fake, tmp_path, pr)
    # the work tree is GitHub's merge ref (same mlops-ci.yaml as the head); the event names the head
    pr.git("checkout", "-q", "--detach", "main")
    pr.git("merge", "-q", "--no-ff", "-m", "Merge tune into main", "tune")
    data = json.loads(pr.ok("report", "--json"))
    assert data["comparison"]["head"]["sha"] == pr.git("rev-parse", "tune") != pr.git("rev-parse", "HEAD")


def test_hostile_branch_name_is_escaped_in_the_comment(pr: Project, fake: FakeGitHub, tmp_path, monkeypatch):
    hostile_title = "`$(touch /tmp/pwned-title)` <script>alert(1)</script> @everyone"
    actions_env(monkeypatch, fake, tmp_path, pr, head_ref="x`$(touch /tmp/pwned)`<img src=x onerror=alert(1)>@org/team",
                title=hostile_title)  # fmt: skip
    pr.ok("report", "--post")
    (comment,) = fake.pr_comments(REPO, 7)
    assert "<img" not in comment["body"] and "@org" not in comment["body"]
    assert "\\`$(touch /tmp/pwned)\\`&lt;img src=x onerror=alert(1)&gt;&#64;org/team" in comment["body"]
    assert not Path("/tmp/pwned").exists() and not Path("/tmp/pwned-title").exists()
    assert "<script>" not in comment["body"] and "@everyone" not in comment["body"]


def test_gate_check_run_created_then_updated_with_annotations(pr: Project, fake, tmp_path, monkeypatch):
    actions_env(monkeypatch, fake, tmp_path, pr)
    assert pr.cli("gate", "--check")[0] == 0
    (run,) = fake.check_runs.values()
    assert (run["name"], run["conclusion"], run["head_sha"]) == (
        "mlops-ci / fast",
        "success",
        pr.git("rev-parse", "HEAD"),
    )
    assert "| ✅ pass | accuracy &gt;= 0.8 |" in run["output"]["summary"]
    assert run["details_url"] == "https://github.example/acme/models/actions/runs/77/attempts/1"

    pr.commit("worse", quality=0.81)
    head = pr.git("rev-parse", "HEAD")
    actions_env(monkeypatch, fake, tmp_path, pr)  # the next push: a new event naming the new head
    pr.ok("train")
    for _ in range(2):  # re-running the gate updates the same check run
        assert pr.cli("gate", "--check")[0] == 1
    runs = [r for r in fake.check_runs.values() if r["head_sha"] == head]
    assert len(runs) == 1
    assert runs[0]["conclusion"] == "failure" and runs[0]["output"]["title"] == "gate failed: 1 rule(s)"
    (ann,) = runs[0]["_annotations"][:1]
    assert (ann["path"], ann["start_line"], ann["annotation_level"]) == ("mlops-ci.yaml", 19, "failure")
    assert "regressed by 10%" in ann["message"]


def test_gate_falls_back_to_a_commit_status_without_checks_write(pr: Project, fake, tmp_path, monkeypatch):
    actions_env(monkeypatch, fake, tmp_path, pr, token="no-checks")
    code, _, err = pr.cli("gate", "--check")
    assert code == 0, err
    assert fake.check_runs == {}
    (status,) = fake.statuses
    assert (status["state"], status["context"], status["description"]) == ("success", "mlops-ci / fast", "gate passed")


def test_deploy_under_actions_records_a_github_deployment(project: Project, fake, tmp_path, monkeypatch):
    release(project, "v1.0.0")
    release(project, "v1.1.0", broken=1)
    project.git("checkout", "-q", "v1.0.0")
    actions_env(monkeypatch, fake, tmp_path, project)
    monkeypatch.setenv("GITHUB_EVENT_NAME", "push")
    monkeypatch.setenv("GITHUB_REF", "refs/tags/v1.0.0")
    monkeypatch.setenv("GITHUB_SHA", project.git("rev-parse", "HEAD"))
    monkeypatch.delenv("GITHUB_EVENT_PATH")
    code, _, err = project.cli("deploy")  # ref and endpoint from GITHUB_REF
    assert code == 0, err
    (dep,) = fake.deployments.values()
    assert (dep["environment"], dep["sha"]) == ("production", project.git("rev-parse", "HEAD"))
    states = [s["state"] for s in fake.deployment_statuses[dep["id"]]]
    assert states == ["in_progress", "success"]
    final = fake.deployment_statuses[dep["id"]][-1]
    assert final["environment_url"].startswith("http://127.0.0.1:")
    assert final["log_url"] == "https://github.example/acme/models/actions/runs/77/attempts/1"

    code, _, _ = project.cli("deploy", "v1.1.0")
    assert code == 7
    failed = next(d for d in fake.deployments.values() if d["id"] != dep["id"])
    assert [s["state"] for s in fake.deployment_statuses[failed["id"]]] == ["in_progress", "failure"]

    code, _, _ = project.cli("rollback", "production")  # nothing earlier than v1: not found
    assert code == 4


def test_a_deploy_that_stops_mid_rollout_ends_its_github_deployment(project: Project, fake, tmp_path, monkeypatch):
    """An error that is not a failed check (here the router's port is taken) keeps its exit code,
    but the GitHub deployment begun for the rollout ends as failure, not in_progress forever."""
    import socket

    release(project, "v1.0.0")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    cfg = project.path / "mlops-ci.yaml"
    cfg.write_text(cfg.read_text().replace("  - name: production\n", f"  - name: production\n    port: {port}\n"))
    actions_env(monkeypatch, fake, tmp_path, project)
    monkeypatch.delenv("GITHUB_EVENT_PATH")
    try:
        code, _, err = project.cli("deploy", "v1.0.0")
    finally:
        taken.close()
    assert code == 7 and f"could not start the router of endpoint production on port {port}" in err
    (dep,) = fake.deployments.values()
    assert [s["state"] for s in fake.deployment_statuses[dep["id"]]] == ["in_progress", "failure"]


def test_rollback_is_recorded_and_the_replaced_deployment_goes_inactive(project: Project, fake, tmp_path, monkeypatch):
    release(project, "v1.0.0")
    release(project, "v2.0.0", scale=2.0)
    actions_env(monkeypatch, fake, tmp_path, project)
    monkeypatch.delenv("GITHUB_EVENT_PATH")
    project.ok("deploy", "v1.0.0")
    project.ok("deploy", "v2.0.0")
    project.ok("rollback", "production")
    deps = sorted(fake.deployments.values(), key=lambda d: d["id"])
    assert [d["sha"] for d in deps] == [project.git("rev-parse", t) for t in ("v1.0.0", "v2.0.0", "v1.0.0")]
    assert "rollback of v1" in deps[2]["description"]
    last_states = [fake.deployment_statuses[d["id"]][-1]["state"] for d in deps]
    assert last_states == ["inactive", "inactive", "success"]


# -- client-level behaviour: pagination, faults, retries (fake clock) ------------------------


@pytest.mark.parametrize("existing", [10, 500, 3000])
def test_common_case_costs_a_constant_number_of_calls(fake: FakeGitHub, existing: int):
    fake._new_comment(REPO, 2, "<!-- m -->\nold", "github-actions[bot]")  # created when the PR opened
    fake.add_comments(REPO, 2, existing)
    fake.requests.clear()
    client(fake).upsert_comment(2, "<!-- m -->\nnew", "<!-- m -->")
    assert (fake.count("GET"), fake.writes()) == (1, 1)


def test_github_enterprise_base_path():
    ghe = FakeGitHub(prefix="/api/v3", tokens={TOKEN: ALL_PERMISSIONS}).start()
    try:
        client(ghe).upsert_comment(11, "<!-- m -->\nx", "<!-- m -->")
        assert len(ghe.pr_comments(REPO, 11)) == 1
    finally:
        ghe.stop()


def test_more_than_50_annotations_are_sent_in_batches(fake: FakeGitHub):
    anns = [{"path": "mlops-ci.yaml", "start_line": i, "end_line": i, "annotation_level": "failure", "message": "m"}
            for i in range(1, 121)]  # fmt: skip
    client(fake).publish_check("b" * 40, "c", "failure", "t", "s", anns, None)
    (run,) = fake.check_runs.values()
    assert len(run["_annotations"]) == 120
    assert fake.count("POST", "/check-runs") == 1 and fake.count("PATCH", "/check-runs/") == 2


MARK = "<!-- mlops-ci:monitor project=p endpoint=prod -->"


def test_our_issues_are_read_in_one_pass_as_plain_json_and_only_ours(fake: FakeGitHub):
    from tests.fakes.github_api import Account

    gh = client(fake)
    fake.pulls[(REPO, 1)] = "a" * 40  # GitHub lists pull requests among the issues
    for n in range(250):
        fake.new_issue(REPO, f"bug {n}", f"text {n}", "someone")
    fake.new_issue(REPO, "copy", MARK + "\nnot ours", "mallory")  # anyone can type the marker
    closed = fake.new_issue(REPO, "old alert", MARK + "\nhandled", "github-actions[bot]")
    closed["state"] = "closed"
    ours = fake.new_issue(REPO, "alert", MARK + "\r\nedited in the browser\r\n", "github-actions[bot]")
    fake.requests.clear()
    found = gh.our_issues(MARK)
    assert [(i.number, i.body) for i in found] == [(ours["number"], MARK + "\nedited in the browser\n")]
    # 253 open items at 100 a page: three requests, not one more per issue
    assert fake.requests == [("GET", f"/repos/{REPO}/issues")] * 3
    made = gh.create_issue("drift", MARK + "\nnew")
    gh.edit_issue(made.number, body=MARK + "\nedited")
    gh.edit_issue(ours["number"], state="closed", state_reason="not_planned")
    assert [i.number for i in gh.our_issues(MARK)] == [made.number]
    assert fake.issues[(REPO, ours["number"])]["state_reason"] == "not_planned"
    # a PAT acts as its user: the bot's issues are not that user's
    fake.tokens["ghp_user"] = ALL_PERMISSIONS
    fake.accounts["ghp_user"] = Account("octocat", 583231, installation=False)
    assert client(fake, "ghp_user").our_issues(MARK) == []


def test_dispatch_refusals_are_one_line_with_the_fix(fake: FakeGitHub):
    from mlops_ci.errors import PermissionDenied, UsageError

    gh = client(fake)
    fake.workflows[(REPO, "train.yml")] = frozenset({"force"})
    fake.workflows[(REPO, "push-only.yml")] = None
    url = gh.dispatch("train.yml", None, "main", {"force": "true"}, {})
    assert url == "https://github.example/acme/models/actions/workflows/train.yml"
    with pytest.raises(UsageError, match="Workflow does not have 'workflow_dispatch' trigger"):
        gh.dispatch("push-only.yml", None, "main", {}, {})
    with pytest.raises(UsageError, match=r'Unexpected inputs provided: \["reason"\]'):
        gh.dispatch("train.yml", None, "main", {"reason": "drift"}, {})
    with pytest.raises(UsageError, match="No ref found for: nope"):
        gh.dispatch("train.yml", None, "nope", {}, {})
    gh.dispatch(None, "retrain", "main", {}, {"endpoint": "prod", "alerts": ["f0"]})
    assert fake.dispatches == [
        {"kind": "workflow_dispatch", "repo": REPO, "workflow": "train.yml", "ref": "main",
         "inputs": {"force": "true"}},
        {"kind": "repository_dispatch", "repo": REPO, "event_type": "retrain",
         "client_payload": {"endpoint": "prod", "alerts": ["f0"]}},
    ]  # fmt: skip
    fake.tokens["no-actions"] = ALL_PERMISSIONS - {"actions:write", "contents:write"}
    for args in (("train.yml", None), (None, "retrain")):
        with pytest.raises(PermissionDenied) as exc:
            client(fake, "no-actions").dispatch(*args, "main", {}, {})
        assert ("actions: write" if args[0] else "contents: write") in exc.value.message
    assert len(fake.dispatches) == 2


def test_a_dispatch_github_may_have_made_is_not_sent_again(fake: FakeGitHub):
    from mlops_ci.errors import Transient

    clock = Clock()
    gh = client(fake, clock=clock)
    fake.workflows[(REPO, "train.yml")] = frozenset({"force"})
    path = rf"/repos/{REPO}/actions/workflows/train.yml/dispatches"
    # stored, then a 502: retrying would train twice (a dispatch has no idempotency key)
    fake.inject("POST", path, 502, after=True)
    with pytest.raises(Transient, match="GitHub did not answer"):
        gh.dispatch("train.yml", None, "main", {"force": "true"}, {})
    assert len(fake.dispatches) == 1 and fake.count("POST", "dispatches") == 1
    # a rate limit refuses before acting: waited out and sent again
    fake.inject("POST", path, 429, headers={"Retry-After": "3"})
    gh.dispatch("train.yml", None, "main", {"force": "true"}, {})
    assert len(fake.dispatches) == 2 and fake.count("POST", "dispatches") == 3 and clock.slept == [3.0]
