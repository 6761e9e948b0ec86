"""The composite actions, starter workflows and `mlops-ci init`: static safety rules. They run
under a real Actions runner in tests/gha/test_real_runner.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import mlops_ci
from mlops_ci import _pin
from mlops_ci.scaffold import USES, WORKFLOWS
from tests.conftest import ROOT, Project

ACTIONS = [*sorted((ROOT / "actions").glob("*/action.yml")), ROOT / "action.yml"]
WORKFLOW_FILES = sorted((ROOT / "workflow-templates").glob("*.yml")) + sorted(
    (ROOT / ".github" / "workflows").glob("*.yml")
)
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def _steps(doc: dict) -> Iterator[dict]:
    if "runs" in doc:
        yield from doc["runs"].get("steps", [])
    for job in (doc.get("jobs") or {}).values():
        yield from job.get("steps", [])


@pytest.mark.parametrize("path", ACTIONS + WORKFLOW_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_expression_in_run_blocks_and_third_party_actions_pinned(path: Path):
    text = path.read_text()
    doc = yaml.safe_load(text)
    for step in _steps(doc):
        if "run" in step:
            assert "${{" not in step["run"], f"{path.name}: pass values through env:, not into the script"
            assert "shell" in step or "runs" not in doc, f"{path.name}: composite steps need shell: bash"
        uses = step.get("uses")
        if uses and not uses.startswith("./"):
            assert PINNED.match(uses), f"{path.name}: {uses} is not pinned to a full commit SHA"
            assert re.search(re.escape(uses) + r" # v\d", text), f"{path.name}: {uses} lacks a # vX comment"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflows_have_least_privilege(path: Path):
    doc = yaml.safe_load(path.read_text())
    assert doc["permissions"] == {}, "top-level permissions: {} and per-job grants"
    for job in doc["jobs"].values():
        assert "permissions" in job
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False
    if "pull_request_target" in doc.get(True, doc.get("on", {})):
        # only the fork-training workflow, each job behind an approval, with the base's config
        assert path.name == "mlops-ci-fork-train.yml"
        assert doc["env"]["MLOPS_CI_REMOTE_ONLY"] == "true"  # mlops-ci refuses to train on the runner
        for job in doc["jobs"].values():
            assert job["environment"] == "fork-training"
            runs = [i for i, step in enumerate(job["steps"]) if "run" in step]
            assert [job["steps"][i]["run"] for i in runs] == [
                "rm -f pr/mlops-ci.yaml && cp trusted/mlops-ci.yaml pr/mlops-ci.yaml"
            ]
            first_mlops = min(i for i, st in enumerate(job["steps"]) if "mlops-ci/actions/" in st.get("uses", ""))
            assert runs[0] < first_mlops  # the base branch's config is in place before any mlops-ci step


def test_workflow_templates_are_the_packaged_ones_with_properties_and_their_icon():
    # GitHub reads an organisation's templates from `workflow-templates/` of its `.github`
    # repository: `<name>.yml` beside `<name>.properties.json`, whose iconName is an SVG file of
    # that directory named without its extension, or `octicon <name>`.
    here = ROOT / "workflow-templates"
    assert sorted(p.name for p in here.glob("*.yml")) == sorted(WORKFLOWS)
    for name in WORKFLOWS:
        shipped = (ROOT / "mlops_ci" / "templates" / "workflows" / name).read_text()
        assert (here / name).read_text() == shipped
        props = json.loads((here / name.replace(".yml", ".properties.json")).read_text())
        assert props["name"] and props["description"] and props["filePatterns"] and props["categories"]
        icon = props["iconName"]
        assert icon.startswith("octicon ") or (here / f"{icon}.svg").is_file(), f"{name}: no icon {icon}.svg"


def test_workflows_get_mlops_ci_from_its_actions_at_the_pinned_commit_never_from_an_index():
    for path in ACTIONS + WORKFLOW_FILES + sorted((ROOT / "actions").glob("*.sh")):
        text = path.read_text()
        assert not re.search(r"pip install[^\n]*mlops-ci[^\n]*==", text), f"{path.name} installs mlops-ci by name"
    for name in WORKFLOWS:
        text = (ROOT / "workflow-templates" / name).read_text()
        pins = {(m["repo"], m["ref"], m["version"]) for m in USES.finditer(text)}
        assert pins == {(_pin.ACTION_REPOSITORY, _pin.ACTION_SHA, _pin.ACTION_VERSION)}, name
        assert "mlops-ci/actions/" in text
    assert mlops_ci.__version__ == _pin.ACTION_VERSION


def test_the_pinned_commit_has_the_actions_of_this_tree():
    """The pin names a commit whose actions/ are these (so the templates call what is tested)."""
    import subprocess

    known = subprocess.run(["git", "cat-file", "-e", f"{_pin.ACTION_SHA}^{{commit}}"], cwd=ROOT, check=False)
    if known.returncode != 0:
        pytest.skip(f"{_pin.ACTION_SHA[:12]} is not in this clone's history")
    code = [p for p in (ROOT / "actions").rglob("*") if p.is_file() and p.suffix in (".yml", ".sh")]
    for rel in ["action.yml", *(str(p.relative_to(ROOT)) for p in code)]:
        old = subprocess.run(["git", "show", f"{_pin.ACTION_SHA}:{rel}"], cwd=ROOT, capture_output=True, check=False)
        assert old.returncode == 0 and old.stdout == (ROOT / rel).read_bytes(), f"{rel} changed since the pin: make pin"


def test_release_workflow_never_cancels_a_deploy_in_flight():
    doc = yaml.safe_load((ROOT / "workflow-templates" / "mlops-ci-release.yml").read_text())
    assert doc["concurrency"]["cancel-in-progress"] is False
    assert "environment" in doc["jobs"]["deploy"]


def test_init_pins_the_actions_to_a_given_commit_and_refuses_tags(tmp_path: Path):
    from tests.conftest import git

    git(tmp_path, "init", "-q")
    p = Project(tmp_path)
    sha = "ab" * 20
    p.ok("init", "--action-repo", "acme/mlops-ci-fork", "--action-ref", sha)
    text = (tmp_path / ".github" / "workflows" / "mlops-ci-pr.yml").read_text()
    assert f"acme/mlops-ci-fork/actions/train@{sha} # v{mlops_ci.__version__}" in text
    assert _pin.ACTION_SHA not in text
    code, _, err = p.cli("init", "--force", "--action-ref", "v1")
    assert code == 2 and "40-hex commit SHA" in err


def test_init_writes_workflows_and_config_and_refuses_to_overwrite(tmp_path: Path):
    from tests.conftest import git

    git(tmp_path, "init", "-q")
    p = Project(tmp_path)
    out = p.ok("init")
    # the hourly monitor would only fail on a config that monitors nothing: it waits for `monitoring:`
    assert out.splitlines()[0].startswith("skipped .github/workflows/mlops-ci-monitor.yml: mlops-ci.yaml has no")
    assert out.splitlines()[1 : len(WORKFLOWS) + 1] == [f"wrote {f}" for f in sorted(
        [f".github/workflows/{w}" for w in WORKFLOWS if w != "mlops-ci-monitor.yml"] + ["mlops-ci.yaml"])]  # fmt: skip
    # The starter config names the scripts a project needs: until they exist, `config check` says so.
    code, _, err = p.cli("config", "check")
    assert code == 2 and "training.entry_point: file 'train.py' does not exist" in err
    (tmp_path / "train.py").write_text("print('accuracy=0.9')\n")
    (tmp_path / "inference.py").write_text("def model_fn(model_dir):\n    return None\n")
    code, out, err = p.cli("config", "check")
    assert code == 0 and out.startswith("mlops-ci.yaml: ok"), err
    assert "training.channels.train: 'data/train' does not exist here" in err  # a warning: a step may make it
    assert ".mlops-ci/" in (tmp_path / ".gitignore").read_text()
    (tmp_path / "mlops-ci.yaml").write_text("project: mine\n")
    workflow = tmp_path / ".github" / "workflows" / WORKFLOWS[0]
    starter = workflow.read_text()
    workflow.write_text(starter + "# my change\n")
    code, _, err = p.cli("init")
    assert code == 5 and "already exist" in err and "--force" in err
    assert (tmp_path / "mlops-ci.yaml").read_text() == "project: mine\n"  # nothing overwritten
    out = p.ok("init", "--force")
    # --force brings the workflows up to date and never overwrites the user's config; a workflow
    # they had changed is kept beside it (.orig: GitHub runs only .yml/.yaml).
    assert (tmp_path / "mlops-ci.yaml").read_text() == "project: mine\n"
    assert "kept mlops-ci.yaml" in out
    assert workflow.read_text() == starter
    assert (workflow.parent / (workflow.name + ".orig")).read_text() == starter + "# my change\n"
    assert not (workflow.parent / "mlops-ci-monitor.yml").exists()
    (tmp_path / "mlops-ci.yaml").write_text("project: mine\nmonitoring: true\n")
    assert "wrote .github/workflows/mlops-ci-monitor.yml" in p.ok("init", "--force")
    assert f"wrote .github/workflows/{WORKFLOWS[0]} (yours is kept as {WORKFLOWS[0]}.orig)" in out
    assert f"unchanged .github/workflows/{WORKFLOWS[1]}" in out
    workflow.write_text(starter + "# my second change\n")  # an earlier .orig is never overwritten
    assert f"(yours is kept as {WORKFLOWS[0]}.orig.1)" in p.ok("init", "--force")
    assert (workflow.parent / (workflow.name + ".orig")).read_text() == starter + "# my change\n"
    assert (workflow.parent / (workflow.name + ".orig.1")).read_text() == starter + "# my second change\n"


def test_reusable_workflows_are_the_starter_workflows_behind_workflow_call():
    from mlops_ci.scaffold import REUSABLE, reusable

    for name, target in REUSABLE.items():
        shipped = (ROOT / ".github" / "workflows" / target).read_text()
        assert shipped == reusable((ROOT / "workflow-templates" / name).read_text(), name), f"{target}: make pin"
        doc = yaml.safe_load(shipped)
        assert list(doc[True]) == ["workflow_call"]


@pytest.mark.parametrize("path", sorted((ROOT / "actions").glob("*/action.yml")), ids=lambda p: p.parent.name)
def test_each_action_has_a_readme_with_every_input_and_output(path: Path):
    doc = yaml.safe_load(path.read_text())
    readme = (path.parent / "README.md").read_text()
    assert f"mlops-ci/mlops-ci/actions/{path.parent.name}@" in readme
    for name in [*doc["inputs"], *doc["outputs"]]:
        assert f"| `{name}` |" in readme, f"{path.parent.name}/README.md does not document {name}"


def test_install_sh_knows_exactly_the_package_extras():
    section = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]\n", 1)[1].split("\n[", 1)[0]
    extras = set(re.findall(r"^([a-z0-9-]+) = \[", section, re.M))
    known = re.search(r'^known=" (.*) "$', (ROOT / "actions" / "install.sh").read_text(), re.M)
    assert known and set(known.group(1).split()) == extras
