"""A backend's own keys are read by the parser its table entry names (kinds.Kind.settings), not by
mlops_ci/config.py: tests/fakes/memo_tracker.py is a tracker with keys of its own, plugged in by one
table line, whose section its own parser reads, with the core's file:line errors and "did you mean"."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlops_ci import config, kinds
from mlops_ci.errors import ConfigError
from mlops_ci.settings.comet import CometTrackingConfig
from mlops_ci.settings.sagemaker import SageMakerEndpointConfig, SageMakerTrainingConfig
from tests.fakes import memo_tracker
from tests.fakes.memo_tracker import MemoTrackingConfig

MEMO = kinds.Kind("memo", "Memo", "tests.fakes.memo_tracker:MemoTracker", settings="tests.fakes.memo_tracker:SETTINGS")


@pytest.fixture
def memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(kinds.TRACKING, "memo", MEMO)


def parse(text: str) -> config.Config:
    return config.parse("project: x\n" + text, "mlops-ci.yaml", "/repo")


def error(text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        parse(text)
    return exc.value.message


def test_the_table_entrys_parser_reads_its_section(memo: None, monkeypatch: pytest.MonkeyPatch):
    seen = []
    real = memo_tracker._parse

    def spy(r: config._Reader, m: dict[str, object], p: config.KeyPath, core: config.TrackingConfig) -> object:
        seen.append((dict(m), p, core))
        return real(r, m, p, core)

    monkeypatch.setattr(memo_tracker, "SETTINGS", config.Settings(MemoTrackingConfig, memo_tracker.SETTINGS.keys, spy))
    cfg = parse("tracking: {backend: memo, workspace: team, model_name: fast}\n")
    assert seen == [({"backend": "memo", "workspace": "team", "model_name": "fast"}, ("tracking",),
                     config.TrackingConfig(backend="memo"))]  # fmt: skip
    assert cfg.tracking == MemoTrackingConfig(backend="memo", workspace="team", model_name="fast")
    assert cfg.tracking.kind is MEMO
    assert parse("tracking: {backend: memo}\n").tracking == MemoTrackingConfig(backend="memo")  # its defaults


def test_its_parsers_errors_name_the_line_and_the_key(memo: None):
    msg = error("tracking:\n  backend: memo\n  workspace: two words\n")
    assert re.fullmatch(r"mlops-ci\.yaml:4:\d+: tracking\.workspace: a memo workspace is one word", msg)
    msg = error("tracking:\n  backend: memo\n  workspace: ''\n")
    assert re.match(r"mlops-ci\.yaml:4:\d+: tracking\.workspace: expected a non-empty string", msg)


def test_its_keys_join_the_sections_unknown_key_check_and_whose_they_are(memo: None):
    assert "unknown key 'model_nam' (did you mean 'model_name'?)" in error("tracking: {backend: memo, model_nam: x}\n")
    # another tracker's key is named as that tracker's, whichever way round
    assert error("tracking: {backend: memo, mode: online}\n").endswith(
        "tracking.mode: only applies with tracking.backend: comet"
    )
    assert error("tracking: {backend: local, workspace: w}\n").endswith(
        "tracking.workspace: only applies with tracking.backend: comet or memo"
    )


def test_another_backends_key_reads_as_unset():
    # the verbs read a tracker's registry keys whichever tracker is chosen: unset, they are the defaults
    local = parse("tracking: {backend: local}\n")
    assert (local.tracking.model_name, local.tracking.api_key_env) == (None, "COMET_API_KEY")
    assert local.training.sagemaker is None
    with pytest.raises(AttributeError, match="no attribute 'model_nam'"):
        local.tracking.model_nam


def test_the_shipped_backends_sections_are_their_parsers():
    sm = (
        "aws: {role: 'arn:aws:iam::123456789012:role/sm', bucket: ml-bucket}\n"
        "training:\n  backend: sagemaker\n  sagemaker: {framework: sklearn, framework_version: '1.2-1'}\n"
        "endpoints:\n  - {name: prod, backend: sagemaker}\n"
        "tracking: {backend: comet, workspace: acme}\n"
    )
    cfg = parse(sm)
    assert isinstance(cfg.training, SageMakerTrainingConfig)
    assert isinstance(cfg.endpoints[0], SageMakerEndpointConfig)
    assert isinstance(cfg.tracking, CometTrackingConfig)


def test_config_check_loads_no_backend_implementation(tmp_path: Path):
    # the settings parsers are light: checking a SageMaker and Comet config imports no SDK and no
    # backend module beyond the SageMaker image facts (sagemaker_images.py, sagemaker_types.py)
    import subprocess
    import sys

    (tmp_path / ".git").mkdir()
    (tmp_path / "train.py").write_text("")
    (tmp_path / "mlops-ci.yaml").write_text(
        "project: x\naws: {role: 'arn:aws:iam::123456789012:role/sm', bucket: ml-bucket}\n"
        "training:\n  backend: sagemaker\n  sagemaker: {framework: sklearn, framework_version: '1.2-1'}\n"
        "endpoints:\n  - {name: prod, backend: sagemaker}\ntracking: {backend: comet, workspace: acme}\n"
    )
    code = (
        "import sys\nfrom mlops_ci.cli import main\ntry:\n    main(['config', 'check'])\nexcept SystemExit:\n    pass\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith(('mlops_ci.backends', 'boto3', 'comet_ml')))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    facts = "mlops_ci.backends,mlops_ci.backends.sagemaker_images,mlops_ci.backends.sagemaker_types"
    assert proc.stdout.splitlines()[-1] in (facts, ""), proc.stdout
