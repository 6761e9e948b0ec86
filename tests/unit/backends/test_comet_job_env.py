"""What a training job's environment tells comet_ml (offline: no comet_ml import needed)."""

from __future__ import annotations

import re
from pathlib import Path

from mlops_ci.backends.comet import Comet
from mlops_ci.config import parse


def _comet() -> Comet:
    cfg = parse("project: fast\ntracking: {backend: comet, workspace: acme}\n", "mlops-ci.yaml", ".")
    return Comet(cfg, {})


def test_every_other_is_a_valid_environment_variable_name():
    """SageMaker's Environment keys are [A-Za-z_][A-Za-z0-9_]*: a channel named `my-data` or
    `v1.2` still gets a variable comet_ml reads (COMET_LOG_OTHER_<NAME>)."""
    env = _comet().job_env(
        "k" * 32,
        {"MLOPS_CI_GIT_SHA": "a" * 40},
        "/tmp/comet",
        name="aaaaaaaa · main",
        others={"data_my-data": "s3://b/p sha256:1", "data_v1.2": "d sha256:2"},
        local=False,
    )
    assert env["COMET_LOG_OTHER_DATA_MY_DATA"] == "s3://b/p sha256:1"
    assert env["COMET_LOG_OTHER_DATA_V1_2"] == "d sha256:2"
    assert env["COMET_LOG_OTHER_GIT_SHA"] == "a" * 40
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) for k in env)
    assert env["COMET_START_ONLINE"] == "false" and "PYTHONPATH" not in env  # remote: no offline shim


def test_a_local_offline_job_gets_the_offline_shim_first_on_its_path():
    env = _comet().job_env("k" * 32, {}, "/tmp/comet", name="n", others={}, local=True)
    shim = Path(env["PYTHONPATH"])
    assert (shim / "sitecustomize.py").is_file() and env["MLOPS_CI_COMET_OFFLINE"] == "1"


def test_an_archive_and_comet_list_the_same_parameters(tmp_path: Path):
    """Comet's parameter summary lists framework auto-logged parameters with the script's own and
    does not mark them: the archive reader keeps them too, and values become Comet's strings
    unless they are the recorded hyperparameter's."""
    import json
    import zipfile

    from mlops_ci.backends.comet import _typed, read_archive

    lines = [
        {"type": "parameter_msg", "payload": {"param": {"paramName": "quality", "paramValue": 0.9}}},
        {
            "type": "parameter_msg",
            "payload": {"param": {"paramName": "max_depth", "paramValue": 3, "source": "auto-logged"}},
        },
        {"type": "parameter_msg", "payload": {"param": {"paramName": "version", "paramValue": "007"}}},
        {"type": "parameter_msg", "payload": {"param": {"paramName": "curr_step", "paramValue": 4}}},
    ]
    archive = tmp_path / "k.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("messages.json", "\n".join(json.dumps(m) for m in lines))
    _, _, params = read_archive(archive, {}, "last")
    offline = _typed(params, {"quality": 0.9})
    online = _typed({"quality": "0.9", "max_depth": "3", "version": "007"}, {"quality": 0.9})  # Comet's strings
    assert offline == online == {"quality": 0.9, "max_depth": "3", "version": "007"}


def test_an_archive_the_job_wrote_in_any_shape_never_crashes_the_reader(tmp_path: Path):
    """The job writes its own archive: lines that are not the objects comet_ml writes are
    skipped, so a successful run is still recorded."""
    import json
    import zipfile

    from mlops_ci.backends.comet import read_archive

    good = {"type": "metric_msg", "payload": {"metric": {"metricName": "accuracy", "metricValue": 0.9, "step": 1}}}
    odd = [
        "[]",
        "42",
        '"x"',
        "null",
        json.dumps({"type": "metric_msg", "payload": []}),
        json.dumps({"type": "metric_msg", "payload": {"metric": "x"}}),
        json.dumps({"type": "parameter_msg", "payload": {"param": [1]}}),
        "{not json",
    ]
    archive = tmp_path / "k.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("messages.json", "\n".join([*odd, json.dumps(good)]))
    metrics, _, params = read_archive(archive, {}, "last")
    assert metrics == {"accuracy": 0.9} and params == {}
