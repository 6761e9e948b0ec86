"""mlops-ci: GitOps for machine learning.

Public API: the records and errors below, :class:`mlops_ci.workspace.Workspace` with the verbs
in :mod:`mlops_ci.verbs`, and :func:`mlops_ci.cli.main` for the command line. Everything else is
internal (docs/architecture.md).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "Comparison",
    "ConfigError",
    "Deployment",
    "MlopsCiError",
    "ModelVersion",
    "Run",
    "Verdict",
    "Workspace",
    "__version__",
]

_LAZY = {
    "Comparison": "records",
    "Deployment": "records",
    "ModelVersion": "records",
    "Run": "records",
    "Verdict": "records",
    "ConfigError": "errors",
    "MlopsCiError": "errors",
    "Workspace": "workspace",
}


def __getattr__(name: str) -> object:
    # Lazy so that `import mlops_ci` (and `mlops-ci --version`) stays cheap; no `typing`
    # import either, which alone costs more than the rest of the CLI's start-up.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
