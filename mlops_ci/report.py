"""Comparison + gate outcome → markdown (PR comment, step summary) and JSON.

Every string that came from a user, a commit or a branch is escaped: a hostile branch name or
metric name cannot inject markdown, HTML or a mention into the comment.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from ._markdown import ICON, esc, fmt, fmt_delta
from ._untrusted import MASK, mask_params, secret_name
from .compare import downsample
from .records import Comparison, MetricDelta, RuleResult, Verdict

GITHUB_COMMENT_LIMIT = 65536
BUDGET = 60000  # headroom under GitHub's limit for the truncation note and encodings
CHART_POINTS = 60
MAX_CHARTS = 6


def check_name(project: str) -> str:
    """The gate's check run (or commit status) on GitHub: what a branch rule makes required."""
    return f"mlops-ci / {project}"


def marker(project: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", project)
    return f"<!-- mlops-ci:report project={safe} -->"


_STATUS = {"skipped": "⏭️ skipped", "pass": "✅ pass", "fail": "❌ fail", "warn": "⚠️ warn"}


def _rule_row(r: RuleResult) -> str:
    return f"| {_STATUS[r.status]} | {esc(r.rule)} | {esc(r.reason)} |"


def _short(sha: str | None) -> str:
    return sha[:8] if sha else "—"


def _commit(sha: str | None, repo_url: str | None) -> str:
    """The short SHA, linked to the commit on GitHub when the repository is known."""
    if sha and repo_url and re.fullmatch(r"[0-9a-f]{40}", sha):
        return f"[{sha[:8]}]({_safe_url(repo_url)}/commit/{sha})"
    return _short(sha)


def _safe_url(url: str) -> str:
    # every character that could end a link, change it or start markdown on a new line is
    # percent-encoded (per byte)
    return re.sub(r"[\s<>()\\\x00-\x1f\x7f]", lambda m: "".join(f"%{b:02X}" for b in m[0].encode()), url)


def _links(links: dict[str, str]) -> str:
    """Only web links: a path on the machine that trained (a log, an offline archive) means
    nothing to a reviewer; `--json` and `runs show` keep every link."""
    parts = []
    for name, url in sorted(links.items()):
        if re.match(r"^https?://", url):
            # inside <…> a link ends at `>` or a line break and `\` escapes: every character that
            # could end it, change it or start markdown on a new line is percent-encoded (per byte)
            safe = re.sub(r"[\s<>\\\x00-\x1f\x7f]", lambda m: "".join(f"%{b:02X}" for b in m[0].encode()), url)
            parts.append(f"[{esc(name)}](<{safe}>)")
    return ", ".join(parts)


def _mermaid(title: str, steps: int, lo: float, hi: float, lines: list[list[float]]) -> str:
    body = [
        "```mermaid",
        "xychart-beta",
        f'    title "{title}"',
        f"    x-axis 1 --> {steps}",
        f'    y-axis "value" {lo:.6g} --> {hi:.6g}',
    ]
    body += ["    line [" + ", ".join(f"{p:.6g}" for p in pts) + "]" for pts in lines]
    body.append("```")
    return "\n".join(body)


def _chart(name: str, entry: dict[str, Sequence[float]]) -> str | None:
    """Mermaid line chart(s) that GitHub renders in place: no image host involved.

    Equal-length series share one chart (baseline first, head second); series of different
    lengths get a chart each on the same y-range, since one x-axis would misalign them.
    """
    series = {k: [p for p in entry[k] if math.isfinite(p)] for k in ("baseline", "head") if entry.get(k)}
    series = {k: v for k, v in series.items() if len(v) >= 2}
    if not series:
        return None
    values = [p for pts in series.values() for p in pts]
    lo, hi = min(values), max(values)
    if lo == hi:
        lo, hi = lo - 1, hi + 1
    safe = re.sub(r"[^A-Za-z0-9 _.:/-]", "_", name)[:60]
    lengths = {len(v) for v in series.values()}
    if len(lengths) == 1:
        n = lengths.pop()
        lines = [downsample(v, CHART_POINTS) for v in series.values()]
        return _mermaid(f"{safe} ({' vs '.join(series)})", n, lo, hi, lines)
    return "\n".join(
        _mermaid(f"{safe} ({key}, {len(pts)} steps)", len(pts), lo, hi, [downsample(pts, CHART_POINTS)])
        for key, pts in series.items()
    )


def _metric_order(m: MetricDelta, gated: set[str]) -> tuple[int, int, str]:
    rank = {"worse": 0, "better": 1, "changed": 2, "added": 3, "removed": 3, "same": 4}
    return (0 if m.name in gated else 1, rank.get(m.direction, 5), m.name)


def render_markdown(
    comparison: Comparison,
    results: Sequence[RuleResult],
    passed: bool,
    *,
    head_ref: str | None = None,
    base_ref: str | None = None,
    limit: float = BUDGET,
    files: bool = False,
    repo_url: str | None = None,
    run_url: str | None = None,
) -> str:
    """The PR comment. Sections are added in priority order until the size budget is spent.
    `files`: a store-free diff of two metrics files (`mlops-ci diff`): no gate, no runs.
    `repo_url` links the commits, `run_url` the workflow run that made the report."""
    c = comparison
    if files:
        return _render_sections(c, [], [f"## mlops-ci diff: {esc(base_ref)} → {esc(head_ref)}"], limit, runs=False)
    head_label = _commit(c.head.sha, repo_url) + (f" ({esc(head_ref)})" if head_ref else "")
    if c.baseline:
        base_label = _commit(c.baseline.sha, repo_url) + (f" ({esc(base_ref)})" if base_ref else "")
    else:
        base_label = "no baseline"
    out: list[str] = [marker(c.project)]
    out.append(
        f"## mlops-ci · {esc(c.project)}: `{_short(c.head.sha)}` vs `{_short(c.baseline.sha) if c.baseline else '—'}`"
    )
    out.append("")
    fails = [r for r in results if not r.passed and not r.skipped and r.severity == "fail"]
    warns = [r for r in results if not r.passed and not r.skipped and r.severity == "warn"]
    if not results:
        verdict = "⚪ **Gate: no rules configured** (add `gate.rules` to mlops-ci.yaml)"
    elif passed:
        verdict = "✅ **Gate passed**" + (f" with {len(warns)} warning(s)" if warns else "")
    else:
        verdict = f"❌ **Gate failed**: {len(fails)} rule(s) failed"
    out.append(verdict)
    out.append("")
    made_by = f" · [workflow run]({_safe_url(run_url)})" if run_url else ""
    out.append(f"**Head** {head_label} · **Baseline** {base_label}{made_by}")
    if c.baseline_note:
        out.append("")
        out.append(f"> {esc(c.baseline_note)}")
    if c.config_changed:
        out.append("")
        out.append("> Training config changed since the baseline (config digest differs).")
    if results:
        out += ["", "| | rule | result |", "|---|---|---|", *(_rule_row(r) for r in results)]
    link = f"{_safe_url(run_url)}#artifacts" if run_url and c.model_diff else None
    return _render_sections(c, results, out, limit, runs=True, diff_link=link)


def _cost_table(c: Comparison) -> list[str]:
    """What training cost, next to what it bought: SageMaker's billable time, spot savings and
    an estimate from the price table (docs: an estimate, not a bill)."""
    head, base = c.head.cost, c.baseline.cost if c.baseline else {}

    def instance(k: dict[str, Any]) -> str:
        if not k.get("instance_type"):
            return "—"
        n = k.get("trials")  # a search: the sum of its trials
        trials = f"{int(n)} trial{'s' if int(n) != 1 else ''} of " if isinstance(n, int | float) else ""
        return (
            trials
            + f"{int(k.get('instance_count') or 1)} × {esc(str(k['instance_type']))}"
            + (" (spot)" if k.get("spot") else "")
        )

    def seconds(k: dict[str, Any]) -> str:
        b = k.get("billable_seconds")
        return "—" if b is None else f"{int(b) // 60}m {int(b) % 60:02d}s"

    def savings(k: dict[str, Any]) -> str:
        return "—" if k.get("spot_savings_pct") is None else f"{k['spot_savings_pct']:g}%"

    def money(x: float) -> str:
        return f"${x:,.2f}" if abs(x) >= 1 else f"${x:.4f}"

    def usd(k: dict[str, Any]) -> str:
        return "—" if k.get("usd") is None else money(k["usd"])

    delta = ""
    if head.get("usd") is not None and base.get("usd") is not None:
        d = head["usd"] - base["usd"]
        delta = ("+" if d >= 0 else "−") + money(abs(d))
    rows = [
        "", "### Training cost (estimate)", "", "| | baseline | head | Δ |", "|---|---:|---:|---:|",
        f"| instances | {instance(base)} | {instance(head)} | |",
        f"| billable time | {seconds(base)} | {seconds(head)} | |",
        f"| spot savings | {savings(base)} | {savings(head)} | |",
        f"| estimated cost | {usd(base)} | {usd(head)} | {delta} |",
    ]  # fmt: skip
    sources = {k.get("price_source") for k in (head, base) if k.get("usd") is not None}
    if sources:
        table = " / ".join(sorted(esc(str(x)) for x in sources))
        rows += ["", f"_Estimated from SageMaker's billable seconds × {table} on-demand prices (aws.prices "
                 "overrides); not a bill._"]  # fmt: skip
    return rows


def _render_sections(
    c: Comparison,
    results: Sequence[RuleResult],
    out: list[str],
    limit: float,
    *,
    runs: bool,
    diff_link: str | None = None,
) -> str:
    tail_note = ""
    used = sum(len(x) + 1 for x in out)

    gated = {r.metric for r in results}
    rows = sorted(c.metrics, key=lambda m: _metric_order(m, gated))
    table = ["", "### Metrics", "", "| metric | baseline | head | Δ | |", "|---|---:|---:|---:|---|"]
    used += sum(len(x) + 1 for x in table)
    shown = 0
    for m in rows:
        row = f"| {esc(m.name)} | {fmt(m.old)} | {fmt(m.new)} | {fmt_delta(m)} | {ICON.get(m.direction, m.direction)} |"
        if used + len(row) + 1 > limit * 0.6:
            break
        table.append(row)
        used += len(row) + 1
        shown += 1
    if not rows:
        table.append("| _no metrics recorded_ | | | | |")
    out += table
    if shown < len(rows):
        tail_note += f"{len(rows) - shown} more metric(s) not shown (size limit). "

    if c.model_diff:
        from .diff_report import markdown as diff_markdown

        block = diff_markdown(c.model_diff, html_link=diff_link)
        if used + sum(len(x) + 1 for x in block) > limit * 0.8:  # the changed rows go first
            block = diff_markdown(c.model_diff, html_link=diff_link, top_rows=0)
            tail_note += "The changed rows of the model diff are not shown (size limit). "
        used += sum(len(x) + 1 for x in block)
        out += block

    if c.tuning:
        block = _leaderboard(c.tuning)
        used += sum(len(x) + 1 for x in block)
        out += block

    if runs and (c.head.cost or (c.baseline and c.baseline.cost)):
        block = _cost_table(c)
        used += sum(len(x) + 1 for x in block)
        out += block

    if c.params:
        block = [
            "",
            f"<details><summary>Hyperparameters changed ({len(c.params)})</summary>",
            "",
            "| name | baseline | head |",
            "|---|---|---|",
        ]
        used += sum(len(x) + 1 for x in block)
        pshown = 0
        for p in c.params:
            old, new = (MASK, MASK) if secret_name(p.name) else (_pv(p.old), _pv(p.new))
            row = f"| {esc(p.name)} | {esc(old)} | {esc(new)} |"
            if used + len(row) + 1 > limit * 0.8:
                break
            block.append(row)
            used += len(row) + 1
            pshown += 1
        block += ["", "</details>"]
        out += block
        if pshown < len(c.params):
            tail_note += f"{len(c.params) - pshown} more hyperparameter change(s) not shown. "

    charts: list[str] = []
    names = sorted(c.series, key=lambda n: (0 if n in gated else 1, n))
    most = MAX_CHARTS if math.isfinite(limit) else len(names)
    for name in names[:most]:
        chart = _chart(name, c.series[name])
        if chart is None:
            continue
        if used + len(chart) + 200 > limit * 0.95:
            tail_note += "Some curves not shown (size limit). "
            break
        charts.append(chart)
        used += len(chart) + 1
    if charts:
        out += ["", "<details open><summary>Curves (baseline vs head)</summary>", ""]
        for ch in charts:
            out += [ch, ""]
        out.append("</details>")
    if len(names) > most:
        tail_note += f"{len(names) - most} more curve(s) in the JSON report. "

    if not runs:
        return _finish(out, tail_note, limited=math.isfinite(limit))
    links = []
    if _links(c.head.links):
        links.append(f"head: {_links(c.head.links)}")
    if c.baseline and _links(c.baseline.links):
        links.append(f"baseline: {_links(c.baseline.links)}")
    out += ["", "**Runs** head `" + c.head.run_id + "`" + (f" · baseline `{c.baseline.run_id}`" if c.baseline else "")]
    if links:
        out.append(" · ".join(links))
    digest_line = f"Artifact sha256 head `{(c.head.artifact_sha256 or '—')[:16]}`"
    if c.baseline:
        digest_line += f" · baseline `{(c.baseline.artifact_sha256 or '—')[:16]}`"
    out.append(digest_line)
    return _finish(out, tail_note)


def _leaderboard(t: dict[str, Any]) -> list[str]:
    """The search behind the head run: its best trials, their values and objective."""
    names = list(t["top"][0]["values"]) if t["top"] else []
    head = f"### Tuning: best of {t['completed']} completed trial(s) of {t['trials']}"
    out = ["", head, "", f"{esc(t['strategy'])} search, {esc(t['goal'])} `{esc(t['metric'])}`; the head run is the "
           "best trial's model.", ""]  # fmt: skip
    out.append("| # | trial | " + " | ".join(esc(n) for n in names) + f" | {esc(t['metric'])} | run |")
    out.append("|---:|---:|" + "---|" * len(names) + "---:|---|")
    for i, row in enumerate(t["top"], start=1):
        best = " ★" if row["run_id"] == t.get("best_run") else ""
        value = fmt(row["objective"]) if row["status"] == "completed" else f"_{esc(row['status'])}_"
        cells = " | ".join(MASK if secret_name(n) else esc(_pv(row["values"].get(n))) for n in names)
        out.append(f"| {i} | {row['trial']}{best} | {cells} | {value} | `{esc(row['run_id'])}` |")
    return out


def _finish(out: list[str], tail_note: str, *, limited: bool = True) -> str:
    if tail_note:
        out += ["", f"> _Truncated:_ {tail_note.strip()} Run `mlops-ci report --json` for everything."]
    text = "\n".join(out) + "\n"
    if limited and len(text) > GITHUB_COMMENT_LIMIT:  # defensive: never exceed GitHub's hard limit
        text = text[: GITHUB_COMMENT_LIMIT - 200] + "\n\n> _Truncated to fit GitHub's comment size limit._\n"
    return text


def render_text(c: Comparison, old_label: str, new_label: str) -> str:
    """`mlops-ci diff` on a terminal: every metric, in aligned columns (no markdown, no limit)."""
    from ._untrusted import inline

    rows = [("metric", inline(old_label), inline(new_label), "change", "")]
    for m in sorted(c.metrics, key=lambda m: m.name):
        rows.append((inline(m.name), fmt(m.old), fmt(m.new), fmt_delta(m), m.direction))
    if len(rows) == 1:
        return "no metrics in either file"
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def render_check(project: str, verdict: Verdict) -> tuple[str, str]:
    """Title and summary of the gate's check run: the per-rule table."""
    fails = [r for r in verdict.results if not r.passed and not r.skipped and r.severity == "fail"]
    if not verdict.results:
        title = "no gate rules configured"
    elif verdict.passed:
        title = "gate passed"
    else:
        title = f"gate failed: {len(fails)} rule(s)"
    base = f"`{verdict.baseline_sha[:8]}`" if verdict.baseline_sha else "none"
    lines = [f"**{esc(project)}** at `{verdict.sha[:8]}` · baseline {base}"]
    if verdict.baseline_note:
        lines += ["", f"> {esc(verdict.baseline_note)}"]
    if verdict.results:
        lines += ["", "| | rule | result |", "|---|---|---|", *(_rule_row(r) for r in verdict.results)]
    return title, "\n".join(lines) + "\n"


def _pv(v: Any) -> str:
    if v is None:
        return "—"
    return json.dumps(v) if not isinstance(v, str) else v


JSON_SERIES_POINTS = 500


def _mask_secret_params(c: dict[str, Any]) -> None:
    """Secret-looking hyperparameters (mlops_ci._untrusted.secret_name) as `***` in the JSON
    report: it is uploaded as an artifact and posted by a later job."""
    for p in c["params"]:
        if secret_name(p["name"]):
            p["old"] = MASK if p["old"] is not None else None
            p["new"] = MASK if p["new"] is not None else None
    for side in ("head", "baseline"):
        if c.get(side) and c[side].get("params"):
            c[side]["params"] = mask_params(c[side]["params"])


def render_json(
    comparison: Comparison,
    results: Sequence[RuleResult],
    passed: bool,
    *,
    series_points: int = JSON_SERIES_POINTS,
    context: dict[str, Any] | None = None,
) -> str:
    """The report as JSON. Series are downsampled to `series_points` (the store keeps them
    whole); non-finite numbers become strings ("nan", "inf") or null in series."""
    series = {
        name: {
            side: [p if math.isfinite(p) else None for p in downsample(pts, series_points)] for side, pts in e.items()
        }
        for name, e in comparison.series.items()
    }
    c = comparison.to_dict(series={})
    _mask_secret_params(c)
    data: dict[str, Any] = {
        "schema": "mlops-ci/report/v1",
        "marker": marker(comparison.project),
        "gate": {"passed": passed, "results": [r.__dict__ for r in results]},
        "comparison": c,
        "context": context or {},
    }
    data = json_safe(data)
    data["comparison"]["series"] = series
    # Compact: with indent, json falls back to its pure-Python encoder (10x slower here).
    return json.dumps(data, sort_keys=True, allow_nan=False, separators=(",", ":"))


def json_safe(obj: Any) -> Any:
    """Replace non-finite floats with strings so the JSON is standard."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
