"""`mlops-ci train` in temporary git repositories: the SageMaker contract, failures, idempotence."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.conftest import Project, git, run_module


def test_train_records_a_run_with_metrics_data_and_artifact(project: Project):
    sha = project.git("rev-parse", "HEAD")
    code, out, err = project.cli("train", "--json")
    assert code == 0, err
    run = json.loads(out)["run"]
    assert run["sha"] == sha and run["status"] == "completed" and run["branch"] == "main"
    assert run["metrics"] == {"accuracy": 0.9, "loss": 0.2, "rows": 3.0}
    assert run["params"] == {"quality": 0.9, "scale": 1.0, "broken": 0}
    assert run["data"]["train"]["source"] == "commit"
    assert len(run["artifact_sha256"]) == 64
    import hashlib

    artifact = Path(run["artifact_uri"].removeprefix("file://"))
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == run["artifact_sha256"]
    import tarfile

    with tarfile.open(artifact) as tar:
        assert sorted(tar.getnames()) == ["code/inference.py", "model.json"]
    assert "| epoch=4 loss=0.2000" in err  # the log is streamed


def test_the_source_is_taken_from_the_commit_not_the_work_tree(project: Project):
    sha = project.git("rev-parse", "HEAD")
    (project.path / "train.py").write_text("raise SystemExit('uncommitted edit ran')\n")
    code, _, err = project.cli("train")
    assert code == 5 and "uncommitted changes" in err  # dirty tree refused
    code, out, err = project.cli("train", sha, "--json")  # an explicit SHA uses the commit's source
    assert code == 0, err
    assert json.loads(out)["run"]["metrics"]["accuracy"] == 0.9


def test_allow_dirty_runs_are_marked_and_never_promotable(project: Project):
    cfg = project.path / "mlops-ci.yaml"
    cfg.write_text(cfg.read_text().replace('"quality": 0.9', '"quality": 0.95'))
    code, out, err = project.cli("train", "--allow-dirty", "--json")
    assert code == 0, err
    run = json.loads(out)["run"]
    assert run["dirty"] and run["metrics"]["accuracy"] == 0.95
    code, _, err = project.cli("promote", run["run_id"])
    assert code == 5 and "dirty work tree" in err


def test_missing_entry_point_is_a_config_error(project: Project):
    cfg = project.path / "mlops-ci.yaml"
    cfg.write_text(cfg.read_text().replace("entry_point: train.py", "entry_point: nope.py"))
    project.commit("typo")
    code, _, err = project.cli("train")
    assert code == 2
    assert "training.entry_point 'nope.py' does not exist" in err
    assert json.loads(project.ok("runs", "--json")) == []  # nothing half-written


def test_missing_channel_path(project: Project):
    cfg = project.path / "mlops-ci.yaml"
    cfg.write_text(cfg.read_text().replace("train: data", "train: nowhere"))
    project.commit("bad channel")
    code, _, err = project.cli("train")
    assert code == 2 and "training.channels.train: 'nowhere' does not exist" in err
    assert list((project.path / ".mlops-ci" / "runs").iterdir()) == []  # no leftover run directory


def test_actions_annotation_points_at_the_config_line(project: Project, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    (project.path / "mlops-ci.yaml").write_text("project: fast\ntraning: {}\n")
    code, _, err = project.cli("config", "check")
    assert code == 2
    assert "::error file=mlops-ci.yaml,line=2::mlops-ci.yaml:2:1: traning: unknown key" in err


def test_config_show_masks_secrets_and_names_sources(project: Project, monkeypatch: pytest.MonkeyPatch):
    cfg = project.path / "mlops-ci.yaml"
    cfg.write_text(cfg.read_text().replace("  channels:", "  environment: {WANDB_API_KEY: s3cr3t}\n  channels:"))
    monkeypatch.setenv("MLOPS_CI_STORE", "sqlite:///elsewhere.db")
    out = project.ok("config", "show", "--json")
    data = json.loads(out)
    assert "s3cr3t" not in out and data["training"]["environment"] == {"WANDB_API_KEY": "***"}
    assert data["store"] == "sqlite:///elsewhere.db" and data["sources"]["store"] == "env MLOPS_CI_STORE"


SM_STYLE = textwrap.dedent(
    """
    import argparse, json, os
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--optimizer", type=str)
    parser.add_argument("--model-dir", type=str, default=os.environ["SM_MODEL_DIR"])
    parser.add_argument("--train", type=str, default=os.environ["SM_CHANNEL_TRAIN"])
    parser.add_argument("--validation", type=str, default=os.environ["SM_CHANNEL_VALIDATION"])
    parser.add_argument("--output-data-dir", type=str, default=os.environ["SM_OUTPUT_DATA_DIR"])
    args = parser.parse_args()
    seen = {
        "epochs": args.epochs, "optimizer": args.optimizer,
        "train_files": sorted(os.listdir(args.train)), "validation_files": sorted(os.listdir(args.validation)),
        "channels": json.loads(os.environ["SM_CHANNELS"]), "hps": json.loads(os.environ["SM_HPS"]),
        "hp_env": os.environ["SM_HP_OPTIMIZER"], "host": os.environ["SM_CURRENT_HOST"],
    }
    with open(os.path.join(args.output_data_dir, "metrics.json"), "w") as fh:
        json.dump({"epochs_seen": args.epochs, "curve": [3, 2, 1]}, fh)
    with open(os.path.join(args.model_dir, "seen.json"), "w") as fh:
        json.dump(seen, fh)
    """
)

TOOLKIT_STYLE = textwrap.dedent(
    """
    import json, os
    from sagemaker_training import environment
    env = environment.Environment()
    seen = {
        "hyperparameters": env.hyperparameters, "channels": sorted(env.channel_input_dirs),
        "model_dir": env.model_dir, "user_entry_point": env.user_entry_point, "hosts": env.hosts,
        "train_files": sorted(os.listdir(env.channel_input_dirs["train"])),
        "cmd_args": env.to_cmd_args(),
    }
    with open(os.path.join(env.model_dir, "seen.json"), "w") as fh:
        json.dump(seen, fh)
    print("accuracy=1.0")
    """
)


def _sm_project(tmp_path: Path, script: str, hps: str) -> Project:
    repo = tmp_path / "sm"
    (repo / "data" / "train").mkdir(parents=True)
    (repo / "data" / "val").mkdir()
    (repo / "data" / "train" / "a.csv").write_text("1,2\n")
    (repo / "data" / "val" / "b.csv").write_text("3,4\n")
    (repo / "train.py").write_text(script)
    (repo / "mlops-ci.yaml").write_text(
        "project: sm\ntraining:\n  entry_point: train.py\n"
        f"  hyperparameters: {hps}\n"
        "  channels: {train: data/train, validation: data/val}\n"
        "  metric_definitions: [{name: accuracy, regex: 'accuracy=([0-9.]+)'}]\n"
    )
    git(repo, "init", "-q", "-b", "main")
    p = Project(repo)
    p.commit("sm")
    return p


def _seen(run: dict[str, str]) -> dict[str, object]:
    import tarfile

    with tarfile.open(run["artifact_uri"].removeprefix("file://")) as tar:
        f = tar.extractfile("seen.json")
        assert f is not None
        return json.loads(f.read())


def test_sagemaker_style_script_runs_unchanged(tmp_path: Path):
    p = _sm_project(tmp_path, SM_STYLE, "{epochs: 3, optimizer: adam}")
    run = json.loads(p.ok("train", "--json"))["run"]
    assert _seen(run) == {
        "epochs": 3,
        "optimizer": "adam",
        "train_files": ["a.csv"],
        "validation_files": ["b.csv"],
        "channels": ["train", "validation"],
        "hps": {"epochs": 3, "optimizer": "adam"},
        "hp_env": "adam",
        "host": "algo-1",
    }
    assert run["metrics"] == {"epochs_seen": 3.0, "curve": 1.0}
    assert p.ok("runs", "show", run["run_id"]).count("metrics   curve=1, epochs_seen=3") == 1


def test_sagemaker_training_toolkit_sees_what_it_would_on_sagemaker(tmp_path: Path):
    pytest.importorskip("sagemaker_training")
    p = _sm_project(tmp_path, TOOLKIT_STYLE, "{n_estimators: 4, criterion: gini, ratio: 0.5, tags: {a: 1}}")
    run = json.loads(p.ok("train", "--json"))["run"]
    seen = _seen(run)
    assert seen["hyperparameters"] == {"n_estimators": 4, "criterion": "gini", "ratio": 0.5, "tags": {"a": 1}}
    assert seen["channels"] == ["train", "validation"]
    assert seen["train_files"] == ["a.csv"]
    assert seen["user_entry_point"] == "train.py"
    assert seen["hosts"] == ["algo-1"]
    assert seen["cmd_args"] == ["--criterion", "gini", "--n_estimators", "4", "--ratio", "0.5", "--tags", "a=1"]
    assert run["metrics"] == {"accuracy": 1.0}


def test_not_a_git_repository(tmp_path: Path):
    (tmp_path / "mlops-ci.yaml").write_text("project: x\n")
    proc = run_module("train", cwd=tmp_path)
    assert proc.returncode == 11
    assert "is not inside a git repository" in proc.stderr


def test_version_and_module_entry_point(tmp_path: Path):
    import mlops_ci

    proc = run_module("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"mlops-ci {mlops_ci.__version__}"
    proc = run_module("--help", cwd=tmp_path)
    assert proc.returncode == 0 and "exit codes (shared by every command)" in proc.stdout


def test_relative_config_path_from_env(project: Project, monkeypatch: pytest.MonkeyPatch):
    """A relative MLOPS_CI_CONFIG must not leave the project root relative (the job runs elsewhere)."""
    monkeypatch.chdir(project.path)
    monkeypatch.setenv("MLOPS_CI_CONFIG", "mlops-ci.yaml")
    from mlops_ci.cli import main

    assert main(["train"]) == 0


def test_a_commit_is_trained_with_the_config_in_the_work_tree_not_the_one_it_carries(project: Project):
    """The fork-training workflow's guarantee: it copies the base branch's mlops-ci.yaml over the
    PR's and trains the PR's SHA; the fork's own config (other hyperparameters, another role)
    is never what runs."""
    trusted = (project.path / "mlops-ci.yaml").read_text()
    fork = project.commit("fork: my own config", quality=0.99, fail="pwned")
    (project.path / "mlops-ci.yaml").write_text(trusted)  # what the workflow's `cp` does
    out = json.loads(project.ok("train", fork, "--json"))
    assert out["run"]["sha"] == fork
    assert out["run"]["params"]["quality"] == 0.9 and "fail" not in out["run"]["params"]
