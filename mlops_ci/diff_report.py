"""The model diff (model_diff.py) rendered: a compact markdown section for the PR comment and a
self-contained HTML page (no script, no third-party host) for the workflow artifact.

Every value that came from data, a model or a user is escaped: `_markdown.esc` in markdown,
`html.escape` in HTML.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any, TypeGuard

from ._markdown import ICON, esc, fmt, fmt_delta
from .diff_metrics import OPERATIONAL
from .records import Comparison, RuleResult

COMMENT_TOP_ROWS = 10  # the comment shows at most this many changed rows; the HTML shows all


def _is_num(x: object) -> TypeGuard[int | float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _n(x: object) -> str:
    """A count or figure as text; anything else (a forged report's) escaped."""
    return fmt(x) if _is_num(x) else ("—" if x is None else esc(x))


def _pct(x: object) -> str:
    return f"{x * 100:.2f} %" if _is_num(x) and math.isfinite(x) else _n(x)


def _change(old: object, new: object) -> str:
    if not (_is_num(old) and _is_num(new)) or not (math.isfinite(old) and math.isfinite(new)):
        return "—"
    d = new - old
    rel = f" ({d / abs(old) * 100:+.1f} %)" if old else ""
    return f"{d:+.4g}{rel}"


def _pair(v: object) -> tuple[float | None, float | None]:
    if isinstance(v, list) and len(v) == 2:
        return v[0], v[1]
    return None, None


def headline(d: dict[str, Any]) -> str:
    line = (
        f"**Flip rate {_pct(d.get('flip_rate'))}**: {_n(d.get('changed'))} of {_n(d.get('rows'))} prediction(s) changed"
    )
    cls, reg = d.get("classification") or {}, d.get("regression") or {}
    if cls.get("accuracy"):
        b, h = _pair(cls["accuracy"])
        line += f" · accuracy {_n(b)} → {_n(h)}"
    if reg.get("mae"):
        b, h = _pair(reg["mae"])
        line += f" · MAE {_n(b)} → {_n(h)}"
    return line


def _histogram_mermaid(hist: dict[str, Any]) -> list[str]:
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    if len(edges) != len(counts) + 1 or not counts or not all(_is_num(v) and math.isfinite(v) for v in edges + counts):
        return []
    centers = [f'"{(edges[i] + edges[i + 1]) / 2:.3g}"' for i in range(len(counts))]
    return [
        "```mermaid",
        "xychart-beta",
        '    title "prediction delta (head - baseline)"',
        f"    x-axis [{', '.join(centers)}]",
        f'    y-axis "rows" 0 --> {max(counts) or 1}',
        f"    bar [{', '.join(str(int(c)) for c in counts)}]",
        "```",
    ]


def markdown(d: dict[str, Any] | None, *, html_link: str | None = None, top_rows: int = COMMENT_TOP_ROWS) -> list[str]:
    """The comment's section, or [] when the review made no diff."""
    if not d:
        return []
    out = ["", "### Model diff"]
    status = d.get("status")
    if status != "ok":
        icon = "⏭️" if status == "skipped" else "⚠️"
        out += [
            "",
            f"> {icon} {'No model diff' if status == 'skipped' else 'The model diff could not run'}: "
            f"{esc(d.get('reason', ''))}",
        ]
        return out
    ev = d.get("eval") or {}
    rows, total = ev.get("rows"), ev.get("total_rows")
    more = _is_num(rows) and _is_num(total) and total > rows
    rows_note = f"{_n(rows)} rows" + (f" (the first of {_n(total)})" if more else "")
    out += [
        "",
        f"Both models on channel `{esc(ev.get('channel'))}`, {rows_note}, through the serving contract.",
        "",
        headline(d),
    ]
    cls, reg = d.get("classification"), d.get("regression")
    if cls:
        keys = [esc(k) for k in cls.get("classes") or []]
        out += [
            "",
            "<details open><summary>Predictions: baseline (rows) × head (columns)</summary>",
            "",
            "| baseline \\ head | " + " | ".join(keys) + " |",
            "|---|" + "---:|" * len(keys),
        ]
        for k, row in zip(keys, cls.get("confusion") or [], strict=False):
            out.append(f"| **{k}** | " + " | ".join(_n(v) for v in row) + " |")
        out += ["", "</details>"]
        if cls.get("per_class"):
            out += ["", "| class | support | precision | recall |", "|---|---:|---:|---:|"]
            for c in cls["per_class"]:
                prec = f"{_n(c.get('baseline_precision'))} → {_n(c.get('head_precision'))}"
                rec = f"{_n(c.get('baseline_recall'))} → {_n(c.get('head_recall'))}"
                out.append(f"| {esc(c.get('class'))} | {_n(c.get('support'))} | {prec} | {rec} |")
    if reg:
        st = reg.get("delta") or {}
        cols = ["min", "p01", "p05", "p25", "p50", "p75", "p95", "p99", "max", "mean", "std"]
        out += [
            "",
            "| Δ prediction | " + " | ".join(cols) + " |",
            "|---|" + "---:|" * len(cols),
            "| head − baseline | " + " | ".join(_n(st.get(c)) for c in cols) + " |",
        ]
        if _is_num(reg.get("nonfinite")) and reg["nonfinite"]:
            out.append(f"\n{_n(reg['nonfinite'])} prediction(s) are not finite numbers on one side or both.")
        out += ["", *_histogram_mermaid(reg.get("histogram") or {})]
    top = d.get("top") or {}
    if top.get("rows") and top_rows > 0:
        cols = [esc(c) for c in top.get("columns") or []]
        label = any(r.get("label") is not None for r in top["rows"])
        head_cells = ["row", *cols, *(["label"] if label else []), "baseline", "head"]
        out += [
            "",
            f"<details><summary>Top changed rows ({min(len(top['rows']), top_rows)})</summary>",
            "",
            "| " + " | ".join(head_cells) + " |",
            "|" + "---|" * len(head_cells),
        ]
        for r in top["rows"][:top_rows]:
            cells = [
                esc(r.get("id")),
                *(esc(v) for v in r.get("features") or []),
                *([esc(r.get("label"))] if label else []),
                esc(r.get("baseline")),
                esc(r.get("head")),
            ]
            out.append("| " + " | ".join(cells) + " |")
        out += ["", "</details>"]
    sl = d.get("slices")
    if sl and sl.get("groups"):
        out += [
            "",
            f"<details open><summary>Slices by {esc(sl.get('column'))}</summary>",
            "",
            "| value | rows | flip rate | metric | baseline | head | Δ |",
            "|---|---:|---:|---|---:|---:|---:|",
        ]
        for g in sl["groups"]:
            out.append(
                f"| {esc(g.get('value'))} | {_n(g.get('rows'))} | {_pct(g.get('flip_rate'))} | "
                f"{esc(g.get('metric') or '—')} | {_n(g.get('baseline'))} | {_n(g.get('head'))} | "
                f"{_change(g.get('baseline'), g.get('head'))} |"
            )
        out += ["", "</details>"]
    ops = d.get("operational") or {}
    if ops.get("head"):
        b, h = ops.get("baseline") or {}, ops["head"]
        out += ["", "| serving | baseline | head | Δ |", "|---|---:|---:|---:|"]
        for name, (what, unit) in OPERATIONAL.items():
            out.append(
                f"| {what} ({unit}) | {_n(b.get(name))} | {_n(h.get(name))} | {_change(b.get(name), h.get(name))} |"
            )
        out.append(
            f"\n<sub>Measured side by side on the machine that made this report ({_n(h.get('requests'))} single "
            f"and {_n(h.get('batches'))} batch requests per model, alternating rounds); the gate can use these "
            "names.</sub>"
        )
    sb = d.get("sandbox") or {}
    if sb and (not sb.get("files") or not sb.get("limits")) and sb.get("note"):
        out.append(f"\n> ⚠️ The models ran less confined than they could be: {esc(sb.get('note'))}")
    if html_link:
        out.append(f"\nFull diff: [HTML report]({html_link}) (workflow artifact `mlops-ci-report`).")
    return out


# -- HTML ---------------------------------------------------------------------------------------
_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#1f2328}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #d0d7de;padding:.25em .6em;text-align:right}
th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}.fail{color:#cf222e}.pass{color:#1a7f37}
.note{background:#fff8c5;padding:.5em .8em;border-radius:6px}code{background:#f6f8fa;padding:0 .3em}"""


def _h(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _yes(x: Any) -> str:
    return "yes" if x is True else "no" if x is False else "unknown"


def _f(x: Any) -> str:
    """A figure for HTML (escaped by _table)."""
    return fmt(x) if _is_num(x) else ("—" if x is None else str(x))


def _table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    th = "".join(f"<th>{_h(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{_h(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _svg_histogram(hist: dict[str, Any]) -> str:
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    if len(edges) != len(counts) + 1 or not counts or not all(_is_num(v) and math.isfinite(v) for v in edges + counts):
        return ""
    w, hgt, top = 640, 200, max(counts) or 1
    bw = w / len(counts)
    bars = "".join(
        f'<rect x="{i * bw:.1f}" y="{hgt - c / top * hgt:.1f}" width="{bw - 1:.1f}" height="{c / top * hgt:.1f}" '
        f'fill="#0969da"><title>{edges[i]:.4g} to {edges[i + 1]:.4g}: {int(c)}</title></rect>'
        for i, c in enumerate(counts)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{hgt + 20}" role="img" '
        f'aria-label="prediction delta histogram">{bars}<text x="0" y="{hgt + 15}">{edges[0]:.4g}</text>'
        f'<text x="{w}" y="{hgt + 15}" text-anchor="end">{edges[-1]:.4g}</text></svg>'
    )


def render_html(c: Comparison, results: Sequence[RuleResult], passed: bool, *, run_url: str | None = None) -> str:
    """The whole report as one page: gate, metrics and the full model diff."""
    parts = [
        f"<h1>mlops-ci · {_h(c.project)}: <code>{_h(c.head.sha[:8])}</code> vs "
        f"<code>{_h(c.baseline.sha[:8] if c.baseline else '—')}</code></h1>"
    ]
    verdict = "no rules configured" if not results else ("passed" if passed else "failed")
    parts.append(f'<p class="{"pass" if passed else "fail"}"><b>Gate {verdict}</b></p>')
    if run_url and run_url.startswith(("https://", "http://")):
        parts.append(f'<p><a href="{_h(run_url)}">workflow run</a></p>')
    if results:
        parts.append(
            _table(
                ["", "rule", "result"],
                [(r.status, r.rule, r.reason) for r in results],
            )
        )
    parts.append("<h2>Metrics</h2>")
    parts.append(
        _table(
            ["metric", "baseline", "head", "Δ", ""],
            [(m.name, _f(m.old), _f(m.new), fmt_delta(m), ICON.get(m.direction, m.direction)) for m in c.metrics],
        )
    )
    d = c.model_diff
    parts.append("<h2>Model diff</h2>")
    if not d:
        parts.append("<p>The review made no model diff (review.model_diff: false).</p>")
    elif d.get("status") != "ok":
        parts.append(f'<p class="note">{_h(d.get("status"))}: {_h(d.get("reason"))}</p>')
    else:
        ev = d.get("eval") or {}
        parts.append(
            f"<p>Channel <code>{_h(ev.get('channel'))}</code>: {_h(ev.get('rows'))} of "
            f"{_h(ev.get('total_rows'))} rows from {_h(ev.get('files'))} file(s). Flip rate "
            f"<b>{_h(_pct(d.get('flip_rate')))}</b> ({_h(d.get('changed'))} of {_h(d.get('rows'))}).</p>"
        )
        cls, reg = d.get("classification"), d.get("regression")
        if cls:
            keys = cls.get("classes") or []
            parts.append("<h3>Baseline (rows) × head (columns)</h3>")
            parts.append(
                _table(
                    ["baseline \\ head", *keys],
                    [(k, *row) for k, row in zip(keys, cls.get("confusion") or [], strict=False)],
                )
            )
            if cls.get("accuracy"):
                b, h = _pair(cls["accuracy"])
                parts.append(f"<p>accuracy {_h(_f(b))} → {_h(_f(h))}</p>")
            if cls.get("per_class"):
                parts.append(
                    _table(
                        [
                            "class",
                            "support",
                            "precision (baseline)",
                            "precision (head)",
                            "recall (baseline)",
                            "recall (head)",
                        ],
                        [
                            (
                                p.get("class"),
                                p.get("support"),
                                _f(p.get("baseline_precision")),
                                _f(p.get("head_precision")),
                                _f(p.get("baseline_recall")),
                                _f(p.get("head_recall")),
                            )
                            for p in cls["per_class"]
                        ],
                    )
                )
        if reg:
            st = reg.get("delta") or {}
            parts.append("<h3>Prediction delta (head − baseline)</h3>")
            parts.append(_table(list(st), [[_f(v) for v in st.values()]]))
            parts.append(_svg_histogram(reg.get("histogram") or {}))
            for k in ("mae", "rmse"):
                if reg.get(k):
                    b, h = _pair(reg[k])
                    parts.append(f"<p>{k.upper()} {_h(_f(b))} → {_h(_f(h))}</p>")
        top = d.get("top") or {}
        if top.get("rows"):
            parts.append("<h3>Top changed rows</h3>")
            parts.append(
                _table(
                    ["row", *(top.get("columns") or []), "label", "baseline", "head"],
                    [
                        (
                            r.get("id"),
                            *(r.get("features") or []),
                            "" if r.get("label") is None else r["label"],
                            r.get("baseline"),
                            r.get("head"),
                        )
                        for r in top["rows"]
                    ],
                )
            )
        sl = d.get("slices")
        if sl and sl.get("groups"):
            parts.append(f"<h3>Slices by {_h(sl.get('column'))}</h3>")
            parts.append(
                _table(
                    ["value", "rows", "flip rate", "metric", "baseline", "head"],
                    [
                        (
                            g.get("value"),
                            g.get("rows"),
                            _pct(g.get("flip_rate")),
                            g.get("metric", "—"),
                            _f(g.get("baseline")),
                            _f(g.get("head")),
                        )
                        for g in sl["groups"]
                    ],
                )
            )
        ops = d.get("operational") or {}
        if ops.get("head"):
            ob, oh = ops.get("baseline") or {}, ops["head"]
            parts.append("<h3>Serving</h3>")
            parts.append(
                _table(
                    ["", "baseline", "head", "Δ"],
                    [
                        (
                            f"{what} ({unit}) · {name}",
                            _f(ob.get(name)),
                            _f(oh.get(name)),
                            _change(ob.get(name), oh.get(name)),
                        )
                        for name, (what, unit) in OPERATIONAL.items()
                    ],
                )
            )
        sb = d.get("sandbox") or {}
        parts.append(
            f"<p>Sandbox: timeout {_h(sb.get('timeout_s'))} s, memory {_h(sb.get('memory_mb'))} MiB, "
            f"files confined: {_h(_yes(sb.get('files')))}, network confined: {_h(_yes(sb.get('network')))}, "
            f"limits set: {_h(_yes(sb.get('limits')))}. "
            f"{_h(sb.get('note', ''))}</p>"
        )
    title = _h(f"mlops-ci {c.project} {c.head.sha[:8]}")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>{title}</title><style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n"
    )
