"""The workspace: one project's config, git, store and chosen backends, and the checks every
verb shares (the committed policy, provenance, integrity). The verbs themselves are modules in
mlops_ci/verbs/ (docs/architecture.md).
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import config as config_mod
from . import integrity, refs
from .backends import Context, Effects, ModelRegistry, Store, Tracker, fetch_checked
from .ci import detect
from .config import Config, is_shared_store
from .context import Git, GitContext, load_context
from .errors import ConfigError, GitError, NotFound, Refused
from .kinds import Kind
from .records import ModelVersion, Run, Verdict
from .refs import COMMITS, RefKind, Target
from .tuning import TRIAL


def differs(a: float, b: float) -> bool:
    """Two readings of one metric that are not the same number (float noise aside)."""
    return not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def quiet(_: str) -> None:
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
        say: Callable[[str], None] = quiet,
        warn: Callable[[str], None] | None = None,
        token: str | None = None,
        dry_run: bool = False,
    ):
        self.dry_run = dry_run
        self.plan: list[dict[str, Any]] = []  # what a --dry-run would have done, in order
        self.fx = Effects(dry_run, self.would)  # every write of a verb: performed, or planned
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
        self.planned_verdicts: dict[str, Verdict] = {}  # a dry run's reused verdicts, by run id
        self._policies: dict[str, tuple[Config, str]] = {}  # committed configs, by commit
        self._signers: dict[str, integrity.Signer] = {}

    def commit_run(self, sha: str, digest: str | None = None) -> Run | None:
        """The newest completed run of `sha` (under the training-config `digest` if given) that is
        not one trial of a search (verbs/tune.py): a search that found no best trial leaves its
        commit without a run, and a trial is never a commit's run or a baseline."""
        run = self.store.latest_completed(self.project, sha, digest)
        if run is None or TRIAL not in run.links:
            return run
        for r in self.store.runs(self.project, sha=sha, limit=10_000):
            if r.status == "completed" and TRIAL not in r.links and digest in (None, r.config_digest):
                return r
        return None

    def worker(self, say: Callable[[str], None] | None = None) -> Workspace:
        """A workspace for another thread: the same configuration and context, its own store
        connection and git; close it when done."""
        other = copy.copy(self)
        other.say = say or self.say
        other.warn = lambda msg: other.say(f"warning: {msg}")
        other.git = Git(self.root)
        other._store = None
        other._aws = None
        other._tracker = None
        other._ctx = self._ctx
        other._policies = {}
        other._signers = {}
        other.planned_verdicts = {}
        other.fx = Effects(self.dry_run, other.would)
        return other

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
        job = detect(self.env)
        if job.actions and self.env.get(allow) != "true":
            kind = job.runner_environment  # github-hosted or self-hosted, on GitHub
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
    def resolve(self, ref: str | None, accept: frozenset[RefKind] = COMMITS, *, what: str = "this command") -> Target:
        """What a user's reference names (mlops_ci/refs.py): a run id, SHA, tag, branch, … or
        None for HEAD (the PR head under Actions); `accept` is what the command takes."""
        return refs.resolve(self, ref, accept, what=what)

    def resolve_sha(self, ref: str | None) -> str:
        """The commit a reference names (any kind `resolve` accepts by default)."""
        return self.resolve(ref).sha

    def make(self, kind: Kind) -> Any:
        """The implementation of a table entry (mlops_ci/kinds.py), made for this workspace."""
        ctx = Context(cfg=self.cfg, env=self.env, home=self.home, say=self.say, aws=self.aws)
        return kind.load().from_context(ctx)  # type: ignore[attr-defined]

    def tracker(self) -> Tracker | None:
        """The configured tracker (tracking.backend), made once; None: the store's records only."""
        kind = self.cfg.tracking.kind
        if self._tracker is None and kind.impl:
            self._tracker = self.make(kind)
        return self._tracker

    def check_provenance(self, run: Run) -> Verdict:
        """The run's latest verdict, which must have passed under the current gate rules."""
        if run.dirty:
            raise Refused(f"run {run.run_id} was trained from a dirty work tree and can never be promoted")
        verdict = self.store.latest_verdict(run.run_id) or self.planned_verdicts.get(run.run_id)
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
        if verdict.verdict_id in {v.verdict_id for v in self.planned_verdicts.values()}:
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
        if detect(self.env).actions and self.ctx.pr_number is not None and self.ctx.base_ref:
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

    def seal_verdict(self, verdict: Verdict, policy: Config) -> Verdict:
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
        got = fetch_checked(self.store, uri, self.home / "artifacts" / "cache")
        if got.actual is None:
            raise Refused(f"the artifact of {what} is missing ({got.path}); train again")
        if not got.matches(digest):
            raise Refused(
                f"artifact digest mismatch for {what}: recorded sha256 {digest[:16]}…, file has "
                f"{got.actual[:16]}…; the artifact was modified after training — refusing to use it"
            )
        return got.path

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
        return self.make(kind)  # type: ignore[no-any-return]

    def aws(self) -> Any:
        """The boto3 session for SageMaker (created once)."""
        if self._aws is None:
            from .backends.aws import Aws

            self._aws = Aws(self.cfg.aws, self.env)
        return self._aws

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

    def deployment_recorder(self) -> Any:
        job = detect(self.env)
        if not job.actions or not job.repository:
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
