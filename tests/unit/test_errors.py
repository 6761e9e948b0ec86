from __future__ import annotations

import re
from pathlib import Path

from mlops_ci import errors

README = Path(__file__).resolve().parents[2] / "README.md"


def test_exit_codes_are_unique_and_every_error_class_uses_one():
    codes = [v for k, v in vars(errors).items() if k.isupper() and isinstance(v, int)]
    assert len(codes) == len(set(codes))
    for cls in vars(errors).values():
        if isinstance(cls, type) and issubclass(cls, errors.MlopsCiError):
            assert cls.exit_code in errors.EXIT_CODES


def test_readme_links_the_exit_code_page():
    # The table itself is docs/exit-codes.md, generated from EXIT_CODES (tests/unit/test_docs.py).
    assert "](docs/exit-codes.md)" in README.read_text()


def test_no_code_raises_the_base_error_which_would_read_as_a_bug():
    # MlopsCiError itself exits 3, "internal error (a bug)": every error a user can hit is one of
    # its subclasses, with the exit code of its situation.
    root = Path(errors.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        if path.name == "errors.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\b(MlopsCiError|AlreadyExists)\(", line) and "isinstance" not in line:
                found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    allowed = {"AlreadyExists"}  # a record id taken twice: ids are random, so a bug where not caught
    found = [f for f in found if not any(f.split(": ", 1)[1].startswith(f"raise {a}(") for a in allowed)]
    assert found == []
