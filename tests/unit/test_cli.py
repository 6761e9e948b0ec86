from __future__ import annotations

import argparse

import pytest

from mlops_ci.cli import COMMANDS, build_parser, command_in


def _choices(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def test_the_command_list_matches_the_full_parser():
    assert _choices(build_parser()) == set(COMMANDS)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_a_single_command_parser_parses_like_the_full_one(cmd: str):
    assert _choices(build_parser(only=cmd)) == {cmd}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train"], "train"),
        (["-C", "repo", "--store", "sqlite:///x", "gate", "--check"], "gate"),
        (["--config=x.yaml", "-v", "report"], "report"),
        (["-C", "train"], None),  # "train" is the value of -C here
        (["--help"], None),
        (["tran"], None),  # a typo builds the full parser, so argparse can list the choices
    ],
)
def test_command_in(argv: list[str], expected: str | None):
    assert command_in(argv) == expected
