"""mlops-ci's own cost, measured: every figure as median / min / max over repeated runs, the
ratio to a reference measured in the same run, its budget, and pass/fail.

    python benchmarks/bench.py [--output benchmarks/results.json] [--repeat N]

Run through `make bench`, which installs mlops-ci non-editable in its own virtualenv (an
editable install adds an import hook to every interpreter start) together with DVC, the peer
measured side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MLOPS_CI = str(BIN / "mlops-ci")
HEAVY = ("boto3", "botocore", "sagemaker", "comet_ml", "github", "git", "numpy")
GIT_ENV = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x.invalid", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@x.invalid"}  # fmt: skip


class Report:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, name: str, samples: list[float], *, unit: str = "s", reference: float | None = None,
            ref_name: str = "", budget: str = "", ok: bool | None = None, note: str = "") -> None:  # fmt: skip
        med = statistics.median(samples)
        row = {
            "name": name, "unit": unit, "median": med, "min": min(samples), "max": max(samples), "n": len(samples),
            "reference": reference, "reference_name": ref_name,
            "ratio": (med / reference) if reference else None, "budget": budget, "pass": ok, "note": note,
        }  # fmt: skip
        self.rows.append(row)
        print(self.format(row), flush=True)

    @staticmethod
    def format(r: dict[str, Any]) -> str:
        def v(x: float | None) -> str:
            if x is None:
                return "-"
            return f"{x * 1000:.1f}ms" if r["unit"] == "s" else f"{x:g}"

        ratio = f"{r['ratio']:.2f}x {r['reference_name']}" if r["ratio"] is not None else ""
        verdict = {True: "PASS", False: "FAIL", None: "info"}[r["pass"]]
        return (f"{verdict:<5} {r['name']:<58} median {v(r['median']):>9} (min {v(r['min'])}, max {v(r['max'])})"
                f"  {ratio:<26} budget: {r['budget'] or '-'}  {r['note']}")  # fmt: skip


def timed(cmd: list[str], n: int, cwd: Path | None = None, env: dict[str, str] | None = None) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        out.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"bench: {' '.join(cmd)} failed: {proc.stderr.decode()[-500:]}")
    return out


def peak_rss_mb(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True);"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe, *cmd], cwd=cwd, env=env, capture_output=True, text=True,
                         check=True)  # fmt: skip
    return int(out.stdout.strip()) / 1024


def git(repo: Path, *args: str, stdin: bytes | None = None) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, input=stdin, capture_output=True, check=True
    ).stdout.decode()


# -- 1. start-up -------------------------------------------------------------------------------
def bench_startup(rep: Report, n: int) -> None:
    example = ROOT / "examples" / "classifier"
    base = timed([sys.executable, "-c", "pass"], n)
    ref = statistics.median(base)
    rep.add("python -c pass (reference)", base)
    for args, cwd in ((["--version"], ROOT), (["config", "check"], example)):
        s = timed([MLOPS_CI, *args], n, cwd=cwd)
        ratio = statistics.median(s) / ref
        rep.add(f"mlops-ci {' '.join(args)}", s, reference=ref, ref_name="python -c pass", budget="<= 3x",
                ok=ratio <= 3.0)  # fmt: skip
        probe = subprocess.run([sys.executable, "-X", "importtime", MLOPS_CI, *args], cwd=cwd, capture_output=True,
                               text=True, check=True)  # fmt: skip
        loaded = {line.split("|")[-1].strip().split(".")[0] for line in probe.stderr.splitlines() if "|" in line}
        heavy = sorted(set(HEAVY) & loaded)
        rep.add(f"  heavy SDKs imported by `{' '.join(args)}`", [float(len(heavy))], unit="count", budget="0",
                ok=not heavy, note=", ".join(heavy))  # fmt: skip


# -- 2. diff and report ---------------------------------------------------------------------------
def write_metrics(path: Path, n_metrics: int, steps: int, shift: float) -> None:
    if steps:
        data = {f"metric_{i:04d}": [round((i + j * 0.001) * shift, 6) for j in range(steps)] for i in range(n_metrics)}
    else:
        data = {f"metric_{i:04d}": round(i * shift + 0.5, 6) for i in range(n_metrics)}
    path.write_text(json.dumps(data))


def bench_diff(rep: Report, n: int, tmp: Path) -> None:
    a, b = tmp / "series_a.json", tmp / "series_b.json"
    write_metrics(a, 1000, 10_000, 1.0)
    write_metrics(b, 1000, 10_000, 1.01)
    for fmt in ([], ["--md"], ["--json"]):
        s = timed([MLOPS_CI, "diff", str(a), str(b), *fmt], n, cwd=tmp)
        label = {"--md": "markdown", "--json": "JSON"}[fmt[0]] if fmt else "table"
        rep.add(f"diff of two 88 MB text files (1,000 x 10,000) -> {label}", s,
                note="bound by json.loads: ~0.65 s per file")  # fmt: skip

    # The budgeted figure: two stored runs (what `report` compares on a PR).
    sys.path.insert(0, str(ROOT))
    from mlops_ci.backends.local_training import read_metrics_file
    from mlops_ci.backends.sqlite_store import SqliteStore
    from mlops_ci.records import Run

    repo = tmp / "big-runs"
    repo.mkdir()
    (repo / "mlops-ci.yaml").write_text("project: big\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a")
    git(repo, "commit", "-q", "--allow-empty", "-m", "b")
    shas = git(repo, "rev-list", "main").split()
    store = SqliteStore(repo / ".mlops-ci" / "store.db")
    for i, (sha, path) in enumerate(((shas[1], a), (shas[0], b))):
        finals, series = read_metrics_file(path)
        store.record_run(Run(run_id=f"r{i}", project="big", sha=sha, branch="main", config_digest="d",
                             status="completed", backend="local", started=i, finished=i + 1.0, metrics=finals),
                         series)  # fmt: skip
    store.close()
    for fmt in ([], ["--json"]):
        s = timed([MLOPS_CI, "report", *fmt], n, cwd=repo)
        rep.add(f"report, two stored runs, 1,000 metrics x 10,000 steps -> {'JSON' if fmt else 'markdown'}", s,
                budget="<= 1 s", ok=statistics.median(s) <= 1.0,
                note=f"peak RSS {peak_rss_mb([MLOPS_CI, 'report', *fmt], repo):.0f} MB")  # fmt: skip

    # Side by side with DVC on the same two scalar metrics files.
    dvc = BIN / "dvc"
    repo = tmp / "dvc-repo"
    repo.mkdir()
    git(repo, "init", "-q")
    sa, sb = tmp / "scalar_a.json", tmp / "scalar_b.json"
    write_metrics(sa, 1000, 0, 1.0)
    write_metrics(sb, 1000, 0, 1.01)
    ours = timed([MLOPS_CI, "diff", str(sa), str(sb), "--md"], n, cwd=tmp)
    if not dvc.exists():
        rep.add("diff 1,000 scalar metrics (mlops-ci diff --md)", ours, note="DVC not installed: no comparison")
        return
    subprocess.run([str(dvc), "init", "-q"], cwd=repo, check=True)
    shutil.copy(sa, repo / "metrics.json")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a")
    shutil.copy(sb, repo / "metrics.json")
    git(repo, "commit", "-qam", "b")
    theirs = timed([str(dvc), "metrics", "diff", "HEAD~1", "HEAD", "--targets", "metrics.json", "--md"], n, cwd=repo)
    ref = statistics.median(theirs)
    rep.add("dvc metrics diff --md, 1,000 metrics (peer)", theirs)
    rep.add("mlops-ci diff --md, same 1,000 metrics", ours, reference=ref, ref_name="DVC", budget="faster than DVC",
            ok=statistics.median(ours) < ref)  # fmt: skip


# -- 3. sticky comment ----------------------------------------------------------------------------
def bench_comment(rep: Report, n: int) -> None:
    sys.path.insert(0, str(ROOT))
    from mlops_ci.backends.github import GitHubClient, GitHubSettings, RetryPolicy
    from tests.fakes.github_api import ALL_PERMISSIONS, FakeGitHub

    fake = FakeGitHub(tokens={"t": ALL_PERMISSIONS}).start()
    try:
        settings = GitHubSettings(fake.base_url, "t", "acme/models", "https://github.example", None, None, 0)
        client = GitHubClient(settings, retry=RetryPolicy())
        marker = "<!-- mlops-ci:report project=bench -->"
        for number, existing in ((1, 10), (2, 500), (3, 3000)):
            fake._new_comment("acme/models", number, marker + "\nfirst", "github-actions[bot]")
            fake.add_comments("acme/models", number, existing)
            times, calls = [], []
            for i in range(n):
                fake.requests.clear()
                start = time.perf_counter()
                client.upsert_comment(number, f"{marker}\nbody {i}", marker)
                times.append(time.perf_counter() - start)
                calls.append(len(fake.requests))
            rep.add(f"sticky comment update, PR with {existing:,} comments: API calls", [float(c) for c in calls],
                    unit="count", budget="constant (2)", ok=max(calls) == 2)  # fmt: skip
            rep.add(f"sticky comment update, PR with {existing:,} comments: wall time", times)
        for number, existing in ((4, 10), (5, 3000)):  # first report on a PR: nothing to find
            fake.add_comments("acme/models", number, existing)
            fake.requests.clear()
            client.upsert_comment(number, f"{marker}\nnew", marker)
            rep.add(f"sticky comment create, PR with {existing:,} comments: API calls",
                    [float(len(fake.requests))], unit="count", note="once per PR; scans the pages")  # fmt: skip
        # who the token is (GraphQL viewer) is asked once per process, not per comment
        rep.add("sticky comment: identity questions in the whole run", [float(len(fake.graphql))], unit="count",
                budget="1 per process", ok=len(fake.graphql) == 1)  # fmt: skip
    finally:
        fake.stop()


# -- 4. local training overhead --------------------------------------------------------------------
def bench_training(rep: Report, n: int, tmp: Path) -> None:
    repo = tmp / "noop"
    repo.mkdir()
    (repo / "train.py").write_text("pass\n")
    (repo / "mlops-ci.yaml").write_text("project: noop\ntraining:\n  entry_point: train.py\n")
    (repo / ".gitignore").write_text(".mlops-ci/\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "noop")
    direct = timed([sys.executable, "train.py"], n, cwd=repo)
    ours = timed([MLOPS_CI, "train", "--force"], n, cwd=repo)
    over = statistics.median(ours) - statistics.median(direct)
    rep.add("python train.py (no-op script, reference)", direct)
    rep.add("mlops-ci train --force (same script)", ours, reference=statistics.median(direct), ref_name="direct",
            budget="<= 0.5 s over", ok=over <= 0.5, note=f"overhead {over * 1000:.0f}ms")  # fmt: skip


HOSTS_SCRIPT = """import os, socket, time
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
if world > 1 and rank == 0:
    server = socket.create_server((addr, port))
    for _ in range(world - 1):
        server.accept()[0].close()
elif world > 1:
    for _ in range(800):
        try:
            socket.create_connection((addr, port)).close()
            break
        except OSError:
            time.sleep(0.01)
"""


def bench_hosts(rep: Report, n: int, tmp: Path) -> None:
    """The same script (a rendezvous, nothing else) as a 1-host and a 2-host local job."""
    samples: dict[int, list[float]] = {}
    for count in (1, 2):
        repo = tmp / f"hosts{count}"
        repo.mkdir()
        (repo / "train.py").write_text(HOSTS_SCRIPT)
        (repo / "data").mkdir()
        for i in range(20):
            (repo / "data" / f"part-{i:02}.csv").write_text("1,2\n" * 100)
        (repo / "mlops-ci.yaml").write_text(
            f"project: hosts\ntraining:\n  entry_point: train.py\n  instance_count: {count}\n"
            "  distribution: {torch_distributed: {enabled: true}}\n"
            "  channels: {train: {uri: data, distribution: ShardedByS3Key}}\n"
        )
        (repo / ".gitignore").write_text(".mlops-ci/\n")
        git(repo, "init", "-q")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "hosts")
        samples[count] = timed([MLOPS_CI, "train", "--force"], n, cwd=repo)
    one = statistics.median(samples[1])
    over = statistics.median(samples[2]) - one
    rep.add("mlops-ci train --force, 1 host (torch_distributed, sharded channel)", samples[1])
    rep.add("mlops-ci train --force, 2 hosts (same script, same data)", samples[2], reference=one, ref_name="1 host",
            budget="<= 0.3 s over 1 host", ok=over <= 0.3, note=f"a second host costs {over * 1000:.0f}ms")  # fmt: skip


def bench_search(rep: Report, n: int, tmp: Path) -> None:
    """Trials per minute of a local search: 8 trials of a script that sleeps 0.5 s, one at a time
    and two at a time (the search's own cost is what the sleep does not explain)."""
    per_min: dict[int, list[float]] = {}
    for parallel in (1, 2):
        repo = tmp / f"search{parallel}"
        repo.mkdir()
        (repo / "train.py").write_text("import time, argparse\ntime.sleep(0.5)\nprint('score=1')\n")
        (repo / "mlops-ci.yaml").write_text(
            "project: search\ntraining:\n  entry_point: train.py\n"
            "  metric_definitions: [{name: score, regex: 'score=([0-9.]+)'}]\n"
            "metrics: {score: {goal: maximize}}\n"
            f"tuning:\n  objective: {{metric: score}}\n  max_jobs: 8\n  max_parallel: {parallel}\n"
            "  parameters: {lr: {type: continuous, min: 0.001, max: 0.1}}\n"
        )
        (repo / ".gitignore").write_text(".mlops-ci/\n")
        git(repo, "init", "-q")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "search")
        per_min[parallel] = [8 * 60 / s for s in timed([MLOPS_CI, "train", "--force"], n, cwd=repo)]
    one = statistics.median(per_min[1])
    rep.add("local search, 8 trials of 0.5 s, 1 at a time: trials/minute", per_min[1], unit="trials/min",
            budget=">= 80 (0.5 s of sleep + at most 0.25 s each)", ok=one >= 80)  # fmt: skip
    rep.add("same search, 2 at a time: trials/minute", per_min[2], unit="trials/min", reference=one,
            ref_name="1 at a time", budget=">= 1.5x", ok=statistics.median(per_min[2]) >= 1.5 * one)  # fmt: skip


# -- 4b. the review's model diff ------------------------------------------------------------------
LINEAR = """import json, os
import numpy as np

def model_fn(model_dir):
    with open(os.path.join(model_dir, "model.json")) as fh:
        return np.array(json.load(fh), dtype=np.float32)

def predict_fn(data, w):
    return (data @ w > 0).astype(int)
"""
DIFF_ONCE = """import json, sys, time
from pathlib import Path
from mlops_ci.config import ReviewConfig
from mlops_ci.model_diff import Side, run
from mlops_ci.serving.model_server import sha256_file

tmp = Path(sys.argv[1])
sides = [Side(n, tmp / f"{n}.tar.gz", sha256_file(tmp / f"{n}.tar.gz"), "inference.py", sys.executable)
         for n in ("baseline", "head")]
t0 = time.perf_counter()
d = run(sides[0], sides[1], tmp / "eval", ReviewConfig(), None, "bench")
took = time.perf_counter() - t0
assert d["status"] == "ok", d["reason"]
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(json.dumps({"seconds": took, "rows": d["rows"], "flip_rate": d["flip_rate"],
                  "parent_mb": int(hwm.split()[1]) / 1024,
                  "worker_mb": max(d["operational"][s]["peak_memory_mb"] for s in ("baseline", "head"))}))
"""
DIRECT = """import json, sys, time
import numpy as np
from pathlib import Path

tmp = Path(sys.argv[1])
t0 = time.perf_counter()
x = np.loadtxt(tmp / "eval" / "rows.csv", delimiter=",", skiprows=1)[:, :-1].astype(np.float32)
preds = [(x @ np.array(json.loads((tmp / n / "model.json").read_text()), dtype=np.float32) > 0).astype(int)
         for n in ("baseline", "head")]
print(json.dumps({"seconds": time.perf_counter() - t0, "flips": int((preds[0] != preds[1]).sum())}))
"""


def bench_model_diff(rep: Report, n: int, tmp: Path) -> None:
    """The model diff on 100,000 rows of 8 features: two linear classifiers whose weights differ
    slightly, through the whole path (CSV, two confined workers, predictions, latency rounds,
    comparison), next to the floor: the same predictions computed directly with numpy."""
    import random
    import tarfile

    work = tmp / "model-diff"
    (work / "eval").mkdir(parents=True)
    rnd = random.Random(7)
    lines = ["f0,f1,f2,f3,f4,f5,f6,f7,label"]
    for _ in range(100_000):
        row = [rnd.gauss(0, 1) for _ in range(8)]
        lines.append(",".join(f"{v:.6f}" for v in row) + f",{int(sum(row) > 0)}")
    (work / "eval" / "rows.csv").write_text("\n".join(lines) + "\n")
    for name, weights in (("baseline", [1.0] * 8), ("head", [1.0] * 7 + [1.3])):
        (work / name / "code").mkdir(parents=True)
        (work / name / "model.json").write_text(json.dumps(weights))
        (work / name / "code" / "inference.py").write_text(LINEAR)
        with tarfile.open(work / f"{name}.tar.gz", "w:gz") as tar:
            tar.add(work / name / "model.json", "model.json")
            tar.add(work / name / "code" / "inference.py", "code/inference.py")
    direct, ours, info, flips = [], [], {}, 0
    for _ in range(n):
        out = subprocess.run([sys.executable, "-c", DIRECT, str(work)], capture_output=True, text=True, check=True)
        direct.append(json.loads(out.stdout)["seconds"])
        flips = json.loads(out.stdout)["flips"]
        out = subprocess.run([sys.executable, "-c", DIFF_ONCE, str(work)], capture_output=True, text=True, check=True)
        info = json.loads(out.stdout)
        ours.append(info["seconds"])
    rep.add("100,000 rows, both models predicted with numpy directly (floor)", direct)
    agrees = round(info["flip_rate"] * info["rows"]) == flips
    rep.add("model diff, 100,000 rows (load, predict, latency, compare)", ours, reference=statistics.median(direct),
            ref_name="direct", budget="<= 6 s, same flips", ok=statistics.median(ours) <= 6.0 and agrees,
            note=f"flip rate {info['flip_rate']:.4f}; numpy counts {flips} flips")  # fmt: skip
    rep.add("  model diff peak memory: mlops-ci's process", [info["parent_mb"]], unit="MB", budget="<= 512 MB",
            ok=info["parent_mb"] <= 512)  # fmt: skip
    rep.add("  model diff peak memory: a model's worker", [info["worker_mb"]], unit="MB", budget="<= 512 MB",
            ok=info["worker_mb"] <= 512)  # fmt: skip


# -- 5. run store at scale -------------------------------------------------------------------------
def _record_history(store: Any, shas: list[str]) -> None:
    """10,000 sealed runs: 9,999 over the older commits (the newest 500 have none, so the
    baseline walk is long), and one on the newest commit."""
    from mlops_ci import integrity
    from mlops_ci.records import Run

    for i in range(9_999):
        sha = shas[500 + i % (len(shas) - 500)]
        run = Run(run_id=f"{sha[:8]}-{i:06x}", project="big", sha=sha, branch="main", config_digest="d",
                  status="completed", backend="local", started=i, finished=i + 1.0,
                  metrics={f"m{k}": 0.5 + k * 0.01 for k in range(10)}, params={"lr": 0.1})  # fmt: skip
        series = {"loss": [1.0 / (j + 1) for j in range(100)]}
        store.record_run(integrity.seal_run(run, series), series)
    head = Run(run_id=f"{shas[0][:8]}-head", project="big", sha=shas[0], branch="main", config_digest="d",
               status="completed", backend="local", started=1e9, finished=1e9 + 1,
               metrics={f"m{k}": 0.5 + k * 0.01 for k in range(10)})  # fmt: skip
    store.record_run(integrity.seal_run(head, {"loss": [0.5] * 100}), {"loss": [0.5] * 100})


def bench_store(rep: Report, n: int, tmp: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from mlops_ci.backends.sqlite_store import SqliteStore

    repo = tmp / "history"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commits = 5000
    stream = []
    cfg = "project: big\nmetrics: {m0: maximize}\ngate:\n  rules:\n    - {metric: m0, max_regression: 5%}\n"
    for i in range(commits):
        stream.append(f"commit refs/heads/main\nmark :{i + 1}\ncommitter b <b@x.invalid> {1_700_000_000 + i} +0000\n"
                      f"data {len(str(i))}\n{i}\n")  # fmt: skip
        if i == 0:
            stream.append(f"M 644 inline mlops-ci.yaml\ndata {len(cfg)}\n{cfg}\n")
        body = f"{i}\n"
        stream.append(f"M 644 inline counter.txt\ndata {len(body)}\n{body}\n")
    git(repo, "fast-import", "--quiet", stdin="".join(stream).encode())
    git(repo, "checkout", "-q", "main")
    shas = git(repo, "rev-list", "main").split()  # newest first
    store = SqliteStore(repo / ".mlops-ci" / "store.db")
    t0 = time.perf_counter()
    _record_history(store, shas)
    store.close()
    rep.add("store setup: 10,000 runs recorded (one transaction each)", [time.perf_counter() - t0],
            note=f"{commits:,} commits")  # fmt: skip
    for label, args in (("runs (list)", ["runs"]), ("report (baseline 500 commits back)", ["report", "--json"]),
                        ("gate (baseline lookup + verdict)", ["gate"])):  # fmt: skip
        s = timed([MLOPS_CI, *args], n, cwd=repo)
        mb = peak_rss_mb([MLOPS_CI, *args], repo)
        rep.add(f"10,000 runs / 5,000 commits: {label}", s, budget="<= 1 s", ok=statistics.median(s) <= 1.0,
                note=f"peak RSS {mb:.0f} MB")  # fmt: skip


def _pack_bytes(repo: Path) -> int:
    """The bytes of a repository's objects (packs and loose)."""
    return sum(p.stat().st_size for p in (repo / ".git" / "objects").rglob("*") if p.is_file())


def bench_git_store(rep: Report, n: int, tmp: Path) -> None:
    """The same 10,000 runs in the git store: the records of a bare "origin" (standing for
    GitHub), read by the project's clone. Warm: the clone has fetched the store before (each
    command still fetches the ref, finding nothing new); cold: a machine's first command."""
    sys.path.insert(0, str(ROOT))
    from mlops_ci.backends.object_store import ObjectStore, dumps

    class Memory(ObjectStore):
        """ObjectStore's own record logic over a dict: the tree the git store would hold after
        10,000 record_run calls, built without 30,000 pushes."""

        kind = "memory"

        def __init__(self) -> None:
            self.project, self.root, self.clock = "big", "projects/big", time.time
            self.objects: dict[str, bytes] = {}
            self.parsed: dict[str, Any] = {}

        def _get(self, key: str) -> tuple[Any, str] | None:
            return (json.loads(self.objects[key]), "x") if key in self.objects else None

        def _create(self, key: str, body: bytes) -> str:
            assert key not in self.objects
            self.objects[key] = body
            return "x"

        def _replace(self, key: str, body: bytes, etag: str | None) -> str | None:
            self.objects[key] = body
            return "x"

        def _update(self, key: str, change: Callable[[Any], Any], default: Any) -> Any:
            # the index kept parsed (written once at the end): 10,000 re-serialisations of a
            # growing JSON object would make this set-up quadratic
            self.parsed[key] = change(self.parsed.get(key, default))
            return self.parsed[key]

    repo = tmp / "history"  # bench_store's: 5,000 commits
    if not repo.is_dir():
        bench_store(rep, 1, tmp)
    shas = git(repo, "rev-list", "main").split()
    mem = Memory()
    t0 = time.perf_counter()
    _record_history(mem, shas)
    mem.objects.update({key: dumps(value) for key, value in mem.parsed.items()})
    origin = tmp / "origin.git"
    git(tmp, "init", "-q", "--bare", str(origin))
    stream = [b"commit refs/mlops-ci/store\ncommitter b <b@x.invalid> 1700000000 +0000\ndata 5\nstore\n"]
    for key, body in mem.objects.items():
        stream.append(f"M 644 inline {key}\ndata {len(body)}\n".encode() + body + b"\n")
    git(origin, "fast-import", "--quiet", stdin=b"".join(stream))
    size = sum(len(b) for b in mem.objects.values())
    rep.add("git store setup: the same 10,000 runs as one tree", [time.perf_counter() - t0],
            note=f"{len(mem.objects):,} records, {size / 2**20:.0f} MiB of JSON")  # fmt: skip
    git(repo, "remote", "add", "origin", str(origin))
    env = {**os.environ, "MLOPS_CI_STORE": "git"}
    cold = []
    for i in range(n):  # a fresh machine each time: a clone of the project without the store's objects
        fresh = tmp / f"fresh{i}"
        git(tmp, "clone", "-q", "--no-local", str(repo), str(fresh))
        git(fresh, "remote", "set-url", "origin", str(origin))
        before = _pack_bytes(fresh)
        cold += timed([MLOPS_CI, "runs"], 1, cwd=fresh, env=env)
        fetched = _pack_bytes(fresh) - before
    rep.add("git store, 10,000 runs: runs on a fresh clone (cold: fetches the store's tree)", cold,
            note=f"fetched {fetched / 2**20:.1f} MiB from a local bare origin: add GitHub's transfer time")  # fmt: skip
    for label, args in (("runs (list)", ["runs"]), ("report (baseline 500 commits back)", ["report", "--json"]),
                        ("gate (baseline lookup + verdict pushed)", ["gate"])):  # fmt: skip
        s = timed([MLOPS_CI, *args], n, cwd=repo, env=env)
        mb = peak_rss_mb([MLOPS_CI, *args], repo, env)
        rep.add(f"git store, 10,000 runs, warm: {label}", s, budget="<= 1 s", ok=statistics.median(s) <= 1.0,
                note=f"peak RSS {mb:.0f} MB")  # fmt: skip


# -- 6. S3 upload dedupe ---------------------------------------------------------------------------
def bench_s3(rep: Report, tmp: Path) -> None:
    try:
        import boto3
        from moto import mock_aws
    except ImportError:
        rep.add("S3 artifact upload dedupe", [0.0], unit="bytes", note="moto not installed: skipped")
        return
    from mlops_ci._files import sha256_file
    from mlops_ci.backends.s3_store import S3Location, S3Store

    artifact = tmp / "model.tar.gz"
    artifact.write_bytes(os.urandom(8 * 1024 * 1024))
    digest = sha256_file(artifact)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="bench")
        store = S3Store(S3Location("bench", "p"), "bench", client)
        store.put_artifact(artifact, digest)
        first = store.uploaded_bytes
        store.put_artifact(artifact, digest)
        second = store.uploaded_bytes - first
    rep.add("S3 artifact upload, first time (8 MiB)", [float(first)], unit="bytes")
    rep.add("S3 artifact upload, unchanged artifact", [float(second)], unit="bytes", budget="0", ok=second == 0,
            note="the SageMaker source upload will use the same content addressing")  # fmt: skip


# -- 7. endpoint serving through the router, beside gunicorn ----------------------------------------
_WSGI = """\
# The peer: what SageMaker's sklearn image runs (gunicorn in front of the user's model_fn and
# predict_fn), reduced to a minimal WSGI app over the same artifact.
import json, os, sys
import numpy as np
MODEL_DIR = os.environ["BENCH_MODEL_DIR"]
sys.path.insert(0, os.path.join(MODEL_DIR, "code"))
import inference
model = inference.model_fn(MODEL_DIR)
predict = getattr(inference, "predict_fn", lambda data, m: m.predict(data))
def app(environ, start_response):
    if environ["PATH_INFO"] == "/ping":
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
        return [b"{}"]
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    data = json.loads(body)
    out = json.dumps(np.asarray(predict(np.asarray(data, dtype=float), model)).tolist()).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]
"""
_ROW = b"[[0.1, -0.5, 1.2, 0.3, -1.1, 0.4, 0.0, -0.7]]"


def _load(port: int, clients: int, seconds: float, keep_alive: bool = True) -> dict[str, Any]:
    """`clients` threads POST one row for `seconds`; requests/s, p50/p99 latency, failures and
    the versions that answered (X-Mlops-Ci-Version)."""
    import http.client
    import threading

    stop = time.monotonic() + seconds
    lat: list[float] = []
    failures: list[str] = []
    versions: dict[str, int] = {}
    lock = threading.Lock()

    def one() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        seen: dict[str, int] = {}
        bad: list[str] = []
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body=_ROW, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200 or not data.startswith(b"["):
                    bad.append(f"HTTP {resp.status}: {data[:80]!r}")
                v = resp.getheader("X-Mlops-Ci-Version") or ""
                seen[v] = seen.get(v, 0) + 1
            except (OSError, http.client.HTTPException) as exc:
                bad.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append(time.perf_counter() - t)
            if not keep_alive:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.close()
        with lock:
            lat.extend(mine)
            failures.extend(bad)
            for k, n in seen.items():
                versions[k] = versions.get(k, 0) + n

    threads = [threading.Thread(target=one) for _ in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    lat.sort()
    return {"rps": len(lat) / wall, "p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99)],
            "n": len(lat), "failures": failures, "versions": versions}  # fmt: skip


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(port: int, path: str = "/ping", seconds: float = 60) -> None:
    import http.client

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port}")


def bench_serving(rep: Report, tmp: Path, seconds: float) -> None:
    import tarfile

    gunicorn = shutil.which("gunicorn", path=str(BIN))
    repo = tmp / "serve"
    shutil.copytree(ROOT / "examples" / "classifier", repo, ignore=shutil.ignore_patterns("__pycache__", ".mlops-ci"))
    env = {**os.environ, **GIT_ENV}

    def cli(*args: str) -> str:
        out = subprocess.run([MLOPS_CI, *args], cwd=repo, env=env, check=True, capture_output=True, text=True)
        return out.stdout

    cfg = repo / "mlops-ci.yaml"
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "baseline")
    cli("train")
    for n_trees, tag in ((41, "v1.0.0"), (42, "v1.1.0")):
        cfg.write_text(cfg.read_text().replace(f"n_estimators: {n_trees - 1}", f"n_estimators: {n_trees}"))
        git(repo, "commit", "-qam", tag)
        cli("train")
        cli("gate")
        cli("promote")
        git(repo, "tag", tag)
    cli("deploy", "v1.0.0")
    try:
        (live,) = [e for e in json.loads(cli("endpoints", "--json")) if e["name"] == "production"]
        router = int(live["url"].rsplit(":", 1)[1])
        figures: dict[str, dict[str, Any]] = {}
        for clients, keep in ((1, True), (1, False), (32, True)):
            label = f"{clients} {'keep-alive' if keep else 'new-connection'} client{'s' if clients > 1 else ''}"
            figures[f"router {label}"] = _load(router, clients, seconds, keep)
        peer = None
        if gunicorn:
            model_dir = tmp / "peer-model"
            model_dir.mkdir()
            (mv,) = [m for m in json.loads(cli("models", "--json")) if m["version"] == 1]
            artifact = Path(mv["artifact_uri"].removeprefix("file://"))
            with tarfile.open(artifact) as tar:
                tar.extractall(model_dir, filter="data")
            (tmp / "peer_app.py").write_text(_WSGI)
            port = _free_port()
            workers = str(os.cpu_count() or 1)
            peer = subprocess.Popen([gunicorn, "-k", "gthread", "-w", workers, "--threads", "8", "--keep-alive", "60",
                                     "-b", f"127.0.0.1:{port}", "--chdir", str(tmp), "peer_app:app"],
                                    env={**env, "BENCH_MODEL_DIR": str(model_dir)},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            _wait_http(port)
            for clients, keep in ((1, True), (1, False), (32, True)):
                label = f"{clients} {'keep-alive' if keep else 'new-connection'} client{'s' if clients > 1 else ''}"
                figures[f"gunicorn {label}"] = _load(port, clients, seconds, keep)
            peer.terminate()
            peer.wait(30)
        for name, f in figures.items():
            note = f"p50 {f['p50'] * 1000:.2f} ms, p99 {f['p99'] * 1000:.2f} ms, {len(f['failures'])} failed"
            rep.add(f"serving, {name}: requests/s", [f["rps"]], unit="req/s", note=note)
        ka, new = figures["router 1 keep-alive client"], figures["router 1 new-connection client"]
        rep.add("serving: 1 keep-alive client vs a new connection per request", [ka["rps"]], unit="req/s",
                reference=new["rps"], ref_name="new connection", budget=">= 1x",
                ok=ka["rps"] >= new["rps"])  # fmt: skip
        many = figures["router 32 keep-alive clients"]
        if "gunicorn 32 keep-alive clients" in figures:
            g = figures["gunicorn 32 keep-alive clients"]
            rep.add("serving: 32 keep-alive clients, router vs gunicorn", [many["rps"]], unit="req/s",
                    reference=g["rps"], ref_name="gunicorn (gthread)", budget=">= 0.5x gunicorn",
                    ok=many["rps"] >= 0.5 * g["rps"], note=f"gunicorn -w {os.cpu_count()} --threads 8")  # fmt: skip
        else:
            rep.add("serving: 32 keep-alive clients, router vs gunicorn", [many["rps"]], unit="req/s",
                    budget=">= 0.5x gunicorn", ok=False,
                    note="gunicorn is not installed: `make bench` installs it")  # fmt: skip
        # Deploy during load: two blue/green switches under 8 keep-alive clients.
        import threading

        result: dict[str, Any] = {}
        loader = threading.Thread(target=lambda: result.update(_load(router, 8, seconds * 4)))
        loader.start()
        time.sleep(seconds / 2)
        cli("deploy", "v1.1.0")
        cli("rollback", "production")
        loader.join()
        rep.add("deploy during load (8 clients, 2 switches): failed requests", [float(len(result["failures"]))],
                unit="count", budget="0", ok=not result["failures"] and len(result["versions"]) >= 2,
                note=f"{result['n']} requests, versions answering {result['versions']}"
                + (f"; first failure {result['failures'][0]}" if result["failures"] else ""))  # fmt: skip
        _bench_capture(rep, repo, router, seconds)
    finally:
        subprocess.run([MLOPS_CI, "endpoint", "stop", "production"], cwd=repo, env=env, capture_output=True,
                       check=False)  # fmt: skip


def _bench_capture(rep: Report, repo: Path, router: int, seconds: float) -> None:
    """Capture on (every request) vs off, side by side on the same router and model server: the
    capture entry of target.json switched as a deploy writes it, off and on alternately, 3 rounds."""
    d = repo / ".mlops-ci" / "endpoints" / "production"
    plain = json.loads((d / "target.json").read_text())
    plain.pop("capture", None)
    on = {**plain, "capture": {"dir": str(d / "capture"), "endpoint": "production", "percent": 100,
                               "max_payload_bytes": 1 << 20, "rotate_bytes": 16 << 20, "csv": ["text/csv"],
                               "json": ["application/json"]}}  # fmt: skip

    def target(t: dict[str, Any]) -> None:
        tmp = d / "target.json.bench"
        tmp.write_text(json.dumps(t))
        os.replace(tmp, d / "target.json")
        time.sleep(0.2)

    rps: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(3):
        for label, t in (("off", plain), ("on", on)):
            target(t)
            rps[label].append(_load(router, 8, seconds)["rps"])
    target(plain)
    written = sum(1 for f in (d / "capture").rglob("*.jsonl") for _ in f.open())
    off, ours = statistics.median(rps["off"]), statistics.median(rps["on"])
    rep.add("serving, 8 keep-alive clients, capture on (every request) vs off", rps["on"], unit="req/s",
            reference=off, ref_name="capture off", budget=">= 0.9x off", ok=ours >= 0.9 * off,
            note=f"{written} records written; off {', '.join(f'{x:.0f}' for x in rps['off'])} req/s")  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results.json"))
    p.add_argument("--repeat", type=int, default=15, help="runs per start-up figure (others use a third)")
    p.add_argument("--seconds", type=float, default=3.0, help="duration of each serving load")
    p.add_argument("--only", help="run only the steps whose title contains this")
    a = p.parse_args()
    rep = Report()
    n_small = max(3, a.repeat // 3)
    with tempfile.TemporaryDirectory(prefix="mlops-ci-bench-") as d:
        tmp = Path(d)
        steps: list[tuple[str, Callable[[], None]]] = [
            ("start-up", lambda: bench_startup(rep, a.repeat)),
            ("diff and report", lambda: bench_diff(rep, n_small, tmp)),
            ("sticky comment", lambda: bench_comment(rep, n_small)),
            ("local training", lambda: bench_training(rep, n_small, tmp)),
            ("local hosts", lambda: bench_hosts(rep, n_small, tmp)),
            ("local search", lambda: bench_search(rep, 3, tmp)),
            ("model diff", lambda: bench_model_diff(rep, 3, tmp)),
            ("run store at scale", lambda: bench_store(rep, n_small, tmp)),
            ("git store at scale", lambda: bench_git_store(rep, n_small, tmp)),
            ("S3 dedupe", lambda: bench_s3(rep, tmp)),
            ("endpoint serving", lambda: bench_serving(rep, tmp, a.seconds)),
        ]
        for title, fn in steps:
            if a.only and a.only not in title:
                continue
            print(f"\n== {title}", flush=True)
            fn()
    failed = [r["name"] for r in rep.rows if r["pass"] is False]
    result = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "figures": rep.rows,
        "failed": failed,
    }
    Path(a.output).write_text(json.dumps(result, indent=2))
    print(f"\n{len(rep.rows)} figures, {len(failed)} over budget; JSON: {a.output}")
    for name in failed:
        print(f"  over budget: {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
