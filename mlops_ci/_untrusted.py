"""Printing text we do not control: training logs, names and values from mlops-ci.yaml and the
run store, SageMaker status messages, commit subjects.

Under GitHub Actions the runner reads every line of a step's stdout and stderr for workflow
commands, so such text must never act as one. The runner's rules, from its source
(actions/runner src/Runner.Common/ActionCommand.cs and src/Runner.Worker/ActionCommandManager.cs):

- a line is a command if, after `TrimStart()`, it starts with `::` (`TryParseV2`), or if it
  contains `##[` anywhere (`TryParse`, `message.IndexOf("##[")`);
- `::stop-commands::TOKEN` makes the runner ignore every command, of both forms, until a
  command named TOKEN (`::TOKEN::`, or `##[TOKEN]`, compared case-insensitively) resumes it;
  the stop state is one per step, shared by stdout and stderr;
- lines come from .NET `StreamReader.ReadLine` (src/Runner.Sdk/ProcessInvoker.cs), which ends a
  line at `\\n`, `\\r` or `\\r\\n`, so a lone `\\r` starts a new line for the runner.

`IndexOf(string)` and `StartsWith(string)` are culture-sensitive in .NET: under ICU, control and
format characters (NUL, U+200B, U+00AD, ...) weigh nothing, so `#\\u200b#[` still matches `##[`
(learn.microsoft.com/dotnet/standard/base-types/string-comparison-net-5-plus; dotnet/runtime
#46569). Neutralising therefore inserts a visible backslash, never a zero-width character.

So, under Actions: every block of user-controlled text goes out inside its own
`::stop-commands::<fresh token>` ... `::<token>::` (token absent from the text), and is also
neutralised (`##[` -> `##\\[`, a leading `:` -> `\\:`) so that it stays inert even if the runner
sees it outside the block (stdout and stderr are read by two threads, so their interleaving is
not guaranteed). Our own `::error::` / `::warning::` lines are printed after the block closes.
Outside Actions nothing is wrapped or rewritten.
"""

from __future__ import annotations

import atexit
import itertools
import re
import unicodedata
from collections.abc import Callable, Mapping

TYPE_CHECKING = False  # `typing` costs ~5 ms of start-up; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

# The runner's line breaks (ReadLine); Python's own splitlines() also breaks at U+2028 etc.
_RUNNER_LINES = re.compile(r"\r\n|\r|\n")


def under_actions(env: Mapping[str, str] | None = None) -> bool:
    from .ci import detect

    return detect(env).actions


def runner_lines(text: str) -> list[str]:
    """`text` split as the runner splits a step's output into lines."""
    return _RUNNER_LINES.split(text)


def _weightless(ch: str) -> bool:
    # Cc (controls, incl. \n \r \t NUL U+0085), Cf (format: U+200B, bidi overrides, U+FEFF),
    # Cs/Co/Cn: what ICU may ignore when .NET compares culture-sensitively.
    return unicodedata.category(ch)[0] == "C"


def bad_name_chars(name: str) -> list[str]:
    """The characters a name (metric, hyperparameter, channel, endpoint) must not contain:
    controls, format characters and the Unicode line/paragraph separators, as U+XXXX."""
    return [f"U+{ord(c):04X}" for c in name if _weightless(c) or unicodedata.category(c) in ("Zl", "Zp")]


def inline(value: object) -> str:
    """`value` as one printable line: line breaks, controls and format characters become
    visible escapes (\\n, \\x1b, \\u2028), so one value can never start a new output line."""
    text = str(value)
    if not any(_weightless(c) or unicodedata.category(c) in ("Zl", "Zp") for c in text):
        return text
    out = []
    for c in text:
        if _weightless(c) or unicodedata.category(c) in ("Zl", "Zp"):
            out.append(repr(c)[1:-1] if c in "\n\r\t" else f"\\x{ord(c):02x}" if ord(c) < 0x100 else
                       f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")  # fmt: skip
        else:
            out.append(c)
    return "".join(out)


def neutralise(text: str) -> str:
    """`text` with nothing the runner can parse as a command: a backslash before the `[` of
    every `##[` (also when weightless characters sit between), and before a line's first
    significant character when that is `:` (after the whitespace .NET `TrimStart` removes)."""
    if "#" not in text and ":" not in text:
        return text
    return "\n".join(_neutral_line(line) for line in runner_lines(text))


def _neutral_line(line: str) -> str:
    out: list[str] = []
    hashes = 0
    leading = True
    for c in line:
        if leading and not (c.isspace() or _weightless(c)):
            leading = False
            if c == ":":
                out.append("\\")
        if c == "[" and hashes >= 2:
            out.append("\\")
        if c == "#":
            hashes += 1
        elif not _weightless(c):
            hashes = 0
        out.append(c)
    return "".join(out)


def _token(text: str) -> str:
    import secrets  # not at module level: only Actions runs pay for it

    folded = (text.lower(), text.casefold())
    while True:
        token = secrets.token_hex(16)
        if not any(token in f for f in folded):
            return token


def guard(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` ready to print: under Actions, neutralised and wrapped in a stop-commands block
    with a fresh token; elsewhere unchanged."""
    if not under_actions(env) or not text:
        return text
    end_block()  # the runner has one stop state: a block inside an open one would be ignored
    body = neutralise(text)
    token = _token(body)
    return f"::stop-commands::{token}\n{body}\n::{token}::"


def json_text(text: str, env: Mapping[str, str] | None = None) -> str:
    """JSON for stdout: wrapping it would break `mlops-ci ... --json > file`, so under Actions
    `##[` is written `##\\u005b`, which decodes to the same string. Nothing else is needed:
    json.dumps escapes line breaks and (ensure_ascii) every non-ASCII character."""
    return text.replace("##[", "##\\u005b") if under_actions(env) else text


# -- the training log echo ----------------------------------------------------------------
_open: list[tuple[Callable[[str], None], str]] = []  # at most one: the runner has one stop state


def end_block() -> None:
    """Close the open echo block, before our own workflow command or other output."""
    while _open:
        say, token = _open.pop()
        say(f"::{token}::")


atexit.register(end_block)  # for library callers too: never leave the step's commands stopped


class Echo:
    """The `  | ` echo of a training log (local script, SageMaker's CloudWatch). Under Actions
    one stop-commands block spans consecutive log lines, opened at the first and closed by
    end_block() (the CLI calls it before anything else it prints, and at exit): one block per
    line would triple the log."""

    def __init__(self, say: Callable[[str], None], env: Mapping[str, str] | None = None):
        self.say = say
        self.actions = under_actions(env)

    def __call__(self, line: str) -> None:
        text = "\n".join(f"  | {piece}" for piece in runner_lines(line))
        if not self.actions:
            self.say(text)
            return
        text = neutralise(text)
        if _open and (_open[-1][0] is not self.say or _open[-1][1] in text.lower() or _open[-1][1] in text.casefold()):
            end_block()  # the token must never appear inside its own block
        if not _open:
            token = _token(text)
            self.say(f"::stop-commands::{token}")
            _open.append((self.say, token))
        self.say(text)


# -- secret-looking names -----------------------------------------------------------------
# Substrings that mark a secret wherever they appear, whole words (so max_tokens, tokenizer and
# author stay visible), and word pairs (so key_dim does too).
_SECRET_PARTS = ("password", "passwd", "passphrase", "secret", "credential", "apikey", "privatekey")
_SECRET_WORDS = frozenset({"token", "auth", "pwd"})
_SECRET_PAIRS = frozenset({("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key")})
MASK = "***"


def secret_name(name: str) -> bool:
    """Whether a hyperparameter name looks like it holds a secret: it contains password,
    passwd, passphrase, secret, credential, apikey or privatekey; or has the word token, auth or
    pwd; or the words api key, private key or access key (split at `_`, `-`, `.`, camelCase)."""
    words = [w for w in re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()) if w]
    joined = "".join(words)
    return (
        any(p in joined for p in _SECRET_PARTS)
        or any(w in _SECRET_WORDS for w in words)
        or any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))
    )


def mask_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperparameters for display, with the values of secret-looking names as `***`."""
    return {k: (MASK if secret_name(k) else v) for k, v in params.items()}
