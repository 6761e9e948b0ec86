"""Fault matrix, config and input: bad or hostile input is rejected or made inert, with file:line."""

from __future__ import annotations

import re

from mlops_ci.compare import compare
from mlops_ci.report import render_markdown
from tests.conftest import Project
from tests.unit.test_report import HOSTILE, run


def test_malformed_yaml_is_one_line_with_location(project: Project):
    (project.path / "mlops-ci.yaml").write_text("project: fast\ntraining:\n  hyperparameters: {a: 1\n")
    code, out, err = project.cli("config", "check")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlops-ci: error: mlops-ci.yaml:4:1: malformed YAML")


def test_hostile_names_are_inert():
    metrics = dict.fromkeys(HOSTILE, 1.0)
    head = run("h", "a" * 40, metrics, dict.fromkeys(HOSTILE, "x"), branch="$(curl evil)`main`<b>")
    base = run("b", "b" * 40, dict.fromkeys(HOSTILE, 0.5), {})
    md = render_markdown(compare("p", head, base, "", {}), [], True, head_ref=head.branch, base_ref="main")
    body = "\n".join(md.splitlines()[1:])
    assert "<img" not in body and "<b>" not in body
    assert "@security-team" not in body
    assert "&#64;security-team" in body
    assert "[click](https" not in body
    assert "`$(rm -rf ~)`" not in body
    assert "\\`$(rm -rf \\~)\\`" in body
    # no cell was split by a hostile '|': metric rows keep 6 column separators, param rows 4
    rows = [line for line in body.splitlines() if line.startswith("| a\\|b\\|c |")]
    assert [len(re.findall(r"(?<!\\)\|", line)) for line in rows] == [6, 4]


def _config_check(project: Project, text: str) -> tuple[int, list[str]]:
    (project.path / "mlops-ci.yaml").write_text(text)
    code, out, err = project.cli("config", "check")
    assert out == ""
    return code, err.strip().splitlines()


def test_nan_threshold_is_rejected_with_its_line(project: Project):
    code, lines = _config_check(project, "project: x\ngate:\n  rules:\n    - metric: acc\n      min: .nan\n")
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("mlops-ci: error: mlops-ci.yaml:5:7: gate.rules.0.min: expected a finite number")


def test_non_numeric_threshold_is_rejected_with_its_line(project: Project):
    code, lines = _config_check(project, "project: x\ngate:\n  rules:\n    - {metric: acc, max: high}\n")
    assert code == 2 and len(lines) == 1
    assert "mlops-ci.yaml:4:21: gate.rules.0.max: expected a number, got 'high'" in lines[0]
