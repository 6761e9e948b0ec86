"""Models identified by their training inputs: reuse across commits (merge, squash, docs-only),
single-flight training, and the guards of CI jobs (runner-local state, fork code, checkout)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Project, fast_config


def runs(p: Project) -> list[dict[str, object]]:
    return json.loads(p.ok("runs", "--json"))


def test_a_docs_only_commit_reuses_the_run_and_points_at_the_original(project: Project):
    first = project.ok("train", "--json")
    (project.path / "README.md").write_text("# How to use the model\n")
    (project.path / "docs").mkdir()
    (project.path / "docs" / "guide.txt").write_text("more prose\n")
    docs = project.commit("docs only")
    code, out, err = project.cli("train", "--json")
    assert code == 0 and "same training inputs as" in err and "training fast at" not in err
    run = json.loads(out)["run"] if "run" in json.loads(out) else json.loads(out)
    original = json.loads(first)["run"] if "run" in json.loads(first) else json.loads(first)
    assert run["sha"] == docs and run["reused_from"] == original["run_id"]
    assert run["artifact_sha256"] == original["artifact_sha256"] and run["inputs_digest"] == original["inputs_digest"]
    lineage = json.loads(project.ok("lineage", docs, "--json"))
    assert lineage["run"]["reused_from"]["run_id"] == original["run_id"]
    assert "reused     the model of run" in project.ok("lineage", docs)


def test_a_code_change_or_a_changed_exclude_list_trains_again(project: Project):
    project.ok("train")
    (project.path / "train.py").write_text((project.path / "train.py").read_text() + "\n# a comment is code\n")
    project.commit("touch the script")
    _, _, err = project.cli("train")
    assert "training fast at" in err
    cfg = project.path / "mlops-ci.yaml"
    cfg.write_text(cfg.read_text().replace("  entry_point: train.py\n", "  entry_point: train.py\n  exclude: []\n", 1))
    project.commit("nothing excluded")
    _, _, err = project.cli("train")
    assert "training fast at" in err  # a different config digest: different inputs
    assert len(runs(project)) == 3


def test_a_merge_commit_can_be_released_without_its_own_gate(project: Project):
    project.ok("train")
    project.ok("gate")
    project.git("checkout", "-q", "-b", "tune")
    head = project.commit("better", quality=0.95)
    project.ok("train")
    project.ok("gate", "--base", "main")
    project.git("checkout", "-q", "main")
    project.git("merge", "-q", "--no-ff", "-m", "Merge tune", "tune")
    merged = project.git("rev-parse", "HEAD")
    project.git("tag", "v1.0.0")
    code, out, err = project.cli("promote", "v1.0.0", "--json")
    assert code == 0, err
    version = json.loads(out)["version"]
    assert version["sha"] == merged and "same training inputs as" in err
    verdicts = json.loads(project.ok("lineage", "v1.0.0", "--json"))["verdict"]
    assert verdicts["passed"] is True
    assert head != merged


@pytest.mark.parametrize("bad", ["/etc", "../up", "a\nb"])
def test_exclude_patterns_are_relative(project: Project, bad: str):
    (project.path / "mlops-ci.yaml").write_text(fast_config().replace(
        "  entry_point: train.py\n", f"  entry_point: train.py\n  exclude: [{json.dumps(bad)}]\n", 1))  # fmt: skip
    code, _, err = project.cli("config", "check")
    assert code == 2 and "training.exclude" in err


def test_config_extras_names_what_the_action_installs(project: Project, monkeypatch: pytest.MonkeyPatch):
    assert project.ok("config", "extras").strip() == ""
    monkeypatch.setenv("MLOPS_CI_STORE", "s3://bucket/prefix")
    assert project.ok("config", "extras").strip() == "s3"


def test_a_revert_to_an_earlier_model_is_gated_afresh(project: Project):
    """The verdict of A is relative to A's baseline: a revert R to A's model, whose baseline is
    the better model it reverts, does not inherit it."""
    project.ok("train")
    project.ok("gate")
    project.commit("better", quality=0.95)
    project.ok("train")
    project.ok("gate")
    project.git("revert", "--no-edit", "HEAD")
    code, _, err = project.cli("train")
    assert code == 0 and "same training inputs as" in err
    code, _, err = project.cli("promote")
    assert code == 5 and "never went through the gate" in err
    assert project.cli("gate")[0] == 1  # its own verdict: a 5.26% regression against the better model


def test_no_reuse_for_a_commit_whose_config_is_not_the_checkouts(project: Project):
    project.ok("train")
    project.ok("gate")
    project.git("checkout", "-q", "-b", "exp")
    exp = project.commit("only the config", quality=0.81)
    project.git("checkout", "-q", "main")
    # from main's checkout, exp's inputs would be computed with main's config: never attached
    code, _, err = project.cli("promote", exp)
    assert code == 4 and "has no completed run" in err
    assert [r["sha"] for r in runs(project)] == [project.git("rev-parse", "main")]


def test_dry_runs_tell_the_reuse_the_real_runs_make(project: Project):
    project.ok("train")
    project.git("checkout", "-q", "-b", "tune")
    project.commit("better", quality=0.95)
    project.ok("train")
    project.ok("gate", "--base", "main")
    (project.path / "README.md").write_text("# prose\n")
    project.commit("docs only")
    train_plan = json.loads(project.ok("train", "--dry-run", "--json"))["plan"]
    assert [step["action"] for step in train_plan] == ["record run (reused)", "record verdict (reused)"]
    promote_plan = json.loads(project.ok("promote", "--dry-run", "--json"))["plan"]
    assert [step["action"] for step in promote_plan] == [
        "record run (reused)", "record verdict (reused)", "register model version"]  # fmt: skip
    assert len(runs(project)) == 2  # the dry runs recorded nothing
    version = json.loads(project.ok("promote", "--json"))["version"]
    assert version["version"] == 1 and len(runs(project)) == 3
