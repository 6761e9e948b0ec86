"""`mlops-ci report` and `gate`: compare a run with its baseline, decide, record the verdict."""

from __future__ import annotations

import dataclasses
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import compare as compare_mod
from .. import gate as gate_mod
from .. import integrity
from .._files import sha256_tree
from ..backends import Tracker
from ..config import Config
from ..errors import ConfigError, GitError, MlopsCiError, NotFound, Refused
from ..records import Comparison, Run, Verdict
from ..workspace import Workspace, differs
from .baseline import BaselineChoice, find_baseline
from .train import Training, head_run


@dataclass(frozen=True)
class Review:
    comparison: Comparison
    outcome: gate_mod.GateOutcome
    head: Run
    baseline: BaselineChoice
    policy: Config  # the committed config whose gate rules decided
    source: str  # where it came from, "<sha8>:mlops-ci.yaml"
    model_diff: dict[str, Any] | None = None  # model_diff.py's result; None when review.model_diff is off


class Reviewer:
    """Reviews runs of one workspace."""

    def __init__(self, ws: Workspace):
        self.ws = ws

    def review(
        self, ref: str | None = None, *, base: str | None = None, baseline: str | None = None, deciding: bool = False
    ) -> Review:
        """Compare a run with its baseline and evaluate the gate. `deciding` (the gate verb): the
        rules must be committed; a report alone may preview uncommitted ones, and says so."""
        self.ws.guard_store()
        if ref is None:
            Training(self.ws).check_checkout(self.ws.ctx.sha)
        head = head_run(self.ws, ref)
        choice = find_baseline(self.ws, head, base=base, explicit=baseline)
        b = choice.run
        head_series = self.ws.store.series(head.run_id)
        base_series = self.ws.store.series(b.run_id) if b else None
        problems = integrity.link_problems(run=head, series=head_series)
        if b is not None and base_series is not None:
            problems += integrity.link_problems(run=b, series=base_series)
        integrity.require(problems, f"judge commit {head.sha[:8]}")
        try:
            policy, source = self.ws.policy(head.sha) if not head.dirty else (self.ws.cfg, "the work tree")
        except Refused as exc:
            if deciding:
                raise
            policy, source = self.ws.cfg, "the work tree"
            self.ws.warn(f"{exc.message}. This report previews the work tree's rules; `mlops-ci gate` will refuse")
        tracker = self.ws.tracker()
        if tracker is not None:  # the tracker's links and parameters; the numbers stay sealed
            head, head_in_comet = self._from_tracker(tracker, head)
            if head_in_comet:
                head = dataclasses.replace(head, links={**head.links, "comet_project": tracker.project_url()})
            if b is not None:
                b, base_in_comet = self._from_tracker(tracker, b)
                choice = dataclasses.replace(choice, run=b)
                hk, bk = head.links.get("comet_experiment_key"), b.links.get("comet_experiment_key")
                if head_in_comet and base_in_comet and hk and bk:
                    head = dataclasses.replace(head, links={**head.links, "comet_compare": tracker.compare_url(bk, hk)})
        comparison = compare_mod.compare(
            self.ws.project, head, b, choice.note, self.ws.cfg.metrics, head_series, base_series
        )
        diff = self.model_diff(policy, head, b) if policy.review.model_diff else None
        metrics, base_metrics, goals = head.metrics, b.metrics if b else None, policy.metrics
        if diff is not None:
            from ..model_diff import goal_of

            for name in sorted(set(diff["metrics"]) & set(head.metrics)):
                self.ws.warn(
                    f"the run has its own metric '{name}', named like a model-diff quantity; the gate uses the run's"
                )
            metrics = {**diff["metrics"], **head.metrics}
            base_metrics = {**diff["baseline_metrics"], **b.metrics} if b else None
            goals = {**{r.metric: g for r in policy.gate.rules if (g := goal_of(r.metric))}, **policy.metrics}
        from .tune import leaderboard

        comparison = dataclasses.replace(comparison, model_diff=diff, tuning=leaderboard(self.ws, head))
        outcome = gate_mod.evaluate(policy.gate, metrics, base_metrics, choice.state, goals)
        if diff is not None and diff["status"] != "ok":
            outcome = self._without_diff(outcome, metrics, diff, choice.state, policy)
        if policy is not self.ws.cfg and policy.gate_digest() != self.ws.cfg.gate_digest():
            self.ws.warn(
                f"the gate rules in your work tree differ from the ones committed at {source}; the committed "
                "ones decide (commit your change for it to apply)"
            )
        return Review(comparison, outcome, head, choice, policy, source, diff)

    @staticmethod
    def _without_diff(
        outcome: gate_mod.GateOutcome, metrics: dict[str, float], diff: dict[str, Any], state: str, policy: Config
    ) -> gate_mod.GateOutcome:
        """Rules on model-diff quantities when there is no diff: skipped like a relative rule when no
        earlier run exists at all, else failed with the reason the diff gives (never passed)."""
        from ..diff_metrics import is_diff_metric

        results = []
        for r in outcome.results:
            if is_diff_metric(r.metric) and r.metric not in metrics:
                if state == gate_mod.BASELINE_NONE and not policy.gate.require_baseline:
                    r = dataclasses.replace(
                        r, passed=True, skipped=True, reason="no earlier run exists to diff against; rule skipped"
                    )
                else:
                    r = dataclasses.replace(r, passed=False, reason=f"no model diff: {diff['reason']}")
            results.append(r)
        passed = all(r.passed or r.severity == "warn" for r in results)
        return gate_mod.GateOutcome(passed=passed, results=tuple(results))

    def model_diff(self, policy: Config, head: Run, base: Run | None) -> dict[str, Any]:
        """The model diff of `head` against `base` (model_diff.py), or why there is none. Never
        raises for what the models do: a model that fails gives a diff that says so."""
        from .. import model_diff as md

        rc = policy.review
        if base is None:
            return md.failed("no baseline run to compare predictions with", status="skipped")
        entry = policy.serving.entry_point
        if not entry:
            return md.failed(
                "serving.entry_point is not set: the model diff loads both models through the "
                "serving contract (model_fn); set it, or review.model_diff: false",
                status="skipped",
            )
        raw = policy.training.channels.get(rc.eval_channel)
        if raw is None:
            return md.failed(
                f"review.eval_channel '{rc.eval_channel}' is not one of training.channels "
                f"({', '.join(policy.training.channels) or 'none'}); set it",
                status="skipped",
            )
        try:
            data, data_digest = self._eval_data(raw, rc.eval_channel)
            sides = []
            for name, run in (("baseline", base), ("head", head)):
                artifact = self.ws.verify_artifact(
                    run.artifact_uri, run.artifact_sha256, what=f"the {name} run {run.run_id}"
                )
                assert run.artifact_sha256 is not None
                sides.append(
                    md.Side(
                        name,
                        artifact,
                        run.artifact_sha256,
                        self._entry_of(run, entry),
                        policy.serving.python or sys.executable,
                        dict(policy.serving.environment),
                    )
                )
        except MlopsCiError as exc:  # a missing artifact, the S3 channel out of reach: the section says so
            return md.failed(exc.message)
        except OSError as exc:
            return md.failed(f"cannot read the evaluation channel '{rc.eval_channel}': {exc}")
        self.ws.say(f"model diff: {base.sha[:8]} vs {head.sha[:8]} on channel '{rc.eval_channel}'")
        # inside .git: a pull request cannot bring its own "measurement" along in a commit
        return md.run(sides[0], sides[1], data, rc, Path(self.ws.git.repo.git_dir) / "mlops-ci" / "diffs", data_digest)

    def _entry_of(self, run: Run, fallback: str) -> str:
        """The serving entry point the run was packed with: its commit's config says."""
        try:
            return self.ws.policy(run.sha)[0].serving.entry_point or fallback
        except (Refused, ConfigError, NotFound, GitError):
            return fallback

    def _eval_data(self, raw: str, channel: str) -> tuple[Path, str]:
        """The evaluation channel on this machine, and its digest. An S3 channel is downloaded
        once into the workspace (keyed by its objects' ETags)."""
        if raw.startswith("s3://"):
            from ..backends.aws import download_prefix

            return download_prefix(self.ws.aws(), raw, self.ws.home / "eval-data")
        p = Path(raw)
        src = p if p.is_absolute() else self.ws.root / p
        if not src.exists():
            raise ConfigError(f"training.channels.{channel}: '{raw}' does not exist here; check out the data")
        return src, sha256_tree(src)

    def _from_tracker(self, tracker: Tracker, run: Run) -> tuple[Run, bool]:
        """The run with its Comet link and the parameters its script logged besides its
        hyperparameters, and whether its own experiment is in Comet. Its metrics, curves and
        hyperparameters stay the ones recorded at training: what the experiment says now only
        differs if someone logged to it since, and that is said, not used."""
        found = tracker.numbers(run, self.ws.cfg.metrics)
        for note in found.notes:
            self.ws.warn(note)
        for name, now in sorted((found.metrics or {}).items()):
            sealed = run.metrics.get(name)
            if sealed is not None and differs(now, sealed):
                self.ws.warn(
                    f"Comet's experiment of run {run.run_id} now says {name}={now:g}, but {sealed:g} was recorded "
                    "when it trained: someone logged to it since; the recorded value counts"
                )
        for name, now in sorted((found.params or {}).items()):
            if name in run.params and now != run.params[name]:
                self.ws.warn(
                    f"Comet's experiment of run {run.run_id} now says {name}={now!r}, but the run trained with "
                    f"{run.params[name]!r}; the recorded value is shown"
                )
        links = {**run.links, "comet": found.link} if found.link else run.links
        params = {**(found.params or {}), **run.params}  # what the script logged besides its hyperparameters
        return dataclasses.replace(run, params=params, links=links), found.link is not None

    def record_verdict(self, review: Review) -> Verdict:
        b = review.baseline.run
        if review.head.dirty:
            raise Refused("this run was trained from a dirty work tree; commit, train and gate again")
        verdict = Verdict(
            verdict_id=uuid.uuid4().hex[:16],
            run_id=review.head.run_id,
            project=self.ws.project,
            sha=review.head.sha,
            passed=review.outcome.passed,
            gate_digest=review.policy.gate_digest(),
            baseline_run_id=b.run_id if b else None,
            baseline_sha=b.sha if b else None,
            baseline_note=review.baseline.note,
            results=review.outcome.results,
            created=time.time(),
            gate_source=review.source,
            run_digest=review.head.digest,  # the stored run's: the review only adds Comet's links and parameters
            baseline_digest=b.digest if b else None,
        )

        def record() -> Verdict:  # sealed (and signed) only when recorded
            sealed = self.ws.seal_verdict(verdict, review.policy)
            self.ws.store.record_verdict(sealed)
            return sealed

        return self.ws.fx(
            "store",
            "record verdict",
            record,
            verdict,
            run_id=verdict.run_id,
            passed=verdict.passed,
            baseline_run_id=verdict.baseline_run_id,
            gate_digest=verdict.gate_digest,
            gate_source=verdict.gate_source,
        )
