"""The shipped example and the README's demo command keep working."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT, Project


def test_demo_runs_the_whole_loop_and_ends_with_a_prediction():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    for step in range(1, 15):
        assert f"\n[{step}/14]" in out
    assert "\033[" not in out  # not a terminal: no escape codes in a log
    assert "$ mlops-ci invoke production --data '[[0.1, -0.5," in out  # shown as one would type it
    assert "✅ **Gate passed**" in out
    assert "promoted classifier v1" in out
    assert "production now serves classifier v1" in out
    prediction = out.split("$ mlops-ci invoke production")[1].splitlines()[1]
    assert json.loads(prediction) in ([0], [1])
    lineage = out.split("$ mlops-ci lineage production")[1]
    assert "[v1.0.0]" in lineage and "n_estimators=80" in lineage and "(verified now)" in lineage
    assert "verdict    success" in lineage and "deployed   deploy to production: succeeded (v1.0.0)" in lineage
    assert "endpoint production stopped" in out
    # the loop's end: calm traffic passes; drifted inputs alert, open ONE issue and dispatch retraining once
    calm, drift, again = (out.split(f"[{n}/14]")[1].split(f"[{n + 1}/14]")[0] for n in (11, 12, 13))
    assert "✅ **No drift**" in calm and "⚠️ drift" not in calm
    assert "🚨 **Alert**" in drift
    assert [line[:6] for line in drift.splitlines() if "⚠️ drift" in line] == ["| f3 |"]  # f3 only
    assert "the predictions drifted" in drift  # f3 is one the model reads
    assert "GitHub issue #1 (open): mlops-ci monitor: drift on production (classifier)" in drift
    assert 'GitHub workflow_dispatch: mlops-ci-train.yml on main with {"force": "true"}' in drift
    assert "1 issue, 1 dispatch" in again and again.count("⚠️ drift") == 1


def test_retraining_a_past_sha_reproduces_its_metrics_and_artifact(example_repo: Project):
    first = json.loads(example_repo.ok("train", "--json"))["run"]
    again = json.loads(example_repo.ok("train", first["sha"], "--force", "--json"))["run"]
    assert again["run_id"] != first["run_id"]
    assert again["metrics"] == first["metrics"]
    assert again["artifact_sha256"] == first["artifact_sha256"]
    assert again["data"] == first["data"]
