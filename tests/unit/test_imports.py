"""Start-up stays fast: the CLI module loads no heavy SDK, and the core never imports the CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mlops_ci

HEAVY = ("boto3", "botocore", "sagemaker", "comet_ml", "github", "git", "yaml", "numpy")
PKG = Path(mlops_ci.__file__).parent


def test_cli_import_loads_no_heavy_module():
    code = "import sys, mlops_ci.cli; print(','.join(m for m in " + repr(HEAVY) + " if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_version_path_loads_no_core_module():
    code = (
        "import sys\nfrom mlops_ci.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('mlops_ci.') and m not in "
        "('mlops_ci.cli', 'mlops_ci.errors'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.splitlines()[-1] == ""


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            names.add("." * node.level + mod)
    return names


def test_core_never_imports_the_cli():
    offenders = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "cli" or rel.name == "__main__.py":
            continue
        for name in _imports(path):
            parts = name.lstrip(".").split(".")
            if (name.startswith(".") or parts[0] == "mlops_ci") and "cli" in parts:
                offenders.append(f"{rel}: {name}")
    assert offenders == []


def test_heavy_sdks_are_imported_only_inside_functions():
    """Module-level imports of heavy SDKs would load them for every command."""
    offenders = []
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            for m in mods:
                if m.split(".")[0] in ("boto3", "botocore", "sagemaker", "comet_ml", "github", "git", "numpy"):
                    offenders.append(f"{path.relative_to(PKG)}: {m}")
    assert offenders == []
