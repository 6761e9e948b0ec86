"""The contract every training backend keeps (docs/architecture.md), run against each one: the
same job (the same log lines, the same metrics.json) is recorded as the same metrics and the
same curves, whatever ran it. It holds the precedence the backends once disagreed on: the
script's metrics.json wins over the log for a metric both name."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from mlops_ci.workspace import open_store
from tests.conftest import FAST_INFERENCE, git, run_cli
from tests.fakes.sagemaker import JobScript
from tests.integration.test_sagemaker import fake, repo  # noqa: F401  (the SageMaker side's fixtures)

LOG = ["epoch 1 loss=0.50", "epoch 2 loss=0.31", "accuracy=0.91"]
METRICS_JSON = {"accuracy": 0.95, "extra": [1, 2, 3]}
MODEL = {"model.json": '{"weights": [1, 2, 3]}'}

JOB = textwrap.dedent(
    f"""\
    import json, os
    for line in {LOG!r}:
        print(line, flush=True)
    with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "metrics.json"), "w") as fh:
        json.dump({METRICS_JSON!r}, fh)
    for name, text in {MODEL!r}.items():
        with open(os.path.join(os.environ["SM_MODEL_DIR"], name), "w") as fh:
            fh.write(text)
    """
)

LOCAL_CONFIG = """\
project: fast
training:
  entry_point: train.py
  metric_definitions:
    - {name: accuracy, regex: "accuracy=([0-9.]+)"}
    - {name: loss, regex: "loss=([0-9.]+)"}
serving:
  entry_point: inference.py
"""


def _local(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    (path / "train.py").write_text(JOB)
    (path / "inference.py").write_text(FAST_INFERENCE)
    (path / ".gitignore").write_text(".mlops-ci/\n")
    (path / "mlops-ci.yaml").write_text(LOCAL_CONFIG)
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "job")
    return path


def _sagemaker(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    sm = request.getfixturevalue("fake")
    sm.script = JobScript(
        log=LOG,
        model_files={k: v.encode() for k, v in MODEL.items()},
        output_files={"metrics.json": json.dumps(METRICS_JSON).encode()},
    )
    path: Path = request.getfixturevalue("repo").path
    return path


BACKENDS = {"local": _local, "sagemaker": _sagemaker}


@pytest.fixture(params=sorted(BACKENDS))
def trained(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dict[str, float], dict[str, list[float]]]:
    path = BACKENDS[request.param](tmp_path, request)
    env = {}
    if request.param == "sagemaker":
        from tests.integration.test_sagemaker import REGION

        url = request.getfixturevalue("fake").url
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": url,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    proc = run_cli("train", "--json", cwd=path, env=env)
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)["run"]
    store = open_store("sqlite:///.mlops-ci/store.db", path, "fast")
    try:
        series = {k: list(v) for k, v in store.series(run["run_id"]).items()}
    finally:
        store.close()
    return run["metrics"], series


def test_the_same_job_is_recorded_alike(trained: tuple[dict[str, float], dict[str, list[float]]]):
    metrics, series = trained
    # metrics.json wins where it and the log name the same metric; a list's last value is the metric
    assert metrics == {"accuracy": 0.95, "loss": 0.31, "extra": 3.0}
    assert series["loss"] == [0.5, 0.31]  # the log's curve
    assert series["extra"] == [1.0, 2.0, 3.0]  # the file's curve
    assert series["accuracy"] == [0.91]  # a number in metrics.json is a final value, not a point of the log's curve
