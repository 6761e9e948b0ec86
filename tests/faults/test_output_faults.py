"""Output faults: names, values and training logs we print must never act as GitHub Actions
workflow commands, and secret-looking hyperparameters are never printed.

`runner()` reads our output as the Actions runner does (actions/runner,
src/Runner.Common/ActionCommand.cs and src/Runner.Worker/ActionCommandManager.cs): lines end at
\\n, \\r or \\r\\n (.NET StreamReader.ReadLine, src/Runner.Sdk/ProcessInvoker.cs); a line is a
command when it starts with `::` after leading whitespace, or holds `##[` anywhere;
`::stop-commands::T` ignores every command until `::T::`. It errs on the strict side: any name
counts as a command (the runner only runs registered ones), and characters that ICU weighs
nothing (controls, format characters) are dropped before matching, as .NET's culture-sensitive
IndexOf/StartsWith do.
"""

from __future__ import annotations

import json
import re
import unicodedata

import pytest

from tests.conftest import Project, run_module
from tests.fakes.sagemaker import REGION, FakeSageMaker, JobScript
from tests.integration.test_sagemaker import Repo, fake, repo  # noqa: F401


def _skeleton(line: str) -> str:
    return "".join(c for c in line if unicodedata.category(c)[0] != "C").lstrip()


def command_name(line: str) -> str | None:
    """The command the runner would read from one line, if any."""
    s = _skeleton(line)
    if s.startswith("::") and s.find("::", 2) > 0:
        return s[2 : s.find("::", 2)].split(" ")[0]
    i = s.find("##[")
    if i >= 0 and s.find("]", i) > 0:
        return s[i + 3 : s.find("]", i)].split(" ")[0]
    return None


def runner(stream: str) -> tuple[list[str], list[str]]:
    """(lines the runner acts on as commands, lines it shows inside stop-commands blocks)."""
    acted, inside = [], []
    token: str | None = None
    for line in re.split(r"\r\n|\r|\n", stream):
        name = command_name(line)
        if token is not None:
            if name is not None and name.lower() == token.lower():
                token = None
            else:
                inside.append(line)
        elif name == "stop-commands":
            token = line.split("::", 2)[2]
            assert token and token.lower() not in stream.replace(line, "").replace(f"::{token}::", "").lower()
        elif name is not None:
            acted.append(line)
    assert token is None, "a stop-commands block was left open"
    return acted, inside


def assert_inert(stream: str, *, ours: tuple[str, ...] = ()) -> list[str]:
    """No command but our own (`ours`: line prefixes) outside blocks; nothing parseable inside
    them either (the second layer); returns the lines inside blocks."""
    acted, inside = runner(stream)
    assert [a for a in acted if not a.startswith(ours or ("\0",))] == [], acted
    assert [x for x in inside if command_name(x) is not None] == [], inside
    return inside


HOSTILE_TRAIN = r"""
import json, os, sys
print("::set-output name=x::y")
print("##[error]x")
print("progress 10%\r::error::x")
print("   ::warning::indented")
print("#\u200b#[error]zero-width")
print("\x01::notice::control")
print("accuracy=0.9")
if "--fail" in sys.argv:
    with open(os.path.join(os.environ["SM_OUTPUT_DIR"], "failure"), "w") as fh:
        fh.write("boom ##[error]f\n::set-output name=z::1")
    sys.exit(2)
with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "metrics.json"), "w") as fh:
    json.dump({"accuracy": 0.9, "acc\n::set-output name=m::v": 0.5, "##[error]metric": 0.1,
               "r\r::error::metric": 0.2}, fh)
open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w").write("{}")
"""

# Hyperparameter values are free text (only names are checked): they reach every view.
HOSTILE_CONFIG = """\
project: fast
training:
  entry_point: train.py
  hyperparameters:
    note: "a\\n::set-output name=p::q\\r::error::r ##[warning]w\\u2028::notice::n"
    api_token: s3cr3t-value
    max_tokens: 5
  channels:
    train: data
  metric_definitions:
    - name: accuracy
      regex: "accuracy=([0-9.]+)"
metrics:
  accuracy: {goal: maximize}
gate:
  rules:
    - {metric: accuracy, min: 0.5}
"""


def hostile(project: Project, *, fail: bool = False) -> None:
    (project.path / "train.py").write_text(HOSTILE_TRAIN)
    cfg = HOSTILE_CONFIG.replace("    max_tokens: 5\n", "    max_tokens: 5\n    fail: 1\n") if fail else HOSTILE_CONFIG
    (project.path / "mlops-ci.yaml").write_text(cfg)
    project.commit("hostile ##[error]subject\r::error::subject")


@pytest.fixture
def actions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("MLOPS_CI_ALLOW_RUNNER_STORE", "true")


VIEWS = {
    "train": ("train",),
    "runs": ("runs",),
    "runs show": ("runs", "show"),
    "lineage": ("lineage", "HEAD"),
    "config show": ("config", "show"),
    "gate": ("gate",),
}


@pytest.mark.parametrize("view", list(VIEWS))
def test_under_actions_no_view_lets_a_name_value_or_log_line_act_as_a_workflow_command(
    project: Project, actions: None, view: str
):
    hostile(project)
    code, out, err = project.cli("train")
    assert code == 0, err
    if view != "train":
        code, out, err = project.cli(*VIEWS[view])
        assert code == 0, err
    for stream in (out, err):
        assert_inert(stream)
    assert "::stop-commands::" in out  # each view holds user text: it is wrapped
    assert "s3cr3t-value" not in out + err
    if view in ("train", "runs show", "lineage", "config show"):  # the views that list hyperparameters
        assert "api_token" in out and "***" in out and "max_tokens" in out


def test_under_actions_the_training_log_echo_is_wrapped_and_neutralised(project: Project, actions: None):
    hostile(project)
    _, _, err = project.cli("train")
    inside = assert_inert(err)
    echoed = [x for x in inside if x.startswith("  | ")]
    # every hostile line of the script is still shown, inside a block, with `##[` made `##\[`
    assert "  | ##\\[error]x" in echoed and "  | ::set-output name=x::y" in echoed
    assert "  | ::error::x" in echoed and "  | progress 10%" in echoed  # \r split as the runner splits
    assert err.count("::stop-commands::") == 1  # one block for the whole log, not one per line


def test_outside_actions_nothing_is_wrapped_and_the_log_is_shown_verbatim(project: Project):
    hostile(project)
    code, out, err = project.cli("train")
    assert code == 0, err
    assert "::stop-commands::" not in out + err
    assert "  | ##[error]x" in err and "  | ::set-output name=x::y" in err
    # a value still cannot start an output line of ours: line breaks are shown as escapes
    shown = project.ok("runs", "show")
    assert "note=a\\n::set-output name=p::q\\r::error::r ##[warning]w\\u2028::notice::n" in shown
    assert not [x for x in re.split(r"\r\n|\r|\n", shown) if _skeleton(x).startswith("::")]
    assert "metrics   ##[error]metric=0.1, acc\\n::set-output name=m::v=0.5" in shown  # verbatim but escaped


def test_a_failure_quoting_hostile_output_keeps_our_error_annotation_outside_the_block(project: Project, actions: None):
    hostile(project, fail=True)
    code, _, err = project.cli("train")
    assert code == 6
    acted, _ = runner(err)
    assert len(acted) == 1 and acted[0].startswith("::error::"), acted  # ours, and only ours
    assert "boom ##[error]f" in acted[0]  # the quoted failure is data of our annotation, never a command
    assert_inert(err, ours=("::error::",))


@pytest.mark.parametrize("view", ["runs", "runs show", "lineage", "config show"])
def test_under_actions_json_stays_valid_json_with_the_exact_names_and_acts_as_no_command(
    project: Project, actions: None, view: str
):
    hostile(project)
    project.ok("train")
    out = project.ok(*VIEWS[view], "--json")
    assert "::stop-commands::" not in out  # wrapping would break `--json > file`
    assert runner(out)[0] == []
    assert "##[" not in out
    decoded = json.dumps(json.loads(out), ensure_ascii=False)  # `##\u005b` decodes to the very same `##[`
    assert ("##[warning]w" if view == "config show" else "##[error]metric") in decoded
    assert "s3cr3t-value" not in out


def test_store_export_to_stdout_under_actions_is_inert_and_lossless(project: Project, actions: None):
    hostile(project)
    project.ok("train")
    out = project.ok("store", "export")
    assert runner(out)[0] == []
    records = [json.loads(line) for line in out.splitlines() if line]
    runs = [r for r in records if "##[error]metric" in json.dumps(r, ensure_ascii=False)]
    assert runs, "the export keeps the exact names"
    assert "s3cr3t-value" in out  # the one lossless path: it must restore the store exactly


@pytest.mark.parametrize(
    ("yaml_value", "line", "found"),
    [
        ('"acc\\n"', 5, "U+000A"),
        ('"acc\\r::error::x"', 5, "U+000D"),
        ('"acc\\u2028x"', 5, "U+2028"),
        ('"acc\\u0085x"', 5, "U+0085"),
        ('"acc\\0"', 5, "U+0000"),
        ('"acc\\u200bx"', 5, "U+200B"),
    ],
)
def test_a_metric_name_with_a_line_break_or_control_character_is_a_config_error_with_its_line(
    project: Project, yaml_value: str, line: int, found: str
):
    (project.path / "mlops-ci.yaml").write_text(
        f"project: fast\ntraining:\n  metric_definitions:\n    - regex: 'a=([0-9.]+)'\n      name: {yaml_value}\n"
    )
    code, out, err = project.cli("config", "check")
    assert code == 2 and out == ""
    assert f"mlops-ci.yaml:{line}:" in err and found in err and "rename it" in err
    assert len(err.strip().splitlines()) == 1  # one line: the hostile name is shown escaped


@pytest.mark.parametrize(
    ("section", "line"),
    [
        ('metrics:\n  "acc\\r::error::x": maximize\n', 3),
        ('gate:\n  rules:\n    - {metric: "a\\nb", min: 1}\n', 4),
        ('training:\n  hyperparameters:\n    "lr\\n": 1\n', 4),
        ('training:\n  channels:\n    "train\\r": data\n', 4),
        ('endpoints:\n  - name: "prod\\n"\n', 3),
    ],
)
def test_other_hostile_names_are_config_errors_with_their_line(project: Project, section: str, line: int):
    (project.path / "mlops-ci.yaml").write_text("project: fast\n" + section)
    code, _, err = project.cli("config", "check")
    assert code == 2 and f"mlops-ci.yaml:{line}:" in err, err
    assert len(err.strip().splitlines()) == 1


def test_a_metric_defined_twice_is_a_config_error_naming_both_lines(project: Project):
    (project.path / "mlops-ci.yaml").write_text(
        "project: fast\ntraining:\n  metric_definitions:\n"
        "    - {name: acc, regex: 'acc=([0-9.]+)'}\n"
        "    - {name: loss, regex: 'loss=([0-9.]+)'}\n"
        "    - {name: acc, regex: 'accuracy: ([0-9.]+)'}\n"
    )
    code, _, err = project.cli("config", "check")
    assert code == 2 and "mlops-ci.yaml:6:" in err and "lines 4 and 6" in err and "'acc'" in err


def test_secret_looking_hyperparameters_are_masked_in_the_pr_report(project: Project):
    cfg = HOSTILE_CONFIG.replace("s3cr3t-value", "old-s3cr3t")
    (project.path / "train.py").write_text(HOSTILE_TRAIN)
    (project.path / "mlops-ci.yaml").write_text(cfg)
    project.commit("base")
    project.ok("train")
    project.git("checkout", "-q", "-b", "feature")
    (project.path / "mlops-ci.yaml").write_text(
        cfg.replace("old-s3cr3t", "new-s3cr3t").replace("max_tokens: 5", "max_tokens: 7")
    )
    project.commit("rotate")
    project.ok("train")
    md = project.ok("report", "--base", "main")
    report_json = project.ok("report", "--base", "main", "--json")
    for text in (
        md,
        report_json,
        project.ok("runs", "show"),
        project.ok("runs", "--json"),
        project.ok("config", "show"),
    ):
        assert "s3cr3t" not in text
    assert "| api\\_token | \\*\\*\\* | \\*\\*\\* |" in md  # the change is still visible, not its value
    assert "| max\\_tokens | 5 | 7 |" in md  # `token` as a whole word only


def test_sagemaker_log_relay_and_failure_reason_are_inert_under_actions(repo: Repo, fake: FakeSageMaker):  # noqa: F811
    fake.script = JobScript(
        log=["epoch 1 loss=0.5", "::set-output name=x::y", "##[error]from cloudwatch", "a\r::error::cr"],
        failure="AlgorithmError: ##[error]f\n::set-output name=z::1",
    )
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ENDPOINT_URL": repo.url,
           "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true", "GITHUB_ACTIONS": "true",
           "MLOPS_CI_ALLOW_RUNNER_STORE": "true"}  # fmt: skip
    proc = run_module("train", cwd=repo.path, env=env)
    assert proc.returncode == 6, proc.stderr
    inside = assert_inert(proc.stderr, ours=("::error::",))
    assert "  | ##\\[error]from cloudwatch" in inside and "  | ::error::cr" in inside
    acted, _ = runner(proc.stderr)
    assert [a[:9] for a in acted] == ["::error::"]
