"""`mlops-ci monitor ENDPOINT`: what an endpoint received and answered in a recent window (its data
capture, docs/deploy.md) against the baseline statistics of the run it serves
(mlops_ci/monitoring.py). The report says per feature how far the traffic moved (PSI, KS), what
broke the schema, how the predictions moved, the error rate and the latency; `alerts` lists what
crossed a `monitoring:` threshold, and the command then exits 16 after printing it."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import monitoring
from .._markdown import esc
from .._untrusted import inline
from ..errors import ConfigError, IntegrityError, NotFound
from ..refs import RefKind
from ..workspace import Workspace

MAX_FILES = 10_000  # capture files read per window


def baseline_of(ws: Workspace, endpoint: str) -> tuple[Any, dict[str, Any]]:
    """(the target the endpoint serves, its run's baseline statistics, verified)."""
    target = ws.resolve(endpoint, frozenset({RefKind.ENDPOINT}), what="monitor")
    run = target.run
    if run is None or target.version is None:
        raise NotFound(f"endpoint {endpoint} serves no model version; deploy one first")
    uri, digest = run.links.get(monitoring.STATISTICS), run.links.get(monitoring.STATISTICS_SHA256)
    if not uri or not digest:
        raise NotFound(f"run {run.run_id} (v{target.version.version}, served by {endpoint}) has no baseline "
                       "statistics: it was trained without `monitoring:`, or its channel or model could not give "
                       "them (its training log says); train and deploy a version with `monitoring:`")  # fmt: skip
    from ..backends import fetch_checked

    fetched = fetch_checked(ws.store, uri, ws.home / "statistics")
    if not fetched.matches(digest):
        raise IntegrityError(f"the baseline statistics of run {run.run_id} at {uri} do not match the digest "
                             f"sealed in the run ({digest[:12]}); they were changed or lost: train the version "
                             "again")  # fmt: skip
    stats: dict[str, Any] = json.loads(fetched.path.read_text())
    if stats.get("schema") != monitoring.SCHEMA:
        raise IntegrityError(f"the baseline statistics of run {run.run_id} are not {monitoring.SCHEMA}")
    return target, stats


def records(root: Path, endpoint: str, since: float, now: float) -> list[dict[str, object]]:
    """The captured records of `endpoint` under a local capture root from `since` (epoch seconds)
    on: only the hour folders of the window are read."""
    base = root / endpoint / "AllTraffic"
    out: list[dict[str, object]] = []
    if not base.is_dir():
        return out
    first = time.strftime("%Y/%m/%d/%H", time.gmtime(since))
    files = sorted(f for f in base.glob("*/*/*/*/*.jsonl") if "/".join(f.relative_to(base).parts[:4]) >= first)[
        -MAX_FILES:
    ]
    for f in files:
        with f.open(encoding="utf-8", errors="replace") as fh:
            out += in_window(fh, since, now)
    return out


def in_window(lines: Iterable[str], since: float, now: float) -> list[dict[str, object]]:
    """The capture records among `lines` whose inference time is in [since, now]."""
    cut = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since))
    until = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    out: list[dict[str, object]] = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line being written, or damaged: not a record
        meta = rec.get("eventMetadata") if isinstance(rec, dict) else None
        when = meta.get("inferenceTime", "") if isinstance(meta, dict) else ""
        if isinstance(when, str) and cut <= when[:19] <= until:
            out.append(rec)
    return out


def monitor(ws: Workspace, endpoint: str, since_seconds: float) -> dict[str, Any]:
    cfg = ws.cfg
    if cfg.monitoring is None:
        raise ConfigError(f"{cfg.file}: no `monitoring:` section: it names the thresholds `monitor` holds the "
                          "traffic to (and makes every run record its baseline statistics)")  # fmt: skip
    ep = next((e for e in cfg.endpoints if e.name == endpoint), None)
    if ep is None:
        raise NotFound(f"no endpoint named {endpoint} in {cfg.file} ({', '.join(e.name for e in cfg.endpoints)})")
    if ep.capture is None:
        raise ConfigError(f"{cfg.file}: endpoint {endpoint} has no `capture:`, so there is no traffic to monitor; "
                          "add capture: {percent: 20} and deploy")  # fmt: skip
    target, stats = baseline_of(ws, endpoint)
    now = time.time()
    if not ep.kind.processes:  # a service's endpoint (SageMaker's) writes its capture to S3
        from ..backends.sagemaker_endpoints import captured

        found = [r for text in captured(ws.aws(), ep, now - since_seconds, MAX_FILES)
                 for r in in_window(text.splitlines(), now - since_seconds, now)]  # fmt: skip
    else:
        from ..backends.local_endpoints import capture_root

        root = capture_root(ws.home, endpoint)
        if not root.parent.is_dir():  # not "no traffic": this machine never served it
            raise NotFound(f"endpoint {endpoint} has no state on this machine ({root.parent}): a local endpoint's "
                           "capture is where it serves; run monitor there (in a workflow: on the self-hosted runner "
                           "that deploys, with the deploy job's MLOPS_CI_HOME)")  # fmt: skip
        found = records(root, endpoint, now - since_seconds, now)
    window = monitoring.window(found, list(stats["columns"]))
    result = monitoring.compare(stats, window, cfg.monitoring.thresholds)
    return {
        "endpoint": endpoint,
        "version": target.version.version,
        "sha": target.sha,
        "run_id": target.run.run_id,
        "window": {"since": now - since_seconds, "until": now, "seconds": since_seconds},
        "baseline": {"channel": stats.get("channel"), "rows": stats.get("rows")},
        "thresholds": asdict(cfg.monitoring.thresholds),
        # where to read more about the model: its tracker's pages and the like (https only)
        "links": {k: v for k, v in sorted(target.run.links.items()) if _LINK.fullmatch(v)},
        **result,
    }


_LINK = re.compile(r"https://[^\s<>()\[\]\"'`\\]+")


def _code(text: str, limit: int = 64) -> str:
    """A name the traffic chose, inert: a code span (no link, mention or markup is made inside one;
    GitHub turns a bare https:// or www. into a link anywhere else), on one line, cut to `limit`."""
    text = inline(text)[:limit]  # (not for a table cell: a pipe would end it, even in a code span)
    fence = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if text.startswith("`") or text.endswith("`") else f"{fence}{text}{fence}"


def _fields(counts: dict[str, int], total: int | None = None, shown: int = 20) -> str:
    """Field names and how often, the most frequent `shown` of them."""
    if not counts:
        return "none"
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:shown]
    more = (total if total is not None else len(counts)) - len(top)
    return ", ".join(f"{_code(k)} ×{n}" for k, n in top) + (f" and {more} more" if more > 0 else "")


def _span(seconds: float) -> str:
    """A window as one says it: 7 d, 24 h, 90 min, 45 s."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= (2 * size if unit == "d" else size) and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _num(x: object, fmt: str = ".3f") -> str:
    return format(x, fmt) if isinstance(x, int | float) else "—"


def render(r: dict[str, Any], *, only_drift: bool = False) -> str:
    """The report as markdown (a GitHub issue's body): every value from the traffic is escaped.
    `only_drift` leaves the features that did not drift out of the table (a body GitHub would
    find too long)."""
    status = "🚨 **Alert**" if r["alerts"] else ("✅ **No drift**" if r["enough"] else "⏳ **Not enough traffic**")
    span = _span(r["window"]["seconds"])
    out = [
        f"## mlops-ci monitor · {esc(r['endpoint'])}: v{r['version']} (`{r['sha'][:8]}`)",
        "",
        status,
        "",
        f"{r['records']} captured request(s) in the last {span}, {r['rows']} row(s); baseline: "
        f"{r['baseline']['rows']} row(s) of channel `{esc(str(r['baseline']['channel']))}` (run `{esc(r['run_id'])}`).",
    ]
    if r["alerts"]:
        out += ["", *[f"- {esc(inline(a))}" for a in r["alerts"]]]
    if not r["enough"]:
        out += ["", f"_Fewer than {r['thresholds']['min_records']} rows: drift is not judged on so little traffic._"]
    head = "| feature | type | baseline mean | mean now | PSI | KS | p | |"
    out += ["", "### Features", "", head, "|---|---|---:|---:|---:|---:|---:|---|"]
    left_out = 0
    for name, f in r["features"].items():
        if only_drift and not f["drift"]:
            left_out += 1
            continue
        mark = "⚠️ drift" if f["drift"] else ""
        means = f"{_num(f.get('baseline_mean'))} | {_num(f.get('mean'))}"
        tests = f"{_num(f.get('psi'))} | {_num(f.get('ks'))} | {_num(f.get('ks_pvalue'), '.2g')}"
        out.append(f"| {esc(inline(name))} | {f['type']} | {means} | {tests} | {mark} |")
    if left_out:
        out.append(f"\n_{left_out} feature(s) without drift are left out here: `mlops-ci monitor --json` lists them._")
    p = r["predictions"]
    s, e, lat = r["schema"], r["errors"], r["latency"]
    out += [
        "",
        "### Predictions, schema, errors, latency",
        "",
        f"- predictions: {p['count']}, PSI {_num(p.get('psi'))}",
        f"- schema: {s['wrong_width']} row(s) not {s['expected_width']} wide, text where numbers were: "
        f"{_fields(s['type_changes'])}, fields missing {_fields(s['missing_fields'])}, extra "
        f"{_fields(s['extra_fields'], s.get('extra_field_names'))}, {s['unreadable']} unreadable record(s)",
        f"- errors: {e['server_errors']} server error(s) of {e['answered']} answered "
        f"({_num(e['rate'] * 100 if e['rate'] is not None else None, '.1f')}%), {e['client_errors']} refused",
        f"- latency: p50 {_num(lat['p50_ms'], '.1f')} ms, p99 {_num(lat['p99_ms'], '.1f')} ms",
    ]
    if r.get("links"):
        out += ["", "### Links", ""]
        out += [f"- {esc(inline(name))}: <{url}>" for name, url in r["links"].items()]
    return "\n".join(out) + "\n"


# -- the one issue per endpoint, and retraining -----------------------------------------------
MAX_BODY = 65_536  # GitHub's limit on an issue's body (characters)
RETRAIN_EVERY = 86_400.0  # one dispatch per project a day, whichever endpoint's alert asks first
_RETRAINED = re.compile(r"^<!-- mlops-ci:retrain at=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) "
                        r"endpoint=([A-Za-z0-9][A-Za-z0-9_.-]{0,62}) -->$", re.MULTILINE)  # fmt: skip


def issue_marker(project: str, endpoint: str) -> str:
    """The first line of the endpoint's issue: with the author, what makes an issue the one."""
    return f"<!-- mlops-ci:monitor project={project} endpoint={endpoint} -->"


def _retrain_lines(ws: Workspace, at: str | None, by: str | None, endpoint: str, failed: str | None) -> list[str]:
    retrain = ws.cfg.monitoring.retrain if ws.cfg.monitoring else None
    if retrain is None:
        return ["Retraining is not dispatched (set `monitoring.retrain` to dispatch it on a new alert)."]
    how = (f"workflow `{retrain.workflow}` on `{retrain.ref or 'the default branch'}`" if retrain.workflow
           else f"repository_dispatch `{esc(inline(str(retrain.event_type)))}`")  # fmt: skip
    if failed:
        return [f"⚠️ Retraining ({how}) could not be dispatched: {esc(inline(failed))[:500]}. The next run tries "
                "again."]  # fmt: skip
    if at is None or by is None:
        return []
    whose = "" if by == endpoint else f", on the alert of endpoint `{by}` (one dispatch per project a day)"
    return [f"🔁 Retraining was dispatched at {at} ({how}{whose}). It trains and gates the branch's head again; a "
            "human reviews the run and tags a release to deploy it: nothing is deployed by this issue.",
            f"<!-- mlops-ci:retrain at={at} endpoint={by} -->"]  # fmt: skip


def _issue_body(report: dict[str, Any], mark: str, retrain: list[str], run_url: str | None) -> str:
    tail = ["", "---", ""]
    if run_url:
        tail.append(f"Checked by [this workflow run]({run_url}).")
    tail += retrain
    tail.append("_This issue is updated by `mlops-ci monitor --post` on every run while it is open; close it once "
                "handled: the next alert opens a new one._")  # fmt: skip
    footer = "\n".join(tail) + "\n"
    for only_drift in (False, True):
        body = mark + "\n" + render(report, only_drift=only_drift) + footer
        if len(body) <= MAX_BODY:
            return body
    alerts = "".join(f"- {esc(inline(a))[:300]}\n" for a in report["alerts"][:50])
    short = (f"{mark}\n## mlops-ci monitor · {esc(report['endpoint'])}: v{report['version']}\n\n"
             f"{'🚨 **Alert**' if report['alerts'] else 'No alert'}\n\n{alerts}\nThe whole report is too long for an "
             f"issue: `mlops-ci monitor {report['endpoint']} --json` prints it.\n")  # fmt: skip
    return short + footer


def _now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _age(at: str) -> float:
    """Seconds since `at`; a mark no clock reads (an edit made it 2026-13-45) is as old as can be."""
    import calendar

    try:
        return time.time() - calendar.timegm(time.strptime(at, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return float("inf")


def post(ws: Workspace, report: dict[str, Any]) -> dict[str, Any]:
    """Open or update the endpoint's ONE GitHub issue: opened on an alert, edited in place on every
    later run while it is open (an open issue also learns that the drift went away). When the
    alert is new and `monitoring.retrain` is set, retraining is dispatched once: the issue says so
    *before* the dispatch (at most once, even if a later write fails), and a refused dispatch is
    written in the issue instead, to be tried again on the next run. One dispatch serves the
    project's endpoints for a day: another endpoint's issue that dispatched in the last 24 hours
    is named instead of dispatching again."""
    from ..errors import BadCredentials, MlopsCiError

    gh = ws.github()
    endpoint, alert = report["endpoint"], bool(report["alerts"])
    mark = issue_marker(ws.project, endpoint)
    title = f"mlops-ci monitor: drift on {endpoint} ({ws.project})"
    mine = gh.our_issues(f"<!-- mlops-ci:monitor project={ws.project} endpoint=")
    this = [i for i in mine if i.body.split("\n", 1)[0] == mark]
    out: dict[str, Any] = {"issue": None, "action": None, "number": None, "dispatched": None, "dispatch_error": None}
    if not this and not alert:
        return out  # nothing to say: an issue is opened by an alert only
    retrain = ws.cfg.monitoring.retrain if ws.cfg.monitoring else None
    found = _RETRAINED.search(this[0].body) if this else None
    at, by = (found.group(1), found.group(2)) if found else (None, None)
    dispatch = alert and retrain is not None and at is None
    if dispatch:  # another endpoint's issue dispatched lately: that training serves this alert too
        lately = [(m.group(1), m.group(2)) for i in mine if (m := _RETRAINED.search(i.body))
                  and 0 <= _age(m.group(1)) < RETRAIN_EVERY]  # fmt: skip
        if lately:
            at, by = max(lately)
            dispatch = False
    failed, ref = None, ""
    if dispatch and retrain is not None and retrain.workflow:  # known before the issue says "dispatched"
        try:
            ref = retrain.ref or gh.default_branch()
        except BadCredentials:
            raise
        except MlopsCiError as exc:
            dispatch, failed = False, exc.message
    if dispatch:
        at, by = _now_utc(), endpoint
    body = _issue_body(report, mark, _retrain_lines(ws, at, by, endpoint, failed), gh.settings.run_url)
    out["dispatch_error"] = failed
    fx = ws.fx

    def patch(number: int, **fields: str) -> None:  # an issue's edit, planned in a dry run
        fx.each("github", "request", lambda: gh.edit_issue(number, **fields),
                lambda: [{"method": "PATCH", "path": gh.issue_path(number), "body": fields}])  # fmt: skip

    if this:
        keep = this[0]
        for dup in this[1:]:  # two runs raced: the oldest stays
            patch(dup.number, state="closed", state_reason="not_planned")
        number, url = keep.number, keep.html_url
        action = "unchanged" if keep.body == body else "updated"
        if action == "updated":
            patch(keep.number, body=body)
    else:
        made = fx.each("github", "request", lambda: gh.create_issue(title, body),
                       lambda: [{"method": "POST", "path": gh.issue_path("").rstrip("/"),
                                 "body": {"title": title, "body": body}}])  # fmt: skip
        action = "created"
        number, url = (made.number, made.html_url) if made is not None else (None, None)
        if made is not None:  # a concurrent run may have opened one too: the oldest stays, and is its
            twins = [i for i in gh.our_issues(mark) if i.body.split("\n", 1)[0] == mark]
            if twins and twins[0].number < made.number:  # the other run's: it dispatches, not this one
                patch(made.number, state="closed", state_reason="not_planned")
                number, url, action, dispatch = twins[0].number, twins[0].html_url, "unchanged", False
    out.update(issue=url, action=action, number=number)
    if dispatch and retrain is not None:
        payload = {"endpoint": endpoint, "project": ws.project, "version": report["version"], "sha": report["sha"],
                   "alerts": [a[:200] for a in report["alerts"][:5]], "issue": url or "{issue}"}  # fmt: skip
        where = (retrain.workflow, retrain.event_type, ref, dict(retrain.inputs), payload)
        try:
            done = fx.each("github", "request", lambda: gh.dispatch(*where), lambda: gh.plan_dispatch(*where))
            out["dispatched"] = done or "planned"
        except BadCredentials:
            raise
        except MlopsCiError as exc:  # said in the issue, without the mark: the next run tries again
            out["dispatch_error"] = exc.message
            unmarked = _issue_body(report, mark, _retrain_lines(ws, None, None, endpoint, exc.message),
                                   gh.settings.run_url)  # fmt: skip
            if number is not None:
                patch(number, body=unmarked)
    return out
