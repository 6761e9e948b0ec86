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


def test_readme_exit_code_table_matches_the_code():
    text = README.read_text()
    table = dict(re.findall(r"^\| (\d+) \| (.+) \|$", text, flags=re.M))
    assert {int(k): v for k, v in table.items()} == errors.EXIT_CODES
