"""`mlops-ci train` with `tuning:`: a search over the commit. Each trial is a training run of the
commit (its values on top of the hyperparameters, a training-config digest of the configuration
without the search, its number and its values, and a link with its number); `max_parallel`
trials run at once, each in its own workspace (its own store connection and git). The best
completed trial by the objective becomes the commit's run under the search's digest, recorded as
a reuse of the trial's model: the gate, the report and a promotion see it as they see any run. A
search run again finds the trials it already ran (the same seed gives the same trials; a
Bayesian search proposes them again from the same results) and runs only the missing ones."""

from __future__ import annotations

import dataclasses
import math
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .. import config as config_mod
from .. import tuning as tun
from ..backends import owner_label
from ..errors import Busy, ConfigError, MlopsCiError, Refused, TrainingFailed
from ..records import Run
from ..workspace import Workspace
from .train import Training


def trial(ws: Workspace, number: int, values: dict[str, Any]) -> tun.Trial:
    base = ws.cfg.training_digest(search=False)
    return tun.Trial(number, values, config_mod.digest({"training": base, "trial": number, "values": values}))


def trials_of(ws: Workspace) -> list[tun.Trial]:
    """The trials of the configured Random or Grid search, numbered from 1."""
    t = ws.cfg.tuning
    assert t is not None
    return [trial(ws, i, values) for i, values in enumerate(tun.trials(t), start=1)]


def tune(ws: Workspace, ref: str | None, *, allow_dirty: bool = False, force: bool = False,
         cancel_superseded: bool = False) -> tuple[Run | None, bool]:  # fmt: skip
    cfg = ws.cfg
    t = cfg.tuning
    assert t is not None
    ws.guard_store()
    sha = ws.resolve(ref, what="train").sha
    if ref is None and ws.git.is_dirty([str(ws.root)]):
        raise Refused("the work tree has uncommitted changes; commit them: a search's best trial becomes the "
                      "commit's run, which must be reproducible from its SHA" + (" (--allow-dirty does not apply "
                      "to a search)" if allow_dirty else ""))  # fmt: skip
    lead = Training(ws)
    if ref is None:
        lead.check_checkout(sha)
    digest = cfg.training_digest()
    if not force:
        existing = ws.store.latest_completed(ws.project, sha, digest)
        if existing:
            return existing, True
    ws.store  # noqa: B018  (opened, and created if new, once: workers that create a store at once collide)
    if cancel_superseded and cfg.training.kind.remote and ws.ctx.branch and not ws.dry_run:
        from ..backends.sagemaker_tuning import SageMakerTuner

        for job in SageMakerTuner(lead._trainer(), t).cancel_superseded(ws.project, ws.ctx.branch, sha):
            ws.say(f"stopped tuning job {job}: superseded by {sha[:8]} on {ws.ctx.branch}")
    if ws.dry_run:
        return _search(ws, sha, t, digest, force, lead)
    # Single flight: the push and the pull-request job of one commit search once; the second waits
    # and finds the first one's run (its trials are recorded once).
    name = f"search-{ws.project}-{sha[:12]}-{digest[:16]}"
    longest = tun.rounds(t) * (cfg.training.max_run + 900)
    with ExitStack() as held:
        try:
            held.enter_context(ws.store.lock(name, owner_label(ws.env), 0, ttl=longest))
        except Busy as exc:
            ws.say(f"waiting: {exc.message.split(';')[0]} (the same search); its run will be the commit's")
            held.enter_context(ws.store.lock(name, owner_label(ws.env), longest, ttl=longest))
        if not force:
            existing = ws.store.latest_completed(ws.project, sha, digest)
            if existing:
                return existing, True
        return _search(ws, sha, t, digest, force, lead)


def _search(ws: Workspace, sha: str, t: tun.TuningConfig, digest: str, force: bool, lead: Training
            ) -> tuple[Run | None, bool]:  # fmt: skip
    ws.say(f"searching {t.max_jobs} trial(s) of {sha[:8]} ({t.strategy}, {t.max_parallel} at a time): "
           f"{t.goal} {t.metric}")  # fmt: skip
    if ws.cfg.training.kind.remote:  # a HyperParameterTuningJob: SageMaker runs the search
        return _tuning_job(ws, sha, t, digest, force, lead)
    if t.strategy == "Bayesian":
        return _bayesian(ws, sha, t, digest, force, lead)
    trials = trials_of(ws)
    if ws.dry_run:  # each trial's own plan, then the record of the best
        for one in trials:
            Training(ws, one).train(sha, force=force)
        ws.would("store", "record run (best trial)", run_id=f"{sha[:8]}-<random>", sha=sha, config_digest=digest,
                 objective=f"{t.goal} {t.metric}")  # fmt: skip
        return None, False
    results = _run_trials(ws, sha, trials, t.max_parallel, force)
    return _conclude(ws, sha, t, digest, results, lead)


def _conclude(ws: Workspace, sha: str, t: tun.TuningConfig, digest: str,
              results: list[tuple[tun.Trial, Run | None]], lead: Training) -> tuple[Run | None, bool]:  # fmt: skip
    """The best completed trial becomes the commit's run; none: the search failed."""
    trials = [one for one, _ in results]
    found = tun.best([(trial.number, run) for trial, run in results if run is not None], t)
    failed = sum(1 for _, run in results if run is None or run.status != "completed")
    if found is None:
        raise TrainingFailed(f"the search of {sha[:8]} has no completed trial with a finite '{t.metric}' "
                             f"({failed} of {len(trials)} trial(s) failed, {len(trials) - failed} completed "
                             f"without it); the commit has no run. `mlops-ci runs` lists the trials")  # fmt: skip
    number, best = found
    cost = search_cost([run for _, run in results if run is not None])
    note = (f"best trial: {number} of {len(trials)} (run {best.run_id}, {t.metric}={best.metrics[t.metric]:g})"
            + (f", {failed} trial(s) failed" if failed else "") + "; recorded as the commit's run")  # fmt: skip
    # the commit's run keeps the trial's inputs digest: a later commit reuses it through its own search,
    # whose trials find the earlier ones by their inputs
    links = {k: v for k, v in best.links.items() if k != tun.TRIAL} | {tun.BEST: str(number)}
    return lead._record_reuse(best, sha, digest, note=note, links=links, cost=cost), False


def search_cost(runs: list[Run]) -> dict[str, object] | None:
    """What the whole search cost: every trial's billable time and estimate summed (a trial's
    already counts its instances); None when no trial has cost facts (the local trainer)."""
    costs = [r.cost for r in runs if r.cost]
    if not costs:
        return None
    first = costs[0]
    out: dict[str, object] = {"trials": len(runs), "instance_type": first.get("instance_type"),
                           "instance_count": first.get("instance_count"),
                           "spot": any(bool(c.get("spot")) for c in costs)}  # fmt: skip
    for key in ("billable_seconds", "training_seconds"):  # what SageMaker reported (a trial it never started: none)
        if any(c.get(key) is not None for c in costs):
            out[key] = sum(int(c.get(key) or 0) for c in costs)
    for key in ("usd", "on_demand_usd"):
        if any(c.get(key) is not None for c in costs):
            out[key] = round(sum(float(c.get(key) or 0.0) for c in costs), 4)
    billable, training = out.get("billable_seconds"), out.get("training_seconds")
    if out["spot"] and isinstance(billable, int) and isinstance(training, int) and training:
        out["spot_savings_pct"] = round(100.0 * (1.0 - billable / training), 1)
    for key in ("price_source", "usd_per_hour"):
        if key in first:
            out[key] = first[key]
    return out


def _tuning_job(ws: Workspace, sha: str, t: tun.TuningConfig, digest: str, force: bool, lead: Training
                ) -> tuple[Run | None, bool]:  # fmt: skip
    """A search on SageMaker: one HyperParameterTuningJob per commit and config (a re-run attaches
    to it); each training job it ran is recorded as a trial, numbered in the order SageMaker
    created them; then the best completed trial becomes the commit's run, as locally."""
    from ..backends.sagemaker_tuning import SageMakerTuner

    with tempfile.TemporaryDirectory(prefix="mlops-ci-search-") as tmp:
        workdir = Path(tmp)
        project_dir, backend, channels, data, inputs = lead._prepare(sha, False, workdir / "src")
        spec = lead._spec(project_dir, f"{sha[:8]}-search", sha, digest, False, channels, workdir, data)
        # one environment for every trial: a tracker's per-job experiment cannot be set in it; the
        # inputs tag lets a later commit with the same training inputs find this search
        spec = dataclasses.replace(spec, job_env=None, tags={**spec.tags, "mlops-ci:inputs": inputs})
        tuner = SageMakerTuner(backend, t)
        name, exists = tuner.next_job(ws.project, sha, digest, fresh=force)
        if not exists and not force:
            earlier = tuner.find_by_inputs(ws.project, inputs, digest)
            if earlier is not None:
                ws.say(f"commit {sha[:8]} has the same training inputs as tuning job {earlier}: recording its "
                       "trials, starting no search")  # fmt: skip
                name, exists = earlier, True
        if ws.dry_run:
            if exists:
                ws.would("sagemaker", "attach to tuning job", tuning_job_name=name)
            else:
                _, src = backend.pack_source(spec.code_dir, workdir / "sourcedir.tar.gz")
                uri = backend.source_uri(src)
                if not ws.aws().has_object(uri, src):
                    ws.would("sagemaker", "s3:PutObject", uri=uri, sha256=src)
                req = tuner.request(spec, name, uri)
                definition = req["TrainingJobDefinition"]
                assert isinstance(definition, dict)
                if "Environment" in definition:  # the plan is printed: secrets stay masked
                    definition["Environment"] = config_mod.mask_secrets(definition["Environment"])
                ws.would("sagemaker", "CreateHyperParameterTuningJob", request=req)
            ws.would("store", "record run (each trial)", trials=t.max_jobs, sha=sha)
            ws.would("store", "record run (best trial)", run_id=f"{sha[:8]}-<random>", sha=sha, config_digest=digest,
                     objective=f"{t.goal} {t.metric}")  # fmt: skip
            return None, False
        name = tuner.start(spec, workdir, name, exists)
    desc = tuner.wait(name)
    found = tuner.trials(name)
    if not found:
        raise TrainingFailed(f"tuning job {name} ended {desc['HyperParameterTuningJobStatus']} without a trial"
                             + (f": {desc['FailureReason']}" if desc.get("FailureReason") else "")
                             + "; the commit has no run")  # fmt: skip
    trials = [dataclasses.replace(trial(ws, i, values), job=job) for i, (job, values, _) in enumerate(found, start=1)]
    results = _run_trials(ws, sha, trials, t.max_parallel, force)
    return _conclude(ws, sha, t, digest, results, lead)


def _bayesian(ws: Workspace, sha: str, t: tun.TuningConfig, digest: str, force: bool, lead: Training
              ) -> tuple[Run | None, bool]:  # fmt: skip
    """A Bayesian search: optuna's TPE sampler (seeded) proposes `max_parallel` trials at a time
    from the results before them. Its proposals depend only on the seed and those results, so a
    search run again proposes the trials it ran, finds their runs and trains none of them."""
    try:
        import optuna  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise ConfigError("tuning.strategy Bayesian runs optuna's TPE sampler, which is not installed: "
                          "pip install 'mlops-ci[tuning]'") from None  # fmt: skip
    if ws.dry_run:
        ws.would("local", "search", strategy="Bayesian (optuna TPE)", max_jobs=t.max_jobs,
                 max_parallel=t.max_parallel, seed=t.seed,
                 note="each batch's values follow from the results before it: known only as it runs")  # fmt: skip
        ws.would("store", "record run (best trial)", run_id=f"{sha[:8]}-<random>", sha=sha, config_digest=digest,
                 objective=f"{t.goal} {t.metric}")  # fmt: skip
        return None, False
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # TPE starts with random draws (10 by default); a search of a few trials would be all random
    startup = min(10, max(2, t.max_jobs // 4))
    sampler = optuna.samplers.TPESampler(seed=t.seed, n_startup_trials=startup)
    study = optuna.create_study(direction="maximize" if t.goal == "maximize" else "minimize", sampler=sampler)
    dists = {p.name: tun.distribution(p) for p in t.parameters}
    results: list[tuple[tun.Trial, Run | None]] = []
    while len(results) < t.max_jobs:
        batch: list[tuple[Any, tun.Trial]] = []
        for _ in range(min(t.max_parallel, t.max_jobs - len(results) - len(batch))):
            asked = study.ask(dists)
            values = {p.name: tun.from_distribution(p, asked.params[p.name]) for p in t.parameters}
            batch.append((asked, trial(ws, len(results) + len(batch) + 1, values)))
        ran = _run_trials(ws, sha, [one for _, one in batch], t.max_parallel, force)
        for (asked, _), (_, run) in zip(batch, ran, strict=True):
            value = run.metrics.get(t.metric) if run is not None and run.status == "completed" else None
            if isinstance(value, float) and math.isfinite(value):
                study.tell(asked, value)
            else:
                study.tell(asked, state=optuna.trial.TrialState.FAIL)
        results += ran
    return _conclude(ws, sha, t, digest, results, lead)


def _run_trials(ws: Workspace, sha: str, trials: list[tun.Trial], parallel: int, force: bool
                ) -> list[tuple[tun.Trial, Run | None]]:  # fmt: skip
    """Run the trials, `parallel` at a time; a failed trial is a run recorded as failed (None when
    it never became one). An error that is not a failed trial (the store, the configuration)
    stops the search once the running trials end."""
    lock = threading.Lock()
    errors: list[BaseException] = []

    def one(trial: tun.Trial) -> tuple[tun.Trial, Run | None]:
        if errors:
            return trial, None
        say = ws.say

        def prefixed(line: str) -> None:
            with lock:
                say(f"[trial {trial.number}] {line}")

        w = ws.worker(say=prefixed)
        try:
            run, reused = Training(w, trial).train(sha, force=force, attach_only=bool(trial.job))
            if reused and run is not None:
                prefixed(f"already ran: run {run.run_id}")
            return trial, run
        except TrainingFailed as exc:
            prefixed(exc.message)
            failed = [r for r in w.store.runs(w.project, sha=sha, limit=200) if r.config_digest == trial.digest]
            return trial, failed[0] if failed else None
        except MlopsCiError as exc:
            errors.append(exc)
            return trial, None
        finally:
            w.close()

    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="mlops-ci-trial")
    try:
        futures = [pool.submit(one, trial) for trial in trials]
        results = [f.result() for f in futures]
    except BaseException as exc:  # Ctrl-C: no further trial starts; the running ones end (max_run bounds them)
        errors.append(exc)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    if errors:
        raise errors[0]
    return results


def leaderboard(ws: Workspace, run: Run, top: int = 5) -> dict[str, Any] | None:
    """The search behind `run` (a commit's run that is a search's best trial) as the current
    configuration has it: its trials found by their digests, best first, for the report. None for
    a run of no search, or of another search than the configured one."""
    t = ws.cfg.tuning
    best = run.links.get(tun.BEST)
    if t is None or best is None or run.config_digest != ws.cfg.training_digest():
        return None
    if t.strategy == "Bayesian" or ws.cfg.training.kind.remote:
        # trials known by their runs (the values came from the optimiser or SageMaker): each one's
        # digest from its own number and values
        numbers = {}
        for r in ws.store.runs(ws.project, sha=run.sha, limit=10_000):
            n = r.links.get(tun.TRIAL, "")
            values = {p.name: r.params.get(p.name) for p in t.parameters}
            if n.isdigit() and int(n) <= t.max_jobs and trial(ws, int(n), values).digest == r.config_digest:
                numbers[r.config_digest] = int(n)
        total = t.max_jobs
    else:
        numbers = {one.digest: one.number for one in trials_of(ws)}
        total = len(numbers)
    trials: dict[int, Run] = {}
    for r in ws.store.runs(ws.project, sha=run.sha, limit=10_000):
        if r.config_digest in numbers:
            trials.setdefault(numbers[r.config_digest], r)  # newest first: a trial run again keeps its latest
    if not trials:
        return None
    ranked = sorted(trials.items(), key=lambda nr: (*_rank(nr[1], t.metric, t.goal), nr[0]))
    rows = [
        {"trial": n, "run_id": r.run_id, "status": r.status, "objective": r.metrics.get(t.metric),
         "values": {p.name: r.params.get(p.name) for p in t.parameters}}
        for n, r in ranked
    ]  # fmt: skip
    completed = sum(1 for r in trials.values() if r.status == "completed")
    best_run = trials[int(best)].run_id if best.isdigit() and int(best) in trials else None
    return {"metric": t.metric, "goal": t.goal, "strategy": t.strategy, "trials": total,
            "completed": completed, "best_run": best_run, "top": rows[:top]}  # fmt: skip


def _rank(r: Run, metric: str, goal: str) -> tuple[int, float]:
    value = r.metrics.get(metric)
    if r.status != "completed" or not isinstance(value, float) or not math.isfinite(value):
        return (1, 0.0)
    return (0, -value if goal == "maximize" else value)
