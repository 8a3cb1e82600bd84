"""Read this process's CPU, memory, file descriptors and start time from ``/proc`` (Linux).

The same sources and arithmetic as prometheus_client's ``ProcessCollector``, so the
numbers match what every other Prometheus client exports: ``/proc/<pid>/stat``
(CPU ticks, virtual size, resident pages, start ticks after boot), ``/proc/stat``
(boot time), ``/proc/<pid>/limits`` (the soft ``Max open files``) and the entries of
``/proc/<pid>/fd``. Nothing is cached but the boot time and the clock rate.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcessReader", "ProcessStats"]


@dataclass(frozen=True, slots=True)
class ProcessStats:
    """One reading of a process; a field is ``None`` when its source could not be read."""

    cpu_seconds: float | None
    resident_bytes: float | None
    virtual_bytes: float | None
    start_time_seconds: float | None
    open_fds: float | None
    max_fds: float | None


def _boot_time(proc: Path) -> float | None:
    try:
        with open(proc / "stat", "rb") as stat:
            for line in stat:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class ProcessReader:
    """Reads :class:`ProcessStats` of one process (this one by default) on every call."""

    def __init__(self, proc: Path = Path("/proc"), pid: str = "self") -> None:
        """Prepare the reader; nothing is read yet but the boot time.

        Args:
            proc: where the proc file system is mounted.
            pid: the process to read, ``"self"`` for the calling process.
        """
        self._dir = proc / pid
        self._boot = _boot_time(proc)
        try:
            self._ticks = float(os.sysconf("SC_CLK_TCK"))
        except (ValueError, OSError):
            self._ticks = 100.0
        self._page = float(resource.getpagesize())

    @property
    def is_available(self) -> bool:
        """False where ``/proc`` cannot be read (not Linux, or a restricted sandbox)."""
        return self._boot is not None

    def read(self) -> ProcessStats:
        """Return the process's current figures; sources that fail give ``None`` fields."""
        return ProcessStats(*self.read_stat(), self.open_fds(), self.max_fds())

    def read_stat(self) -> tuple[float | None, float | None, float | None, float | None]:
        """Return CPU seconds, resident bytes, virtual bytes and start time (one file read)."""
        cpu = resident = virtual = start = None
        try:
            raw = (self._dir / "stat").read_bytes()
            # Fields after the command name, which sits in parentheses and may hold spaces.
            parts = raw.rsplit(b")", 1)[-1].split()
            cpu = (float(parts[11]) + float(parts[12])) / self._ticks
            virtual = float(parts[20])
            resident = float(parts[21]) * self._page
            if self._boot is not None:
                start = float(parts[19]) / self._ticks + self._boot
        except (OSError, ValueError, IndexError):
            pass
        return cpu, resident, virtual, start

    def open_fds(self) -> float | None:
        """Return the number of open file descriptors, or ``None``."""
        try:
            return float(len(os.listdir(self._dir / "fd")))
        except OSError:
            return None

    def max_fds(self) -> float | None:
        """Return the soft limit of open file descriptors, or ``None`` (also if unlimited)."""
        try:
            with open(self._dir / "limits", "rb") as limits:
                for line in limits:
                    if line.startswith(b"Max open files"):
                        return float(line.split()[3])
        except (OSError, ValueError, IndexError):
            return None
        return None
