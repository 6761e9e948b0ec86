"""The team store across machines: every verb a fresh process with its own empty state
directory, connected only by the S3 store (moto_server on 127.0.0.1, reached through
AWS_ENDPOINT_URL exactly as boto3 reaches AWS)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Project, run_cli, run_module

BUCKET = "mlops-ci-team"
STORE = f"s3://{BUCKET}/ml"


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
       "AWS_MAX_ATTEMPTS": "1"}  # fmt: skip


@pytest.fixture
def s3(moto_server: str) -> Iterator[object]:
    import boto3

    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    client.create_bucket(Bucket=BUCKET)
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    client.delete_bucket(Bucket=BUCKET)


@pytest.fixture
def machines(project: Project, moto_server: str, tmp_path: Path) -> Iterator[list[Machine]]:
    made: list[Machine] = []
    yield made
    for m in made:  # endpoints started through the S3 store are stopped through it
        for name in ("staging", "production"):
            m.run("endpoint", "stop", name)


class Machine:
    """A fresh CI machine: nothing local survives between verbs."""

    def __init__(self, project: Project, endpoint: str, tmp: Path, store: str = STORE):
        self.project, self.endpoint, self.tmp, self.store = project, endpoint, tmp, store
        self.n = 0

    def run(
        self, *args: str, env: dict[str, str] | None = None, process: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """In this process, or (`process`) in a new one: concurrent commands are processes."""
        self.n += 1
        home = self.tmp / f"machine-{self.n}"
        full = {**AWS, "AWS_ENDPOINT_URL": self.endpoint, "MLOPS_CI_STORE": self.store, "MLOPS_CI_HOME": str(home),
                **(env or {})}  # fmt: skip
        return (run_module if process else run_cli)(*args, cwd=self.project.path, env=full)

    def ok(self, *args: str, env: dict[str, str] | None = None) -> str:
        proc = self.run(*args, env=env)
        assert proc.returncode == 0, f"{args}: {proc.stderr}"
        return proc.stdout


def test_the_chain_holds_across_fresh_processes(project: Project, s3, moto_server: str, tmp_path: Path, machines):
    m = Machine(project, moto_server, tmp_path)
    machines.append(m)
    main_sha = project.git("rev-parse", "HEAD")
    m.ok("train")  # push to main, machine 1
    project.git("checkout", "-q", "-b", "tune")
    head = project.commit("tune", quality=0.93)
    m.ok("train")  # push to the branch, machine 2
    report = json.loads(m.ok("report", "--json"))  # PR job, machine 3: finds main's run as baseline
    assert report["comparison"]["baseline"]["sha"] == main_sha
    m.ok("gate")  # machine 4 records the verdict
    project.git("tag", "v1.0.0")
    assert "promoted fast v1" in m.ok("promote", "v1.0.0")  # tag job, machine 5: finds the verdict
    dep = json.loads(m.ok("deploy", "v1.0.0", "--json"))  # machine 6: finds the version and its artifact
    assert (dep["version"], dep["sha"], dep["outcome"]) == (1, head, "succeeded")
    history = [json.loads(line) for line in m.ok("store", "export").splitlines()]
    kinds = [r["kind"] for r in history]
    assert kinds.count("run") == 2 and kinds.count("verdict") == 1 and kinds.count("version") == 1
    assert [r["deployment"]["outcome"] for r in history if r["kind"] == "deployment"] == ["succeeded"]
    arts = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="ml/projects/fast/artifacts/")["Contents"]]
    assert len(arts) == 1  # both commits trained byte-identical models: stored once
    assert m.ok("store", "check").strip() == f"{STORE}: ok"


def test_an_unchanged_artifact_is_not_uploaded_again(project: Project, s3, moto_server: str, tmp_path: Path):
    m = Machine(project, moto_server, tmp_path)
    m.ok("train")
    key = s3.list_objects_v2(Bucket=BUCKET, Prefix="ml/projects/fast/artifacts/")["Contents"][0]["Key"]
    first = s3.head_object(Bucket=BUCKET, Key=key)["LastModified"]
    time.sleep(1.1)  # LastModified has one-second resolution
    m.ok("train", "--force")  # deterministic: same bytes, same digest
    assert s3.head_object(Bucket=BUCKET, Key=key)["LastModified"] == first
    assert len(s3.list_objects_v2(Bucket=BUCKET, Prefix="ml/projects/fast/artifacts/")["Contents"]) == 1


def test_concurrent_promotes_of_different_shas_get_distinct_versions(project: Project, s3, moto_server: str, tmp_path):
    m = Machine(project, moto_server, tmp_path)
    shas = []
    for q in (0.9, 0.91, 0.92, 0.93):
        shas.append(project.commit(f"q{q}", quality=q))
        m.ok("train")
        m.ok("gate")
    codes: list[int] = []

    def promote(sha: str) -> None:
        codes.append(m.run("promote", sha, process=True).returncode)

    threads = [threading.Thread(target=promote, args=(s,)) for s in shas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [0, 0, 0, 0]
    versions = json.loads(m.ok("models", "--json"))
    assert sorted(v["version"] for v in versions) == [1, 2, 3, 4]
    assert sorted(v["sha"] for v in versions) == sorted(shas)


def test_a_deploy_waits_for_the_lease_then_fails_naming_its_holder(
    project: Project, s3, moto_server: str, tmp_path, machines
):
    m = Machine(project, moto_server, tmp_path)
    machines.append(m)
    m.ok("train")
    m.ok("gate")
    m.ok("promote")
    project.git("tag", "v1.0.0")
    holder = {"owner": "https://github.com/acme/models/actions/runs/99", "token": "x", "expires": time.time() + 600}
    s3.put_object(Bucket=BUCKET, Key="ml/projects/fast/locks/endpoint-fast-production.json", Body=json.dumps(holder))
    proc = m.run("deploy", "v1.0.0", "--lock-timeout", "0.5")
    assert proc.returncode == 8
    assert "endpoint fast/production is locked by https://github.com/acme/models/actions/runs/99" in proc.stderr
    holder["expires"] = time.time() - 1  # the holder died: its lease expires and is taken over
    s3.put_object(Bucket=BUCKET, Key="ml/projects/fast/locks/endpoint-fast-production.json", Body=json.dumps(holder))
    dep = json.loads(m.ok("deploy", "v1.0.0", "--json"))
    assert dep["outcome"] == "succeeded"


def test_move_from_sqlite_to_s3_without_losing_history(project: Project, s3, moto_server: str, tmp_path):
    project.ok("train")
    project.git("checkout", "-q", "-b", "tune")
    project.commit("tune", quality=0.95)
    project.ok("train")
    project.ok("gate")
    project.ok("promote")
    export = tmp_path / "history.jsonl"
    project.ok("store", "export", "--output", str(export))
    m = Machine(project, moto_server, tmp_path)
    proc = m.run("store", "import", str(export))
    assert proc.returncode == 0, proc.stderr
    assert "2 run(s), 1 verdict(s), 1 version(s), 0 deployment(s), 0 skipped(s)" in proc.stderr
    assert (
        "0 run(s), 0 verdict(s), 0 version(s), 0 deployment(s), 4 skipped(s)"
        in m.run("store", "import", str(export)).stderr
    )
    assert m.ok("store", "check").strip() == f"{STORE}: ok"
    models = json.loads(m.ok("models", "--json"))
    assert models[0]["artifact_uri"].startswith(f"s3://{BUCKET}/ml/projects/fast/artifacts/")
    assert "already fast v1" in m.ok("promote")  # the imported verdict and version are found


def test_server_side_encryption_is_applied(project: Project, s3, moto_server: str, tmp_path):
    m = Machine(project, moto_server, tmp_path, store=f"{STORE}?sse=AES256")
    run = json.loads(m.ok("train", "--json"))["run"]
    head = s3.head_object(Bucket=BUCKET, Key=f"ml/projects/fast/runs/{run['run_id']}.json")
    assert head["ServerSideEncryption"] == "AES256"
    art = run["artifact_uri"].removeprefix(f"s3://{BUCKET}/")
    assert s3.head_object(Bucket=BUCKET, Key=art)["ServerSideEncryption"] == "AES256"


def test_bad_store_url_and_missing_bucket(project: Project, moto_server: str, tmp_path):
    m = Machine(project, moto_server, tmp_path, store="s3://no-such-bucket-here/x")
    proc = m.run("runs")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    bad = Machine(project, moto_server, tmp_path, store="s3://b/x?sse=rot13")
    proc = bad.run("config", "check")
    assert proc.returncode == 2 and "sse must be AES256 or aws:kms" in proc.stderr
