"""The whole mlops-ci loop on the embedded defaults, narrated.

Creates a throw-away git repository from examples/classifier, then plays the git events a
team would: push to main (train), open a PR with a changed hyperparameter (train, report,
gate), merge and promote, tag a release (deploy), and call the endpoint. Everything runs
locally: the SageMaker-compatible local trainer, the SQLite run store, a local endpoint.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GIT_ID = ["-c", "user.name=Demo Dev", "-c", "user.email=demo@example.invalid", "-c", "commit.gpgsign=false"]


def _bold(text: str) -> str:
    """Bold on a terminal only: a log or a pipe gets the plain text (and NO_COLOR is honoured)."""
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb":
        return f"\033[1m{text}\033[0m"
    return text


def step(n: int, text: str) -> None:
    print("\n" + _bold(f"[{n}/11] {text}"), flush=True)


def sh(repo: Path, *args: str) -> None:
    subprocess.run(["git", *GIT_ID, *args], cwd=repo, check=True, stdout=subprocess.DEVNULL)


def cli(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    print(f"$ {shlex.join(['mlops-ci', *args])}", flush=True)  # as one would type it
    proc = subprocess.run(
        [sys.executable, "-m", "mlops_ci", *args], cwd=repo, text=True, stdout=subprocess.PIPE, check=False
    )
    print(proc.stdout.rstrip(), flush=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo: `{shlex.join(['mlops-ci', *args])}` exited with {proc.returncode}")
    return proc


def main() -> int:
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="mlops-ci-demo-"))
    repo = tmp / "classifier"
    shutil.copytree(HERE / "classifier", repo, ignore=shutil.ignore_patterns("__pycache__", ".mlops-ci"))
    try:
        sh(repo, "init", "-q", "-b", "main")
        sh(repo, "add", "-A")
        sh(repo, "commit", "-q", "-m", "classifier: gradient boosting, 40 trees")
        print(f"demo repository: {repo}")

        step(1, "push to main → train the commit (SageMaker script mode, run locally)")
        cli(repo, "train")

        step(2, "open a PR that doubles n_estimators → train the PR head")
        sh(repo, "checkout", "-q", "-b", "more-trees")
        cfg = repo / "mlops-ci.yaml"
        cfg.write_text(cfg.read_text().replace("n_estimators: 40", "n_estimators: 80"))
        sh(repo, "commit", "-q", "-a", "-m", "more trees")
        cli(repo, "train")

        step(3, "the PR comment: head vs baseline (nearest run on main)")
        cli(repo, "report", "--base", "main")

        step(4, "the gate: thresholds and regression limits from mlops-ci.yaml")
        cli(repo, "gate", "--base", "main")

        step(5, "merge (a merge commit, as GitHub makes it), then promote the gated model to the registry")
        sh(repo, "checkout", "-q", "main")
        sh(repo, "merge", "-q", "--no-ff", "-m", "Merge pull request #1 from more-trees", "more-trees")
        cli(repo, "train")  # the push to main: same training inputs as the PR head, so its run is reused
        cli(repo, "gate")  # every commit of main is gated too
        cli(repo, "promote")
        cli(repo, "models")

        step(6, "tag the release v1.0.0 → deploy the model built from that commit (no retraining)")
        sh(repo, "tag", "v1.0.0")
        cli(repo, "deploy", "v1.0.0")

        step(7, "call the endpoint (SageMaker serving contract: POST /invocations)")
        cli(repo, "invoke", "production", "--data", "[[0.1, -0.5, 1.2, 0.3, -1.1, 0.4, 0.0, -0.7]]")

        step(8, "declared vs live state")
        cli(repo, "status")
        cli(repo, "endpoints")

        step(9, "the whole story of the run, from the store")
        cli(repo, "runs")

        step(10, "lineage: from the endpoint back to the commit, its data and verdict (artifact verified now)")
        cli(repo, "lineage", "production")

        step(11, "stop the endpoint the demo started")
        cli(repo, "endpoint", "stop", "production")
    finally:
        subprocess.run(
            [sys.executable, "-m", "mlops_ci", "endpoint", "stop", "production"],
            cwd=repo,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        if not os.environ.get("MLOPS_CI_DEMO_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ndemo finished in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
