"""SageMaker requests as AWS checks them: botocore's service model (tests/fakes/aws_model.py) and
the limits it documents but does not encode, refused at config time."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlops_ci.backends import sagemaker_types
from mlops_ci.backends.sagemaker import image_for
from mlops_ci.backends.sagemaker_registry import metrics_metadata
from mlops_ci.errors import ConfigError
from mlops_ci.settings.sagemaker import SageMakerTraining
from tests.fakes import aws_model
from tests.fakes.sagemaker import ACCOUNT, REGION, FakeSageMaker, JobScript
from tests.integration.test_sagemaker import ROLE, Repo, fake, repo, sm_config  # noqa: F401

GROUP = "fast"
EP = {"EndpointName": "e", "EndpointConfigName": "c"}
JOB = {"TrainingJobName": "j", "RoleArn": ROLE, "AlgorithmSpecification": {"TrainingInputMode": "File"},
       "OutputDataConfig": {"S3OutputPath": "s3://b/o"}, "StoppingCondition": {}}  # fmt: skip
M5 = {"InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 1}


def _blue_green(routing: str, **policy: Any) -> dict[str, Any]:
    return {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {"Type": routing, "WaitIntervalInSeconds": 0},
                                      **policy}}  # fmt: skip


# -- the checker itself: a known-bad request of each kind fails, naming the member ------------
@pytest.mark.parametrize(
    ("op", "params", "expected"),
    [
        ("CreateModelPackage", {"ModelPackageGroupName": GROUP, "CustomerMetadataProperties": {"metrics": '{"a": 1}'}},
         "CreateModelPackage.CustomerMetadataProperties['metrics']: '{\"a\": 1}' does not match the pattern"),
        ("CreateEndpoint", {"EndpointName": "a" * 64, "EndpointConfigName": "c"},
         "CreateEndpoint.EndpointName: 64 characters, more than the maximum 63"),
        ("CreateEndpoint", {"EndpointName": "has_underscore", "EndpointConfigName": "c"},
         "CreateEndpoint.EndpointName: 'has_underscore' does not match"),
        ("UpdateEndpoint", {**EP, "DeploymentConfig": _blue_green("ALL_AT_ONCE", TerminationWaitInSeconds=7200)},
         "BlueGreenUpdatePolicy.TerminationWaitInSeconds: 7200 is above the maximum 3600"),
        ("UpdateEndpoint", {**EP, "DeploymentConfig": _blue_green("BLUE")},
         "TrafficRoutingConfiguration.Type: 'BLUE' is not one of"),
        ("CreateTrainingJob", {**JOB, "ResourceConfig": {**M5, "KeepAlivePeriodInSeconds": 999999}},
         "ResourceConfig.KeepAlivePeriodInSeconds: 999999 is above the maximum 21600"),
        ("CreateTrainingJob", {**JOB, "ResourceConfig": M5, "Tags": [{"Key": "k", "Value": "v"}] * 51},
         "CreateTrainingJob.Tags: 51 items, more than the maximum 50"),
        ("CreateModelPackageGroup", {"ModelPackageGroupName": GROUP, "Colour": "red"},
         "CreateModelPackageGroup.Colour: not a member of CreateModelPackageGroupInput"),
    ],
)  # fmt: skip
def test_a_request_that_breaks_the_service_model_is_named_by_member_path(op: str, params: dict[str, Any],
                                                                         expected: str):  # fmt: skip
    found = aws_model.violations("sagemaker", op, params)
    assert any(expected in v for v in found), found


def test_the_fake_refuses_a_bad_request_as_aws_does_and_the_test_would_fail(
    fake: FakeSageMaker,  # noqa: F811
    aws_requests: aws_model.Recorder,
):
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as err:
        fake.client.create_model_package_group(ModelPackageGroupName="bad_name!")  # type: ignore[attr-defined]
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "1 validation error detected" in str(err.value) and "ModelPackageGroupName" in str(err.value)
    assert fake.violations == ["sagemaker.CreateModelPackageGroup.ModelPackageGroupName: 'bad_name!' does not match "
                               "the pattern [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"]  # fmt: skip
    assert not fake.calls("CreateModelPackageGroup")  # refused before anything happened
    fake.violations.clear()  # the fixture fails any test that leaves one
    assert len(aws_requests.found) == 1  # this process's client was caught before sending, too
    aws_requests.found.clear()


def test_in_process_clients_are_checked_too_s3_included(aws_requests: aws_model.Recorder):
    import boto3
    from botocore.stub import Stubber

    s3 = boto3.client("s3", region_name=REGION, aws_access_key_id="t", aws_secret_access_key="t")
    with Stubber(s3) as stub:
        stub.add_response("list_objects_v2", {"Contents": []})
        s3.list_objects_v2(Bucket="b", MaxKeys=-1, Prefix="p")  # botocore itself accepts this
    assert aws_requests.found == []  # MaxKeys has no range in the model: nothing to refuse
    sm = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="t", aws_secret_access_key="t")
    with Stubber(sm) as stub:
        stub.add_response("describe_endpoint", {"EndpointName": "x", "EndpointArn": "a" * 20, "CreationTime": 0,
                                                "EndpointStatus": "InService", "LastModifiedTime": 0})  # fmt: skip
        sm.describe_endpoint(EndpointName="x" * 64)
    assert aws_requests.found[0] == "sagemaker.DescribeEndpoint.EndpointName: 64 characters, more than the maximum 63"
    aws_requests.found.clear()  # the autouse check would fail this test otherwise


# -- what the backend sends ------------------------------------------------------------------
def test_metrics_metadata_is_name_value_pairs_aws_accepts_cut_at_whole_pairs():
    text = metrics_metadata({"accuracy": 0.912345678, "f1 score": 0.5, "loss{x}": 1e-9, "bad\n##[error]": 2.0})
    assert text == "accuracy=0.912346 bad____error_=2 f1_score=0.5 loss_x_=1e-09"
    assert (
        aws_model.violations(
            "sagemaker",
            "CreateModelPackage",
            {"ModelPackageGroupName": GROUP, "CustomerMetadataProperties": {"metrics": text}},
        )
        == []
    )
    many = metrics_metadata({f"metric_number_{i:03d}": i / 7 for i in range(40)})
    assert len(many) <= 256 and many.endswith(" ...")
    assert all(p.count("=") == 1 for p in many.removesuffix(" ...").split(" "))  # no pair cut in half
    assert (
        aws_model.violations(
            "sagemaker",
            "CreateModelPackage",
            {"ModelPackageGroupName": GROUP, "CustomerMetadataProperties": {"metrics": many}},
        )
        == []
    )


SK = SageMakerTraining(framework="sklearn", framework_version="1.0-1", instance_type="ml.m5.xlarge")


def test_images_follow_the_instance_type_they_run_on():
    base = f"683313688378.dkr.ecr.{REGION}.amazonaws.com/sagemaker-scikit-learn"
    assert image_for(SK, None, REGION, "training") == f"{base}:1.0-1-cpu-py3"
    assert image_for(SK, None, REGION, "inference", "ml.m6g.large") == f"{base}:1.0-1-arm64-cpu-py3"
    assert image_for(SK, None, REGION, "inference", "ml.c7g.xlarge") == f"{base}:1.0-1-arm64-cpu-py3"
    assert image_for(SK, None, REGION, "inference", "ml.c5.large") == f"{base}:1.0-1-cpu-py3"
    with pytest.raises(ConfigError, match="CPU only"):
        image_for(SK, None, REGION, "inference", "ml.g5.xlarge")
    with pytest.raises(ConfigError, match="x86 only"):
        image_for(SageMakerTraining(framework="sklearn", framework_version="1.0-1", instance_type="ml.m6g.xlarge"),
                  None, REGION, "training")  # fmt: skip


@pytest.mark.parametrize(
    ("itype", "local"),
    [("ml.m5.xlarge", False), ("ml.m5d.xlarge", True), ("ml.g4dn.xlarge", True), ("ml.p3.2xlarge", False),
     ("ml.p4d.24xlarge", True), ("ml.g5.2xlarge", True), ("ml.c6gd.large", True), ("ml.c7g.large", False),
     ("ml.r5d.large", True), ("ml.t3.medium", False), ("ml.trn1.2xlarge", True)],
)  # fmt: skip
def test_local_storage_instance_types_are_known(itype: str, local: bool):
    assert sagemaker_types.has_local_storage(itype) is local


def test_train_dry_run_on_a_gpu_type_with_the_sklearn_image_is_refused_at_config_time(repo: Repo, fake: FakeSageMaker):  # noqa: F811
    gpu = sm_config().replace("instance_type: ml.m5.xlarge", "instance_type: ml.g5.xlarge")
    (repo.path / "mlops-ci.yaml").write_text(gpu)
    proc = repo.run("train", "--dry-run")
    assert proc.returncode == 2, proc.stderr
    assert (
        "training.sagemaker.instance_type" in proc.stderr
        and "scikit-learn training images run on CPU only" in proc.stderr
    )
    assert fake.requests == []


def test_kms_retries_and_local_storage_as_sagemaker_takes_them(repo: Repo, fake: FakeSageMaker):  # noqa: F811
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    cfg = (
        sm_config(spot=False)
        .replace("  poll_seconds: 0.01\n", f"  poll_seconds: 0.01\n  kms_key: {key}\n")
        .replace("framework: sklearn\n", "image_uri: 123456789012.dkr.ecr.us-east-1.amazonaws.com/own:1\n")
        .replace('    framework_version: "1.2-1"\n', "")
        .replace("instance_type: ml.m5.xlarge", "instance_type: ml.p4d.24xlarge\n    retry_attempts: 3")
    )
    cfg = cfg.replace("serving:\n", "serving:\n  image_uri: 123456789012.dkr.ecr.us-east-1.amazonaws.com/own:1\n")
    (repo.path / "mlops-ci.yaml").write_text(cfg)
    repo.commit("gpu with kms")
    repo.ok("train")
    (sent,) = fake.calls("CreateTrainingJob")
    assert "VolumeKmsKeyId" not in sent["ResourceConfig"]  # local NVMe storage: AWS refuses a volume key
    assert sent["OutputDataConfig"]["KmsKeyId"] == key  # the model output is still encrypted with it
    assert sent["RetryStrategy"] == {"MaximumRetryAttempts": 3}


def test_metrics_json_wins_over_the_log_as_in_the_local_backend(repo: Repo, fake: FakeSageMaker):  # noqa: F811
    fake.script = JobScript(output_files={"metrics.json": json.dumps({"accuracy": 0.95, "extra": [1, 2, 3]}).encode()})
    run = json.loads(repo.ok("train", "--json"))["run"]
    assert run["metrics"]["accuracy"] == 0.95  # the log said 0.91 (FinalMetricDataList)
    assert run["metrics"]["loss"] == 0.31 and run["metrics"]["extra"] == 3


def test_an_auto_scaled_endpoint_keeps_its_count_and_refuses_a_type_change(repo: Repo, fake: FakeSageMaker):  # noqa: F811
    import boto3

    from tests.integration.test_sagemaker import _released

    _released(repo, "v1.0.0")
    assert repo.run("deploy", "v1.0.0").returncode == 0
    scaling = boto3.client("application-autoscaling", endpoint_url=fake.url, region_name=REGION,  # type: ignore[attr-defined]
                           aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    scaling.register_scalable_target(ServiceNamespace="sagemaker", ResourceId="endpoint/production/variant/AllTraffic",
                                     ScalableDimension="sagemaker:variant:DesiredInstanceCount", MinCapacity=1,
                                     MaxCapacity=4)  # fmt: skip
    for v in fake.sm.endpoints["production"].production_variants:  # auto scaling took it to 3
        v["CurrentInstanceCount"] = 3
    _released(repo, "v1.1.0", quality=0.95)
    before = len(fake.calls("DescribeModelPackage"))
    assert repo.run("deploy", "v1.1.0").returncode == 0
    assert len(fake.calls("DescribeModelPackage")) - before <= 2  # each package described once per process
    assert fake.calls("CreateEndpointConfig")[-1]["ProductionVariants"][0]["InitialInstanceCount"] == 3

    bigger = sm_config(quality=0.96).replace("instance_type: ml.m5.large", "instance_type: ml.m5.xlarge")
    (repo.path / "mlops-ci.yaml").write_text(bigger)
    repo.commit("bigger instances")
    repo.ok("train")
    repo.ok("gate")
    repo.ok("promote")
    repo.git("tag", "v1.2.0")
    updates = len(fake.calls("UpdateEndpoint"))
    proc = repo.run("deploy", "v1.2.0")
    assert proc.returncode == 5, proc.stderr
    assert "is auto scaled" in proc.stderr and "deregister the scalable target" in proc.stderr
    assert len(fake.calls("UpdateEndpoint")) == updates  # nothing sent that SageMaker would refuse


TORCH_IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3.0-gpu-py311-cu121-ubuntu20.04-sagemaker"
)


def test_a_distributed_job_is_the_request_the_sdk_sends(repo: Repo, fake: FakeSageMaker):  # noqa: F811
    """instance_count 4 with torch_distributed, a sharded FastFile channel: the hyperparameters the
    PyTorch estimator adds (JSON-encoded as it encodes them), checked against the service model."""
    cfg = (
        sm_config(spot=False)
        .replace("framework: sklearn\n", f"image_uri: {TORCH_IMAGE}\n")
        .replace('    framework_version: "1.2-1"\n', "")
        .replace("instance_type: ml.m5.xlarge", "instance_type: ml.p4d.24xlarge")
        .replace("  max_run: 3600\n", "  max_run: 3600\n  instance_count: 4\n"
                 "  distribution: {torch_distributed: {enabled: true}}\n")
        .replace("    train: s3://", "    train:\n      distribution: ShardedByS3Key\n      input_mode: FastFile\n"
                 "      uri: s3://")
        .replace("serving:\n", f"serving:\n  image_uri: {TORCH_IMAGE}\n")
    )  # fmt: skip
    assert "ShardedByS3Key" in cfg and "instance_count: 4" in cfg
    (repo.path / "mlops-ci.yaml").write_text(cfg)
    repo.commit("distributed")
    proc = repo.run("train", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    (req,) = [p["request"] for p in json.loads(proc.stdout)["plan"] if p["action"] == "CreateTrainingJob"]
    assert aws_model.violations("sagemaker", "CreateTrainingJob", req) == []
    assert req["ResourceConfig"]["InstanceCount"] == 4
    hps = req["HyperParameters"]
    assert hps["sagemaker_torch_distributed_enabled"] == "true"
    assert hps["sagemaker_instance_type"] == '"ml.p4d.24xlarge"'
    assert not any(k.startswith("sagemaker_mpi") for k in hps)
    (channel,) = req["InputDataConfig"]
    assert channel["InputMode"] == "FastFile"
    assert channel["DataSource"]["S3DataSource"]["S3DataDistributionType"] == "ShardedByS3Key"
    repo.ok("train")  # and the real run sends what the plan showed
    (sent,) = fake.calls("CreateTrainingJob")
    assert sent["HyperParameters"] == hps and sent["InputDataConfig"] == req["InputDataConfig"]


def test_a_pytorch_launcher_on_the_sklearn_image_is_refused_at_config_time(repo: Repo, fake: FakeSageMaker):  # noqa: F811
    cfg = sm_config().replace("  max_run: 3600\n", "  max_run: 3600\n  distribution: {pytorchddp: {enabled: true}}\n")
    (repo.path / "mlops-ci.yaml").write_text(cfg)
    proc = repo.run("train", "--dry-run")
    assert proc.returncode == 2, proc.stderr
    assert "training.distribution.pytorchddp" in proc.stderr and "framework 'sklearn'" in proc.stderr
    assert fake.requests == []


def test_instance_count_given_twice_must_agree(repo: Repo, fake: FakeSageMaker):  # noqa: F811
    cfg = sm_config().replace("  max_run: 3600\n", "  max_run: 3600\n  instance_count: 2\n")
    (repo.path / "mlops-ci.yaml").write_text(
        cfg.replace("instance_type: ml.m5.xlarge", "instance_type: ml.m5.xlarge\n    instance_count: 3")
    )
    proc = repo.run("config", "check")
    assert proc.returncode == 2 and "give it once, as training.instance_count" in proc.stderr
    (repo.path / "mlops-ci.yaml").write_text(cfg)
    repo.commit("two hosts")
    proc = repo.run("train", "--dry-run", "--json")
    (req,) = [p["request"] for p in json.loads(proc.stdout)["plan"] if p["action"] == "CreateTrainingJob"]
    assert req["ResourceConfig"]["InstanceCount"] == 2
    assert "InputMode" not in req["InputDataConfig"][0]  # a plain channel: as before, the job's File mode
