"""Confinement for a process that runs a model's own code (the review's model diff).

A process confines itself, before it imports anything of the model's, with:
- resource limits: address space (``memory_mb``), CPU seconds, the size of a file it writes;
- on Linux with Landlock (kernel 5.13+, an LSM that any process may apply to itself, no
  privileges needed): no file may be created, written, removed or renamed outside its own
  directory (and ``/dev/null``); reads stay allowed (the interpreter and its libraries live
  everywhere); with Landlock ABI 4+ no TCP connection or listening socket at all; with ABI 6+
  no signal to a process outside the sandbox and no abstract unix socket.

The numbers are the kernel's uapi (include/uapi/linux/landlock.h, Documentation/userspace-api/
landlock.rst): syscalls 444-446 on every architecture, the access bits below, and
``PR_SET_NO_NEW_PRIVS`` set first, as ``landlock_restrict_self`` requires it of an unprivileged
process. Where Landlock is missing (another OS, an old kernel, a container that filters the
syscalls) the limits still apply and `confine` says what is not confined.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# LANDLOCK_ACCESS_FS_*: what changes the file system. Reading and executing are not handled,
# so they stay allowed everywhere.
_WRITE_FILE = 1 << 1
_FS_WRITES_V1 = _WRITE_FILE | sum(
    1 << b for b in range(4, 13)
)  # remove dir/file, make char/dir/reg/sock/fifo/block/sym
_REFER = 1 << 13  # ABI 2: link or rename across directories
_TRUNCATE = 1 << 14  # ABI 3
_IOCTL_DEV = 1 << 15  # ABI 5
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the uapi header
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@dataclass(frozen=True)
class Confinement:
    files: bool  # writes outside the directory are refused
    network: bool  # TCP connect/bind refused
    limits: bool  # memory/CPU/file-size limits applied
    note: str  # what is not confined, and why ("" when everything is)


def landlock_abi() -> int:
    """The running kernel's Landlock ABI version, 0 without Landlock."""
    if not sys.platform.startswith("linux"):
        return 0
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    abi = libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(0, int(abi))


def _tasks_of_my_user() -> int:
    """Threads this user runs now (RLIMIT_NPROC counts them all, not this process's alone).
    Root is exempt from RLIMIT_NPROC; there the review stops a bomb by freezing it."""
    uid, count = os.getuid(), 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields["Threads"])
        except (OSError, KeyError, ValueError, IndexError):
            continue
    return count


def _limits(memory_mb: int, cpu_seconds: int, file_mb: int) -> list[str]:
    """The limits that could not be set (all of them where there is no `resource`)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return ["memory", "CPU", "file size"]
    limits = [
        ("memory", resource.RLIMIT_AS, memory_mb << 20),
        ("CPU", resource.RLIMIT_CPU, cpu_seconds),
        ("file size", resource.RLIMIT_FSIZE, file_mb << 20),
    ]
    if sys.platform.startswith("linux"):  # where the user's threads can be counted: a fork bomb stops there
        limits.append(("process count", resource.RLIMIT_NPROC, _tasks_of_my_user() + 256))
    missing = []
    for name, which, value in limits:
        try:
            _soft, hard = resource.getrlimit(which)
            limit = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (limit, limit))  # the hard limit too: the model cannot raise it back
        except (ValueError, OSError):  # macOS refuses RLIMIT_AS below what is mapped already
            missing.append(name)
    return missing


def _landlock(writable: Path, abi: int) -> tuple[bool, bool]:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    fs = _FS_WRITES_V1 | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0)
    fs |= _IOCTL_DEV if abi >= 5 else 0
    attr = _RulesetAttr(
        fs,
        (_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0,
        (_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0,
    )
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset: " + os.strerror(ctypes.get_errno()))
    try:
        file_rights = _WRITE_FILE | (_TRUNCATE if abi >= 3 else 0)
        for path, rights in ((writable, fs), (Path("/dev/null"), file_rights)):
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = _PathBeneathAttr(rights, fd)
                if libc.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}: " + os.strerror(ctypes.get_errno()))
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS): " + os.strerror(ctypes.get_errno()))
        if libc.syscall(_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self: " + os.strerror(ctypes.get_errno()))
    finally:
        os.close(ruleset)
    return True, abi >= 4


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_CAPABILITY_VERSION_3 = 0x20080522
_PR_CAPBSET_DROP = 24


def _drop_root_powers() -> str:
    """As root (a container job's default), drop every capability, for this process and for
    what it executes: otherwise root may read any process's memory and environment
    (CAP_SYS_PTRACE) and get around file permissions. "" when done, else why not."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return ""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    for cap in range(64):  # the bounding set first: an executed program cannot get them back
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the last capability: ignored
    header, data = _CapHeader(_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        return "running as root, its capabilities could not be dropped: " + os.strerror(ctypes.get_errno())
    return ""


def confine(writable: Path, *, memory_mb: int, cpu_seconds: int, file_mb: int = 1024) -> Confinement:
    """Confine this process for good (there is no way back). `writable` is the one directory it
    may change."""
    unset = _limits(memory_mb, cpu_seconds, file_mb)
    abi = landlock_abi()
    files = network = False
    why = []
    if abi:
        try:
            files, network = _landlock(writable.resolve(), abi)
        except OSError as exc:
            why.append(f"Landlock refused: {exc}")
    else:
        why.append("this kernel has no Landlock (Linux 5.13+): the model's code can write outside its directory")
    if files and not network:
        why.append(f"Landlock ABI {abi} cannot refuse TCP (ABI 4+, Linux 6.7+)")
    if unset:
        why.append(f"this OS refused the {', '.join(unset)} limit(s)")
    if root := _drop_root_powers():
        why.append(root)
    return Confinement(files=files, network=network, limits=not unset, note="; ".join(why))
