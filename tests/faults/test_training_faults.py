"""Fault matrix, training: failures are recorded whole, re-runs attach instead of duplicating."""

from __future__ import annotations

import json

from tests.conftest import Project


def test_same_sha_and_config_is_not_trained_twice(project: Project):
    first = json.loads(project.ok("train", "--json"))
    second = json.loads(project.ok("train", "--json"))
    assert second["reused"] and second["run"]["run_id"] == first["run"]["run_id"]
    forced = json.loads(project.ok("train", "--force", "--json"))
    assert not forced["reused"] and forced["run"]["run_id"] != first["run"]["run_id"]
    # deterministic training → identical artifact bytes
    assert forced["run"]["artifact_sha256"] == first["run"]["artifact_sha256"]


def test_failing_script_shows_output_failure_and_records_failed_run(project: Project):
    project.commit("break it", fail="CUDA out of memory at step 3")
    code, _, err = project.cli("train")
    assert code == 6
    last = err.strip().splitlines()[-1]
    assert last.startswith("mlops-ci: error: training failed: CUDA out of memory at step 3 (run ")
    runs = json.loads(project.ok("runs", "--json"))
    assert [(r["status"], r["failure"].splitlines()[0]) for r in runs] == [("failed", "CUDA out of memory at step 3")]
    assert runs[0]["artifact_sha256"] is None
    code, _, err = project.cli("report")
    assert code == 4 and "last run" in err and "failed" in err


def test_interrupting_training_stops_the_job_and_records_nothing(project: Project, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    pidfile = tmp_path / "job.pid"
    (project.path / "train.py").write_text(
        "import os, time\nopen(os.environ['PIDFILE'], 'w').write(str(os.getpid()))\ntime.sleep(120)\n"
    )
    cfg = project.path / "mlops-ci.yaml"
    cfg.write_text(cfg.read_text().replace("  channels:", f"  environment: {{PIDFILE: '{pidfile}'}}\n  channels:"))
    project.commit("slow job")
    proc = subprocess.Popen([sys.executable, "-m", "mlops_ci", "train"], cwd=project.path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 30
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    job = int(pidfile.read_text())
    proc.send_signal(signal.SIGINT)  # the workflow run is cancelled
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err
    for _ in range(100):  # the job's process group was killed with it
        try:
            os.kill(job, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the training job survived the interruption")
    assert json.loads(project.ok("runs", "--json")) == []
