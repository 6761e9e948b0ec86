"""The loop's end: a model trained with `monitoring:` records its baseline statistics; its endpoint
captures what it is sent; `monitor` flags the features whose traffic moved, with PSI and KS
values this test computes again from the captured records and the stored baseline (numpy,
scipy), and exits 16."""

from __future__ import annotations

import json
import math
import random
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
from scipy import stats

from tests.conftest import Project, fast_config
from tests.integration.test_deploy import endpoint_state, release

PRODUCTION = '  - name: production\n    tags: ["v*"]\n'


def _config() -> str:
    text = fast_config(extra="monitoring: {min_records: 50}\n")
    return text.replace(PRODUCTION, PRODUCTION + "    capture: {percent: 100}\n")


def _send(url: str, rows: list[list[float]]) -> None:
    for row in rows:
        req = urllib.request.Request(f"{url}/invocations", data=json.dumps([row]).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200


def _captured_f0(project: Project) -> list[float]:
    root = project.path / ".mlops-ci" / "endpoints" / "production" / "capture"
    out = []
    for f in root.rglob("*.jsonl"):
        for line in f.read_text().splitlines():
            out += [row[0] for row in json.loads(json.loads(line)["captureData"]["endpointInput"]["data"])]
    return out


def _wait_for(project: Project, n: int) -> None:
    import time

    deadline = time.monotonic() + 10
    while len(_captured_f0(project)) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(_captured_f0(project)) == n


def test_monitor_flags_the_shifted_feature_with_values_computed_independently(project: Project):
    rng = random.Random(7)
    rows = [[round(rng.gauss(0, 1), 3), round(rng.gauss(5, 2), 3)] for _ in range(500)]
    (project.path / "data" / "rows.csv").write_text("f0,f1\n" + "".join(f"{a},{b}\n" for a, b in rows))
    (project.path / "mlops-ci.yaml").write_text(_config())
    project.commit("monitoring")
    release(project, "v1.0.0")
    run = json.loads(project.ok("runs", "show", "--json"))
    assert run["links"]["mlops-ci:statistics-sha256"]
    project.ok("deploy", "v1.0.0")
    url = str(endpoint_state(project, "production")["url"])

    # traffic like the training data: nothing to report
    _send(url, [[round(rng.gauss(0, 1), 3), round(rng.gauss(5, 2), 3)] for _ in range(200)])
    _wait_for(project, 200)
    code, out, err = project.cli("monitor", "production", "--json")
    assert code == 0, err
    calm = json.loads(out)
    assert calm["alerts"] == [] and calm["rows"] == 200 and calm["version"] == 1

    # f0 moves by 1.5 standard deviations, f1 does not
    _send(url, [[round(rng.gauss(1.5, 1), 3), round(rng.gauss(5, 2), 3)] for _ in range(300)])
    _wait_for(project, 500)
    code, out, err = project.cli("monitor", "production", "--json", "--output", str(project.path / "report.md"))
    assert code == 16, err
    report = json.loads(out)
    assert report["features"]["f0"]["drift"] and not report["features"]["f1"]["drift"]
    assert any(a.startswith("feature f0 drifted") for a in report["alerts"])
    assert "1 alert(s) on production" in err or "alert(s) on production" in err

    # the same numbers, computed here from the stored baseline and the captured records
    stored = Path(unquote(urlparse(run["links"]["mlops-ci:statistics"]).path))
    base = json.loads(stored.read_text())["features"]["f0"]
    window = np.array(_captured_f0(project))
    sketch = np.array(base["sketch"])
    assert base["deciles"] == np.percentile([r[0] for r in rows], np.arange(0, 101, 10)).tolist()
    ks = stats.ks_2samp(sketch, window, method="asymp")
    f0 = report["features"]["f0"]
    assert math.isclose(f0["ks"], ks.statistic, abs_tol=1e-12)
    en = math.sqrt(len(sketch) * len(window) / (len(sketch) + len(window)))
    assert math.isclose(f0["ks_pvalue"], stats.kstwobign.sf(en * ks.statistic), rel_tol=1e-9, abs_tol=1e-300)
    inner = np.unique(np.array(base["deciles"][1:-1]))
    e = np.bincount(np.searchsorted(inner, sketch, side="left"), minlength=len(inner) + 1) / len(sketch)
    a = np.bincount(np.searchsorted(inner, window, side="left"), minlength=len(inner) + 1) / len(window)
    e, a = np.maximum(e, 1e-4), np.maximum(a, 1e-4)
    assert math.isclose(f0["psi"], float(np.sum((a - e) * np.log(a / e))), rel_tol=1e-9)
    md = (project.path / "report.md").read_text()
    assert "🚨 **Alert**" in md and "| f0 | number |" in md and "⚠️ drift" in md
    project.ok("endpoint", "stop", "production")

    # a machine that never served the endpoint (a hosted runner): said, not judged as "no traffic"
    import shutil

    shutil.rmtree(project.path / ".mlops-ci" / "endpoints" / "production")
    code, _, err = project.cli("monitor", "production")
    assert code == 4 and "has no state on this machine" in err and "MLOPS_CI_HOME" in err


def test_monitor_needs_a_capture_and_a_baseline(project: Project):
    (project.path / "mlops-ci.yaml").write_text(fast_config(extra="monitoring: true\n"))
    project.commit("monitoring without capture")
    code, _, err = project.cli("monitor", "production")
    assert code == 2 and "has no `capture:`" in err
    code, _, err = project.cli("monitor", "nowhere")
    assert code == 4 and "no endpoint named nowhere" in err


def _scheduled_env(monkeypatch, gh, tmp_path: Path, token: str) -> None:
    """A scheduled workflow's job, as Actions sets it up, against the fake GitHub."""
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"schedule": "17 * * * *"}))
    for k, v in {
        "GITHUB_ACTIONS": "true", "GITHUB_API_URL": gh.base_url, "GITHUB_TOKEN": token, "GITHUB_REPOSITORY": REPO,
        "GITHUB_EVENT_NAME": "schedule", "GITHUB_EVENT_PATH": str(event), "GITHUB_REF": "refs/heads/main",
        "GITHUB_RUN_ID": "4242", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_SERVER_URL": "https://github.example",
        "MLOPS_CI_GITHUB_WRITE_INTERVAL": "0", "MLOPS_CI_ALLOW_RUNNER_STORE": "true",
        "MLOPS_CI_ALLOW_RUNNER_ENDPOINTS": "true",
    }.items():  # fmt: skip
        monkeypatch.setenv(k, v)


REPO = "acme/models"


def _deployed_with_retraining(project: Project, rng: random.Random) -> str:
    """v1.0.0 trained on 500 rows (f0 ~ N(0, 1), f1 ~ N(5, 2)) with `monitoring.retrain`, deployed
    to production, which captures every request; its URL."""
    rows = [[round(rng.gauss(0, 1), 3), round(rng.gauss(5, 2), 3)] for _ in range(500)]
    (project.path / "data" / "rows.csv").write_text("f0,f1\n" + "".join(f"{a},{b}\n" for a, b in rows))
    retrain = "monitoring: {min_records: 50, retrain: {workflow: mlops-ci-train.yml}}"
    (project.path / "mlops-ci.yaml").write_text(_config().replace("monitoring: {min_records: 50}", retrain))
    project.commit("monitoring with retraining")
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    return str(endpoint_state(project, "production")["url"])


def test_an_alert_opens_one_issue_updates_it_and_dispatches_retraining_once(project: Project, tmp_path, monkeypatch):
    from tests.fakes.github_api import ALL_PERMISSIONS, Account, FakeGitHub

    token = "ghs_monitor"
    gh = FakeGitHub(tokens={token: ALL_PERMISSIONS, "ghp_someone": ALL_PERMISSIONS},
                    accounts={"ghp_someone": Account("mallory", 99, installation=False)}).start()  # fmt: skip
    gh.workflows[(REPO, "mlops-ci-train.yml")] = frozenset({"force"})
    try:
        rng = random.Random(7)
        url = _deployed_with_retraining(project, rng)
        _send(url, [[round(rng.gauss(0, 1), 3), round(rng.gauss(5, 2), 3)] for _ in range(200)])
        _wait_for(project, 200)
        _scheduled_env(monkeypatch, gh, tmp_path, token)

        # calm: no issue is opened, nothing is dispatched, nothing is written
        code, _, err = project.cli("monitor", "production", "--post")
        assert code == 0, err
        assert "no monitor issue" in err and gh.writes() == 0 and gh.dispatches == []

        # someone else's issue carrying our marker is not ours: never edited, never counted
        marker = "<!-- mlops-ci:monitor project=fast endpoint=production -->"
        theirs = gh.new_issue(REPO, "fake alert", marker + "\nplease click ::error::here", "mallory")

        # shifted traffic: the dry run plans the issue (saying it dispatches) and the dispatch
        _send(url, [[round(rng.gauss(1.5, 1), 3), round(rng.gauss(5, 2), 3)] for _ in range(300)])
        _wait_for(project, 500)
        code, out, err = project.cli("monitor", "production", "--post", "--dry-run", "--json")
        assert code == 16, err
        plan = json.loads(out)["plan"]
        assert [(p["method"], p["path"]) for p in plan] == [
            ("POST", f"/repos/{REPO}/issues"),
            ("POST", f"/repos/{REPO}/actions/workflows/mlops-ci-train.yml/dispatches"),
        ]
        assert "Retraining was dispatched at" in plan[0]["body"]["body"]
        assert plan[1]["body"] == {"ref": "main", "inputs": {"force": "true"}}
        assert gh.writes() == 0

        # the train workflow cannot be dispatched (no workflow_dispatch trigger yet): the issue says so
        gh.workflows[(REPO, "mlops-ci-train.yml")] = None
        code, _, err = project.cli("monitor", "production", "--post")
        assert code == 16 and "retraining was not dispatched" in err and "workflow_dispatch' trigger" in err
        (issue,) = [i for i in gh.repo_issues(REPO) if i is not theirs]
        assert "could not be dispatched" in issue["body"] and "mlops-ci:retrain" not in issue["body"]
        gh.workflows[(REPO, "mlops-ci-train.yml")] = frozenset({"force"})

        code, _, err = project.cli("monitor", "production", "--post")
        assert code == 16, err
        ours = [i for i in gh.repo_issues(REPO) if i is not theirs]
        assert len(ours) == 1 and ours[0]["user"]["login"] == "github-actions[bot]"
        assert ours[0] is issue  # the same issue, the dispatch tried again
        assert f"monitor issue updated: {issue['html_url']}" in err and "retraining dispatched" in err
        assert issue["title"] == "mlops-ci monitor: drift on production (fast)"
        body = issue["body"]
        assert body.startswith(marker + "\n") and "🚨 **Alert**" in body and "| f0 | number |" in body
        assert "actions/runs/4242" in body and "Retraining was dispatched at" in body
        assert gh.dispatches == [{"kind": "workflow_dispatch", "repo": REPO, "workflow": "mlops-ci-train.yml",
                                  "ref": "main", "inputs": {"force": "true"}}]  # fmt: skip
        assert theirs["body"].endswith("::error::here") and theirs["state"] == "open"

        # the next run: the same issue, edited in place; no second dispatch, also after a human edited
        # the issue in the browser (which saves CRLF line endings)
        issue["body"] = issue["body"].replace("\n", "\r\n")
        _send(url, [[round(rng.gauss(1.5, 1), 3), round(rng.gauss(5, 2), 3)] for _ in range(50)])
        _wait_for(project, 550)
        code, _, err = project.cli("monitor", "production", "--post")
        assert code == 16, err
        assert [i["number"] for i in gh.repo_issues(REPO) if i is not theirs] == [issue["number"]]
        assert f"monitor issue updated: {issue['html_url']}" in err and len(gh.dispatches) == 1
        assert "550 captured request(s)" in gh.issues[(REPO, issue["number"])]["body"]

        # a human closes it: the next alert opens a new issue and dispatches again
        issue["state"] = "closed"
        code, _, err = project.cli("monitor", "production", "--post")
        assert code == 16, err
        assert len([i for i in gh.repo_issues(REPO) if i["state"] == "open" and i is not theirs]) == 1
        assert len(gh.dispatches) == 2
    finally:
        gh.stop()
        project.ok("endpoint", "stop", "production")


def test_a_lost_race_and_a_failed_lookup_never_claim_a_dispatch(project: Project, tmp_path, monkeypatch):
    import re

    from tests.fakes.github_api import ALL_PERMISSIONS, FakeGitHub

    token = "ghs_monitor"
    gh = FakeGitHub(tokens={token: ALL_PERMISSIONS}).start()
    gh.workflows[(REPO, "mlops-ci-train.yml")] = frozenset({"force"})
    try:
        rng = random.Random(7)
        url = _deployed_with_retraining(project, rng)
        _send(url, [[round(rng.gauss(2, 1), 3), round(rng.gauss(5, 2), 3)] for _ in range(200)])
        _wait_for(project, 200)
        _scheduled_env(monkeypatch, gh, tmp_path, token)
        marker = "<!-- mlops-ci:monitor project=fast endpoint=production -->"

        # the repository's default branch cannot be read: nothing claims a dispatch, the issue says why
        gh.inject("GET", rf"^/repos/{REPO}$", 404, times=1)
        code, _, err = project.cli("monitor", "production", "--post")
        assert code == 16 and "retraining was not dispatched" in err, err
        (first,) = gh.repo_issues(REPO)
        assert "could not be dispatched" in first["body"] and "mlops-ci:retrain" not in first["body"]
        assert gh.dispatches == []
        first["state"] = "closed"

        # another run opens the endpoint's issue (and dispatches) between this run's read and its create
        def other_run() -> None:
            gh.new_issue(REPO, "drift", f"{marker}\nthe other run's\n<!-- mlops-ci:retrain at=2026-01-01T00:00:00Z "
                         "endpoint=production -->\n", "github-actions[bot]")  # fmt: skip

        gh.hooks.append(("POST", re.compile(rf"^/repos/{REPO}/issues$"), other_run))
        code, _, err = project.cli("monitor", "production", "--post")
        assert code == 16, err
        theirs, mine = [i for i in gh.repo_issues(REPO) if i is not first]
        assert theirs["body"].endswith("endpoint=production -->\n") and theirs["state"] == "open"  # untouched
        assert mine["state"] == "closed" and mine["state_reason"] == "not_planned"
        assert gh.dispatches == [] and f"monitor issue unchanged: {theirs['html_url']}" in err
    finally:
        gh.stop()
        project.ok("endpoint", "stop", "production")
