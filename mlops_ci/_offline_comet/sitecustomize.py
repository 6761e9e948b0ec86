"""Run by Python at start-up in a local training job that mlops-ci started with Comet offline.

Once the job imports comet_ml, `comet_ml.Experiment` becomes a subclass of
`comet_ml.OfflineExperiment` that takes (and drops) an API key, so `comet_ml.Experiment()` and
`from comet_ml import Experiment` write an offline archive instead of failing for want of a key.
It changes nothing else, and whatever sitecustomize this one shadows still runs. Standard
library only: the job's interpreter need not have mlops-ci installed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).resolve().parent


def _offline(comet_ml: ModuleType) -> None:
    base: type = comet_ml.OfflineExperiment

    class Experiment(base):  # type: ignore[misc, valid-type]
        """comet_ml.Experiment's signature, with no key: an offline experiment (mlops-ci)."""

        def __init__(self, api_key: str | None = None, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)

    Experiment.__module__, Experiment.__qualname__ = "comet_ml", "Experiment"  # pickled by that name
    comet_ml.Experiment = Experiment  # type: ignore[attr-defined]


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader):
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        _offline(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "comet_ml":
            return None
        sys.meta_path.remove(self)  # once: the real finders locate comet_ml
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def _chain() -> None:
    """Run the sitecustomize this one shadows (the first other one on sys.path), if any."""
    for entry in sys.path:
        candidate = Path(entry or Path.cwd()).resolve() / "sitecustomize.py"
        if candidate.parent == _HERE or not candidate.is_file():
            continue
        spec = importlib.util.spec_from_file_location("_mlops_ci_shadowed_sitecustomize", candidate)
        if spec is not None and spec.loader is not None:
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        return


if os.environ.get("MLOPS_CI_COMET_OFFLINE") == "1" and "comet_ml" not in sys.modules:
    sys.meta_path.insert(0, _Finder())
_chain()
