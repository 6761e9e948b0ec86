"""Git context: which commit, branch, tag, PR and base ref a command works on.

Read from GitPython plus the GitHub Actions environment (injected as a Mapping so tests and
callers control it). GitPython is imported lazily: `mlops-ci --version` must not pay for it.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .ci import detect
from .errors import GitError, NotFound, Refused

if TYPE_CHECKING:  # pragma: no cover
    import git


@dataclass(frozen=True)
class GitContext:
    root: str
    sha: str
    branch: str | None
    tag: str | None
    pr_number: int | None
    base_ref: str | None
    dirty: bool
    repository: str | None
    event_name: str | None
    shallow: bool


def _event(env: Mapping[str, str]) -> dict[str, Any]:
    path = detect(env).event_path
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class Git:
    """The few git operations mlops-ci needs, with errors a user can act on."""

    def __init__(self, start: Path):
        import git  # lazy: heavy-ish import

        try:
            self.repo: git.Repo = git.Repo(start, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise GitError(
                f"{start} is not inside a git repository; run mlops-ci from your model's repository "
                "(or `git init` it first)"
            ) from None
        if self.repo.bare or self.repo.working_tree_dir is None:
            raise GitError("mlops-ci needs a git work tree, not a bare repository")
        self.root = Path(self.repo.working_tree_dir)

    def close(self) -> None:
        # GitPython keeps `git cat-file` helper processes (and their pipes) per Repo.
        self.repo.close()

    def _git(self, *args: str) -> str:
        import git

        try:
            return str(self.repo.git.execute(["git", *args]))
        except git.GitCommandError as exc:
            raise GitError(f"git {' '.join(args)} failed: {str(exc.stderr).strip() or exc}") from None

    @property
    def shallow(self) -> bool:
        return (Path(self.repo.git_dir) / "shallow").exists()

    def has_commits(self) -> bool:
        try:
            self.repo.head.commit  # noqa: B018
        except ValueError:
            return False
        return True

    def resolve(self, ref: str) -> str:
        """A branch, tag, SHA (or prefix) → full commit SHA."""
        import git

        if ref.startswith("-"):
            raise NotFound(f"'{ref}' is not a git ref")
        try:
            return str(self.repo.git.rev_parse("--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"))
        except git.GitCommandError:
            pass
        hint = " (the clone may be shallow: fetch with fetch-depth: 0)" if self.shallow else ""
        raise NotFound(f"git ref '{ref}' does not name a commit in this repository{hint}")

    def is_branch(self, name: str) -> bool:
        """`name` is a local branch (`main`) or a remote-tracking one (`origin/main`)."""
        wanted = (f"refs/heads/{name}", f"refs/remotes/{name}")
        out = self._git_ok("for-each-ref", "--format=%(refname)", *wanted)
        return any(line in wanted for line in out.splitlines())

    def commits_with_prefix(self, prefix: str) -> list[str]:
        """Every commit whose SHA starts with `prefix` (4+ hex digits): more than one is why git
        refuses the prefix as ambiguous."""
        if not (4 <= len(prefix) <= 40 and all(c in "0123456789abcdefABCDEF" for c in prefix)):
            return []
        found = self._git_ok("rev-parse", f"--disambiguate={prefix.lower()}").split()[:20]
        return sorted(oid for oid in found if self._git_ok("cat-file", "-t", oid).strip() == "commit")

    def head_sha(self) -> str:
        if not self.has_commits():
            raise GitError("the repository has no commits yet; commit your model code first")
        return self.repo.head.commit.hexsha

    def branch(self) -> str | None:
        if self.repo.head.is_detached:
            return None
        return self.repo.active_branch.name

    def tags_at(self, sha: str) -> list[str]:
        out = self._git("tag", "--points-at", sha)
        return sorted(t for t in out.splitlines() if t)

    def tags(self) -> dict[str, str]:
        """tag name → commit SHA, for every tag."""
        out = self._git("for-each-ref", "--format=%(refname:short) %(objectname) %(*objectname)", "refs/tags")
        tags = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                tags[parts[0]] = parts[2] if len(parts) == 3 else parts[1]
        return tags

    def is_dirty(self, paths: list[str] | None = None) -> bool:
        args = ["status", "--porcelain", "--untracked-files=no"]
        if paths:
            args += ["--", *paths]
        return bool(self._git(*args).strip())

    def merge_base(self, a: str, b: str) -> str | None:
        out = self._git_ok("merge-base", a, b)
        return out.strip() or None

    def _git_ok(self, *args: str) -> str:
        import git

        try:
            return str(self.repo.git.execute(["git", *args]))
        except git.GitCommandError:
            return ""

    def first_parents(self, sha: str, limit: int) -> list[str]:
        """`sha` and its first-parent ancestors, nearest first, at most `limit`."""
        out = self._git("rev-list", "--first-parent", f"--max-count={limit}", sha)
        return out.split()

    def commit_info(self, sha: str) -> dict[str, str]:
        out = self._git("show", "-s", "--format=%an%x00%ae%x00%ct%x00%s", sha)
        name, email, when, subject = [*out.split("\x00"), "", "", "", ""][:4]
        return {"author": name, "email": email, "time": when, "subject": subject}

    def show_file(self, sha: str, path: str) -> str:
        """A file's text as of `sha`."""
        return self._git("show", f"{sha}:{path}")

    def extract(self, sha: str, dest: Path) -> None:
        """Write the tree of `sha` (not the working tree) into `dest`."""
        data = self.repo.git.execute(["git", "archive", "--format=tar", sha], stdout_as_string=False)
        assert isinstance(data, bytes)
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            try:
                tar.extractall(dest, filter="data")
            except tarfile.FilterError as err:  # a committed link to /etc/passwd, ../../.aws, …
                raise Refused(
                    f"commit {sha[:8]}: {err} outside the repository; mlops-ci never follows it into a job or "
                    "an artifact. Commit the file itself or a link that stays inside the repository"
                ) from None


def load_context(start: Path, env: Mapping[str, str], git_: Git | None = None) -> GitContext:
    """Build the context from git and, when present, the GitHub Actions environment."""
    g = git_ or Git(start)
    event = _event(env)
    sha = g.head_sha()
    pr_number = None
    base_ref = None
    branch = g.branch()
    tag = None
    job = detect(env)
    ref = job.ref
    if job.actions:
        pr = event.get("pull_request") if isinstance(event.get("pull_request"), dict) else None
        if pr:
            # On pull_request events GITHUB_SHA is the merge commit; the PR head is what was trained.
            head = pr.get("head") or {}
            sha = str(head.get("sha") or sha)
            branch = str(head.get("ref") or branch or "") or None
            base_ref = str((pr.get("base") or {}).get("ref") or "") or None
            number = pr.get("number") or event.get("number")
            pr_number = int(number) if isinstance(number, int) else None
        else:
            sha = job.sha or sha
            if ref.startswith("refs/heads/"):
                branch = ref[len("refs/heads/") :]
            elif ref.startswith("refs/tags/"):
                tag = ref[len("refs/tags/") :]
    if tag is None:
        tags = g.tags_at(sha)
        tag = tags[-1] if tags else None
    return GitContext(
        root=str(g.root),
        sha=sha,
        branch=branch,
        tag=tag,
        pr_number=pr_number,
        base_ref=base_ref or job.base_ref,
        dirty=g.is_dirty(),
        repository=job.repository,
        event_name=job.event_name,
        shallow=g.shallow,
    )


def environ() -> Mapping[str, str]:
    return os.environ
