"""mlops_ci/ci.py: what the environment says of the CI job."""

from __future__ import annotations

from mlops_ci.ci import detect

ACTIONS = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_REPOSITORY": "acme/models",
    "GITHUB_RUN_ID": "42",
    "GITHUB_RUN_ATTEMPT": "2",
    "GITHUB_REF": "refs/tags/v1.2.0",
    "GITHUB_SHA": "a" * 40,
    "GITHUB_SERVER_URL": "https://ghe.example.com/",
    "GITHUB_TOKEN": "ghs_job",
}


def test_outside_ci_nothing_is_claimed():
    job = detect({"GITHUB_REPOSITORY": "acme/models", "GITHUB_RUN_ID": "42", "GITHUB_REF": "refs/tags/v1"})
    assert not job.actions
    assert job.identity == ()  # a signature made outside Actions names no workflow run
    assert job.server_url == "https://github.com" and job.api_url == "https://api.github.com"
    assert job.run_url == "https://github.com/acme/models/actions/runs/42"  # what the variables say


def test_under_actions():
    job = detect(ACTIONS)
    assert job.actions and job.tag_job
    assert job.server == "https://ghe.example.com" and job.server_url == "https://ghe.example.com"
    assert job.run_url == "https://ghe.example.com/acme/models/actions/runs/42"
    assert dict(job.identity) == {
        "GITHUB_REPOSITORY": "acme/models",
        "GITHUB_REF": "refs/tags/v1.2.0",
        "GITHUB_RUN_ID": "42",
        "GITHUB_RUN_ATTEMPT": "2",
        "GITHUB_SHA": "a" * 40,
    }
    assert job.token == "ghs_job"
    assert detect({**ACTIONS, "MLOPS_CI_GITHUB_TOKEN": "ghp_mine"}).token == "ghp_mine"


def test_a_tag_job_is_known_by_its_ref_type_or_its_ref():
    assert detect({"GITHUB_ACTIONS": "true", "GITHUB_REF_TYPE": "tag"}).tag_job
    assert detect({"GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/tags/v1"}).tag_job  # act sets no REF_TYPE
    assert not detect({"GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/heads/tags/v1"}).tag_job
    assert not detect({"GITHUB_ACTIONS": "true", "GITHUB_REF_TYPE": "branch", "GITHUB_REF": "refs/heads/main"}).tag_job


def test_empty_variables_are_unset():
    job = detect({"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "", "GITHUB_RUN_ID": "", "GITHUB_SERVER_URL": ""})
    assert job.repository is None and job.run_url is None and job.server is None
