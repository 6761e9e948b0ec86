"""A local, stateful fake of the GitHub REST endpoints mlops-ci uses, served over HTTP so the
real PyGithub client talks to it exactly as it would to api.github.com or GitHub Enterprise.

Faithful where it matters to us: resource shapes (ids, urls, timestamps), pagination with
Link headers (`per_page` up to 100), 401 for unknown tokens, 403 "Resource not accessible by
integration" for a token lacking a permission, and injectable faults (5xx, secondary rate
limits with Retry-After, 429 without it, a POST that stores and *then* fails).

Each token also acts as an account, answering "who am I" the way GitHub does for its kind
(see `Account`), and comments carry that account as their author.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlparse

ALL_PERMISSIONS = frozenset(
    {
        "pull-requests:write",
        "issues:write",
        "checks:write",
        "statuses:write",
        "deployments:write",
        "contents:read",
        "actions:read",
        "actions:write",
        "contents:write",
    }
)
READ_ONLY = frozenset({"contents:read"})
# What `mlops-ci doctor` reads beyond ALL_PERMISSIONS, named after the fine-grained permissions
# GitHub's docs list per endpoint (src/github-apps/data/fpt-2022-11-28/fine-grained-pat-permissions.json
# of github/docs): Variables, Secrets, Administration (branch protection, Actions settings) and
# Environments (environment variables, with Variables). GITHUB_TOKEN can be given none of them.
SETTINGS_READ = frozenset({"variables:read", "secrets:read", "administration:read", "environments:read"})
ADMIN = ALL_PERMISSIONS | SETTINGS_READ
DOCS = "https://docs.github.com/rest"
USER_DOCS = "https://docs.github.com/rest/users/users#get-the-authenticated-user"


@dataclass(frozen=True)
class Account:
    """Who a token acts as. `installation` tokens (GITHUB_TOKEN, a GitHub App's token) act as
    the App's bot user: GET /user answers 403 "Resource not accessible by integration"
    (verbatim in actions/create-github-app-token#258), GraphQL `viewer` answers the bot's login
    *with* `[bot]` and its user id as databaseId (`{"viewer":{"login":"github-actions[bot]"}}`
    from an Actions run, basiltt/CandleViewer docs/plan/27-adrs/ADR-0017-board-automation.md;
    fullsend-ai/fullsend#1953). A PAT acts as its user: both questions answer it."""

    login: str
    id: int
    installation: bool


# github-actions[bot]'s user id, as in its noreply address 41898282+github-actions[bot]@users.noreply.github.com
# (actions/checkout#1707)
ACTIONS_BOT = Account("github-actions[bot]", 41898282, installation=True)


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "Server Error"
    times: int = 1
    after: bool = False  # perform the request, then answer with the fault (e.g. POST stored, then 502)
    payload: dict[str, Any] | None = None  # answer this body instead of {"message": ...}


@dataclass
class EnvironmentSetup:
    """One deployment environment as `mlops-ci doctor` reads it."""

    reviewers: list[str] = field(default_factory=list)  # user logins (required reviewers)
    wait_timer: int = 0
    prevent_self_review: bool = False
    # "Allow administrators to bypass configured protection rules": `can_admins_bypass` of the
    # environment, true by default (go-github repos_environments.go: "the default value for
    # CanAdminsBypass is true")
    can_admins_bypass: bool = True
    branch_policy: str | None = None  # None: any branch or tag may deploy; "protected"; "custom"
    policies: list[tuple[str, str]] = field(default_factory=list)  # (name pattern, "branch" | "tag"), custom
    variables: dict[str, str] = field(default_factory=dict)


@dataclass
class RepoSetup:
    """A repository's settings: what `mlops-ci doctor` checks. A repository without one answers
    as a fresh repository: default branch main, nothing set, the GitHub defaults."""

    default_branch: str = "main"
    private: bool = False
    enterprise: bool = False  # the owner's plan offers environment protection rules on private repositories
    variables: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)  # names only: GitHub never returns a value
    org_variables: dict[str, str] = field(default_factory=dict)
    org_secrets: list[str] = field(default_factory=list)
    environments: dict[str, EnvironmentSetup] = field(default_factory=dict)
    protection: dict[str, list[str]] = field(default_factory=dict)  # branch → required contexts (protected)
    rules: dict[str, list[str]] = field(default_factory=dict)  # branch → required contexts from a ruleset
    workflow_permissions: str = "read"
    fork_pr_approval: str | None = "first_time_contributors"  # None: the endpoint answers 404
    # GET .../actions/oidc/customization/sub (None: 404, a server without subject templates). The
    # shape of docs.github.com/rest/actions/oidc#get-the-customization-template-for-an-oidc-subject-
    # claim-for-a-repository ({"use_default", "include_claim_keys"}); github.com now also answers
    # "use_immutable_subject" and "sub_claim_prefix" (the prefix its tokens use; e.g.
    # {"use_default": true, "use_immutable_subject": false, "sub_claim_prefix":
    # "repo:OWNER@ID/NAME@ID"} quoted from an answer in saquibrashid/nextup's docs)
    oidc_sub: dict[str, Any] | None = field(default_factory=lambda: {"use_default": True})


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class FakeGitHub:
    def __init__(self, *, prefix: str = "", tokens: dict[str, frozenset[str]] | None = None,
                 accounts: dict[str, Account] | None = None):  # fmt: skip
        self.prefix = prefix.rstrip("/")
        self.tokens = tokens if tokens is not None else {"test-token": ALL_PERMISSIONS}
        # token → account; a token not named here is a GITHUB_TOKEN (acts as github-actions[bot])
        self.accounts = dict(accounts or {})
        self.user_ids: dict[str, int] = {ACTIONS_BOT.login: ACTIONS_BOT.id}
        for a in self.accounts.values():
            self.user_ids[a.login] = a.id
        # GraphQL queries, kept apart from `requests`: they are reads although sent as POST
        self.graphql: list[str] = []
        self.lock = threading.Lock()
        self.next_id = 1000
        self.comments: dict[int, dict[str, Any]] = {}
        self.check_runs: dict[int, dict[str, Any]] = {}
        self.statuses: list[dict[str, Any]] = []
        self.deployments: dict[int, dict[str, Any]] = {}
        self.deployment_statuses: dict[int, list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str]] = []
        self.pulls: dict[tuple[str, int], str] = {}  # (repo, number) → head sha
        self.issues: dict[tuple[str, int], dict[str, Any]] = {}  # (repo, number) → issue (not PRs)
        # (repo, workflow file) → the names of its workflow_dispatch inputs; None: no such trigger
        self.workflows: dict[tuple[str, str], frozenset[str] | None] = {}
        self.dispatches: list[dict[str, Any]] = []  # workflow_dispatch and repository_dispatch events made
        # workflow-run artifacts another run uploaded: id → {name, repo, run_id, zip (a file path)}
        self.artifacts: dict[int, dict[str, Any]] = {}
        self.faults: list[Fault] = []
        # (method, path pattern, action): run once, before the first request that matches is answered
        # (what another client did just then: a concurrent run's write)
        self.hooks: list[tuple[str, re.Pattern[str], Any]] = []
        self.setups: dict[str, RepoSetup] = {}  # repository → its settings (doctor's endpoints)
        # (repository, environment, pattern, type) → the deployment branch policy's id, kept for good
        self.policy_ids: dict[tuple[str, str, str, str], int] = {}
        self.server: ThreadingHTTPServer | None = None
        self.base_url = ""

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> FakeGitHub:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}{self.prefix}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    # -- test helpers ---------------------------------------------------------------------
    def inject(self, method: str, path: str, status: int, **kw: Any) -> None:
        self.faults.append(Fault(method, re.compile(path), status, **kw))

    def add_comments(self, repo: str, number: int, n: int, body: str = "lgtm", login: str = "someone") -> None:
        for i in range(n):
            self._new_comment(repo, number, f"{body} {i}", login)

    def pr_comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        return sorted(
            (c for c in self.comments.values() if c["_repo"] == repo and c["_issue"] == number), key=lambda c: c["id"]
        )

    def count(self, method: str | None = None, contains: str = "") -> int:
        return sum(1 for m, p in self.requests if (method is None or m == method) and contains in p)

    def writes(self) -> int:
        return sum(1 for m, _ in self.requests if m in ("POST", "PATCH", "PUT", "DELETE"))

    # -- state ----------------------------------------------------------------------------
    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def account(self, token: str) -> Account:
        return self.accounts.get(token, ACTIONS_BOT)

    def user_id(self, login: str) -> int:
        """One id per login, like GitHub: `github-actions` (a user) and `github-actions[bot]` differ."""
        if login not in self.user_ids:
            self.user_ids[login] = 7_000_000 + len(self.user_ids)
        return self.user_ids[login]

    def _new_comment(self, repo: str, number: int, body: str, login: str) -> dict[str, Any]:
        cid = self._id()
        c = {
            "id": cid, "node_id": f"IC_{cid}", "body": body, "url": self._url(f"/repos/{repo}/issues/comments/{cid}"),
            "html_url": f"https://github.example/{repo}/pull/{number}#issuecomment-{cid}",
            "issue_url": self._url(f"/repos/{repo}/issues/{number}"), "created_at": _now(), "updated_at": _now(),
            "user": {"login": login, "id": self.user_id(login), "type": "Bot" if login.endswith("[bot]") else "User"},
            "author_association": "NONE", "_repo": repo, "_issue": number,
        }  # fmt: skip
        self.comments[cid] = c
        return c

    def new_issue(self, repo: str, title: str, body: str, login: str) -> dict[str, Any]:
        """An issue, numbered after every issue and pull request of the repository (GitHub numbers
        both from one sequence), in the shape of docs.github.com/rest/issues/issues#get-an-issue
        (the fields PyGithub's Issue reads)."""
        taken = [n for r, n in (*self.issues, *self.pulls) if r == repo]
        number = max(taken, default=0) + 1
        iid = self._id()
        issue = {
            "id": iid, "node_id": f"I_{iid}", "number": number, "title": title, "body": body, "state": "open",
            "state_reason": None, "locked": False, "labels": [], "assignees": [], "comments": 0,
            "url": self._url(f"/repos/{repo}/issues/{number}"),
            "html_url": f"https://github.example/{repo}/issues/{number}",
            "comments_url": self._url(f"/repos/{repo}/issues/{number}/comments"),
            "user": {"login": login, "id": self.user_id(login), "type": "Bot" if login.endswith("[bot]") else "User"},
            "created_at": _now(), "updated_at": _now(), "closed_at": None, "_repo": repo,
        }  # fmt: skip
        self.issues[(repo, number)] = issue
        return issue

    def repo_issues(self, repo: str) -> list[dict[str, Any]]:
        return [i for (r, _), i in sorted(self.issues.items()) if r == repo]

    @staticmethod
    def public(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    # -- HTTP -----------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                # An empty answer (204, the artifact download's 302) is not JSON: octokit parses a
                # body as JSON whenever the content type says so, and fails on an empty one.
                self.send_header("Content-Type", "text/html; charset=utf-8" if body is None else
                                 "application/json; charset=utf-8")  # fmt: skip
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-GitHub-Request-Id", "FAKE:1")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parsed = urlparse(self.path)
                path = parsed.path
                if fake.prefix and path.startswith(fake.prefix):
                    path = path[len(fake.prefix) :]
                query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
                # GraphQL lives at /graphql, on GitHub Enterprise at /api/graphql next to /api/v3
                graphql = parsed.path == fake.prefix.removesuffix("/v3") + "/graphql"
                if graphql:
                    path = "/graphql"
                if method == "GET" and (blob := re.fullmatch(r"/_blobs/(\d+)\.zip", path)):
                    # where GET .../artifacts/{id}/zip redirects to: a pre-signed blob URL on
                    # GitHub, fetched without the API token (download-artifact streams it)
                    art = fake.artifacts.get(int(blob.group(1)))
                    data = Path(art["zip"]).read_bytes() if art else b""
                    self.send_response(200 if art else 404)
                    self.send_header("Content-Type", "application/zip")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                with fake.lock:
                    if graphql:
                        fake.graphql.append(str((json.loads(raw) if raw else {}).get("query", "")))
                    else:
                        fake.requests.append((method, path))
                    hook = next((h for h in fake.hooks if h[0] == method and h[1].search(path)), None)
                    if hook:
                        fake.hooks.remove(hook)
                        hook[2]()
                    fault = next((f for f in fake.faults if f.method == method and f.path.search(path)), None)
                    if fault:
                        fault.times -= 1
                        if fault.times <= 0:
                            fake.faults.remove(fault)
                auth = self.headers.get("Authorization", "")
                token = auth.split(" ", 1)[1] if " " in auth else ""
                if token not in fake.tokens:
                    self._reply(401, {"message": "Bad credentials", "documentation_url": DOCS})
                    return
                if fault and not fault.after:
                    answer = fault.payload or {"message": fault.message, "documentation_url": DOCS}
                    self._reply(fault.status, answer, fault.headers)
                    return
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    self._reply(400, {"message": "Problems parsing JSON"})
                    return
                with fake.lock:
                    if graphql:
                        status, payload, headers = fake.graphql_route(method, body, fake.account(token))
                    else:
                        status, payload, headers = fake.route(method, path, query, body, fake.tokens[token],
                                                              fake.account(token))  # fmt: skip
                if fault:  # the write happened; the client still sees an error
                    self._reply(fault.status, {"message": fault.message, "documentation_url": DOCS}, fault.headers)
                    return
                self._reply(status, payload, headers)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

            def do_PUT(self) -> None:
                self._handle("PUT")

        return Handler

    def _forbidden(self) -> tuple[int, Any, dict[str, str]]:
        return 403, {"message": "Resource not accessible by integration", "documentation_url": DOCS}, {}

    def _page(self, path: str, items: list[dict[str, Any]], query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        per_page = min(int(query.get("per_page", 30)), 100)
        page = max(int(query.get("page", 1)), 1)
        last = max((len(items) + per_page - 1) // per_page, 1)
        chunk = items[(page - 1) * per_page : page * per_page]
        links = []

        def link(p: int, rel: str) -> str:
            q = dict(query, per_page=str(per_page), page=str(p))
            return f'<{self._url(path)}?{urlencode(q)}>; rel="{rel}"'

        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(1, "first"), link(page - 1, "prev")]
        headers = {"Link": ", ".join(links)} if links else {}
        return 200, [self.public(i) for i in chunk], headers

    @staticmethod
    def graphql_route(method: str, body: dict[str, Any], who: Account) -> tuple[int, Any, dict[str, str]]:
        """Only the `viewer` question is answered; anything else is a GraphQL error (HTTP 200)."""
        if method != "POST":
            return 404, {"message": "Not Found", "documentation_url": DOCS}, {}
        if re.fullmatch(r"\s*(query\s*)?\{\s*viewer\s*\{\s*login\s+databaseId\s*\}\s*\}\s*", body.get("query", "")):
            return 200, {"data": {"viewer": {"login": who.login, "databaseId": who.id}}}, {}
        return 200, {"errors": [{"message": "the fake answers only `viewer { login databaseId }`"}]}, {}

    def route(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        body: dict[str, Any],
        perms: frozenset[str],
        who: Account = ACTIONS_BOT,
    ) -> tuple[int, Any, dict[str, str]]:
        if path == "/user" and method == "GET":
            if who.installation:
                return 403, {"message": "Resource not accessible by integration", "documentation_url": USER_DOCS}, {}
            return 200, {"login": who.login, "id": who.id, "type": "User", "url": self._url("/user")}, {}
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)(/.*)?", path)
        if not m:
            return 404, {"message": "Not Found", "documentation_url": DOCS}, {}
        repo, rest = m.group(1), m.group(2) or ""
        if rest == "" and method == "GET":
            setup = self.setups.get(repo) or RepoSetup()
            return 200, {"id": 1, "full_name": repo, "url": self._url(f"/repos/{repo}"), "name": repo.split("/")[1],
                         "default_branch": setup.default_branch, "private": setup.private}, {}  # fmt: skip
        if method == "GET" and (answer := self._settings_route(repo, rest, path, query, perms, who)) is not None:
            return answer
        if (
            method in ("PUT", "POST", "DELETE")
            and (answer := self._environment_write(repo, rest, method, body, perms, who)) is not None
        ):
            return answer

        # Artifacts of another workflow run, as actions/download-artifact v4 reads them with a
        # run-id: GET .../actions/runs/{run_id}/artifacts?name=N (listWorkflowRunArtifacts),
        # then GET .../actions/artifacts/{id}/zip answered with 302 to the blob (its code
        # requires exactly 302: dist/index.js of the kit's download-artifact@fa0a91b).
        if (mm := re.fullmatch(r"/actions/runs/(\d+)/artifacts", rest)) and method == "GET":
            if "actions:read" not in perms:
                return self._forbidden()
            found = [
                {"id": i, "name": a["name"], "size_in_bytes": os.path.getsize(a["zip"]), "created_at": _now(),
                 "expired": False, "workflow_run": {"id": a["run_id"]}}
                for i, a in sorted(self.artifacts.items())
                if a["repo"] == repo and a["run_id"] == int(mm.group(1)) and query.get("name") in (None, a["name"])
            ]  # fmt: skip
            return 200, {"total_count": len(found), "artifacts": found}, {}
        if (mm := re.fullmatch(r"/actions/artifacts/(\d+)/zip", rest)) and method == "GET":
            if "actions:read" not in perms:
                return self._forbidden()
            if int(mm.group(1)) not in self.artifacts:
                return 404, {"message": "Not Found", "documentation_url": DOCS}, {}
            return 302, None, {"Location": f"{self.base_url}/_blobs/{mm.group(1)}.zip"}
        if (mm := re.fullmatch(r"/pulls/(\d+)", rest)) and method == "GET":
            head = self.pulls.get((repo, int(mm.group(1))))
            if head is None:
                return 404, {"message": "Not Found", "documentation_url": DOCS}, {}
            n = int(mm.group(1))
            return 200, {
                "number": n, "state": "open", "url": self._url(f"/repos/{repo}/pulls/{n}"),
                "head": {"sha": head, "ref": "feature"}, "base": {"sha": "0" * 40, "ref": "main"},
            }, {}  # fmt: skip
        if mm := re.fullmatch(r"/issues/(\d+)/comments", rest):
            number = int(mm.group(1))
            if method == "GET":
                return self._page(path, self.pr_comments(repo, number), query)
            if method == "POST":
                if not perms & {"pull-requests:write", "issues:write"}:
                    return self._forbidden()
                if not isinstance(body.get("body"), str):
                    return 422, {"message": "Validation Failed"}, {}
                if len(body["body"]) > 65536:
                    return 422, {"message": "Validation Failed: body is too long (maximum is 65536 characters)"}, {}
                return 201, self.public(self._new_comment(repo, number, body["body"], who.login)), {}
        if mm := re.fullmatch(r"/issues/comments/(\d+)", rest):
            c = self.comments.get(int(mm.group(1)))
            if c is None:
                return 404, {"message": "Not Found", "documentation_url": DOCS}, {}
            if method == "GET":
                return 200, self.public(c), {}
            if not perms & {"pull-requests:write", "issues:write"}:
                return self._forbidden()
            if method == "PATCH":
                if len(body.get("body", "")) > 65536:
                    return 422, {"message": "Validation Failed: body is too long (maximum is 65536 characters)"}, {}
                c["body"] = body["body"]
                c["updated_at"] = _now()
                return 200, self.public(c), {}
            if method == "DELETE":
                del self.comments[c["id"]]
                return 204, None, {}

        if rest == "/issues":
            if method == "GET":
                # docs.github.com/rest/issues/issues#list-repository-issues: open ones by default, newest
                # first (sort=created, direction=desc); `creator` filters by login; "GitHub's REST API
                # considers every pull request an issue", each with a `pull_request` key (same page)
                state = query.get("state", "open")
                pulls = [{"number": n, "title": "a pull request", "body": "", "state": "open", "updated_at": _now(),
                          "user": {"login": "someone", "id": self.user_id("someone"), "type": "User"},
                          "html_url": f"https://github.example/{r}/pull/{n}",
                          "url": self._url(f"/repos/{r}/issues/{n}"),
                          "pull_request": {"url": self._url(f"/repos/{r}/pulls/{n}")}}
                         for (r, n) in self.pulls if r == repo]  # fmt: skip
                found = [i for i in [*self.repo_issues(repo), *pulls] if state == "all" or i["state"] == state
                         if query.get("creator") in (None, i["user"]["login"])]  # fmt: skip
                key = "updated_at" if query.get("sort") == "updated" else "number"
                found.sort(key=lambda i: i[key], reverse=query.get("direction", "desc") == "desc")
                return self._page(path, found, query)
            if method == "POST":
                # "Issues: write"; title is required (422 otherwise); the body limit is the comments' one
                if not perms & {"issues:write"}:
                    return self._forbidden()
                if not isinstance(body.get("title"), str) or not body["title"]:
                    return 422, {"message": "Validation Failed", "documentation_url": DOCS}, {}
                if len(body.get("body") or "") > 65536:
                    return 422, {"message": "Validation Failed: body is too long (maximum is 65536 characters)"}, {}
                return 201, self.public(self.new_issue(repo, body["title"], body.get("body") or "", who.login)), {}
        if mm := re.fullmatch(r"/issues/(\d+)", rest):
            issue = self.issues.get((repo, int(mm.group(1))))
            if issue is None:
                return 404, {"message": "Not Found", "documentation_url": DOCS}, {}
            if method == "GET":
                return 200, self.public(issue), {}
            if method == "PATCH":
                # docs.github.com/rest/issues/issues#update-an-issue: state open|closed, state_reason
                # completed|not_planned|reopened
                if "issues:write" not in perms:
                    return self._forbidden()
                if len(body.get("body") or "") > 65536:
                    return 422, {"message": "Validation Failed: body is too long (maximum is 65536 characters)"}, {}
                if body.get("state") not in (None, "open", "closed") or body.get("state_reason") not in (
                        None, "completed", "not_planned", "reopened"):  # fmt: skip
                    return 422, {"message": "Validation Failed", "documentation_url": DOCS}, {}
                for k in ("title", "body", "state", "state_reason"):
                    if k in body:
                        issue[k] = body[k]
                issue["closed_at"] = _now() if issue["state"] == "closed" else None
                issue["updated_at"] = _now()
                return 200, self.public(issue), {}
        if (mm := re.fullmatch(r"/actions/workflows/([^/]+)/dispatches", rest)) and method == "POST":
            # docs.github.com/rest/actions/workflows#create-a-workflow-dispatch-event: "Actions: write",
            # 204 No Content (200 with the run's id only when asked with return_run_details, PyGithub's
            # Workflow.create_dispatch). The 422 messages are GitHub's, verbatim in fcetool/fcetool#1
            # ("Workflow does not have 'workflow_dispatch' trigger"), peter-evans/slash-command-dispatch#115
            # ('Unexpected inputs provided: ["test"]') and convictional/trigger-workflow-and-wait#44
            # ("No ref found for: fail").
            if "actions:write" not in perms:
                return self._forbidden()
            name = unquote(mm.group(1))
            if (repo, name) not in self.workflows:
                return 404, {"message": "Not Found", "documentation_url": DOCS, "status": "404"}, {}
            inputs = self.workflows[(repo, name)]
            if inputs is None:
                return 422, {"message": "Workflow does not have 'workflow_dispatch' trigger", "status": "422",
                             "documentation_url": DOCS}, {}  # fmt: skip
            ref = body.get("ref")
            setup = self.setups.get(repo) or RepoSetup()
            if ref not in (setup.default_branch, *setup.protection):
                return 422, {"message": f"No ref found for: {ref}", "documentation_url": DOCS}, {}
            extra = sorted(set(body.get("inputs") or {}) - inputs)
            if extra:
                unexpected = f"Unexpected inputs provided: {json.dumps(extra)}"
                return 422, {"message": unexpected, "documentation_url": DOCS}, {}
            self.dispatches.append({"kind": "workflow_dispatch", "repo": repo, "workflow": name, "ref": ref,
                                    "inputs": dict(body.get("inputs") or {})})  # fmt: skip
            return 204, None, {}
        if rest == "/dispatches" and method == "POST":
            # docs.github.com/rest/repos/repos#create-a-repository-dispatch-event: "Contents: write", 204;
            # event_type at most 100 characters, client_payload at most 10 top-level properties
            if "contents:write" not in perms:
                return self._forbidden()
            event, payload = body.get("event_type"), body.get("client_payload") or {}
            if not isinstance(event, str) or not 0 < len(event) <= 100 or len(payload) > 10:
                return 422, {"message": "Validation Failed", "documentation_url": DOCS}, {}
            self.dispatches.append({"kind": "repository_dispatch", "repo": repo, "event_type": event,
                                    "client_payload": payload})  # fmt: skip
            return 204, None, {}

        if rest == "/check-runs" and method == "POST":
            if "checks:write" not in perms:
                return self._forbidden()
            cid = self._id()
            run = {
                "id": cid, "name": body["name"], "head_sha": body["head_sha"], "status": body.get("status", "queued"),
                "conclusion": body.get("conclusion"), "output": self._output(body.get("output")),
                "url": self._url(f"/repos/{repo}/check-runs/{cid}"), "html_url": f"https://github.example/{repo}/runs/{cid}",
                "details_url": body.get("details_url"), "started_at": _now(), "completed_at": _now(),
                "_annotations": list((body.get("output") or {}).get("annotations", [])), "_repo": repo,
            }  # fmt: skip
            self.check_runs[cid] = run
            return 201, self.public(run), {}
        if mm := re.fullmatch(r"/check-runs/(\d+)", rest):
            run = self.check_runs.get(int(mm.group(1)))
            if run is None:
                return 404, {"message": "Not Found"}, {}
            if method == "PATCH":
                if "checks:write" not in perms:
                    return self._forbidden()
                for k in ("status", "conclusion", "details_url"):
                    if k in body:
                        run[k] = body[k]
                if "output" in body:
                    run["output"] = self._output(body["output"])
                    run["_annotations"] += list(body["output"].get("annotations", []))
                return 200, self.public(run), {}
            return 200, self.public(run), {}
        if mm := re.fullmatch(r"/commits/([0-9a-f]{40})/check-runs", rest):
            runs = [
                self.public(r)
                for r in self.check_runs.values()
                if r["_repo"] == repo
                and r["head_sha"] == mm.group(1)
                and ("check_name" not in query or r["name"] == query["check_name"])
            ]
            return 200, {"total_count": len(runs), "check_runs": runs}, {}
        if (mm := re.fullmatch(r"/statuses/([0-9a-f]{40})", rest)) and method == "POST":
            if "statuses:write" not in perms:
                return self._forbidden()
            sid = self._id()
            st = {
                "id": sid, "state": body["state"], "description": body.get("description"),
                "target_url": body.get("target_url"), "context": body.get("context", "default"),
                "created_at": _now(), "updated_at": _now(),
                "url": self._url(f"/repos/{repo}/statuses/{mm.group(1)}"), "_sha": mm.group(1),
            }  # fmt: skip
            self.statuses.append(st)
            return 201, self.public(st), {}
        if rest == "/deployments" and method == "POST":
            if "deployments:write" not in perms:
                return self._forbidden()
            did = self._id()
            dep = {
                "id": did, "sha": body["ref"], "ref": body["ref"], "task": body.get("task", "deploy"),
                "environment": body.get("environment", "production"), "description": body.get("description"),
                "payload": body.get("payload", {}), "production_environment": body.get("production_environment", False),
                "transient_environment": body.get("transient_environment", False), "creator": {"login": "bot"},
                "created_at": _now(), "updated_at": _now(), "url": self._url(f"/repos/{repo}/deployments/{did}"),
                "statuses_url": self._url(f"/repos/{repo}/deployments/{did}/statuses"),
                "repository_url": self._url(f"/repos/{repo}"),
            }  # fmt: skip
            self.deployments[did] = dep
            self.deployment_statuses[did] = []
            return 201, dep, {}
        if mm := re.fullmatch(r"/deployments/(\d+)/statuses", rest):
            did = int(mm.group(1))
            if did not in self.deployments:
                return 404, {"message": "Not Found"}, {}
            if method == "GET":
                return self._page(path, list(reversed(self.deployment_statuses[did])), query)
            if "deployments:write" not in perms:
                return self._forbidden()
            env = self.deployments[did]["environment"]
            if body.get("state") == "success" and body.get("auto_inactive", True):
                for other_id, other in self.deployments.items():  # GitHub marks older ones inactive
                    if other_id != did and other["environment"] == env and self.deployment_statuses[other_id]:
                        last = self.deployment_statuses[other_id][-1]
                        if last["state"] == "success":
                            self.deployment_statuses[other_id].append(dict(last, state="inactive", id=self._id()))
            sid = self._id()
            st = {
                "id": sid, "state": body["state"], "description": body.get("description", ""),
                "environment": body.get("environment", env), "environment_url": body.get("environment_url", ""),
                # target_url is the older name of log_url; GitHub accepts both
                "log_url": body.get("log_url") or body.get("target_url", ""),
                "created_at": _now(), "updated_at": _now(),
                "url": self._url(f"/repos/{repo}/deployments/{did}/statuses/{sid}"),
                "deployment_url": self._url(f"/repos/{repo}/deployments/{did}"),
            }  # fmt: skip
            self.deployment_statuses[did].append(st)
            return 201, st, {}
        return 404, {"message": "Not Found", "documentation_url": DOCS}, {}

    # -- repository settings (what `mlops-ci doctor` reads) --------------------------------
    def _lacks(self, need: str, who: Account) -> tuple[int, Any, dict[str, str]]:
        """403 for a token without the permission. GitHub words it by token kind ("by integration" for
        GITHUB_TOKEN and App tokens, "by personal access token" for fine-grained PATs) and names the
        permissions it would accept in X-Accepted-GitHub-Permissions, sets separated by `;`
        (github.blog/changelog/2023-08-10-x-accepted-github-permissions-header-for-fine-grained-permission-actors)."""
        kind = "integration" if who.installation else "personal access token"
        accepted = {"variables:read": "actions_variables=read", "secrets:read": "secrets=read",
                    "administration:read": "administration=read", "actions:read": "actions=read",
                    "environments:read": "actions_variables=read,environments=read"}[need]  # fmt: skip
        body = {"message": f"Resource not accessible by {kind}", "documentation_url": DOCS, "status": "403"}
        return 403, body, {"X-Accepted-GitHub-Permissions": accepted}

    def _listed(self, path: str, key: str, items: list[dict[str, Any]], query: dict[str, str]
                ) -> tuple[int, Any, dict[str, str]]:  # fmt: skip
        """A wrapped list, {"total_count": N, key: [page]}, paginated like `_page` (the shape of the
        secrets, variables, environments and deployment branch policies lists)."""
        status, page, headers = self._page(path, items, query)
        return status, {"total_count": len(items), key: page}, headers

    def _settings_route(self, repo: str, rest: str, path: str, query: dict[str, str], perms: frozenset[str],
                        who: Account) -> tuple[int, Any, dict[str, str]] | None:  # fmt: skip
        setup = self.setups.get(repo) or RepoSetup()
        when = "2024-01-01T00:00:00Z"
        not_found = 404, {"message": "Not Found", "documentation_url": DOCS, "status": "404"}, {}

        def named(names: Any) -> list[dict[str, Any]]:  # docs: list repository secrets, example response
            return [{"name": n, "created_at": when, "updated_at": when} for n in sorted(names)]

        def valued(values: dict[str, str]) -> list[dict[str, Any]]:  # docs: list repository variables
            return [{"name": k, "value": v, "created_at": when, "updated_at": when} for k, v in sorted(values.items())]

        # GET .../actions/{variables,secrets,organization-variables,organization-secrets}: the
        # organization lists hold what an organization shares with this repository (empty for a user's)
        if rest in ("/actions/variables", "/actions/organization-variables"):
            if "variables:read" not in perms:
                return self._lacks("variables:read", who)
            values = setup.variables if rest == "/actions/variables" else setup.org_variables
            return self._listed(path, "variables", valued(values), query)
        if rest in ("/actions/secrets", "/actions/organization-secrets"):
            if "secrets:read" not in perms:
                return self._lacks("secrets:read", who)
            return self._listed(path, "secrets", named(setup.secrets if rest == "/actions/secrets"
                                                       else setup.org_secrets), query)  # fmt: skip
        if rest == "/environments":
            # "Actions: read"; shape of docs.github.com/rest/deployments/environments#list-environments
            if "actions:read" not in perms:
                return self._lacks("actions:read", who)
            envs = [self._environment(repo, name, e) for name, e in sorted(setup.environments.items())]
            return self._listed(path, "environments", envs, query)
        if mm := re.fullmatch(r"/environments/([^/]+)(/variables|/deployment-branch-policies)?", rest):
            name = unquote(mm.group(1))
            env = setup.environments.get(name)
            if env is None:
                return not_found
            if mm.group(2) == "/variables":
                if not {"variables:read", "environments:read"} <= perms:
                    return self._lacks("environments:read", who)
                return self._listed(path, "variables", valued(env.variables), query)
            if "actions:read" not in perms:
                return self._lacks("actions:read", who)
            if mm.group(2) is None:
                return 200, self._environment(repo, name, env), {}
            # docs.github.com/rest/deployments/branch-policies#list-deployment-branch-policies; each
            # policy has a `type` (branch | tag) since tag policies came (2023)
            ids = [self._policy_id(repo, name, n, t) for n, t in env.policies]
            policies = [{"id": i, "node_id": f"MDE2OkdhdGVCcmFuY2hQb2xpY3kz{i}", "name": n, "type": t}
                        for i, (n, t) in zip(ids, env.policies, strict=True)]  # fmt: skip
            return self._listed(path, "branch_policies", policies, query)
        if rest == "/actions/oidc/customization/sub":
            # `repo` scope for classic tokens (the docs); no fine-grained permission is documented for
            # it: Actions: read assumed
            if "actions:read" not in perms:
                return self._lacks("actions:read", who)
            return (200, dict(setup.oidc_sub), {}) if setup.oidc_sub is not None else not_found
        if mm := re.fullmatch(r"/branches/([^/]+)(/protection)?", rest):
            branch = unquote(mm.group(1))
            if branch != setup.default_branch and branch not in setup.protection:
                return 404, {"message": "Branch not found", "documentation_url": DOCS, "status": "404"}, {}
            protection_url = self._url(f"/repos/{repo}/branches/{quote(branch, safe='')}/protection")
            if mm.group(2) is None:  # docs: get a branch (only what PyGithub's Branch reads)
                return 200, {
                    "name": branch, "commit": {"sha": "0" * 40, "url": self._url(f"/repos/{repo}/commits/{'0' * 40}")},
                    "protected": branch in setup.protection, "protection_url": protection_url,
                }, {}  # fmt: skip
            if "administration:read" not in perms:
                return self._lacks("administration:read", who)
            if branch not in setup.protection:
                # the exact message go-github matches (repos.go: githubBranchNotProtected)
                return 404, {"message": "Branch not protected", "documentation_url": DOCS, "status": "404"}, {}
            contexts = setup.protection[branch]
            return 200, {
                "url": protection_url,
                "required_status_checks": {
                    "url": f"{protection_url}/required_status_checks", "strict": False, "contexts": contexts,
                    "contexts_url": f"{protection_url}/required_status_checks/contexts",
                    # `checks` repeats the contexts with the app that must set them (null: any)
                    "checks": [{"context": c, "app_id": None} for c in contexts],
                },
                "enforce_admins": {"url": f"{protection_url}/enforce_admins", "enabled": False},
            }, {}  # fmt: skip
        if mm := re.fullmatch(r"/rules/branches/([^/]+)", rest):
            # docs.github.com/rest/repos/rules#get-rules-for-a-branch: "Metadata: read", a bare list of
            # the active rules, each with its ruleset's source (repository-rule-detailed)
            contexts = setup.rules.get(unquote(mm.group(1)), [])
            rules = [{
                "type": "required_status_checks", "ruleset_source_type": "Repository", "ruleset_source": repo,
                "ruleset_id": 42, "parameters": {
                    "strict_required_status_checks_policy": False,
                    "required_status_checks": [{"context": c, "integration_id": 15368} for c in contexts],
                },
            }] if contexts else []  # fmt: skip
            return self._page(path, rules, query)
        if rest == "/actions/permissions/workflow":
            if "administration:read" not in perms:
                return self._lacks("administration:read", who)
            # docs.github.com/rest/actions/permissions#get-default-workflow-permissions-for-a-repository
            return 200, {"default_workflow_permissions": setup.workflow_permissions,
                         "can_approve_pull_request_reviews": False}, {}  # fmt: skip
        if rest == "/actions/permissions/fork-pr-contributor-approval":
            # operation actions/get-fork-pr-contributor-approval-permissions-repository: 200 or 404;
            # `repo` scope for classic tokens, no fine-grained permission documented: Administration assumed
            if "administration:read" not in perms:
                return self._lacks("administration:read", who)
            if setup.fork_pr_approval is None:
                return not_found
            return 200, {"approval_policy": setup.fork_pr_approval}, {}
        return None

    def _policy_id(self, repo: str, env: str, pattern: str, kind: str) -> int:
        key = (repo, env, pattern, kind)
        if key not in self.policy_ids:
            self.policy_ids[key] = 360000 + len(self.policy_ids)
        return self.policy_ids[key]

    def _environment_write(self, repo: str, rest: str, method: str, body: dict[str, Any], perms: frozenset[str],
                           who: Account) -> tuple[int, Any, dict[str, str]] | None:  # fmt: skip
        """The writes doctor's fixes make (`gh api`), all "Administration: write" (fine-grained) or
        the `repo` scope: PUT .../environments/{name} (docs.github.com/rest/deployments/environments
        #create-or-update-an-environment), POST .../deployment-branch-policies and DELETE
        .../deployment-branch-policies/{id} (docs.github.com/rest/deployments/branch-policies: "The
        deployment_branch_policy.custom_branch_policies property for the environment must be set to
        true to use these endpoints"; 404 otherwise).

        The docs do not say what a PUT does with a setting it leaves out; this fake resets it (no
        reviewers, no wait timer, any branch may deploy), the reading under which leaving one out
        loses it: a fix that keeps settings here keeps them under either reading."""
        mm = re.fullmatch(r"/environments/([^/]+)(?:/deployment-branch-policies(?:/(\d+))?)?", rest)
        if mm is None:
            return None
        if "administration:write" not in perms:
            return self._forbidden()
        setup = self.setups.setdefault(repo, RepoSetup())
        name = unquote(mm.group(1))
        is_policies = rest.endswith("/deployment-branch-policies") or mm.group(2) is not None
        not_found: tuple[int, Any, dict[str, str]] = (
            404,
            {"message": "Not Found", "documentation_url": DOCS, "status": "404"},
            {},
        )
        if method == "PUT" and not is_policies:
            gated = {"reviewers", "wait_timer", "prevent_self_review", "can_admins_bypass"} & set(body)
            if setup.private and not setup.enterprise and gated:
                # go-github repos_environments.go: "The API returns 422 when the pricing plan doesn't support
                # all the fields sent" (Pro/Team private repositories take only deployment_branch_policy)
                return (
                    422,
                    {"message": f"Validation Failed: {sorted(gated)} not available", "documentation_url": DOCS},
                    {},
                )
            policy = body.get("deployment_branch_policy")
            if policy is not None and bool(policy.get("protected_branches")) == bool(
                policy.get("custom_branch_policies")
            ):
                # the docs' 422: "protected_branches and custom_branch_policies ... set to the same value"
                return 422, {"message": "Validation Failed", "documentation_url": DOCS}, {}
            logins = {i: login for login, i in self.user_ids.items()}
            reviewers = []
            for r in body.get("reviewers") or []:
                if r.get("type") != "User" or r.get("id") not in logins:  # the fake has no teams
                    return 422, {"message": f"Validation Failed: reviewer {r} not found", "documentation_url": DOCS}, {}
                reviewers.append(logins[r["id"]])
            old = setup.environments.get(name)
            setup.environments[name] = EnvironmentSetup(
                reviewers=reviewers, wait_timer=int(body.get("wait_timer") or 0),
                prevent_self_review=bool(body.get("prevent_self_review")),
                can_admins_bypass=body.get("can_admins_bypass") is not False,
                branch_policy=None if policy is None else "custom" if policy["custom_branch_policies"] else "protected",
                policies=old.policies if old else [], variables=old.variables if old else {},
            )  # fmt: skip
            return 200, self._environment(repo, name, setup.environments[name]), {}
        env = setup.environments.get(name)
        if env is None or env.branch_policy != "custom" or not is_policies:
            return not_found
        if method == "POST" and mm.group(2) is None:
            pattern, kind = str(body.get("name", "")), str(body.get("type") or "branch")
            if (pattern, kind) not in env.policies:
                env.policies.append((pattern, kind))
            pid = self._policy_id(repo, name, pattern, kind)
            return 200, {"id": pid, "node_id": f"MDE2OkdhdGVCcmFuY2hQb2xpY3kz{pid}", "name": pattern, "type": kind}, {}
        if method == "DELETE" and mm.group(2) is not None:
            gone = [(n, t) for n, t in env.policies if self._policy_id(repo, name, n, t) == int(mm.group(2))]
            if not gone:
                return not_found
            env.policies.remove(gone[0])
            return 204, None, {}
        return not_found

    def _environment(self, repo: str, name: str, e: EnvironmentSetup) -> dict[str, Any]:
        """docs.github.com/rest/deployments/environments#get-an-environment, example response: protection
        rules in the order wait_timer, required_reviewers, branch_policy; `deployment_branch_policy` null
        when every branch may deploy."""
        eid = 161088068 + sum(map(ord, name))
        rules: list[dict[str, Any]] = []
        if e.wait_timer:
            rules.append({"id": 3736, "node_id": "MDQ6R2F0ZTM3MzY=", "type": "wait_timer", "wait_timer": e.wait_timer})
        if e.reviewers:
            rules.append({
                "id": 3755, "node_id": "MDQ6R2F0ZTM3NTU=", "prevent_self_review": e.prevent_self_review,
                "type": "required_reviewers",
                "reviewers": [{"type": "User", "reviewer": {
                    "login": login, "id": self.user_id(login), "node_id": f"MDQ6VXNlcj{self.user_id(login)}",
                    "type": "User", "url": self._url(f"/users/{login}"),
                    "html_url": f"https://github.example/{login}", "site_admin": False}} for login in e.reviewers],
            })  # fmt: skip
        if e.branch_policy:
            rules.append({"id": 3756, "node_id": "MDQ6R2F0ZTM3NTY=", "type": "branch_policy"})
        policy = None
        if e.branch_policy is not None:
            policy = {"protected_branches": e.branch_policy == "protected",
                      "custom_branch_policies": e.branch_policy == "custom"}  # fmt: skip
        return {
            "id": eid, "node_id": f"MDExOkVudmlyb25tZW50{eid}", "name": name,
            "url": self._url(f"/repos/{repo}/environments/{quote(name, safe='')}"),
            "html_url": f"https://github.example/{repo}/deployments/activity_log?environments_filter={quote(name)}",
            "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
            "protection_rules": rules, "deployment_branch_policy": policy, "can_admins_bypass": e.can_admins_bypass,
        }  # fmt: skip

    @staticmethod
    def _output(out: dict[str, Any] | None) -> dict[str, Any]:
        out = out or {}
        return {
            "title": out.get("title"),
            "summary": out.get("summary"),
            "text": out.get("text"),
            "annotations_count": len(out.get("annotations", [])),
        }
