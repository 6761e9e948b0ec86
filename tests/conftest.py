from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The suite starts hundreds of Python processes from this source tree (the CLI, training scripts,
# model servers, workflow steps): with PYTHONDONTWRITEBYTECODE set by the shell, each one compiled
# every module again (a no-op `mlops-ci train` took 0.39 s instead of 0.22 s). Bytecode changes
# nothing a test checks.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False
EXAMPLE = ROOT / "examples" / "classifier"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Dev",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test Dev",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


@pytest.fixture(autouse=True)
def _environ_unchanged() -> Iterator[None]:
    """Fail any test that leaves os.environ changed (use monkeypatch)."""
    before = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    yield
    after = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    if before != after:
        changed = sorted(set(before.items()) ^ set(after.items()))
        pytest.fail(f"test changed os.environ: {changed}")


@pytest.fixture(autouse=True)
def aws_requests() -> Iterator[Any]:
    """Fail a test in which any botocore client of this process sent a request that breaks its
    service model's patterns, lengths, ranges or enums (tests/fakes/aws_model.py). Requests from
    other processes are checked where they arrive (FakeSageMaker)."""
    from tests.fakes import aws_model

    recorder = aws_model.Recorder()
    entry = aws_model.install(recorder)
    _fresh_boto3_session()
    try:
        yield recorder
    finally:
        aws_model.uninstall(entry)
        _fresh_boto3_session()
    if recorder.found:
        pytest.fail("AWS would refuse these requests (botocore service model): " + "; ".join(recorder.found))


def _fresh_boto3_session() -> None:
    # boto3's default session registered its handlers when it was made; a new one picks up ours
    boto3 = sys.modules.get("boto3")
    if boto3 is not None:
        boto3.DEFAULT_SESSION = None


@pytest.fixture(autouse=True)
def _no_serving_process_outlives_its_test(tmp_path: Path) -> Iterator[None]:
    """Fail a test that leaves a router or model server running (after its fixtures' cleanup)."""
    yield
    left = serving_processes(tmp_path)
    kill_and_wait(left, tmp_path)
    if left:
        pytest.fail(f"the test left {len(left)} serving process(es) running: {left}")


@pytest.fixture(autouse=True)
def _no_inherited_actions_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests decide for themselves whether they run "under GitHub Actions".
    for name in list(os.environ):
        if name.startswith(("GITHUB_", "MLOPS_CI_")) or name in ("CI", "RUNNER_TEMP"):
            monkeypatch.delenv(name)


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(repo)}
    out = subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip()


FAST_TRAIN = textwrap.dedent(
    '''
    """A tiny SageMaker script-mode job without heavy imports (keeps the suite fast)."""
    import argparse
    import json
    import os
    import sys

    p = argparse.ArgumentParser()
    p.add_argument("--quality", type=float, default=0.9)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--broken", type=int, default=0)
    p.add_argument("--fail", default="")
    p.add_argument("--drop", default="")
    args = p.parse_args()

    rows = open(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "rows.csv")).read().split()
    if args.fail:
        with open(os.path.join(os.environ["SM_OUTPUT_DIR"], "failure"), "w") as fh:
            fh.write(args.fail + "\\nTraceback: more detail here")
        sys.exit(2)
    for epoch in range(5):
        print(f"epoch={epoch} loss={args.scale / (epoch + 1):.4f}")
    if args.drop != "accuracy":
        print(f"accuracy={args.quality}")
    print(f"rows={len(rows)}")
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as fh:
        json.dump({"scale": args.scale, "broken": args.broken}, fh)
    '''
)

FAST_INFERENCE = textwrap.dedent(
    """
    import json
    import os


    def model_fn(model_dir):
        with open(os.path.join(model_dir, "model.json")) as fh:
            return json.load(fh)


    def predict_fn(data, model):
        if model["broken"]:
            raise RuntimeError("this model is broken")
        return [sum(row) * model["scale"] for row in data.tolist()]
    """
)


def fast_config(
    *,
    quality: float = 0.9,
    scale: float = 1.0,
    broken: int = 0,
    fail: str = "",
    drop: str = "",
    smoke_expect: str = "[",
    extra: str = "",
) -> str:
    hps = {"quality": quality, "scale": scale, "broken": broken}
    if fail:
        hps["fail"] = fail
    if drop:
        hps["drop"] = drop
    return (
        textwrap.dedent(
            f"""\
        project: fast
        training:
          entry_point: train.py
          hyperparameters: {json.dumps(hps)}
          channels:
            train: data
          metric_definitions:
            - name: accuracy
              regex: "accuracy=([0-9.]+)"
            - name: loss
              regex: "loss=([0-9.]+)"
            - name: rows
              regex: "rows=([0-9]+)"
        metrics:
          accuracy: {{goal: maximize, tolerance: 0.0001}}
          loss: {{goal: minimize}}
        gate:
          rules:
            - metric: accuracy
              min: 0.8
              max_regression: 5%
        serving:
          entry_point: inference.py
        endpoints:
          - name: staging
            tags: ["v*-rc*"]
            ready_timeout: 30
            smoke:
              - body: [[1, 2]]
          - name: production
            tags: ["v*"]
            ready_timeout: 30
            smoke:
              - body: [[1, 2]]
                expect_contains: "{smoke_expect}"
        """
        )
        + extra
    )


@dataclass
class Project:
    path: Path

    def git(self, *args: str) -> str:
        return git(self.path, *args)

    def commit(self, message: str = "change", **config: object) -> str:
        if config:
            (self.path / "mlops-ci.yaml").write_text(fast_config(**config))  # type: ignore[arg-type]
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def cli(self, *args: str) -> tuple[int, str, str]:
        """Run the CLI in-process (same code path as the console script)."""
        import io
        from contextlib import redirect_stderr, redirect_stdout

        from mlops_ci.cli import main

        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["-C", str(self.path), *args])
        return code, out.getvalue(), err.getvalue()

    def ok(self, *args: str) -> str:
        code, out, err = self.cli(*args)
        assert code == 0, f"mlops-ci {' '.join(args)} exited {code}: {err}"
        return out

    def stop_endpoints(self) -> None:
        for name in ("staging", "production"):
            self.cli("endpoint", "stop", name)
        # The harness's own safety net (a test that damaged the store cannot `endpoint stop`):
        # no serving process of this project outlives its test.
        kill_and_wait(serving_processes(self.path / ".mlops-ci"), self.path / ".mlops-ci")


def kill_and_wait(pids: list[int], under: Path) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pids and serving_processes(under) and time.monotonic() < deadline:
        time.sleep(0.05)


def serving_processes(under: Path) -> list[int]:
    """Routers and model servers whose command line names a path under `under` (Linux)."""
    found = []
    mark = os.fsencode(str(under))
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.startswith(b"mlops_ci.serving.") for a in args) and any(a.startswith(mark) for a in args):
            found.append(int(entry.name))
    return sorted(found)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(FAST_TRAIN)
    (repo / "inference.py").write_text(FAST_INFERENCE)
    (repo / "data").mkdir()
    (repo / "data" / "rows.csv").write_text("1\n2\n3\n")
    (repo / ".gitignore").write_text(".mlops-ci/\n")
    (repo / "mlops-ci.yaml").write_text(fast_config())
    git(repo, "init", "-q", "-b", "main")
    proj = Project(repo)
    proj.commit("initial")
    try:
        yield proj
    finally:
        proj.stop_endpoints()


@pytest.fixture
def example_repo(tmp_path: Path) -> Iterator[Project]:
    """The shipped scikit-learn example in a fresh git repository."""
    import shutil

    repo = tmp_path / "classifier"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__", ".mlops-ci"))
    (repo / ".gitignore").write_text(".mlops-ci/\n")
    git(repo, "init", "-q", "-b", "main")
    proj = Project(repo)
    proj.git("add", "-A")
    proj.git("commit", "-q", "-m", "example")
    try:
        yield proj
    finally:
        proj.stop_endpoints()


_IN_PROCESS = threading.Lock()


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The test driver: `mlops-ci ARGS` in `cwd` with `env` added to the environment, run by
    `main(argv)` in this process (the console script's code path) against the same wire-level
    fakes, without a fresh interpreter importing boto3 for every command. What it returns is
    what `run_module` returns; use that one where processes are the point (signals, crashes,
    locks held by another process, start-up)."""
    if not _IN_PROCESS.acquire(blocking=False):  # the environment and the directory are the process's
        raise RuntimeError("run_cli runs one command at a time; run concurrent commands with run_module")
    try:
        return _in_process(list(args), cwd, env or {})
    finally:
        _IN_PROCESS.release()


def _in_process(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from mlops_ci.cli import main

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.update(env)
        os.chdir(cwd)
        _fresh_boto3_session()  # boto3's default session read the environment it was made in
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exc:  # argparse: --help, --version, a usage error
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        _fresh_boto3_session()
    return subprocess.CompletedProcess(["mlops-ci", *args], code, out.getvalue(), err.getvalue())


def run_module(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m mlops_ci ARGS` in a new process (for what only a process shows)."""
    return subprocess.run(
        [sys.executable, "-m", "mlops_ci", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )


def as_lists(series: dict[str, object]) -> dict[str, list[float]]:
    """Stores return series as sequences (packed float64 arrays for SQLite)."""
    return {k: list(v) for k, v in series.items()}  # type: ignore[call-overload]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    """A real git server over HTTP (git http-backend, tests/fakes/git_http.py) holding an empty
    acme/models, whose one token that may push is ghs_write."""
    from tests.fakes.git_http import GitHttpServer

    s = GitHttpServer(tmp_path / "server", writers={"ghs_write"}).start()
    s.bare("acme/models")
    yield s
    s.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`-n`, on by default): the workflows under a real runner (tests/gha) take
    half of the suite's time in a few tests, so each worker starts with its share of them. xdist's
    worksteal scheduler hands worker i the i-th of n equal slices of this order, so each slice
    begins with every n-th runner test, then its share of the rest. Without xdist the order stays."""
    workers = int(getattr(config, "workerinput", {}).get("workercount", 0))
    if workers < 2:
        return
    slow = [i for i in items if i.get_closest_marker("gha")]
    rest = [i for i in items if not i.get_closest_marker("gha")]
    size = -(-len(items) // workers)  # the slice each worker gets first
    ordered: list[pytest.Item] = []
    for w in range(workers):
        mine = slow[w::workers]
        take = max(0, min(size - len(mine), len(rest)))
        ordered += mine + rest[:take]
        rest = rest[take:]
    items[:] = ordered + rest
