"""`mlops-ci doctor`: does this repository have what the shipped workflows need?

It reads the repository's settings through the GitHub REST API with the same token as every
other verb (`--token`, MLOPS_CI_GITHUB_TOKEN, GITHUB_TOKEN), the AWS role's trust policy and
the store through boto3 with the credentials of wherever it runs, and Comet with the key in the
environment. Each check ends `ok`, `missing` (with the exact fix: a `gh`/`aws` command with the
real names filled in, and the console path) or `could not check` (with the reason; usually a
token permission, named). Nothing is changed, except one probe object in an S3 store (written
create-once under the store's `locks/` prefix, the only place the least-privilege store policy
lets the role delete, and deleted at once; `--read-only` skips it). docs/doctor.md.

Names and values read from GitHub or AWS (variable values, branch and environment names,
required-check contexts, error messages) are third-party text: rendered with `inline` (one
line, control characters visible) and printed through the CLI's `out`, which under Actions
puts them in their own stop-commands block (mlops_ci/_untrusted.py).
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlparse

from ._untrusted import inline
from .errors import BadCredentials, ConfigError, MlopsCiError, NotFound, PermissionDenied, UsageError
from .kinds import TRACKING
from .report import check_name

if TYPE_CHECKING:  # pragma: no cover
    from .backends.github import GitHubClient
    from .config import Config

OK, MISSING, UNCHECKED = "ok", "missing", "could_not_check"
ENVIRONMENTS = ("staging", "production", "fork-training")
OIDC_HOST = "token.actions.githubusercontent.com"
AUDIENCE = "sts.amazonaws.com"
ROLE_ARN = re.compile(r"^arn:(aws[a-z-]*):iam::(\d{12}):role/(?:[\w+=,.@/-]*/)?([\w+=,.@-]{1,64})\Z")
_REPO = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}\Z")
_REF = re.compile(r"\b(vars|secrets)\.([A-Za-z_][A-Za-z0-9_]*)")
# fork PR approval policies, weakest first (docs.github.com/rest/actions/permissions
# #set-fork-pr-contributor-approval-permissions-for-a-repository: the `approval_policy` enum)
APPROVAL_POLICIES = ("first_time_contributors_new_to_github", "first_time_contributors", "all_external_contributors")

# What the workflows read, and why (tests/integration/test_doctor.py keeps this in step with
# every `vars.X` / `secrets.X` in workflow-templates/, action.yml and actions/*/action.yml).
VARIABLES = {
    "MLOPS_CI_STORE": "the shared run store the jobs use (the `store` check)",
    "MLOPS_CI_AWS_ROLE": "the IAM role the jobs assume through GitHub's OIDC provider",
    "MLOPS_CI_AWS_REGION": "the region of that role's session (configure-aws-credentials needs it)",
    "MLOPS_CI_FORK_REVIEW": "'true' reviews fork PRs against a throw-away store on the runner",
}
SECRETS = {"COMET_API_KEY": "the Comet API key of the mlops-ci steps (tracking.backend: comet)"}

# The permission each read needs, from GitHub's REST docs ("Fine-grained access tokens for ...")
# and src/github-apps/data/fpt-2022-11-28/fine-grained-pat-permissions.json of github/docs.
# GITHUB_TOKEN can be given none of Variables, Secrets or Administration (a workflow's
# `permissions:` has no such keys): run doctor with your own token for those.
NEEDS = {
    "repository": "`Metadata: read` (fine-grained token) or the `repo` scope (classic token) for a private repository",
    "variables": "`Variables: read` (fine-grained token) or the `repo` scope (classic token); GITHUB_TOKEN cannot "
    "be given it",
    "secrets": "`Secrets: read` (fine-grained token) or the `repo` scope (classic token), of an account with "
    "collaborator access; GITHUB_TOKEN cannot be given it",
    "environments": "`Actions: read` (fine-grained token) or the `repo` scope (classic token) for a private repository",
    "environment variables": "`Variables: read` and `Environments: read` (fine-grained token) or the `repo` scope",
    "administration": "`Administration: read` (fine-grained token) or the `repo` scope (classic token); "
    "GITHUB_TOKEN cannot be given it",
    "rules": "`Metadata: read`",
    "fork approval": "the `repo` scope (classic token); GitHub's docs name no fine-grained permission for it "
    "(probably `Administration: read`)",
    # docs.github.com/rest/actions/oidc#get-the-customization-template-for-an-oidc-subject-claim-for-a-repository
    "oidc template": "the `repo` scope (classic token); GitHub's docs name no fine-grained permission for it "
    "(probably `Actions: read`)",
}
# Required reviewers (and wait timers) on a private or internal repository need GitHub Enterprise: on
# Free, Pro and Team plans "other deployment protection rules, such as a wait timer or required
# reviewers, are only available for public repositories"; environments and deployment branches
# there need Pro, Team or Enterprise (the availability note of docs.github.com "Managing environments
# for deployment", data/reusables/gated-features/environments.md of github/docs). go-github's
# repos_environments.go: on a Pro or Team plan's private repository, a PUT of the environment with
# more than `deployment_branch_policy` (reviewers, wait_timer, can_admins_bypass) answers 422.
REVIEWERS_PLAN = ("required reviewers on a private repository need GitHub Enterprise (on Free, Pro and Team they "
                  "are for public repositories only)")  # fmt: skip


@dataclass
class Check:
    id: str
    title: str
    status: str
    detail: str = ""
    fix: list[str] = field(default_factory=list)  # shell lines, real names filled in
    console: str = ""  # the same fix (or, when unchecked, where to look) in the web console

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "status": self.status, "detail": self.detail, "fix": self.fix,
                "console": self.console}  # fmt: skip


@dataclass
class Report:
    repository: str
    default_branch: str | None
    project: str
    store: str
    checks: list[Check]

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks if c.status == status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "repository": self.repository, "default_branch": self.default_branch, "project": self.project,
            "store": self.store, "ok": self.count(MISSING) == 0,
            "summary": {s: self.count(s) for s in (OK, MISSING, UNCHECKED)},
            "checks": [c.to_dict() for c in self.checks],
        }  # fmt: skip


MARKS = {OK: "[ok]     ", MISSING: "[MISSING]", UNCHECKED: "[UNKNOWN]"}
PAD = " " * 10


def render(report: Report) -> str:
    """The checklist as text. Every line goes through `inline`: a value from the API can never
    start a line of its own (a forged `[ok]`, or a workflow command)."""
    head = f"mlops-ci doctor: {report.repository}"
    if report.default_branch:
        head += f" (default branch {report.default_branch})"
    lines = [head + f", project {report.project}, store {report.store}", ""]
    for c in report.checks:
        word = "could not check: " if c.status == UNCHECKED else ""
        lines.append(f"{MARKS[c.status]} {c.title}" + (f": {word}{c.detail}" if c.detail else ""))
        for i, line in enumerate(line for cmd in c.fix for line in cmd.split("\n")):
            lines.append(PAD + ("fix: " if i == 0 else "     ") + line)
        if c.console:
            lines.append(PAD + ("or in the console: " if c.fix else "console: ") + c.console)
    lines += ["", f"{report.count(MISSING)} missing, {report.count(UNCHECKED)} could not be checked, "
                  f"{report.count(OK)} ok"]  # fmt: skip
    return "\n".join(inline(line) for line in lines)


# -- what the workflows need ----------------------------------------------------------------
def referenced_names(texts: Iterable[str]) -> tuple[set[str], set[str]]:
    """(variables, secrets) referenced as `vars.X` / `secrets.X` in workflow or action text."""
    found: dict[str, set[str]] = {"vars": set(), "secrets": set()}
    for text in texts:
        for kind, name in _REF.findall(text):
            found[kind].add(name)
    return found["vars"], found["secrets"]


def shipped_names() -> tuple[set[str], set[str]]:
    """The names the workflows `mlops-ci init` writes reference (read from this package's copy)."""
    from .scaffold import WORKFLOWS, template

    return referenced_names(template(f"workflows/{name}") for name in WORKFLOWS)


def aws_reasons(cfg: Config, store: str) -> list[str]:
    """Why the jobs need AWS credentials (empty: they do not)."""
    why = cfg.on_aws()
    if store.startswith("s3://"):
        why.append(f"the store is {store}")
    if cfg.gate.signing_key:
        why.append("gate.signing_key is a KMS key")
    return why


def repository_from_remote(start: Path, server_url: str) -> str | None:
    """OWNER/NAME of the `origin` remote when it is on `server_url`'s host."""
    try:
        url = subprocess.run(["git", "-C", str(start), "remote", "get-url", "origin"], capture_output=True,
                             text=True, check=False, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    host = urlparse(server_url).hostname or "github.com"
    m = re.match(r"^(?:[\w.+-]+@)?([\w.-]+):(?!//)(.+)$", url)  # scp-like: git@github.com:owner/repo.git
    if m:
        found_host, path = m.group(1), m.group(2)
    else:
        u = urlparse(url)
        found_host, path = u.hostname or "", u.path
    if found_host.lower() != host.lower():
        return None
    name = path.strip("/").removesuffix(".git")
    return name if _REPO.match(name) else None


def server_url(env: Mapping[str, str], api_url: str) -> str:
    """The web address of the GitHub the API belongs to: GITHUB_SERVER_URL (Actions always sets
    it, as GitHubSettings reads it), else derived from the API URL: api.github.com is github.com,
    `https://HOST/api/v3` (GitHub Enterprise Server) is `https://HOST`, `api.X` (GHE.com) is `X`."""
    from .ci import detect

    given = detect(env).server
    if given:
        return given
    u = urlparse(api_url)
    host = u.netloc or "api.github.com"
    if host.lower() == "api.github.com":
        return "https://github.com"
    if u.path.rstrip("/").endswith("/api/v3"):
        return f"{u.scheme}://{host}{u.path.rstrip('/').removesuffix('/api/v3')}"
    if host.lower().startswith("api."):
        return f"{u.scheme}://{host[4:]}"
    return f"{u.scheme}://{host}"


def _ref_regex(pattern: str) -> str:
    """Ruby's `File.fnmatch(pattern, ref, File::FNM_PATHNAME)` as a regular expression, the
    matching GitHub documents for deployment branch and tag policies ("Wildcard characters will
    not match `/`. For example, to match branches that begin with `release/` and contain an
    additional single slash, use `release/*/*`", with a link to Ruby's File.fnmatch;
    docs.github.com/rest/deployments/branch-policies). `*` and `?` stay within one `/`-separated
    part, a `**/` that starts a part matches any number of whole parts (dir.c `fnmatch`), `[...]`
    is a character class (`!` or `^` negates; an unclosed one matches nothing, as in dir.c
    `bracket`), `\\` escapes, and braces are literal (no FNM_EXTGLOB). FNM_DOTMATCH would make no
    difference: git refuses a ref whose parts start with `.`."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*" and pattern.startswith("**/", i) and (i == 0 or pattern[i - 1] == "/"):
            out.append("(?:[^/]*/)*")
            i += 3
        elif c == "*":
            while i < n and pattern[i] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif c == "[":
            j = i + 1
            negate = j < n and pattern[j] in "!^"
            j += negate
            items: list[str] = []
            while j < n and pattern[j] != "]":
                lo = pattern[j + 1] if pattern[j] == "\\" and j + 1 < n else pattern[j]
                j += 2 if pattern[j] == "\\" and j + 1 < n else 1
                if j + 1 < n and pattern[j] == "-" and pattern[j + 1] != "]":
                    hi = pattern[j + 2] if pattern[j + 1] == "\\" and j + 2 < n else pattern[j + 1]
                    j += 3 if pattern[j + 1] == "\\" and j + 2 < n else 2
                    if lo <= hi:  # a reversed range matches nothing
                        items.append(f"{re.escape(lo)}-{re.escape(hi)}")
                else:
                    items.append(re.escape(lo))
            if j >= n:  # unclosed: nothing matches
                return "(?!)"
            body = "".join(items)
            out.append(f"[^/{body}]" if negate else f"[{body}]" if body else "(?!)")
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def ref_matches(pattern: str, ref: str) -> bool:
    """Whether a deployment branch or tag policy's name pattern admits the branch or tag `ref`."""
    return re.fullmatch(_ref_regex(pattern), ref, re.DOTALL) is not None


# -- reading GitHub -------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """What GitHub answered: the data, or a 4xx other than 401 and rate limits (those follow
    the client's retry policy: a bad token stops doctor, limits are waited out)."""

    status: int
    data: Any = None
    headers: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status < 300

    @property
    def message(self) -> str:
        return str(self.data.get("message") or "") if isinstance(self.data, dict) else ""

    def reason(self, need: str) -> str:
        """Why a read failed, naming the permission it needs."""
        if self.status == 0:
            return self.message
        text = f"GitHub answered {self.status}" + (f" ({self.message})" if self.message else "")
        if self.status in (403, 404):
            text += f"; the token needs {NEEDS[need]}"
            accepted = next((str(v) for k, v in self.headers.items() if k.lower() == "x-accepted-github-permissions"),
                            "")  # fmt: skip
            if accepted:
                text += f" (GitHub accepts: {accepted})"
        return text


class GitHubReader:
    def __init__(self, client: GitHubClient):
        self.client = client
        self.requester = client.repo.requester

    def call(self, what: str, fn: Callable[[], Any]) -> Answer:
        import github

        retry = self.client.retry

        def op() -> Answer:
            try:
                return Answer(200, fn())
            except github.GithubException as exc:
                if exc.status == 401 or retry.wait_for(exc, 0) is not None:
                    raise  # a bad token stops everything; limits and 5xx: the retry policy decides
                return Answer(exc.status, exc.data, dict(exc.headers or {}))

        try:
            result: Answer = retry.call(what, op, permission="metadata:read",
                                        repository=self.client.settings.repository)  # fmt: skip
        except BadCredentials:
            raise  # no check can be made with a token GitHub rejects
        except MlopsCiError as exc:  # waited out its retries, or no answer at all
            return Answer(0, {"message": exc.message})
        return result

    def get(self, what: str, path: str) -> Answer:
        return self.call(what, lambda: self.requester.requestJsonAndCheck("GET", path)[1])

    def names(self, what: str, kind: Any, path: str, key: str) -> Answer:
        """A paginated list of named things ({total_count, <key>: [...]}) as {name: value}."""
        from github.PaginatedList import PaginatedList

        def fetch() -> dict[str, str]:
            items = PaginatedList(kind, self.requester, path, None, list_item=key)
            return {str(i.name): str(getattr(i, "value", "") or "") for i in items}  # secrets have no value

        return self.call(what, fetch)


# -- the checks ------------------------------------------------------------------------------
class Doctor:
    def __init__(self, cfg: Config, file_store: str, env: Mapping[str, str], client: GitHubClient, *,
                 read_only: bool = False, store: tuple[str, str] | None = None,
                 server: str | None = None, file_source: str = "mlops-ci.yaml",
                 start: Path | None = None):  # fmt: skip
        """`file_store`: the store the jobs use when the repository variable MLOPS_CI_STORE is not
        set (mlops-ci.yaml's, else the workflows' default, `file_source` says which); `store`:
        (URL, where from) when `--store` or MLOPS_CI_STORE names the store to check; `server`: the
        web address of this GitHub (for console paths); `start`: the clone doctor runs in."""
        self.cfg, self.file_store, self.env, self.client = cfg, file_store, env, client
        self.file_source, self.start = file_source, start or Path()
        self.gh = GitHubReader(client)
        self.read_only = read_only
        self.store_override = store
        self.checks: list[Check] = []
        self.repo = str(client.settings.repository)
        web = urlparse(server or client.settings.server_url)
        self.web = f"{web.netloc}{web.path.rstrip('/')}/{self.repo}" if web.netloc else f"github.com/{self.repo}"
        self.check_name = check_name(cfg.project)
        self.variables: dict[str, str] | None = None  # repository + organization variables, None: unreadable
        self.variables_problem = ""
        self.full_name, self.default_branch, self.private = self.repo, "", False
        self.store = file_store
        self.aws_why: list[str] = []
        self.env_roles: dict[str, str | None] = {}  # environment → its own MLOPS_CI_AWS_ROLE
        self.env_role_problems: dict[str, str] = {}  # environment → why its variables could not be read
        self.environments: dict[str, Any] | None = None

    def add(self, id: str, title: str, status: str, detail: str = "", fix: list[str] | None = None,
            console: str = "") -> None:  # fmt: skip
        self.checks.append(Check(id, title, status, detail, fix or [], console))

    def run(self) -> Report:
        repo = self.client.repo
        info = self.gh.call("read the repository", lambda: (repo.full_name, repo.default_branch, repo.private))
        if not info.ok:
            if info.status == 404:
                raise NotFound(f"GitHub has no repository {self.repo}, or the token cannot see it; "
                               f"{info.reason('repository')}")  # fmt: skip
            raise PermissionDenied(f"could not read the repository {self.repo}: {info.reason('repository')}")
        self.full_name, self.default_branch, self.private = (str(info.data[0]), str(info.data[1]), bool(info.data[2]))
        self._variables()
        self.store = self._ci_store()
        self.aws_why = aws_reasons(self.cfg, self.store)
        self._names()
        self._environments()
        self._required_check()
        self._workflow_permissions()
        self._fork_approval()
        self._oidc()
        self._store()
        self._store_in_doubt()
        self._comet()
        return Report(self.full_name, self.default_branch, self.cfg.project, self.store, self.checks)

    # -- variables and secrets ------------------------------------------------------------
    def _listing(self, what: str, kind: str, need: str) -> tuple[dict[str, str] | None, str]:
        from github.Secret import Secret
        from github.Variable import Variable

        cls = Variable if kind == "variables" else Secret
        base = f"/repos/{self.repo}/actions"
        own = self.gh.names(f"list the repository's {what}", cls, f"{base}/{kind}", kind)
        if not own.ok:
            return None, own.reason(need)
        found = dict(own.data)
        org = self.gh.names(f"list the organization {what} shared with the repository", cls,
                            f"{base}/organization-{kind}", kind)  # fmt: skip
        if org.ok:  # a repository's own value wins over the organization's
            found = {**org.data, **found}
        return found, ""

    def _variables(self) -> None:
        self.variables, self.variables_problem = self._listing("variables", "variables", "variables")

    def _var(self, name: str) -> str | None:
        return (self.variables or {}).get(name) or None

    def _ci_store(self) -> str:
        if self.store_override:
            return self.store_override[0]
        return self._var("MLOPS_CI_STORE") or self.file_store

    def _store_source(self) -> str:
        if self.store_override:
            return self.store_override[1]
        return "repository variable MLOPS_CI_STORE" if self._var("MLOPS_CI_STORE") else self.file_source

    def _names(self) -> None:
        names, _ = shipped_names()
        for name in sorted(names - {"MLOPS_CI_STORE"}):  # the store variable is the `store` check's
            required, why = self._variable_needed(name)
            title = f"variable {name}"
            if self.variables is None:  # set or not, needed or not (the store may be the variable's): unknown
                self.add(f"variable:{name}", title, UNCHECKED, self.variables_problem,
                         console=self._console_variables())  # fmt: skip
                continue
            value = self._var(name)
            if value:
                self.add(f"variable:{name}", title, OK, "set")
            elif required:
                self.add(f"variable:{name}", title, MISSING, f"not set; needed because {why}",
                         [self._set_variable(name)], self._console_variables())  # fmt: skip
            else:
                self.add(f"variable:{name}", title, OK, f"not set ({why})")
        _, secret_names = shipped_names()
        tracker = self.cfg.tracking.kind
        needs = {name: name in tracker.secrets for name in secret_names}
        secrets, problem = self._listing("secrets", "secrets", "secrets") if any(needs.values()) else ({}, "")
        for name in sorted(secret_names):
            needed = needs[name]
            title = f"secret {name}"
            if not needed:
                users = " or ".join(k.name for k in TRACKING.values() if name in k.secrets)
                self.add(f"secret:{name}", title, OK, f"not needed (tracking.backend is not {users})")
            elif secrets is None:
                self.add(f"secret:{name}", title, UNCHECKED, problem, console=self._console_secrets())
            elif name in secrets:
                self.add(f"secret:{name}", title, OK, "set (its value is never read)")
            else:
                never = "never put it on the command line"
                fix = f"gh secret set {name} --repo {self.repo}   # prompts for the value: {never}"
                why = f"not set; needed because tracking.backend is {tracker.name}"
                self.add(f"secret:{name}", title, MISSING, why, [fix], self._console_secrets())

    def _variable_needed(self, name: str) -> tuple[bool, str]:
        if name in ("MLOPS_CI_AWS_ROLE", "MLOPS_CI_AWS_REGION"):
            if self.aws_why:
                return True, "; ".join(self.aws_why)
            return False, "optional: nothing is on AWS"
        if name == "MLOPS_CI_FORK_REVIEW":
            return False, "optional: " + VARIABLES[name]
        return False, "optional: " + VARIABLES.get(name, "not known to doctor")

    def _set_variable(self, name: str) -> str:
        value = {
            "MLOPS_CI_AWS_ROLE": "arn:aws:iam::ACCOUNT_ID:role/ROLE_NAME",
            "MLOPS_CI_AWS_REGION": self.cfg.aws.region or self.env.get("AWS_REGION") or "REGION",
            "MLOPS_CI_STORE": f"s3://{self.cfg.aws.bucket}/{self.cfg.aws.prefix}-store"
            if self.cfg.aws.bucket
            else "git",  # no AWS: the repository's own refs
        }.get(name, "VALUE")
        return f"gh variable set {name} --repo {self.repo} --body {shlex.quote(value)}"

    def _console_variables(self) -> str:
        return f"{self.web} → Settings → Secrets and variables → Actions → Variables"

    def _console_secrets(self) -> str:
        return f"{self.web} → Settings → Secrets and variables → Actions → Secrets"

    # -- environments ---------------------------------------------------------------------
    def _fork_training_used(self) -> bool:
        """mlops-ci-fork-train.yml runs only with MLOPS_CI_AWS_ROLE set, and trains on SageMaker only."""
        return self.cfg.training.kind.remote

    def _environments(self) -> None:
        listed = self.gh.call("list the environments", lambda: list(self.client.repo.get_environments()))
        if listed.ok:
            self.environments = {str(e.name): e for e in listed.data}
        for name in ENVIRONMENTS:
            title = f"environment {name}"
            if name == "fork-training" and not self._fork_training_used():
                self.add(f"environment:{name}", title, OK, "not needed: forks are trained only on SageMaker "
                         "(training.backend is local)")  # fmt: skip
                continue
            console = f"{self.web} → Settings → Environments → {name}"
            if self.environments is None:
                self.add(f"environment:{name}", title, UNCHECKED, listed.reason("environments"), console=console)
                continue
            e = self.environments.get(name)
            if e is None:
                reviewers = name != "staging"  # optional there (docs/sagemaker.md asks them for production)
                fix = self._env_fix(name, None, add_reviewer=reviewers and not self.private, to_custom=True,
                                    post=(self.default_branch, "branch") if name == "fork-training" else ("v*", "tag"),
                                    maybe_reviewer=reviewers and self.private)  # fmt: skip
                detail = "does not exist (a job that names it creates it unprotected)"
                if reviewers and self.private:
                    detail += f"; {REVIEWERS_PLAN}"
                self.add(f"environment:{name}", title, MISSING, detail, fix, self._env_console(name))
                continue
            self._read_env_role(name, e)
            self._environment(name, e)

    def _read_env_role(self, name: str, e: Any) -> None:
        got = self.gh.call(f"list the variables of environment {name}",
                           lambda: {str(v.name): str(v.value) for v in e.get_variables()})  # fmt: skip
        if got.ok:
            self.env_roles[name] = got.data.get("MLOPS_CI_AWS_ROLE")
        else:
            self.env_role_problems[name] = got.reason("environment variables")

    def _environment(self, name: str, e: Any) -> None:
        rules = list(e.protection_rules or [])
        reviewers = sum(len(r.reviewers or []) for r in rules if r.type == "required_reviewers")
        policy = e.deployment_branch_policy
        patterns: list[tuple[str, str]] = []  # (pattern, branch | tag)
        ids: list[Any] = []  # each pattern's policy id
        problems: list[str] = []
        notes: list[str] = []  # worth knowing, not a miss
        to_custom = False  # the policy must become a custom one
        post: tuple[str, str] | None = None  # the deployment rule to add
        delete: list[Any] = []  # the ids of the rules to delete
        if policy is not None and policy.custom_branch_policies:
            path = f"/repos/{self.repo}/environments/{quote(name, safe='')}/deployment-branch-policies"
            got = self.gh.get(f"list the deployment branch policies of {name}", path + "?per_page=100")
            if not got.ok:
                self.add(f"environment:{name}", f"environment {name}", UNCHECKED, got.reason("environments"),
                         console=self._env_console(name))  # fmt: skip
                return
            found = [p for p in (got.data or {}).get("branch_policies", []) if isinstance(p, dict)]
            patterns = [(str(p.get("name", "")), str(p.get("type") or "branch")) for p in found]
            ids = [p.get("id") for p in found]
        # required reviewers: production, and fork-training (a fork's commit would be trained unseen)
        lacks_reviewers = reviewers == 0 and name != "staging"
        if name == "fork-training":
            # pull_request_target runs on the base branch: a policy must let the default branch deploy
            if lacks_reviewers and not self.private:
                problems.append("no required reviewers: a fork's commit would be trained without approval")
            if patterns and not any(t == "branch" and ref_matches(p, self.default_branch) for p, t in patterns):
                problems.append(f"its deployment branches ({_patterns(patterns)}) exclude {self.default_branch}, "
                                "the branch the fork-training job runs on")  # fmt: skip
                post = (self.default_branch, "branch")
        else:
            sample = "v1.2.3-rc1" if name == "staging" else "v1.2.3"
            if lacks_reviewers and not self.private:
                problems.append("no required reviewers")
            branches = [(p, i) for (p, t), i in zip(patterns, ids, strict=True) if t == "branch"]
            if policy is None:
                problems.append("any branch or tag may deploy (no deployment branch and tag policy)")
                to_custom, post = True, ("v*", "tag")
            elif policy.protected_branches:
                problems.append("deployment limited to protected branches, not to the v* release tags")
                to_custom, post = True, ("v*", "tag")
            elif not any(t == "tag" and ref_matches(p, sample) for p, t in patterns):
                problems.append(f"no tag rule admits release tags like {sample} ({_patterns(patterns) or 'none'})")
                post = ("v*", "tag")
            if branches:
                # the release workflow deploys from v* tags only; a branch rule is a miss only where
                # docs/threat-model.md needs tag-only: with gate.signing_key a signature must *be* the
                # release job, and a branch job in these environments could assume the signing role
                allowed = ", ".join(f"branch {p}" for p, _ in branches)
                if self.cfg.gate.signing_key:
                    problems.append(f"branches may deploy too ({allowed}): with gate.signing_key only the release "
                                    "tags' jobs may reach the signing role (docs/threat-model.md)")  # fmt: skip
                    delete = [i for _, i in branches]
                elif not problems:  # beside a miss it is noise
                    notes.append(f"note: branches may deploy too ({allowed}); the release workflow deploys only "
                                 "from v* tags (docs/threat-model.md asks for tags only; a miss with "
                                 "gate.signing_key)")  # fmt: skip
        maybe = lacks_reviewers and self.private  # reviewers the plan may not offer
        if maybe:
            why = "a fork's commit would be trained without approval" if name == "fork-training" else \
                "nobody approves a release"  # fmt: skip
            notes.insert(0, f"no required reviewers ({why}), and whether this repository's plan offers them is "
                            f"unknown: {REVIEWERS_PLAN}")  # fmt: skip
        title = f"environment {name}"
        fix = self._env_fix(name, e, add_reviewer=lacks_reviewers and not self.private, to_custom=to_custom,
                            post=post, delete=delete, maybe_reviewer=maybe)  # fmt: skip
        if problems:
            self.add(f"environment:{name}", title, MISSING, "; ".join(problems + notes), fix, self._env_console(name))
        elif maybe:
            self.add(f"environment:{name}", title, UNCHECKED, "; ".join(notes), fix, self._env_console(name))
        else:
            what = f"{reviewers} required reviewer(s)" if reviewers else "no required reviewers"
            limit = f", deployments from {_patterns(patterns)}" if patterns else ""
            self.add(f"environment:{name}", title, OK, "; ".join([what + limit, *notes]))

    def _env_fix(
        self,
        name: str,
        e: Any,
        *,
        add_reviewer: bool,
        to_custom: bool,
        post: tuple[str, str] | None,
        delete: list[Any] | None = None,
        maybe_reviewer: bool = False,
    ) -> list[str]:
        """Only what is missing. A PUT only when reviewers (you, via `gh api user`; put a team's id
        instead if you like) or the kind of deployment policy must change, and then with every
        setting the environment has (its reviewers, wait timer, self-review rule, and admins' bypass
        when it is off): GitHub's docs do not say what a PUT leaves out, so it leaves out nothing it
        can keep; a private repository without Enterprise takes only the deployment policy, and gets
        only that, as it has no reviewers to keep. Then the missing rule (the release
        tags for staging and production, the default branch for fork-training) and the DELETE of
        each branch rule that must go. With `maybe_reviewer`, a PUT that adds reviewers, for the
        plans that offer them (a private repository's)."""
        api = f"repos/{self.repo}/environments/{name}"
        rules = list(e.protection_rules or []) if e is not None else []
        body: dict[str, Any] = {}
        policy = e.deployment_branch_policy if e is not None else None
        if to_custom or e is None:
            body["deployment_branch_policy"] = {"protected_branches": False, "custom_branch_policies": True}
        else:
            body["deployment_branch_policy"] = None if policy is None else {
                "protected_branches": bool(policy.protected_branches),
                "custom_branch_policies": bool(policy.custom_branch_policies)}  # fmt: skip
        wait = next((r.wait_timer for r in rules if r.type == "wait_timer" and r.wait_timer), None)
        if wait:
            body["wait_timer"] = wait
        if e is not None and _fields(e).get("can_admins_bypass") is False:  # left out, it is true again
            body["can_admins_bypass"] = False  # (go-github: "the default value for CanAdminsBypass is true")
        kept: list[dict[str, Any]] = []
        for r in rules:
            if r.type != "required_reviewers":
                continue
            if r.prevent_self_review is not None:  # only when the server has it (older GHES refuse the key)
                body["prevent_self_review"] = bool(r.prevent_self_review)
            kept += [{"type": str(x.type), "id": int(x.reviewer.id)} for x in r.reviewers or []]
        if kept:
            body["reviewers"] = kept
        lines: list[str] = []

        def put(with_me: bool) -> str:
            if not with_me:
                return f"gh api -X PUT {api} --input - <<'EOF'\n{json.dumps(body)}\nEOF"
            text = json.dumps({**body, "reviewers": "@ME@"})  # an unquoted heredoc expands the $(...)
            text = text.replace('"@ME@"', '[{"type": "User", "id": $(gh api user --jq .id)}]')
            return f"gh api -X PUT {api} --input - <<EOF\n{text}\nEOF"

        if e is None or add_reviewer or to_custom:
            if e is not None:
                lines.append("# the PUT repeats the environment's current settings: it sets them all anew")
            lines.append(put(add_reviewer))
        if post is not None:
            ref, kind = post
            lines.append(f"gh api -X POST {api}/deployment-branch-policies -f name={shlex.quote(ref)} -f type={kind}")
        for policy_id in delete or []:
            if isinstance(policy_id, int):
                lines.append(f"gh api -X DELETE {api}/deployment-branch-policies/{policy_id}")
        if maybe_reviewer:
            lines += ["# only if the plan offers required reviewers on a private repository (GitHub Enterprise):",
                      put(True)]  # fmt: skip
        return lines

    def _env_console(self, name: str) -> str:
        where = f"{self.web} → Settings → Environments → {name}"
        plan = " (on a private repository: GitHub Enterprise only)" if self.private else ""
        if name == "fork-training":
            return (f"{where}: Required reviewers (maintainers){plan}; Deployment branches and tags → Selected → "
                    f"branch {self.default_branch}")  # fmt: skip
        people = "" if name == "staging" else f"Required reviewers{plan}; "
        return f"{where}: {people}Deployment branches and tags → Selected → tag rule v*"

    # -- branch protection / rulesets -------------------------------------------------------
    def _required_check(self) -> None:
        branch = self.default_branch
        title = f"required check '{self.check_name}' on {branch}"
        b = quote(branch, safe="")
        found: list[str] = []
        unknown: list[str] = []
        rules = self.gh.get(f"read the rules of {branch}", f"/repos/{self.repo}/rules/branches/{b}?per_page=100")
        if rules.ok:
            for rule in rules.data or []:
                if isinstance(rule, dict) and rule.get("type") == "required_status_checks":
                    checks = (rule.get("parameters") or {}).get("required_status_checks") or []
                    found += [str(c.get("context")) for c in checks if isinstance(c, dict)]
        elif rules.status != 404:  # older GitHub Enterprise servers have no rulesets
            unknown.append("rulesets: " + rules.reason("rules"))
        repo = self.client.repo

        def protection() -> Any:
            checks = repo.get_branch(branch).get_protection().required_status_checks
            if checks is None:
                return []
            return list(checks.contexts or []) + [str(c.context) for c in (checks.checks or [])]

        prot = self.gh.call(f"read the branch protection of {branch}", protection)
        if prot.ok:
            found += prot.data
        elif prot.message != "Branch not protected":  # go-github repos.go: githubBranchNotProtected
            unknown.append("branch protection: " + prot.reason("administration"))
        required = sorted(set(found))
        console = (f"{self.web} → Settings → Rules → Rulesets → New branch ruleset → Target: default "
                   f"branch → Require status checks to pass → add '{self.check_name}'")  # fmt: skip
        if self.check_name in required:
            self.add("required-check", title, OK, "required")
        elif unknown:
            self.add("required-check", title, UNCHECKED, "; ".join(unknown), console=console)
        else:
            ruleset = {
                "name": "mlops-ci gate", "target": "branch", "enforcement": "active",
                "conditions": {"ref_name": {"include": ["~DEFAULT_BRANCH"], "exclude": []}},
                "rules": [{"type": "required_status_checks", "parameters": {
                    "strict_required_status_checks_policy": False,
                    "required_status_checks": [{"context": self.check_name}]}}],
            }  # fmt: skip
            now = f"required now: {', '.join(required)}" if required else "no required checks"
            self.add("required-check", title, MISSING, f"not required ({now}): a failed gate would not block "
                     "the merge", [f"gh api -X POST repos/{self.repo}/rulesets --input - <<'EOF'\n"
                                   f"{json.dumps(ruleset)}\nEOF"], console)  # fmt: skip

    # -- Actions settings -----------------------------------------------------------------
    def _workflow_permissions(self) -> None:
        title = "workflow token default"
        console = (f"{self.web} → Settings → Actions → General → Workflow permissions → Read "
                   "repository contents and packages permissions")  # fmt: skip
        got = self.gh.get("read the default workflow permissions", f"/repos/{self.repo}/actions/permissions/workflow")
        if not got.ok:
            self.add("workflow-permissions", title, UNCHECKED, got.reason("administration"), console=console)
            return
        default = str((got.data or {}).get("default_workflow_permissions"))
        if default == "read":
            self.add("workflow-permissions", title, OK, "read (each mlops-ci job asks for what it needs)")
        else:
            self.add("workflow-permissions", title, MISSING,
                     f"{default}: every workflow without `permissions:` gets a token that can write",
                     [f"gh api -X PUT repos/{self.repo}/actions/permissions/workflow "
                      "-f default_workflow_permissions=read"], console)  # fmt: skip

    def _fork_approval(self) -> None:
        title = "fork PR approval"
        console = (f"{self.web} → Settings → Actions → General → Approval for running fork pull "
                   "request workflows from contributors")  # fmt: skip
        fork_review = self._var("MLOPS_CI_FORK_REVIEW") == "true"
        want = "all_external_contributors" if fork_review else "first_time_contributors"
        if self.private:
            self.add("fork-approval", title, UNCHECKED, "a private repository's forks follow another setting "
                     "(fork pull request workflows in private repositories)", console=console)  # fmt: skip
            return
        path = f"/repos/{self.repo}/actions/permissions/fork-pr-contributor-approval"
        got = self.gh.get("read the fork PR approval policy", path)
        if not got.ok:
            self.add("fork-approval", title, UNCHECKED, got.reason("fork approval"), console=console)
            return
        policy = str((got.data or {}).get("approval_policy"))
        rank = APPROVAL_POLICIES.index(policy) if policy in APPROVAL_POLICIES else -1
        if rank >= APPROVAL_POLICIES.index(want):
            self.add("fork-approval", title, OK, policy)
            return
        if self.variables is None and rank >= 0:  # enough, unless MLOPS_CI_FORK_REVIEW (unreadable) is 'true'
            self.add("fork-approval", title, UNCHECKED, f"{policy}: enough unless MLOPS_CI_FORK_REVIEW is 'true' (a "
                     "fork's training script then runs on the runner: want all_external_contributors), and the "
                     f"variables could not be read ({self.variables_problem})", console=console)  # fmt: skip
            return
        why = ("MLOPS_CI_FORK_REVIEW is 'true': a fork's training script runs on the runner"
               if fork_review else "fork PRs must not run workflows unseen")  # fmt: skip
        self.add("fork-approval", title, MISSING, f"{policy}; want at least {want} ({why})",
                 [f"gh api -X PUT repos/{self.repo}/actions/permissions/fork-pr-contributor-approval "
                  f"-f approval_policy={want}"], console)  # fmt: skip

    # -- AWS ------------------------------------------------------------------------------
    def _boto(self, service: str) -> Any:
        import boto3
        from botocore.config import Config as BotoConfig

        region = self.env.get("AWS_REGION") or self._var("MLOPS_CI_AWS_REGION") or self.cfg.aws.region
        return boto3.client(service, region_name=region or None, config=BotoConfig(retries={"mode": "standard"}))

    def _oidc(self) -> None:
        if self.variables is None:  # whether a job assumes a role, and which, is the variable's
            self.add("oidc", "AWS OIDC trust", UNCHECKED, "the role is the repository variable MLOPS_CI_AWS_ROLE: "
                     + self.variables_problem)  # fmt: skip
            return
        repo_role = self._var("MLOPS_CI_AWS_ROLE")
        if not self.aws_why and not repo_role:
            self.add("oidc", "AWS OIDC trust", OK, "not needed: nothing is on AWS")
            return
        # who presents which OIDC subject (GitHub's default `sub` claim): a job that names an
        # environment presents environment:NAME and assumes that environment's MLOPS_CI_AWS_ROLE if
        # it has one (an environment variable overrides the repository's), docs/sagemaker.md
        wanted: dict[str, list[str]] = {}
        where: dict[str, str] = {}

        def need(role: str | None, subject: str, source: str) -> None:
            if role:
                wanted.setdefault(role, []).append(subject)
                where.setdefault(role, source)

        envs = ["staging", "production"] + (["fork-training"] if self._fork_training_used() else [])
        ready: list[tuple[str, str | None]] = []  # (environment, its own role)
        for e in envs:
            problem = self.env_role_problems.get(e)
            if problem is None and self.environments is None:
                problem = "the environments could not be listed"
            if problem is not None:  # which role the job assumes is unknown: its own, or the repository's
                self.add(f"oidc:environment:{e}", f"AWS OIDC trust of environment {e}", UNCHECKED,
                         f"its own MLOPS_CI_AWS_ROLE could not be read: {problem}")  # fmt: skip
                continue
            ready.append((e, self.env_roles.get(e)))
        if not repo_role and not any(own for _, own in ready):
            self.add("oidc", "AWS OIDC trust", OK, "no role to check yet (variable MLOPS_CI_AWS_ROLE, above)")
            return
        prefix, unknown = self._subject_prefix()
        need(repo_role, f"{prefix}:ref:refs/heads/{self.default_branch}", "MLOPS_CI_AWS_ROLE")
        need(repo_role, f"{prefix}:ref:refs/heads/feature/any-branch", "MLOPS_CI_AWS_ROLE")
        need(repo_role, f"{prefix}:pull_request", "MLOPS_CI_AWS_ROLE")
        for e, own in ready:
            need(own or repo_role, f"{prefix}:environment:{e}",
                 f"environment {e}'s MLOPS_CI_AWS_ROLE" if own else "MLOPS_CI_AWS_ROLE")  # fmt: skip
        for role, subjects in wanted.items():
            self._trust(role, subjects, where[role], unknown)

    def _subject_prefix(self) -> tuple[str, str]:
        """(what the jobs' OIDC subjects start with, "") or ("", why that is unknown), from the
        repository's subject template (docs.github.com/rest/actions/oidc#get-the-customization-
        template-for-an-oidc-subject-claim-for-a-repository): `use_default` false with
        `include_claim_keys` is a custom template, without them the organization's; GitHub now
        also answers `sub_claim_prefix`, the prefix its tokens use (with immutable owner and
        repository ids, `repo:OWNER@ID/NAME@ID`, for repositories that use immutable subjects:
        github.blog/changelog/2026-04-23-immutable-subject-claims-for-github-actions-oidc-tokens)."""
        default = f"repo:{self.full_name}"
        got = self.gh.get("read the OIDC subject template", f"/repos/{self.repo}/actions/oidc/customization/sub")
        if got.status == 404:  # a server without subject templates (an older GitHub Enterprise Server)
            return default, ""
        if not got.ok:
            return "", f"the repository's OIDC subject template could not be read: {got.reason('oidc template')}"
        data = got.data if isinstance(got.data, dict) else {}
        yours = "; check the role's trust policy against its jobs' subjects yourself (docs.github.com: OpenID Connect"
        if data.get("use_default") is False:
            keys = [str(k) for k in data.get("include_claim_keys") or []]
            if keys:
                return "", (
                    f"the repository's OIDC subject template is custom (include_claim_keys: {', '.join(keys)}), "
                    f"not GitHub's default that doctor checks{yours} reference, customizing the subject claims)"
                )
            return "", (
                "the repository uses its organization's OIDC subject template (use_default false, no "
                f"include_claim_keys: GET /orgs/OWNER/actions/oidc/customization/sub){yours} reference)"
            )
        prefix = data.get("sub_claim_prefix")
        if isinstance(prefix, str) and prefix:
            return prefix, ""
        if data.get("use_immutable_subject"):
            return "", (
                f"the repository uses immutable subjects and GitHub did not say their prefix "
                f"(sub_claim_prefix){yours} reference, immutable subject claims)"
            )
        return default, ""

    def _trust(self, role: str, subjects: list[str], source: str, unknown: str = "") -> None:
        m = ROLE_ARN.match(role)
        title = f"AWS OIDC trust of {source}"
        if not m:
            self.add(f"oidc:{source}", title, MISSING, f"{role!r} is not an IAM role ARN",
                     [self._set_variable("MLOPS_CI_AWS_ROLE")], self._console_variables())  # fmt: skip
            return
        partition, account, name = m.groups()
        title = f"AWS OIDC trust of role {name} ({source})"
        if unknown:  # no default-format verdict, and no fix that could replace a working policy
            self.add(f"oidc:{name}", title, UNCHECKED, unknown, console=_iam_console(name))
            return
        envs = [e for e in ("staging", "production") if any(s.endswith(f":environment:{e}") for s in subjects)]
        deploy_role: list[str] = []
        if source == "MLOPS_CI_AWS_ROLE" and envs:  # docs/sagemaker.md: the release job gets its own role
            deploy_role = ["# or, as docs/sagemaker.md recommends, a deploy role for the release environments:"] + [
                f"gh variable set MLOPS_CI_AWS_ROLE --env {e} --repo {self.repo} --body "
                f"arn:{partition}:iam::{account}:role/DEPLOY_ROLE"
                for e in envs
            ]
        try:
            iam = self._boto("iam")
            doc = iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"]
        except Exception as exc:  # noqa: BLE001 - classified below
            code = _aws_code(exc)
            if code == "NoSuchEntity":
                self.add(f"oidc:{name}", title, MISSING, f"no role {name} in account {account}",
                         _trust_fix(partition, account, name, subjects, None) + deploy_role,
                         _iam_console(name))  # fmt: skip
            else:
                self.add(f"oidc:{name}", title, UNCHECKED, f"iam:GetRole on {role}: {_aws_problem(exc)}",
                         console=_iam_console(name))  # fmt: skip
            return
        if isinstance(doc, str):  # botocore decodes it; an unusual client may not
            from urllib.parse import unquote

            doc = json.loads(unquote(doc))
        verdict = trust_verdict(doc, subjects)
        if verdict.problems:
            self.add(f"oidc:{name}", title, MISSING, "; ".join(verdict.problems),
                     _trust_fix(partition, account, name, subjects, doc, verdict) + deploy_role,
                     _iam_console(name))  # fmt: skip
            return
        provider = verdict.provider
        try:
            got = self._boto("iam").get_open_id_connect_provider(OpenIDConnectProviderArn=provider)
        except Exception as exc:  # noqa: BLE001 - classified below
            if _aws_code(exc) == "NoSuchEntity":
                self.add(f"oidc:{name}", title, MISSING, f"the trusted OIDC provider {provider} does not exist",
                         [f"aws iam create-open-id-connect-provider --url https://{OIDC_HOST} "
                          f"--client-id-list {AUDIENCE}"],
                         "AWS console → IAM → Identity providers → Add provider → OpenID Connect → "
                         f"https://{OIDC_HOST}, audience {AUDIENCE}")  # fmt: skip
            else:
                self.add(f"oidc:{name}", title, OK, f"trusts {', '.join(subjects)} (the provider could not be "
                         f"read: {_aws_problem(exc)})")  # fmt: skip
            return
        if AUDIENCE not in (got.get("ClientIDList") or []):
            self.add(f"oidc:{name}", title, MISSING, f"the OIDC provider does not list the audience {AUDIENCE}",
                     [f"aws iam add-client-id-to-open-id-connect-provider --open-id-connect-provider-arn "
                      f"{provider} --client-id {AUDIENCE}"], _iam_console(name))  # fmt: skip
            return
        self.add(f"oidc:{name}", title, OK, f"trusts {', '.join(subjects)}")

    # -- the store ------------------------------------------------------------------------
    def _store(self) -> None:
        store = self.store
        title = f"store ({self._store_source()})"
        from .config import is_shared_store

        if self._store_source() == "repository variable MLOPS_CI_STORE" and not is_shared_store(store):
            self.add("store", title, MISSING, f"MLOPS_CI_STORE is {store}, not a shared store (git, or "
                     "s3://bucket/prefix)", [self._set_variable("MLOPS_CI_STORE")],
                     self._console_variables())  # fmt: skip
            return
        if is_shared_store(store) and not store.startswith("s3://"):
            self._git_store(store, title)
            return
        if not store.startswith("s3://"):
            self.add("store", title, MISSING, f"{store} is a file on the runner: every CI job runs on a fresh machine "
                     "and would start empty, so train/report/gate/promote/deploy refuse it under Actions",
                     [self._set_variable("MLOPS_CI_STORE")], self._console_variables())  # fmt: skip
            return
        from .backends.s3_store import S3Location

        try:
            loc = S3Location.parse(store)
        except ConfigError as exc:
            self.add("store", title, MISSING, exc.message, [self._set_variable("MLOPS_CI_STORE")],
                     self._console_variables())  # fmt: skip
            return
        root = "/".join(p for p in (loc.prefix, "projects", self.cfg.project) if p)
        who = ""
        step = f"list s3://{loc.bucket}/{root}/"
        try:
            s3 = self._boto("s3")
            with contextlib.suppress(Exception):  # only names who was checked
                who = str(self._boto("sts").get_caller_identity()["Arn"])
            s3.list_objects_v2(Bucket=loc.bucket, Prefix=root + "/", MaxKeys=1)
            if not self.read_only:
                # the only place the least-privilege store policy lets the role delete is locks/
                key = f"{root}/locks/mlops-ci-doctor-{uuid.uuid4().hex}.json"
                extra = {"ServerSideEncryption": loc.sse} if loc.sse else {}
                if loc.kms_key_id:
                    extra["SSEKMSKeyId"] = loc.kms_key_id
                step = f"write s3://{loc.bucket}/{key}"
                s3.put_object(Bucket=loc.bucket, Key=key, Body=b"{}", IfNoneMatch="*",
                              ContentType="application/json", **extra)  # fmt: skip
                step = f"delete s3://{loc.bucket}/{key}"
                s3.delete_object(Bucket=loc.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001 - classified below
            self._store_problem(exc, title, step, loc.bucket, who)
            return
        as_who = f" as {who}" if who else ""
        if self.read_only:
            self.add("store", title, OK, f"{store} is readable{as_who} (--read-only: writing not checked)")
        else:
            self.add("store", title, OK, f"{store} is readable and writable{as_who}")

    def _git_store(self, store: str, title: str) -> None:
        """The refs are read with `git ls-remote` from this clone, with its credentials; the jobs
        push them with their own token (the starter workflows grant `contents: write`)."""
        from .backends.git_store import GitLocation, GitStore, repository_of

        try:
            gs = GitStore(GitLocation.parse(store), self.cfg.project, repository_of(self.start), self.env)
            found = gs.remote_refs()
        except ConfigError as exc:
            self.add("store", title, MISSING, exc.message)
            return
        except MlopsCiError as exc:
            self.add("store", title, UNCHECKED, f"could not read the store's refs: {exc.message}")
            return
        ns = gs.loc.namespace
        artifacts = sum(1 for r in found if r.startswith(f"{ns}/artifacts/"))
        what = (f"{gs.ref} and {artifacts} artifact ref(s) on {gs.loc.remote}" if gs.ref in found else
                f"no records on {gs.loc.remote} yet (the first job that writes creates {gs.ref})")  # fmt: skip
        detail = (f"{store}: this repository's refs; {what}; the jobs push them with their token "
                  "(`permissions: contents: write`, as the starter workflows grant)")  # fmt: skip
        # mlops-ci-fork-train.yml keeps `contents: read` (it checks out a fork's code) and has no
        # git default: its store is the variable, else mlops-ci.yaml's, and it must be S3 (docs/store.md)
        fork_store = self._var("MLOPS_CI_STORE") or (self.file_store if self.file_source == "mlops-ci.yaml" else "")
        if self._fork_training_used() and not fork_store.startswith("s3://"):
            self.add("store", title, MISSING, detail + "; but mlops-ci-fork-train.yml (SageMaker training of fork "
                     "pull requests) cannot push it and needs the repository variable MLOPS_CI_STORE: an S3 store",
                     [self._set_variable("MLOPS_CI_STORE")], self._console_variables())  # fmt: skip
            return
        self.add("store", title, OK, detail)

    def _store_in_doubt(self) -> None:
        """When the store checked may not be the one the jobs use, say so: mlops-ci.yaml's store is
        theirs only if the repository variable MLOPS_CI_STORE (unreadable here) is not set; a
        --store / $MLOPS_CI_STORE that differs from theirs is checked as asked, with a note."""
        check = next((c for c in self.checks if c.id == "store"), None)
        if check is None:
            return
        if self.store_override is None and self.variables is None:
            found = f"; {check.detail}" if check.detail else ""
            check.status, check.fix = UNCHECKED, []
            check.detail = (f"the jobs use the repository variable MLOPS_CI_STORE when it is set, and it could not be "
                            f"read ({self.variables_problem}); run doctor with --store or $MLOPS_CI_STORE set to it, "
                            f"or with a token that can read variables. mlops-ci.yaml's store, which they use "
                            f"otherwise{found}")  # fmt: skip
            check.console = self._console_variables()
        elif self.store_override is not None and self.variables is not None:
            theirs = self._var("MLOPS_CI_STORE") or self.file_store
            if theirs != self.store_override[0]:
                whence = "the repository variable MLOPS_CI_STORE" if self._var("MLOPS_CI_STORE") else "mlops-ci.yaml"
                check.detail += f" (note: the workflows use {theirs}, from {whence}, not this store)"

    def _store_problem(self, exc: Exception, title: str, step: str, bucket: str, who: str) -> None:
        code = _aws_code(exc)
        if code == "NoSuchBucket":
            region = self._var("MLOPS_CI_AWS_REGION") or self.cfg.aws.region or "REGION"
            where = "" if region == "us-east-1" else f" --create-bucket-configuration LocationConstraint={region}"
            self.add(
                "store",
                title,
                MISSING,
                f"the bucket {bucket} does not exist",
                [f"aws s3api create-bucket --bucket {bucket} --region {region}{where}"],
                "AWS console → S3 → Create bucket (block all public access, versioning on: docs/store.md)",
            )
            return
        m = ROLE_ARN.match(self._var("MLOPS_CI_AWS_ROLE") or "")
        ci_role = m.group(3) if m and who and f":assumed-role/{m.group(3)}/" in who else None
        detail = f"could not {step}{f' as {who}' if who else ''}: {_aws_problem(exc)}"
        if code in ("AccessDenied", "403", "AllAccessDisabled") and ci_role:
            self.add("store", title, MISSING, detail + "; the CI role needs s3:ListBucket, s3:GetObject, s3:PutObject "
                     "on the prefix and s3:DeleteObject on its locks/ (docs/store.md)",
                     console=f"AWS console → IAM → Roles → {ci_role} → Add permissions (docs/store.md)")  # fmt: skip
        elif code in ("AccessDenied", "403", "AllAccessDisabled"):
            self.add("store", title, UNCHECKED, detail + " (these credentials are not the CI role's: run doctor in a "
                     "workflow step after configure-aws-credentials to check the role itself)")  # fmt: skip
        else:
            self.add("store", title, UNCHECKED, detail)

    # -- Comet ----------------------------------------------------------------------------
    def _comet(self) -> None:
        t = self.cfg.tracking
        if "COMET_API_KEY" not in t.kind.secrets:  # the Comet key; a tracker of its own checks its own
            return
        title = f"Comet key (workspace {t.workspace})"
        if t.api_key_env != "COMET_API_KEY":
            self.add("comet", title, MISSING, f"tracking.api_key_env is {t.api_key_env}, but the workflows pass only "
                     "COMET_API_KEY (from secrets.COMET_API_KEY)",
                     ["# in mlops-ci.yaml: drop tracking.api_key_env (default COMET_API_KEY)"])  # fmt: skip
            return
        if not self.env.get(t.api_key_env):
            self.add("comet", title, UNCHECKED, f"the key is a GitHub secret and no API returns its value; set "
                     f"${t.api_key_env} here to check the key you stored")  # fmt: skip
            return
        try:
            from .backends.comet import Comet

            project = Comet(self.cfg, self.env).api(need_project=False)
        except BadCredentials:
            self.add("comet", title, MISSING, f"Comet rejected the key in ${t.api_key_env}",
                     [f"gh secret set COMET_API_KEY --repo {self.repo}   # paste a valid key when asked"],
                     "comet.com → Account settings → API keys")  # fmt: skip
            return
        except ImportError:
            self.add("comet", title, UNCHECKED, "comet_ml is not installed here: pip install 'mlops-ci[comet]'")
            return
        except MlopsCiError as exc:
            self.add("comet", title, UNCHECKED, exc.message)
            return
        name = t.project_name or self.cfg.project
        self.add("comet", title, OK, "the key is valid" + ("" if project is not None else
                 f" (Comet has no project {name} yet: the first run creates it)"))  # fmt: skip


def _fields(obj: Any) -> dict[str, Any]:
    """The fields GitHub sent for a PyGithub object, without another request (the object's own
    `raw_data` first completes a lazy object with a GET)."""
    from github.GithubObject import GithubObject

    data = GithubObject.raw_data.fget(obj)  # type: ignore[attr-defined]  # the base getter: no request
    return data if isinstance(data, dict) else {}


def _patterns(patterns: list[tuple[str, str]]) -> str:
    return ", ".join(f"{t} {p}" for p, t in patterns)


def _generalise(subject: str) -> str:
    return re.sub(r":ref:refs/heads/.*$", ":ref:refs/heads/*", subject)


def _iam_console(name: str) -> str:
    return f"AWS console → IAM → Roles → {name} → Trust relationships → Edit trust policy"


def _aws_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _aws_problem(exc: Exception) -> str:
    if isinstance(exc, ModuleNotFoundError):
        return f"{exc.name} is not installed here: pip install 'mlops-ci[s3]'"
    if type(exc).__name__ == "NoCredentialsError":  # botocore's
        return "no AWS credentials here (aws configure, AWS_PROFILE, or a workflow step after the credentials step)"
    code = _aws_code(exc)
    message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", "")) or str(exc)
    return f"{code}: {message}" if code else f"{type(exc).__name__}: {message}"


# -- the trust policy -------------------------------------------------------------------------
@dataclass
class TrustVerdict:
    provider: str = ""
    problems: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # the subjects no statement admits
    open_statements: list[int] = field(default_factory=list)  # GitHub statements without a `sub` condition


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _like(pattern: str, value: str) -> bool:
    """IAM StringLike: `*` any run of characters (`:` and `/` too), `?` one; case-sensitive."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, re.DOTALL) is not None


_SUB_OPS = {
    "stringequals": lambda p, v: p == v, "foranyvalue:stringequals": lambda p, v: p == v,
    "stringequalsignorecase": lambda p, v: p.lower() == v.lower(),
    "stringlike": _like, "foranyvalue:stringlike": _like,
}  # fmt: skip


def trust_verdict(doc: Any, subjects: list[str]) -> TrustVerdict:
    """Whether the trust policy lets GitHub's OIDC tokens with each of `subjects` assume the role,
    and only tokens of this repository: a GitHub statement without a `sub` condition admits
    every repository on GitHub."""
    verdict = TrustVerdict()
    admitted: set[str] = set()
    github_statements = 0
    for index, st in enumerate(_as_list((doc or {}).get("Statement"))):
        if not isinstance(st, dict) or st.get("Effect") != "Allow":
            continue
        actions = [str(a) for a in _as_list(st.get("Action", []))]
        if not any(a in ("sts:AssumeRoleWithWebIdentity", "sts:*", "*") for a in actions):
            continue
        principal = st.get("Principal") or {}
        federated = [str(f) for f in _as_list(principal.get("Federated", []) if isinstance(principal, dict) else [])]
        provider = next((f for f in federated if f.endswith(f":oidc-provider/{OIDC_HOST}")), None)
        if provider is None:
            continue
        github_statements += 1
        verdict.provider = verdict.provider or provider
        conditions = st.get("Condition") or {}
        subs: list[tuple[str, list[str]]] = []
        aud_ok = True
        for op, keys in conditions.items() if isinstance(conditions, dict) else []:
            for key, value in (keys or {}).items() if isinstance(keys, dict) else []:
                values = [str(v) for v in _as_list(value)]
                if key.lower() == f"{OIDC_HOST}:sub":
                    subs.append((op.lower(), values))
                elif key.lower() == f"{OIDC_HOST}:aud" and op.lower() in _SUB_OPS:
                    aud_ok = aud_ok and any(_SUB_OPS[op.lower()](v, AUDIENCE) for v in values)
        if not subs:
            verdict.open_statements.append(index)
            verdict.problems.append("a statement trusting GitHub has no `sub` condition: every repository on GitHub "
                                    "could assume the role")  # fmt: skip
            continue
        if not aud_ok:
            continue
        for subject in subjects:
            if all(op in _SUB_OPS and any(_SUB_OPS[op](v, subject) for v in values) for op, values in subs):
                admitted.add(subject)
    if github_statements == 0:
        verdict.problems.append(f"the trust policy has no statement for GitHub's OIDC provider ({OIDC_HOST}) "
                                "with sts:AssumeRoleWithWebIdentity")  # fmt: skip
    verdict.refused = [s for s in subjects if s not in admitted]
    if verdict.refused and github_statements:
        verdict.problems.append("does not admit " + ", ".join(verdict.refused))
    return verdict


def _trust_fix(partition: str, account: str, name: str, subjects: list[str], current: Any,
               verdict: TrustVerdict | None = None) -> list[str]:  # fmt: skip
    """The trust policy to set, whole: the role's own (`current`) with one statement added for the
    subjects it refuses, and without the GitHub statements that have no `sub` condition; every
    other statement kept (update-assume-role-policy replaces the whole policy). No role yet: a
    new one trusting `subjects` (docs/iam/*-trust.json are the templates)."""
    refused = verdict.refused if verdict is not None else subjects
    statement = {
        "Effect": "Allow",
        "Principal": {"Federated": f"arn:{partition}:iam::{account}:oidc-provider/{OIDC_HOST}"},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {f"{OIDC_HOST}:aud": AUDIENCE},
                      "StringLike": {f"{OIDC_HOST}:sub": sorted({_generalise(s) for s in refused})}},
    }  # fmt: skip
    if current is None:
        doc: dict[str, Any] = {"Version": "2012-10-17", "Statement": [statement]}
        return [
            "# a new role trusting this repository's jobs (docs/iam/*-trust.json are the templates; it needs "
            "its permissions too: docs/iam/*-policy.json)",
            f"cat > trust.json <<'EOF'\n{json.dumps(doc, indent=2)}\nEOF",
            f"aws iam create-role --role-name {name} --assume-role-policy-document file://trust.json",
        ]
    dropped = set(verdict.open_statements) if verdict is not None else set()
    kept = [st for i, st in enumerate(_as_list(current.get("Statement"))) if i not in dropped]
    doc = {**current, "Statement": kept + ([statement] if refused else [])}
    what = ["a statement admitting this repository's jobs added"] if refused else []
    if dropped:
        what.append(f"{len(dropped)} statement(s) trusting GitHub without a `sub` condition dropped")
    return [
        f"# the role's whole trust policy, with {' and '.join(what)}; its other statements are kept "
        "(update-assume-role-policy replaces the whole policy)",
        f"cat > trust.json <<'EOF'\n{json.dumps(doc, indent=2)}\nEOF",
        f"aws iam update-assume-role-policy --role-name {name} --policy-document file://trust.json",
    ]


# -- entry point -----------------------------------------------------------------------------
def _say(msg: str) -> None:
    """A retry announcement (it may hold GitHub's message): one line, on stderr."""
    print(inline(msg), file=sys.stderr, flush=True)


def doctor(start: Path, env: Mapping[str, str], *, config_path: str | None, token: str | None,
           repository: str | None, read_only: bool = False, store: str | None = None,
           say: Callable[[str], None] | None = None) -> Report:  # fmt: skip
    """`store`: the global `--store`. The store checked is the one the jobs use: `--store`, else
    $MLOPS_CI_STORE (in a workflow step, the job's own: the starter workflows set it from
    vars.MLOPS_CI_STORE), else the repository variable MLOPS_CI_STORE, else mlops-ci.yaml's."""
    from dataclasses import replace

    from . import config as config_mod
    from .backends.github import GitHubClient, GitHubSettings, RetryPolicy

    cfg = config_mod.load(start, env, config_path=config_path, store=store)
    source = cfg.sources.get("store", "")
    override: tuple[str, str] | None = None
    if source in ("flag", "env MLOPS_CI_STORE"):
        override = (cfg.store, "--store" if source == "flag" else "$MLOPS_CI_STORE")
    # without the repository variable, the jobs use mlops-ci.yaml's store, else the starter
    # workflows' MLOPS_CI_DEFAULT_STORE (git)
    jobs_env = {**{k: v for k, v in env.items() if k != "MLOPS_CI_STORE"}, "MLOPS_CI_DEFAULT_STORE": "git"}
    jobs_cfg = config_mod.load(start, jobs_env, config_path=config_path)
    file_store = jobs_cfg.store
    file_source = "mlops-ci.yaml" if jobs_cfg.sources.get("store") == "file" else "the workflows' default"
    settings = GitHubSettings.from_env(env, token)
    server = server_url(env, settings.api_url)
    repo = repository or settings.repository or repository_from_remote(start, server)
    if not repo:
        raise UsageError("which repository? pass --repo OWNER/NAME (or set GITHUB_REPOSITORY; doctor also reads the "
                         "`origin` remote)")  # fmt: skip
    if not _REPO.match(repo):
        raise UsageError(f"--repo must be OWNER/NAME, got {repo!r}")
    client = GitHubClient(replace(settings, repository=repo, server_url=server),
                          retry=RetryPolicy(say=say or _say))  # fmt: skip
    return Doctor(cfg, file_store, env, client, read_only=read_only, store=override, server=server,
                  file_source=file_source, start=start).run()  # fmt: skip
