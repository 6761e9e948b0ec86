"""The contract every endpoint backend keeps (docs/architecture.md, "One rollout"), run against
each one: local model server processes, and SageMaker through the fake (moto, extended). The
rollout sequence is one (verbs/rollout.py); what each backend must give it is the same outcome:
a deploy serves the version and records it, a second deploy of it does nothing, a failed check
leaves the old version serving, a rollback serves the previous version again, and a dry run
writes nothing and plans the steps the deploy then takes, in its order."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import Project
from tests.integration.test_deploy import release
from tests.integration.test_sagemaker import Repo, _released, fake, repo  # noqa: F401  (the SageMaker fixtures)


@dataclass
class Side:
    """One endpoint backend as the contract drives it."""

    name: str
    cli: Callable[..., tuple[int, str, str]]
    release: Callable[[str, int], None]  # tag, the version it becomes (1, 2, …)
    break_smoke: Callable[[int], None]  # the version's smoke requests fail from now on
    writes: Callable[[], list[str]]  # the backend's own writes so far, by name, in order

    def ok(self, *args: str) -> str:
        code, out, err = self.cli(*args)
        assert code == 0, f"{args} exited {code}: {err}"
        return out

    def deploy(self, tag: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.ok("deploy", tag, "--json"))
        return out

    def live(self) -> tuple[int | None, str]:
        row = next(r for r in json.loads(self.ok("status", "--json")) if r["name"] == "production")
        return row["live_version"], row["health"]

    def plan(self, tag: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.ok("deploy", tag, "--dry-run", "--json"))
        return doc


def _local(request: pytest.FixtureRequest) -> Side:
    project: Project = request.getfixturevalue("project")
    smoke_fails: set[int] = set()

    def rel(tag: str, version: int) -> None:
        # each version answers differently ([[1, 2]] -> 3 x version); a broken one's smoke
        # request expects what it never answers
        release(
            project, tag, scale=float(version), smoke_expect="never in an answer" if version in smoke_fails else "["
        )

    def local_writes() -> list[str]:
        home = project.path / ".mlops-ci" / "endpoints" / "production"
        started = sorted(p.name for p in (home / "versions").iterdir()) if (home / "versions").is_dir() else []
        return [f"start model server {s}" for s in started]

    return Side("local", project.cli, rel, smoke_fails.add, local_writes)


def _sagemaker(request: pytest.FixtureRequest) -> Side:
    sm = request.getfixturevalue("fake")
    r: Repo = request.getfixturevalue("repo")

    def cli(*args: str) -> tuple[int, str, str]:
        proc = r.run(*args)
        return proc.returncode, proc.stdout, proc.stderr

    def rel(tag: str, version: int) -> None:
        if version == 1:
            _released(r, tag)
        else:  # another commit and config: another model version
            _released(r, tag, quality=round(0.9 + version / 100, 2))

    def break_smoke(version: int) -> None:
        sm.model_errors[f"fast-v{version}-"] = (500, "ValueError: the model broke")

    return Side("sagemaker", cli, rel, break_smoke, lambda: list(sm.mutating()))


SIDES = {"local": _local, "sagemaker": _sagemaker}


@pytest.fixture(params=sorted(SIDES))
def side(request: pytest.FixtureRequest) -> Side:
    return SIDES[request.param](request)


def test_a_deploy_serves_the_version_and_records_it(side: Side):
    side.release("v1.0.0", 1)
    dep = side.deploy("v1.0.0")
    assert (dep["outcome"], dep["version"], dep["kind"], dep["endpoint"]) == ("succeeded", 1, "deploy", "production")
    assert side.live() == (1, "InService")
    code, out, err = side.cli("invoke", "production", "--data", "[[1, 2]]")
    assert code == 0, err
    assert out.strip()


def test_deploying_what_serves_does_nothing_and_plans_nothing(side: Side):
    side.release("v1.0.0", 1)
    side.deploy("v1.0.0")
    before = side.writes()
    assert side.deploy("v1.0.0")["outcome"] == "noop"
    assert side.plan("v1.0.0")["plan"] == []
    assert side.writes() == before


def test_a_dry_run_writes_nothing_and_plans_the_steps_the_deploy_takes(side: Side):
    side.release("v1.0.0", 1)
    side.deploy("v1.0.0")
    side.release("v2.0.0", 2)
    before = side.writes()
    doc = side.plan("v2.0.0")
    assert side.writes() == before and side.live() == (1, "InService")
    steps = [(s["target"], s["action"]) for s in doc["plan"]]
    assert steps[0] == ("local", "lock endpoint")
    assert [s for s in steps if s[0] == "store"] == [("store", "update endpoint state"), ("store", "record deployment")]
    dep = side.deploy("v2.0.0")
    assert doc["result"]["detail"] == "dry run: would " + dep["detail"]
    assert side.live() == (2, "InService")
    done = side.writes()[len(before) :]
    planned = [action for target, action in steps[1:] if target == side.name]  # after the lock
    if side.name == "sagemaker":  # every request the deploy sent, planned in its order
        assert [w for i, w in enumerate(done) if i == 0 or w != done[i - 1]] == planned
    else:  # one new model server started, the old one stopped once traffic switched
        assert len(done) == 1
        assert planned == ["start model server", "smoke requests", "switch traffic", "stop model server"]


def test_a_failed_smoke_request_leaves_the_old_version_serving(side: Side):
    side.release("v1.0.0", 1)
    side.deploy("v1.0.0")
    side.break_smoke(2)
    side.release("v2.0.0", 2)
    code, _, err = side.cli("deploy", "v2.0.0")
    assert code == 7, err
    last = err.strip().splitlines()[-1]
    assert "deploy of v2 to production failed: smoke request 1" in last
    assert "v1 is still serving" in last or "rolled back: v1 is serving again" in last
    assert side.live() == (1, "InService")
    code, _, err = side.cli("deploy", "v2.0.0")  # the failure was recorded: not retried by itself
    assert code == 5 and "already failed to deploy" in err


def test_a_rollback_serves_the_previous_version_again(side: Side):
    side.release("v1.0.0", 1)
    side.deploy("v1.0.0")
    side.release("v2.0.0", 2)
    side.deploy("v2.0.0")
    dep: dict[str, Any] = json.loads(side.ok("rollback", "production", "--json"))
    assert (dep["outcome"], dep["version"], dep["kind"]) == ("succeeded", 1, "rollback")
    assert side.live() == (1, "InService")
