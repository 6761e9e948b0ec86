"""GitHub through PyGithub: the sticky PR comment, the gate's check run (or commit status),
and deployment records. Works against github.com and GitHub Enterprise (`GITHUB_API_URL`).

PyGithub's own retry is switched off: it retries POSTs blindly (a comment stored before a 502
would be posted twice) and gives up on a 429 without Retry-After. Our policy retries whole
*operations* instead, so a retried upsert looks for the marker again before writing, honours
Retry-After and X-RateLimit-Reset, backs off from 60 s on secondary limits, and gives up after
a bounded total wait with exit code 9.

The sticky comment is found by its marker *and* its author: only comments written by the
token's own account are edited or deleted (anyone who can comment can also type the marker).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .. import __version__
from ..ci import detect
from ..errors import (
    BadCredentials,
    ConfigError,
    MlopsCiError,
    NotFound,
    PermissionDenied,
    ServiceRefused,
    Transient,
    UsageError,
)

if TYPE_CHECKING:  # pragma: no cover
    import github

T = TypeVar("T")
PER_PAGE = 100
MAX_ANNOTATIONS_PER_REQUEST = 50  # GitHub's limit for one check-run create/update


@dataclass(frozen=True)
class GitHubSettings:
    api_url: str
    token: str | None
    repository: str | None
    server_url: str
    run_id: str | None
    run_attempt: str | None
    write_interval: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], token: str | None = None) -> GitHubSettings:
        job = detect(env)
        return cls(
            api_url=job.api_url,
            token=token or job.token,
            repository=job.repository,
            server_url=job.server_url,
            run_id=job.run_id,
            run_attempt=job.run_attempt,
            write_interval=_seconds(env, "MLOPS_CI_GITHUB_WRITE_INTERVAL", 1.0),
        )

    @property
    def run_url(self) -> str | None:
        if not (self.repository and self.run_id):
            return None
        url = f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}"
        return url + (f"/attempts/{self.run_attempt}" if self.run_attempt else "")


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}={text!r} is not a number of seconds >= 0; fix or unset it (default {default:g})")
    return value


@dataclass
class RetryPolicy:
    """Bounded retries of whole operations. `sleep` and `clock` are injectable (tests use a
    fake clock: no real sleeping)."""

    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    max_total_wait: float = 600.0
    max_attempts: int = 8
    waits: list[float] = field(default_factory=list)
    say: Callable[[str], None] | None = None  # each wait is announced: a retry is never silent

    def wait_for(self, exc: Exception, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or None when the error is not transient."""
        import github

        if not isinstance(exc, github.GithubException):
            import requests

            if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
                return float(min(2**attempt, 30))
            return None
        status = exc.status
        headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
        message = _message(exc).lower()
        limited = status == 429 or (
            status == 403 and ("rate limit" in message or "retry-after" in headers
                               or headers.get("x-ratelimit-remaining") == "0")
        )  # fmt: skip
        if not limited and status < 500:
            return None
        if "retry-after" in headers:
            try:
                return max(float(headers["retry-after"]), 0.0)
            except ValueError:
                pass
        if headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in headers:
            try:
                return max(float(headers["x-ratelimit-reset"]) - self.clock(), 0.0) + 1.0
            except ValueError:
                pass
        if limited:  # secondary limit with no hint: GitHub asks for at least a minute
            return float(min(60 * 2**attempt, 900))
        return float(min(2**attempt, 30))  # 5xx

    def call(self, what: str, fn: Callable[[], T], *, permission: str, repository: str | None,
             once: bool = False) -> T:  # fmt: skip
        """`once`: a write GitHub may have made although the answer was lost or an error (a
        dispatch, an issue's creation: no idempotency key) is retried only when it was refused
        before anything happened (a rate limit, a connection never made)."""
        waited = 0.0
        for attempt in range(self.max_attempts):
            try:
                return fn()
            except MlopsCiError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below
                wait = self.wait_for(exc, attempt)
                if wait is not None and once and not _refused_before_acting(exc):
                    wait = None
                if wait is None:
                    raise translate(exc, what, permission, repository) from None
                if attempt + 1 >= self.max_attempts or waited + wait > self.max_total_wait:
                    raise Transient(
                        f"could not {what}: GitHub kept answering {_describe(exc)} after {attempt + 1} attempt(s) "
                        f"and {waited:.0f}s of waiting; retry later"
                    ) from None
                self.waits.append(wait)
                if self.say is not None:
                    self.say(
                        f"GitHub: could not {what} ({_describe(exc)}); retrying in {wait:.0f}s (attempt "
                        f"{attempt + 2} of {self.max_attempts}, giving up after {self.max_total_wait:.0f}s of waiting)"
                    )
                self.sleep(wait)
                waited += wait
        raise AssertionError("unreachable")  # pragma: no cover


def _refused_before_acting(exc: Exception) -> bool:
    """A rate limit (429, or a 403 that wait_for took for one) or a connection that timed out before
    it was made: GitHub did nothing. A 5xx, a read timeout or a dropped connection may come after
    the write was made."""
    import requests

    status = getattr(exc, "status", None)
    if status is not None:
        return bool(status in (403, 429))
    return isinstance(exc, requests.exceptions.ConnectTimeout)


def _message(exc: object) -> str:
    data = getattr(exc, "data", None)
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return str(getattr(exc, "message", "") or "")


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    return f"HTTP {status} ({_message(exc)})" if status else type(exc).__name__


def translate(exc: Exception, what: str, permission: str, repository: str | None) -> MlopsCiError:
    """One-line, actionable errors; never includes the token."""
    status = getattr(exc, "status", None)
    message = _message(exc)
    if status == 401:
        return BadCredentials(
            f"could not {what}: GitHub rejected the token (401 Bad credentials); check GITHUB_TOKEN "
            "or MLOPS_CI_GITHUB_TOKEN"
        )
    if status == 403:
        return PermissionDenied(
            f"could not {what}: the token lacks the `{permission}` permission ({message}); add "
            f"`permissions: {permission.replace(':', ': ')}` to the workflow job (fork PRs only get a read-only token)"
        )
    if status == 404:
        return NotFound(
            f"could not {what}: {repository or 'the repository'} or the object was not found, or the token "
            "cannot see it (it needs `contents: read` on the repository)"
        )
    if status == 422:
        return UsageError(f"could not {what}: GitHub rejected the request: {message}")
    if status is None or status >= 500:  # no answer, or GitHub's own failure, after the client's retries
        return Transient(f"could not {what}: GitHub did not answer ({_describe(exc)}); retry later")
    return ServiceRefused(f"could not {what}: GitHub answered {_describe(exc)}")


@dataclass(frozen=True)
class Identity:
    """The account a token acts as. Comments are matched on `id`, never on the login: GraphQL
    spells bot logins without `[bot]` in places where REST keeps it (fullsend-ai/fullsend#6205),
    and a human may hold the login `github-actions` while the Actions bot is
    `github-actions[bot]`; account ids are unique and the same in REST and GraphQL."""

    login: str
    id: int


# GraphQL `viewer` answers for every token kind: a PAT's user, and for installation tokens
# (GITHUB_TOKEN included) the App's bot user, login with `[bot]` and its user id as
# `databaseId` (verbatim `{"viewer":{"login":"github-actions[bot]"}}` from an Actions run in
# basiltt/CandleViewer docs/plan/27-adrs/ADR-0017-board-automation.md; `fullsend-ai-coder[bot]`
# with its databaseId in fullsend-ai/fullsend#1953). REST GET /user answers only PATs:
# installation tokens get 403 "Resource not accessible by integration"
# (actions/create-github-app-token#258), so it is the fallback, not the first question.
VIEWER_QUERY = "query { viewer { login databaseId } }"
_IDENTITIES: dict[tuple[str, str], Identity] = {}  # (API URL, token digest) → account; asked once a process
_IDENTITY_LOCK = threading.Lock()


@dataclass(frozen=True)
class CommentResult:
    comment_id: int
    action: str  # created | updated | unchanged
    html_url: str


@dataclass(frozen=True)
class Issue:
    number: int
    body: str  # line breaks as \n
    html_url: str


def _next_page(headers: Mapping[str, str]) -> str | None:
    """The `rel="next"` URL of a Link header (GitHub's pagination), if any."""
    link = next((v for k, v in headers.items() if k.lower() == "link"), "")
    for part in link.split(","):
        url, _, rel = part.partition(";")
        if rel.strip() == 'rel="next"':
            return url.strip().strip("<>")
    return None


class GitHubClient:
    def __init__(self, settings: GitHubSettings, *, retry: RetryPolicy | None = None):
        if not settings.token:
            raise BadCredentials(
                "no GitHub token: set GITHUB_TOKEN (in a workflow: env: GITHUB_TOKEN: ${{ github.token }}) "
                "or MLOPS_CI_GITHUB_TOKEN, or pass --token"
            )
        if not settings.repository or "/" not in settings.repository:
            raise UsageError("no GitHub repository: set GITHUB_REPOSITORY=owner/name (Actions sets it)")
        self.settings = settings
        self.retry = retry or RetryPolicy()
        import github

        self._gh = github.Github(
            base_url=settings.api_url,
            auth=github.Auth.Token(settings.token),
            retry=None,
            per_page=PER_PAGE,
            seconds_between_writes=settings.write_interval,
            seconds_between_requests=0,
            lazy=True,
            timeout=30,
            user_agent=f"mlops-ci/{__version__}",
        )
        self.repo = self._gh.get_repo(settings.repository)

    def _call(self, what: str, fn: Callable[[], T], permission: str, *, once: bool = False) -> T:
        return self.retry.call(what, fn, permission=permission, repository=self.settings.repository, once=once)

    def identity(self) -> Identity:
        """Who the token is, asked once per process and token (concurrent jobs in one process
        wait for the first answer rather than each asking)."""
        assert self.settings.token is not None
        key = (self.settings.api_url, hashlib.sha256(self.settings.token.encode()).hexdigest())
        with _IDENTITY_LOCK:
            if key not in _IDENTITIES:
                _IDENTITIES[key] = self._ask_identity()
            return _IDENTITIES[key]

    def _ask_identity(self) -> Identity:
        import github

        requester = self._gh.requester
        problems: list[str] = []

        def ask(where: str, verb: str, url: str, body: Any, pick: Callable[[Any], Any]) -> Identity | None:
            try:
                headers, data = requester.requestJsonAndCheck(verb, url, input=body)
            except github.GithubException as exc:
                if exc.status == 401 or self.retry.wait_for(exc, 0) is not None:
                    raise  # bad token, or transient: the retry policy decides
                problems.append(f"{where}: {_describe(exc)}")
                return None
            errors = data.get("errors") if isinstance(data, dict) else None
            if errors and any(isinstance(e, dict) and e.get("type") in ("RATE_LIMITED", "RATE_LIMIT") for e in errors):
                # GraphQL reports its primary rate limit as HTTP 200 with an error of type RATE_LIMITED
                # (github/docs#22607) or RATE_LIMIT (yanyongyu/githubkit#271); its headers carry the reset
                raise github.GithubException(403, {"message": "API rate limit exceeded (GraphQL)"}, headers)
            found = pick(data) if isinstance(data, dict) and not errors else None
            if isinstance(found, dict) and isinstance(found.get("login"), str) and found["login"] \
                    and isinstance(found.get("id"), int) and not isinstance(found["id"], bool):  # fmt: skip
                return Identity(found["login"], found["id"])
            problems.append(f"{where}: no account in the answer")
            return None

        def viewer(data: dict[str, Any]) -> Any:
            v = (data.get("data") or {}).get("viewer") or {}
            return {"login": v.get("login"), "id": v.get("databaseId")} if isinstance(v, dict) else None

        def op() -> Identity | None:
            problems.clear()
            return ask("GraphQL viewer", "POST", requester.graphql_url,
                       {"query": VIEWER_QUERY, "variables": {}}, viewer) \
                or ask("GET /user", "GET", "/user", None, lambda d: d)  # fmt: skip

        me = self._call("ask GitHub which account the token acts as", op, "metadata:read")
        if me is None:
            raise PermissionDenied(
                f"could not tell which account the GitHub token acts as ({'; '.join(problems)}), so no PR "
                "comment was touched (only the token's own comments ever are); use GITHUB_TOKEN, a GitHub App "
                "token or a personal access token, allowed to ask GraphQL `viewer` or GET /user"
            )
        return me

    def _path(self, *parts: object) -> str:
        return "/".join([f"/repos/{self.settings.repository}", *(str(p) for p in parts)])

    # The request bodies below are shared by the real calls and the dry-run plan, so a plan
    # shows exactly what the real run sends.
    def _deployment_args(self, sha: str, environment: str, description: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {
            "ref": sha, "environment": environment, "description": description[:140], "payload": payload,
            "auto_merge": False, "required_contexts": [], "transient_environment": False,
            "production_environment": environment in ("production", "prod"),
        }  # fmt: skip

    def _status_args(self, state: str, description: str, environment_url: str) -> dict[str, Any]:
        kw: dict[str, object] = {"description": description[:140]}
        if self.settings.run_url:
            kw["target_url"] = self.settings.run_url  # shown as the log URL
        if environment_url:
            kw["environment_url"] = environment_url
        if state == "success":
            kw["auto_inactive"] = True  # GitHub marks the previous deployments inactive
        return kw

    @staticmethod
    def _check_batches(title: str, summary: str, annotations: list[dict[str, Any]]) -> list[dict[str, Any]]:
        batches = [annotations[i : i + MAX_ANNOTATIONS_PER_REQUEST]
                   for i in range(0, len(annotations), MAX_ANNOTATIONS_PER_REQUEST)] or [[]]  # fmt: skip
        return [{"title": title[:255], "summary": summary[:65535], "annotations": b} for b in batches]

    # -- dry-run plans: reads happen (to know what would be edited), writes are only described --
    def plan_comment(self, number: int, body: str, marker: str) -> list[dict[str, object]]:
        issue = self.repo.get_issue(number)
        me = self.identity()
        existing = self._call(
            f"read the comments of PR #{number}", lambda: self._find(issue, marker, me), "pull-requests:read"
        )
        if not existing:
            return [{"method": "POST", "path": self._path("issues", number, "comments"), "body": {"body": body}}]
        reqs: list[dict[str, object]] = [
            {"method": "DELETE", "path": self._path("issues", "comments", d.id)} for d in existing[1:]
        ]
        if existing[0].body != body:
            reqs.append(
                {"method": "PATCH", "path": self._path("issues", "comments", existing[0].id), "body": {"body": body}}
            )
        return reqs

    def plan_check(
        self, sha: str, name: str, conclusion: str, title: str, summary: str,
        annotations: list[dict[str, object]], details_url: str | None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        runs = self._call(
            f"read the check runs of {sha[:8]}",
            lambda: list(self.repo.get_commit(sha).get_check_runs(check_name=name)),
            "checks:read",
        )
        outputs = self._check_batches(title, summary, annotations)
        extra: dict[str, Any] = {"details_url": details_url} if details_url else {}
        body = {"status": "completed", "conclusion": conclusion, "output": outputs[0], **extra}
        if runs:
            path = self._path("check-runs", runs[0].id)
            reqs = [{"method": "PATCH", "path": path, "body": body}]
        else:
            path = self._path("check-runs", "{id}")
            reqs = [
                {"method": "POST", "path": self._path("check-runs"), "body": {"name": name, "head_sha": sha, **body}}
            ]
        reqs += [{"method": "PATCH", "path": path, "body": {"output": o}} for o in outputs[1:]]
        return reqs

    def plan_deployment(
        self, sha: str, environment: str, description: str, payload: dict[str, object], environment_url: str,
        final_description: str,
    ) -> list[dict[str, object]]:  # fmt: skip
        statuses = self._path("deployments", "{id}", "statuses")
        return [
            {"method": "POST", "path": self._path("deployments"),
             "body": self._deployment_args(sha, environment, description, payload)},
            {"method": "POST", "path": statuses,
             "body": {"state": "in_progress", **self._status_args("in_progress", description, "")}},
            {"method": "POST", "path": statuses,
             "body": {"state": "success", **self._status_args("success", final_description, environment_url)}},
        ]  # fmt: skip

    def pr_head_sha(self, number: int) -> str:
        return str(self._call(f"read PR #{number}", lambda: self.repo.get_pull(number).head.sha, "pull-requests:read"))

    # -- sticky comment ----------------------------------------------------------------------
    def _find(self, issue: github.Issue.Issue, marker: str, me: Identity) -> list[github.IssueComment.IssueComment]:
        """Our comments (author is the token's own account) that start with `marker`, oldest
        first. Others' comments carrying the marker are ignored: never edited, never deleted.
        Looks at the first page, then (if there are more) from the last page backwards: a
        sticky comment is created early in a PR's life or, when added to a long PR, near the end."""

        def ours(c: github.IssueComment.IssueComment) -> bool:
            return c.user is not None and c.user.id == me.id and (c.body or "").startswith(marker)

        comments = issue.get_comments()
        first = comments.get_page(0)
        found = [c for c in first if ours(c)]
        if found or len(first) < PER_PAGE:
            return sorted(found, key=lambda c: c.id)
        seen = {c.id for c in first}
        for c in comments.reversed:
            if c.id in seen:
                break  # reached page 1 again
            if ours(c):
                found.append(c)
                break
        return sorted(found, key=lambda c: c.id)

    def upsert_comment(self, number: int, body: str, marker: str) -> CommentResult:
        """One comment of ours per PR per marker: edited in place; our duplicates from concurrent
        jobs are removed (the oldest survives, so every job agrees on which one). Comments by
        anyone else are never touched, whatever they contain."""
        import github

        issue = self.repo.get_issue(number)
        me = self.identity()  # before any write: an unknown author means no write at all

        def op() -> CommentResult:
            existing = self._find(issue, marker, me)
            if not existing:
                created = issue.create_comment(body)
                existing = self._find(issue, marker, me)
                if not existing:  # eventual consistency: trust what we just created
                    return CommentResult(created.id, "created", created.html_url)
                action = "created" if existing[0].id == created.id else "updated"
            else:
                action = "updated"
            keep, extra = existing[0], existing[1:]
            for dup in extra:
                # a concurrent job may have removed it first: the outcome is the same
                with contextlib.suppress(github.UnknownObjectException):
                    dup.delete()
            if keep.body != body:
                keep.edit(body)
            elif action == "updated":
                action = "unchanged"
            return CommentResult(keep.id, action, keep.html_url)

        return self._call(f"update the comment on PR #{number}", op, "pull-requests:write")

    # -- sticky issues (one per marker, e.g. an endpoint's monitor alert) --------------------
    def our_issues(self, prefix: str) -> list[Issue]:
        """Our open issues whose body starts with `prefix`, oldest first: one pass over the open
        issues, 100 a page, as GitHub lists them (pull requests included, told apart by their
        `pull_request` key). Read as plain JSON: PyGithub's Issue fetches each issue again for an
        attribute its list item lacks (`pull_request` on every plain issue). The same ownership
        rule as the sticky comment: an issue written by anyone else is never ours, whatever it
        holds; a closed one is history."""
        me = self.identity()
        requester = self._gh.requester

        def op() -> list[Issue]:
            found: list[Issue] = []
            url: str | None = self._path("issues")
            params: dict[str, Any] | None = {"state": "open", "sort": "created", "direction": "asc",
                                             "per_page": PER_PAGE}  # fmt: skip
            for _ in range(1000):  # 100,000 open issues: no repository has more
                if url is None:
                    break
                headers, data = requester.requestJsonAndCheck("GET", url, parameters=params)
                for item in data if isinstance(data, list) else []:
                    user = item.get("user") if isinstance(item, dict) else None
                    body = (item.get("body") or "").replace("\r\n", "\n")  # the web editor saves CRLF
                    if isinstance(user, dict) and user.get("id") == me.id and "pull_request" not in item \
                            and body.startswith(prefix):  # fmt: skip
                        found.append(Issue(int(item["number"]), body, str(item.get("html_url", ""))))
                url, params = _next_page(headers), None
            return sorted(found, key=lambda i: i.number)

        return self._call("read the open issues", op, "issues:read")

    def create_issue(self, title: str, body: str) -> Issue:
        made = self._call("open an issue", lambda: self.repo.create_issue(title=title, body=body), "issues:write",
                          once=True)  # fmt: skip
        return Issue(made.number, body, made.html_url)

    def edit_issue(self, number: int, **fields: str) -> None:
        """PATCH the issue: its `body`, or `state` and `state_reason` (closed as not planned)."""
        path = self._path("issues", number)
        self._call(f"update issue #{number}", lambda: self._gh.requester.requestJsonAndCheck("PATCH", path,
                   input=fields), "issues:write")  # fmt: skip

    def issue_path(self, number: int | str) -> str:
        return self._path("issues", number)

    # -- dispatching a workflow (retraining) -------------------------------------------------
    def default_branch(self) -> str:
        return str(self._call("read the repository", lambda: self.repo.default_branch, "metadata:read"))

    @staticmethod
    def _dispatch_body(workflow: str | None, event_type: str | None, ref: str, inputs: Mapping[str, str],
                       payload: Mapping[str, object]) -> dict[str, Any]:  # fmt: skip
        if workflow:
            return {"ref": ref, "inputs": dict(inputs)}
        return {"event_type": event_type, "client_payload": dict(payload)}

    def dispatch(self, workflow: str | None, event_type: str | None, ref: str, inputs: Mapping[str, str],
                 payload: Mapping[str, object]) -> str:  # fmt: skip
        """A workflow_dispatch of `workflow` on `ref` (Actions: write), else a repository_dispatch of
        `event_type` (Contents: write; it runs on the default branch). Returns where its runs are."""
        body = self._dispatch_body(workflow, event_type, ref, inputs, payload)
        base = f"{self.settings.server_url}/{self.settings.repository}/actions"
        if workflow:
            self._call(f"dispatch workflow {workflow} on {ref}",
                       lambda: self.repo.get_workflow(workflow).create_dispatch(ref, body["inputs"], throw=True),
                       "actions:write", once=True)  # fmt: skip
            return f"{base}/workflows/{workflow}"
        self._call(f"send the repository_dispatch event {event_type}",
                   # PyGithub's create_repository_dispatch answers False on any refusal: ask the requester,
                   # which raises with the status the retry policy and translate() read
                   lambda: self._gh.requester.requestJsonAndCheck("POST", self._path("dispatches"), input=body),
                   "contents:write", once=True)  # fmt: skip
        return base

    def plan_dispatch(self, workflow: str | None, event_type: str | None, ref: str, inputs: Mapping[str, str],
                      payload: Mapping[str, object]) -> list[dict[str, object]]:  # fmt: skip
        path = self._path("actions", "workflows", workflow, "dispatches") if workflow else self._path("dispatches")
        body = self._dispatch_body(workflow, event_type, ref, inputs, payload)
        return [{"method": "POST", "path": path, "body": body}]

    # -- checks ----------------------------------------------------------------------------
    def publish_check(
        self,
        sha: str,
        name: str,
        conclusion: str,
        title: str,
        summary: str,
        annotations: list[dict[str, object]],
        details_url: str | None,
    ) -> str:
        """Create or update the check run `name` on `sha`; fall back to a commit status when
        the token cannot write checks. Returns "check" or "status"."""

        def op() -> str:
            commit = self.repo.get_commit(sha)
            runs = list(commit.get_check_runs(check_name=name))
            outputs = self._check_batches(title, summary, annotations)
            extra: dict[str, Any] = {"details_url": details_url} if details_url else {}
            if runs:
                run = runs[0]
                run.edit(status="completed", conclusion=conclusion, output=outputs[0], **extra)
            else:
                run = self.repo.create_check_run(
                    name=name, head_sha=sha, status="completed", conclusion=conclusion, output=outputs[0], **extra
                )
            for output in outputs[1:]:
                run.edit(output=output)
            return "check"

        try:
            return self._call(f"publish the check run on {sha[:8]}", op, "checks:write")
        except BadCredentials:
            raise
        except PermissionDenied:
            state = {"success": "success", "neutral": "success", "failure": "failure"}.get(conclusion, "error")

            def status_op() -> str:
                self.repo.get_commit(sha).create_status(
                    state=state,
                    description=title[:140],
                    context=name,
                    **({"target_url": details_url} if details_url else {}),
                )
                return "status"

            return self._call(f"set the commit status on {sha[:8]}", status_op, "statuses:write")

    # -- deployments -----------------------------------------------------------------------
    def start_deployment(
        self, sha: str, environment: str, description: str, payload: dict[str, Any]
    ) -> github.Deployment.Deployment:
        def op() -> github.Deployment.Deployment:
            return self.repo.create_deployment(**self._deployment_args(sha, environment, description, payload))

        dep = self._call(f"create a deployment of {sha[:8]} to {environment}", op, "deployments:write")
        self.deployment_status(dep, "in_progress", description=description)
        return dep

    def deployment_status(
        self, dep: github.Deployment.Deployment, state: str, *, description: str = "", environment_url: str = ""
    ) -> None:
        kw = self._status_args(state, description, environment_url)
        self._call(f"set deployment status {state}", lambda: dep.create_status(state, **kw), "deployments:write")


class GitHubDeploymentRecorder:
    """Mirrors a rollout into a GitHub deployment: in_progress → success | failure. A GitHub
    failure never breaks or reverts the rollout itself; it is reported as a warning."""

    def __init__(self, client: GitHubClient, warn: Callable[[str], None]):
        self.client = client
        self.warn = warn
        self._dep: Any = None

    @staticmethod
    def describe(version: int, tag: str | None, kind: str) -> tuple[str, dict[str, object]]:
        return f"{kind} of v{version}" + (f" ({tag})" if tag else ""), {"version": version, "tag": tag, "kind": kind}

    def plan(self, endpoint: str, version: int, sha: str, tag: str | None, kind: str, url: str, detail: str
             ) -> list[dict[str, object]]:  # fmt: skip
        what, payload = self.describe(version, tag, kind)
        return self.client.plan_deployment(sha, endpoint, what, payload, url, detail)

    def begin(self, endpoint: str, version: int, sha: str, tag: str | None, kind: str) -> None:
        what, payload = self.describe(version, tag, kind)
        try:
            self._dep = self.client.start_deployment(sha, endpoint, what, payload)
        except MlopsCiError as exc:
            self._dep = None
            self.warn(f"GitHub deployment record not created: {exc.message}")

    def end(self, outcome: str, url: str | None, detail: str) -> None:
        if self._dep is None:
            return
        state = "success" if outcome == "succeeded" else "failure"
        try:
            self.client.deployment_status(self._dep, state, description=detail, environment_url=url or "")
        except MlopsCiError as exc:
            self.warn(f"GitHub deployment status not set: {exc.message}")
