"""A hostile or broken model in the review's model diff: stopped by the sandbox with a one-line
reason, the review still reports, and a gate rule on a diff quantity fails closed."""

from __future__ import annotations

import json
import socket
import textwrap
from pathlib import Path

import pytest

from mlops_ci.serving.sandbox import landlock_abi
from tests.conftest import FAST_INFERENCE, Project, fast_config

EXTRA = """\
review:
  eval_channel: train
  timeout: {timeout}
  memory_mb: 1024
  latency_requests: 20
"""
FLIP_RULE = "      max_regression: 5%\n    - metric: flip_rate\n      max: 0.5\n"


def _setup(project: Project, head_code: str, *, timeout: float = 60) -> None:
    """main: the fast model with a flip_rate rule; branch `hostile`: the same with `head_code`
    added to its inference module."""
    cfg = fast_config(extra=EXTRA.format(timeout=timeout)).replace("      max_regression: 5%\n", FLIP_RULE)
    # every process of this test's models carries its path in its environment (serving.environment)
    cfg = cfg.replace(
        "  entry_point: inference.py\n", f"  entry_point: inference.py\n  environment: {{MARK: '{project.path}'}}\n"
    )
    (project.path / "mlops-ci.yaml").write_text(cfg)
    project.commit("diff settings")
    project.ok("train")
    project.git("checkout", "-q", "-b", "hostile")
    (project.path / "inference.py").write_text(FAST_INFERENCE + textwrap.dedent(head_code))
    project.commit("hostile model")
    project.ok("train")


def _review(project: Project) -> tuple[str, str]:
    """The diff's reason and the report (it must still be made); the gate fails closed."""
    code, out, err = project.cli("report", "--base", "main", "--json")
    assert code == 0, err
    diff = json.loads(out)["comparison"]["model_diff"]
    assert diff["status"] == "failed" and diff["metrics"] == {}
    code, md, err = project.cli("report", "--base", "main")
    assert code == 0, err
    assert "> ⚠️ The model diff could not run: " in md
    code, out, err = project.cli("gate", "--base", "main", "--json")
    assert code == 1, err
    flip = next(r for r in json.loads(out)["results"] if r["metric"] == "flip_rate")
    assert flip["passed"] is False and flip["reason"] == f"no model diff: {diff['reason']}"  # fails closed
    return diff["reason"], md


def _models_left(project: Project) -> list[int]:
    """Processes of this test's models still alive, wherever they went (other test runs on the
    machine have their own mark)."""
    mark = f"MARK={project.path}".encode()
    left = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if mark in (proc / "environ").read_bytes().split(b"\0") and " Z " not in (proc / "stat").read_text():
                left.append(int(proc.name))
        except OSError:
            continue
    return left


def test_a_model_that_never_answers_is_stopped_at_the_timeout(project: Project):
    _setup(
        project,
        """
        def input_fn(body, content_type):
            while True:
                pass
        """,
        timeout=3,
    )
    reason, _ = _review(project)
    assert reason.startswith("the head model did not finish within 3 s (review.timeout) and was stopped")
    assert _models_left(project) == []


def test_a_model_that_allocates_10_gb_is_stopped_by_the_memory_limit(project: Project):
    _setup(
        project,
        """
        _model_fn = model_fn

        def model_fn(model_dir):
            hoard = bytearray(10 * 1024 ** 3)
            return _model_fn(model_dir)
        """,
    )
    reason, _ = _review(project)
    assert reason.startswith("the head model failed to load: MemoryError")
    assert reason.endswith("(limit 1024 MiB: review.memory_mb)")


@pytest.mark.skipif(landlock_abi() == 0, reason="this kernel has no Landlock: writes cannot be confined here")
def test_a_model_that_writes_outside_its_directory_is_refused(project: Project):
    target = project.path / "escaped.txt"
    _setup(
        project,
        f"""
        _model_fn = model_fn

        def model_fn(model_dir):
            with open({str(target)!r}, "w") as fh:
                fh.write("written by the model")
            return _model_fn(model_dir)
        """,
    )
    reason, _ = _review(project)
    assert reason.startswith("the head model failed to load: PermissionError")
    assert "the sandbox allows writes only inside the model's own directory" in reason
    assert not target.exists()


@pytest.mark.skipif(landlock_abi() < 4, reason="this kernel's Landlock cannot refuse TCP (ABI 4+, Linux 6.7+)")
def test_a_model_that_phones_home_cannot_connect(project: Project):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        _setup(
            project,
            f"""
            _model_fn = model_fn

            def model_fn(model_dir):
                import socket
                socket.create_connection(("127.0.0.1", {port}), timeout=5).sendall(b"the data")
                return _model_fn(model_dir)
            """,
        )
        reason, _ = _review(project)
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()
    assert reason.startswith("the head model failed to load: PermissionError")


def test_a_model_that_crashes_its_process_is_named_and_its_output_stays_inert(project: Project):
    _setup(
        project,
        """
        def predict_fn(data, model):
            import os, signal, sys
            print("::error::forged by the model")
            print("##[error]forged too | <b>x</b>", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    reason, md = _review(project)
    assert reason.startswith("the head model's process died (signal SIGKILL")
    assert reason.endswith("its last output: ##[error]forged too | <b>x</b>")
    assert "its last output: \\#\\#\\[error\\]forged too \\| &lt;b&gt;x&lt;/b&gt;" in md  # escaped in the comment
    assert not any(line.startswith(("::", "##[")) for line in md.splitlines())
    assert _models_left(project) == []


def test_a_model_that_forges_the_workers_answers_is_refused(project: Project):
    _setup(project, """
        _model_fn = model_fn

        def model_fn(model_dir):
            import os, sys
            fd = int(sys.argv[sys.argv.index("--reply-fd") + 1])
            os.write(fd, b'{"ok": true, "seconds": 0.0}\\n')  # a "load" answer without its confinement
            return _model_fn(model_dir)
        """)  # fmt: skip
    reason, _ = _review(project)
    assert reason.startswith("the head model's process answered something that is not the diff worker's when asked")
    assert "its figures cannot be trusted" in reason


def test_what_a_model_leaves_running_is_killed(project: Project, tmp_path: Path):
    pidfile = tmp_path / "daemon.pid"
    daemon = f"import time; time.sleep(300)  # {tmp_path}"  # this test's own, among any other runs
    _setup(project, f"""
        _model_fn = model_fn

        def model_fn(model_dir):
            import subprocess, sys
            # a daemon in a session of its own: out of the worker's process group
            proc = subprocess.Popen([sys.executable, "-c", {daemon!r}],
                                    start_new_session=True)
            open({str(pidfile)!r}, "w").write(str(proc.pid))
            return _model_fn(model_dir)
        """)  # fmt: skip
    code, _, err = project.cli("report", "--base", "main", "--json")
    assert code == 0, err
    # the daemon's pid file is outside the sandbox: Landlock refused it, or the daemon is gone
    if pidfile.exists():
        pid = int(pidfile.read_text())
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    assert _models_left(project) == []
    assert not [p for p in Path("/proc").glob("[0-9]*") if _cmdline(p).endswith(f" -c {daemon} ")]


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_a_fork_bomb_of_detached_processes_is_frozen_and_killed(project: Project):
    _setup(project, """
        _model_fn = model_fn

        def model_fn(model_dir):
            import os, time
            me = os.getpid()
            for _ in range(6):  # every process doubles: 64 in all, each in a session of its own
                if os.fork() == 0:
                    os.setsid()
            if os.getpid() != me:
                time.sleep(300)
                os._exit(0)
            while True:  # and the worker never answers
                time.sleep(1)
        """, timeout=3)  # fmt: skip
    reason, _ = _review(project)
    assert reason.startswith("the head model did not finish within 3 s")
    assert _models_left(project) == []
