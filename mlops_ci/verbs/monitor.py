"""`mlops-ci monitor ENDPOINT`: what an endpoint received and answered in a recent window (its data
capture, docs/deploy.md) against the baseline statistics of the run it serves
(mlops_ci/monitoring.py). The report says per feature how far the traffic moved (PSI, KS), what
broke the schema, how the predictions moved, the error rate and the latency; `alerts` lists what
crossed a `monitoring:` threshold, and the command then exits 16 after printing it."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import monitoring
from .._markdown import esc
from .._untrusted import inline
from ..errors import ConfigError, IntegrityError, NotFound, UsageError
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
    cut = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since))
    until = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    for f in files:
        with f.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
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
    if ep.kind.remote:
        raise UsageError(f"monitor reads a local endpoint's capture; endpoint {endpoint} is on {ep.backend}, whose "
                         "capture in S3 it does not read yet")  # fmt: skip
    target, stats = baseline_of(ws, endpoint)
    now = time.time()
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
        **result,
    }


def _num(x: object, fmt: str = ".3f") -> str:
    return format(x, fmt) if isinstance(x, int | float) else "—"


def render(r: dict[str, Any]) -> str:
    """The report as markdown (a GitHub issue's body): every value from the traffic is escaped."""
    status = "🚨 **Alert**" if r["alerts"] else ("✅ **No drift**" if r["enough"] else "⏳ **Not enough traffic**")
    hours = r["window"]["seconds"] / 3600
    out = [
        f"<!-- mlops-ci:monitor endpoint={esc(r['endpoint'])} -->",
        f"## mlops-ci monitor · {esc(r['endpoint'])}: v{r['version']} (`{r['sha'][:8]}`)",
        "",
        status,
        "",
        f"{r['records']} captured request(s) in the last {hours:g} h, {r['rows']} row(s); baseline: "
        f"{r['baseline']['rows']} row(s) of channel `{esc(str(r['baseline']['channel']))}` (run `{esc(r['run_id'])}`).",
    ]
    if r["alerts"]:
        out += ["", *[f"- {esc(inline(a))}" for a in r["alerts"]]]
    if not r["enough"]:
        out += ["", f"_Fewer than {r['thresholds']['min_records']} rows: drift is not judged on so little traffic._"]
    head = "| feature | type | baseline mean | mean now | PSI | KS | p | |"
    out += ["", "### Features", "", head, "|---|---|---:|---:|---:|---:|---:|---|"]
    for name, f in r["features"].items():
        mark = "⚠️ drift" if f["drift"] else ""
        means = f"{_num(f.get('baseline_mean'))} | {_num(f.get('mean'))}"
        tests = f"{_num(f.get('psi'))} | {_num(f.get('ks'))} | {_num(f.get('ks_pvalue'), '.2g')}"
        out.append(f"| {esc(inline(name))} | {f['type']} | {means} | {tests} | {mark} |")
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
    return "\n".join(out) + "\n"
