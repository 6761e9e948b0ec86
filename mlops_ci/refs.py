"""What a reference names: one resolver for every command that takes one (`train`, `wait`,
`runs show`, `report`, `gate`, `promote`, `report --baseline`, `deploy`, `lineage`).

A reference is what a user types for "that commit": a run id (or a unique prefix of one), a
commit SHA (or a unique prefix), a tag, a branch, any git revision (`HEAD~1`), and for
`lineage` also a model version (`v3`, `3`) or an endpoint. `resolve` says which one it is, as a
`Target`, with the commit and, when known, the run, the model version, the tag. A command names
the kinds it accepts; anything else is a one-line error that says what the reference is and
what to pass instead. Git itself is asked through `context.Git`, the git primitive.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ._untrusted import inline
from .errors import NotFound, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from .backends import Store
    from .config import Config
    from .context import Git, GitContext
    from .records import ModelVersion, Run


class RefKind(enum.Enum):
    """What a reference named."""

    HEAD = "HEAD"  # no reference given: the commit the job works on (the PR head under Actions)
    RUN = "run id"
    COMMIT = "commit SHA"  # a SHA, a unique prefix of one, or a git revision such as HEAD~1
    BRANCH = "branch"
    TAG = "tag"
    VERSION = "model version"
    ENDPOINT = "endpoint"


# Every command that takes a reference accepts these; `lineage` also the model's names.
COMMITS = frozenset({RefKind.HEAD, RefKind.RUN, RefKind.COMMIT, RefKind.BRANCH, RefKind.TAG})
ANYTHING = COMMITS | {RefKind.VERSION, RefKind.ENDPOINT}
_ORDER = (RefKind.COMMIT, RefKind.BRANCH, RefKind.TAG, RefKind.RUN, RefKind.VERSION, RefKind.ENDPOINT)

RUN_PREFIX_MIN = 4  # as git's shortest SHA prefix: `deploy 3` must not pick whichever run starts with 3
MAX_LENGTH = 256
_NEVER_IN_A_REF = ":?*[\\"  # git refuses them in ref names; in a revision they name a path or search messages


@dataclass(frozen=True)
class Target:
    """A resolved reference: what it is (`kind`), its commit, and what else is known of it."""

    ref: str | None  # as given; None: HEAD
    kind: RefKind
    sha: str
    tag: str | None = None  # the tag named (TAG), or HEAD's tag
    branch: str | None = None  # the branch named (BRANCH), or HEAD's branch
    run: Run | None = None  # the run named (RUN), or the one a model version was promoted from
    version: ModelVersion | None = None  # the model version named (VERSION) or served (ENDPOINT)
    endpoint: str | None = None  # the endpoint named (ENDPOINT)


class Sources(Protocol):
    """What resolution reads (a `Workspace`)."""

    @property
    def git(self) -> Git: ...
    @property
    def store(self) -> Store: ...
    @property
    def ctx(self) -> GitContext: ...
    @property
    def cfg(self) -> Config: ...
    @property
    def project(self) -> str: ...


def shown(ref: str) -> str:
    """`ref` as an error message quotes it: one line, and short."""
    text = inline(ref)
    return text if len(text) <= 60 else text[:57] + "..."


def _kinds(accept: frozenset[RefKind]) -> str:
    names = [k.value for k in _ORDER if k in accept]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def check_syntax(ref: str) -> None:
    """Refuse what can be no reference at all before git or the store sees it: an option, a
    line break or control character, a character git never allows in a ref name."""
    why = None
    if not ref:
        why = "it is empty"
    elif ref.startswith("-"):
        why = "it starts with '-', as an option does; put options before it"
    elif bad := [c for c in ref if c.isspace() or unicodedata.category(c)[0] in "CZ"]:
        why = f"it contains U+{ord(bad[0]):04X} (a space, line break or control character)"
    elif bad := [c for c in ref if c in _NEVER_IN_A_REF]:
        why = f"git never allows '{bad[0]}' in a ref"
    elif ".." in ref:
        why = "'..' is a range of commits, not one"
    elif len(ref) > MAX_LENGTH:
        why = f"it is longer than {MAX_LENGTH} characters"
    if why:
        raise UsageError(f"'{shown(ref)}' is not a git ref: {why}; pass a run id, commit SHA, tag or branch")


def resolve(
    ws: Sources, ref: str | None, accept: frozenset[RefKind] = COMMITS, *, what: str = "this command"
) -> Target:
    """What `ref` names, among the kinds `accept`ed (`what` names the command or option in errors).

    Tried in order: a run id; an endpoint (if accepted); a tag; a model version `vN`/`N` (if
    accepted, and no tag has that name); a git revision (a branch, a SHA or a unique prefix of
    one, `HEAD~1`); a unique prefix of a run id (4 characters or more). A reference that names
    something not accepted, an ambiguous SHA prefix (exit 2) or nothing (exit 4) is an error
    naming it and what to pass instead."""
    if ref is None:
        if RefKind.HEAD not in accept:
            raise UsageError(f"{what} needs a reference: a {_kinds(accept)}")
        ctx = ws.ctx
        return Target(None, RefKind.HEAD, ctx.sha, tag=ctx.tag, branch=ctx.branch)
    check_syntax(ref)
    return _Resolution(ws, ref, accept, what).target()


class _Resolution:
    def __init__(self, ws: Sources, ref: str, accept: frozenset[RefKind], what: str):
        self.ws, self.ref, self.accept, self.what = ws, ref, accept, what
        self._tags: dict[str, str] | None = None

    def target(self) -> Target:
        steps: list[tuple[frozenset[RefKind], Callable[[], Target | None]]] = [
            (frozenset({RefKind.RUN}), self.run),
            (frozenset({RefKind.ENDPOINT}), self.endpoint),
            (frozenset({RefKind.TAG}), self.tag),
            (frozenset({RefKind.VERSION}), self.version),
            (frozenset({RefKind.COMMIT, RefKind.BRANCH}), self.revision),
            (frozenset({RefKind.RUN}), self.run_prefix),
        ]
        for kinds, step in steps:
            if kinds & self.accept and (found := step()) is not None and found.kind in self.accept:
                return found
        self.refuse_other_kinds()
        self.refuse_ambiguous()
        hint = " (the clone may be shallow: fetch with fetch-depth: 0)" if self.ws.git.shallow else ""
        lists = ["`git log`", "`git tag`", "`mlops-ci runs`"]
        lists += ["`mlops-ci models`", "`mlops-ci endpoints`"] if RefKind.VERSION in self.accept else []
        raise NotFound(
            f"'{shown(self.ref)}' does not name a {_kinds(self.accept)} in this repository{hint}; "
            f"{', '.join(lists[:-1])} and {lists[-1]} list them"
        )

    # -- the kinds, in order ----------------------------------------------------------------
    def run(self) -> Target | None:
        run = self.ws.store.get_run(self.ref)
        return None if run is None else self._of_run(run)

    def _of_run(self, run: Run) -> Target:
        if run.project != self.ws.project:
            raise NotFound(f"run {run.run_id} belongs to project '{run.project}', not '{self.ws.project}'")
        return Target(self.ref, RefKind.RUN, run.sha, run=run)

    def endpoint(self) -> Target | None:
        ws = self.ws
        names = {e.name for e in ws.cfg.endpoints} | {s.name for s in ws.store.endpoint_states(ws.project)}
        if self.ref not in names:
            return None
        state = ws.store.endpoint_state(ws.project, self.ref)
        if state is None or state.version is None:
            raise NotFound(f"endpoint {self.ref} has never had a version deployed")
        mv = ws.store.get_version(ws.project, state.version)
        if mv is None:
            raise NotFound(f"endpoint {self.ref} serves v{state.version}, which is not in the registry")
        run = ws.store.get_run(mv.run_id)
        return Target(self.ref, RefKind.ENDPOINT, mv.sha, run=run, version=mv, endpoint=self.ref)

    def tags(self) -> dict[str, str]:
        if self._tags is None:
            self._tags = self.ws.git.tags()
        return self._tags

    def tag(self) -> Target | None:
        name = self.ref.removeprefix("refs/tags/")
        if name not in self.tags():
            return None
        return Target(self.ref, RefKind.TAG, self.ws.git.resolve(f"refs/tags/{name}"), tag=name)

    def version(self) -> Target | None:
        m = re.fullmatch(r"v?(\d+)", self.ref)
        if not m or len(m.group(1)) > 9:  # no registry has a billion versions; a long number is a SHA prefix
            return None
        mv = self.ws.store.get_version(self.ws.project, int(m.group(1)))
        if mv is None:
            return None
        return Target(self.ref, RefKind.VERSION, mv.sha, run=self.ws.store.get_run(mv.run_id), version=mv)

    def revision(self) -> Target | None:
        git = self.ws.git
        try:
            sha = git.resolve(self.ref)
        except NotFound:
            return None
        name = self.ref.removeprefix("refs/heads/").removeprefix("refs/remotes/")
        if git.is_branch(name):
            return Target(self.ref, RefKind.BRANCH, sha, branch=name)
        return Target(self.ref, RefKind.COMMIT, sha)

    def _run_prefixes(self) -> list[Run]:
        if len(self.ref) < RUN_PREFIX_MIN:
            return []
        return [r for r in self.ws.store.runs_by_prefix(self.ref) if r.project == self.ws.project]

    def run_prefix(self) -> Target | None:
        runs = self._run_prefixes()
        return self._of_run(runs[0]) if len(runs) == 1 else None

    # -- why not ----------------------------------------------------------------------------
    def refuse_other_kinds(self) -> None:
        """A name of something this command does not take: say what it is and what to pass."""
        takes = f"{self.what} takes a {_kinds(self.accept)}"
        other = None
        if RefKind.ENDPOINT not in self.accept:
            other = self.endpoint_or_none()
        if other is None and RefKind.VERSION not in self.accept:
            other = self.version()
        if other is not None and other.kind is RefKind.ENDPOINT:
            raise UsageError(
                f"'{shown(self.ref)}' is an endpoint, and {takes}; pass the tag or SHA it serves "
                f"(`mlops-ci lineage {self.ref}` shows them)"
            )
        if other is not None and other.version is not None:
            raise UsageError(
                f"'{shown(self.ref)}' is model version {other.version.version}, and {takes}; pass its commit: "
                f"{other.sha[:12]}"
            )

    def endpoint_or_none(self) -> Target | None:
        try:
            return self.endpoint()
        except NotFound:  # an endpoint with nothing deployed is still an endpoint
            return Target(self.ref, RefKind.ENDPOINT, "", endpoint=self.ref)

    def refuse_ambiguous(self) -> None:
        commits = self.ws.git.commits_with_prefix(self.ref) if self.accept & {RefKind.COMMIT} else []
        runs = self._run_prefixes() if RefKind.RUN in self.accept else []
        if len(commits) > 1:
            listed = ", ".join(c[:12] for c in commits[:5])
            raise UsageError(f"'{shown(self.ref)}' is ambiguous: the SHAs of {len(commits)} commits start with it "
                             f"({listed}); give more of the SHA")  # fmt: skip
        if len(runs) > 1:
            listed = ", ".join(sorted(r.run_id for r in runs))
            raise UsageError(f"'{shown(self.ref)}' is ambiguous: it starts run ids {listed}; give the whole run id")
