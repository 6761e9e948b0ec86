"""What a new user meets in the first hour: mistakes found early, their own situations never
reported as bugs (exit 3), waits that say what they wait for, words that do not mislead."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_ci.backends.github import GitHubClient, GitHubSettings, RetryPolicy
from mlops_ci.errors import Transient
from mlops_ci.progress import Wait
from tests.conftest import Project, fast_config
from tests.integration.test_deploy import release
from tests.integration.test_github import REPO, TOKEN, Clock


def _check(project: Project) -> tuple[int, str, str]:
    return project.cli("config", "check")


# -- 1. mistakes found at `config check`, before anything runs ---------------------------------
def test_config_check_of_a_sound_project_is_ok_without_warnings(project: Project):
    code, out, err = _check(project)
    assert code == 0 and out.startswith("mlops-ci.yaml: ok") and err == ""


def test_a_gate_rule_on_a_misspelled_metric_is_named_at_config_check(project: Project):
    rule = "max_regression: 5%\n    - metric: acuracy\n      min: 0.9\n"
    (project.path / "mlops-ci.yaml").write_text(fast_config().replace("max_regression: 5%\n", rule))
    code, out, err = _check(project)
    assert code == 0 and "1 warning(s) above" in out
    assert "mlops-ci.yaml:22:" in err and "gate.rules.1.metric: 'acuracy' is not a metric" in err
    assert "did you mean 'accuracy'?" in err and "fails every run as if the model had regressed" in err


def test_a_bare_max_regression_of_5_is_said_to_be_absolute(project: Project):
    (project.path / "mlops-ci.yaml").write_text(fast_config().replace("max_regression: 5%", "max_regression: 5"))
    code, _, err = _check(project)
    assert code == 0
    assert "gate.rules.0.max_regression: 5 is an absolute change of 5 in accuracy's own units" in err
    assert "write '5%'" in err
    # a small absolute limit is what absolute limits are for: no warning
    (project.path / "mlops-ci.yaml").write_text(fast_config().replace("max_regression: 5%", "max_regression: 0.02"))
    assert _check(project) == (0, "mlops-ci.yaml: ok (project fast, 2 gate rule(s), 2 endpoint(s))\n", "")
    # and the gate's own words say which kind of limit it is
    from mlops_ci import config

    rules = config.parse(fast_config().replace("5%", "0.02"), "m.yaml", str(project.path)).gate.rules
    assert [r.describe() for r in rules][1] == "accuracy regresses by at most 0.02 (absolute) vs baseline"


def test_missing_paths_are_errors_or_warnings_with_their_line(project: Project):
    (project.path / "inference.py").unlink()
    (project.path / "train.py").rename(project.path / "trainer.py")
    (project.path / "data" / "rows.csv").unlink()
    (project.path / "data").rmdir()
    code, out, err = _check(project)
    assert code == 2 and out == ""
    assert "training.entry_point: file 'train.py' does not exist (did you mean 'trainer.py'?)" in err
    assert "serving.entry_point: 'inference.py' does not exist under training.source_dir" in err
    assert "(and 1 more above)" in err
    assert "warning: mlops-ci.yaml:6:5: training.channels.train: 'data' does not exist here" in err
    (project.path / "mlops-ci.yaml").write_text(fast_config().replace("train: data", "train: ../data"))
    code, _, err = _check(project)
    assert code == 2 and "training.channels.train: '../data' leaves the directory of mlops-ci.yaml" in err


def test_an_inference_script_without_model_fn_and_endpoints_without_one(project: Project):
    (project.path / "inference.py").write_text("def predict_fn(data, model):\n    return data\n")
    code, _, err = _check(project)
    assert code == 2 and "defines no model_fn" in err
    (project.path / "inference.py").write_text("def model_fn(model_dir:\n")
    code, _, err = _check(project)
    assert code == 2 and "serving.entry_point: 'inference.py' line 1:" in err
    (project.path / "mlops-ci.yaml").write_text(fast_config().replace("serving:\n  entry_point: inference.py\n", ""))
    code, _, err = _check(project)
    assert code == 0 and "endpoints are declared but no serving entry point" in err


@pytest.mark.parametrize(
    "script",
    [
        "try:\n    from helpers import model_fn\nexcept ImportError:\n    def model_fn(d):\n        return d\n",
        "if True:\n    def model_fn(d):\n        return d\n",
        "from typing import Callable\nmodel_fn: Callable = lambda d: d\n",
        "model_fn, other = (lambda d: d), 1\n",
        "\ufeffdef model_fn(d):\n    return d\n",  # a BOM, as some editors write
        "from helpers import *\n",
        "globals()['model_fn'] = lambda d: d\n",
    ],
)
def test_every_way_a_module_can_have_model_fn_passes(project: Project, script: str):
    (project.path / "inference.py").write_text(script, encoding="utf-8")
    code, _out, err = _check(project)
    assert (code, err) == (0, ""), err


def test_hostile_names_in_findings_stay_on_one_inert_line(project: Project, monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    rule = 'max_regression: 5%\n    - metric: "::error::pwned <img src=x>"\n      min: 0.9\n'
    (project.path / "mlops-ci.yaml").write_text(fast_config().replace("max_regression: 5%\n", rule))
    code, _, err = _check(project)
    assert code == 0 and "'::error::pwned <img src=x>' is not a metric" in err
    lines = err.splitlines()
    assert not [line for line in lines if line.startswith("::error::")]  # inert under Actions
    # the annotation is ours, on the line of the rule
    assert [line for line in lines if line.startswith("::warning file=mlops-ci.yaml,line=22::")]


def test_a_missing_serving_file_stops_train_before_any_training(project: Project):
    (project.path / "inference.py").unlink()
    project.commit("drop inference.py")
    code, _, err = project.cli("train")
    assert code == 2 and "serving file 'inference.py' does not exist in the source at" in err
    assert json.loads(project.ok("runs", "--json")) == []  # nothing trained, nothing recorded
    assert not list((project.path / ".mlops-ci" / "runs").glob("*"))


# -- 2. the user's situations are not internal errors ----------------------------------------
def _closed_pipe_run(project: Project, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The CLI writing into a pipe whose reader is gone (`mlops-ci … | head -1` after head exits)."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run(
            [sys.executable, "-m", "mlops_ci", "-C", str(project.path), *args],
            stdout=w, stderr=subprocess.PIPE, check=False, timeout=60,
        )  # fmt: skip
    finally:
        os.close(w)


@pytest.mark.parametrize("args", [("runs", "--json"), ("config", "show"), ("models",)])
def test_a_reader_that_went_away_is_not_an_error(project: Project, args: tuple[str, ...]):
    project.ok("train")
    done = _closed_pipe_run(project, *args)
    assert (done.returncode, done.stderr) == (0, b"")


def test_a_reader_that_went_away_does_not_change_the_outcome(project: Project):
    project.ok("train")
    (project.path / "mlops-ci.yaml").write_text(fast_config().replace("min: 0.8", "min: 0.95"))
    project.commit("a stricter gate")
    trained = _closed_pipe_run(project, "train", "--json")
    assert trained.returncode == 0 and len(json.loads(project.ok("runs", "--json"))) == 2  # still recorded
    for args in (("gate",), ("gate", "--json")):
        done = _closed_pipe_run(project, *args)
        assert done.returncode == 1 and b"gate failed" in done.stderr  # still a failed gate


def test_a_missing_optional_package_names_the_extra_to_install(project: Project, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # as if boto3 were not installed
    code, out, err = project.cli("--store", "s3://bucket/prefix", "runs", "--json")
    assert code == 2
    assert "boto3 is not installed" in err and "pip install 'mlops-ci[sagemaker]'" in err
    assert json.loads(out)["error"]["kind"] == "MissingExtra"


def test_json_output_on_failure_is_a_json_error_document(project: Project):
    code, out, err = project.cli("runs", "show", "nope", "--json")
    doc = json.loads(out)
    assert code == 4 and doc == {"error": {"exit_code": 4, "kind": "NotFound", "message": doc["error"]["message"]}}
    assert "nope" in doc["error"]["message"] and doc["error"]["message"] in err
    code, out, _ = project.cli("runs", "show", "nope")
    assert code == 4 and out == ""  # without --json stdout stays empty


# -- 3. waits that say what they wait for ----------------------------------------------------
class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_wait_on_a_terminal_redraws_one_line_and_in_a_log_writes_a_line_per_state(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    clock, said, tty = _Clock(), [], _Tty()
    wait = Wait(said.append, "staging: v2's model server", 60, "endpoints[0].ready_timeout in mlops-ci.yaml",
                stream=tty, clock=clock)  # fmt: skip
    for _ in range(3):
        clock.now += 1
        wait.update("loading the model")
    assert said == [] and tty.getvalue().count("\r") == 3  # redrawn, not appended
    assert "loading the model (3s of 60s, the timeout is endpoints[0].ready_timeout in mlops-ci.yaml)" in tty.getvalue()
    wait.close("ready")
    assert said == ["staging: v2's model server: ready after 3.0s"]
    monkeypatch.setenv("COLUMNS", "40")  # a narrow terminal: the line is cut, never wrapped
    narrow = _Tty()
    Wait(said.append, "x" * 100, 60, "k", stream=narrow, clock=clock).update("loading")
    assert narrow.getvalue() == "\r" + "x" * 39

    clock, said, log = _Clock(), [], io.StringIO()
    wait = Wait(said.append, "production: waiting for InService", 3600, "the_key", stream=log, clock=clock)
    for state in ("Creating", "Creating", "Creating", "Updating", "Updating"):
        clock.now += 30
        wait.update(state)
    wait.close("InService")
    assert log.getvalue() == ""
    assert said == [
        "production: waiting for InService: Creating (30s of 3600s, the timeout is the_key)",
        "production: waiting for InService: Updating (120s of 3600s, the timeout is the_key)",
        "production: waiting for InService: InService after 150.0s",
    ]


SLOW_INFERENCE = """
import time

def model_fn(model_dir):
    time.sleep(30)
"""


def test_a_slow_model_server_fails_the_deploy_naming_ready_timeout(project: Project):
    (project.path / "inference.py").write_text(SLOW_INFERENCE)
    (project.path / "mlops-ci.yaml").write_text(fast_config().replace("ready_timeout: 30", "ready_timeout: 1"))
    project.commit("a model that loads slowly")
    release(project, "v1.0.0")
    code, _, err = project.cli("deploy", "v1.0.0")
    assert code == 7, err
    assert "the limit endpoints[1].ready_timeout in mlops-ci.yaml sets: raise it" in err
    assert "production: v1's model server: loading the model (0s of 1s, the timeout is endpoints[1]" in err
    assert "production: v1's model server: not ready after 1." in err


def test_each_github_retry_is_announced_and_an_unreachable_github_gives_up(tmp_path: Path):
    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    said: list[str] = []
    clock = Clock()
    settings = GitHubSettings(f"http://127.0.0.1:{port}", TOKEN, REPO, "https://github.example", "7", "1",
                              write_interval=0)  # fmt: skip
    client = GitHubClient(settings, retry=RetryPolicy(sleep=clock.sleep, clock=clock.time, say=said.append))
    with pytest.raises(Transient, match="retry later"):
        client.upsert_comment(3, "<!-- m -->\nx", "<!-- m -->")
    assert len(said) == len(clock.slept) == 7
    assert said[0].startswith("GitHub: could not ") and "retrying in 1s (attempt 2 of 8" in said[0]
    assert TOKEN not in "".join(said)


# -- 4. words that do not mislead -------------------------------------------------------------
def test_a_misspelled_endpoint_is_not_called_stopped(project: Project):
    for args in (("invoke", "prod", "--data", "[[1, 2]]"), ("endpoint", "stop", "prod")):
        code, _, err = project.cli(*args)
        assert code == 4
        assert "no endpoint 'prod'" in err and "did you mean 'production'?" in err and "not running" not in err


def test_a_local_diff_shows_every_metric_and_curve_as_a_table_or_markdown(project: Project, tmp_path: Path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    names = [f"metric-{i:03d}-" + "x" * 60 for i in range(700)]  # more than a PR comment holds
    curves = {f"curve_{i}": [1.0, 0.5, 0.25] for i in range(9)}
    a.write_text(json.dumps({**dict.fromkeys(names, 0.5), **curves}))
    b.write_text(json.dumps({**dict.fromkeys(names, 0.6), **{k: [1.0, 0.4, 0.2] for k in curves}}))
    text = project.ok("diff", str(a), str(b))
    lines = text.splitlines()
    assert lines[0].split() == ["metric", str(a), str(b), "change"]
    assert len(lines) == 1 + len(names) + len(curves) and "|" not in text
    assert [line.split() for line in lines if line.startswith(names[-1])] == [
        [names[-1], "0.5", "0.6", "+0.1", "(+20.00%)", "changed"]
    ]
    md = project.ok("diff", str(a), str(b), "--md")
    assert "Truncated" not in md and len(md) > 65536
    assert all(f"| {n} |" in md for n in names) and md.count("xychart-beta") == len(curves)
    with pytest.raises(SystemExit) as exited:  # argparse: one format at a time
        project.cli("diff", str(a), str(b), "--md", "--json")
    assert exited.value.code == 2


def test_the_pr_comment_links_the_commits_and_the_workflow_run(pr: Project, fake, tmp_path, monkeypatch):
    from tests.integration.test_github import actions_env

    actions_env(monkeypatch, fake, tmp_path, pr)
    head = pr.git("rev-parse", "HEAD")
    base = pr.git("rev-parse", "main")
    pr.ok("report", "--post")
    body = fake.pr_comments(REPO, 7)[0]["body"]
    assert f"**Head** [{head[:8]}](https://github.example/{REPO}/commit/{head}) (tune)" in body
    assert f"**Baseline** [{base[:8]}](https://github.example/{REPO}/commit/{base}) (main)" in body
    assert f"[workflow run](https://github.example/{REPO}/actions/runs/77/attempts/1)" in body


def test_a_command_that_printed_its_json_result_and_then_failed_prints_no_second_document(project: Project):
    project.ok("train")
    (project.path / "mlops-ci.yaml").write_text(fast_config().replace("min: 0.8", "min: 0.95"))
    project.commit("a stricter gate")
    project.ok("train")
    code, out, _ = project.cli("gate", "--json")
    assert code == 1 and "error" not in json.loads(out)  # the verdict, and only it


def test_a_checkpoint_uri_without_spot_is_said_to_be_ignored(tmp_path: Path):
    from mlops_ci import config
    from mlops_ci.config_check import findings

    (tmp_path / "train.py").write_text("print('accuracy=1')\n")
    text = (
        "project: p\n"
        "training:\n"
        "  backend: sagemaker\n"
        "  sagemaker:\n"
        "    framework: sklearn\n"
        "    framework_version: '1.2-1'\n"
        "    checkpoint_s3_uri: s3://bucket/ckpt\n"
        "aws: {region: eu-west-1, role: 'arn:aws:iam::123456789012:role/sm', bucket: bucket}\n"
    )
    (tmp_path / "mlops-ci.yaml").write_text(text)
    found = [str(f) for f in findings(config.load(tmp_path, {}))]
    assert found == [
        "mlops-ci.yaml:7:5: training.sagemaker.checkpoint_s3_uri: is sent to SageMaker only with spot: true (to "
        "resume an interrupted spot job); without it, it is ignored"
    ]
    (tmp_path / "mlops-ci.yaml").write_text(
        text.replace("    checkpoint", "    spot: true\n    max_wait: 7200\n    checkpoint")
    )
    assert findings(config.load(tmp_path, {})) == []


def test_a_dry_run_that_fails_prints_the_json_error_document(project: Project):
    project.ok("train")
    code, out, err = project.cli("report", "--post", "--dry-run", "--json")  # no pull request to post to
    assert code != 0 and err
    assert json.loads(out)["error"]["exit_code"] == code


def test_init_in_a_monorepo_project_writes_the_config_there_and_keeps_an_adapted_one(tmp_path: Path):
    from tests.conftest import git

    git(tmp_path, "init", "-q")
    (tmp_path / "ml").mkdir()
    out = Project(tmp_path / "ml").ok("init")  # Project.cli runs `mlops-ci -C <its path> …`
    assert "wrote ml/mlops-ci.yaml" in out and "`config: ml/mlops-ci.yaml`" in out
    assert (tmp_path / ".github" / "workflows").is_dir() and not (tmp_path / "mlops-ci.yaml").exists()
    (tmp_path / "ml" / "mlops-ci.yaml").write_text("project: mine\n")
    code, _, err = Project(tmp_path / "ml").cli("init")
    assert code == 5 and "(ml/mlops-ci.yaml is kept)" in err
    out = Project(tmp_path / "ml").ok("init", "--force")
    assert "kept ml/mlops-ci.yaml" in out and (tmp_path / "ml" / "mlops-ci.yaml").read_text() == "project: mine\n"
    assert not (tmp_path / "mlops-ci.yaml").exists()


def test_a_bad_github_setting_in_the_environment_is_a_config_error(project: Project, monkeypatch):
    project.ok("train")
    monkeypatch.setenv("MLOPS_CI_GITHUB_WRITE_INTERVAL", "abc")
    code, _, err = project.cli("report")
    assert code == 2 and "MLOPS_CI_GITHUB_WRITE_INTERVAL='abc' is not a number of seconds" in err


def test_models_with_no_versions_asks_no_second_registry(project: Project, monkeypatch: pytest.MonkeyPatch):
    # the SageMaker registry would need an AWS region (and credentials); with nothing promoted
    # there is nothing to ask it about
    cfg = fast_config().replace(
        "serving:\n  entry_point: inference.py\n",
        "serving:\n  entry_point: inference.py\n  image_uri: 123456789012.dkr.ecr.us-east-1.amazonaws.com/serve:1\n",
    )
    cfg += "registry: {backend: sagemaker}\naws: {role: 'arn:aws:iam::123456789012:role/sm', bucket: ml-bucket}\n"
    (project.path / "mlops-ci.yaml").write_text(cfg)
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    assert "no model versions yet" in project.ok("models")
    assert json.loads(project.ok("models", "--json")) == []
