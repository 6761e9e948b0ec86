"""The model diff's gate quantities by name: which names are measured by the review's model diff
(model_diff.py), and which way is better. Config validation, training and the review ask this
without loading the diff itself."""

from __future__ import annotations

# name → (label, unit): the operational figures measured for both models
OPERATIONAL: dict[str, tuple[str, str]] = {
    "artifact_mb": ("artifact size", "MB"),
    "load_s": ("load time", "s"),
    "latency_p50_ms": ("single-request latency p50", "ms"),
    "latency_p99_ms": ("single-request latency p99", "ms"),
    "batch_latency_p50_ms": ("batch latency p50", "ms"),
    "batch_latency_p99_ms": ("batch latency p99", "ms"),
    "peak_memory_mb": ("peak memory", "MB"),
}


def direction(name: str) -> str | None:
    """ "minimize" or "maximize" for a model-diff quantity (its max_regression direction), else None."""
    base, sliced = name.split("@", 1)[0], "@" in name
    if (base in OPERATIONAL and not sliced) or base == "flip_rate" or (base == "mae" and sliced):
        return "minimize"
    if base == "accuracy" and sliced:
        return "maximize"
    return None


def is_diff_metric(name: str) -> bool:
    return direction(name) is not None
