"""The keeper of a local training job: it dies with the CLI, and so does the job.

The CLI starts `python -I .../_watchdog.py SECONDS -- ARGV...` (this file run as a script) as the leader of a new
process group, with a pipe on its stdin that only the CLI writes to (the lifeline). The watchdog
starts the job in that same group and waits. When the lifeline reads end-of-file the CLI is gone
(exited, crashed, or killed with SIGKILL, which no handler in the CLI could catch), and the
watchdog stops the whole group: SIGTERM, a grace period, then SIGKILL, so the job and whatever it
started (a DataLoader worker, a `sleep`) end with it. It also enforces the deadline itself, for a
CLI that is alive but stuck (stopped with SIGSTOP, its machine suspended). Only a process that
leaves the group on purpose (`setsid`) escapes, as it would escape SageMaker's container too.

The job's own exit status comes back unchanged: its exit code, or death by the same signal.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

GRACE = 5.0  # seconds between SIGTERM and SIGKILL, as `docker stop` (and SageMaker's StopTrainingJob) give


def _stop_group(job: subprocess.Popen[bytes]) -> None:
    """SIGTERM to everyone in the group but us, then SIGKILL to all of it (us included)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
    end = time.monotonic() + GRACE
    while job.poll() is None and time.monotonic() < end:
        time.sleep(0.05)
    os.killpg(0, signal.SIGKILL)


def main(argv: Sequence[str]) -> int:
    seconds, sep, *cmd = argv
    if sep != "--" or not cmd:
        print("usage: python -m mlops_ci.backends._watchdog SECONDS -- ARGV...", file=sys.stderr)
        return 2
    deadline = time.monotonic() + float(seconds)
    job = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    lifeline = sys.stdin.fileno()
    # the job's end wakes the wait at once where the kernel has pidfds (Linux 5.3): a readable
    # pidfd is an exited process; elsewhere the wait looks every 50 ms
    try:
        ended: list[int] = [os.pidfd_open(job.pid)]
    except (AttributeError, OSError):
        ended = []
    while True:
        code = job.poll()
        if code is not None:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            _stop_group(job)
        ready, _, _ = select.select([lifeline, *ended], [], [], min(left, 0.5 if ended else 0.05))
        if lifeline in ready and not os.read(lifeline, 4096):  # end of file: the CLI is gone
            _stop_group(job)
    # what the job left running in the group (a background child) must not outlive it either
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
    if code < 0:  # died by a signal: so do we, so that the CLI sees the same status
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
