"""What goes into an artifact or an uploaded source: links are content only while they stay inside."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_ci._files import LinkOutside, files_under, pack_deterministic


def _tree(root: Path) -> Path:
    (root / "a").mkdir(parents=True)
    (root / "a" / "x").write_text("1")
    (root / "b").symlink_to("a")  # a linked directory inside
    (root / "f").symlink_to("a/x")  # a linked file inside
    return root


def test_links_inside_are_packed_as_their_content(tmp_path):
    root = _tree(tmp_path / "m")
    assert [rel for rel, _ in files_under(root, "p/")] == ["p/a/x", "p/b/x", "p/f"]
    one = pack_deterministic(files_under(root), tmp_path / "one.tar.gz")
    (root / "f").unlink()
    (root / "f").write_text("1")  # the same content as a plain file: the same bytes
    assert pack_deterministic(files_under(root), tmp_path / "two.tar.gz") == one


@pytest.mark.parametrize(
    ("name", "target", "why"),
    [
        ("env", "/proc/self/environ", "outside it"),
        ("up", "../" * 30 + "etc", "outside it"),
        ("gone", "nowhere", "a dangling link"),
        ("a/loop", "..", "a loop"),
    ],
)
def test_a_link_that_leaves_dangles_or_loops_is_refused(tmp_path, name, target, why):
    root = _tree(tmp_path / "m")
    (root / name).symlink_to(target)
    with pytest.raises(LinkOutside) as err:
        files_under(root)
    assert str(err.value) == f"{name} is a symbolic link to {target} ({why})"
