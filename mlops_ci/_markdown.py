"""Markdown that stays inert: escaping what came from users, data or models, and the number and
delta formats the PR report and the model diff share."""

from __future__ import annotations

import math
import re

from .records import MetricDelta

# Characters that start markdown constructs (code, emphasis, links, tables, headings, strike).
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~#!])")


def esc(value: object) -> str:
    """Make arbitrary text inert in GitHub markdown: no HTML, links, code spans, mentions, tables."""
    text = str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    text = text.replace("@", "&#64;").replace("\r", " ").replace("\n", " ")
    return text


def fmt(x: float | None) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.4e}"


def fmt_delta(m: MetricDelta) -> str:
    if m.delta is None:
        return "—"
    rel = f" ({m.rel_delta * 100:+.2f}%)" if m.rel_delta is not None and math.isfinite(m.rel_delta) else ""
    return f"{m.delta:+.4g}{rel}"


ICON = {
    "better": "🟢 better",
    "worse": "🔴 worse",
    "same": "⚪ same",
    "changed": "🔵 changed",
    "added": "➕ new",
    "removed": "➖ removed",
}
