"""The SageMaker backend end to end: every verb a fresh `mlops-ci` process talking to the fake
SageMaker/S3/CloudWatch on 127.0.0.1 (moto, extended in tests/fakes/sagemaker.py) through
AWS_ENDPOINT_URL, exactly as boto3 talks to AWS."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAST_INFERENCE, FAST_TRAIN, git, run_cli
from tests.fakes.sagemaker import ACCOUNT, REGION, FakeSageMaker, JobScript, serve

ROLE = f"arn:aws:iam::{ACCOUNT}:role/mlops-ci-sagemaker"
BUCKET = "ml-bucket"
DATA = "s3://ml-data/rows/"
SKLEARN = f"683313688378.dkr.ecr.{REGION}.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


def sm_config(*, quality: float = 0.9, registry: str = "sagemaker", approval: str = "Approved", instance_count: int = 1,
              strategy: str = "canary", spot: bool = True, prices: str = "{}") -> str:  # fmt: skip
    spot_lines = "spot: true\n            max_wait: 7200" if spot else "spot: false"
    return textwrap.dedent(
        f"""\
        project: fast
        aws:
          region: {REGION}
          role: {ROLE}
          bucket: {BUCKET}
          poll_seconds: 0.01
          retry_mode: standard
          max_attempts: 5
          prices: {prices}
        training:
          backend: sagemaker
          entry_point: train.py
          hyperparameters: {{quality: {quality}, scale: 1.0, solver: "lbfgs"}}
          channels:
            train: {DATA}
          metric_definitions:
            - {{name: accuracy, regex: "accuracy=([0-9.]+)"}}
            - {{name: loss, regex: "loss=([0-9.]+)"}}
          environment: {{COMET_API_KEY: do-not-leak, LOG_LEVEL: info}}
          max_run: 3600
          sagemaker:
            framework: sklearn
            framework_version: "1.2-1"
            instance_type: ml.m5.xlarge
            {spot_lines}
            subnets: [subnet-1]
            security_group_ids: [sg-1]
        metrics:
          accuracy: {{goal: maximize}}
          loss: {{goal: minimize}}
        gate:
          rules:
            - {{metric: accuracy, min: 0.8}}
        registry:
          backend: {registry}
          approval: {approval}
        serving:
          entry_point: inference.py
        endpoints:
          - name: production
            backend: sagemaker
            tags: ["v*"]
            instance_type: ml.m5.large
            instance_count: {instance_count}
            deployment: {{strategy: {strategy}, percent: 20, wait_seconds: 60, alarms: [fast-5xx]}}
            smoke:
              - body: [[1, 2]]
                expect_contains: "fast-v"
        """
    )


class Repo:
    def __init__(self, path: Path, url: str):
        self.path, self.url = path, url

    def git(self, *args: str) -> str:
        return git(self.path, *args)

    def commit(self, message: str = "change", **config: Any) -> str:
        if config:
            (self.path / "mlops-ci.yaml").write_text(sm_config(**config))
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def run(self, *args: str, store: str | None = None) -> Any:
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ENDPOINT_URL": self.url,
               "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
        if store:
            env["MLOPS_CI_STORE"] = store
        return run_cli(*args, cwd=self.path, env=env)

    def ok(self, *args: str, store: str | None = None) -> str:
        proc = self.run(*args, store=store)
        assert proc.returncode == 0, f"{args} exited {proc.returncode}: {proc.stderr}"
        return str(proc.stdout)


@pytest.fixture
def fake() -> Iterator[FakeSageMaker]:
    f = FakeSageMaker()
    with serve(f) as url:
        import boto3

        kw = {"endpoint_url": url, "region_name": REGION, "aws_access_key_id": "testing",
              "aws_secret_access_key": "testing"}  # fmt: skip
        from moto.moto_api._internal import moto_api_backend

        moto_api_backend.reset()  # moto's state is per process: every test starts from nothing
        s3 = boto3.client("s3", **kw)
        for bucket in (BUCKET, "ml-data"):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket="ml-data", Key="rows/part-0.csv", Body=b"1\n2\n3\n")
        f.url = url  # type: ignore[attr-defined]
        f.s3 = s3  # type: ignore[attr-defined]
        f.client = boto3.client("sagemaker", **kw)  # type: ignore[attr-defined]
        yield f
    assert not f.violations, f"SageMaker would refuse these requests (botocore service model): {f.violations}"


@pytest.fixture
def repo(tmp_path: Path, fake: FakeSageMaker) -> Repo:
    path = tmp_path / "repo"
    path.mkdir()
    (path / "train.py").write_text(FAST_TRAIN)
    (path / "inference.py").write_text(FAST_INFERENCE)
    (path / ".gitignore").write_text(".mlops-ci/\n")
    (path / "mlops-ci.yaml").write_text(sm_config())
    git(path, "init", "-q", "-b", "main")
    r = Repo(path, fake.url)  # type: ignore[attr-defined]
    r.commit("initial")
    return r


def source_objects(fake: Any) -> list[dict[str, Any]]:
    return fake.s3.list_objects_v2(Bucket=BUCKET, Prefix="mlops-ci/source/").get("Contents", [])


def test_train_creates_one_script_mode_job_and_records_its_metrics(repo: Repo, fake: FakeSageMaker):
    sha = repo.git("rev-parse", "HEAD")
    proc = repo.run("train", "--json")
    assert proc.returncode == 0, proc.stderr
    creates = fake.calls("CreateTrainingJob")
    assert len(creates) == 1
    req = creates[0]
    hps = req["HyperParameters"]
    assert json.loads(hps["quality"]) == 0.9 and json.loads(hps["solver"]) == "lbfgs"  # JSON-encoded, as the SDK does
    assert json.loads(hps["sagemaker_program"]) == "train.py"
    source = json.loads(hps["sagemaker_submit_directory"])
    assert source.startswith(f"s3://{BUCKET}/mlops-ci/source/") and source.endswith("/sourcedir.tar.gz")
    assert json.loads(hps["sagemaker_region"]) == REGION
    assert req["AlgorithmSpecification"]["TrainingImage"] == SKLEARN
    assert [d["Name"] for d in req["AlgorithmSpecification"]["MetricDefinitions"]] == ["accuracy", "loss"]
    assert req["EnableManagedSpotTraining"] is True
    assert req["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert req["CheckpointConfig"]["S3Uri"].startswith(f"s3://{BUCKET}/mlops-ci/checkpoints/")
    assert req["VpcConfig"] == {"Subnets": ["subnet-1"], "SecurityGroupIds": ["sg-1"]}
    assert req["ResourceConfig"]["InstanceType"] == "ml.m5.xlarge"
    assert req["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == DATA
    assert req["RoleArn"] == ROLE
    tags = {t["Key"]: t["Value"] for t in req["Tags"]}
    assert tags["mlops-ci:sha"] == sha and tags["mlops-ci:branch"] == "main" and tags["mlops-ci:project"] == "fast"
    assert req["TrainingJobName"].startswith(f"fast-{sha[:8]}-") and req["TrainingJobName"].endswith("-1")
    assert "do-not-leak" not in json.dumps(hps)  # secrets travel in Environment only
    # waiting showed the status transitions and the streamed CloudWatch log
    assert "InProgress / Training" in proc.stderr and "accuracy=0.91" in proc.stderr
    run = json.loads(proc.stdout)["run"]
    assert run["backend"] == "sagemaker" and run["status"] == "completed"
    assert run["metrics"] == {"accuracy": 0.91, "loss": 0.31}  # from FinalMetricDataList
    assert run["links"]["training_job"].endswith(f":training-job/{req['TrainingJobName']}")
    assert run["cost"]["billable_seconds"] == 36 and run["cost"]["training_seconds"] == 120
    assert run["data"]["train"]["uri"] == DATA and run["data"]["train"]["objects"] == "1"
    assert run["artifact_sha256"]
    # the same commit again: no job; on a fresh store (a workflow re-run): attaches, no job
    repo.ok("train")
    repo.ok("train", store="sqlite:///.mlops-ci/other.db")
    assert len(fake.calls("CreateTrainingJob")) == 1
    # --force trains again as a new attempt; the unchanged source is not uploaded again
    before = source_objects(fake)
    assert len(before) == 1
    out = repo.run("train", "--force")
    assert out.returncode == 0, out.stderr
    assert "source unchanged" in out.stderr
    assert source_objects(fake) == before
    names = [c["TrainingJobName"] for c in fake.calls("CreateTrainingJob")]
    assert len(names) == 2 and names[1].endswith("-2")


def test_a_failed_job_exits_6_with_its_failure_reason_and_is_recorded(repo: Repo, fake: FakeSageMaker):
    fake.script = JobScript(failure="AlgorithmError: ValueError: Input contains NaN")
    proc = repo.run("train")
    assert proc.returncode == 6
    assert "Input contains NaN" in proc.stderr.strip().splitlines()[-1]
    runs = json.loads(repo.ok("runs", "--json"))
    assert runs[0]["status"] == "failed" and "Input contains NaN" in runs[0]["failure"]


def test_throttling_is_retried(repo: Repo, fake: FakeSageMaker):
    fake.throttle("DescribeTrainingJob", 2)
    fake.throttle("CreateTrainingJob", 1)
    repo.ok("train")
    assert len(fake.calls("DescribeTrainingJob")) >= 3
    assert len(fake.sm.training_jobs) == 1


def test_a_denied_permission_names_it_and_records_nothing(repo: Repo, fake: FakeSageMaker):
    fake.fail("CreateTrainingJob", "AccessDeniedException", "User: arn:aws:sts::123456789012:assumed-role/ci is not "
              "authorized to perform: sagemaker:CreateTrainingJob", status=400)  # fmt: skip
    proc = repo.run("train")
    assert proc.returncode == 13
    last = proc.stderr.strip().splitlines()[-1]
    assert "sagemaker:CreateTrainingJob" in last and "docs/sagemaker.md" in last
    assert json.loads(repo.ok("runs", "--json")) == []
    assert not list((repo.path / ".mlops-ci" / "runs").iterdir())


def test_no_wait_then_wait_and_cancel_superseded(repo: Repo, fake: FakeSageMaker):
    first = repo.git("rev-parse", "HEAD")
    proc = repo.run("train", "--no-wait")
    assert proc.returncode == 0, proc.stderr
    assert "mlops-ci wait" in proc.stderr
    job_a = fake.calls("CreateTrainingJob")[0]["TrainingJobName"]
    assert fake.sm.training_jobs[job_a].training_job_status == "InProgress"
    second = repo.commit("tune the features")  # same config: only the commit differs
    proc = repo.run("train", "--no-wait", "--cancel-superseded")
    assert proc.returncode == 0, proc.stderr
    assert fake.calls("StopTrainingJob") == [{"TrainingJobName": job_a}]
    assert f"stopped {job_a}" in proc.stderr
    out = json.loads(repo.ok("wait", "--json"))
    assert out["run"]["sha"] == second and out["run"]["status"] == "completed"
    proc = repo.run("wait", first)  # the stopped job is recorded as failed
    assert proc.returncode == 6 and "Stopped" in proc.stderr


def _released(repo: Repo, tag: str, **config: Any) -> str:
    sha = repo.commit(f"release {tag}", **config) if config else repo.git("rev-parse", "HEAD")
    repo.ok("train")
    repo.ok("gate")
    repo.ok("promote")
    repo.git("tag", tag, sha)
    return sha


def test_promote_and_deploy_then_a_failed_update_leaves_the_old_config_serving(repo: Repo, fake: FakeSageMaker):
    sha1 = _released(repo, "v1.0.0")
    pkgs = fake.client.list_model_packages(ModelPackageGroupName="fast")["ModelPackageSummaryList"]  # type: ignore[attr-defined]
    assert len(pkgs) == 1
    pkg = fake.client.describe_model_package(ModelPackageName=pkgs[0]["ModelPackageArn"])  # type: ignore[attr-defined]
    assert pkg["ModelApprovalStatus"] == "Approved"
    assert pkg["CustomerMetadataProperties"]["git_sha"] == sha1
    run = json.loads(repo.ok("runs", "show", "--json"))
    assert pkg["CustomerMetadataProperties"]["artifact_sha256"] == run["artifact_sha256"]
    repo.ok("promote")  # idempotent by SHA
    assert len(fake.calls("CreateModelPackage")) == 1
    (listed,) = json.loads(repo.ok("models", "--json"))
    assert listed["model_package"] == {"arn": pkg["ModelPackageArn"], "approval": "Approved"}
    assert f"SageMaker: {pkg['ModelPackageArn']} (Approved)" in repo.ok("models")

    proc = repo.run("deploy", "v1.0.0")
    assert proc.returncode == 0, proc.stderr
    (model,) = fake.calls("CreateModel")
    assert model["PrimaryContainer"]["Image"] == SKLEARN
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    (config1,) = fake.calls("CreateEndpointConfig")
    assert config1["ProductionVariants"][0]["ModelName"] == model["ModelName"]
    (create,) = fake.calls("CreateEndpoint")
    policy = create["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    canary = {"Type": "CANARY", "WaitIntervalInSeconds": 60, "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20}}
    assert policy["TrafficRoutingConfiguration"] == canary
    assert create["DeploymentConfig"]["AutoRollbackConfiguration"] == {"Alarms": [{"AlarmName": "fast-5xx"}]}
    ep = fake.client.describe_endpoint(EndpointName="production")  # type: ignore[attr-defined]
    assert ep["EndpointStatus"] == "InService" and ep["EndpointConfigName"] == config1["EndpointConfigName"]
    assert fake.calls("InvokeEndpoint")  # smoke requests went through sagemaker-runtime
    assert json.loads(repo.ok("endpoints", "--json"))[0]["version"] == 1
    assert repo.run("deploy", "v1.0.0").returncode == 0  # already serving: nothing to do
    assert len(fake.calls("CreateEndpoint")) == 1 and not fake.calls("UpdateEndpoint")

    _released(repo, "v1.1.0", quality=0.95)
    fake.fail_update = "CloudWatch alarm fast-5xx went into ALARM during the canary"
    proc = repo.run("deploy", "v1.1.0")
    assert proc.returncode == 7
    last = proc.stderr.strip().splitlines()[-1]
    assert "fast-5xx went into ALARM" in last and "v1 is still serving" in last
    ep = fake.client.describe_endpoint(EndpointName="production")  # type: ignore[attr-defined]
    assert ep["EndpointStatus"] == "InService" and ep["EndpointConfigName"] == config1["EndpointConfigName"]
    # nothing of the old version was deleted
    assert config1["EndpointConfigName"] in fake.sm.endpoint_configs and model["ModelName"] in fake.sm._models
    status = json.loads(repo.ok("status", "--json"))[0]
    assert status["live_version"] == 1 and "declared v2" in status["drift"]

    proc = repo.run("deploy", "v1.1.0", "--retry-failed")
    assert proc.returncode == 0, proc.stderr
    (update,) = [c for c in fake.calls("UpdateEndpoint") if c.get("DeploymentConfig")][-1:]
    assert update["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "CANARY"
    assert json.loads(repo.ok("status", "--json"))[0]["live_version"] == 2


def test_a_failing_smoke_request_rolls_back_to_the_previous_config(repo: Repo, fake: FakeSageMaker):
    _released(repo, "v1.0.0")
    repo.ok("deploy", "v1.0.0")
    before = fake.client.describe_endpoint(EndpointName="production")["EndpointConfigName"]  # type: ignore[attr-defined]
    _released(repo, "v1.1.0", quality=0.95)
    fake.model_errors["fast-v2-"] = (500, "ValueError: could not convert string to float")
    proc = repo.run("deploy", "v1.1.0")
    assert proc.returncode == 7
    assert "could not convert string to float" in proc.stderr and "rolled back" in proc.stderr
    after = fake.client.describe_endpoint(EndpointName="production")  # type: ignore[attr-defined]
    assert after["EndpointConfigName"] == before and after["EndpointStatus"] == "InService"


def test_dry_run_deploy_mutates_nothing_and_prints_the_requests_the_deploy_makes(repo: Repo, fake: FakeSageMaker):
    _released(repo, "v1.0.0")
    start = len(fake.requests)
    proc = repo.run("deploy", "v1.0.0", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    dry_ops = [name for name, _ in fake.requests[start:]]
    assert all(op.startswith(("Describe", "List")) for op in dry_ops), dry_ops
    plan = [p for p in json.loads(proc.stdout)["plan"] if p["target"] == "sagemaker"]
    assert [p["action"] for p in plan] == ["CreateModel", "CreateEndpointConfig", "CreateEndpoint", "InvokeEndpoint"]
    repo.ok("deploy", "v1.0.0")
    for p in plan[:3]:
        assert fake.calls(p["action"]) == [p["request"]]


def test_pending_manual_approval_blocks_the_deploy(repo: Repo, fake: FakeSageMaker):
    _released(repo, "v1.0.0", approval="PendingManualApproval")
    proc = repo.run("deploy", "v1.0.0")
    assert proc.returncode == 5
    assert "PendingManualApproval, not Approved" in proc.stderr
    assert not fake.calls("CreateEndpoint")


def test_an_uncommitted_approval_change_does_not_skip_the_manual_approval(repo: Repo, fake: FakeSageMaker):
    sha = repo.commit("needs approval", approval="PendingManualApproval")
    repo.ok("train")
    repo.ok("gate")
    (repo.path / "mlops-ci.yaml").write_text(sm_config())  # approval: Approved, not committed
    repo.ok("promote")
    repo.git("tag", "v1.0.0", sha)
    proc = repo.run("deploy", "v1.0.0")
    assert proc.returncode == 5 and "PendingManualApproval, not Approved" in proc.stderr
    assert not fake.calls("CreateEndpoint")


def test_status_reports_instance_drift(repo: Repo, fake: FakeSageMaker):
    _released(repo, "v1.0.0")
    repo.ok("deploy", "v1.0.0")
    (repo.path / "mlops-ci.yaml").write_text(sm_config(instance_count=2))
    proc = repo.run("status", "--check")
    assert proc.returncode == 12
    assert "runs 1 x ml.m5.large but 2 x ml.m5.large is declared" in proc.stdout + proc.stderr


def test_the_pr_report_shows_what_training_cost_next_to_the_metric_deltas(repo: Repo, fake: FakeSageMaker):
    repo.ok("train")  # baseline on main: 120 s of spot training billed as 36 s
    repo.git("checkout", "-q", "-b", "bigger")
    (repo.path / "mlops-ci.yaml").write_text(sm_config(spot=False, prices="{ml.m5.xlarge: 0.5}"))
    repo.commit("no spot, longer training")
    fake.script = JobScript(training_seconds=3600, log=["loss=0.2", "accuracy=0.93"])
    repo.ok("train")
    report = json.loads(repo.ok("report", "--base", "main", "--json"))
    head, base = report["comparison"]["head"]["cost"], report["comparison"]["baseline"]["cost"]
    assert base["spot"] is True and base["billable_seconds"] == 36 and base["spot_savings_pct"] == 70.0
    assert base["usd_per_hour"] == 0.23 and base["price_source"] == "package table"  # shipped price table
    assert head["spot"] is False and head["billable_seconds"] == 3600 and "spot_savings_pct" not in head
    assert head["usd"] == 0.5 and head["price_source"] == "config"  # aws.prices overrides the table
    md = repo.ok("report", "--base", "main")
    assert "### Training cost (estimate)" in md
    assert "| instances | 1 × ml.m5.xlarge (spot) | 1 × ml.m5.xlarge | |" in md
    assert "| spot savings | 70% | — | |" in md
    assert "| estimated cost | $0.0023 | $0.5000 | +$0.4977 |" in md
    assert md.index("### Metrics") < md.index("### Training cost")


def test_dry_runs_of_train_and_promote_print_the_requests_the_real_runs_send(repo: Repo, fake: FakeSageMaker):
    proc = repo.run("train", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert fake.mutating() == [] and source_objects(fake) == []
    plan = [p for p in json.loads(proc.stdout)["plan"] if p["target"] == "sagemaker"]
    assert [p["action"] for p in plan] == ["s3:PutObject", "CreateTrainingJob"]
    assert "do-not-leak" not in proc.stdout and plan[1]["request"]["Environment"]["COMET_API_KEY"] == "***"
    repo.ok("train")
    (sent,) = fake.calls("CreateTrainingJob")
    assert sent["Environment"]["COMET_API_KEY"] == "do-not-leak"  # the job gets it; the printed plan never
    assert {**sent, "Environment": {**sent["Environment"], "COMET_API_KEY": "***"}} == plan[1]["request"]
    assert source_objects(fake)[0]["Key"] == plan[0]["uri"].split(f"s3://{BUCKET}/", 1)[1]
    repo.ok("gate")
    proc = repo.run("promote", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = [p for p in json.loads(proc.stdout)["plan"] if p["target"] == "sagemaker"]
    assert [p["action"] for p in plan] == ["s3:PutObject", "CreateModelPackageGroup", "CreateModelPackage"]
    assert not fake.calls("CreateModelPackage")
    repo.ok("promote")
    assert fake.calls("CreateModelPackageGroup") == [plan[1]["request"]]
    assert fake.calls("CreateModelPackage") == [plan[2]["request"]]


def test_a_comet_key_reaches_the_job_environment_only_and_is_masked_in_plans(repo: Repo, fake: FakeSageMaker):
    from tests.fakes.comet import FakeComet
    from tests.fakes.comet import serve as serve_comet

    secret = "comet-secret-key-42"
    text = sm_config().replace("project: fast\n", "project: fast\ntracking: {backend: comet, workspace: acme}\n")
    (repo.path / "mlops-ci.yaml").write_text(text)
    repo.commit("track in comet")
    comet = FakeComet(api_key=secret)
    with serve_comet(comet) as url:
        env = {"COMET_API_KEY": secret, "COMET_URL_OVERRIDE": f"{url}/clientlib/"}
        base = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ENDPOINT_URL": repo.url,
                "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
        plan = run_cli("train", "--dry-run", "--json", cwd=repo.path, env={**base, **env})
        assert plan.returncode == 0, plan.stderr
        assert secret not in plan.stdout + plan.stderr
        (req,) = [p["request"] for p in json.loads(plan.stdout)["plan"] if p["action"] == "CreateTrainingJob"]
        assert req["Environment"]["COMET_API_KEY"] == "***" and req["Environment"]["COMET_WORKSPACE"] == "acme"
        proc = run_cli("train", cwd=repo.path, env={**base, **env})
        assert proc.returncode == 0, proc.stderr
        assert secret not in proc.stdout + proc.stderr
    (sent,) = fake.calls("CreateTrainingJob")
    assert sent["Environment"]["COMET_API_KEY"] == secret  # the job needs it: environment only
    assert sent["Environment"]["COMET_OFFLINE_DIRECTORY"] == "/opt/ml/output/data/comet"
    key = sent["Environment"]["MLOPS_CI_COMET_EXPERIMENT_KEY"]
    assert sent["Environment"]["MLOPS_CI_GIT_SHA"] == repo.git("rev-parse", "HEAD")
    # comet_ml itself logs the commit, the job and the data on whatever experiment the script makes
    envs = sent["Environment"]
    assert envs["COMET_LOG_OTHER_GIT_SHA"] == repo.git("rev-parse", "HEAD")
    assert envs["COMET_LOG_OTHER_SAGEMAKER_TRAINING_JOB"] == sent["TrainingJobName"]
    assert envs["COMET_LOG_OTHER_SAGEMAKER_REGION"] == REGION
    assert any(k.startswith("COMET_LOG_OTHER_DATA_") for k in envs)
    assert envs["COMET_EXPERIMENT_NAME"].startswith(repo.git("rev-parse", "HEAD")[:8] + " · ")
    assert envs["COMET_AUTO_LOG_GIT_METADATA"] == envs["COMET_AUTO_LOG_GIT_PATCH"] == "false"
    assert "PYTHONPATH" not in envs and "MLOPS_CI_COMET_OFFLINE" not in envs  # the offline shim is local only
    assert secret not in json.dumps(sent["HyperParameters"]) and secret not in json.dumps(sent["Tags"])
    run = json.loads(repo.ok("runs", "show", "--json"))
    assert run["links"]["comet_experiment_key"] == key and run["links"]["comet"].endswith(f"/acme/fast/{key}")
    assert secret not in json.dumps(run)


def test_the_model_diff_of_two_training_jobs_reads_their_models_and_the_channel_from_s3(
    repo: Repo, fake: FakeSageMaker
):
    # whole-number predictions would be taken for classes: this model is a regressor
    review = "review: {eval_channel: train, task: regression, latency_requests: 20}\n"
    (repo.path / "mlops-ci.yaml").write_text(sm_config() + review)
    repo.commit("review the train channel")
    fake.script = JobScript(model_files={"model.json": b'{"scale": 1.0, "broken": 0}'})
    repo.ok("train")
    repo.git("checkout", "-q", "-b", "double")
    (repo.path / "mlops-ci.yaml").write_text(sm_config().replace("scale: 1.0", "scale: 2.0") + review)
    repo.commit("doubled")
    fake.script = JobScript(model_files={"model.json": b'{"scale": 2.0, "broken": 0}'})
    repo.ok("train")
    d = json.loads(repo.ok("report", "--base", "main", "--json"))["comparison"]["model_diff"]
    assert d["status"] == "ok", d["reason"]
    assert d["task"] == "regression" and d["eval"]["rows"] == 3 and d["eval"]["labels"] is False
    assert d["flip_rate"] == 1.0 and d["regression"]["delta"]["mean"] == pytest.approx((1 + 2 + 3) / 3)
    assert d["operational"]["head"]["latency_p50_ms"] > 0
    cached = list((repo.path / ".mlops-ci" / "eval-data").iterdir())
    assert len(cached) == 1 and (cached[0] / "part-0.csv").read_text() == "1\n2\n3\n"
