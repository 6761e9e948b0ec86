"""`mlops-ci init`: the starter workflows and config, written into a repository."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from . import _pin
from .errors import Refused, UsageError

WORKFLOWS = (
    "mlops-ci-train.yml",
    "mlops-ci-pr.yml",
    "mlops-ci-pr-comment.yml",
    "mlops-ci-fork-train.yml",
    "mlops-ci-release.yml",
    "mlops-ci-monitor.yml",
)
# `uses: <repository>/actions/<verb>@<ref> # v<version>` in the templates
USES = re.compile(r"(?P<repo>[\w.-]+/[\w.-]+)/actions/(?P<verb>[a-z]+)@(?P<ref>[0-9a-f]{40}) # v(?P<version>[\w.+-]+)")
_REPO = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
_REF = re.compile(r"^[0-9a-f]{40}$")


def template(name: str) -> str:
    return resources.files("mlops_ci").joinpath("templates", name).read_text(encoding="utf-8")


def pin(text: str, repository: str, ref: str, version: str) -> str:
    """The workflow `text` with every mlops-ci action pinned to `repository` at commit `ref`."""
    if not _REPO.match(repository):
        raise UsageError(
            f"--action-repo must be OWNER/REPO (the repository holding mlops-ci's actions/), got {repository!r}"
        )
    if not _REF.match(ref):
        raise UsageError(
            "--action-ref must be a full 40-hex commit SHA of that repository (tags move; "
            f"zizmor and GitHub's own hardening guide ask for SHAs), got {ref!r}"
        )
    return USES.sub(lambda m: f"{repository}/actions/{m['verb']}@{ref} # v{version}", text)


def planned_files(
    repository: str | None = None, ref: str | None = None, config: str = "mlops-ci.yaml"
) -> dict[str, str]:
    """Relative path → content. Workflows use mlops-ci's composite actions at one commit: the
    release this package was built from, unless `repository`/`ref` say otherwise."""
    files = {}
    for name in WORKFLOWS:
        text = template(f"workflows/{name}")
        files[f".github/workflows/{name}"] = pin(
            text, repository or _pin.ACTION_REPOSITORY, ref or _pin.ACTION_SHA, _pin.ACTION_VERSION
        )
    files[config] = template("mlops-ci.yaml")
    return files


CONFIG = "mlops-ci.yaml"
MONITOR = "mlops-ci-monitor.yml"


def _monitors(config: Path | None) -> bool:
    """Whether a config (None: the starter one) has a `monitoring:` section."""
    import yaml

    try:
        loaded = yaml.safe_load(config.read_text(encoding="utf-8") if config else template(CONFIG))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(loaded, dict) and loaded.get("monitoring") not in (None, False)


def init(
    root: Path, *, force: bool = False, repository: str | None = None, ref: str | None = None, here: Path | None = None
) -> list[str]:
    """Write the files, all or none: an existing file stops everything unless `force`. With
    `force` the workflows are brought up to this release (a changed one is kept beside it as
    `<name>.orig`), and an existing mlops-ci.yaml is never touched: it is the user's.
    The workflows go to the repository root, mlops-ci.yaml to `here` (default: the root; a
    project in a subdirectory of a monorepo). Returns one line per file: what happened to it."""
    sub = (here or root).resolve().relative_to(root.resolve()).as_posix()
    config = CONFIG if sub == "." else f"{sub}/{CONFIG}"
    files = planned_files(repository, ref, config)
    done = []
    monitor = f".github/workflows/{MONITOR}"
    if not (root / monitor).exists() and not _monitors(root / config if (root / config).exists() else None):
        # an hourly job that could only fail: written once the config monitors something
        del files[monitor]
        done.append(f"skipped {monitor}: {config} has no `monitoring:` (add it and an endpoint's `capture:`, then "
                    "`mlops-ci init --force` writes it)")  # fmt: skip
    existing = [rel for rel in files if (root / rel).exists()]
    if existing and not force:
        raise Refused(
            f"{', '.join(existing)} already exist(s); nothing was written. Pass --force to update the "
            "workflows" + (f" ({config} is kept)" if config in existing else "")
        )
    for rel, text in sorted(files.items()):
        path = root / rel
        if path.exists():
            old = path.read_bytes()
            if rel == config:
                done.append(f"kept {rel} (yours; remove it first for the starter one)")
                continue
            if old == text.encode():
                done.append(f"unchanged {rel}")
                continue
            # .orig is not .yml: GitHub does not run it, and the user's edits are not lost (nor an
            # earlier .orig: the new copy goes beside it)
            backup = path.with_name(path.name + ".orig")
            n = 1
            while backup.exists() and backup.read_bytes() != old:
                backup, n = path.with_name(f"{path.name}.orig.{n}"), n + 1
            backup.write_bytes(old)
        _write(path, text)
        done.append(f"wrote {rel}" + (f" (yours is kept as {backup.name})" if rel in existing else ""))
    if config != CONFIG:
        done.append(
            f"note: the workflows run at the repository root: give each mlops-ci step `config: {config}` "
            f"(or `working-directory: {sub}`)"
        )
    ignore = root / ".gitignore"
    lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.exists() else []
    if ".mlops-ci/" not in lines:
        with open(ignore, "a", encoding="utf-8") as fh:
            if lines and lines[-1] != "":
                fh.write("\n")
            fh.write(".mlops-ci/\n")
    return done


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# The starter workflows that also ship as reusable workflows (`on: workflow_call`) in this
# repository's .github/workflows/, for teams that adopt with a few lines (docs/reusable-workflows.md).
REUSABLE = {"mlops-ci-train.yml": "train.yml", "mlops-ci-pr.yml": "review.yml", "mlops-ci-release.yml": "release.yml"}
_CALL = """on:
  # Reusable: call it from a workflow of your repository (docs/reusable-workflows.md). The jobs,
  # their conditions and permissions are the starter workflow's; grant the caller's job the same.
  workflow_call:
    secrets:
      COMET_API_KEY:
        description: Comet API key, for tracking backend comet (optional).
        required: false

"""


def reusable(starter: str, name: str) -> str:
    """The reusable form of a starter workflow: the same jobs behind `on: workflow_call`."""
    head, rest = starter.split("\non:\n", 1)
    _, jobs = rest.split("\n\n", 1)  # drop the trigger block, keep the rest as it is
    return f"# Generated from workflow-templates/{name} by `make pin`; edit that file.\n{head}\n{_CALL}{jobs}"


def repin(root: Path, ref: str) -> list[str]:
    """`make pin`: point _pin.py and the starter workflows (packaged and workflow-templates/)
    at the actions of commit `ref`. Returns the files written."""
    import subprocess

    pin_file = root / "mlops_ci" / "_pin.py"
    text = pin_file.read_text(encoding="utf-8")
    pin(text, _pin.ACTION_REPOSITORY, ref, _pin.ACTION_VERSION)  # validates ref
    # the version of the pinned commit (the `# vX.Y.Z` comment Dependabot reads), not this tree's
    shown = subprocess.run(["git", "show", f"{ref}:mlops_ci/__init__.py"], cwd=root, capture_output=True,
                           text=True, check=False)  # fmt: skip
    found = re.search(r'^__version__ = "([^"]+)"$', shown.stdout, re.M)
    if not found:
        raise UsageError(f"{ref} is not a commit of this repository with mlops_ci/__init__.py")
    version = found.group(1)
    text = re.sub(r'ACTION_SHA = "[0-9a-f]{40}"', f'ACTION_SHA = "{ref}"', text)
    pin_file.write_text(re.sub(r'ACTION_VERSION = "[^"]+"', f'ACTION_VERSION = "{version}"', text), encoding="utf-8")
    written = [str(pin_file)]
    for name in WORKFLOWS:
        for path in (root / "mlops_ci" / "templates" / "workflows" / name, root / "workflow-templates" / name):
            path.write_text(pin(path.read_text(encoding="utf-8"), _pin.ACTION_REPOSITORY, ref, version),
                            encoding="utf-8")  # fmt: skip
            written.append(str(path))
    for name, target in REUSABLE.items():
        path = root / ".github" / "workflows" / target
        path.write_text(reusable((root / "workflow-templates" / name).read_text(encoding="utf-8"), name),
                        encoding="utf-8")  # fmt: skip
        written.append(str(path))
    return written


if __name__ == "__main__":  # python -m mlops_ci.scaffold --pin SHA (make pin)
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "--pin":
        sys.exit("usage: python -m mlops_ci.scaffold --pin SHA")
    for f in repin(Path.cwd(), sys.argv[2]):
        print(f"wrote {f}")
