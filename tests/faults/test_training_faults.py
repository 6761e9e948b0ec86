"""Fault matrix, training: failures are recorded whole, re-runs attach instead of duplicating."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

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


# -- the job dies with its CLI ---------------------------------------------------------------
_FAMILY = """\
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])  # a worker of the job
open(os.environ["PIDFILE"], "w").write(f"{os.getpid()} {child.pid}")
if os.path.exists(os.environ["SLOWFLAG"]):
    time.sleep(300)
child.kill()
print("accuracy=0.9"); print("loss=0.2"); print("rows=3")
os.makedirs(os.environ["SM_MODEL_DIR"], exist_ok=True)
open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w").write("m")
"""


def _family_project(project: Project, tmp_path: Path, *, max_run: int | None = None) -> tuple[Path, Path]:
    pidfile, flag = tmp_path / "job.pids", tmp_path / "slow"
    flag.write_text("on")
    (project.path / "train.py").write_text(_FAMILY)
    cfg = project.path / "mlops-ci.yaml"
    extra = f"  max_run: {max_run}\n" if max_run else ""
    cfg.write_text(cfg.read_text().replace(
        "  channels:", f"  environment: {{PIDFILE: '{pidfile}', SLOWFLAG: '{flag}'}}\n{extra}  channels:"))  # fmt: skip
    project.commit("a job with a worker")
    return pidfile, flag


def _start_cli(project: Project, pidfile: Path) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen([sys.executable, "-m", "mlops_ci", "train"], cwd=project.path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and " " in pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, [int(p) for p in pidfile.read_text().split()]


def _gone(pids: list[int], within: float) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive:
            return True
        time.sleep(0.05)
    return False


def test_sigterm_to_the_cli_stops_the_training_job_and_its_children(project: Project, tmp_path: Path):
    pidfile, _ = _family_project(project, tmp_path)
    proc, pids = _start_cli(project, pidfile)
    proc.send_signal(signal.SIGTERM)  # a cancelled workflow's second signal, a container stop
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err
    assert _gone(pids, 10), "the job or its worker survived SIGTERM to the CLI"
    assert json.loads(project.ok("runs", "--json")) == []


def test_kill_9_of_the_cli_kills_the_job_and_a_rerun_finds_no_orphan(project: Project, tmp_path: Path):
    pidfile, flag = _family_project(project, tmp_path)
    proc, pids = _start_cli(project, pidfile)
    proc.kill()  # SIGKILL: no handler of the CLI runs
    proc.communicate(timeout=30)
    assert _gone(pids, 10), "the job or its worker outlived a CLI killed with SIGKILL"
    flag.unlink()
    pidfile.unlink()
    project.ok("train")  # no stale lock, no orphan in the way: the rerun trains
    runs = json.loads(project.ok("runs", "--json"))
    assert [r["status"] for r in runs] == ["completed"]


def test_max_run_is_enforced_even_when_the_cli_is_stuck(project: Project, tmp_path: Path):
    pidfile, _ = _family_project(project, tmp_path, max_run=1)
    proc, pids = _start_cli(project, pidfile)
    proc.send_signal(signal.SIGSTOP)  # the CLI is alive but cannot act (its timer cannot fire)
    try:
        assert _gone(pids, 15), "nobody enforced max_run while the CLI was stopped"
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.communicate(timeout=30)


# -- links that would carry a file of this machine into an artifact ----------------------------
def test_a_symlink_out_of_the_model_dir_is_not_packed(project: Project, tmp_path):
    host = tmp_path / "host-secret"
    host.write_text("AWS_SECRET_ACCESS_KEY=do-not-ship\n")
    train = project.path / "train.py"
    script = train.read_text() + (
        "\nimport os\nmodel = os.environ['SM_MODEL_DIR']\n"
        "open(os.path.join(model, 'inside.txt'), 'w').write('ok')\n"
        "os.symlink('inside.txt', os.path.join(model, 'alias.txt'))\n"
    )
    train.write_text(script + f"os.symlink({str(host)!r}, os.path.join(model, 'extra.txt'))\n")
    project.commit("a link to a host file in the model dir")
    code, _, err = project.cli("train")
    assert code == 6, err
    line = err.strip().splitlines()[-1]
    assert f"SM_MODEL_DIR/extra.txt is a symbolic link to {host} (outside it)" in line and "not a link" in line
    (run,) = json.loads(project.ok("runs", "--json"))
    assert run["status"] == "failed" and run["artifact_sha256"] is None and "extra.txt" in run["failure"]
    blobs = [p for p in (project.path / ".mlops-ci").rglob("*.gz") if p.is_file()]
    assert not any(b"do-not-ship" in gzip.decompress(p.read_bytes()) for p in blobs)
    # a link that stays inside the model dir is packed as its content
    train.write_text(script)
    project.commit("only the inner link")
    run = json.loads(project.ok("train", "--json"))["run"]
    blob = next((project.path / ".mlops-ci").rglob(f"{run['artifact_sha256']}.tar.gz"))
    with tarfile.open(blob) as tar:
        members = {m.name: m for m in tar.getmembers()}
        alias = tar.extractfile("alias.txt")
        assert members["alias.txt"].isfile() and alias is not None and alias.read() == b"ok"
        assert "extra.txt" not in members


def test_a_committed_link_out_of_the_repository_is_refused(project: Project):
    (project.path / "credentials").symlink_to(Path.home() / ".aws" / "credentials")
    project.commit("a link to the user's AWS credentials")
    code, _, err = project.cli("train")
    assert code == 5, err
    assert "'credentials' is a link to an absolute path outside the repository" in err.strip().splitlines()[-1]
    assert json.loads(project.ok("runs", "--json")) == []
