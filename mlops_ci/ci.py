"""The CI service this process runs under, read from its environment in one place.

Every `GITHUB_*` and `RUNNER_*` variable mlops-ci reads is read here (tests/unit/test_architecture.py
checks that no other module does). Today the one provider is GitHub Actions; another (GitLab
CI, Buildkite) is a second branch of `detect` that fills the same fields from its own variables
(docs/architecture.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# What a signature records of the job that made it (integrity.Signer): enough to tell the
# repository, the workflow and the run that signed.
IDENTITY = (
    "GITHUB_REPOSITORY",
    "GITHUB_WORKFLOW_REF",
    "GITHUB_REF",
    "GITHUB_RUN_ID",
    "GITHUB_RUN_ATTEMPT",
    "GITHUB_SHA",
)


@dataclass(frozen=True)
class CI:
    """What the environment says of the CI job (all None outside one)."""

    provider: str | None  # "github-actions", or None: a developer's machine
    repository: str | None = None  # owner/name
    server: str | None = None  # GITHUB_SERVER_URL as given (GitHub Enterprise: its own)
    api: str | None = None
    run_id: str | None = None
    run_attempt: str | None = None
    ref: str = ""  # refs/heads/main, refs/tags/v1.2.0, refs/pull/7/merge
    ref_type: str | None = None  # branch | tag
    sha: str | None = None
    base_ref: str | None = None  # a pull request's base branch
    event_name: str | None = None
    event_path: str | None = None  # the webhook payload of the event, as a JSON file
    runner_environment: str | None = None  # github-hosted | self-hosted
    step_summary: str | None = None  # a file whose markdown the run's page shows
    output: str | None = None  # the file a step writes its outputs to
    token: str | None = None  # the forge token the job was given (MLOPS_CI_GITHUB_TOKEN first)
    identity: tuple[tuple[str, str], ...] = ()  # IDENTITY's values, under Actions

    @property
    def actions(self) -> bool:
        """Under GitHub Actions."""
        return self.provider == "github-actions"

    @property
    def server_url(self) -> str:
        return self.server or "https://github.com"

    @property
    def api_url(self) -> str:
        return self.api or "https://api.github.com"

    @property
    def tag_job(self) -> bool:
        """The job of a pushed tag (act may set GITHUB_REF without GITHUB_REF_TYPE)."""
        return self.ref_type == "tag" or self.ref.startswith("refs/tags/")

    @property
    def run_url(self) -> str | None:
        """The workflow run's page, when the job is one."""
        if not (self.repository and self.run_id):
            return None
        return f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}"


def detect(env: Mapping[str, str] | None = None) -> CI:
    e = os.environ if env is None else env

    def get(name: str) -> str | None:
        return e.get(name) or None

    actions = e.get("GITHUB_ACTIONS") == "true"
    return CI(
        provider="github-actions" if actions else None,
        repository=get("GITHUB_REPOSITORY"),
        server=(get("GITHUB_SERVER_URL") or "").rstrip("/") or None,
        api=(get("GITHUB_API_URL") or "").rstrip("/") or None,
        run_id=get("GITHUB_RUN_ID"),
        run_attempt=get("GITHUB_RUN_ATTEMPT"),
        ref=e.get("GITHUB_REF", ""),
        ref_type=get("GITHUB_REF_TYPE"),
        sha=get("GITHUB_SHA"),
        base_ref=get("GITHUB_BASE_REF"),
        event_name=get("GITHUB_EVENT_NAME"),
        event_path=get("GITHUB_EVENT_PATH"),
        runner_environment=get("RUNNER_ENVIRONMENT"),
        step_summary=get("GITHUB_STEP_SUMMARY"),
        output=get("GITHUB_OUTPUT"),
        token=get("MLOPS_CI_GITHUB_TOKEN") or get("GITHUB_TOKEN"),
        identity=tuple((k, e[k]) for k in IDENTITY if e.get(k)) if actions else (),
    )


# Variables a training job must not inherit from the runner: the forge token of the job.
FORGE_SECRETS = ("GITHUB_TOKEN", "MLOPS_CI_GITHUB_TOKEN")
