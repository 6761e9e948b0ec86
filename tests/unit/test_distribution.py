"""`training.distribution` → the hyperparameters the SageMaker SDK sends (mlops_ci/distribution.py).

Two sides that are not ours: the SDK's translation rules, written out case by case from its
source (sagemaker-python-sdk: `PyTorch._pytorch_distribution_configuration`,
`Framework._distribution_configuration`, `fw_utils.get_mp_parameters`), and the SageMaker training
toolkit (sagemaker-training, installed with the dev extras), which reads the hyperparameters in
the container: a name it does not know would leave the job undistributed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from mlops_ci import distribution as dist
from mlops_ci.distribution import Distribution, hyperparameters

P4D = "ml.p4d.24xlarge"


# what the SDK's estimators add, case by case (the comment names the rule of its source)
@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"torch_distributed": {"enabled": True}},
         {"sagemaker_torch_distributed_enabled": True, "sagemaker_instance_type": P4D}),
        ({"pytorchddp": {"enabled": True}}, {"sagemaker_pytorch_ddp_enabled": True, "sagemaker_instance_type": P4D}),
        # a disabled PyTorch launcher falls through to the framework-wide keys, which ignore it
        ({"pytorchddp": {"enabled": False}}, {}),
        ({"torch_distributed": {"enabled": False}}, {}),
        # mpi: the flag, the processes per host only when given, the options always ("" by default)
        ({"mpi": {"enabled": True}}, {"sagemaker_mpi_enabled": True, "sagemaker_mpi_custom_mpi_options": ""}),
        ({"mpi": {"enabled": True, "processes_per_host": 8, "custom_mpi_options": "-verbose"}},
         {"sagemaker_mpi_enabled": True, "sagemaker_mpi_num_of_processes_per_host": 8,
          "sagemaker_mpi_custom_mpi_options": "-verbose"}),
        # model parallelism rides on mpi; its parameters go as mp_parameters (no sagemaker_ prefix),
        # and the smdistributed key adds the data-parallel flag (false) and the instance type
        ({"mpi": {"enabled": True}, "smdistributed": {"modelparallel": {"enabled": True,
                                                                        "parameters": {"partitions": 2}}}},
         {"sagemaker_mpi_enabled": True, "sagemaker_mpi_custom_mpi_options": "", "mp_parameters": {"partitions": 2},
          "sagemaker_distributed_dataparallel_enabled": False, "sagemaker_instance_type": P4D}),
        ({"smdistributed": {"dataparallel": {"enabled": True}}},
         {"sagemaker_distributed_dataparallel_enabled": True, "sagemaker_instance_type": P4D,
          "sagemaker_distributed_dataparallel_custom_mpi_options": ""}),
        ({"parameter_server": {"enabled": True}}, {"sagemaker_parameter_server_enabled": True}),
        ({"multi_worker_mirrored_strategy": {"enabled": True}},
         {"sagemaker_multi_worker_mirrored_strategy_enabled": True}),
    ],
)  # fmt: skip
def test_the_hyperparameters_are_the_sdks(options: dict[str, Any], expected: dict[str, Any]):
    assert hyperparameters(Distribution(options), P4D) == expected


def test_no_distribution_adds_nothing():
    assert hyperparameters(None, P4D) == {}


@pytest.fixture
def toolkit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """sagemaker_training.environment, which writes os.environ (CURRENT_HOST, ... and, on
    import outside a container, SAGEMAKER_BASE_DIR): here it writes a copy."""
    monkeypatch.setattr(os, "environ", {**os.environ, "SAGEMAKER_BASE_DIR": str(tmp_path)})
    return pytest.importorskip("sagemaker_training.environment")


HOSTS = ["algo-1", "algo-2"]
GROUP = {"instance_group_name": "homogeneousCluster", "instance_type": P4D, "hosts": HOSTS}
RESOURCE = {
    "current_host": "algo-2",
    "hosts": HOSTS,
    "current_group_name": "homogeneousCluster",
    "instance_groups": [GROUP],
}


def _toolkit_env(toolkit: Any, d: Distribution) -> Any:
    return toolkit.Environment(
        resource_config=RESOURCE,
        input_data_config={"train": {"TrainingInputMode": "File", "S3DistributionType": "ShardedByS3Key"}},
        hyperparameters={"sagemaker_program": "train.py", "sagemaker_region": "us-east-1", **hyperparameters(d, P4D)},
    )


ONE_EACH = {
    "torch_distributed": {"torch_distributed": {"enabled": True}},
    "pytorchddp": {"pytorchddp": {"enabled": True}},
    "mpi": {"mpi": {"enabled": True}},
    "smdistributed.dataparallel": {"smdistributed": {"dataparallel": {"enabled": True}}},
    "parameter_server": {"parameter_server": {"enabled": True}},
    "multi_worker_mirrored_strategy": {"multi_worker_mirrored_strategy": {"enabled": True}},
}


@pytest.mark.parametrize("launcher", dist.LAUNCHERS)
def test_the_training_toolkit_reads_each_launcher_as_a_distribution(toolkit: Any, launcher: str):
    d = Distribution(ONE_EACH[launcher])
    assert d.launcher == launcher
    env = _toolkit_env(toolkit, d)
    assert env.distribution_hosts == HOSTS and env.master_hostname == "algo-1" and not env.is_master
    assert env.hyperparameters == {}  # nothing of ours reaches the script as one of its own


def test_without_a_launcher_the_toolkit_sees_no_distribution(toolkit: Any):
    assert _toolkit_env(toolkit, Distribution({"mpi": {"enabled": False}})).distribution_hosts == []


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("{torch_distributed: {}}", "training.distribution.torch_distributed: give enabled: true"),
        ("{torch_distributed: {enabled: yes please}}", "expected true or false"),
        ("{torch_distributed: {enabled: true}, mpi: {enabled: true}}", "a job has one launcher"),
        # the SDK reads pytorchddp first, and a disabled one hides torch_distributed
        ("{pytorchddp: {enabled: false}, torch_distributed: {enabled: true}}", "names both pytorchddp and torch_di"),
        ("{smdistributed: {modelparallel: {enabled: true}}}", "model parallelism runs under MPI"),
        ("{mpi: {enabled: true, processes_per_host: 0}}", "expected a whole number >= 1"),
        ('{mpi: {enabled: true, custom_mpi_options: "-x A\\n::error::forged"}}', "must be one line"),
        ("{horovod: {enabled: true}}", "unknown key 'horovod'"),
        ("{}", "names no strategy"),
        ("{smdistributed: {}}", "names neither dataparallel nor modelparallel"),
    ],
)
def test_a_distribution_that_cannot_run_is_refused_with_its_key(tmp_path, yaml: str, message: str):
    from mlops_ci import config
    from mlops_ci.errors import ConfigError

    f = tmp_path / "mlops-ci.yaml"
    f.write_text(f"project: x\ntraining:\n  backend: sagemaker\n  distribution: {yaml}\n"
                 "  sagemaker: {image_uri: 1.dkr.ecr.us-east-1.amazonaws.com/x:1}\n"
                 "aws: {region: us-east-1, role: 'arn:aws:iam::123456789012:role/r', bucket: my-bucket}\n")  # fmt: skip
    with pytest.raises(ConfigError) as err:
        config.load(f, {})
    assert message in str(err.value) and "\n" not in str(err.value).strip()


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("  distribution: {mpi: {enabled: true}}\n", "mpi is not emulated by the local trainer"),
        ("  distribution: {smdistributed: {dataparallel: {enabled: true}}}\n", "smdistributed.dataparallel is not"),
        ("  channels: {a: {uri: data, input_mode: Pipe}}\n", "Pipe mode is not emulated by the local trainer"),
        ("  channels: {a: {uri: data, distribution: Sharded}}\n", "did you mean 'ShardedByS3Key'"),
        ("  instance_count: 65\n", "at most 64"),
    ],
)
def test_what_the_local_trainer_cannot_emulate_fails_before_any_run(tmp_path, yaml: str, message: str):
    from mlops_ci import config
    from mlops_ci.errors import ConfigError

    f = tmp_path / "mlops-ci.yaml"
    f.write_text(
        f"project: x\ntraining:\n{yaml if 'instance_count' in yaml else '  instance_count: 2' + chr(10) + yaml}"
    )
    with pytest.raises(ConfigError) as err:
        config.load(f, {})
    assert message in str(err.value)


def test_a_config_without_the_new_keys_keeps_its_training_digest(tmp_path):
    """Runs recorded before instance_count, distribution and channel settings existed are reused."""
    from mlops_ci import config

    f = tmp_path / "mlops-ci.yaml"
    f.write_text("project: x\ntraining:\n  channels: {train: data}\n")
    plain = config.load(f, {}).training_digest()
    f.write_text("project: x\ntraining:\n  channels: {train: {uri: data}}\n  instance_count: 1\n")
    assert config.load(f, {}).training_digest() != plain  # a mapping channel is a setting
    f.write_text("project: x\ntraining:\n  channels: {train: data}\n  instance_count: 1\n")
    assert config.load(f, {}).training_digest() == plain
    f.write_text("project: x\ntraining:\n  channels: {train: data}\n  instance_count: 2\n")
    assert config.load(f, {}).training_digest() != plain
