"""docs/faults.md is the fault matrix: every case it lists is a test that exists, and every test
in tests/faults is listed (a fault test nobody can find in the matrix is a fault undocumented)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "faults.md"


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def _listed() -> set[tuple[str, str]]:
    """(file relative to tests/, test name) for every `file.py::test` in the matrix's table rows."""
    found = set()
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            continue
        for file, name in re.findall(r"`(?:\.\./)?([\w/]+\.py)::(test_\w+)`", line):
            found.add((file if "/" in file else f"faults/{file}", name))
    return found


def test_every_test_the_matrix_names_exists():
    missing = [f"{f}::{n}" for f, n in sorted(_listed()) if n not in _tests_in(ROOT / "tests" / f)]
    assert not missing, f"docs/faults.md names tests that do not exist: {missing}"


def test_every_fault_test_is_in_the_matrix():
    listed = _listed()
    unlisted = [
        f"{p.name}::{n}"
        for p in sorted((ROOT / "tests" / "faults").glob("test_*.py"))
        for n in sorted(_tests_in(p))
        if (f"faults/{p.name}", n) not in listed
    ]
    assert not unlisted, f"tests/faults has tests docs/faults.md does not list: {unlisted}"


def test_the_matrix_is_one_table_without_duplicate_rows():
    lines = DOC.read_text(encoding="utf-8").splitlines()
    rows = [line for line in lines if line.startswith("| ") and "::" in line]
    assert len(rows) == len(set(rows)), "docs/faults.md repeats a row"
    first = lines.index(rows[0])
    last = lines.index(rows[-1])
    assert all(line.startswith("|") for line in lines[first : last + 1]), "docs/faults.md's table is broken by a line"
