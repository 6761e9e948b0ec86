"""Command implementations: explicit arguments in, rendered text out, errors raised."""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, redirect_stdout
from pathlib import Path

from .._untrusted import end_block, guard, inline, json_text, mask_params, under_actions
from ..errors import ConfigError, Drift, GateFailed, MonitorAlert, NotFound, UsageError

TYPE_CHECKING = False  # `typing` costs ~5 ms of start-up; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

    from ..backends.local_endpoints import LocalEndpoints
    from ..records import Deployment, RuleResult, Run
    from ..workspace import Workspace


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def warn(msg: str, *, file: str | None = None, line: int | None = None) -> None:
    one_line = " ".join(msg.split())
    end_block()  # our ::warning:: must not land inside an open log-echo block
    print(guard(f"mlops-ci: warning: {inline(one_line)}"), file=sys.stderr, flush=True)
    if under_actions():
        from . import _escape_data, _escape_prop

        props = f" file={_escape_prop(file)}" + (f",line={line}" if line else "") if file else ""
        print(f"::warning{props}::{_escape_data(one_line)}", file=sys.stderr, flush=True)


# Whether this command printed a result on stdout: a command that prints its result and then
# fails (a failed gate, drift, a broken lineage) does not add a JSON error document after it.
RESULT = {"printed": False}


def out(msg: str = "") -> None:
    """Print a rendered result: it holds names and values from the config and the store, so
    under GitHub Actions it goes out inside its own stop-commands block (mlops_ci/_untrusted.py)."""
    end_block()
    RESULT["printed"] = True
    _stdout(guard(msg) + "\n")


def _plain(msg: str) -> None:
    """Print text that is entirely ours (and that scripts capture, e.g. `config extras`)."""
    end_block()
    RESULT["printed"] = True
    _stdout(msg + "\n")


def _stdout(text: str) -> None:
    """Write a result. If its reader went away (`mlops-ci gate | head -1`), the rest goes to
    /dev/null and the command goes on to its end and its own exit code: a failed gate still
    exits 1, a training run is still recorded."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())  # the Python docs' "Note on SIGPIPE"
        finally:
            os.close(devnull)


def github_output(**values: object) -> None:
    """Step outputs for GitHub Actions (`$GITHUB_OUTPUT`), when running under a step."""
    from ..ci import detect

    path = detect().output
    if not path:
        return
    with open(path, "a", encoding="utf-8") as fh:
        for key, value in values.items():
            text = "" if value is None else str(value)
            fh.write(f"{key.replace('_', '-')}={' '.join(text.split())}\n")


class _JsonLinesOut(io.TextIOBase):
    """stdout for JSON lines (`store export`): inert under Actions, as `_json`'s output is."""

    def write(self, s: str) -> int:
        RESULT["printed"] = True
        _stdout(json_text(s))
        return len(s)


def _json(obj: Any) -> None:
    from ..report import json_safe

    _plain(json_text(json.dumps(json_safe(obj), indent=2, sort_keys=True)))


def _endpoints(ws: Workspace) -> LocalEndpoints:
    from ..verbs.deploy import endpoints

    return endpoints(ws)


@contextmanager
def workspace(args: argparse.Namespace, env: Mapping[str, str]) -> Iterator[Workspace]:
    from ..workspace import Workspace

    start = Path(args.directory or ".")
    dry_run = bool(getattr(args, "dry_run", False))
    as_json = bool(getattr(args, "json", False))
    ws = Workspace(start, env, config_path=args.config, store=args.store, say=say, warn=warn, token=args.token,
                   dry_run=dry_run)  # fmt: skip
    if not dry_run:
        try:
            yield ws
        finally:
            ws.close()
        return
    # A dry run prints the verb's own output, then the plan; with --json, one document holding both.
    buf = io.StringIO()
    planned = False
    try:
        with redirect_stdout(buf) if as_json else nullcontext():
            yield ws
        planned = True
    except (GateFailed, MonitorAlert):
        planned = True  # the verdict (the alert) is part of what a dry run tells
        raise
    finally:
        try:
            if planned:
                print_plan(ws.plan, as_json=as_json, result=_parsed(buf.getvalue()) if as_json else None)
            elif as_json:
                RESULT["printed"] = False  # what went to the buffer never reached stdout: the error document will
        finally:
            ws.close()


def _parsed(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else None
    except ValueError:
        return text


def print_plan(plan: list[dict[str, Any]], *, as_json: bool, result: Any = None) -> None:
    """The steps and requests a dry run skipped, in the order the real run makes them."""
    if as_json:
        _json({"dry_run": True, "result": result, "plan": plan})
        return
    tail = " The real run would:" if plan else " The real run would change nothing."
    lines = ["dry run: nothing was changed." + tail]
    for i, step in enumerate(plan, start=1):
        if "method" in step:  # a forge's HTTP request
            body = f" {json.dumps(step['body'], sort_keys=True)}" if "body" in step else ""
            lines.append(f"{i:>3}. GitHub {step['method']} {inline(step['path'])}{body}")
        else:
            rest = {k: v for k, v in step.items() if k not in ("target", "action")}
            lines.append(f"{i:>3}. {step['target']}: {step['action']} {json.dumps(rest, sort_keys=True)}")
    out("\n".join(lines))


def dispatch(args: argparse.Namespace) -> int:
    RESULT["printed"] = False
    env = os.environ
    cmd = args.command
    if cmd == "diff":
        start = Path(args.directory or ".")
        return diff_cmd(start, args.old, args.new, as_json=args.json, md=args.md, config_path=args.config)
    if cmd == "comment":
        from ..verbs.publish import publish_report_artifact

        result = publish_report_artifact(
            env, Path(args.from_artifact), token=args.token, pr=args.pr,
            expected_head_sha=args.expect_head_sha or env.get("MLOPS_CI_EXPECTED_HEAD_SHA"), say=say,
        )  # fmt: skip
        out(f"PR comment {result.action}: {result.html_url}")
        github_output(comment_url=result.html_url)
        return 0
    if cmd == "init":
        return init_cmd(Path(args.directory or "."), force=args.force, action_repo=args.action_repo,
                        action_ref=args.action_ref)  # fmt: skip
    if cmd == "doctor":
        return doctor_cmd(args, env)
    if cmd == "config":
        return config_cmd(
            args.config_command, Path(args.directory or "."), env, args.config, args.store, getattr(args, "json", False)
        )
    with workspace(args, env) as ws:
        if cmd == "train":
            return train(ws, args.ref, allow_dirty=args.allow_dirty, force=args.force, as_json=args.json,
                         no_wait=args.no_wait, cancel_superseded=args.cancel_superseded)  # fmt: skip
        if cmd == "wait":
            return train(ws, args.ref, allow_dirty=False, force=False, as_json=args.json, attach_only=True)
        if cmd == "runs":
            return runs(ws, args.action, args.run, limit=args.limit, as_json=args.json)
        if cmd == "report":
            return report(
                ws, args.ref, base=args.base, baseline=args.baseline, as_json=args.json, output=args.output, env=env,
                post=args.post, pr=args.pr, html=args.html,
            )  # fmt: skip
        if cmd == "gate":
            return gate(ws, args.ref, base=args.base, baseline=args.baseline, as_json=args.json, check=args.check)
        if cmd == "promote":
            return promote(ws, args.ref, as_json=args.json)
        if cmd == "models":
            return models(ws, as_json=args.json)
        if cmd == "deploy":
            return deploy(
                ws,
                args.ref,
                endpoint=args.endpoint,
                retry_failed=args.retry_failed,
                lock_timeout=args.lock_timeout,
                as_json=args.json,
            )
        if cmd == "rollback":
            return rollback(ws, args.endpoint, lock_timeout=args.lock_timeout, as_json=args.json)
        if cmd == "endpoints":
            return endpoints(ws, as_json=args.json)
        if cmd == "endpoint":
            if args.endpoint_command != "stop":
                raise UsageError("usage: mlops-ci endpoint stop NAME")
            _endpoints(ws).stop(args.name)
            out(f"endpoint {args.name} stopped")
            return 0
        if cmd == "invoke":
            body = args.data.encode() if args.data is not None else _read_file(args.file)
            return invoke(ws, args.name, body, args.content_type, args.accept)
        if cmd == "status":
            return status(ws, check=args.check, as_json=args.json)
        if cmd == "monitor":
            if args.schedule:
                return monitor_schedule_cmd(ws, args.endpoint, as_json=args.json, post=args.post, output=args.output)
            return monitor_cmd(ws, args.endpoint, args.since, as_json=args.json, output=args.output, post=args.post)
        if cmd == "lineage":
            return lineage_cmd(ws, args.target, as_json=args.json)
        if cmd == "store":
            return store_cmd(ws, args.store_command, getattr(args, "output", None), getattr(args, "file", None))
    raise UsageError(f"unknown command {cmd}")  # pragma: no cover - argparse rejects these


def _read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read --file {path}: {exc.strerror}") from None


def init_cmd(start: Path, *, force: bool, action_repo: str | None = None, action_ref: str | None = None) -> int:
    from ..context import Git
    from ..scaffold import init

    git = Git(start)
    try:
        written = init(git.root, force=force, repository=action_repo, ref=action_ref, here=start)
    finally:
        git.close()
    if written:
        out("\n".join(written))
    out(
        "next: adapt mlops-ci.yaml and commit. The workflows keep runs, verdicts and versions in this "
        "repository's own refs (refs/mlops-ci/*) unless the repository variable MLOPS_CI_STORE names another "
        "store (s3://bucket/prefix for models over 100 MB; docs/store.md)"
    )
    return 0


# -- config ---------------------------------------------------------------------------------
def config_cmd(
    action: str | None, start: Path, env: Mapping[str, str], config_path: str | None, store: str | None, as_json: bool
) -> int:
    from .. import config as config_mod

    if action not in ("check", "show", "extras"):
        raise UsageError("usage: mlops-ci config check|show|extras")
    cfg = config_mod.load(start, env, config_path=config_path, store=store)
    if action == "extras":  # what actions/install.sh installs with extras: auto
        _plain(",".join(cfg.extras()))  # actions/install.sh captures it
        return 0
    if action == "check":
        from ..config_check import findings

        found = findings(cfg)
        errors = [f for f in found if f.level == "error"]
        for f in found:
            if f.level == "warning":
                warn(str(f), file=cfg.file, line=_line_of(f.where))
        for f in errors[1:]:
            say(guard(f"mlops-ci: error: {inline(str(f))}"))
        if errors:
            more = f" (and {len(errors) - 1} more above)" if len(errors) > 1 else ""
            raise ConfigError(f"{errors[0]}{more}", file=cfg.file, line=_line_of(errors[0].where))
        warned = f", {len(found)} warning(s) above" if found else ""
        out(
            f"{cfg.file}: ok (project {cfg.project}, {len(cfg.gate.rules)} gate rule(s), "
            f"{len(cfg.endpoints)} endpoint(s){warned})"
        )
        return 0
    data = cfg.to_display()
    data["sources"] = cfg.sources
    if as_json:
        _json(data)
    else:
        import yaml

        out(yaml.safe_dump(data, sort_keys=False).rstrip())
    return 0


def _line_of(where: str) -> int | None:
    """The line of a `file:line:col` position."""
    parts = where.rsplit(":", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


# -- runs -----------------------------------------------------------------------------------
def _run_lines(run: Run) -> list[str]:
    from ..records import data_summary  # not at module level: `config check` never needs records

    # Names and values come from mlops-ci.yaml, the training script and the store: each is
    # shown on its own line (inline), secret-looking hyperparameters masked.
    lines = [
        f"run       {run.run_id}",
        f"project   {run.project}",
        f"commit    {run.sha}" + (f" ({inline(run.branch)})" if run.branch else "") + (" [dirty]" if run.dirty else ""),
        f"status    {run.status}",
        f"backend   {run.backend}, {run.finished - run.started:.1f}s",
        f"config    {run.config_digest[:16]}",
    ]
    if run.params:
        params = mask_params(run.params)
        lines.append("params    " + ", ".join(f"{inline(k)}={inline(v)}" for k, v in sorted(params.items())))
    if run.metrics:
        lines.append("metrics   " + ", ".join(f"{inline(k)}={v:.6g}" for k, v in sorted(run.metrics.items())))
    for name, d in sorted(run.data.items()):
        lines.append(f"data      {inline(name)}: {inline(data_summary(d))}")
    if run.artifact_sha256:
        lines.append(f"artifact  {inline(run.artifact_uri)}")
        lines.append(f"sha256    {run.artifact_sha256}")
    if run.failure:
        lines.append(f"failure   {inline(run.failure.strip().splitlines()[0]) if run.failure.strip() else ''}")
    if run.log_path:
        lines.append(f"log       {inline(run.log_path)}")
    for name, target in sorted(run.links.items()):
        if name != "log":
            lines.append(f"link      {inline(name)}: {inline(target)}")
    if run.cost:
        c = run.cost
        cost = f"cost      {c.get('instance_count', 1)} x {c.get('instance_type')}" + (
            " (spot)" if c.get("spot") else ""
        )
        if c.get("billable_seconds") is not None:
            cost += f", {c['billable_seconds']} billable s"
        if c.get("usd") is not None:
            cost += f", ~${c['usd']:.4f} (estimate)"
        lines.append(cost)
    return lines


def _run_dict(run: Run) -> dict[str, Any]:
    """A run for --json output: secret-looking hyperparameters masked, as in the text views
    (`store export` alone keeps them: it must restore the store exactly)."""
    d: dict[str, Any] = run.to_dict()
    d["params"] = mask_params(d.get("params") or {})
    return d


def train(ws: Workspace, ref: str | None, *, allow_dirty: bool, force: bool, as_json: bool, no_wait: bool = False,
          cancel_superseded: bool = False, attach_only: bool = False) -> int:  # fmt: skip
    if ws.cfg.tuning is not None:  # a search: its best trial is the commit's run
        from ..verbs.tune import tune

        if no_wait:
            raise UsageError("--no-wait does not apply to a search (tuning:): its trials run with the command")
        if attach_only:
            raise UsageError("`wait` follows a training job; a search (tuning:) is followed by `mlops-ci train`, "
                             "which attaches to the commit's tuning job and starts none while it runs")  # fmt: skip
        run, reused = tune(ws, ref, allow_dirty=allow_dirty, force=force, cancel_superseded=cancel_superseded)
    else:
        from ..verbs.train import train as train_commit

        run, reused = train_commit(ws, ref, allow_dirty=allow_dirty, force=force, no_wait=no_wait,
                                   cancel_superseded=cancel_superseded, attach_only=attach_only)  # fmt: skip
    if run is None:  # dry run (the plan is printed by the caller), or a job left running
        return 0
    github_output(run_id=run.run_id, sha=run.sha, status=run.status, artifact_sha256=run.artifact_sha256,
                  reused_from=run.reused_from or "")  # fmt: skip
    if reused:
        say(f"commit {run.sha[:8]} already has run {run.run_id} under this config; reusing it (--force to retrain)")
    if as_json:
        _json({"reused": reused, "run": _run_dict(run)})
    else:
        out("\n".join(_run_lines(run)))
    return 0


def runs(ws: Workspace, action: str, ref: str | None, *, limit: int, as_json: bool) -> int:
    if action == "show":
        target = ws.resolve(ref, what="runs show")
        run = target.run
        if run is None:
            found = ws.store.runs(ws.project, sha=target.sha, limit=1)
            if not found:
                raise NotFound(f"no run for {ref or 'HEAD'} ({target.sha[:8]}); `mlops-ci runs` lists them")
            run = found[0]
        if as_json:
            _json(_run_dict(run))
        else:
            out("\n".join(_run_lines(run)))
        return 0
    items = ws.store.runs(ws.project, limit=limit)
    if as_json:
        _json([_run_dict(r) for r in items])
        return 0
    if not items:
        out("no runs yet; `mlops-ci train` records one")
        return 0
    from ..tuning import TRIAL

    lines = [f"{'RUN':<16} {'SHA':<8} {'STATUS':<9} {'BRANCH':<16} {'FINISHED':<19} METRICS"]
    for r in items:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.finished))
        metrics = ", ".join(f"{inline(k)}={v:.4g}" for k, v in sorted(r.metrics.items())[:4])
        trial = r.links.get(TRIAL)  # one trial of a search (verbs/tune.py), not a commit's run
        if trial is not None:
            metrics = f"[trial {inline(trial)}] {metrics}"
        lines.append(f"{r.run_id:<16} {r.sha[:8]:<8} {r.status:<9} {inline(r.branch or '-')[:16]:<16} {when:<19} "
                     f"{metrics}")  # fmt: skip
    out("\n".join(lines))
    return 0


# -- review ---------------------------------------------------------------------------------
def report(
    ws: Workspace,
    ref: str | None,
    *,
    base: str | None,
    baseline: str | None,
    as_json: bool,
    output: str | None,
    env: Mapping[str, str],
    post: bool = False,
    pr: int | None = None,
    html: str | None = None,
) -> int:
    from ..backends.github import GitHubSettings
    from ..report import render_json, render_markdown
    from ..verbs.review import Reviewer

    rv = Reviewer(ws).review(ref, base=base, baseline=baseline)
    head_ref = ws.ctx.branch if ref is None else ref
    gh = GitHubSettings.from_env(env)
    repo_url = f"{gh.server_url}/{gh.repository}" if gh.repository else None
    md = render_markdown(
        rv.comparison,
        rv.outcome.results,
        rv.outcome.passed,
        head_ref=head_ref,
        base_ref=rv.baseline.base_ref,
        repo_url=repo_url,
        run_url=gh.run_url,
    )
    context = {"pr": ws.ctx.pr_number, "head_ref": head_ref, "base_ref": rv.baseline.base_ref}
    text = render_json(rv.comparison, rv.outcome.results, rv.outcome.passed, context=context) if as_json else md
    if as_json:
        _plain(json_text(text))
    else:
        out(text.rstrip("\n"))
    if output:
        _write(output, text, "--output")
    if html:
        from ..diff_report import render_html

        _write(html, render_html(rv.comparison, rv.outcome.results, rv.outcome.passed, run_url=gh.run_url), "--html")
    from ..ci import detect

    summary = detect(env).step_summary
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(md + "\n")
    if post:
        from ..verbs.publish import Publisher

        result = Publisher(ws).post_report(md, pr)
        if result is not None:
            say(f"PR comment {result.action}: {result.html_url}")
            github_output(comment_url=result.html_url)
    return 0


def _write(path: str, text: str, flag: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(
            f"{flag} {path}: cannot write it ({exc.strerror}); give a path in an existing directory"
        ) from None


def _verdict_table(results: Sequence[RuleResult]) -> list[str]:
    lines = []
    for r in results:
        status = "SKIP" if r.status == "skipped" else r.status.upper()
        where = f" (mlops-ci.yaml:{r.line})" if r.line else ""
        lines.append(f"{status:<5} {inline(r.rule):<48} {inline(r.reason)}{where}")
    return lines


def gate(
    ws: Workspace, ref: str | None, *, base: str | None, baseline: str | None, as_json: bool, check: bool = False
) -> int:
    from ..verbs.publish import Publisher
    from ..verbs.review import Reviewer

    reviewer = Reviewer(ws)
    rv = reviewer.review(ref, base=base, baseline=baseline, deciding=True)
    verdict = reviewer.record_verdict(rv)
    github_output(verdict="passed" if verdict.passed else "failed", conclusion=verdict.conclusion, sha=verdict.sha,
                  run_id=verdict.run_id)  # fmt: skip
    if check:
        published = Publisher(ws).publish_verdict(verdict)
        if published:
            say(f"verdict published as a {'check run' if published == 'check' else 'commit status'}")
    if as_json:
        _json(verdict.to_dict())
    else:
        b = f"baseline {verdict.baseline_sha[:8]}" if verdict.baseline_sha else "no baseline"
        lines = [f"gate for {ws.project} at {verdict.sha[:8]} ({b}): {verdict.conclusion}"]
        if verdict.baseline_note:
            lines.append(f"note: {inline(verdict.baseline_note)}")
        if not verdict.results:
            lines.append("no gate rules configured (gate.rules in mlops-ci.yaml): nothing to check")
        out("\n".join(lines + _verdict_table(verdict.results)))
    if not verdict.passed:
        failed = [r for r in verdict.results if not r.passed and r.severity == "fail"]
        raise GateFailed(f"gate failed for {verdict.sha[:8]}: " + "; ".join(f"{r.rule} ({r.reason})" for r in failed))
    return 0


def promote(ws: Workspace, ref: str | None, *, as_json: bool) -> int:
    from ..verbs.promote import Promotion

    mv, created = Promotion(ws).promote(ref)
    github_output(model_version=mv.version, sha=mv.sha)
    if as_json:
        _json({"created": created, "version": mv.to_dict()})
    elif created:
        out(f"promoted {ws.project} v{mv.version} from {mv.sha[:8]} (artifact sha256 {mv.artifact_sha256[:16]}…)")
    else:
        out(f"{mv.sha[:8]} is already {ws.project} v{mv.version}; nothing to do")
    return 0


def models(ws: Workspace, *, as_json: bool) -> int:
    versions = ws.models()
    live: dict[int, list[str]] = {}
    for st in ws.store.endpoint_states(ws.project):
        if st.status == "InService" and st.version is not None:
            live.setdefault(st.version, []).append(st.name)
    packages: dict[str, dict[str, str]] = {}  # sha → the second registry's view (registry.backend), if any
    registry = ws.model_registry() if versions else None  # no versions: nothing to ask it about
    label = ws.cfg.registry.kind.label
    if registry is not None and versions:
        for d in registry.packages():
            meta = d.get("CustomerMetadataProperties")
            sha = meta.get("git_sha") if isinstance(meta, dict) else None
            if isinstance(sha, str) and sha:
                packages[sha] = {
                    "arn": str(d.get("ModelPackageArn")),
                    "approval": str(d.get("ModelApprovalStatus", "")),
                }
    if as_json:
        rows = [dict(v.to_dict(), live_on=live.get(v.version, [])) for v in versions]
        if registry is not None:
            for row in rows:
                row["model_package"] = packages.get(str(row["sha"]))
        _json(rows)
        return 0
    if not versions:
        out("no model versions yet; `mlops-ci promote` registers one after the gate passes")
        return 0
    lines = [f"{'VERSION':<8} {'SHA':<8} {'STAGE':<9} {'LIVE ON':<20} {'SHA256':<16} METRICS"]
    for v in versions:
        stage = "deployed" if v.version in live else v.stage
        metrics = ", ".join(f"{inline(k)}={x:.4g}" for k, x in sorted(v.metrics.items())[:3])
        lines.append(
            f"v{v.version:<7} {v.sha[:8]:<8} {stage:<9} {','.join(live.get(v.version, [])) or '-':<20} "
            f"{v.artifact_sha256[:16]:<16} {metrics}"
        )
        if registry is not None:
            pkg = packages.get(v.sha)
            lines.append(
                f"         {label}: {pkg['arn']} ({pkg['approval']})"
                if pkg
                else f"         {label}: not registered (run `mlops-ci promote` again to register it)"
            )
    out("\n".join(lines))
    return 0


# -- endpoints ------------------------------------------------------------------------------
def deploy(
    ws: Workspace, ref: str | None, *, endpoint: str | None, retry_failed: bool, lock_timeout: float, as_json: bool
) -> int:
    from ..verbs.deploy import Deployer

    dep = Deployer(ws).deploy(ref, endpoint=endpoint, retry_failed=retry_failed, lock_timeout=lock_timeout)
    return _rolled_out(ws, dep, as_json)


def rollback(ws: Workspace, name: str, *, lock_timeout: float, as_json: bool) -> int:
    from ..verbs.deploy import Deployer

    return _rolled_out(ws, Deployer(ws).rollback(name, lock_timeout=lock_timeout), as_json)


def _rolled_out(ws: Workspace, dep: Deployment, as_json: bool) -> int:
    _deploy_outputs(ws, dep)
    if as_json:
        _json(dep.to_dict())
    else:
        out(dep.detail)
    return 0


def _deploy_outputs(ws: Workspace, dep: Deployment) -> None:
    state = ws.store.endpoint_state(ws.project, dep.endpoint)
    github_output(endpoint=dep.endpoint, endpoint_url=state.url if state else "", model_version=dep.version,
                  sha=dep.sha, outcome=dep.outcome)  # fmt: skip


def endpoints(ws: Workspace, *, as_json: bool) -> int:
    rows = _endpoints(ws).listing()
    if as_json:
        _json(rows)
        return 0
    if not rows:
        out("no endpoints declared or running")
        return 0
    lines = [f"{'ENDPOINT':<16} {'STATUS':<13} {'VERSION':<8} {'SHA':<8} URL"]
    for r in rows:
        v = f"v{r['version']}" if r["version"] is not None else "-"
        lines.append(f"{r['name']:<16} {r['status']:<13} {v:<8} {(r['sha'] or '-')[:8]:<8} {r['url'] or '-'}")
    out("\n".join(lines))
    return 0


def invoke(ws: Workspace, name: str, body: bytes, content_type: str, accept: str) -> int:
    status, _ctype, data = _endpoints(ws).invoke(name, body, content_type, accept)
    RESULT["printed"] = True
    _stdout(data.decode("utf-8", errors="replace").rstrip("\n") + "\n")
    if status >= 400:
        raise UsageError(f"endpoint {name} answered HTTP {status}: {data.decode('utf-8', 'replace')[:200]}")
    return 0


def status(ws: Workspace, *, check: bool, as_json: bool) -> int:
    rows = _endpoints(ws).status()
    drift = [r for r in rows if r["drift"]]
    if as_json:
        _json(rows)
    else:
        lines = [f"{'ENDPOINT':<16} {'DECLARED':<22} {'LIVE':<22} STATE"]
        for r in rows:
            d = f"v{r['declared_version']} ({r['declared_tag']})" if r["declared_version"] else "-"
            lv = f"v{r['live_version']} ({(r['live_sha'] or '')[:8]})" if r["live_version"] else "-"
            lines.append(f"{r['name']:<16} {d:<22} {lv:<22} {'DRIFT: ' + r['drift'] if r['drift'] else 'in sync'}")
        out("\n".join(lines))
    if check and drift:
        raise Drift(
            f"{len(drift)} endpoint(s) differ from the declared state: "
            + "; ".join(f"{r['name']}: {r['drift']}" for r in drift)
        )
    return 0


def monitor_cmd(ws: Workspace, endpoint: str, since: float, *, as_json: bool, output: str | None,
                post: bool = False) -> int:  # fmt: skip
    from ..errors import MonitorAlert
    from ..verbs.monitor import monitor, render

    report = monitor(ws, endpoint, since)
    text = render(report)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    if as_json:
        _json(report)
    else:
        out(text.rstrip("\n"))
    if post:  # after the report is out: a forge that refuses loses nothing of it
        from ..verbs.monitor import post as post_issue

        done = post_issue(ws, report)
        if ws.dry_run:
            pass  # the plan says what would be written
        elif done["issue"]:
            say(f"monitor issue {done['action']}: {done['issue']}")
            github_output(issue_url=done["issue"])
        else:
            say("no monitor issue: no alert, and no open issue of this endpoint to update")
        if done["dispatched"] and not ws.dry_run:
            say(f"retraining dispatched: {done['dispatched']}")
        if done["dispatch_error"]:
            warn(f"retraining was not dispatched ({done['dispatch_error']}); the issue says so, and the next run "
                 "tries again")  # fmt: skip
    if report["alerts"]:
        raise MonitorAlert(f"monitor: {len(report['alerts'])} alert(s) on {endpoint}: {report['alerts'][0]}"
                           + ("; the report lists the others" if len(report["alerts"]) > 1 else ""))  # fmt: skip
    return 0


def monitor_schedule_cmd(ws: Workspace, endpoint: str, *, as_json: bool, post: bool, output: str | None) -> int:
    from ..verbs.monitor_schedule import schedule

    if post or output:
        raise UsageError("--schedule leaves the comparison to SageMaker Model Monitor (its reports in S3, its metrics "
                         "in CloudWatch): --post and --output are for `monitor` without --schedule")  # fmt: skip
    done = schedule(ws, endpoint)
    done.pop("plan", None)  # a dry run prints the plan after the result
    if as_json:
        _json(done)
        return 0
    out(
        f"Model Monitor schedule {done['schedule']} {done['status']}: endpoint {endpoint} v{done['version']} "
        f"({done['sha'][:8]}), {done['cron']}, baseline {done['baseline']['uri']}, reports {done['reports']}"
    )
    return 0


def store_cmd(ws: Workspace, action: str | None, output: str | None, file: str | None) -> int:
    from .. import storeops
    from ..errors import IntegrityError

    if action == "export":
        if output:
            with open(output, "w", encoding="utf-8") as fh:
                n = storeops.write_export(ws.store, ws.project, fh)
        else:
            end_block()
            n = storeops.write_export(ws.store, ws.project, _JsonLinesOut())  # type: ignore[arg-type]
        say(f"exported {n} record(s) of {ws.project} from {ws.cfg.store}")
        return 0
    if action == "import":
        if file is None:
            raise UsageError("usage: mlops-ci store import FILE")
        if file == "-":
            storeops.import_records(ws.store, ws.project, sys.stdin, artifact_cache=ws.home / "artifacts", say=say)
        else:
            with open(file, encoding="utf-8") as fh:
                storeops.import_records(ws.store, ws.project, fh, artifact_cache=ws.home / "artifacts", say=say)
        return 0
    if action == "check":
        problems = storeops.check(ws.store, ws.project, ws.home / "artifacts" / "cache", ws.signature_problem)
        if not problems:  # processes are not records: a warning, not a failed check
            for name, pids in _endpoints(ws).strays().items():
                listed = ", ".join(map(str, pids))
                say(f"warning: endpoint {name}: {len(pids)} untracked serving process(es) running (pid {listed}); "
                    f"`mlops-ci endpoint stop {name}` or its next deploy stops them")  # fmt: skip
        if problems:
            out("\n".join(inline(p) for p in problems))
            raise IntegrityError(f"{len(problems)} problem(s) in {ws.cfg.store}; see above")
        out(f"{ws.cfg.store}: ok")
        return 0
    raise UsageError("usage: mlops-ci store export|import|check")


def diff_cmd(start: Path, old: str, new: str, *, as_json: bool, md: bool = False, config_path: str | None) -> int:
    """Store-free diff of two metrics files; metric goals come from mlops-ci.yaml if there is one."""
    from .. import config as config_mod
    from ..compare import compare
    from ..errors import ConfigError
    from ..records import Run
    from ..report import render_json, render_markdown, render_text

    goals = {}
    try:
        goals = config_mod.load(start, os.environ, config_path=config_path).metrics
    except ConfigError:
        if config_path:
            raise

    def load(path: str) -> tuple[Run, dict[str, Sequence[float]]]:
        from ..backends.local_training import read_metrics_file

        try:
            finals, series = read_metrics_file(Path(path))
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise UsageError(f"{path}: {exc}") from None
        run = Run(run_id=Path(path).name, project="diff", sha=Path(path).name, branch=None, config_digest="",
                  status="completed", backend="file", started=0.0, finished=0.0, metrics=finals)  # fmt: skip
        return run, series

    (a, sa), (b, sb) = load(old), load(new)
    c = compare("diff", b, a, "", goals, sb, sa)
    if as_json:
        _plain(json_text(render_json(c, [], True)))
    elif md:  # all of it: the size budget is the PR comment's, not a local diff's
        out(render_markdown(c, [], True, head_ref=new, base_ref=old, files=True, limit=math.inf).rstrip("\n"))
    else:
        out(render_text(c, old, new))
    return 0


def lineage_cmd(ws: Workspace, target: str, *, as_json: bool) -> int:
    from .. import lineage
    from ..errors import IntegrityError

    doc = lineage.lineage(ws, target)
    if as_json:
        _json(doc)
    else:
        out(lineage.render(doc))
    if doc["integrity"]:
        raise IntegrityError(f"the records of {target} fail verification: {doc['integrity'][0]}")
    artifact = doc["artifact"]
    if artifact and not artifact["verified"]:
        raise IntegrityError(f"the artifact of {target} failed verification: {artifact['problem']}")
    return 0


def doctor_cmd(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ..doctor import MISSING, UNCHECKED, doctor, render
    from ..errors import ConfigError

    report = doctor(Path(args.directory or "."), env, config_path=args.config, token=args.token,
                    repository=args.repo, read_only=args.read_only, store=args.store)  # fmt: skip
    if args.json:
        _json(report.to_dict())
    else:
        out(render(report))
    missing, unchecked = report.count(MISSING), report.count(UNCHECKED)
    if missing or (args.strict and unchecked):
        failed = [c.title for c in report.checks if c.status == MISSING or (args.strict and c.status == UNCHECKED)]
        raise ConfigError(f"set-up incomplete: {len(failed)} item(s) to fix: " + "; ".join(failed))
    if unchecked:
        say(f"mlops-ci doctor: {unchecked} item(s) could not be checked (see above); --strict fails on them")
    return 0
