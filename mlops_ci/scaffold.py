"""`mlops-ci init`: the starter workflows and config, written into a repository."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from . import __version__
from .errors import Refused

WORKFLOWS = (
    "mlops-ci-train.yml",
    "mlops-ci-pr.yml",
    "mlops-ci-pr-comment.yml",
    "mlops-ci-fork-train.yml",
    "mlops-ci-release.yml",
)
TEMPLATE_VERSION = 'MLOPS_CI_VERSION: "0.1.0"'


def template(name: str) -> str:
    return resources.files("mlops_ci").joinpath("templates", name).read_text(encoding="utf-8")


def planned_files() -> dict[str, str]:
    """Relative path → content. Workflows pin the CLI to the version that wrote them."""
    files = {}
    for name in WORKFLOWS:
        text = template(f"workflows/{name}")
        files[f".github/workflows/{name}"] = text.replace(TEMPLATE_VERSION, f'MLOPS_CI_VERSION: "{__version__}"')
    files["mlops-ci.yaml"] = template("mlops-ci.yaml")
    return files


def init(root: Path, *, force: bool = False) -> list[str]:
    """Write the files, all or none: an existing file stops everything unless `force`."""
    files = planned_files()
    existing = [rel for rel in files if (root / rel).exists()]
    if existing and not force:
        raise Refused(f"{', '.join(existing)} already exist(s); nothing was written. Pass --force to overwrite")
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    ignore = root / ".gitignore"
    lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.exists() else []
    if ".mlops-ci/" not in lines:
        with open(ignore, "a", encoding="utf-8") as fh:
            if lines and lines[-1] != "":
                fh.write("\n")
            fh.write(".mlops-ci/\n")
    return sorted(files)
