"""report / gate / promote / models, driven through the CLI in temporary git repositories."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Project


@pytest.fixture
def reviewed(project: Project) -> tuple[Project, str, str]:
    """main trained (quality 0.9); branch `tune` with quality 0.92 and scale 0.5 trained."""
    main_sha = project.git("rev-parse", "HEAD")
    project.ok("train")
    project.git("checkout", "-q", "-b", "tune")
    head = project.commit("tune", quality=0.92, scale=0.5)
    project.ok("train")
    return project, main_sha, head


def test_report_shows_baseline_deltas_params_chart_and_marker(reviewed: tuple[Project, str, str]):
    project, main_sha, head = reviewed
    md = project.ok("report")
    assert md.startswith("<!-- mlops-ci:report project=fast -->\n")
    assert f"`{head[:8]}` vs `{main_sha[:8]}`" in md
    assert "**Head** " + head[:8] + " (tune) · **Baseline** " + main_sha[:8] + " (main)" in md
    assert "✅ **Gate passed**" in md
    assert "| accuracy | 0.9 | 0.92 | +0.02 (+2.22%) | 🟢 better |" in md
    assert "| loss | 0.2 | 0.1 | -0.1 (-50.00%) | 🟢 better |" in md
    assert "| rows | 3 | 3 | +0 (+0.00%) | 🔵 changed |" not in md  # same value → "same"
    assert "| rows | 3 | 3 | +0 (+0.00%) | ⚪ same |" in md
    assert "| quality | 0.9 | 0.92 |" in md and "| scale | 1.0 | 0.5 |" in md
    assert "```mermaid" in md and "line [1, 0.5, 0.3333, 0.25, 0.2]" in md


def test_report_json_carries_the_same_facts(reviewed: tuple[Project, str, str]):
    project, main_sha, head = reviewed
    data = json.loads(project.ok("report", "--json"))
    c = data["comparison"]
    assert (c["head"]["sha"], c["baseline"]["sha"]) == (head, main_sha)
    metrics = {m["name"]: (m["old"], m["new"], m["direction"]) for m in c["metrics"]}
    assert metrics == {"accuracy": (0.9, 0.92, "better"), "loss": (0.2, 0.1, "better"), "rows": (3.0, 3.0, "same")}
    params = {p["name"]: (p["old"], p["new"]) for p in c["params"]}
    assert params == {"quality": (0.9, 0.92), "scale": (1.0, 0.5)}
    assert c["series"]["loss"]["baseline"] == [1.0, 0.5, 0.3333, 0.25, 0.2]
    assert data["gate"]["passed"] is True and data["marker"] == "<!-- mlops-ci:report project=fast -->"


def test_report_writes_output_file_and_step_summary(reviewed, tmp_path, monkeypatch):
    project, _, _ = reviewed
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out_file = tmp_path / "comment.md"
    md = project.ok("report", "--output", str(out_file))
    assert out_file.read_text() == md
    assert summary.read_text().startswith("earlier step\n<!-- mlops-ci:report")


def test_baseline_skips_commits_without_runs(reviewed):
    project, main_sha, _ = reviewed
    project.git("checkout", "-q", "main")
    project.commit("docs only")  # main advances without a run
    project.git("checkout", "-q", "-b", "later")
    project.commit("later change", quality=0.91)
    project.ok("train")
    data = json.loads(project.ok("report", "--json", "--base", "main"))
    assert data["comparison"]["baseline"]["sha"] == main_sha
    assert "1 commit(s) before the merge-base" in data["comparison"]["baseline_note"]


def test_explicit_baseline(reviewed):
    project, _, head = reviewed
    data = json.loads(project.ok("report", "--json", "--baseline", head))
    assert data["comparison"]["baseline"]["sha"] == head
    code, _, err = project.cli("report", "--baseline", "nosuchref")
    assert code == 4 and "nosuchref" in err


def test_gate_exit_codes_and_failed_rule_names(reviewed):
    project, _, _ = reviewed
    code, out, _ = project.cli("gate")
    assert code == 0 and "PASS  accuracy >= 0.8" in out
    project.commit("regress", quality=0.82)  # -9% vs main: over the 5% limit, still >= 0.8
    project.ok("train")
    code, out, err = project.cli("gate")
    assert code == 1
    assert "FAIL  accuracy regresses by at most 5% vs baseline" in out
    assert "(mlops-ci.yaml:19)" in out
    assert "gate failed" in err and "regressed by 8.89%" in err


def test_first_run_has_no_baseline_and_only_absolute_rules_apply(project: Project):
    project.ok("train")
    md = project.ok("report")
    assert "no baseline: no earlier commit on 'main' has a run; only absolute rules apply" in md
    code, out, _ = project.cli("gate")
    assert code == 0 and "SKIP" in out


def test_gate_without_a_run_is_not_found(project: Project):
    code, _, err = project.cli("gate")
    assert code == 4 and "has no completed run" in err and "mlops-ci train" in err


def test_promote_refuses_failed_and_ungated_accepts_passed_once(reviewed):
    project, _, head = reviewed
    code, _, err = project.cli("promote")
    assert code == 5 and "never went through the gate" in err
    project.ok("gate")
    out = project.ok("promote")
    assert out.startswith(f"promoted fast v1 from {head[:8]}")
    assert "already fast v1" in project.ok("promote")
    models = json.loads(project.ok("models", "--json"))
    assert [(m["version"], m["sha"], m["stage"]) for m in models] == [(1, head, "approved")]

    failing = project.commit("regress", quality=0.5)
    project.ok("train")
    assert project.cli("gate")[0] == 1
    code, _, err = project.cli("promote")
    assert code == 5 and f"commit {failing[:8]} failed the gate" in err
    assert len(json.loads(project.ok("models", "--json"))) == 1


def test_verdict_under_old_rules_does_not_promote(reviewed):
    project, _, _ = reviewed
    project.ok("gate")
    cfg = project.path / "mlops-ci.yaml"
    cfg.write_text(cfg.read_text().replace("min: 0.8", "min: 0.85"))
    project.commit("tighter gate")  # same training inputs: the run is reused, its verdict is not
    code, _, err = project.cli("promote")
    assert code == 5 and "never went through the gate" in err, err


def test_tampered_artifact_is_not_promoted(reviewed):
    project, _, _ = reviewed
    project.ok("gate")
    run = json.loads(project.ok("runs", "show", "--json"))
    path = run["artifact_uri"].removeprefix("file://")
    with open(path, "ab") as fh:
        fh.write(b"tampered")
    code, _, err = project.cli("promote")
    assert code == 5 and "artifact digest mismatch" in err


def test_runs_list_and_show(reviewed):
    project, main_sha, head = reviewed
    out = project.ok("runs")
    lines = out.splitlines()
    assert lines[0].startswith("RUN") and len(lines) == 3
    assert head[:8] in lines[1] and main_sha[:8] in lines[2]
    shown = project.ok("runs", "show", main_sha[:10])
    assert f"commit    {main_sha} (main)" in shown
    code, _, err = project.cli("runs", "show", "deadbeef")
    assert code == 4 and "deadbeef" in err


def test_store_free_diff_of_two_metrics_files(project: Project, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"accuracy": 0.8, "loss": [1.0, 0.5], "old": 1}))
    b.write_text(json.dumps({"accuracy": 0.9, "loss": [1.0, 0.4]}))
    md = project.ok("diff", str(a), str(b), "--md")  # goals come from the project's mlops-ci.yaml
    assert "| accuracy | 0.8 | 0.9 | +0.1 (+12.50%) | 🟢 better |" in md
    assert "| loss | 0.5 | 0.4 | -0.1 (-20.00%) | 🟢 better |" in md
    assert "| old | 1 | — | — | ➖ removed |" in md
    assert "Gate" not in md and "<!--" not in md
    data = json.loads(project.ok("diff", str(a), str(b), "--json"))
    assert {m["name"]: m["direction"] for m in data["comparison"]["metrics"]} == {
        "accuracy": "better",
        "loss": "better",
        "old": "removed",
    }
    b.write_text("[1, 2]")
    code, _, err = project.cli("diff", str(a), str(b))
    assert code == 2 and "b.json" in err and "JSON object" in err


def test_lineage_of_an_endpoint_names_the_whole_chain_and_verifies_the_artifact(project: Project):
    from tests.integration.test_deploy import release

    sha = release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    doc = json.loads(project.ok("lineage", "production", "--json"))
    assert doc["endpoint"]["name"] == "production" and doc["model_version"]["version"] == 1
    assert doc["commit"]["sha"] == sha and doc["commit"]["tags"] == ["v1.0.0"]
    assert doc["commit"]["subject"] == "initial"
    assert doc["run"]["hyperparameters"] == {"quality": 0.9, "scale": 1.0, "broken": 0}
    assert doc["run"]["data"]["train"]["source"] == "commit"
    assert doc["config"]["training_digest"] == doc["run"]["config_digest"]
    assert doc["artifact"]["verified"] is True
    assert doc["verdict"]["passed"] is True and doc["verdict"]["rules"][0]["rule"] == "accuracy >= 0.8"
    assert [(d["endpoint"], d["outcome"], d["tag"]) for d in doc["deployments"]] == [
        ("production", "succeeded", "v1.0.0")
    ]
    assert json.loads(project.ok("lineage", "v1", "--json"))["commit"]["sha"] == sha  # a model version
    assert json.loads(project.ok("lineage", sha[:10], "--json"))["model_version"]["version"] == 1  # a SHA

    with open(doc["artifact"]["uri"].removeprefix("file://"), "ab") as fh:
        fh.write(b"tampered")
    code, out, err = project.cli("lineage", "production")
    assert code == 14
    assert "VERIFICATION FAILED: digest mismatch" in out and "failed verification" in err


def test_lineage_of_an_ungated_commit(project: Project):
    project.ok("train")
    out = project.ok("lineage", "HEAD")
    assert "verdict    none: this commit never went through the gate" in out
    code, _, err = project.cli("lineage", "nosuchthing")
    assert code == 4 and "nosuchthing" in err
