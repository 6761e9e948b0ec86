from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops_ci.backends import TrainingSpec
from mlops_ci.backends.local_training import MetricScanner, cmd_args, encode_hyperparameters, layout, read_metrics_file
from tests.conftest import as_lists


def spec(tmp_path: Path, **hps: object) -> TrainingSpec:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "a.csv").write_text("1\n")
    return TrainingSpec(
        job_name="job-1",
        code_dir=tmp_path,
        entry_point="train.py",
        hyperparameters=dict(hps),
        channels={"train": data},
        metric_regexes={},
        environment={},
        python="python",
        max_run=10,
    )


def test_hyperparameters_are_json_encoded_strings_like_the_sdk_writes():
    assert encode_hyperparameters({"n": 4, "crit": "gini", "on": True, "lr": 0.1}) == {
        "n": "4",
        "crit": '"gini"',
        "on": "true",
        "lr": "0.1",
    }


def test_cmd_args_match_the_toolkit():
    assert cmd_args({"n_estimators": 4, "a": "x", "opts": {"k": 1, "b": 2}}) == [
        "-a",
        "x",
        "--n_estimators",
        "4",
        "--opts",
        "b=2,k=1",
    ]


def test_layout_writes_the_sagemaker_files_and_env(tmp_path: Path):
    base = tmp_path / "opt_ml"
    env = layout(base, spec(tmp_path, n_estimators=4, criterion="gini"))
    hps = json.loads((base / "input/config/hyperparameters.json").read_text())
    assert hps["n_estimators"] == "4" and hps["criterion"] == '"gini"'
    assert hps["sagemaker_program"] == '"train.py"'
    res = json.loads((base / "input/config/resourceconfig.json").read_text())
    assert res["current_host"] == "algo-1" and res["hosts"] == ["algo-1"]
    chan = json.loads((base / "input/config/inputdataconfig.json").read_text())
    assert chan == {
        "train": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
    }
    assert (base / "input/data/train/a.csv").read_text() == "1\n"
    assert env["SM_MODEL_DIR"] == str(base / "model")
    assert env["SM_CHANNEL_TRAIN"] == str(base / "input/data/train")
    assert env["SM_CHANNELS"] == '["train"]'
    assert env["SM_HP_N_ESTIMATORS"] == "4" and env["SM_HP_CRITERION"] == "gini"
    assert json.loads(env["SM_HPS"]) == {"n_estimators": 4, "criterion": "gini"}
    assert env["SM_HOSTS"] == '["algo-1"]' and env["SM_CURRENT_HOST"] == "algo-1"
    assert env["SM_NUM_GPUS"] == "0"
    assert json.loads(env["SM_USER_ARGS"]) == ["--criterion", "gini", "--n_estimators", "4"]
    assert json.loads(env["SM_TRAINING_ENV"])["hyperparameters"] == {"n_estimators": 4, "criterion": "gini"}
    assert env["SAGEMAKER_BASE_DIR"] == str(base)


def test_metric_scanner_collects_series_like_metric_definitions():
    s = MetricScanner({"loss": r"loss=([0-9.]+)", "acc": r"acc: ([0-9.]+)"})
    for line in ["epoch 1 loss=0.9", "loss=0.5 loss=0.4", "acc: 0.7", "noise", "loss=nope"]:
        s.feed(line)
    assert s.series == {"loss": [0.9, 0.5, 0.4], "acc": [0.7]}


def test_metrics_file(tmp_path: Path):
    f = tmp_path / "metrics.json"
    f.write_text(json.dumps({"acc": 0.9, "loss": [1, 0.5]}))
    finals, series = read_metrics_file(f)
    assert (finals, as_lists(series)) == ({"acc": 0.9, "loss": 0.5}, {"loss": [1.0, 0.5]})
    for bad in ([1, 2], {"acc": "high"}, {"acc": True}, {"acc": []}, {"acc": [1, "x"]}, {"acc": [True, 1]}):
        f.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=r"metrics.json"):
            read_metrics_file(f)
