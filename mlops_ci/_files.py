"""Digests and deterministic archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(path: Path) -> str:
    """Digest of a file, or of a directory's relative paths and contents (sorted)."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        h.update(rel.encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def pack_deterministic(entries: list[tuple[str, Path]], dest: Path) -> str:
    """Write a .tar.gz of (arcname, file) pairs, sorted, with fixed mtimes and owners, to
    `dest` atomically; return its sha256. Same inputs → same bytes → same digest."""
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for arcname, file in sorted(entries):
            info = tarfile.TarInfo(arcname)
            info.size = file.stat().st_size
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(file, "rb") as fh:
                tar.addfile(info, fh)
    with open(tmp, "wb") as out:
        with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
            gz.write(raw.getvalue())
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, dest)
    return sha256_file(dest)


class LinkOutside(ValueError):
    """A symbolic link under a directory being packed that would bring in something else."""

    def __init__(self, link: Path, root: Path, why: str):
        self.link, self.root = link, root
        try:
            target = str(link.readlink())
        except OSError:
            target = "?"
        super().__init__(f"{link.relative_to(root).as_posix()} is a symbolic link to {target} ({why})")


def files_under(root: Path, prefix: str = "") -> list[tuple[str, Path]]:
    """(arcname, path) of every file under `root`, sorted. A link to a file or directory inside
    `root` is packed as that content; a link that leaves `root`, dangles or loops raises
    LinkOutside, never followed: packing it would put a host file (credentials,
    /proc/self/environ) into an artifact others download."""
    base = root.resolve()
    found: list[tuple[str, Path]] = []

    def walk(here: Path, entered: tuple[Path, ...]) -> None:
        for entry in sorted(here.iterdir()):
            target = entry.resolve()
            if entry.is_symlink():
                if not entry.exists():
                    raise LinkOutside(entry, root, "a dangling link")
                if not target.is_relative_to(base):
                    raise LinkOutside(entry, root, "outside it")
            if entry.is_dir():
                if target in entered or any(target in p.parents for p in entered):
                    raise LinkOutside(entry, root, "a loop")
                walk(entry, (*entered, target))
            elif entry.is_file():  # sockets, fifos: not content
                found.append((prefix + entry.relative_to(root).as_posix(), entry))

    walk(root, (base,))
    return sorted(found)
