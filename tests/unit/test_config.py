from __future__ import annotations

from pathlib import Path

import pytest

from mlops_ci import config
from mlops_ci.errors import ConfigError
from tests.conftest import fast_config


def parse(text: str):
    return config.parse(text, "mlops-ci.yaml", "/repo")


def test_valid_config_is_typed():
    cfg = parse(fast_config())
    assert cfg.project == "fast"
    assert cfg.training.hyperparameters == {"quality": 0.9, "scale": 1.0, "broken": 0}
    assert cfg.training.channels == {"train": "data"}
    assert [d.name for d in cfg.training.metric_definitions] == ["accuracy", "loss", "rows"]
    kinds = [(r.metric, r.kind, r.threshold, r.relative) for r in cfg.gate.rules]
    assert kinds == [("accuracy", "min", 0.8, False), ("accuracy", "max_regression", 0.05, True)]
    assert cfg.gate.rules[0].line == 19
    assert [e.name for e in cfg.endpoints] == ["staging", "production"]
    assert cfg.endpoints[1].smoke[0].body == "[[1, 2]]"


def test_malformed_yaml_names_file_line_and_column():
    with pytest.raises(ConfigError) as exc:
        parse("project: x\ntraining:\n  entry_point: [train.py\n")
    assert exc.value.message.startswith("mlops-ci.yaml:4:1: malformed YAML")
    assert exc.value.line == 4


def test_unknown_key_suggests_the_right_one_with_its_line():
    with pytest.raises(ConfigError) as exc:
        parse("project: x\ntraining:\n  entry_piont: train.py\n")
    msg = exc.value.message
    assert msg.startswith("mlops-ci.yaml:3:3: training.entry_piont: unknown key")
    assert "did you mean 'entry_point'" in msg


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match=r"mlops-ci.yaml:2:1: .*unknown key 'gates'.*did you mean 'gate'"):
        parse("project: x\ngates: {}\n")


def test_duplicate_keys_are_rejected_not_silently_overwritten():
    with pytest.raises(ConfigError, match=r"mlops-ci.yaml:3: duplicate key 'project'"):
        parse("project: x\nstore: sqlite:///a.db\nproject: y\n")


def test_missing_project():
    with pytest.raises(ConfigError, match="missing required key 'project'"):
        parse("training: {}\n")


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("gate:\n  rules:\n    - {metric: acc, min: .nan}\n", "expected a finite number"),
        ("gate:\n  rules:\n    - {metric: acc, min: high}\n", "expected a number, got 'high'"),
        ("gate:\n  rules:\n    - {metric: acc, max_regression: 2%}\n", "needs to know whether 'acc'"),
        ("gate:\n  rules:\n    - {metric: acc}\n", "at least one of min, max"),
        ("gate:\n  rules:\n    - {metric: acc, min: 1, severity: fatal}\n", "'fatal' is not allowed"),
        ("metrics: {acc: {goal: maximise}}\n", "did you mean 'maximize'"),
        ("training:\n  metric_definitions:\n    - {name: a, regex: 'a=[0-9'}\n", "invalid regular expression"),
        ("training:\n  metric_definitions:\n    - {name: a, regex: 'a=[0-9]+'}\n", "needs one capture group"),
        ("training:\n  hyperparameters: {sagemaker_program: x}\n", "must not start with 'sagemaker_'"),
        ("training:\n  backend: sagemakr\n", "did you mean 'sagemaker'|allowed: local"),
        ("endpoints:\n  - {name: a}\n  - {name: a}\n", "declared twice"),
        ("endpoints:\n  - {name: a, port: 70000}\n", "must be 0"),
        ("store: postgres://x\n", "not a supported store"),
    ],
)
def test_bad_values_fail_with_location(snippet: str, expected: str):
    with pytest.raises(ConfigError, match=expected) as exc:
        parse("project: x\n" + snippet)
    assert exc.value.message.startswith("mlops-ci.yaml:")


def test_percent_and_absolute_regression():
    cfg = parse(
        "project: x\nmetrics: {acc: maximize}\ngate:\n  rules:\n"
        "    - {metric: acc, max_regression: 2.5%}\n    - {metric: acc, max_regression: 0.01}\n"
    )
    assert [(r.threshold, r.relative) for r in cfg.gate.rules] == [(0.025, True), (0.01, False)]


def test_gate_digest_ignores_layout_but_not_rules():
    a = parse("project: x\ngate:\n  rules:\n    - {metric: acc, min: 0.5}\n")
    b = parse("project: x\n\n\ngate:\n  rules:\n\n    - metric: acc\n      min: 0.5\n")
    c = parse("project: x\ngate:\n  rules:\n    - {metric: acc, min: 0.6}\n")
    assert a.gate_digest() == b.gate_digest() != c.gate_digest()


def test_training_digest_tracks_hyperparameters_not_secret_values():
    a = parse("project: x\ntraining:\n  environment: {API_TOKEN: one}\n")
    b = parse("project: x\ntraining:\n  environment: {API_TOKEN: two}\n")
    c = parse("project: x\ntraining:\n  hyperparameters: {lr: 0.1}\n")
    assert a.training_digest() == b.training_digest() != c.training_digest()


def test_show_masks_secrets():
    cfg = parse("project: x\ntraining:\n  environment: {COMET_API_KEY: abc123, MODE: fast}\n")
    env = cfg.to_display()["training"]["environment"]
    assert env == {"COMET_API_KEY": "***", "MODE": "fast"}


def test_precedence_flag_over_env_over_file(tmp_path: Path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "mlops-ci.yaml").write_text("project: filename\nstore: sqlite:///file.db\n")
    cfg = config.load(tmp_path, {})
    assert (cfg.project, cfg.store) == ("filename", "sqlite:///file.db")
    env = {"MLOPS_CI_STORE": "sqlite:///env.db", "MLOPS_CI_PROJECT": "fromenv"}
    cfg = config.load(tmp_path, env)
    assert (cfg.project, cfg.store) == ("fromenv", "sqlite:///env.db")
    assert cfg.sources["store"] == "env MLOPS_CI_STORE"
    cfg = config.load(tmp_path, env, store="sqlite:///flag.db")
    assert cfg.store == "sqlite:///flag.db"
    assert cfg.sources["store"] == "flag"


def test_missing_config_file_says_how_to_fix(tmp_path: Path):
    (tmp_path / ".git").mkdir()
    with pytest.raises(ConfigError, match="no mlops-ci.yaml found"):
        config.load(tmp_path, {})


SM = (
    "aws: {role: 'arn:aws:iam::123456789012:role/sm', bucket: ml-bucket, region: us-east-1}\n"
    "training:\n  backend: sagemaker\n  sagemaker: {framework: sklearn, framework_version: '1.2-1'}\n"
)
PT = SM.replace("sklearn, framework_version: '1.2-1'}", "pytorch, framework_version: 2.5.1, instance_type: "
                "ml.g5.xlarge, py_version: py311}")  # fmt: skip
HF = SM.replace("sklearn, framework_version: '1.2-1'}", "huggingface, framework_version: 4.49.0, "
                "base_framework_version: pytorch2.5.1, py_version: py311, instance_type: ml.g5.xlarge}")  # fmt: skip


@pytest.mark.parametrize(
    ("snippet", "expected", "line"),
    [
        ("training:\n  backend: sagemaker\n  sagemaker: {image_uri: x}\n", "SageMaker needs aws.role", 2),
        ("aws: {role: admin}\n", "is not an IAM role ARN", 1),
        ("aws: {bucket: 's3://b'}\n", "not a bucket name", 1),
        (SM.replace("framework: sklearn, ", ""), "give image_uri, or framework and framework_version", 4),
        (SM.replace("'1.2-1'}", "'1.2-1', spot: true}"), "managed spot training needs max_wait", 4),
        (SM.replace("'1.2-1'}", "'1.2-1', max_wait: 60}"), "only applies with spot: true", 4),
        (SM.replace("'1.2-1'}", "'1.2-1', instance_typ: ml.m5.large}"), "did you mean 'instance_type'", 4),
        (SM + "  channels: {train: data/}\n", "SageMaker reads its channels from S3", 5),
        ("training:\n  sagemaker: {image_uri: x}\n", "only applies with training.backend: sagemaker", 2),
        ("endpoints:\n  - {name: a, instance_type: ml.m5.large}\n", "only applies with backend: sagemaker", 2),
        (SM + "endpoints:\n  - {name: a_b, backend: sagemaker}\n", "letters, digits and '-' only", 6),
        (SM + "endpoints:\n  - name: a\n    backend: sagemaker\n    deployment: {percent: 150}\n",
         "1-100", 8),
        # SageMaker's documented limits, checked before any request (API reference wording)
        (SM + "endpoints:\n  - name: a\n    backend: sagemaker\n    deployment: {strategy: canary, percent: 51, "
         "alarms: [x]}\n", "at most 50% of the variant's instances", 8),
        (SM + "endpoints:\n  - name: a\n    backend: sagemaker\n    deployment: {strategy: linear, percent: 5, "
         "alarms: [x]}\n", "10-50% of the variant's instances", 8),
        (SM + "endpoints:\n  - name: a\n    backend: sagemaker\n    deployment: {termination_wait_seconds: 3601}\n",
         "at most 3600 seconds", 8),
        (SM + "endpoints:\n  - name: a\n    backend: sagemaker\n    deployment: {wait_seconds: 7200}\n",
         "at most 3600 seconds", 8),
        (SM + "endpoints:\n  - name: a\n    backend: sagemaker\n    deployment: {max_execution_timeout: 30000}\n",
         "600-28800 seconds", 8),
        (SM.replace("'1.2-1'}", "'1.2-1', spot: true, max_wait: 7200, keep_alive: 600}"),
         "warm pools cannot be used with managed spot training", 4),
        (SM.replace("'1.2-1'}", "'1.2-1', retry_attempts: 31}"), "at most 30 times", 4),
        (SM.replace("'1.2-1'}", "'1.2-1', instance_type: ml.g5.xlarge}"),
         "training.sagemaker.instance_type: SageMaker's scikit-learn training images run on CPU only", 4),
        (SM.replace("'1.2-1'}", "'1.2-1', instance_type: ml.c7g.xlarge}"), "training images are x86 only", 4),
        (SM + "endpoints:\n  - {name: a, backend: sagemaker, instance_type: ml.p3.2xlarge}\n",
         "endpoints.0.instance_type: SageMaker's scikit-learn inference images run on CPU only", 6),
        (SM + "endpoints:\n  - {name: a, backend: sagemaker, instance_type: ml.m6g.xlarge}\n",
         "arm64 .*inference image for 1.0-1 only", 6),
        # the other frameworks' images, from the same table (mlops_ci/backends/sagemaker_images.py)
        (PT.replace(", py_version: py311", ""),
         "training.sagemaker.py_version: SageMaker's PyTorch 2.5.1 training image is built for py311 only", 4),
        (PT.replace("ml.g5.xlarge", "ml.p2.xlarge"), "do not run on P2 instances", 4),
        (PT.replace("ml.g5.xlarge", "ml.c6g.xlarge"), r"Graviton \(arm64\) type", 4),
        (PT + "endpoints:\n  - {name: a, backend: sagemaker, instance_type: ml.c6g.large}\n",
         r"endpoints.0.instance_type: SageMaker has a PyTorch arm64 \(Graviton\) inference image .* not for 2.5.1", 6),
        (PT + "endpoints:\n  - {name: a, backend: sagemaker, instance_type: ml.m7g.large}\n",
         "endpoints.0.instance_type: SageMaker's arm64 PyTorch images are for the Graviton families", 6),
        (HF.replace("base_framework_version: pytorch2.5.1, ", ""), "base_framework_version: is needed with "
         "framework: huggingface", 4),
        (HF.replace("pytorch2.5.1", "2.5.1"), "'2.5.1' is not a base framework version", 4),
        (SM.replace("'1.2-1'}", "'1.2-1', base_framework_version: pytorch2.5.1}"), "only applies with framework: "
         "huggingface", 4),
        (HF.replace("ml.g5.xlarge", "ml.m5.xlarge"), "Hugging Face training images run on GPU only", 4),
        (HF + "endpoints:\n  - {name: a, backend: sagemaker, instance_type: ml.g5.xlarge}\n",
         "training.sagemaker.base_framework_version: SageMaker's Hugging Face 4.49.0 inference image is built on "
         "pytorch2.6.0, not pytorch2.5.1", 4),
        (HF.replace("4.49.0", "4.55.0").replace("2.5.1", "2.7.1").replace("py311", "py312") + "registry: {backend: "
         "sagemaker}\n", "framework_version: SageMaker has a Hugging Face inference image for .* not for 4.55.0", 4),
        (SM + "endpoints:\n  - name: a\n    backend: sagemaker\n    deployment: {strategy: blue}\n",
         "'blue' is not allowed", 8),
        ("registry: {backend: sagemaker, approval: Yes}\n", "not allowed|expected a non-empty string", 1),
    ],
)  # fmt: skip
def test_bad_sagemaker_settings_fail_with_location(snippet: str, expected: str, line: int):
    with pytest.raises(ConfigError, match=expected) as exc:
        parse("project: x\n" + snippet)
    assert exc.value.message.startswith(f"mlops-ci.yaml:{line + 1}:"), exc.value.message


def test_sagemaker_settings_parse_and_enter_the_training_digest():
    cfg = parse("project: x\n" + SM + "endpoints:\n  - {name: prod, backend: sagemaker, instance_count: 2}\n")
    assert cfg.training.sagemaker is not None and cfg.training.sagemaker.instance_type == "ml.m5.large"
    assert cfg.endpoints[0].instance_count == 2 and cfg.endpoints[0].ready_timeout == 3600
    bigger = parse("project: x\n" + SM.replace("'1.2-1'}", "'1.2-1', instance_type: ml.m5.4xlarge}"))
    polled = parse("project: x\n" + SM.replace("region: us-east-1", "region: us-east-1, poll_seconds: 5"))
    assert cfg.training_digest() != bigger.training_digest()
    assert cfg.training_digest() == polled.training_digest()  # how often we ask is not what ran


def test_an_unset_base_framework_version_leaves_sagemaker_digests_as_they_were():
    # the digest of SM before base_framework_version existed: runs recorded then still match
    assert parse("project: x\n" + SM).training_digest() == (
        "2a44e65b31645e7768f2ba0b6e3d4e0339023d06d8024161d89b7259ec1949ab"
    )
    hf = parse("project: x\n" + HF)
    assert hf.training.sagemaker is not None and hf.training.sagemaker.base_framework_version == "pytorch2.5.1"
    assert hf.training_digest() != parse("project: x\n" + HF.replace("pytorch2.5.1", "pytorch2.5")).training_digest()


def test_config_check_warns_of_an_image_only_the_sdk_can_find():
    from mlops_ci.settings.sagemaker import TRAINING

    assert TRAINING.advice is not None
    old = parse("project: x\n" + PT.replace("2.5.1", "1.13.1").replace("py311", "py39"))
    ((level, path, message),) = TRAINING.advice(old)
    assert (level, path) == ("warning", ("training", "sagemaker", "framework_version"))
    assert message.startswith("mlops-ci's table of SageMaker PyTorch images has no version 1.13.1 (it has 2.0.0, ")
    assert message.endswith("it is found only where the SageMaker Python SDK is installed (pip install sagemaker); "
                            "or set image_uri")  # fmt: skip
    assert TRAINING.advice(parse("project: x\n" + PT)) == []
    assert TRAINING.advice(parse("project: x\n" + HF)) == []


def test_local_training_digest_is_unchanged_by_the_new_settings():
    """Runs recorded before SageMaker support keep matching their config."""
    import hashlib
    import json

    cfg = parse("project: x\n")
    old = {"project": "x", "training": {"backend": "local", "entry_point": "train.py", "source_dir": ".",
           "hyperparameters": {}, "channels": {}, "metric_definitions": [], "environment": {}, "python": None,
           "max_run": 3600}, "serving": {"entry_point": None, "include": [], "python": None}}  # fmt: skip
    text = json.dumps(old, sort_keys=True, separators=(",", ":"), default=str)
    assert cfg.training_digest() == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("tracking: {backend: comet}\n", "Comet needs tracking.workspace"),
        ("tracking: {backend: comet, workspace: w, api_key_env: 'abc123secret'}\n", "NAME of an environment variable"),
        ("tracking: {backend: comet, workspace: w, mode: sometimes}\n", "'sometimes' is not allowed"),
        ("tracking: {backend: comet, workspace: w, summary: mean}\n", "'mean' is not allowed"),
        ("tracking: {backend: local, workspace: w}\n", "only applies with tracking.backend: comet"),
        ("tracking: {backend: comet, workspace: w, api_key: k}\n", "unknown key 'api_key'"),
        # compare_url: a bad template fails here, not as a KeyError when a report is rendered
        (
            "tracking: {backend: comet, workspace: w, compare_url: '{server}/{experiment}/{baseline}/{head}'}\n",
            r"unknown placeholder \{experiment\}",
        ),
        (
            "tracking: {backend: comet, workspace: w, compare_url: '{server}/{baseline}'}\n",
            r"must contain \{baseline\} and \{head\}",
        ),
        (
            "tracking: {backend: comet, workspace: w, compare_url: '{server}/{baseline/{head}'}\n",
            "not a valid template",
        ),
        ("tracking: {backend: comet, workspace: w, compare_url: '{server}/{baseline!r}/{head}'}\n", "no format spec"),
        (
            "tracking: {backend: comet, workspace: w, compare_url: '{}/{baseline}/{head}'}\n",
            r"unknown placeholder \{\}",
        ),
        ("tracking: {backend: comet, workspace: w, compare_url: 'javascript:{baseline}{head}'}\n", "must start with"),
        (
            'tracking: {backend: comet, workspace: w, compare_url: "https://x/{baseline}/{head}\\n\\n# Ok @a/b"}\n',
            "must be one URL",
        ),
    ],
)
def test_bad_tracking_settings_fail_with_location(snippet: str, expected: str):
    with pytest.raises(ConfigError, match=expected) as exc:
        parse("project: x\n" + snippet)
    assert exc.value.message.startswith("mlops-ci.yaml:2:")


def test_comet_settings_parse_and_leave_the_training_digest_alone():
    cfg = parse("project: x\ntracking: {backend: comet, workspace: acme, model_name: churn}\n")
    assert (cfg.tracking.workspace, cfg.tracking.model_name, cfg.tracking.api_key_env) == (
        "acme",
        "churn",
        "COMET_API_KEY",
    )
    assert cfg.training_digest() == parse("project: x\n").training_digest()  # where numbers go is not what ran


def test_a_compare_url_override_with_known_placeholders_is_kept():
    url = "https://comet.internal/{workspace}/{project}/diff?a={baseline}&b={head}"
    cfg = parse(f"project: x\ntracking: {{backend: comet, workspace: acme, compare_url: '{url}'}}\n")
    assert cfg.tracking.compare_url == url
    default = parse("project: x\ntracking: {backend: comet, workspace: acme}\n").tracking
    assert default.compare_url == "{server}/{workspace}/{project}/{baseline}/{head}/compare"
    assert (default.deployed_status, default.retired_status) == ("Production", "None")


def test_retrain_is_a_workflow_dispatch_or_a_repository_dispatch():
    text = fast_config(extra="monitoring:\n  retrain: {workflow: mlops-ci-train.yml, inputs: {force: true, n: 3}}\n")
    retrain = parse(text).monitoring.retrain
    assert (retrain.workflow, retrain.ref, retrain.inputs, retrain.event_type) == (
        "mlops-ci-train.yml", None, (("force", "true"), ("n", "3")), None)  # fmt: skip
    default = parse(fast_config(extra="monitoring:\n  retrain: {workflow: t.yaml, ref: release/2}\n")).monitoring
    assert default.retrain.inputs == (("force", "true"),) and default.retrain.ref == "release/2"
    event = parse(fast_config(extra="monitoring:\n  retrain: {event_type: retrain-model}\n")).monitoring.retrain
    assert (event.workflow, event.event_type) == (None, "retrain-model")


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("{}", "exactly one"),
        ("{workflow: a.yml, event_type: b}", "exactly one"),
        ("{workflow: ../../evil.yml}", "a workflow's file name"),
        ('{workflow: "a.yml\\n::error::x"}', "a workflow's file name"),
        ("{workflow: a.yml, ref: '-x'}", "a branch or tag name"),
        ("{workflow: a.yml, ref: 'a..b'}", "a branch or tag name"),
        ("{workflow: a.yml, inputs: [force]}", "a mapping of workflow inputs"),
        ("{workflow: a.yml, inputs: {'bad name': x}}", "is a workflow input"),
        ("{workflow: a.yml, inputs: {force: [1]}}", "is a workflow input"),
        ("{event_type: x, ref: main}", "is for `workflow`"),
        ("{event_type: '" + "x" * 101 + "'}", "1 to 100 printable characters"),
        ('{event_type: "a\\nb"}', "1 to 100 printable characters"),
    ],
)
def test_retrain_refuses_what_github_would(snippet: str, expected: str):
    with pytest.raises(ConfigError) as exc:
        parse(fast_config(extra=f"monitoring:\n  retrain: {snippet}\n"))
    assert expected in exc.value.message and "\n" not in exc.value.message
