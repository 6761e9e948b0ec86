"""Several hosts on the laptop: `training.instance_count: N` runs algo-1..N as processes, each with
its own SageMaker layout and its share of a sharded channel, torchrun's rendezvous for
`torch_distributed`, and only algo-1's model packed. The script below really communicates: a
plain-socket all-reduce over MASTER_ADDR/MASTER_PORT with RANK/WORLD_SIZE, the variables
torch.distributed's env:// initialisation reads. What each host sees is also read back through
the SageMaker training toolkit's own `Environment()` (sagemaker-training), the ground truth of
what a script on SageMaker is told."""

from __future__ import annotations

import json
import tarfile
import textwrap
from pathlib import Path

import pytest

from tests.conftest import Project, git

ALL_REDUCE = textwrap.dedent(
    """
    import json, os, socket, time

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    host = os.environ["SM_CURRENT_HOST"]
    train = os.environ["SM_CHANNEL_TRAIN"]
    files = sorted(os.path.relpath(os.path.join(d, f), train) for d, _, fs in os.walk(train) for f in fs)
    local = sum(int(open(os.path.join(train, f)).read()) for f in files)
    toolkit = {}
    if os.environ.get("WITH_TOOLKIT"):
        from sagemaker_training import environment
        env = environment.Environment()
        theirs = env.to_env_vars()
        toolkit = {
            "current_host": env.current_host, "hosts": env.hosts, "master": env.master_hostname,
            "is_master": env.is_master, "distribution_hosts": env.distribution_hosts,
            "framework_params": env.additional_framework_parameters,
            "channel": sorted(os.listdir(env.channel_input_dirs["train"])),
            # every SM_ variable we set says what the toolkit would have set
            "differs": sorted(k for k, v in theirs.items() if k in os.environ and os.environ[k] != v
                              and k != "SM_TRAINING_ENV"),
        }
        ours, tks = json.loads(os.environ["SM_TRAINING_ENV"]), json.loads(theirs["SM_TRAINING_ENV"])
        toolkit["differs"] += sorted("SM_TRAINING_ENV." + k for k in ours if ours[k] != tks.get(k))
    mine = {"host": host, "rank": rank, "files": files, "local": local, "toolkit": toolkit}
    if rank == 0:  # the leader gathers every host's part, sums, and sends the sum back
        server = socket.create_server((addr, port))
        views, peers = [mine], []
        for _ in range(world - 1):
            conn, _ = server.accept()
            views.append(json.loads(conn.makefile().readline()))
            peers.append(conn)
        total = sum(v["local"] for v in views)
        for conn in peers:
            conn.sendall(f"{total}\\n".encode())
            conn.close()
        out = {"total": total, "views": sorted(views, key=lambda v: v["rank"])}
    else:
        for _ in range(800):
            try:
                conn = socket.create_connection((addr, port))
                break
            except OSError:
                time.sleep(0.025)
        conn.sendall((json.dumps(mine) + "\\n").encode())
        total = int(conn.makefile().readline())
        out = {"total": total}
    with open(os.path.join(os.environ["SM_MODEL_DIR"], host + ".json"), "w") as fh:
        json.dump(out, fh)
    print(f"total={total}", flush=True)
    """
)

CONFIG = """\
project: dist
training:
  entry_point: train.py
  instance_count: 2
  distribution: {torch_distributed: {enabled: true}}
  channels:
    train: {uri: data/train, distribution: ShardedByS3Key}
  metric_definitions: [{name: total, regex: 'total=([0-9]+)'}]
"""


def _project(tmp_path: Path, script: str = ALL_REDUCE, config: str = CONFIG, files: int = 5) -> Project:
    repo = tmp_path / "dist"
    (repo / "data" / "train" / "part").mkdir(parents=True)
    for i in range(files):  # values 1, 2, 4, ...: any sum says which files took part
        sub = "part/" if i % 2 else ""
        (repo / "data" / "train" / f"{sub}x{i}.txt").write_text(str(2**i))
    (repo / "train.py").write_text(script)
    (repo / "mlops-ci.yaml").write_text(config)
    (repo / ".gitignore").write_text(".mlops-ci/\n")
    git(repo, "init", "-q", "-b", "main")
    p = Project(repo)
    p.commit("distributed")
    return p


def _members(run: dict[str, object]) -> dict[str, dict[str, object]]:
    with tarfile.open(str(run["artifact_uri"]).removeprefix("file://")) as tar:
        out = {}
        for name in tar.getnames():
            f = tar.extractfile(name)
            if f is not None:
                out[name] = json.loads(f.read())
        return out


def test_two_hosts_all_reduce_and_only_the_leaders_model_is_packed(tmp_path: Path):
    p = _project(tmp_path)
    run = json.loads(p.ok("train", "--json"))["run"]
    members = _members(run)
    assert list(members) == ["algo-1.json"]  # algo-2 wrote a model too, on its own host
    leader = members["algo-1.json"]
    assert leader["total"] == 31  # 1+2+4+8+16: every file took part once, from both hosts
    views = leader["views"]
    assert [(v["host"], v["rank"]) for v in views] == [("algo-1", 0), ("algo-2", 1)]
    assert all(v["local"] > 0 for v in views)  # both hosts held data and took part
    # ShardedByS3Key: disjoint shares whose union is the channel, subdirectories kept
    shares = [set(v["files"]) for v in views]
    assert not shares[0] & shares[1]
    assert shares[0] | shares[1] == {"x0.txt", "part/x1.txt", "x2.txt", "part/x3.txt", "x4.txt"}
    assert run["metrics"] == {"total": 31.0}  # the leader's log line


def test_each_host_is_what_the_training_toolkit_says_it_is(tmp_path: Path):
    pytest.importorskip("sagemaker_training")
    config = CONFIG.replace(
        "  entry_point: train.py\n", "  entry_point: train.py\n  environment: {WITH_TOOLKIT: '1'}\n"
    )
    p = _project(tmp_path, config=config)
    run = json.loads(p.ok("train", "--json"))["run"]
    views = _members(run)["algo-1.json"]["views"]
    for v in views:
        tk = v["toolkit"]
        assert tk["current_host"] == v["host"] and tk["hosts"] == ["algo-1", "algo-2"]
        assert tk["master"] == "algo-1" and tk["is_master"] == (v["host"] == "algo-1")
        # the toolkit reads our hyperparameter as a distribution: it would launch torchrun
        assert tk["distribution_hosts"] == ["algo-1", "algo-2"]
        assert tk["framework_params"] == {
            "sagemaker_torch_distributed_enabled": True,
            "sagemaker_instance_type": "local",
        }
        assert tk["channel"] == sorted({f.split("/")[0] for f in v["files"]})
        assert tk["differs"] == []


def test_one_host_failing_fails_the_job_and_stops_the_others(tmp_path: Path):
    script = textwrap.dedent(
        """
        import os, sys, time
        if os.environ["SM_CURRENT_HOST"] == "algo-2":
            with open(os.path.join(os.environ["SM_OUTPUT_DIR"], "failure"), "w") as fh:
                fh.write("out of memory on algo-2")
            sys.exit(3)
        time.sleep(120)  # a leader waiting for a peer that will never come
        """
    )
    p = _project(
        tmp_path, script=script, config=CONFIG.replace("  metric_definitions", "  max_run: 300\n  metric_definitions")
    )
    code, _, err = p.cli("train")
    assert code == 6, err
    assert "algo-2: out of memory on algo-2" in err


def test_a_model_or_metrics_written_on_another_host_only_is_said(tmp_path: Path):
    script = textwrap.dedent(
        """
        import json, os
        if os.environ["SM_CURRENT_HOST"] == "algo-2":
            with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as fh:
                fh.write("{}")
            with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "metrics.json"), "w") as fh:
                json.dump({"total": 1}, fh)
        """
    )
    p = _project(tmp_path, script=script)
    code, _, err = p.cli("train")
    assert code == 0, err
    assert "algo-2 wrote SM_MODEL_DIR but algo-1 did not" in err
    assert "algo-2 wrote metrics.json but algo-1 did not" in err
