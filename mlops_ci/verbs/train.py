"""`mlops-ci train` and `wait`: train exactly a commit, or reuse the run of the same inputs; and
`head_run`, the run a verb works on."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .. import _untrusted, integrity
from .. import config as config_mod
from .. import gate as gate_mod
from .._files import LinkOutside, files_under, pack_deterministic, sha256_tree
from ..backends import Tracker, TrainingResult, TrainingSpec, owner_label, run_url
from ..ci import detect
from ..errors import Busy, ConfigError, GitError, MlopsCiError, NotFound, Refused, TrainingFailed, UsageError
from ..records import Run, Verdict
from ..tuning import BEST, TRIAL, Trial
from ..workspace import Workspace, differs
from .baseline import find_baseline


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


def train(ws: Workspace, ref: str | None = None, **options: bool) -> tuple[Run | None, bool]:
    return Training(ws).train(ref, **options)


def head_run(ws: Workspace, ref: str | None) -> Run:
    return Training(ws).head_run(ref)


class Training:
    """One training (or its plan) of one commit."""

    def __init__(self, ws: Workspace, trial: Trial | None = None):
        self.ws = ws
        self.trial = trial  # a trial of a search: its values on top of the hyperparameters
        self._left_out: list[str] = []  # source files training.exclude removed from the job's source

    def digest(self) -> str:
        """The training-config digest of this training: a trial's is its search's and its values'."""
        return self.trial.digest if self.trial else self.ws.cfg.training_digest()

    def hyperparameters(self) -> dict[str, Any]:
        return {**self.ws.cfg.training.hyperparameters, **(self.trial.values if self.trial else {})}

    def job_hyperparameters(self) -> dict[str, Any]:
        """What the script is given: a trial also gets `_tuning_objective_metric`, which SageMaker adds
        to every trial of a tuning job and the training toolkit passes on as an argument (it is not
        `sagemaker_`-prefixed): a script that parses its arguments strictly fails here as it would there."""
        t = self.ws.cfg.tuning
        if self.trial is None or t is None:
            return self.hyperparameters()
        return {**self.hyperparameters(), "_tuning_objective_metric": t.metric}

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
        cfg = self.ws.cfg
        self.ws.guard_store()
        sha = self.ws.resolve(ref, what="wait" if attach_only else "train").sha
        dirty = False
        if ref is None and not attach_only and self.ws.git.is_dirty([str(self.ws.root)]):
            if not allow_dirty:
                raise Refused(
                    "the work tree has uncommitted changes; commit them (a run must be reproducible "
                    "from its SHA) or pass --allow-dirty for a throw-away run that can never be promoted"
                )
            dirty = True
        digest = self.digest()
        if not force and not dirty:
            existing = self.ws.store.latest_completed(self.ws.project, sha, digest)
            if existing:
                return existing, True
        remote = cfg.training.kind.remote
        if (no_wait or attach_only) and not remote:
            raise UsageError(
                "--no-wait and `wait` need training.backend: sagemaker (a local run ends with the command)"
            )
        if not remote and self.ws.env.get("MLOPS_CI_REMOTE_ONLY") == "true":
            raise Refused(
                "training.backend is local, which would run the commit's code on this runner, and this job "
                "allows only remote training (MLOPS_CI_REMOTE_ONLY=true, e.g. fork training with cloud "
                "credentials); set training.backend: sagemaker in the base branch's mlops-ci.yaml"
            )
        if ref is None and not attach_only:
            self.check_checkout(sha)
        cancel_superseded = cancel_superseded and remote  # a local run ends with its runner: nothing to stop
        run_id = f"{sha[:8]}-{secrets.token_hex(3)}"
        if self.ws.dry_run:  # resolve everything in a throw-away directory, record nothing
            import tempfile

            with tempfile.TemporaryDirectory(prefix="mlops-ci-dry-run-") as tmp:
                return self._train_plan(sha, dirty, digest, Path(tmp), run_id, force)
        workdir = self.ws.home / "runs" / run_id
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
        lock = f"train-{self.ws.project}-{inputs[:32]}"
        with ExitStack() as held:
            try:
                # the lease outlives the longest training (max_run) plus packing and upload
                longest = cfg.training.max_run + 900
                try:
                    held.enter_context(self.ws.store.lock(lock, owner_label(self.ws.env), 0, ttl=longest))
                except Busy as exc:
                    self.ws.say(f"waiting: {exc.message.split(';')[0]} (same training inputs); its run will be reused")
                    held.enter_context(self.ws.store.lock(lock, owner_label(self.ws.env), longest, ttl=longest))
                existing = self.ws.store.latest_completed(self.ws.project, sha, digest)
                original = None if existing else self.ws.store.latest_by_inputs(self.ws.project, inputs)
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
        cfg = self.ws.cfg
        digest = self.digest()
        remote = cfg.training.kind.remote
        snapshot = workdir / "src"
        try:
            spec = self._spec(project_dir, run_id, sha, digest, dirty, channels, workdir, data)
            if cancel_superseded and self.ws.ctx.branch:
                for job in backend.cancel_superseded(self.ws.project, self.ws.ctx.branch, sha):
                    self.ws.say(f"stopped {job}: superseded by {sha[:8]} on {self.ws.ctx.branch}")
            if attach_only and self.trial is not None and self.trial.job:  # a trial of a SageMaker tuning job
                name = self.trial.job
            elif attach_only:
                jobs = backend.jobs_of(self.ws.project, sha, digest)
                if not jobs:
                    raise NotFound(
                        f"no training job of {sha[:8]} under the current config; start one with `mlops-ci train`"
                    )
                name = jobs[-1]["TrainingJobName"]
            elif remote:
                name = backend.start(spec, workdir, self.ws.project, fresh=force)
            if no_wait:
                self.ws.say(f"training job {name} runs on; `mlops-ci wait {sha[:8]}` records it when it ends")
                shutil.rmtree(workdir, ignore_errors=True)
                return None, False
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)  # nothing is left of a run that never started
            raise
        started = time.time()
        self.ws.say(f"training {self.ws.project} at {sha[:8]} (run {run_id}, backend {backend.name})")
        log = _untrusted.Echo(self.ws.say, self.ws.env)  # the script's output, inert under Actions
        result = backend.wait(name, spec, workdir, log) if remote else backend.run(spec, workdir, log)
        finished = time.time()
        job = name if remote else spec.job_name
        links = {"log": str(result.log_path), **result.links}
        if self.trial is not None:
            links.update(self.trial.links())
        tracker = self.ws.tracker()
        if tracker is not None:
            key = tracker.experiment_key(job)
            links.update(tracker.collect(key, result.output_dir, self.ws.home / "comet"))
            if "comet_archive" in links:
                self.ws.say(f"Comet: offline experiment {links['comet_archive']}; upload it later with "
                         f"`comet upload {links['comet_archive']}` (COMET_API_KEY set)")  # fmt: skip
            if result.exit_code == 0 and result.failure is None:
                self._tracked_numbers(tracker, key, links, result)
        if result.exit_code == 0 and result.failure is None:
            self._warn_missing_metrics(result.metrics)
        base = dict(
            run_id=run_id,
            project=self.ws.project,
            sha=sha,
            branch=self.ws.ctx.branch,
            config_digest=digest,
            backend=backend.name,
            started=started,
            finished=finished,
            params=self.hyperparameters(),
            metrics=result.metrics,
            log_path=str(result.log_path),
            links=links,
            data=data,
            dirty=dirty,
            cost=self._cost(result.cost),
            inputs_digest="" if dirty else inputs,
        )
        monitored = self._monitoring_table(channels) if cfg.monitoring and result.exit_code == 0 else None
        shutil.rmtree(snapshot, ignore_errors=True)
        shutil.rmtree(workdir / "opt_ml" / "input" / "data", ignore_errors=True)
        if result.failure is not None or result.exit_code != 0:
            failure = result.failure or f"exit code {result.exit_code}"
            run = integrity.seal_run(Run(**base, status="failed", failure=failure), result.series)  # type: ignore[arg-type]
            self.ws.store.record_run(run, result.series)
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
            self.ws.store.record_run(run, result.series)
            raise TrainingFailed(
                f"training failed: {failure}; write the file itself into SM_MODEL_DIR, not a link (run {run_id})"
            ) from None
        uri = self.ws.store.put_artifact(artifact, digest_art)
        if monitored is not None:  # what `monitor` compares the live traffic with
            base["links"] = {**links, **self._statistics(monitored, artifact, digest_art, workdir)}
        run = Run(**base, status="completed", artifact_uri=uri, artifact_sha256=digest_art)  # type: ignore[arg-type]
        run = integrity.seal_run(run, result.series)
        self.ws.store.record_run(run, result.series)
        if tracker is not None and tracker.online:
            self._tag_experiment(tracker, run, spec, job)
        return run, False

    def _monitoring_table(self, channels: dict[str, Path]) -> Any:
        """The monitoring channel's table (read while the job's source, which may hold it, is here);
        an error's message instead when it cannot be read."""
        from .. import model_diff as md

        cfg = self.ws.cfg
        mc = cfg.monitoring
        assert mc is not None
        try:
            if cfg.training.kind.remote:
                from ..backends.aws import download_prefix

                data, _ = download_prefix(self.ws.aws(), cfg.training.channels[mc.channel], self.ws.home / "eval-data")
            else:
                data = channels[mc.channel]
            return md.read_eval(data, dataclasses.replace(cfg.review, eval_channel=mc.channel, max_rows=mc.max_rows))
        except (md.ModelFailed, MlopsCiError, OSError, KeyError) as exc:
            return f"the channel '{mc.channel}' cannot be read: {exc}"

    def _statistics(self, table: Any, artifact: Path, sha256: str, workdir: Path) -> dict[str, str]:
        """The baseline statistics of the run (mlops_ci/monitoring.py): the monitoring channel and the
        model's predictions on it, stored by digest; the links that seal them into the run. A model
        or channel that cannot give them is said, and the run has none (`monitor` then refuses)."""
        from .. import model_diff as md
        from .. import monitoring
        from .._files import sha256_file

        cfg = self.ws.cfg
        mc = cfg.monitoring
        assert mc is not None
        rc = dataclasses.replace(cfg.review, eval_channel=mc.channel, max_rows=mc.max_rows)
        try:
            if isinstance(table, str):
                raise md.ModelFailed(table)
            side = md.Side("model", artifact, sha256, cfg.serving.entry_point, cfg.serving.python or sys.executable,
                           dict(cfg.serving.environment))  # fmt: skip
            with tempfile.TemporaryDirectory(prefix="mlops-ci-statistics-") as scratch:
                predictions = md.predict(side, table, rc, Path(scratch))
            stats = monitoring.profile(table.columns, table.rows, predictions)
        except (md.ModelFailed, MlopsCiError, OSError, KeyError) as exc:
            self.ws.warn(f"monitoring: this run has no baseline statistics ({exc}); `monitor` refuses an endpoint "
                         "serving it")  # fmt: skip
            return {}
        stats.update(channel=mc.channel, total_rows=table.total, content_type=rc.content_type)
        path = workdir / "statistics.json"
        path.write_text(json.dumps(stats, sort_keys=True))
        digest = sha256_file(path)
        self.ws.say(f"monitoring: baseline statistics of {len(table.rows)} row(s) of channel '{mc.channel}' "
                    f"and the model's predictions on them")  # fmt: skip
        return {monitoring.STATISTICS: self.ws.store.put_artifact(path, digest), monitoring.STATISTICS_SHA256: digest}

    def _tracked_numbers(self, tracker: Tracker, key: str, links: dict[str, str], result: TrainingResult) -> None:
        """The job's Comet numbers join the ones from its log and metrics.json, read once now and
        sealed with the run: the gate decides on these, never on what the experiment says later.
        The log's value wins for a metric both have: anyone with the project's API key can log to
        the experiment, even while the job runs, but only the job writes its log."""
        from ..errors import MlopsCiError

        try:
            found = tracker.at_training(key, links, self.ws.cfg.metrics, self.hyperparameters())
        except MlopsCiError as exc:
            self.ws.warn(f"the run's Comet numbers could not be read ({exc.message}); it records the ones from its log")
            return
        if found is None:
            self.ws.warn(f"Comet has no experiment {key} for this run; it records the numbers from its log")
            return
        metrics, series = found
        for name in sorted(set(metrics) & set(result.metrics)):
            if differs(metrics[name], result.metrics[name]):
                self.ws.warn(
                    f"Comet's experiment {key} says {name}={metrics[name]:g}, the job's log "
                    f"{result.metrics[name]:g}: the log's value is recorded"
                )
        result.metrics = {**metrics, **result.metrics}
        result.series = {**series, **result.series}

    def _warn_missing_metrics(self, metrics: dict[str, float]) -> None:
        """A metric definition that matched no line of the log, or a gate rule on a metric the run
        does not have, is said now, not found later as a failed gate that looks like a regression."""
        have = ", ".join(sorted(metrics)) or "none"
        for d in self.ws.cfg.training.metric_definitions:
            if d.name not in metrics:
                self.ws.warn(
                    f"training.metric_definitions '{d.name}' matched no line of the log (regex {d.regex!r}) and "
                    f"metrics.json has no '{d.name}'; the run has: {have}"
                )
        from ..diff_metrics import is_diff_metric  # the review measures these, not training

        defined = {d.name for d in self.ws.cfg.training.metric_definitions}
        for name in sorted({r.metric for r in self.ws.cfg.gate.rules} - set(metrics) - defined):
            if is_diff_metric(name) and self.ws.cfg.review.model_diff:
                continue
            self.ws.warn(
                f"gate rule on '{name}': this run has no such metric (it has: {have}); the gate will fail on it"
            )

    def _tag_experiment(self, tracker: Tracker, run: Run, spec: TrainingSpec, job: str) -> None:
        """A script that made its own experiment (no helper) still gets the commit: online,
        mlops-ci adds it afterwards. Never fails the run."""
        from ..errors import MlopsCiError
        from ..tracking import provenance, tags

        env = spec.job_env(job) if spec.job_env else {}
        try:
            tracker.tag(run, provenance(env), tags(env))
        except MlopsCiError as exc:
            self.ws.warn(f"the Comet experiment of run {run.run_id} was not tagged with its commit: {exc.message}")

    def _provenance(self, sha: str, run_id: str, job: str) -> dict[str, str]:
        ctx = self.ws.ctx
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
        remote = self.ws.cfg.training.kind.remote
        offline_dir = "/opt/ml/output/data/comet" if remote else str(workdir / "opt_ml" / "output" / "data" / "comet")

        def digest(d: dict[str, str]) -> str:
            return f"sha256:{d['sha256']}" if "sha256" in d else f"s3-etags-sha256:{d.get('s3_etags_sha256', '?')}"

        others = {f"data_{name}": f"{d.get('uri')} {digest(d)}" for name, d in data.items()}
        if remote:
            from ..settings.sagemaker import SageMakerTraining

            sm = self.ws.cfg.training.sagemaker or SageMakerTraining()
            others["sagemaker_region"] = self.ws.cfg.aws.region or ""
            others["sagemaker_instance"] = f"{sm.instance_count} x {sm.instance_type}"
        name = f"{sha[:8]} · {self.ws.ctx.branch or 'detached'}"

        def env_for(job: str) -> dict[str, str]:
            extra = {**others, "sagemaker_training_job": job} if remote else others
            provenance = self._provenance(sha, run_id, job)
            key = comet.experiment_key(job)
            return dict(comet.job_env(key, provenance, offline_dir, name=name, others=extra, local=not remote))

        return env_for

    def _cost(self, facts: dict[str, Any]) -> dict[str, Any]:
        if not facts:
            return {}
        from ..pricing import estimate

        return estimate(facts, self.ws.cfg.aws.prices)

    def _trainer(self) -> Any:
        return self.ws.make(self.ws.cfg.training.kind)

    def _spec(self, project_dir: Path, run_id: str, sha: str, digest: str, dirty: bool,
              channels: dict[str, Path], workdir: Path, data: dict[str, dict[str, str]]) -> TrainingSpec:  # fmt: skip
        cfg = self.ws.cfg
        tags = {
            "mlops-ci:project": self.ws.project, "mlops-ci:sha": sha, "mlops-ci:branch": self.ws.ctx.branch or "",
            "mlops-ci:repository": self.ws.ctx.repository or "", "mlops-ci:config-digest": digest,
            "mlops-ci:run-url": run_url(self.ws.env) or "", "mlops-ci:dirty": "true" if dirty else "",
        }  # fmt: skip
        tracker = self.ws.tracker()
        return TrainingSpec(
            job_name=f"{self.ws.project}-{run_id}",
            code_dir=project_dir / cfg.training.source_dir,
            entry_point=cfg.training.entry_point,
            hyperparameters=self.job_hyperparameters(),
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
            instance_count=cfg.training.instance_count,
            distribution=cfg.training.distribution,
            channel_settings=dict(cfg.training.channel_settings),
        )

    def _snapshot(self, sha: str, dirty: bool, dest: Path) -> Path:
        """The project directory as of `sha` (the work tree for a dirty run) under `dest`,
        with its entry point checked."""
        cfg = self.ws.cfg
        if dirty:
            shutil.copytree(self.ws.git.root, dest, ignore=shutil.ignore_patterns(".git", ".mlops-ci", "__pycache__"))
        else:
            self.ws.git.extract(sha, dest)
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
        code = project_dir / self.ws.cfg.training.source_dir
        config = (project_dir / Path(self.ws.cfg.file).name).resolve()
        serving = self.ws.cfg.serving
        kept = [p.rstrip("/") for p in ([serving.entry_point] if serving.entry_point else []) + list(serving.include)]
        self._left_out = []
        for f in sorted(code.rglob("*"), reverse=True):
            if not (f.is_file() or f.is_symlink()):
                continue
            rel = f.relative_to(code).as_posix()
            if any(rel == k or rel.startswith(k + "/") for k in kept):
                continue  # packed with the model: never excluded
            is_config = f.resolve() == config
            if is_config or excluded(rel, self.ws.cfg.training.exclude):
                f.unlink()
                if not is_config:
                    self._left_out.append(rel)

    def _prepare(
        self, sha: str, dirty: bool, dest: Path
    ) -> tuple[Path, Any, dict[str, Path], dict[str, dict[str, str]], str]:
        """The job's source under `dest`, the backend, its channels and their records, and the
        digest of what training reads: that source, the channels' digests, the training config."""
        project_dir = self._snapshot(sha, dirty, dest)
        serving = self.ws.cfg.serving
        for rel in ([serving.entry_point] if serving.entry_point else []) + list(serving.include):
            if not (project_dir / self.ws.cfg.training.source_dir / rel).exists():
                # found now, not when the model is packed after the training it would waste
                raise ConfigError(
                    f"{self.ws.cfg.file}: serving file '{rel}' does not exist in the source at {sha[:8]} "
                    f"(under training.source_dir {self.ws.cfg.training.source_dir}); commit it or fix the path"
                )
        backend = self._trainer()
        channels, data = self._channels(project_dir, backend)
        source = sha256_tree(project_dir / self.ws.cfg.training.source_dir)
        inputs = config_mod.digest({"source": source, "channels": data, "training": self.digest()})
        return project_dir, backend, channels, data, inputs

    def _record_reuse(self, original: Run, sha: str, config_digest: str, *, note: str | None = None,
                      links: dict[str, str] | None = None, cost: dict[str, object] | None = None) -> Run:  # fmt: skip
        """`sha` trains exactly what `original` trained: record its run (and its verdict under
        the current gate rules) against `sha`, pointing at the run that really trained."""
        now = time.time()
        root = original.reused_from or original.run_id
        series = self.ws.store.series(original.run_id)
        integrity.require(integrity.link_problems(run=original, series=series), f"reuse run {original.run_id}")
        run = integrity.seal_run(dataclasses.replace(
            original, run_id=f"{sha[:8]}-{secrets.token_hex(3)}", sha=sha, branch=self.ws.ctx.branch,
            config_digest=config_digest, started=now, finished=now, reused_from=root,
            links=self._reuse_links(original) if links is None else links,
            cost=original.cost if cost is None else cost,
        ), series)  # fmt: skip
        verdict = self.ws.store.latest_verdict(original.run_id)
        copy = None
        policy, source = self.ws.policy(sha)
        if (verdict is not None and not integrity.link_problems(run=original, verdict=verdict)
                and verdict.gate_digest == policy.gate_digest() and self._same_baseline(run, verdict)):  # fmt: skip
            copy = self.ws.seal_verdict(dataclasses.replace(
                verdict, verdict_id=uuid.uuid4().hex[:16], run_id=run.run_id, sha=sha, created=now,
                reused_from=verdict.verdict_id, run_digest=run.digest, gate_source=source,
            ), policy)  # fmt: skip
        fx = self.ws.fx
        fx(
            "store",
            "record run (reused)",
            lambda: self.ws.store.record_run(run, series),
            None,
            run_id=f"{sha[:8]}-<random>",
            sha=sha,
            reused_from=root,
        )
        if copy is not None:
            reused = copy
            as_planned: Verdict | None = reused  # what a dry run goes on with; a real run stores it
            planned = fx(
                "store",
                "record verdict (reused)",
                lambda: self.ws.store.record_verdict(reused),
                as_planned,
                reused_from=copy.reused_from,
                passed=copy.passed,
            )
            if planned is not None:  # a dry run: the plan's later steps (promote) see the verdict it would record
                self.ws.planned_verdicts[run.run_id] = planned
        self.ws.say(
            f"{note} {run.run_id}"
            if note
            else f"commit {sha[:8]} has the same training inputs as {original.sha[:8]}: reusing run {root} "
            f"(model sha256 {(original.artifact_sha256 or '')[:12]}), recorded as run {run.run_id}; not training"
        )
        return run

    def _reuse_links(self, original: Run) -> dict[str, str]:
        """A trial that reuses a run (the same trial of an earlier commit, or the commit's run that
        was that trial's best) is this trial: its own number, never a best-trial mark."""
        if self.trial is None:
            return original.links
        return {k: v for k, v in original.links.items() if k not in (BEST, TRIAL)} | self.trial.links()

    def _same_baseline(self, run: Run, verdict: Verdict) -> bool:
        """A verdict is relative to its baseline: it carries over to `run` (same model, other
        commit) only if `run`'s own baseline is that run, or one with the same inputs. A revert
        to an older model is compared with what it reverts, so it is gated afresh."""
        choice = find_baseline(self.ws, run)
        if choice.run is None:
            return verdict.baseline_run_id is None and choice.state == gate_mod.BASELINE_NONE
        if choice.run.run_id == verdict.baseline_run_id:
            return True
        before = self.ws.store.get_run(verdict.baseline_run_id) if verdict.baseline_run_id else None
        return before is not None and bool(before.inputs_digest) and before.inputs_digest == choice.run.inputs_digest

    def _config_matches(self, sha: str) -> bool:
        """The work tree's mlops-ci.yaml is the one committed at `sha`."""
        rel = self.ws.config_path_in_repo()
        try:
            committed: str | None = self.ws.git.show_file(sha, rel)
        except GitError:
            committed = None
        current = (Path(self.ws.cfg.root) / Path(self.ws.cfg.file).name).read_text(encoding="utf-8")
        return committed is not None and committed.rstrip("\n") == current.rstrip("\n")

    def _attach(self, sha: str) -> Run | None:
        """A commit with no run of its own whose training inputs equal an earlier run's (a merge
        or squash commit, a docs-only change) gets that run, without training."""
        import tempfile

        if self.ws.git.is_dirty([str(self.ws.root)]) and sha == self.ws.git.head_sha():
            return None
        if not self._config_matches(sha):
            return None  # its inputs would be computed with another commit's training config
        with tempfile.TemporaryDirectory(prefix="mlops-ci-inputs-") as tmp:
            try:
                inputs = self._prepare(sha, False, Path(tmp) / "src")[4]
            except ConfigError:
                return None  # not trainable as configured: nothing to reuse either
        original = self.ws.store.latest_by_inputs(self.ws.project, inputs)
        return self._record_reuse(original, sha, self.ws.cfg.training_digest()) if original else None

    def check_checkout(self, sha: str) -> None:
        """Under Actions, the config read from the work tree must be the one of the commit whose
        run is recorded (a PR job that checked out the merge ref would mix two commits)."""
        if not detect(self.ws.env).actions:
            return
        head = self.ws.git.head_sha()
        if head == sha:
            return
        if not self._config_matches(sha):
            rel = self.ws.config_path_in_repo()
            raise Refused(
                f"the checkout is at {head[:8]}, but the commit to work on is {sha[:8]} and its {rel} differs; "
                "check out that commit (on pull_request: actions/checkout with "
                "ref: ${{ github.event.pull_request.head.sha }})"
            )

    def _train_plan(
        self, sha: str, dirty: bool, digest: str, workdir: Path, run_id: str, force: bool = False
    ) -> tuple[None, bool]:
        cfg = self.ws.cfg
        project_dir, backend, channels, data, inputs = self._prepare(sha, dirty, workdir / "src")
        if not (dirty or force):
            original = self.ws.store.latest_by_inputs(self.ws.project, inputs)
            if original is not None:
                self._record_reuse(original, sha, digest)
                return None, False
        if cfg.training.kind.remote:
            spec = self._spec(project_dir, run_id, sha, digest, dirty, channels, workdir, data)
            name, exists = backend.next_job(spec, self.ws.project, fresh=force)
            if exists:
                self.ws.would("sagemaker", "attach to training job", job_name=name)
            else:
                _, src_digest = backend.pack_source(spec.code_dir, workdir / "sourcedir.tar.gz")
                uri = backend.source_uri(src_digest)
                if not self.ws.aws().has_object(uri, src_digest):
                    self.ws.would("sagemaker", "s3:PutObject", uri=uri, sha256=src_digest)
                req = backend.request(spec, name, uri)
                if "Environment" in req:  # the plan is printed: secrets stay masked
                    req["Environment"] = config_mod.mask_secrets(req["Environment"])
                self.ws.would("sagemaker", "CreateTrainingJob", request=req)
        else:
            from ..backends.local_training import cmd_args, requirements_digest

            self.ws.would(
                "local", "train", sha=sha, dirty=dirty, config_digest=digest, backend="local",
                job_name=f"{self.ws.project}-{run_id}",
                command=[cfg.training.python or "python", cfg.training.entry_point,
                         *cmd_args(self.job_hyperparameters())],
                channels=data, environment=sorted(cfg.training.environment), max_run=cfg.training.max_run,
                hosts=cfg.training.instance_count,
                launcher=cfg.training.distribution.launcher if cfg.training.distribution else None,
                channel_settings={k: dataclasses.asdict(v) for k, v in sorted(cfg.training.channel_settings.items())},
                requirements=requirements_digest(project_dir / cfg.training.source_dir,
                                                 cfg.training.python or sys.executable),
            )  # fmt: skip
        self.ws.would("store", "put artifact", key="artifacts/<sha256 of model.tar.gz>", store=cfg.store)
        self.ws.would("store", "record run", run_id=f"{sha[:8]}-<random>", sha=sha, store=cfg.store)
        return None, False

    def _source_rel(self) -> Path:
        try:
            return self.ws.root.resolve().relative_to(self.ws.git.root.resolve())
        except ValueError:
            return Path()

    def _channels(self, project_dir: Path, backend: Any) -> tuple[dict[str, Path], dict[str, dict[str, str]]]:
        if self.ws.cfg.training.kind.remote:
            return {}, backend.channel_data(self.ws.cfg.training.channels)
        channels: dict[str, Path] = {}
        data: dict[str, dict[str, str]] = {}
        for name, raw in self.ws.cfg.training.channels.items():
            p = Path(raw)
            where = f"{self.ws.cfg.file}: training.channels.{name}: '{raw}'"
            if p.is_absolute():
                src, source = p, "host"
                if any(p.resolve().is_relative_to(d) for d in _SYSTEM_DIRS):
                    raise ConfigError(f"{where} is a system directory, not data; point it at a dataset")
            else:
                committed = (project_dir / p).exists()
                src, base = (project_dir / p, project_dir) if committed else (self.ws.root / p, self.ws.root)
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
        serving = self.ws.cfg.serving
        wanted = ([serving.entry_point] if serving.entry_point else []) + list(serving.include)
        for rel in wanted:
            src = code_dir / rel
            if src.is_dir():
                try:
                    entries += files_under(src, f"code/{rel.rstrip('/')}/")
                except LinkOutside as err:
                    raise Refused(f"{self.ws.cfg.file}: serving file '{rel}': {err}; commit the file itself") from None
            elif src.is_file():
                entries.append((f"code/{rel}", src))
            else:
                raise ConfigError(
                    f"{self.ws.cfg.file}: serving file '{rel}' does not exist in the source at this commit"
                )
        if not entries:
            self.ws.say("warning: the training script wrote nothing to SM_MODEL_DIR; the artifact is empty")
        tmp = self.ws.home / "artifacts" / f".{run_id}.tar.gz"
        digest = pack_deterministic(entries, tmp)
        dest = self.ws.home / "artifacts" / digest[:2] / f"{digest}.tar.gz"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        return dest, digest

    def head_run(self, ref: str | None) -> Run:
        """The run a verb works on: the run a run id names, or the newest completed run of the
        commit any other reference names (preferring one under the current training config)."""
        target = self.ws.resolve(ref)
        if target.run is not None:
            return target.run
        sha = target.sha
        run = self.ws.commit_run(sha, self.ws.cfg.training_digest())
        run = run or self.ws.commit_run(sha) or self._attach(sha)
        if run is None:
            failed = [r for r in self.ws.store.runs(self.ws.project, sha=sha, limit=1) if r.status == "failed"]
            why = f"its last run {failed[0].run_id} failed" if failed else "it has no completed run"
            raise NotFound(f"commit {sha[:8]} cannot be used: {why}; train it first (`mlops-ci train {sha[:8]}`)")
        return run
