"""The wall clock that ages files by their modification times, which a step forward does not age.

A file's modification time is written by the wall clock, so its age is the wall clock
less that time. A step of the wall clock (NTP setting right a clock that was minutes
off, ``date -s``) moves every age by the step at once: a step forward would expire each
file written before it that much early. :class:`SteadyWallClock` reads the wall clock as
it stood when it was made, carried on by the clock since boot, which never steps and, as
the wall clock does, counts the time a suspended machine slept. A step back is followed
(what was written before it looks younger, so it is kept the longer, never removed
early); a step forward is not, for the life of the clock (files written after it look
younger by the step, so they too are kept the longer).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["SteadyWallClock"]

#: Monotonic, and counting a suspend (Linux); elsewhere the monotonic clock.
_SINCE_BOOT = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def _since_boot() -> float:
    return time.clock_gettime(_SINCE_BOOT)


def _wall() -> float:
    return time.time()


class SteadyWallClock:
    """Wall-clock seconds (as ``time.time()``), never ahead of the wall clock's reading
    when this was made plus the time since; safe to call from any thread.

    Args:
        wall: the wall clock.
        steady: a clock that never steps, in seconds.
    """

    def __init__(
        self,
        wall: Callable[[], float] = _wall,
        steady: Callable[[], float] = _since_boot,
    ) -> None:
        self._wall = wall
        self._steady = steady
        self._offset = wall() - steady()
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """The wall-clock time now, less every step forward the wall clock took since."""
        steady = self._steady()
        offset = self._wall() - steady
        with self._lock:
            self._offset = min(self._offset, offset)
            return steady + self._offset
