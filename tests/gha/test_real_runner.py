"""The starter workflows and composite actions under a real Actions runner (nektos/act in host
mode, from ../shared/gha-kit), on a repository made with `mlops-ci init`, against the fake
GitHub API and moto_server (the S3 run store) on 127.0.0.1.

Each workflow runs as GitHub would run it for the event: the `uses:` steps included
(actions/setup-python, upload/download-artifact, and mlops-ci's own composite actions at the
commit the workflows pin, mapped to a copy of this checkout). What act cannot do (OIDC, enforced
`permissions:`, environments) is said where it matters.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlops_ci import _pin
from tests.conftest import FAST_TRAIN, ROOT, Project, fast_config, git
from tests.fakes.git_http import GitHttpServer
from tests.fakes.github_api import ALL_PERMISSIONS, READ_ONLY, FakeGitHub

KIT = ROOT.parent / "shared" / "gha-kit"
pytestmark = [
    pytest.mark.gha,
    pytest.mark.skipif(
        not (KIT / "act-offline").is_file(),
        reason="needs ../shared/gha-kit (the offline Actions runner kit beside the project; CI has it)",
    ),
    pytest.mark.skipif(shutil.which("node") is None, reason="act runs JavaScript actions with node; none on PATH"),
]

REPO = "acme/models"
FORK = "forker/models"
ACTION = f"{_pin.ACTION_REPOSITORY}@{_pin.ACTION_SHA}"

# No numpy on a fresh runner: the model's own hooks read and write JSON.
PURE_INFERENCE = textwrap.dedent(
    """
    import json
    import os


    def model_fn(model_dir):
        with open(os.path.join(model_dir, "model.json")) as fh:
            return json.load(fh)


    def input_fn(body, content_type):
        return json.loads(body)


    def predict_fn(data, model):
        return [sum(row) * model["scale"] for row in data]


    def output_fn(prediction, accept):
        # with its content type: the container answers a bare string as text/html
        return json.dumps(prediction), "application/json"
    """
)


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Act:
    gh: FakeGitHub
    moto: str
    action_copy: Path
    logs: Path
    git_root: Path  # served over git's dumb HTTP protocol: actions/checkout really fetches
    git_url: str

    def publish(self, repo: Path) -> None:
        """What `git push` does before GitHub runs a workflow: the remote has the commits."""
        bare = self.git_root / REPO
        if not bare.exists():
            bare.mkdir(parents=True)
            subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
        git(repo, "push", "-q", "--mirror", "--force", str(bare))
        subprocess.run(["git", "--git-dir", str(bare), "update-server-info"], check=True)

    def run(
        self, repo: Path, event: str, workflow: str, payload: dict[str, object], *, store: str,
        token: str = "tok-write", env: dict[str, str] | None = None, aws: bool = True,
        variables: dict[str, str] | None = None,
    ) -> tuple[int, str]:  # fmt: skip
        if (repo / ".git").exists() and git(repo, "remote", "get-url", "origin").endswith(f"{REPO}.git"):
            self.publish(repo)
        event_file = repo.parent / f"event-{time.monotonic_ns()}.json"
        event_file.write_text(json.dumps(payload))
        # What the job may reach of AWS (moto): as if the configure-aws-credentials step ran, for
        # the jobs that have the role; a fork's run gets nothing.
        cloud = {"AWS_ENDPOINT_URL": self.moto, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "2"} if aws else {}  # fmt: skip
        extra = {
            "GITHUB_API_URL": self.gh.base_url, **cloud,
            "MLOPS_CI_GITHUB_WRITE_INTERVAL": "0",
            # actions/checkout fetches https://github.com/OWNER/REPO; git sends it to the local
            # server instead (GITHUB_SERVER_URL must stay github.com: upload-artifact v4 refuses
            # any other host as GHES)
            "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"url.{self.git_url}/.insteadOf",
            "GIT_CONFIG_VALUE_0": "https://github.com/",
            **(env or {}),
        }  # fmt: skip
        cmd = [str(KIT / "act-offline"), event, "-W", f".github/workflows/{workflow}", "-e", str(event_file),
               "--local-repository", f"{ACTION}={self.action_copy}", "-s", f"GITHUB_TOKEN={token}",
               "--var", f"MLOPS_CI_STORE={store}"]  # fmt: skip
        for k, v in (variables or {}).items():
            cmd += ["--var", f"{k}={v}"]
        for k, v in extra.items():
            cmd += ["--env", f"{k}={v}"]
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "MLOPS_CI_", "AWS_"))}
        proc = subprocess.run(cmd, cwd=repo, env=environ, capture_output=True, text=True, timeout=900, check=False)
        log = proc.stdout + proc.stderr
        (self.logs / f"{len(list(self.logs.iterdir())):02d}-{workflow}.log").write_text(log)
        return proc.returncode, log


@pytest.fixture(scope="module")
def act(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Act]:
    base = tmp_path_factory.mktemp("act")
    # The action's checkout: this work tree as it is (uncommitted changes included), mapped to
    # the exact `uses:` ref the workflows pin.
    copy = base / "mlops-ci"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")  # fmt: skip
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, copy / rel)
    port = _port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    gh = FakeGitHub(tokens={"tok-write": ALL_PERMISSIONS, "tok-fork": READ_ONLY}).start()
    git_root = base / "git"
    git_root.mkdir()
    handler = functools.partial(_QuietFiles, directory=str(git_root))
    files_server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files_server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{port}"
        import boto3

        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")  # fmt: skip
        for _ in range(100):
            try:
                s3.create_bucket(Bucket="team-store")
                break
            except Exception:
                time.sleep(0.1)
        s3.close()
        logs = base / "logs"
        logs.mkdir()
        yield Act(gh, url, copy, logs, git_root, f"http://127.0.0.1:{files_server.server_address[1]}")
    finally:
        files_server.shutdown()
        files_server.server_close()
        gh.stop()
        moto.terminate()
        moto.wait(10)


def user_repo(path: Path) -> Project:
    """What a new user has after `mlops-ci init` and adapting mlops-ci.yaml."""
    path.mkdir()
    (path / "train.py").write_text(FAST_TRAIN)
    (path / "inference.py").write_text(PURE_INFERENCE)
    (path / "data").mkdir()
    (path / "data" / "rows.csv").write_text("1\n2\n3\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "remote", "add", "origin", f"https://github.com/{REPO}.git")
    p = Project(path)
    p.ok("init")
    (path / "mlops-ci.yaml").write_text(fast_config())
    (path / "README.md").write_text("# models\n")
    p.commit("initial")
    return p


def repository(full_name: str = REPO) -> dict[str, object]:
    owner, name = full_name.split("/")
    return {"full_name": full_name, "name": name, "owner": {"login": owner}, "default_branch": "main"}


def push(p: Project, ref: str) -> dict[str, object]:
    sha = p.git("rev-parse", "HEAD")
    return {"ref": ref, "before": "0" * 40, "after": sha, "deleted": False, "head_commit": {"id": sha},
            "repository": repository()}  # fmt: skip


def pull_request(p: Project, number: int, head_ref: str, *, head_repo: str = REPO,
                 action: str = "opened") -> dict[str, object]:  # fmt: skip
    sha = p.git("rev-parse", "HEAD")
    base = p.git("rev-parse", "main")
    return {
        "action": action, "number": number,
        "pull_request": {
            "number": number, "state": "open", "html_url": f"https://github.com/{REPO}/pull/{number}",
            "head": {"sha": sha, "ref": head_ref, "repo": {"full_name": head_repo}},
            "base": {"sha": base, "ref": "main", "repo": {"full_name": REPO}},
        },
        "repository": repository(),
    }  # fmt: skip


def ok(result: tuple[int, str], *expected: str) -> str:
    code, log = result
    assert code == 0, "\n".join(log.splitlines()[-60:])
    for text in expected:
        assert text in log, f"{text!r} not in the act log:\n" + "\n".join(log.splitlines()[-60:])
    return log


def ours(gh: FakeGitHub, number: int) -> list[dict[str, object]]:
    return [c for c in gh.pr_comments(REPO, number) if str(c["body"]).startswith("<!-- mlops-ci:report")]


def checks_for(gh: FakeGitHub, sha: str) -> list[dict[str, object]]:
    return [c for c in gh.check_runs.values() if c["head_sha"] == sha]


def _processes_of(folder: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if folder.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def stop_servers(act: Act, log: str, store: str | None, cwd: Path) -> None:
    """A local endpoint outlives its job (that is why CI deploys to one are opt-in): stop the
    ones this run started. act deletes the job's workspace when the job ends, so `endpoint stop`
    runs in the user's clone, reading the endpoint's state from the shared store."""
    folders = {line.split("run folder ", 1)[1].split(" ")[0] for line in log.splitlines() if "run folder " in line}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "MLOPS_CI_"))},
           "AWS_ENDPOINT_URL": act.moto, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    if store:
        env["MLOPS_CI_STORE"] = store
        for name in ("staging", "production"):
            subprocess.run([sys.executable, "-m", "mlops_ci", "endpoint", "stop", name], cwd=cwd, env=env,
                           capture_output=True, check=False, timeout=60)  # fmt: skip
    for folder in folders:
        deadline = time.monotonic() + (10 if store else 0)
        while (left := _processes_of(folder)) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in left:  # never leak a process, whatever `endpoint stop` knew of
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        assert not (store and left), f"processes of {folder} outlived `mlops-ci endpoint stop`: {left}"


def release(act: Act, p: Project, tag: str, store: str, *, env: dict[str, str] | None = None) -> str:
    p.git("tag", "-f", tag)  # a test may have tagged and published it already
    result = act.run(
        p.path,
        "push",
        "mlops-ci-release.yml",
        push(p, f"refs/tags/{tag}"),
        store=store,
        env={"MLOPS_CI_ALLOW_RUNNER_ENDPOINTS": "true", **(env or {})},
    )  # a self-hosted runner's opt-in
    try:
        return ok(result, "Job succeeded")
    finally:
        stop_servers(act, result[1], store, p.path)  # fmt: skip


@pytest.mark.parametrize("merge", ["merge-commit", "squash"])
def test_push_pr_merge_tag_deploy(act: Act, tmp_path: Path, merge: str) -> None:
    p = user_repo(tmp_path / "models")
    store = f"s3://team-store/{merge}"
    number = 7 if merge == "merge-commit" else 8
    try:
        ok(act.run(p.path, "push", "mlops-ci-train.yml", push(p, "refs/heads/main"), store=store),
           "training fast at", "): success", "Job succeeded")  # fmt: skip

        p.git("checkout", "-q", "-b", "tune")
        head = p.commit("better model", quality=0.95)
        ok(act.run(p.path, "push", "mlops-ci-train.yml", push(p, "refs/heads/tune"), store=store),
           "training fast at", "Job succeeded")  # fmt: skip
        act.gh.pulls[(REPO, number)] = head
        log = ok(act.run(p.path, "pull_request", "mlops-ci-pr.yml", pull_request(p, number, "tune"), store=store),
                 "Job succeeded")  # fmt: skip
        assert "training fast at" not in log, "the PR job trained again what the push job had trained"
        (comment,) = ours(act.gh, number)
        assert "| accuracy | 0.9 | 0.95 |" in str(comment["body"])
        (check,) = checks_for(act.gh, head)
        assert check["conclusion"] == "success" and check["name"] == "mlops-ci / fast"

        # The PR is updated with a docs-only commit: no training, the same sticky comment.
        (p.path / "README.md").write_text("# models\n\nHow to use the model.\n")
        docs = p.commit("docs")
        act.gh.pulls[(REPO, number)] = docs
        log = ok(act.run(p.path, "pull_request", "mlops-ci-pr.yml",
                         pull_request(p, number, "tune", action="synchronize"), store=store),
                 "same training inputs as", "Job succeeded")  # fmt: skip
        assert "training fast at" not in log
        assert [c["id"] for c in ours(act.gh, number)] == [comment["id"]], "one sticky comment, edited in place"
        assert checks_for(act.gh, docs)[0]["conclusion"] == "success"

        p.git("checkout", "-q", "main")
        if merge == "squash":
            p.git("merge", "-q", "--squash", "tune")
            p.git("commit", "-q", "-m", "Tune the model (#8)")
        else:
            p.git("merge", "-q", "--no-ff", "-m", "Merge pull request #7 from acme/tune", "tune")
        merged = p.git("rev-parse", "HEAD")
        assert merged not in (head, docs)
        log = ok(act.run(p.path, "push", "mlops-ci-train.yml", push(p, "refs/heads/main"), store=store),
                 "same training inputs as", "): success", "Job succeeded")  # fmt: skip
        assert "training fast at" not in log, "the merge commit was trained again"

        log = release(act, p, "v1.0.0", store)
        (dep,) = [d for d in act.gh.deployments.values() if d["sha"] == merged]
        assert dep["environment"] == "production"
        states = [s["state"] for s in act.gh.deployment_statuses[dep["id"]]]
        assert states[0] == "in_progress" and states[-1] == "success", states
        assert "training fast at" not in log, "a release never trains"
        assert "now serves fast v1" in log
    finally:
        p.stop_endpoints()  # nothing of the runner's is here; for a failure before any act run


def test_a_github_only_team_gets_baselines_and_releases_from_the_git_store(act: Act, tmp_path: Path) -> None:
    # No MLOPS_CI_STORE and no cloud account: the starter workflows use `git`, the repository's
    # own refs, pushed by real git over HTTP with the job's token to a real git server (git
    # http-backend), across three jobs on fresh workspaces.
    p = user_repo(tmp_path / "models")
    server = GitHttpServer(tmp_path / "server", writers={"tok-write"}).start()
    bare = server.bare(REPO)
    to_server = {"GIT_CONFIG_KEY_0": f"url.{server.url}/.insteadOf"}  # https://github.com/ → the server

    def publish() -> None:  # the user's `git push`: branches and tags; the server's own refs stay
        p.git("push", "-q", "--force", str(bare), "refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*")

    try:
        publish()
        ok(act.run(p.path, "push", "mlops-ci-train.yml", push(p, "refs/heads/main"), store="", env=to_server),
           "training fast at", "): success", "Job succeeded")  # fmt: skip
        refs = git(bare, "for-each-ref", "--format=%(refname)", "refs/mlops-ci/").splitlines()
        assert "refs/mlops-ci/store" in refs and any(r.startswith("refs/mlops-ci/artifacts/") for r in refs), refs
        assert server.pushes and {user for user, _ in server.pushes} == {"tok-write"}  # github.token, via env

        p.git("checkout", "-q", "-b", "tune")
        head = p.commit("better model", quality=0.95)
        act.gh.pulls[(REPO, 12)] = head
        publish()
        log = ok(act.run(p.path, "pull_request", "mlops-ci-pr.yml", pull_request(p, 12, "tune"), store="",
                         env=to_server), "Job succeeded")  # fmt: skip
        (comment,) = ours(act.gh, 12)
        assert "| accuracy | 0.9 | 0.95 |" in str(comment["body"]), "the baseline came from the git store"
        assert checks_for(act.gh, head)[0]["conclusion"] == "success"

        p.git("tag", "v1.0.0")
        publish()
        log = release(act, p, "v1.0.0", "", env=to_server)  # the PR job's verdict, found by the release job
        assert "training fast at" not in log and "now serves fast v1" in log
        (dep,) = [d for d in act.gh.deployments.values() if d["sha"] == head]
        assert [s["state"] for s in act.gh.deployment_statuses[dep["id"]]][-1] == "success"
        # nothing of it is a branch or a tag of the repository
        assert git(bare, "for-each-ref", "--format=%(refname)", "refs/heads/", "refs/tags/").split() == \
               ["refs/heads/main", "refs/heads/tune", "refs/tags/v1.0.0"]  # fmt: skip
    finally:
        server.stop()
        p.stop_endpoints()


def test_a_hosted_runner_refuses_a_store_on_its_own_disk(act: Act, tmp_path: Path) -> None:
    p = user_repo(tmp_path / "models")
    code, log = act.run(p.path, "push", "mlops-ci-train.yml", push(p, "refs/heads/main"),
                        store="sqlite:///.mlops-ci/store.db")  # fmt: skip
    assert code != 0
    assert "MLOPS_CI_STORE" in log and "exit status 2" in log
    assert "training fast at" not in log


def test_fork_pr_two_stage_comment(act: Act, tmp_path: Path) -> None:
    p = user_repo(tmp_path / "models")
    store = "s3://team-store/fork"
    ok(act.run(p.path, "push", "mlops-ci-train.yml", push(p, "refs/heads/main"), store=store), "Job succeeded")
    p.git("checkout", "-q", "-b", "fork-idea")
    head = p.commit("a fork's change", quality=0.93)
    act.gh.pulls[(REPO, 9)] = head
    # Stage 1: the fork's pull_request run: read-only token, no secrets, no AWS credentials; the
    # team's store is out of its reach (it trains against a throw-away one on the runner).
    log = ok(act.run(p.path, "pull_request", "mlops-ci-pr.yml", pull_request(p, 9, "fork-idea", head_repo=FORK),
                     store=store, token="tok-fork", aws=False, variables={"MLOPS_CI_FORK_REVIEW": "true"}),
             "training fast at", "Job succeeded")  # fmt: skip
    assert "::warning::" in log and "pull-requests: write" in log, "the read-only token's refusal is a warning"
    assert ours(act.gh, 9) == [] and checks_for(act.gh, head) == []  # 403: nothing written with that token
    zips = sorted(Path(line.split("run folder ", 1)[1].split(" ")[0].strip()).glob("artifacts/*/mlops-ci-report/*")
                  for line in log.splitlines() if "run folder " in line and "(artifacts" in line)  # fmt: skip
    (artifact,) = [z for found in zips for z in found]
    act.gh.artifacts[77] = {"name": "mlops-ci-report", "repo": REPO, "run_id": 4242, "zip": str(artifact)}
    with zipfile.ZipFile(artifact) as z:
        assert sorted(z.namelist()) == ["mlops-ci-report.html", "mlops-ci-report.json"]  # the page the comment links
        page = z.read("mlops-ci-report.html").decode()
        assert page.startswith("<!doctype html>") and "<script" not in page

    # Stage 2: workflow_run in the base repository, with pull-requests: write, no checkout.
    event = {"action": "completed", "repository": repository(), "workflow": {"name": "mlops-ci review"},
             "workflow_run": {"id": 4242, "event": "pull_request", "head_sha": head, "conclusion": "success",
                              "head_repository": {"full_name": FORK}, "repository": {"full_name": REPO}}}  # fmt: skip
    empty = tmp_path / "no-checkout"
    empty.mkdir()
    git(empty, "init", "-q", "-b", "main")
    git(empty, "remote", "add", "origin", f"https://github.com/{REPO}.git")
    (empty / ".github").mkdir()
    shutil.copytree(p.path / ".github" / "workflows", empty / ".github" / "workflows")
    Project(empty).commit("workflows only")
    log = ok(act.run(empty, "workflow_run", "mlops-ci-pr-comment.yml", event, store=store), "Job succeeded")
    (comment,) = ours(act.gh, 9)
    assert "0.93" in str(comment["body"]) and "no baseline" in str(comment["body"]).lower()
    assert "train.py" not in log  # no code of the fork ran in the privileged job


HOSTILE_WORKFLOW = """\
name: hostile inputs
on:
  workflow_dispatch:
    inputs:
      value: {required: true}
permissions: {}
jobs:
  hostile:
    runs-on: ubuntu-latest
    permissions: {contents: read}
    env: {MLOPS_CI_STORE: "${{ vars.MLOPS_CI_STORE }}"}
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
        with: {persist-credentials: false}
      - uses: "ACTION/actions/train@SHA"
      - {id: ref, continue-on-error: true, uses: "ACTION/actions/train@SHA", with: {ref: "${{ inputs.value }}"}}
      - id: endpoint
        continue-on-error: true
        uses: "ACTION/actions/deploy@SHA"
        with: {endpoint: "${{ inputs.value }}", ref: HEAD, python-version: ""}
      - id: config
        continue-on-error: true
        uses: "ACTION/actions/train@SHA"
        with: {config: "${{ inputs.value }}", python-version: ""}
      - id: base
        continue-on-error: true
        uses: "ACTION/actions/gate@SHA"
        with: {base: "${{ inputs.value }}", check: "false", python-version: ""}
      - id: extras
        continue-on-error: true
        uses: "ACTION/actions/train@SHA"
        with: {extras: "${{ inputs.value }}", python-version: ""}
      - name: outcomes
        env:
          OUTCOMES: >-
            ${{ steps.ref.outcome }} ${{ steps.endpoint.outcome }} ${{ steps.config.outcome }}
            ${{ steps.base.outcome }} ${{ steps.extras.outcome }}
        run: echo "outcomes=$OUTCOMES"
"""


def test_hostile_inputs_are_taken_literally(act: Act, tmp_path: Path) -> None:
    """Action inputs are data: shell metacharacters never run, option-looking values are not
    options; each step fails with mlops-ci's own error."""
    p = user_repo(tmp_path / "models")
    wf = HOSTILE_WORKFLOW.replace("ACTION", _pin.ACTION_REPOSITORY).replace("SHA", _pin.ACTION_SHA)
    (p.path / ".github" / "workflows" / "hostile.yml").write_text(wf)
    p.commit("hostile")
    canary = tmp_path / "pwned"
    hostile = (f"$(touch {canary})", f"x'; touch {canary}; '`touch {canary}`", f"--config=/dev/null; touch {canary}")
    for value in hostile:
        log = ok(act.run(p.path, "workflow_dispatch", "hostile.yml", {"inputs": {"value": value}},
                         store="s3://team-store/hostile"), "Job succeeded")  # fmt: skip
        assert "outcomes=failure failure failure failure failure" in log, log[-3000:]
        # each step failed on its own input, with mlops-ci's own error, the value taken literally
        assert "does not name a commit" in log or "is not a git ref" in log  # ref
        assert "is not declared in mlops-ci.yaml" in log  # endpoint
        assert re.search(r"config file \S.* not found", log)  # config
        assert "not found locally" in log  # base: no such branch, so the relative rule fails closed
        assert "extras must be auto or a comma-separated list of" in log  # extras
        assert not canary.exists()


def test_the_actions_self_test_workflow(act: Act, tmp_path: Path) -> None:
    """.github/workflows/selftest.yml, this repository's own use of `uses: ./actions/<verb>` on
    the example project (scikit-learn from the package index, once per cache)."""
    work = tmp_path / "mlops-ci"
    shutil.copytree(act.action_copy, work)
    git(work, "init", "-q", "-b", "main")
    git(work, "remote", "add", "origin", "https://github.com/mlops-ci/mlops-ci.git")
    Project(work).commit("self-test")
    result = act.run(work, "push", "selftest.yml", {**push(Project(work), "refs/heads/main"),
                     "repository": repository("mlops-ci/mlops-ci")}, store="")  # fmt: skip
    try:
        log = ok(result, "Job succeeded")
    finally:
        stop_servers(act, result[1], None, work)  # its SQLite store was in the job's workspace
    assert "gate passed" in log or "): success" in log
    assert "model v1 at http://127.0.0.1:" in log


def test_reusable_workflow_callers_from_the_docs(act: Act, tmp_path: Path) -> None:
    """The three callers in docs/reusable-workflows.md, as written, on a fresh repository."""
    import re

    doc = (ROOT / "docs" / "reusable-workflows.md").read_text()
    callers = dict(re.findall(r"```yaml\n# \.github/workflows/(\S+)\n(.*?)```", doc, re.S))
    assert sorted(callers) == ["mlops-ci-pr.yml", "mlops-ci-release.yml", "mlops-ci-train.yml"]
    p = user_repo(tmp_path / "models")
    for name in list((p.path / ".github" / "workflows").iterdir()):
        name.unlink()
    for name, text in callers.items():
        assert len(text.strip().splitlines()) <= 11
        (p.path / ".github" / "workflows" / name).write_text(text.replace("<sha>", _pin.ACTION_SHA))
    p.commit("adopt with reusable workflows")
    store = "s3://team-store/reusable"
    ok(act.run(p.path, "push", "mlops-ci-train.yml", push(p, "refs/heads/main"), store=store),
       "training fast at", "): success", "Job succeeded")  # fmt: skip
    p.git("checkout", "-q", "-b", "tune")
    head = p.commit("better", quality=0.97)
    act.gh.pulls[(REPO, 11)] = head
    ok(act.run(p.path, "pull_request", "mlops-ci-pr.yml", pull_request(p, 11, "tune"), store=store), "Job succeeded")
    assert "| accuracy | 0.9 | 0.97 |" in str(ours(act.gh, 11)[0]["body"])
    assert checks_for(act.gh, head)[0]["conclusion"] == "success"
    p.git("checkout", "-q", "main")
    p.git("merge", "-q", "--no-ff", "-m", "Merge #11", "tune")
    ok(act.run(p.path, "push", "mlops-ci-train.yml", push(p, "refs/heads/main"), store=store), "Job succeeded")
    assert "now serves fast v1" in release(act, p, "v2.0.0", store)


def test_the_hourly_monitor_opens_one_issue_and_dispatches_the_train_workflow(act: Act, tmp_path: Path) -> None:
    """The loop's end under the runner: a release deploys a capturing endpoint; shifted traffic
    reaches it; the scheduled monitor workflow opens ONE issue and dispatches the train workflow
    (with the inputs the starter train workflow declares, read from it here); the next scheduled
    run edits the same issue and dispatches nothing; the dispatched workflow trains again."""
    import random

    import yaml

    p = user_repo(tmp_path / "models")
    store = "s3://team-store/monitor"
    # a self-hosted runner that serves local endpoints keeps their state (and capture) outside the
    # job's checkout, which every job starts afresh: MLOPS_CI_HOME, in both workflows
    home = tmp_path / "runner-state"
    runner = {"MLOPS_CI_ALLOW_RUNNER_ENDPOINTS": "true", "MLOPS_CI_HOME": str(home)}
    rng = random.Random(7)
    rows = [[round(rng.gauss(0, 1), 3), round(rng.gauss(5, 2), 3)] for _ in range(500)]
    (p.path / "data" / "rows.csv").write_text("f0,f1\n" + "".join(f"{a},{b}\n" for a, b in rows))
    production = '  - name: production\n    tags: ["v*"]\n'
    config = fast_config(extra="monitoring: {min_records: 50, retrain: {workflow: mlops-ci-train.yml}}\n")
    (p.path / "mlops-ci.yaml").write_text(config.replace(production, production + "    capture: {percent: 100}\n"))
    assert "wrote .github/workflows/mlops-ci-monitor.yml" in p.ok("init", "--force")  # now that it monitors
    p.commit("monitor the endpoint")
    starter = yaml.safe_load((ROOT / "workflow-templates" / "mlops-ci-train.yml").read_text())
    act.gh.workflows[(REPO, "mlops-ci-train.yml")] = frozenset(starter[True]["workflow_dispatch"]["inputs"])
    clone_env = {**{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "MLOPS_CI_"))},
                 "AWS_ENDPOINT_URL": act.moto, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "MLOPS_CI_STORE": store, "MLOPS_CI_HOME": str(home)}  # fmt: skip
    logs: list[str] = []
    try:
        ok(act.run(p.path, "push", "mlops-ci-train.yml", push(p, "refs/heads/main"), store=store), "Job succeeded")
        p.git("tag", "v1.0.0")
        result = act.run(p.path, "push", "mlops-ci-release.yml", push(p, "refs/tags/v1.0.0"), store=store, env=runner)
        logs.append(result[1])
        ok(result, "now serves fast v1")
        listed = subprocess.run([sys.executable, "-m", "mlops_ci", "endpoints", "--json"], cwd=p.path, env=clone_env,
                                capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
        url = {e["name"]: e for e in json.loads(listed.stdout)}["production"]["url"]
        for _ in range(300):  # f0 moved by 1.5 standard deviations
            body = json.dumps([[round(rng.gauss(1.5, 1), 3), round(rng.gauss(5, 2), 3)]]).encode()
            req = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 200
        time.sleep(1.0)  # the capture writer flushes every 0.25 s

        schedule = {"schedule": "17 * * * *", "repository": repository()}
        code, log = act.run(p.path, "schedule", "mlops-ci-monitor.yml", schedule, store=store, env=runner)
        logs.append(log)
        assert code != 0 and "alert(s) on production" in log, "\n".join(log.splitlines()[-40:])
        (issue,) = [i for i in act.gh.repo_issues(REPO) if str(i["body"]).startswith("<!-- mlops-ci:monitor")]
        assert issue["user"]["login"] == "github-actions[bot]" and "| f0 | number |" in str(issue["body"])
        assert "Retraining was dispatched" in str(issue["body"])
        assert act.gh.dispatches == [{"kind": "workflow_dispatch", "repo": REPO, "workflow": "mlops-ci-train.yml",
                                      "ref": "main", "inputs": {"force": "true"}}]  # fmt: skip

        code, log = act.run(p.path, "schedule", "mlops-ci-monitor.yml", schedule, store=store, env=runner)
        logs.append(log)
        # the same traffic and (under act) the same run id: the issue is left as it is
        assert code != 0 and f"monitor issue unchanged: {issue['html_url']}" in log
        assert len([i for i in act.gh.repo_issues(REPO) if str(i["body"]).startswith("<!-- mlops-ci:monitor")]) == 1
        assert len(act.gh.dispatches) == 1

        # what GitHub runs for the dispatch: the train workflow, on main, with force: it trains again
        dispatched = {"ref": "refs/heads/main", "inputs": {"force": "true"}, "repository": repository()}
        ok(act.run(p.path, "workflow_dispatch", "mlops-ci-train.yml", dispatched, store=store),
           "training fast at", "Job succeeded")  # fmt: skip
    finally:
        for log in logs:
            stop_servers(act, log, store, p.path)
        subprocess.run([sys.executable, "-m", "mlops_ci", "endpoint", "stop", "production"], cwd=p.path,
                       env=clone_env, capture_output=True, check=False, timeout=60)  # fmt: skip
        p.stop_endpoints()
