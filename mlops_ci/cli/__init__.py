"""`mlops-ci` command line: parse, call the core, render, map errors to exit codes.

Kept import-light on purpose: `mlops-ci --version` must start in a few tens of milliseconds,
so the core, YAML and git are imported only once a command needs them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from .. import __version__
from ..errors import EXIT_CODES, INTERNAL, INTERRUPTED, OK, MlopsCiError

TYPE_CHECKING = False  # not `from typing import ...`: typing costs ~5 ms of start-up

if TYPE_CHECKING:  # pragma: no cover
    import argparse
    from typing import Any


def _exit_code_epilog() -> str:
    rows = "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())
    return f"exit codes (shared by every command):\n{rows}"


REF_HELP = "run id, commit SHA (or a unique prefix), tag or branch (default: HEAD)"
DRY_RUN_HELP = "resolve everything and print the exact changes and requests it would make; make none"
COMMANDS = (
    "init", "config", "train", "wait", "runs", "report", "gate", "promote", "models", "deploy", "rollback",
    "endpoints", "endpoint", "invoke", "diff", "store", "status", "lineage", "comment", "doctor", "monitor",
)  # fmt: skip
_GLOBAL_WITH_VALUE = ("-C", "--config", "--store", "--token")


class _Skipped:
    """Stands in for the sub-parsers of commands not being run: building all ~20 of them
    costs ~9 ms of every invocation, and only one is ever used."""

    def __getattr__(self, name: str) -> object:
        return lambda *args, **kwargs: self


class _OnlySubparsers:
    def __init__(self, real: object, only: str | None):
        self.real, self.only = real, only

    def add_parser(self, name: str, **kwargs: object) -> object:
        if self.only is not None and name != self.only:
            return _Skipped()
        return self.real.add_parser(name, **kwargs)  # type: ignore[attr-defined]


def command_in(argv: Sequence[str]) -> str | None:
    """The command word in `argv` (after global options), if it is a known command."""
    it = iter(argv)
    for token in it:
        if token in _GLOBAL_WITH_VALUE:
            next(it, None)
        elif token.startswith("-"):
            continue
        else:
            return token if token in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (`only`) the global options plus that one command's sub-parser."""
    import argparse  # ~5 ms with re and gettext: not paid by `--version`

    p = argparse.ArgumentParser(
        prog="mlops-ci",
        description="GitOps for machine learning: train, compare, gate, promote and deploy models from git.",
        epilog=_exit_code_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"mlops-ci {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")
    p.add_argument("-C", dest="directory", metavar="DIR", help="run as if started in DIR")
    p.add_argument("--config", help="path to mlops-ci.yaml (env MLOPS_CI_CONFIG)")
    p.add_argument("--store", help="run store URL, e.g. sqlite:///path.db (env MLOPS_CI_STORE)")
    p.add_argument(
        "--token", help="GitHub token (prefer env GITHUB_TOKEN or MLOPS_CI_GITHUB_TOKEN: flags show up in `ps`)"
    )
    sub: Any = _OnlySubparsers(p.add_subparsers(dest="command", metavar="COMMAND"), only)

    ini = sub.add_parser("init", help="write the starter GitHub workflows and mlops-ci.yaml into this repository")
    ini.add_argument("--force", action="store_true", help="overwrite existing files")
    ini.add_argument("--action-repo", metavar="OWNER/REPO", help="where the workflows take mlops-ci's actions from")
    ini.add_argument("--action-ref", metavar="SHA", help="the commit of those actions (default: this release's)")

    c = sub.add_parser("config", help="check or show the resolved configuration")
    csub = c.add_subparsers(dest="config_command", metavar="ACTION")
    csub.add_parser("check", help="validate mlops-ci.yaml")
    csub.add_parser("extras", help="print the package extras the configuration needs (e.g. sagemaker,comet)")
    cs = csub.add_parser("show", help="print the resolved config (secrets masked)")
    cs.add_argument("--json", action="store_true")

    t = sub.add_parser("train", help="train a commit (default HEAD) and record the run")
    t.add_argument("ref", nargs="?", help=REF_HELP)
    t.add_argument("--allow-dirty", action="store_true", help="train uncommitted changes (never promotable)")
    t.add_argument("--force", action="store_true", help="train again even if this SHA+config has a run")
    t.add_argument("--json", action="store_true")
    t.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    t.add_argument("--no-wait", action="store_true", help="SageMaker: start the job and return (`mlops-ci wait` later)")
    t.add_argument(
        "--cancel-superseded", action="store_true", help="SageMaker: stop running jobs of older commits on this branch"
    )
    w = sub.add_parser("wait", help="follow a SageMaker training job started with --no-wait and record its run")
    w.add_argument("ref", nargs="?", help=REF_HELP)
    w.add_argument("--json", action="store_true")

    r = sub.add_parser("runs", help="list runs, or show one")
    r.add_argument("action", nargs="?", choices=("list", "show"), default="list")
    r.add_argument("run", nargs="?", help="run id, commit SHA, tag or branch (for show; default: HEAD)")
    r.add_argument("--limit", type=_count, default=20)
    r.add_argument("--json", action="store_true")

    for name, helptext in (
        ("report", "compare a commit's run with its baseline and render the PR report"),
        ("gate", "evaluate the gate rules for a commit's run and record the verdict"),
    ):
        g = sub.add_parser(name, help=helptext)
        g.add_argument("ref", nargs="?", help="run id, commit SHA, tag or branch (default: HEAD / PR head)")
        g.add_argument("--base", help="base branch to find the baseline on (default: PR base or baseline.branch)")
        g.add_argument("--baseline", help="explicit baseline: run id, commit SHA, tag or branch")
        g.add_argument("--json", action="store_true", help="print JSON instead of text")
        g.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
        if name == "report":
            g.add_argument("--output", "-o", help="also write the markdown (or JSON) to this file")
            g.add_argument(
                "--html",
                metavar="FILE",
                help="also write the whole report, model diff included, as one self-contained HTML page",
            )
            g.add_argument("--post", action="store_true", help="upsert the report as the PR's sticky comment")
            g.add_argument("--pr", type=_count, help="pull request number (default: from the Actions event)")
        else:
            g.add_argument(
                "--check", action="store_true", help="publish the verdict as a GitHub check run (or commit status)"
            )

    pr = sub.add_parser("promote", help="register a gated commit's model as a new approved version")
    pr.add_argument("ref", nargs="?", help=REF_HELP)
    pr.add_argument("--json", action="store_true")
    pr.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)

    m = sub.add_parser("models", help="list model versions and where they are live")
    m.add_argument("--json", action="store_true")

    d = sub.add_parser("deploy", help="deploy the approved model of a tag or SHA (never retrains)")
    d.add_argument(
        "ref", nargs="?", help="release tag, commit SHA, branch or run id (default: the tag of HEAD / GITHUB_REF)"
    )
    d.add_argument("--endpoint", help="endpoint name (default: the endpoint whose tag pattern matches)")
    d.add_argument("--retry-failed", action="store_true", help="allow re-deploying a SHA that failed here before")
    d.add_argument(
        "--lock-timeout", type=_seconds, default=60.0, help="seconds to wait for another deploy (default 60)"
    )
    d.add_argument("--json", action="store_true")
    d.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)

    rb = sub.add_parser("rollback", help="put the previous successful version back on an endpoint")
    rb.add_argument("endpoint")
    rb.add_argument("--lock-timeout", type=_seconds, default=60.0)
    rb.add_argument("--json", action="store_true")
    rb.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)

    e = sub.add_parser("endpoints", help="list endpoints: status, live version, URL")
    e.add_argument("--json", action="store_true")

    ep = sub.add_parser("endpoint", help="operate one endpoint")
    epsub = ep.add_subparsers(dest="endpoint_command", metavar="ACTION")
    eps = epsub.add_parser("stop", help="stop an endpoint's servers")
    eps.add_argument("name")

    inv = sub.add_parser("invoke", help="send a request to an endpoint and print the response")
    inv.add_argument("name")
    src = inv.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="request body")
    src.add_argument("--file", help="read the request body from a file")
    inv.add_argument("--content-type", default="application/json")
    inv.add_argument("--accept", default="application/json")

    df = sub.add_parser("diff", help="compare two metrics files directly (no store, no git)")
    df.add_argument("old", help="baseline metrics JSON: {name: number | [numbers]}")
    df.add_argument("new", help="new metrics JSON")
    fmt = df.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON instead of a table")
    fmt.add_argument("--md", action="store_true", help="markdown (every metric and curve: no size limit)")

    cm = sub.add_parser("comment", help="post a report artifact from a fork PR's run (workflow_run stage)")
    cm.add_argument("--from-artifact", required=True, metavar="FILE", help="report JSON from `report --json`")
    cm.add_argument("--pr", type=_count, help="pull request number (default: the one in the artifact)")
    cm.add_argument("--expect-head-sha", help="the SHA the run built (env MLOPS_CI_EXPECTED_HEAD_SHA)")

    li = sub.add_parser("lineage", help="the whole chain of a model: endpoint, version, commit, data, run, verdict")
    li.add_argument("target", help="endpoint name, model version (v3), run id, commit SHA, tag or branch")
    li.add_argument("--json", action="store_true")

    so = sub.add_parser("store", help="export, import or check the run store")
    sosub = so.add_subparsers(dest="store_command", metavar="ACTION")
    sx = sosub.add_parser("export", help="write every record as JSON lines")
    sx.add_argument("--output", "-o", help="file to write (default: stdout)")
    si = sosub.add_parser("import", help="read JSON lines from `store export` into this store (re-runnable)")
    si.add_argument("file", help="export file, or - for stdin")
    sosub.add_parser("check", help="verify artifact digests and references")

    mo = sub.add_parser("monitor", help="an endpoint's captured traffic against its model's baseline statistics: "
                        "drift, schema, errors, latency (exit 16 on an alert)")  # fmt: skip
    mo.add_argument("endpoint", help="endpoint name (its `capture:` is on)")
    mo.add_argument("--since", type=_duration, default=86_400.0, metavar="DURATION",
                    help="the window: the last 90m, 24h (default), 7d, or seconds")  # fmt: skip
    mo.add_argument("--json", action="store_true")
    mo.add_argument("--output", "-o", metavar="FILE", help="also write the markdown report to FILE")
    mo.add_argument("--post", action="store_true", help="open (on an alert) or update the endpoint's one GitHub "
                    "issue, and dispatch retraining on a new alert when monitoring.retrain is set")  # fmt: skip
    mo.add_argument("--schedule", action="store_true", help="on a SageMaker endpoint: create or update its "
                    "SageMaker Model Monitor data-quality schedule (endpoints[].monitor_schedule) instead of "
                    "comparing here")  # fmt: skip
    mo.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)

    st = sub.add_parser("status", help="declared vs live state of every endpoint")
    st.add_argument("--check", action="store_true", help="exit non-zero when live differs from declared")
    st.add_argument("--json", action="store_true")

    dr = sub.add_parser("doctor", help="check what the workflows need: variables, secrets, environments, "
                        "required check, Actions settings, AWS OIDC trust, store, Comet key")  # fmt: skip
    dr.add_argument("--repo", metavar="OWNER/NAME", help="GitHub repository (default: GITHUB_REPOSITORY, else origin)")
    dr.add_argument("--read-only", action="store_true", help="write no probe object to the store (write not checked)")
    dr.add_argument("--strict", action="store_true", help="also fail when a check could not be made")
    dr.add_argument("--json", action="store_true")
    return p


def _seconds(text: str) -> float:
    """A duration: finite and >= 0 (float() takes 'nan' and 'inf', and a nan deadline never comes)."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text!r}")
    return value


def _duration(text: str) -> float:
    """A window: `90m`, `24h`, `7d`, or seconds; more than zero."""
    import argparse

    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    factor = units.get(text[-1:].lower(), 0)
    value = _seconds(text[:-1] if factor else text) * (factor or 1)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a window such as 90m, 24h or 7d, got {text!r}")
    return value


def _count(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}")
    return value


def _emit_error(exc: MlopsCiError | Exception, message: str, env: os._Environ[str] | dict[str, str]) -> None:
    from .._untrusted import end_block, guard, inline, under_actions

    one_line = " ".join(message.split())
    end_block()  # our ::error:: must not land inside an open log-echo block
    # The message may quote a training script's output: inert under Actions (mlops_ci/_untrusted.py).
    print(guard(f"mlops-ci: error: {inline(one_line)}", env), file=sys.stderr)
    if under_actions(env):
        props = ""
        file = getattr(exc, "file", None)
        line = getattr(exc, "line", None)
        if file:
            props = f" file={_escape_prop(file)}" + (f",line={line}" if line else "")
        print(f"::error{props}::{_escape_data(one_line)}", file=sys.stderr)


def _escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_prop(s: str) -> str:
    return _escape_data(s).replace(":", "%3A").replace(",", "%2C")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list == ["--version"]:
        # Fast path: CI jobs call this to log the version; building the parser would triple its cost.
        print(f"mlops-ci {__version__}")
        return 0
    parser = build_parser(only=command_in(args_list))
    args = parser.parse_args(args_list)
    if not args.command:
        parser.print_help()
        return 2
    env = os.environ
    with _sigterm_interrupts():
        return _run(args, env)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a cancelled workflow's second signal, `kill`, a container stop) unwinds like Ctrl-C:
    a training job is stopped with its group and nothing half-done is recorded."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _run(args: argparse.Namespace, env: os._Environ[str]) -> int:
    try:
        from . import commands

        code = commands.dispatch(args)
        from .._untrusted import end_block

        end_block()  # a training log's stop-commands block ends before the step does
        return code
    except MlopsCiError as exc:
        if args.verbose:
            import traceback

            traceback.print_exc()
        _emit_error(exc, exc.message, env)
        _json_error(args, exc.exit_code, type(exc).__name__, exc.message)
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (`mlops-ci runs | head -1`): what it wanted it got. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again (Python docs, "Note on
        # SIGPIPE"), and end quietly: a pipeline under `set -o pipefail` must not fail for it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull, sys.stdout.fileno())
        return OK
    except KeyboardInterrupt:
        from .._untrusted import end_block

        end_block()
        print("mlops-ci: interrupted", file=sys.stderr)
        return INTERRUPTED
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            return _internal(args, exc, env)
        from ..errors import USAGE

        msg = (
            f"{exc.name} is not installed, and the configuration needs it ({extra[1]}); install the extra: "
            f"pip install 'mlops-ci[{extra[0]}]' (`mlops-ci config extras` lists what this config needs)"
        )
        _emit_error(exc, msg, env)
        _json_error(args, USAGE, "MissingExtra", msg)
        return USAGE
    except Exception as exc:  # noqa: BLE001 - the one place unexpected errors are turned into exit 3
        return _internal(args, exc, env)


# A module an optional backend imports → (the package extra that installs it, what needs it)
_EXTRAS = {
    "boto3": ("sagemaker", "the SageMaker backends and the s3:// store; for the store alone: mlops-ci[s3]"),
    "botocore": ("sagemaker", "the SageMaker backends and the s3:// store; for the store alone: mlops-ci[s3]"),
    "comet_ml": ("comet", "tracking.backend: comet"),
}


def _internal(args: argparse.Namespace, exc: Exception, env: os._Environ[str]) -> int:
    """Exit 3: an error no code path expected (a bug), or a damaged SQLite file read mid-row."""
    import sqlite3

    if isinstance(exc, sqlite3.DatabaseError):  # raised while reading rows, past the store's own mapping
        from ..errors import IntegrityError

        msg = f"the run store is damaged ({exc}); run `mlops-ci store check`, restore a backup"
        _emit_error(exc, msg, env)
        _json_error(args, IntegrityError.exit_code, IntegrityError.__name__, msg)
        return IntegrityError.exit_code
    if args.verbose:
        import traceback

        traceback.print_exc()
    msg = f"internal error: {type(exc).__name__}: {exc} (re-run with -v for the traceback)"
    _emit_error(exc, msg, env)
    _json_error(args, INTERNAL, "InternalError", msg)
    return INTERNAL


def _json_error(args: argparse.Namespace, code: int, kind: str, message: str) -> None:
    """With --json, a failure is a JSON document on stdout too (a script reading stdout learns
    why, not only that): {"error": {"exit_code", "kind", "message"}}. stderr says it as always."""
    if not getattr(args, "json", False):
        return
    commands = sys.modules.get(f"{__name__}.commands")
    if commands is not None and commands.RESULT["printed"]:
        return  # the result is out already (e.g. a failed gate's verdict): one document only
    import json

    doc = {"error": {"exit_code": code, "kind": kind, "message": " ".join(message.split())}}
    with contextlib.suppress(OSError, ValueError):
        print(json.dumps(doc, ensure_ascii=True), flush=True)
