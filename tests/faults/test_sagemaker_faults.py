"""SageMaker faults against the fake SageMaker (tests/fakes/sagemaker.py)."""

from __future__ import annotations

import json
import random
import re
import string

import pytest

from mlops_ci.backends.sagemaker_training import job_name
from mlops_ci.config import parse
from mlops_ci.errors import ConfigError
from tests.fakes.sagemaker import FakeSageMaker
from tests.integration.test_sagemaker import Repo, _released, fake, repo, sm_config  # noqa: F401

NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def test_job_names_are_valid_and_distinct_for_any_project_name():
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "._-"
    for _ in range(500):
        project = rng.choice(string.ascii_letters) + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 62)))
        sha = "".join(rng.choice("0123456789abcdef") for _ in range(40))
        digest = "".join(rng.choice("0123456789abcdef") for _ in range(64))
        names = {job_name(project, sha, digest, attempt) for attempt in (1, 2, 10)}
        assert len(names) == 3
        for name in names:
            assert NAME.match(name) and len(name) <= 63, name
            assert sha[:8] in name and digest[:8] in name
        assert job_name(project, sha, digest, 1) == job_name(project, sha, digest, 1)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("strategy: canary, percent: 20, wait_seconds: 60, alarms: [fast-5xx]", "strategy: linear, percent: 20"),
         "only protects anything with CloudWatch alarms"),
        (("max_wait: 7200", "max_wait: 600"), "must be >= training.max_run \\(3600\\)"),
    ],
)  # fmt: skip
def test_unsafe_sagemaker_settings_are_config_errors(change: tuple[str, str], expected: str):
    text = sm_config().replace(*change)
    assert text != sm_config()
    with pytest.raises(ConfigError, match=expected) as exc:
        parse(text, "mlops-ci.yaml", ".")
    assert re.match(r"mlops-ci\.yaml:\d+:\d+: ", exc.value.message)


def test_an_endpoint_already_updating_is_busy_and_left_alone(repo: Repo, fake: FakeSageMaker):  # noqa: F811
    _released(repo, "v1.0.0")
    repo.ok("deploy", "v1.0.0")
    _released(repo, "v1.1.0", quality=0.95)
    fake.sm.endpoints["production"].endpoint_status = "Updating"  # someone else's update in flight
    proc = repo.run("deploy", "v1.1.0")
    assert proc.returncode == 8
    assert "is Updating" in proc.stderr
    assert not fake.calls("UpdateEndpoint")


def test_a_first_endpoint_that_fails_to_start_is_deleted_and_can_be_deployed_again(repo: Repo, fake: FakeSageMaker):  # noqa: F811
    _released(repo, "v1.0.0")
    fake.fail_create = "The primary container for production variant AllTraffic did not pass the ping health check"
    proc = repo.run("deploy", "v1.0.0")
    assert proc.returncode == 7
    last = proc.stderr.strip().splitlines()[-1]
    assert "did not pass the ping health check" in last and "deleted" in last
    assert "production" not in fake.sm.endpoints  # no torn endpoint left behind, nothing billed
    (failed,) = [d for d in json.loads(repo.ok("status", "--json")) if d["name"] == "production"]
    assert failed["health"] == "NotDeployed" and failed["live_version"] is None
    assert repo.run("deploy", "v1.0.0").returncode == 5  # a SHA that failed is not retried by accident
    repo.ok("deploy", "v1.0.0", "--retry-failed")
    assert fake.sm.endpoints["production"].endpoint_status == "InService"
