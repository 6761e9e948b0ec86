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

        found = records(capture_root(ws.home, endpoint), endpoint, now - since_seconds, now)
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
        f"{esc(inline(json.dumps(s['type_changes'])))}, fields missing {esc(inline(json.dumps(s['missing_fields'])))}"
        f", extra {esc(inline(json.dumps(s['extra_fields'])))}, {s['unreadable']} unreadable record(s)",
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
_RETRAINED = re.compile(r"^<!-- mlops-ci:retrain at=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) -->$", re.MULTILINE)


def issue_marker(project: str, endpoint: str) -> str:
    """The first line of the endpoint's issue: with the author, what makes an issue the one."""
    return f"<!-- mlops-ci:monitor project={project} endpoint={endpoint} -->"


def _issue_body(ws: Workspace, report: dict[str, Any], mark: str, retrained_at: str | None, run_url: str | None
                ) -> str:  # fmt: skip
    retrain = ws.cfg.monitoring.retrain if ws.cfg.monitoring else None
    tail = ["", "---", ""]
    if run_url:
        tail.append(f"Checked by [this workflow run]({run_url}).")
    if retrained_at and retrain:
        how = (f"workflow `{retrain.workflow}` on `{retrain.ref or 'the default branch'}`" if retrain.workflow
               else f"repository_dispatch `{esc(inline(str(retrain.event_type)))}`")  # fmt: skip
        tail += [f"🔁 Retraining was dispatched at {retrained_at} ({how}). A human reviews, merges and tags "
                 "the result; nothing is deployed by this issue.",
                 f"<!-- mlops-ci:retrain at={retrained_at} -->"]  # fmt: skip
    elif retrain is None:
        tail.append("Retraining is not dispatched (set `monitoring.retrain` to dispatch it on a new alert).")
    tail.append("_This issue is updated by `mlops-ci monitor --post` on every run while it is open; close it once "
                "handled: the next alert opens a new one._")  # fmt: skip
    footer = "\n".join(tail) + "\n"
    for only_drift in (False, True):
        body = mark + "\n" + render(report, only_drift=only_drift) + footer
        if len(body) <= MAX_BODY:
            return body
    too_many = f"Too many drifted features to list here: run `mlops-ci monitor {report['endpoint']} --json`."
    return mark + "\n" + too_many + footer


def post(ws: Workspace, report: dict[str, Any]) -> dict[str, Any]:
    """Open or update the endpoint's ONE GitHub issue: opened on an alert, edited in place on every
    later run while it is open (an open issue also learns that the drift went away); when the
    alert is new and `monitoring.retrain` is set, retraining is dispatched once, and the issue says
    so (a dispatch that failed is tried again on the next run, since the issue does not say so)."""
    gh = ws.github()
    endpoint, alert = report["endpoint"], bool(report["alerts"])
    mark = issue_marker(ws.project, endpoint)
    title = f"mlops-ci monitor: drift on {endpoint} ({ws.project})"
    found = gh.find_issue(mark)
    before = _RETRAINED.search(found[1]) if found else None
    retrained_at = before.group(1) if before else None
    out: dict[str, Any] = {"issue": None, "action": None, "dispatched": None}
    if found is None and not alert:
        return out  # nothing to say: an issue is opened by an alert only

    def upsert(at: str | None) -> Any:
        body = _issue_body(ws, report, mark, at, gh.settings.run_url)
        return ws.fx.each("github", "request", lambda: gh.upsert_issue(mark, title, body, create=alert),
                          lambda: gh.plan_issue(mark, title, body, create=alert))  # fmt: skip

    issue = upsert(retrained_at)
    if issue is not None:
        out.update(issue=issue.html_url, action=issue.action, number=issue.number)
    retrain = ws.cfg.monitoring.retrain if ws.cfg.monitoring else None
    if alert and retrain is not None and retrained_at is None:
        ref = retrain.ref or gh.default_branch()
        inputs = dict(retrain.inputs)
        payload = {"endpoint": endpoint, "project": ws.project, "version": report["version"], "sha": report["sha"],
                   "alerts": [a[:200] for a in report["alerts"][:5]], "issue": out["issue"]}  # fmt: skip
        where = (retrain.workflow, retrain.event_type, ref, inputs, payload)
        url = ws.fx.each("github", "request", lambda: gh.dispatch(*where), lambda: gh.plan_dispatch(*where))
        out["dispatched"] = url or "planned"
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        # the issue now says so: the next run does not dispatch again (a dry run made no issue to read
        # back: it plans the edit of the one it would have made)
        body = _issue_body(ws, report, mark, at, gh.settings.run_url)
        number = found[0] if found else "{number}"
        edit = {"method": "PATCH", "path": gh.issue_path(number), "body": {"body": body}}
        again = ws.fx.each("github", "request", lambda: gh.upsert_issue(mark, title, body, create=True),
                           lambda: [edit])  # fmt: skip
        if again is not None:
            out["action"] = "created" if issue is not None and issue.action == "created" else again.action
    return out
