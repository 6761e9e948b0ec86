"""A second tracker, for tests only: it keeps what mlops-ci tells it in a JSON-lines file.

It exists to show that a tracker plugs in through mlops_ci/kinds.py (one table line, this
module) without a change to the core; tests/integration/test_second_tracker.py adds it to the
table. It implements backends.Tracker, and parses its own keys of `tracking` (SETTINGS, which the
table line names): the core parser knows nothing of them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlops_ci.backends import Context
from mlops_ci.config import KeyPath, MetricGoal, Settings, TrackingConfig, _Reader, core_fields, opt_string
from mlops_ci.records import ModelVersion, Run


@dataclass(frozen=True)
class MemoTrackingConfig(TrackingConfig):
    """`tracking` with `backend: memo`."""

    workspace: str = "memo"  # the team the journal is kept for
    model_name: str | None = None  # set: promote registers versions with the tracker, deploy tells it


def _parse(r: _Reader, m: dict[str, object], p: KeyPath, core: TrackingConfig) -> MemoTrackingConfig:
    workspace = r.string(m.get("workspace", "memo"), (*p, "workspace"))
    if not workspace.isidentifier():
        raise r.fail((*p, "workspace"), "a memo workspace is one word")
    return MemoTrackingConfig(**core_fields(core), workspace=workspace, model_name=opt_string(r, m, "model_name", p))


SETTINGS = Settings(MemoTrackingConfig, ("workspace", "model_name"), _parse)


@dataclass(frozen=True)
class MemoNumbers:
    link: str | None
    metrics: dict[str, float] | None
    params: dict[str, object] | None
    notes: Sequence[str]


class MemoTracker:
    online = True

    def __init__(self, journal: Path):
        self.journal = journal

    @classmethod
    def from_context(cls, ctx: Context) -> MemoTracker:
        return cls(ctx.home / "memo.jsonl")

    def events(self) -> list[dict[str, object]]:
        if not self.journal.exists():
            return []
        return [json.loads(line) for line in self.journal.read_text().splitlines()]

    def _log(self, event: str, **detail: object) -> None:
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        with self.journal.open("a") as fh:
            fh.write(json.dumps({"event": event, **detail}, sort_keys=True) + "\n")

    def experiment_key(self, job_name: str) -> str:
        return "memo-" + hashlib.sha256(job_name.encode()).hexdigest()[:12]

    def job_env(
        self,
        key: str,
        provenance: Mapping[str, str],
        offline_dir: str,
        *,
        name: str,
        others: Mapping[str, str],
        local: bool,
    ) -> dict[str, str]:
        return {"MEMO_KEY": key}

    def collect(self, key: str, output_dir: Path, keep: Path) -> dict[str, str]:
        return {"memo": f"memo://{key}"}

    def at_training(
        self, key: str, links: Mapping[str, str], goals: Mapping[str, MetricGoal], params: Mapping[str, object]
    ) -> tuple[dict[str, float], dict[str, Sequence[float]]] | None:
        # what the job logged to the tracker: one number of its own, and one the log also has
        self._log("read", key=key)
        return {"memo_score": 0.5, "accuracy": 0.0}, {"memo_score": [0.25, 0.5]}

    def tag(self, run: Run, provenance: Mapping[str, str], tags: list[str]) -> None:
        self._log("tag", run=run.run_id, sha=run.sha)

    def numbers(self, run: Run, goals: Mapping[str, MetricGoal]) -> MemoNumbers:
        return MemoNumbers(link=f"memo://run/{run.run_id}", metrics=None, params=None, notes=())

    def project_url(self) -> str:
        return "memo://project"

    def compare_url(self, baseline: str, head: str) -> str:
        return f"memo://compare/{baseline}/{head}"

    def registry_version(self, mv: ModelVersion) -> str:
        return str(mv.version)

    def register(self, mv: ModelVersion, run: Run, package: str | None = None) -> tuple[str, bool]:
        self._log("register", version=mv.version, sha=mv.sha)
        return f"memo model v{mv.version}", True

    def status_problem(self) -> str | None:
        return None

    def mark_deployed(self, mv: ModelVersion, endpoint: str) -> list[str]:
        self._log("deployed", version=mv.version, endpoint=endpoint)
        return []
