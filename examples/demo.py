"""The whole mlops-ci loop on the embedded defaults, narrated.

Creates a throw-away git repository from examples/classifier, then plays the git events a
team would: push to main (train), open a PR with a changed hyperparameter (train, report,
gate), merge and promote, tag a release (deploy), and call the endpoint. Then the loop's end:
traffic whose inputs drift, `monitor` flagging it, and the hourly check opening ONE issue and
dispatching retraining. Everything runs locally: the SageMaker-compatible local trainer, the
SQLite run store, a local endpoint, and for the issue a fake of GitHub's REST API (the one the
test suite drives with the real PyGithub client), since a demo has no repository on GitHub.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS = 14
GIT_ID = ["-c", "user.name=Demo Dev", "-c", "user.email=demo@example.invalid", "-c", "commit.gpgsign=false"]


def _bold(text: str) -> str:
    """Bold on a terminal only: a log or a pipe gets the plain text (and NO_COLOR is honoured)."""
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb":
        return f"\033[1m{text}\033[0m"
    return text


def step(n: int, text: str) -> None:
    print("\n" + _bold(f"[{n}/{STEPS}] {text}"), flush=True)


def sh(repo: Path, *args: str) -> None:
    subprocess.run(["git", *GIT_ID, *args], cwd=repo, check=True, stdout=subprocess.DEVNULL)


def cli(
    repo: Path, *args: str, check: bool = True, env: dict[str, str] | None = None, expect: int = 0
) -> subprocess.CompletedProcess[str]:
    print(f"$ {shlex.join(['mlops-ci', *args])}", flush=True)  # as one would type it
    proc = subprocess.run(
        [sys.executable, "-m", "mlops_ci", *args], cwd=repo, text=True, stdout=subprocess.PIPE, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    print(proc.stdout.rstrip(), flush=True)
    if check and proc.returncode != expect:
        raise SystemExit(f"demo: `{shlex.join(['mlops-ci', *args])}` exited with {proc.returncode}, not {expect}")
    return proc


def traffic(repo: Path, rows: list[list[float]], shift: float, feature: int = 3) -> None:
    """What clients send the endpoint: rows like the training data, one feature moved by `shift`."""
    url = json.loads(subprocess.run([sys.executable, "-m", "mlops_ci", "endpoints", "--json"], cwd=repo, text=True,
                                    stdout=subprocess.PIPE, check=True).stdout)  # fmt: skip
    base = next(e["url"] for e in url if e["name"] == "production")
    for row in rows:
        body = json.dumps([[x + shift if j == feature else x for j, x in enumerate(row)]]).encode()
        req = urllib.request.Request(f"{base}/invocations", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
    print(f"(sent {len(rows)} requests to {base}/invocations, f{feature} shifted by {shift:+g})", flush=True)
    time.sleep(0.6)  # the capture writer flushes every 0.25 s


def fake_github() -> object:
    """The test suite's fake of GitHub's REST API on 127.0.0.1, with the training workflow's
    dispatch trigger as the starter workflow declares it."""
    sys.path.insert(0, str(HERE.parent))
    from tests.fakes.github_api import FakeGitHub

    gh = FakeGitHub(tokens={"demo-token": frozenset({"issues:write", "actions:write", "contents:read"})}).start()
    gh.workflows[("demo/classifier", "mlops-ci-train.yml")] = frozenset({"force"})
    return gh


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

        with open(repo / "data" / "train" / "train.csv", newline="") as fh:
            rows = [[float(x) for x in r[:-1]] for r in list(csv.reader(fh))[1:]]  # without the label
        rng = random.Random(1)
        step(11, "traffic like the training data → `monitor`: each feature against the run's baseline (PSI, KS)")
        traffic(repo, rng.sample(rows, 300), 0.0)
        cli(repo, "monitor", "production")

        gh = fake_github()
        actions = {"GITHUB_API_URL": gh.base_url, "GITHUB_TOKEN": "demo-token",  # type: ignore[attr-defined]
                   "GITHUB_REPOSITORY": "demo/classifier", "MLOPS_CI_GITHUB_WRITE_INTERVAL": "0"}  # fmt: skip
        try:
            step(12, "the inputs drift (f3 + 3) → the hourly `monitor --post`: alert (exit 16), ONE issue, "
                 "retraining dispatched")  # fmt: skip
            traffic(repo, rng.sample(rows, 400), 3.0)
            cli(repo, "monitor", "production", "--since", "10m", "--post", env=actions, expect=16)
            for issue in gh.repo_issues("demo/classifier"):  # type: ignore[attr-defined]
                print(f"GitHub issue #{issue['number']} ({issue['state']}): {issue['title']}")
            for d in gh.dispatches:  # type: ignore[attr-defined]
                print(f"GitHub workflow_dispatch: {d['workflow']} on {d['ref']} with {json.dumps(d['inputs'])}")

            step(13, "the next hourly run: the same issue, updated in place; retraining is not dispatched again")
            traffic(repo, rng.sample(rows, 100), 3.0)
            cli(repo, "monitor", "production", "--since", "10m", "--post", env=actions, expect=16)
            issues = gh.repo_issues("demo/classifier")  # type: ignore[attr-defined]
            print(f"{len(issues)} issue, {len(gh.dispatches)} dispatch")  # type: ignore[attr-defined]
            if len(issues) != 1 or len(gh.dispatches) != 1:  # type: ignore[attr-defined]
                raise SystemExit("demo: the second run should have updated the one issue and dispatched nothing")
            print(issues[0]["body"].split("### Features")[0].rstrip())
        finally:
            gh.stop()  # type: ignore[attr-defined]

        step(14, "stop the endpoint the demo started")
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
