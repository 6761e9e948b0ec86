"""The forge side of a review: the sticky PR comment and the check run."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import Refused
from ..records import Verdict
from ..workspace import Workspace, quiet


class Publisher:
    """Publishes one workspace's reviews."""

    def __init__(self, ws: Workspace):
        self.ws = ws

    def post_report(self, markdown: str, pr: int | None) -> Any:
        """Upsert the sticky PR comment. A token that may not comment (fork PRs get a read-only
        token) degrades to a warning: the report is still in the step summary."""
        from ..errors import BadCredentials, PermissionDenied, UsageError
        from ..report import marker

        number = pr or self.ws.ctx.pr_number
        if number is None:
            raise UsageError("--post needs a pull request: run on a pull_request event or pass --pr NUMBER")
        try:
            gh, mark = self.ws.github(), marker(self.ws.project)
            return self.ws.fx.each(
                "github",
                "request",
                lambda: gh.upsert_comment(number, markdown, mark),
                lambda: gh.plan_comment(number, markdown, mark),
            )
        except BadCredentials:
            raise
        except PermissionDenied as exc:
            self.ws.warn(f"{exc.message}. The report was not posted; it is in the job's step summary instead.")
            return None

    def publish_verdict(self, verdict: Verdict) -> str | None:
        """The gate as a check run named after the project (or a commit status as fallback)."""
        from ..errors import BadCredentials, PermissionDenied
        from ..report import check_name, render_check

        title, summary = render_check(self.ws.project, verdict)
        if not verdict.results:
            conclusion = "neutral"
        else:
            conclusion = "success" if verdict.passed else "failure"
        path = self.ws.config_path_in_repo()
        annotations = [
            {
                "path": path, "start_line": r.line, "end_line": r.line,
                "annotation_level": "failure" if r.severity == "fail" else "warning",
                "title": f"gate rule failed: {r.rule}"[:255], "message": r.reason[:1000],
            }
            for r in verdict.results
            if not r.passed and not r.skipped and r.line
        ]  # fmt: skip
        try:
            client = self.ws.github()
            check = (verdict.sha, check_name(self.ws.project), conclusion, title, summary, annotations,
                     client.settings.run_url)  # fmt: skip
            done = self.ws.fx.each(
                "github", "request", lambda: client.publish_check(*check), lambda: client.plan_check(*check)
            )
            return None if done is None else str(done)
        except BadCredentials:
            raise
        except PermissionDenied as exc:
            self.ws.warn(f"{exc.message}. The verdict was not published to GitHub.")
            return None


def publish_report_artifact(
    env: Mapping[str, str],
    path: Path,
    *,
    token: str | None,
    pr: int | None,
    expected_head_sha: str | None,
    say: Callable[[str], None] = quiet,
) -> Any:
    """Second stage of the fork-safe pattern: post a report artifact from an unprivileged run.
    The artifact is validated as data and re-rendered; its PR number must name a PR whose head
    is the commit the run built (passed by the privileged workflow from its own event)."""
    from ..artifact import load_report
    from ..backends.github import GitHubClient, GitHubSettings, RetryPolicy
    from ..errors import UsageError
    from ..report import marker, render_markdown

    if not expected_head_sha or not re.fullmatch(r"[0-9a-f]{40}", expected_head_sha):
        raise UsageError(
            "pass the SHA the unprivileged run built: --expect-head-sha or MLOPS_CI_EXPECTED_HEAD_SHA "
            "(in the workflow: github.event.workflow_run.head_sha, through env:)"
        )
    comparison, results, passed, ctx = load_report(path)
    number = pr or ctx["pr"]
    if number is None:
        raise Refused("the report artifact names no pull request; pass --pr")
    if comparison.head.sha != expected_head_sha:
        raise Refused(
            f"the report is about {comparison.head.sha[:8]}, but the run built {expected_head_sha[:8]}; refusing it"
        )
    client = GitHubClient(GitHubSettings.from_env(env, token), retry=RetryPolicy(say=say))
    head = client.pr_head_sha(number)
    if head != expected_head_sha:
        raise Refused(
            f"PR #{number} has head {head[:8]}, not {expected_head_sha[:8]} (the commit the run built); "
            "refusing to post a report to another pull request"
        )
    # the commits link to this repository; the run that made the report is not known here (the
    # artifact's own word on it is not trusted), so there is no workflow-run link
    repo = f"{client.settings.server_url}/{client.settings.repository}"
    md = render_markdown(comparison, results, passed, head_ref=ctx["head_ref"], base_ref=ctx["base_ref"], repo_url=repo)
    return client.upsert_comment(number, md, marker(comparison.project))
