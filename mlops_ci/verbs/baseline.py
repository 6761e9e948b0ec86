"""The baseline a run is compared with: the nearest run on the base branch, or the one named."""

from __future__ import annotations

from dataclasses import dataclass

from .. import gate as gate_mod
from ..errors import NotFound
from ..records import Run
from ..workspace import Workspace


@dataclass(frozen=True)
class BaselineChoice:
    run: Run | None
    state: str
    note: str
    base_ref: str | None


def find_baseline(ws: Workspace, head: Run, *, base: str | None = None, explicit: str | None = None) -> BaselineChoice:
    return _Baseline(ws).find_baseline(head, base=base, explicit=explicit)


class _Baseline:
    """Looks up a run's baseline in the store."""

    def __init__(self, ws: Workspace):
        self.ws = ws

    # -- review ---------------------------------------------------------------------------
    def find_baseline(self, head: Run, *, base: str | None = None, explicit: str | None = None) -> BaselineChoice:
        if explicit:
            target = self.ws.resolve(explicit, what="--baseline")
            run = target.run or self.ws.commit_run(target.sha)
            if run is None:
                raise NotFound(f"the explicit baseline {explicit} ({target.sha[:8]}) has no completed run")
            return BaselineChoice(run, gate_mod.BASELINE_FOUND, f"baseline set explicitly to {explicit}", explicit)
        base_ref = base or self.ws.ctx.base_ref or self.ws.cfg.baseline.branch
        base_sha = None
        for cand in (base_ref, f"origin/{base_ref}"):
            try:
                base_sha = self.ws.git.resolve(cand)
                break
            except NotFound:
                continue
        if base_sha is None:
            return BaselineChoice(
                None,
                gate_mod.BASELINE_UNKNOWN,
                f"base branch '{base_ref}' not found locally; fetch it (git fetch origin {base_ref}) "
                "so a baseline can be chosen",
                base_ref,
            )
        mb = self.ws.git.merge_base(head.sha, base_sha)
        if mb is None:
            hint = " (this clone is shallow: check out with fetch-depth: 0)" if self.ws.git.shallow else ""
            return BaselineChoice(
                None,
                gate_mod.BASELINE_UNKNOWN,
                f"{head.sha[:8]} and '{base_ref}' share no history{hint}",
                base_ref,
            )
        limit = self.ws.cfg.baseline.max_commits
        history = self.ws.git.first_parents(mb, limit + 1)
        if mb == head.sha:
            history = history[1:]  # a commit on the base branch compares with its predecessors
        else:
            history = history[:limit]
        have = self.ws.store.shas_with_runs(self.ws.project, history)
        for i, sha in enumerate(history):
            run = self.ws.commit_run(sha) if sha in have else None
            if run is not None:  # (a commit with only a failed search's trials has none)
                note = "" if i == 0 else f"nearest run is {i} commit(s) before the merge-base on '{base_ref}'"
                return BaselineChoice(run, gate_mod.BASELINE_FOUND, note, base_ref)
        if len(history) >= limit or self.ws.git.shallow:
            return BaselineChoice(
                None,
                gate_mod.BASELINE_UNKNOWN,
                f"no run found in the {len(history)} commit(s) searched on '{base_ref}'; history may be "
                "truncated (shallow clone: use fetch-depth: 0) or raise baseline.max_commits",
                base_ref,
            )
        return BaselineChoice(
            None,
            gate_mod.BASELINE_NONE,
            f"no baseline: no earlier commit on '{base_ref}' has a run; only absolute rules apply",
            base_ref,
        )
