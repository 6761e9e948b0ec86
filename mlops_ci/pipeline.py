"""The verbs (train, report, gate, promote, deploy, rollback, status) wired to the backends.

Returns plain records; the CLI renders them. Progress goes through ``self.say`` (stderr in the
CLI) so that stdout carries only results.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
import re
import secrets
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _untrusted, integrity
from . import compare as compare_mod
from . import config as config_mod
from . import gate as gate_mod
from ._files import LinkOutside, files_under, pack_deterministic, sha256_file, sha256_tree
from .backends import Context, ModelRegistry, Store, Tracker, TrainingResult, TrainingSpec, owner_label, run_url
from .config import Config, SageMakerTraining, is_shared_store
from .context import Git, GitContext, load_context
from .errors import Busy, ConfigError, GitError, MlopsCiError, NotFound, Refused, TrainingFailed, UsageError
from .records import Comparison, ModelVersion, Run, Verdict


def excluded(rel: str, patterns: Sequence[str]) -> bool:
    """`rel` (a posix path under source_dir) matches a `training.exclude` pattern. Patterns are
    anchored at source_dir, as in .gitignore with a leading slash: `*` and `?` stay within one
    path segment, `**` crosses them, and a trailing `/` names a directory and all below it
    (`docs/` is the top-level docs only; `**/docs/` is any)."""
    for pat in patterns:
        body = _glob_re(pat.rstrip("/"))
        if re.fullmatch(body + ("/.*" if pat.endswith("/") else ""), rel):
            return True
    return False


def _glob_re(pat: str) -> str:
    out, i = "", 0
    while i < len(pat):
        if pat.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pat.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pat[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pat[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pat[i]), i + 1
    return out


# Never training data: kernel and device views of this machine (a channel there would copy, say,
# /proc/self/environ with its secrets into the job).
_SYSTEM_DIRS = tuple(Path(d) for d in ("/proc", "/sys", "/dev", "/run", "/boot", "/etc"))


@dataclass(frozen=True)
class BaselineChoice:
    run: Run | None
    state: str
    note: str
    base_ref: str | None


@dataclass(frozen=True)
class Review:
    comparison: Comparison
    outcome: gate_mod.GateOutcome
    head: Run
    baseline: BaselineChoice
    policy: Config  # the committed config whose gate rules decided
    source: str  # where it came from, "<sha8>:mlops-ci.yaml"
    model_diff: dict[str, Any] | None = None  # model_diff.py's result; None when review.model_diff is off


def _differs(a: float, b: float) -> bool:
    """Two readings of one metric that are not the same number (float noise aside)."""
    return not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _quiet(_: str) -> None:
    pass


class Workspace:
    """Config + git + store + the state directory for one project."""

    def __init__(
        self,
        start: Path,
        env: Mapping[str, str],
        *,
        config_path: str | None = None,
        store: str | None = None,
        say: Callable[[str], None] = _quiet,
        warn: Callable[[str], None] | None = None,
        token: str | None = None,
        dry_run: bool = False,
    ):
        self.dry_run = dry_run
        self.plan: list[dict[str, Any]] = []  # what a --dry-run would have done, in order
        self.env = env
        self.say = say
        self.warn = warn or (lambda msg: say(f"warning: {msg}"))
        self.token = token
        self.cfg = config_mod.load(start, env, config_path=config_path, store=store)
        self.root = Path(self.cfg.root)
        self.git = Git(self.root)
        self.home = Path(env.get("MLOPS_CI_HOME") or self.root / ".mlops-ci")
        self._store: Store | None = None
        self._ctx: GitContext | None = None
        self._aws: Any = None
        self._tracker: Tracker | None = None
        self._left_out: list[str] = []  # source files training.exclude removed from the job's source
        self._planned_verdicts: dict[str, Verdict] = {}  # a dry run's reused verdicts, by run id
        self._policies: dict[str, tuple[Config, str]] = {}  # committed configs, by commit
        self._signers: dict[str, integrity.Signer] = {}

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.cfg.store, self.root, self.project, self.env)
        return self._store

    def guard_store(self) -> None:
        """The verbs of the CI loop (train, report, gate, promote, deploy) refuse a store that
        dies with the runner; reading one (runs, lineage, store export) and dry runs do not."""
        if self.dry_run or is_shared_store(self.cfg.store):
            return
        self.runner_guard(
            f"the run store is {self.cfg.store}, a file on this runner's disk: every CI job runs on a "
            "fresh machine, so no job would see another's runs (every PR 'no baseline', no release); "
            "set the repository variable MLOPS_CI_STORE to a shared store: git (this repository's own refs, no "
            "cloud account) or s3://bucket/prefix",
            "MLOPS_CI_ALLOW_RUNNER_STORE",
        )

    def runner_guard(self, why: str, allow: str) -> None:
        """Under GitHub Actions, refuse state that dies with the runner unless `allow` is set
        (a self-hosted runner whose disk persists, a throw-away self-test)."""
        if self.env.get("GITHUB_ACTIONS") == "true" and self.env.get(allow) != "true":
            kind = self.env.get("RUNNER_ENVIRONMENT")  # github-hosted or self-hosted, on GitHub
            where = f" (this runner is {kind})" if kind in ("github-hosted", "self-hosted") else ""
            raise ConfigError(f"{why}. On a self-hosted runner whose disk persists, set {allow}=true{where}")

    @property
    def ctx(self) -> GitContext:
        if self._ctx is None:
            self._ctx = load_context(self.root, self.env, self.git)
        return self._ctx

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
        self.git.close()

    @property
    def project(self) -> str:
        return self.cfg.project

    def would(self, target: str, action: str, **detail: Any) -> None:
        """Record a step a dry run skips: `target` is local, store or github."""
        self.plan.append({"target": target, "action": action, **detail})

    # -- resolution -----------------------------------------------------------------------
    def resolve_sha(self, ref: str | None) -> str:
        return self.ctx.sha if ref is None else self.git.resolve(ref)

    def head_run(self, ref: str | None) -> Run:
        """The run a verb works on: a run id, or the newest completed run of a commit
        (preferring one under the current training config)."""
        if ref is not None:
            run = self.store.get_run(ref)
            if run is not None:
                if run.project != self.project:
                    raise NotFound(f"run {ref} belongs to project '{run.project}', not '{self.project}'")
                return run
        sha = self.resolve_sha(ref)
        run = self.store.latest_completed(self.project, sha, self.cfg.training_digest())
        run = run or self.store.latest_completed(self.project, sha) or self._attach(sha)
        if run is None:
            failed = [r for r in self.store.runs(self.project, sha=sha, limit=1) if r.status == "failed"]
            why = f"its last run {failed[0].run_id} failed" if failed else "it has no completed run"
            raise NotFound(f"commit {sha[:8]} cannot be used: {why}; train it first (`mlops-ci train {sha[:8]}`)")
        return run

    # -- train ----------------------------------------------------------------------------
    def train(
        self,
        ref: str | None = None,
        *,
        allow_dirty: bool = False,
        force: bool = False,
        no_wait: bool = False,
        attach_only: bool = False,
        cancel_superseded: bool = False,
    ) -> tuple[Run | None, bool]:
        """Train the commit `ref` (default HEAD). Returns (run, reused); (None, False) on a dry
        run or when a remote job was started with `no_wait`. `attach_only` (the `wait` verb)
        follows a job started earlier and never starts one."""
        cfg = self.cfg
        self.guard_store()
        sha = self.resolve_sha(ref)
        dirty = False
        if ref is None and not attach_only and self.git.is_dirty([str(self.root)]):
            if not allow_dirty:
                raise Refused(
                    "the work tree has uncommitted changes; commit them (a run must be reproducible "
                    "from its SHA) or pass --allow-dirty for a throw-away run that can never be promoted"
                )
            dirty = True
        digest = cfg.training_digest()
        if not force and not dirty:
            existing = self.store.latest_completed(self.project, sha, digest)
            if existing:
                return existing, True
        remote = cfg.training.kind.remote
        if (no_wait or attach_only) and not remote:
            raise UsageError(
                "--no-wait and `wait` need training.backend: sagemaker (a local run ends with the command)"
            )
        if not remote and self.env.get("MLOPS_CI_REMOTE_ONLY") == "true":
            raise Refused(
                "training.backend is local, which would run the commit's code on this runner, and this job "
                "allows only remote training (MLOPS_CI_REMOTE_ONLY=true, e.g. fork training with cloud "
                "credentials); set training.backend: sagemaker in the base branch's mlops-ci.yaml"
            )
        if ref is None and not attach_only:
            self._check_checkout(sha)
        cancel_superseded = cancel_superseded and remote  # a local run ends with its runner: nothing to stop
        run_id = f"{sha[:8]}-{secrets.token_hex(3)}"
        if self.dry_run:  # resolve everything in a throw-away directory, record nothing
            import tempfile

            with tempfile.TemporaryDirectory(prefix="mlops-ci-dry-run-") as tmp:
                return self._train_plan(sha, dirty, digest, Path(tmp), run_id, force)
        workdir = self.home / "runs" / run_id
        workdir.mkdir(parents=True)
        snapshot = workdir / "src"
        try:
            project_dir, backend, channels, data, inputs = self._prepare(sha, dirty, snapshot)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)  # nothing is left of a run that never started
            raise
        if dirty or force or attach_only:
            return self._train(sha, run_id, workdir, project_dir, backend, channels, data, inputs, dirty=dirty,
                               force=force, no_wait=no_wait, attach_only=attach_only,
                               cancel_superseded=cancel_superseded)  # fmt: skip
        # Single flight: the push and the PR job of one commit (or two commits with the same
        # inputs) train once; the second waits for the first and reuses its run.
        lock = f"train-{self.project}-{inputs[:32]}"
        with ExitStack() as held:
            try:
                # the lease outlives the longest training (max_run) plus packing and upload
                longest = cfg.training.max_run + 900
                try:
                    held.enter_context(self.store.lock(lock, owner_label(self.env), 0, ttl=longest))
                except Busy as exc:
                    self.say(f"waiting: {exc.message.split(';')[0]} (same training inputs); its run will be reused")
                    held.enter_context(self.store.lock(lock, owner_label(self.env), longest, ttl=longest))
                existing = self.store.latest_completed(self.project, sha, digest)
                original = None if existing else self.store.latest_by_inputs(self.project, inputs)
            except BaseException:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
            if existing or original:
                shutil.rmtree(workdir, ignore_errors=True)
                return existing or self._record_reuse(original, sha, digest), True  # type: ignore[arg-type]
            return self._train(sha, run_id, workdir, project_dir, backend, channels, data, inputs, dirty=dirty,
                               force=force, no_wait=no_wait, attach_only=attach_only,
                               cancel_superseded=cancel_superseded)  # fmt: skip

    def _train(self, sha: str, run_id: str, workdir: Path, project_dir: Path, backend: Any,
               channels: dict[str, Path], data: dict[str, dict[str, str]], inputs: str, *, dirty: bool,
               force: bool, no_wait: bool, attach_only: bool,
               cancel_superseded: bool) -> tuple[Run | None, bool]:  # fmt: skip
        cfg = self.cfg
        digest = cfg.training_digest()
        remote = cfg.training.kind.remote
        snapshot = workdir / "src"
        try:
            spec = self._spec(project_dir, run_id, sha, digest, dirty, channels, workdir, data)
            if cancel_superseded and self.ctx.branch:
                for job in backend.cancel_superseded(self.project, self.ctx.branch, sha):
                    self.say(f"stopped {job}: superseded by {sha[:8]} on {self.ctx.branch}")
            if attach_only:
                jobs = backend.jobs_of(self.project, sha, digest)
                if not jobs:
                    raise NotFound(
                        f"no training job of {sha[:8]} under the current config; start one with `mlops-ci train`"
                    )
                name = jobs[-1]["TrainingJobName"]
            elif remote:
                name = backend.start(spec, workdir, self.project, fresh=force)
            if no_wait:
                self.say(f"training job {name} runs on; `mlops-ci wait {sha[:8]}` records it when it ends")
                shutil.rmtree(workdir, ignore_errors=True)
                return None, False
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)  # nothing is left of a run that never started
            raise
        started = time.time()
        self.say(f"training {self.project} at {sha[:8]} (run {run_id}, backend {backend.name})")
        log = _untrusted.Echo(self.say, self.env)  # the script's output, inert under Actions
        result = backend.wait(name, spec, workdir, log) if remote else backend.run(spec, workdir, log)
        finished = time.time()
        job = name if remote else spec.job_name
        links = {"log": str(result.log_path), **result.links}
        tracker = self.tracker()
        if tracker is not None:
            key = tracker.experiment_key(job)
            links.update(tracker.collect(key, result.output_dir, self.home / "comet"))
            if "comet_archive" in links:
                self.say(f"Comet: offline experiment {links['comet_archive']}; upload it later with "
                         f"`comet upload {links['comet_archive']}` (COMET_API_KEY set)")  # fmt: skip
            if result.exit_code == 0 and result.failure is None:
                self._tracked_numbers(tracker, key, links, result)
        if result.exit_code == 0 and result.failure is None:
            self._warn_missing_metrics(result.metrics)
        base = dict(
            run_id=run_id,
            project=self.project,
            sha=sha,
            branch=self.ctx.branch,
            config_digest=digest,
            backend=backend.name,
            started=started,
            finished=finished,
            params=dict(cfg.training.hyperparameters),
            metrics=result.metrics,
            log_path=str(result.log_path),
            links=links,
            data=data,
            dirty=dirty,
            cost=self._cost(result.cost),
            inputs_digest="" if dirty else inputs,
        )
        shutil.rmtree(snapshot, ignore_errors=True)
        shutil.rmtree(workdir / "opt_ml" / "input" / "data", ignore_errors=True)
        if result.failure is not None or result.exit_code != 0:
            failure = result.failure or f"exit code {result.exit_code}"
            run = integrity.seal_run(Run(**base, status="failed", failure=failure), result.series)  # type: ignore[arg-type]
            self.store.record_run(run, result.series)
            first = failure.strip().splitlines()[0] if failure.strip() else failure
            hint = ""
            if self._left_out:  # a script that reads an excluded file fails without saying why
                names = ", ".join(sorted(self._left_out)[:5]) + (", …" if len(self._left_out) > 5 else "")
                hint = f"; training.exclude left {len(self._left_out)} file(s) out of the job's source: {names}"
            raise TrainingFailed(f"training failed: {first} (run {run_id}; full log: {result.log_path}){hint}")
        try:
            artifact, digest_art = self._pack(result.model_dir, workdir / "opt_ml" / "code", run_id)
        except LinkOutside as err:
            failure = f"SM_MODEL_DIR/{err}: it is not packed (it would carry a file of this machine into the artifact)"
            run = integrity.seal_run(Run(**base, status="failed", failure=failure), result.series)  # type: ignore[arg-type]
            self.store.record_run(run, result.series)
            raise TrainingFailed(
                f"training failed: {failure}; write the file itself into SM_MODEL_DIR, not a link (run {run_id})"
            ) from None
        uri = self.store.put_artifact(artifact, digest_art)
        run = Run(**base, status="completed", artifact_uri=uri, artifact_sha256=digest_art)  # type: ignore[arg-type]
        run = integrity.seal_run(run, result.series)
        self.store.record_run(run, result.series)
        if tracker is not None and tracker.online:
            self._tag_experiment(tracker, run, spec, job)
        return run, False

    def _tracked_numbers(self, tracker: Tracker, key: str, links: dict[str, str], result: TrainingResult) -> None:
        """The job's Comet numbers join the ones from its log and metrics.json, read once now and
        sealed with the run: the gate decides on these, never on what the experiment says later.
        The log's value wins for a metric both have: anyone with the project's API key can log to
        the experiment, even while the job runs, but only the job writes its log."""
        from .errors import MlopsCiError

        try:
            found = tracker.at_training(key, links, self.cfg.metrics, self.cfg.training.hyperparameters)
        except MlopsCiError as exc:
            self.warn(f"the run's Comet numbers could not be read ({exc.message}); it records the ones from its log")
            return
        if found is None:
            self.warn(f"Comet has no experiment {key} for this run; it records the numbers from its log")
            return
        metrics, series = found
        for name in sorted(set(metrics) & set(result.metrics)):
            if _differs(metrics[name], result.metrics[name]):
                self.warn(
                    f"Comet's experiment {key} says {name}={metrics[name]:g}, the job's log "
                    f"{result.metrics[name]:g}: the log's value is recorded"
                )
        result.metrics = {**metrics, **result.metrics}
        result.series = {**series, **result.series}

    def _warn_missing_metrics(self, metrics: dict[str, float]) -> None:
        """A metric definition that matched no line of the log, or a gate rule on a metric the run
        does not have, is said now, not found later as a failed gate that looks like a regression."""
        have = ", ".join(sorted(metrics)) or "none"
        for d in self.cfg.training.metric_definitions:
            if d.name not in metrics:
                self.warn(
                    f"training.metric_definitions '{d.name}' matched no line of the log (regex {d.regex!r}) and "
                    f"metrics.json has no '{d.name}'; the run has: {have}"
                )
        from .model_diff import is_diff_metric  # the review measures these, not training

        defined = {d.name for d in self.cfg.training.metric_definitions}
        for name in sorted({r.metric for r in self.cfg.gate.rules} - set(metrics) - defined):
            if is_diff_metric(name) and self.cfg.review.model_diff:
                continue
            self.warn(f"gate rule on '{name}': this run has no such metric (it has: {have}); the gate will fail on it")

    def _tag_experiment(self, tracker: Tracker, run: Run, spec: TrainingSpec, job: str) -> None:
        """A script that made its own experiment (no helper) still gets the commit: online,
        mlops-ci adds it afterwards. Never fails the run."""
        from .errors import MlopsCiError
        from .tracking import provenance, tags

        env = spec.job_env(job) if spec.job_env else {}
        try:
            tracker.tag(run, provenance(env), tags(env))
        except MlopsCiError as exc:
            self.warn(f"the Comet experiment of run {run.run_id} was not tagged with its commit: {exc.message}")

    def backend_context(self) -> Context:
        return Context(cfg=self.cfg, env=self.env, home=self.home, say=self.say, aws=self.aws)

    def tracker(self) -> Tracker | None:
        """The configured tracker (tracking.backend), made once; None: the store's records only."""
        kind = self.cfg.tracking.kind
        if self._tracker is None and kind.impl:
            self._tracker = kind.load().from_context(self.backend_context())  # type: ignore[attr-defined]
        return self._tracker

    def _provenance(self, sha: str, run_id: str, job: str) -> dict[str, str]:
        ctx = self.ctx
        return {
            "MLOPS_CI_GIT_SHA": sha, "MLOPS_CI_GIT_BRANCH": ctx.branch or "",
            "MLOPS_CI_REPOSITORY": ctx.repository or "", "MLOPS_CI_PR": str(ctx.pr_number or ""),
            "MLOPS_CI_JOB": job, "MLOPS_CI_RUN": run_id,
        }  # fmt: skip

    def _tracking_env(
        self, tracker: Tracker, sha: str, run_id: str, workdir: Path, data: dict[str, dict[str, str]]
    ) -> Callable[[str], dict[str, str]]:
        """The job's tracker environment, once its name is known."""
        comet = tracker
        remote = self.cfg.training.kind.remote
        offline_dir = "/opt/ml/output/data/comet" if remote else str(workdir / "opt_ml" / "output" / "data" / "comet")

        def digest(d: dict[str, str]) -> str:
            return f"sha256:{d['sha256']}" if "sha256" in d else f"s3-etags-sha256:{d.get('s3_etags_sha256', '?')}"

        others = {f"data_{name}": f"{d.get('uri')} {digest(d)}" for name, d in data.items()}
        if remote:
            sm = self.cfg.training.sagemaker or SageMakerTraining()
            others["sagemaker_region"] = self.cfg.aws.region or ""
            others["sagemaker_instance"] = f"{sm.instance_count} x {sm.instance_type}"
        name = f"{sha[:8]} · {self.ctx.branch or 'detached'}"

        def env_for(job: str) -> dict[str, str]:
            extra = {**others, "sagemaker_training_job": job} if remote else others
            provenance = self._provenance(sha, run_id, job)
            key = comet.experiment_key(job)
            return dict(comet.job_env(key, provenance, offline_dir, name=name, others=extra, local=not remote))

        return env_for

    def _cost(self, facts: dict[str, Any]) -> dict[str, Any]:
        if not facts:
            return {}
        from .pricing import estimate

        return estimate(facts, self.cfg.aws.prices)

    def _trainer(self) -> Any:
        return self.cfg.training.kind.load().from_context(self.backend_context())  # type: ignore[attr-defined]

    def _spec(self, project_dir: Path, run_id: str, sha: str, digest: str, dirty: bool,
              channels: dict[str, Path], workdir: Path, data: dict[str, dict[str, str]]) -> TrainingSpec:  # fmt: skip
        cfg = self.cfg
        tags = {
            "mlops-ci:project": self.project, "mlops-ci:sha": sha, "mlops-ci:branch": self.ctx.branch or "",
            "mlops-ci:repository": self.ctx.repository or "", "mlops-ci:config-digest": digest,
            "mlops-ci:run-url": run_url(self.env) or "", "mlops-ci:dirty": "true" if dirty else "",
        }  # fmt: skip
        tracker = self.tracker()
        return TrainingSpec(
            job_name=f"{self.project}-{run_id}",
            code_dir=project_dir / cfg.training.source_dir,
            entry_point=cfg.training.entry_point,
            hyperparameters=dict(cfg.training.hyperparameters),
            channels=channels,
            metric_regexes={d.name: d.regex for d in cfg.training.metric_definitions},
            environment=dict(cfg.training.environment),
            python=cfg.training.python or sys.executable,
            max_run=cfg.training.max_run,
            sha=sha,
            config_digest=digest,
            tags={k: v for k, v in tags.items() if v},
            channel_uris=dict(cfg.training.channels) if cfg.training.kind.remote else {},
            job_env=self._tracking_env(tracker, sha, run_id, workdir, data) if tracker is not None else None,
        )

    def _snapshot(self, sha: str, dirty: bool, dest: Path) -> Path:
        """The project directory as of `sha` (the work tree for a dirty run) under `dest`,
        with its entry point checked."""
        cfg = self.cfg
        if dirty:
            shutil.copytree(self.git.root, dest, ignore=shutil.ignore_patterns(".git", ".mlops-ci", "__pycache__"))
        else:
            self.git.extract(sha, dest)
        project_dir = dest / self._source_rel()
        self._exclude(project_dir)
        if not (project_dir / cfg.training.source_dir / cfg.training.entry_point).is_file():
            raise ConfigError(
                f"{cfg.file}: training.entry_point '{cfg.training.entry_point}' does not exist in "
                f"{cfg.training.source_dir!r} at commit {sha[:8]}; fix the path or commit the file"
            )
        return project_dir

    def _exclude(self, project_dir: Path) -> None:
        """Remove what training never reads (`training.exclude`, the config file itself: its
        training part is in the config digest) from the job's source."""
        code = project_dir / self.cfg.training.source_dir
        config = (project_dir / Path(self.cfg.file).name).resolve()
        serving = self.cfg.serving
        kept = [p.rstrip("/") for p in ([serving.entry_point] if serving.entry_point else []) + list(serving.include)]
        self._left_out = []
        for f in sorted(code.rglob("*"), reverse=True):
            if not (f.is_file() or f.is_symlink()):
                continue
            rel = f.relative_to(code).as_posix()
            if any(rel == k or rel.startswith(k + "/") for k in kept):
                continue  # packed with the model: never excluded
            is_config = f.resolve() == config
            if is_config or excluded(rel, self.cfg.training.exclude):
                f.unlink()
                if not is_config:
                    self._left_out.append(rel)

    def _prepare(
        self, sha: str, dirty: bool, dest: Path
    ) -> tuple[Path, Any, dict[str, Path], dict[str, dict[str, str]], str]:
        """The job's source under `dest`, the backend, its channels and their records, and the
        digest of what training reads: that source, the channels' digests, the training config."""
        project_dir = self._snapshot(sha, dirty, dest)
        serving = self.cfg.serving
        for rel in ([serving.entry_point] if serving.entry_point else []) + list(serving.include):
            if not (project_dir / self.cfg.training.source_dir / rel).exists():
                # found now, not when the model is packed after the training it would waste
                raise ConfigError(
                    f"{self.cfg.file}: serving file '{rel}' does not exist in the source at {sha[:8]} "
                    f"(under training.source_dir {self.cfg.training.source_dir}); commit it or fix the path"
                )
        backend = self._trainer()
        channels, data = self._channels(project_dir, backend)
        source = sha256_tree(project_dir / self.cfg.training.source_dir)
        inputs = config_mod.digest({"source": source, "channels": data, "training": self.cfg.training_digest()})
        return project_dir, backend, channels, data, inputs

    def _record_reuse(self, original: Run, sha: str, config_digest: str) -> Run:
        """`sha` trains exactly what `original` trained: record its run (and its verdict under
        the current gate rules) against `sha`, pointing at the run that really trained."""
        now = time.time()
        root = original.reused_from or original.run_id
        series = self.store.series(original.run_id)
        integrity.require(integrity.link_problems(run=original, series=series), f"reuse run {original.run_id}")
        run = integrity.seal_run(dataclasses.replace(
            original, run_id=f"{sha[:8]}-{secrets.token_hex(3)}", sha=sha, branch=self.ctx.branch,
            config_digest=config_digest, started=now, finished=now, reused_from=root,
        ), series)  # fmt: skip
        verdict = self.store.latest_verdict(original.run_id)
        copy = None
        policy, source = self.policy(sha)
        if (verdict is not None and not integrity.link_problems(run=original, verdict=verdict)
                and verdict.gate_digest == policy.gate_digest() and self._same_baseline(run, verdict)):  # fmt: skip
            copy = self._sealed_verdict(dataclasses.replace(
                verdict, verdict_id=uuid.uuid4().hex[:16], run_id=run.run_id, sha=sha, created=now,
                reused_from=verdict.verdict_id, run_digest=run.digest, gate_source=source,
            ), policy)  # fmt: skip
        if self.dry_run:  # the plan says what the real run records; later steps of it see them
            self.would("store", "record run (reused)", run_id=f"{sha[:8]}-<random>", sha=sha, reused_from=root)
            if copy is not None:
                self.would("store", "record verdict (reused)", reused_from=copy.reused_from, passed=copy.passed)
                self._planned_verdicts[run.run_id] = copy
        else:
            self.store.record_run(run, series)
            if copy is not None:
                self.store.record_verdict(copy)
        self.say(
            f"commit {sha[:8]} has the same training inputs as {original.sha[:8]}: reusing run {root} "
            f"(model sha256 {(original.artifact_sha256 or '')[:12]}), recorded as run {run.run_id}; not training"
        )
        return run

    def _same_baseline(self, run: Run, verdict: Verdict) -> bool:
        """A verdict is relative to its baseline: it carries over to `run` (same model, other
        commit) only if `run`'s own baseline is that run, or one with the same inputs. A revert
        to an older model is compared with what it reverts, so it is gated afresh."""
        choice = self.find_baseline(run)
        if choice.run is None:
            return verdict.baseline_run_id is None and choice.state == gate_mod.BASELINE_NONE
        if choice.run.run_id == verdict.baseline_run_id:
            return True
        before = self.store.get_run(verdict.baseline_run_id) if verdict.baseline_run_id else None
        return before is not None and bool(before.inputs_digest) and before.inputs_digest == choice.run.inputs_digest

    def _config_matches(self, sha: str) -> bool:
        """The work tree's mlops-ci.yaml is the one committed at `sha`."""
        rel = self.config_path_in_repo()
        try:
            committed: str | None = self.git.show_file(sha, rel)
        except GitError:
            committed = None
        current = (Path(self.cfg.root) / Path(self.cfg.file).name).read_text(encoding="utf-8")
        return committed is not None and committed.rstrip("\n") == current.rstrip("\n")

    def _attach(self, sha: str) -> Run | None:
        """A commit with no run of its own whose training inputs equal an earlier run's (a merge
        or squash commit, a docs-only change) gets that run, without training."""
        import tempfile

        if self.git.is_dirty([str(self.root)]) and sha == self.git.head_sha():
            return None
        if not self._config_matches(sha):
            return None  # its inputs would be computed with another commit's training config
        with tempfile.TemporaryDirectory(prefix="mlops-ci-inputs-") as tmp:
            try:
                inputs = self._prepare(sha, False, Path(tmp) / "src")[4]
            except ConfigError:
                return None  # not trainable as configured: nothing to reuse either
        original = self.store.latest_by_inputs(self.project, inputs)
        return self._record_reuse(original, sha, self.cfg.training_digest()) if original else None

    def _check_checkout(self, sha: str) -> None:
        """Under Actions, the config read from the work tree must be the one of the commit whose
        run is recorded (a PR job that checked out the merge ref would mix two commits)."""
        if self.env.get("GITHUB_ACTIONS") != "true":
            return
        head = self.git.head_sha()
        if head == sha:
            return
        if not self._config_matches(sha):
            rel = self.config_path_in_repo()
            raise Refused(
                f"the checkout is at {head[:8]}, but the commit to work on is {sha[:8]} and its {rel} differs; "
                "check out that commit (on pull_request: actions/checkout with "
                "ref: ${{ github.event.pull_request.head.sha }})"
            )

    def _train_plan(
        self, sha: str, dirty: bool, digest: str, workdir: Path, run_id: str, force: bool = False
    ) -> tuple[None, bool]:
        cfg = self.cfg
        project_dir, backend, channels, data, inputs = self._prepare(sha, dirty, workdir / "src")
        if not (dirty or force):
            original = self.store.latest_by_inputs(self.project, inputs)
            if original is not None:
                self._record_reuse(original, sha, digest)
                return None, False
        if cfg.training.kind.remote:
            spec = self._spec(project_dir, run_id, sha, digest, dirty, channels, workdir, data)
            name, exists = backend.next_job(spec, self.project, fresh=force)
            if exists:
                self.would("sagemaker", "attach to training job", job_name=name)
            else:
                _, src_digest = backend.pack_source(spec.code_dir, workdir / "sourcedir.tar.gz")
                uri = backend.source_uri(src_digest)
                if not self.aws().has_object(uri, src_digest):
                    self.would("sagemaker", "s3:PutObject", uri=uri, sha256=src_digest)
                req = backend.request(spec, name, uri)
                if "Environment" in req:  # the plan is printed: secrets stay masked
                    req["Environment"] = config_mod.mask_secrets(req["Environment"])
                self.would("sagemaker", "CreateTrainingJob", request=req)
        else:
            from .backends.local_training import cmd_args, requirements_digest

            self.would(
                "local", "train", sha=sha, dirty=dirty, config_digest=digest, backend="local",
                job_name=f"{self.project}-{run_id}",
                command=[cfg.training.python or "python", cfg.training.entry_point,
                         *cmd_args(cfg.training.hyperparameters)],
                channels=data, environment=sorted(cfg.training.environment), max_run=cfg.training.max_run,
                requirements=requirements_digest(project_dir / cfg.training.source_dir,
                                                 cfg.training.python or sys.executable),
            )  # fmt: skip
        self.would("store", "put artifact", key="artifacts/<sha256 of model.tar.gz>", store=cfg.store)
        self.would("store", "record run", run_id=f"{sha[:8]}-<random>", sha=sha, store=cfg.store)
        return None, False

    def _source_rel(self) -> Path:
        try:
            return self.root.resolve().relative_to(self.git.root.resolve())
        except ValueError:
            return Path()

    def _channels(self, project_dir: Path, backend: Any) -> tuple[dict[str, Path], dict[str, dict[str, str]]]:
        if self.cfg.training.kind.remote:
            return {}, backend.channel_data(self.cfg.training.channels)
        channels: dict[str, Path] = {}
        data: dict[str, dict[str, str]] = {}
        for name, raw in self.cfg.training.channels.items():
            p = Path(raw)
            where = f"{self.cfg.file}: training.channels.{name}: '{raw}'"
            if p.is_absolute():
                src, source = p, "host"
                if any(p.resolve().is_relative_to(d) for d in _SYSTEM_DIRS):
                    raise ConfigError(f"{where} is a system directory, not data; point it at a dataset")
            else:
                committed = (project_dir / p).exists()
                src, base = (project_dir / p, project_dir) if committed else (self.root / p, self.root)
                source = "commit" if committed else "work tree"
                # a relative channel stays inside the repository: '../..' (or a link) reaching out
                # would record the host's files as the work tree's
                if not src.resolve().is_relative_to(base.resolve()):
                    raise ConfigError(
                        f"{where} leaves the repository; use a path inside it, or an absolute path for data "
                        "kept elsewhere on this machine (recorded as a host path)"
                    )
            if not src.exists():
                raise ConfigError(f"{where} does not exist (neither at the commit nor in the work tree); fix the path")
            data[name] = {"uri": raw, "sha256": sha256_tree(src), "source": source}
            channels[name] = src
        return channels, data

    def _pack(self, model_dir: Path, code_dir: Path, run_id: str) -> tuple[Path, str]:
        entries = files_under(model_dir)
        serving = self.cfg.serving
        wanted = ([serving.entry_point] if serving.entry_point else []) + list(serving.include)
        for rel in wanted:
            src = code_dir / rel
            if src.is_dir():
                try:
                    entries += files_under(src, f"code/{rel.rstrip('/')}/")
                except LinkOutside as err:
                    raise Refused(f"{self.cfg.file}: serving file '{rel}': {err}; commit the file itself") from None
            elif src.is_file():
                entries.append((f"code/{rel}", src))
            else:
                raise ConfigError(f"{self.cfg.file}: serving file '{rel}' does not exist in the source at this commit")
        if not entries:
            self.say("warning: the training script wrote nothing to SM_MODEL_DIR; the artifact is empty")
        tmp = self.home / "artifacts" / f".{run_id}.tar.gz"
        digest = pack_deterministic(entries, tmp)
        dest = self.home / "artifacts" / digest[:2] / f"{digest}.tar.gz"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        return dest, digest

    # -- review ---------------------------------------------------------------------------
    def find_baseline(self, head: Run, *, base: str | None = None, explicit: str | None = None) -> BaselineChoice:
        if explicit:
            run = self.store.get_run(explicit)
            if run is None:
                sha = self.git.resolve(explicit)
                run = self.store.latest_completed(self.project, sha)
                if run is None:
                    raise NotFound(f"the explicit baseline {explicit} ({sha[:8]}) has no completed run")
            return BaselineChoice(run, gate_mod.BASELINE_FOUND, f"baseline set explicitly to {explicit}", explicit)
        base_ref = base or self.ctx.base_ref or self.cfg.baseline.branch
        base_sha = None
        for cand in (base_ref, f"origin/{base_ref}"):
            try:
                base_sha = self.git.resolve(cand)
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
        mb = self.git.merge_base(head.sha, base_sha)
        if mb is None:
            hint = " (this clone is shallow: check out with fetch-depth: 0)" if self.git.shallow else ""
            return BaselineChoice(
                None,
                gate_mod.BASELINE_UNKNOWN,
                f"{head.sha[:8]} and '{base_ref}' share no history{hint}",
                base_ref,
            )
        limit = self.cfg.baseline.max_commits
        history = self.git.first_parents(mb, limit + 1)
        if mb == head.sha:
            history = history[1:]  # a commit on the base branch compares with its predecessors
        else:
            history = history[:limit]
        have = self.store.shas_with_runs(self.project, history)
        for i, sha in enumerate(history):
            if sha in have:
                run = self.store.latest_completed(self.project, sha)
                assert run is not None
                note = "" if i == 0 else f"nearest run is {i} commit(s) before the merge-base on '{base_ref}'"
                return BaselineChoice(run, gate_mod.BASELINE_FOUND, note, base_ref)
        if len(history) >= limit or self.git.shallow:
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

    def review(
        self, ref: str | None = None, *, base: str | None = None, baseline: str | None = None, deciding: bool = False
    ) -> Review:
        """Compare a run with its baseline and evaluate the gate. `deciding` (the gate verb): the
        rules must be committed; a report alone may preview uncommitted ones, and says so."""
        self.guard_store()
        if ref is None:
            self._check_checkout(self.ctx.sha)
        head = self.head_run(ref)
        choice = self.find_baseline(head, base=base, explicit=baseline)
        b = choice.run
        head_series = self.store.series(head.run_id)
        base_series = self.store.series(b.run_id) if b else None
        problems = integrity.link_problems(run=head, series=head_series)
        if b is not None and base_series is not None:
            problems += integrity.link_problems(run=b, series=base_series)
        integrity.require(problems, f"judge commit {head.sha[:8]}")
        try:
            policy, source = self.policy(head.sha) if not head.dirty else (self.cfg, "the work tree")
        except Refused as exc:
            if deciding:
                raise
            policy, source = self.cfg, "the work tree"
            self.warn(f"{exc.message}. This report previews the work tree's rules; `mlops-ci gate` will refuse")
        tracker = self.tracker()
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
        comparison = compare_mod.compare(self.project, head, b, choice.note, self.cfg.metrics, head_series, base_series)
        diff = self.model_diff(policy, head, b) if policy.review.model_diff else None
        metrics, base_metrics, goals = head.metrics, b.metrics if b else None, policy.metrics
        if diff is not None:
            from .model_diff import goal_of

            for name in sorted(set(diff["metrics"]) & set(head.metrics)):
                self.warn(
                    f"the run has its own metric '{name}', named like a model-diff quantity; the gate uses the run's"
                )
            metrics = {**diff["metrics"], **head.metrics}
            base_metrics = {**diff["baseline_metrics"], **b.metrics} if b else None
            goals = {**{r.metric: g for r in policy.gate.rules if (g := goal_of(r.metric))}, **policy.metrics}
        comparison = dataclasses.replace(comparison, model_diff=diff)
        outcome = gate_mod.evaluate(policy.gate, metrics, base_metrics, choice.state, goals)
        if diff is not None and diff["status"] != "ok":
            outcome = self._without_diff(outcome, metrics, diff, choice.state, policy)
        if policy is not self.cfg and policy.gate_digest() != self.cfg.gate_digest():
            self.warn(
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
        from .model_diff import is_diff_metric

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
        from . import model_diff as md

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
                artifact = self.verify_artifact(
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
        self.say(f"model diff: {base.sha[:8]} vs {head.sha[:8]} on channel '{rc.eval_channel}'")
        # inside .git: a pull request cannot bring its own "measurement" along in a commit
        return md.run(sides[0], sides[1], data, rc, Path(self.git.repo.git_dir) / "mlops-ci" / "diffs", data_digest)

    def _entry_of(self, run: Run, fallback: str) -> str:
        """The serving entry point the run was packed with: its commit's config says."""
        try:
            return self.policy(run.sha)[0].serving.entry_point or fallback
        except (Refused, ConfigError, NotFound, GitError):
            return fallback

    def _eval_data(self, raw: str, channel: str) -> tuple[Path, str]:
        """The evaluation channel on this machine, and its digest. An S3 channel is downloaded
        once into the workspace (keyed by its objects' ETags)."""
        if raw.startswith("s3://"):
            from .backends.sagemaker import download_prefix

            return download_prefix(self.aws(), raw, self.home / "eval-data")
        p = Path(raw)
        src = p if p.is_absolute() else self.root / p
        if not src.exists():
            raise ConfigError(f"training.channels.{channel}: '{raw}' does not exist here; check out the data")
        return src, sha256_tree(src)

    def _from_tracker(self, tracker: Tracker, run: Run) -> tuple[Run, bool]:
        """The run with its Comet link and the parameters its script logged besides its
        hyperparameters, and whether its own experiment is in Comet. Its metrics, curves and
        hyperparameters stay the ones recorded at training: what the experiment says now only
        differs if someone logged to it since, and that is said, not used."""
        found = tracker.numbers(run, self.cfg.metrics)
        for note in found.notes:
            self.warn(note)
        for name, now in sorted((found.metrics or {}).items()):
            sealed = run.metrics.get(name)
            if sealed is not None and _differs(now, sealed):
                self.warn(
                    f"Comet's experiment of run {run.run_id} now says {name}={now:g}, but {sealed:g} was recorded "
                    "when it trained: someone logged to it since; the recorded value counts"
                )
        for name, now in sorted((found.params or {}).items()):
            if name in run.params and now != run.params[name]:
                self.warn(
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
            project=self.project,
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
        if self.dry_run:
            self.would("store", "record verdict", run_id=verdict.run_id, passed=verdict.passed,
                       baseline_run_id=verdict.baseline_run_id, gate_digest=verdict.gate_digest,
                       gate_source=verdict.gate_source)  # fmt: skip
            return verdict
        verdict = self._sealed_verdict(verdict, review.policy)
        self.store.record_verdict(verdict)
        return verdict

    # -- promote --------------------------------------------------------------------------
    def promote(self, ref: str | None = None) -> tuple[ModelVersion, bool]:
        self.guard_store()
        run = self.head_run(ref)
        existing = self.store.version_for_sha(self.project, run.sha)
        if existing:  # a promote cut short before registering: finish it, from a record that holds
            self.verify_version(existing)
            self._register_tracked(existing, self.store.get_run(existing.run_id) or run, self._package(existing))
            return existing, False
        verdict = self.check_provenance(run)
        if self.signer(run.sha) is not None and (why := integrity.unsigned_here(self.env)) and not self.dry_run:
            raise Refused(f"gate.signing_key is set and {why}: promote in the release workflow (a tag's job)")
        self.verify_artifact(run.artifact_uri, run.artifact_sha256, what=f"run {run.run_id}")

        def make(version: int) -> ModelVersion:
            assert run.artifact_uri and run.artifact_sha256
            return ModelVersion(
                project=self.project,
                version=version,
                sha=run.sha,
                run_id=run.run_id,
                verdict_id=verdict.verdict_id,
                artifact_uri=run.artifact_uri,
                artifact_sha256=run.artifact_sha256,
                metrics=dict(run.metrics),
                stage="approved",
                created=time.time(),
                run_digest=run.digest,
                verdict_digest=verdict.digest,
            )

        if self.dry_run:
            mv = make(max((v.version for v in self.store.versions(self.project)), default=0) + 1)
            self.would("store", "register model version", version=mv.version, sha=mv.sha,
                       artifact_sha256=mv.artifact_sha256, verdict_id=mv.verdict_id)  # fmt: skip
            self._register_tracked(mv, run, self._package(mv))
            return mv, True
        signer = self.signer(run.sha)

        def sealed(version: int) -> ModelVersion:
            mv = integrity.seal(make(version))
            return dataclasses.replace(mv, signature=signer.sign(mv, self.env)) if signer else mv

        mv, created = self.store.promote(sealed, run.sha, self.project)
        self._register_tracked(mv, run, self._package(mv))
        return mv, created

    def _package(self, mv: ModelVersion) -> str | None:
        """The version's SageMaker model package ARN, registering it first, with that registry."""
        return self.register_package(mv) if self.cfg.registry.kind.impl else None

    def _register_tracked(self, mv: ModelVersion, run: Run, package: str | None = None) -> None:
        """The tracker's model registry, beside the store's (and SageMaker's), never instead of the gate."""
        t = self.cfg.tracking
        comet = self.tracker()
        if comet is None or not t.model_name:
            return
        version = comet.registry_version(mv)
        if not comet.online:
            self.warn(f"{t.model_name} {version} is not registered in Comet: no API key in ${t.api_key_env} (offline)")
            return
        if self.dry_run:
            self.would("comet", "register model version", model=t.model_name, version=version,
                       experiment_key=run.links.get("comet_experiment_key"))  # fmt: skip
            return
        from .errors import MlopsCiError

        try:
            label, created = comet.register(mv, run, package)
        except MlopsCiError as exc:  # the store's version stands; promote again resumes from here
            exc.message = (
                f"{self.project} v{mv.version} is recorded, but Comet's registry does not have it yet: {exc.message}"
                f" (then `mlops-ci promote {mv.sha[:8]}` finishes it)"
            )
            raise
        self.say(f"Comet model registry: {label}" + ("" if created else " (already registered)"))

    def check_registry_statuses(self, *, rollback: bool) -> None:
        """Before a deploy changes anything: the Comet registry statuses it will set exist in the
        workspace (a wrong one refuses the deploy now, rather than a warning after it). Comet is
        beside mlops-ci's registry, never in the way: when it cannot answer, or for a rollback
        (an emergency), a problem is a warning and the rollout goes on."""
        t = self.cfg.tracking
        tracker = self.tracker()
        if tracker is None or not t.model_name:
            return
        from .errors import ConfigError, MlopsCiError

        try:
            problem = tracker.status_problem() if tracker.online else None
        except MlopsCiError as exc:
            self.warn(f"Comet's registry statuses were not checked ({exc.message}); its registry may not follow")
            return
        if problem and not rollback:
            raise ConfigError(problem)
        if problem:
            self.warn(f"{problem}; the rollback goes on, Comet's registry will not follow it")

    def deployed(self, mv: ModelVersion, endpoint: str) -> None:
        """After a successful rollout: the Comet registry version gets the deployed status."""
        t = self.cfg.tracking
        tracker = self.tracker()
        if tracker is None or not t.model_name or not tracker.online:
            return
        from .errors import MlopsCiError

        try:
            demoted = tracker.mark_deployed(mv, endpoint)
            self.say(
                f"Comet model registry: {t.model_name} {mv.version}.0.0 is {t.deployed_status} on {endpoint}"
                + "".join(f"; {v} is {t.retired_status}" for v in demoted)
            )
        except MlopsCiError as exc:
            self.warn(f"the deploy succeeded, but Comet's registry was not updated: {exc.message}")

    def register_package(self, mv: ModelVersion) -> str | None:
        """The version as a model package in the SageMaker registry (idempotent by SHA);
        only ever called behind a passed gate."""
        from .backends.sagemaker import SageMakerRegistry, model_data_uri

        # Whether a package needs a human's approval is policy: the committed config's, like the gate's
        approval = self.policy(mv.sha)[0].registry.approval
        cfg = dataclasses.replace(self.cfg, registry=dataclasses.replace(self.cfg.registry, approval=approval))
        reg = SageMakerRegistry(self.aws(), cfg)
        found = reg.package_for(mv.sha)
        if found is not None:
            self.say(f"model package {found['ModelPackageArn']} ({found.get('ModelApprovalStatus')})")
            return str(found["ModelPackageArn"])
        if self.dry_run:
            data, upload = model_data_uri(self.aws(), mv, None)
            if upload:
                self.would("sagemaker", "s3:PutObject", uri=data, sha256=mv.artifact_sha256)
            group = self.aws().describe("describe_model_package_group", "describe the model package group",
                                        ModelPackageGroupName=reg.group)  # fmt: skip
            if group is None:
                self.would("sagemaker", "CreateModelPackageGroup", request=reg.group_request())
            self.would("sagemaker", "CreateModelPackage", request=reg.package_request(mv, data))
            return None
        path = self.verify_artifact(mv.artifact_uri, mv.artifact_sha256, what=f"{self.project} v{mv.version}")
        data, _ = model_data_uri(self.aws(), mv, path)
        arn, _ = reg.register(mv, data)
        self.say(f"registered model package {arn} ({approval})")
        return arn

    def check_provenance(self, run: Run) -> Verdict:
        """The run's latest verdict, which must have passed under the current gate rules."""
        if run.dirty:
            raise Refused(f"run {run.run_id} was trained from a dirty work tree and can never be promoted")
        verdict = self.store.latest_verdict(run.run_id) or self._planned_verdicts.get(run.run_id)
        if verdict is None:
            raise Refused(
                f"commit {run.sha[:8]} never went through the gate (no verdict for run {run.run_id}); "
                "run `mlops-ci gate` on it first"
            )
        if not verdict.passed:
            failed = "; ".join(
                r.rule + ": " + r.reason for r in verdict.results if not r.passed and r.severity == "fail"
            )
            raise Refused(f"commit {run.sha[:8]} failed the gate ({failed}); fix the model and train again")
        policy, source = self.policy(run.sha)
        if verdict.gate_digest != policy.gate_digest():
            raise Refused(
                f"the verdict for {run.sha[:8]} was made under other gate rules than the ones committed at "
                f"{source}; re-run `mlops-ci gate` on that commit"
            )
        if verdict.verdict_id in {v.verdict_id for v in self._planned_verdicts.values()}:
            return verdict  # a dry run's planned copy: never stored, so nothing to verify yet
        baseline = self.store.get_run(verdict.baseline_run_id) if verdict.baseline_run_id else None
        problems = integrity.link_problems(run=run, verdict=verdict, baseline=baseline)
        signer = self.signer(run.sha)
        if signer and not problems and (bad := signer.check(verdict, self.env)):
            problems.append(bad)
        integrity.require(problems, f"use the verdict on commit {run.sha[:8]}")
        return verdict

    def verify_version(self, mv: ModelVersion) -> None:
        """The whole chain behind a model version, before it is deployed: its seal and signature,
        its verdict's, its run's, and the links between them (exit 14 naming the first broken one)."""
        run = self.store.get_run(mv.run_id)
        verdict = self.store.get_verdict(mv.verdict_id)
        problems = integrity.link_problems(version=mv, verdict=verdict, run=run)
        if run is None or verdict is None:
            missing = f"run {mv.run_id}" if run is None else f"verdict {mv.verdict_id}"
            problems.append(f"{integrity.describe(mv)} rests on {missing}, which is not in the store")
        signer = self.signer(mv.sha)
        if signer and not problems:
            problems += [p for r in (verdict, mv) if r is not None and (p := signer.check(r, self.env))]
        integrity.require(problems, f"deploy {integrity.describe(mv)}")

    # -- policy: the committed rules that decide promotion ---------------------------------
    def policy(self, sha: str) -> tuple[Config, str]:
        """The config whose gate rules decide for `sha`, and where it came from: the one committed
        at `sha` or, under Actions on a pull request, the base branch's, so a PR cannot loosen its
        own gate. Never the work tree: an uncommitted edit must not decide what gets promoted."""
        src = sha
        if self.env.get("GITHUB_ACTIONS") == "true" and self.ctx.pr_number is not None and self.ctx.base_ref:
            base = self.ctx.base_ref
            for cand in (f"origin/{base}", base):
                try:
                    src = self.git.resolve(cand)
                    break
                except NotFound:
                    continue
            else:
                raise GitError(
                    f"the gate rules of a pull request come from its base branch '{base}', which is not in this "
                    f"clone; fetch it (actions/checkout with fetch-depth: 0, or git fetch origin {base})"
                )
        if src in self._policies:
            return self._policies[src]
        rel = self.config_path_in_repo()
        try:
            text = self.git.show_file(src, rel)
        except (GitError, NotFound):
            raise Refused(
                f"{rel} is not committed at {src[:8]}: the gate rules that decide promotion come from a commit, "
                "never from uncommitted files; commit it"
            ) from None
        where = f"{src[:8]}:{rel}"
        found = (config_mod.parse(text, where, self.cfg.root), where)
        self._policies[src] = found
        return found

    def signer(self, sha: str) -> integrity.Signer | None:
        """The KMS signer of the committed policy's gate.signing_key, or None when unsigned."""
        key = self.policy(sha)[0].gate.signing_key
        if not key:
            return None
        if key not in self._signers:
            aws = self.aws()
            self._signers[key] = integrity.Signer(key, aws.client("kms"), aws.errors, aws.error)
        return self._signers[key]

    def signature_problem(self, record: Verdict | ModelVersion) -> str | None:
        """For `store check`: why the record's signature fails under its commit's policy, if signed."""
        from .errors import MlopsCiError

        try:
            signer = self.signer(record.sha)
        except MlopsCiError as exc:
            return f"{integrity.describe(record)}: its signature cannot be checked: {exc.message}"
        return signer.check(record, self.env) if signer else None

    def _sealed_verdict(self, verdict: Verdict, policy: Config) -> Verdict:
        verdict = integrity.seal(verdict)
        if not policy.gate.signing_key or self.dry_run:
            return verdict
        if why := integrity.unsigned_here(self.env):
            self.say(f"verdict for {verdict.sha[:8]} recorded unsigned: {why}; the release job gates the tag again")
            return verdict
        signer = self.signer(verdict.sha)
        assert signer is not None
        return dataclasses.replace(verdict, signature=signer.sign(verdict, self.env))

    def verify_artifact(self, uri: str | None, digest: str | None, *, what: str) -> Path:
        if not uri or not digest:
            raise Refused(f"{what} has no artifact record; nothing can be promoted or deployed from it")
        path = self.store.fetch_artifact(uri, self.home / "artifacts" / "cache")
        if not path.is_file():
            raise Refused(f"the artifact of {what} is missing ({path}); train again")
        actual = sha256_file(path)
        if actual != digest:
            raise Refused(
                f"artifact digest mismatch for {what}: recorded sha256 {digest[:16]}…, file has "
                f"{actual[:16]}…; the artifact was modified after training — refusing to use it"
            )
        return path

    def models(self) -> list[ModelVersion]:
        return self.store.versions(self.project)

    # -- deploy / operate ------------------------------------------------------------------
    def endpoint_for_tag(self, tag: str) -> str:
        for ep in self.cfg.endpoints:
            if any(fnmatch.fnmatchcase(tag, pat) for pat in ep.tags):
                return ep.name
        raise ConfigError(
            f"tag '{tag}' matches no endpoint's `tags` patterns in {self.cfg.file}; pass --endpoint or add a pattern"
        )

    def model_registry(self) -> ModelRegistry | None:
        """The registry beside the store's versions (registry.backend); None: the store only."""
        kind = self.cfg.registry.kind
        if not kind.impl:
            return None
        return kind.load().from_context(self.backend_context())  # type: ignore[attr-defined, no-any-return]

    def aws(self) -> Any:
        """The boto3 session for SageMaker (created once)."""
        if self._aws is None:
            from .backends.sagemaker import Aws

            self._aws = Aws(self.cfg.aws, self.env)
        return self._aws

    def endpoints(self) -> Any:
        from .backends.local_endpoints import LocalEndpoints

        return LocalEndpoints(self, recorder=self._deployment_recorder())

    # -- GitHub ---------------------------------------------------------------------------
    def github(self) -> Any:
        from .backends.github import GitHubClient, GitHubSettings, RetryPolicy

        return GitHubClient(GitHubSettings.from_env(self.env, self.token), retry=RetryPolicy(say=self.say))

    def config_path_in_repo(self) -> str:
        path = Path(self.cfg.root) / Path(self.cfg.file).name
        try:
            return path.resolve().relative_to(self.git.root.resolve()).as_posix()
        except ValueError:
            return Path(self.cfg.file).name

    def post_report(self, markdown: str, pr: int | None) -> Any:
        """Upsert the sticky PR comment. A token that may not comment (fork PRs get a read-only
        token) degrades to a warning: the report is still in the step summary."""
        from .errors import BadCredentials, PermissionDenied, UsageError
        from .report import marker

        number = pr or self.ctx.pr_number
        if number is None:
            raise UsageError("--post needs a pull request: run on a pull_request event or pass --pr NUMBER")
        try:
            if self.dry_run:
                for req in self.github().plan_comment(number, markdown, marker(self.project)):
                    self.would("github", "request", **req)
                return None
            return self.github().upsert_comment(number, markdown, marker(self.project))
        except BadCredentials:
            raise
        except PermissionDenied as exc:
            self.warn(f"{exc.message}. The report was not posted; it is in the job's step summary instead.")
            return None

    def publish_verdict(self, verdict: Verdict) -> str | None:
        """The gate as a check run named after the project (or a commit status as fallback)."""
        from .errors import BadCredentials, PermissionDenied
        from .report import check_name, render_check

        title, summary = render_check(self.project, verdict)
        if not verdict.results:
            conclusion = "neutral"
        else:
            conclusion = "success" if verdict.passed else "failure"
        path = self.config_path_in_repo()
        annotations = [
            {
                "path": path, "start_line": r.line, "end_line": r.line,
                "annotation_level": "failure" if r.severity == "fail" else "warning",
                "title": f"gate rule failed: {r.rule}"[:255], "message": r.reason[:1000],
            }
            for r in verdict.results
            if not r.passed and not r.skipped and r.line
        ]  # fmt: skip
        try:
            client = self.github()
            check = (verdict.sha, check_name(self.project), conclusion, title, summary, annotations,
                     client.settings.run_url)  # fmt: skip
            if self.dry_run:
                for req in client.plan_check(*check):
                    self.would("github", "request", **req)
                return None
            return str(client.publish_check(*check))
        except BadCredentials:
            raise
        except PermissionDenied as exc:
            self.warn(f"{exc.message}. The verdict was not published to GitHub.")
            return None

    def _deployment_recorder(self) -> Any:
        if self.env.get("GITHUB_ACTIONS") != "true" or not self.env.get("GITHUB_REPOSITORY"):
            return None
        from .backends.github import GitHubDeploymentRecorder
        from .errors import MlopsCiError

        try:
            return GitHubDeploymentRecorder(self.github(), self.warn)
        except MlopsCiError as exc:
            self.warn(f"no GitHub deployment record: {exc.message}")
            return None


def open_store(url: str, root: Path, project: str, env: Mapping[str, str] | None = None) -> Store:
    """`sqlite:///path` (relative to the config's directory), `git[+REMOTE][#refs/NAMESPACE]` (the
    refs of the repository that holds `root`) or `s3://bucket/prefix?sse=...`."""
    if url.startswith("s3://"):
        from .backends.s3_store import S3Location, S3Store

        return S3Store(S3Location.parse(url), project)
    if is_shared_store(url):
        from .backends.git_store import GitLocation, GitStore, repository_of

        return GitStore(GitLocation.parse(url), project, repository_of(root), env)
    from .backends.sqlite_store import SqliteStore, path_from_url

    return SqliteStore(path_from_url(url, root))


def publish_report_artifact(
    env: Mapping[str, str],
    path: Path,
    *,
    token: str | None,
    pr: int | None,
    expected_head_sha: str | None,
    say: Callable[[str], None] = _quiet,
) -> Any:
    """Second stage of the fork-safe pattern: post a report artifact from an unprivileged run.
    The artifact is validated as data and re-rendered; its PR number must name a PR whose head
    is the commit the run built (passed by the privileged workflow from its own event)."""
    from .artifact import load_report
    from .backends.github import GitHubClient, GitHubSettings, RetryPolicy
    from .errors import UsageError
    from .report import marker, render_markdown

    if not expected_head_sha or not re.fullmatch(r"[0-9a-f]{40}", expected_head_sha):
        raise UsageError(
            "pass the SHA the unprivileged run built: --expect-head-sha or MLOPS_CI_EXPECTED_HEAD_SHA "
            "(in the workflow: github.event.workflow_run.head_sha, through env:)"
        )
    comparison, results, passed, ctx = load_report(path)
    number = pr or ctx["pr"]
    if number is None:
        raise Refused("the report artifact names no pull request; pass --pr")
    if comparison.head.sha != expected_head_sha:
        raise Refused(
            f"the report is about {comparison.head.sha[:8]}, but the run built {expected_head_sha[:8]}; refusing it"
        )
    client = GitHubClient(GitHubSettings.from_env(env, token), retry=RetryPolicy(say=say))
    head = client.pr_head_sha(number)
    if head != expected_head_sha:
        raise Refused(
            f"PR #{number} has head {head[:8]}, not {expected_head_sha[:8]} (the commit the run built); "
            "refusing to post a report to another pull request"
        )
    # the commits link to this repository; the run that made the report is not known here (the
    # artifact's own word on it is not trusted), so there is no workflow-run link
    repo = f"{client.settings.server_url}/{client.settings.repository}"
    md = render_markdown(comparison, results, passed, head_ref=ctx["head_ref"], base_ref=ctx["base_ref"], repo_url=repo)
    return client.upsert_comment(number, md, marker(comparison.project))
