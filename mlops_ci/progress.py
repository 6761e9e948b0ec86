"""Long waits the user can see: what is awaited, its state, the time spent, the timeout and the
setting that sets it.

On a terminal one status line is rewritten in place (at most a few times a second); anywhere
else (a CI log) one line per state change, so a log says what happened without a line a second.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO


class Wait:
    def __init__(
        self,
        say: Callable[[str], None],
        what: str,
        timeout: float,
        setting: str,
        *,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.say, self.what, self.timeout, self.setting = say, what, timeout, setting
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _isatty(self.stream)
        self.clock = clock
        self.start = clock()
        self.state: str | None = None
        self._drawn = 0.0
        self._width = 0

    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    def line(self) -> str:
        return f"{self.what}: {self.state} ({self.elapsed:.0f}s of {self.timeout:g}s, the timeout is {self.setting})"

    def update(self, state: str) -> None:
        """Called from the wait's loop, as often as it likes."""
        changed, self.state = state != self.state, state
        if self.tty:
            now = self.clock()
            if changed or now - self._drawn >= 0.5:
                self._drawn = now
                # one terminal line: a wrapped one could not be redrawn with \r
                text = self.line()[: max(shutil.get_terminal_size().columns - 1, 20)]
                self.stream.write("\r" + text.ljust(self._width))
                self.stream.flush()
                self._width = len(text)
        elif changed:
            self.say(self.line())

    def close(self, outcome: str) -> None:
        """The wait ended (ready, failed, timed out): the final state as a line of its own."""
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
        self.say(f"{self.what}: {outcome} after {self.elapsed:.1f}s")

    def expired(self) -> bool:
        return self.elapsed >= self.timeout


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
