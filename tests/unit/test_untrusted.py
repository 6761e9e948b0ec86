"""The helpers that keep printed user text inert (mlops_ci/_untrusted.py)."""

from __future__ import annotations

import secrets

import pytest

from mlops_ci import _untrusted
from mlops_ci._untrusted import guard, inline, json_text, neutralise, secret_name
from tests.faults.test_output_faults import command_name, runner

ACTIONS = {"GITHUB_ACTIONS": "true"}


@pytest.mark.parametrize(
    "name",
    ["password", "db_password", "dbPassword", "passwd", "api_token", "hf_token", "apiKey", "openai_api_key",
     "aws_secret_access_key", "client_secret", "private_key", "auth", "basic_auth", "credentials", "ACCESS_KEY",
     "passphrase", "apikey"],
)  # fmt: skip
def test_secret_looking_names_are_secret(name: str):
    assert secret_name(name)


@pytest.mark.parametrize(
    "name", ["max_tokens", "tokenizer", "author", "key_dim", "learning_rate", "monkey", "n_estimators", "keys"]
)
def test_ordinary_hyperparameters_are_not(name: str):
    assert not secret_name(name)


@pytest.mark.parametrize(
    "text",
    ["##[error]x", "#\u200b#[error]x", "#\x00#\u00ad[set-output name=a]b", "  ::error::x", "\u200b::error::x",
     "\x1b::warning::x", "a\r::error::x", "ok ###[group]x"],
)  # fmt: skip
def test_neutralised_text_parses_as_no_command_even_with_weightless_characters(text: str):
    assert command_name(text.rsplit("\r", maxsplit=1)[-1]) is not None  # the case is real
    assert all(command_name(line) is None for line in neutralise(text).split("\n"))


def test_the_token_is_regenerated_when_the_text_holds_it_in_any_case(monkeypatch: pytest.MonkeyPatch):
    tokens = iter(["dead" * 8, "beef" * 8])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(tokens))
    block = guard("a line that says ::" + "DEAD" * 8 + "::", ACTIONS)
    assert block.startswith("::stop-commands::" + "beef" * 8 + "\n") and block.endswith("\n::" + "beef" * 8 + "::")
    assert runner(block)[0] == []


def test_every_block_gets_a_fresh_token():
    first, second = guard("x", ACTIONS).split("\n")[0], guard("x", ACTIONS).split("\n")[0]
    assert first != second


def test_outside_actions_text_is_left_alone():
    assert guard("##[error]x\n::set-output name=a::b", {}) == "##[error]x\n::set-output name=a::b"
    assert json_text('{"##[x]": 1}', {}) == '{"##[x]": 1}'


def test_inline_keeps_one_value_on_one_line():
    assert inline("a\nb\rc\td\u2028e\x00f\u200bg") == "a\\nb\\rc\\td\\u2028e\\x00f\\u200bg"
    assert inline("plain text, ünïcode") == "plain text, ünïcode"


def test_the_echo_closes_its_block_when_a_line_holds_its_token():
    printed: list[str] = []
    echo = _untrusted.Echo(printed.append, ACTIONS)
    echo("first")
    token = printed[0].split("::")[2]
    echo(f"the script guessed ::{token}::")
    _untrusted.end_block()
    text = "\n".join(printed)
    assert text.count("::stop-commands::") == 2 and runner(text)[0] == []
