"""The generated pages say what the code says: docs/config-reference.md is made by running the
config parser itself (mlops_ci/_docgen.py), docs/exit-codes.md from `errors.EXIT_CODES`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlops_ci import _docgen, config
from mlops_ci.errors import EXIT_CODES

DOCS = Path(__file__).resolve().parents[2] / "docs"
REGENERATE = f"run `{_docgen.COMMAND}` to regenerate"


def _read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(_docgen.PAGES))
def test_the_committed_page_is_what_the_generator_writes(name):
    assert _read(name) == _docgen.PAGES[name](), f"docs/{name} is out of date: {REGENERATE}"


def test_the_config_reference_lists_exactly_the_keys_the_parser_accepts():
    accepted = {_docgen.dotted(key) for key in _docgen.accepted_keys()}
    on_page = set(re.findall(r"^\| `([^`]+)` \|", _read(_docgen.CONFIG_PAGE), re.MULTILINE))
    assert sorted(accepted - on_page) == [], f"keys the parser accepts are missing from the page: {REGENERATE}"
    assert sorted(on_page - accepted) == [], f"the page lists keys the parser refuses: {REGENERATE}"
    # spot checks that the recording sees through lists and user-chosen names
    assert {"project", "endpoints[].smoke[].expect_status", "metrics.<name>.goal", "gate.rules[].severity"} <= accepted
    assert {"training.sagemaker.spot", "tracking.compare_url", "endpoints[].deployment.alarms"} <= accepted


def test_the_examples_reach_every_place_the_parser_reads_keys_or_choices():
    missing = _docgen.uncovered_call_sites()
    assert missing == [], "no example config in mlops_ci/_docgen.py EXHAUSTIVE reaches these calls: " + "; ".join(
        missing
    )


def test_the_coverage_check_notices_an_unreached_branch():
    rec = _docgen.Recording()
    _docgen.parse_recorded(_docgen.EXHAUSTIVE["local"], rec, "local")
    assert any("r.mapping(raw, p, keys)" in site for site in _docgen.uncovered_call_sites(rec))  # training.sagemaker


def test_a_key_added_to_the_parser_without_a_description_fails_the_generator(monkeypatch):
    monkeypatch.setattr(config, "TOP_KEYS", (*config.TOP_KEYS, "telemetry"))
    with pytest.raises(ValueError, match="telemetry: the parser accepts it, but DESCRIPTIONS has no entry"):
        _docgen.config_rows()


def test_a_description_of_a_key_the_parser_refuses_fails_the_generator(monkeypatch):
    monkeypatch.setitem(_docgen.DESCRIPTIONS, "training.gpu", _docgen.Doc("no such key"))
    with pytest.raises(ValueError, match="training.gpu: described, but the parser does not accept it"):
        _docgen.config_rows()


def test_a_hand_written_default_cannot_hide_the_parsers(monkeypatch):
    monkeypatch.setitem(_docgen.DESCRIPTIONS, "training.max_run", _docgen.Doc("seconds", default="`60`"))
    with pytest.raises(ValueError, match="training.max_run: the parser's default is 3600"):
        _docgen.config_rows()


def test_defaults_and_choices_come_from_the_parser():
    rows = {_docgen.dotted(key): (kind, default) for key, kind, default, _ in _docgen.config_rows()}
    assert rows["training.max_run"] == ("whole number ≥ 1", f"`{config.TrainingConfig.max_run}`")
    assert rows["store"][1] == f"`{config.DEFAULT_STORE}`"
    assert rows["gate.rules[].severity"][0] == "one of " + ", ".join(f"`{s}`" for s in config.SEVERITIES)
    assert rows["training.exclude"][1] == "`" + str(list(config.DEFAULT_EXCLUDE)).replace("'", '"') + "`"


def test_the_recording_reader_is_removed_after_parsing():
    before = config._Reader
    _docgen.record_exhaustive()
    assert config._Reader is before


def test_the_exit_code_page_lists_exactly_the_exit_code_table():
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", _read(_docgen.EXIT_PAGE), re.MULTILINE)
    assert {int(code): text for code, text in rows} == EXIT_CODES, f"docs/exit-codes.md is out of date: {REGENERATE}"
    assert len(rows) == len(EXIT_CODES)


def test_check_mode_reports_a_stale_page_and_writing_fixes_it(tmp_path, capsys):
    assert _docgen.main(["--docs", str(tmp_path), "--check"]) == 1
    assert "run `python -m mlops_ci._docgen`" in capsys.readouterr().err
    assert _docgen.main(["--docs", str(tmp_path)]) == 0
    assert _docgen.main(["--docs", str(tmp_path), "--check"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(_docgen.PAGES)
