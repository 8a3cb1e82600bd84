"""The log stream: a line it cannot take is dropped and counted; forked writers keep lines whole.

Hazard: holds process-wide state (whether this process forked, or was forked, since it
started, and a lock its threads share); :func:`os.register_at_fork` sets it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
from typing import IO, Any, cast

from taskforce.observability._faults import report_log_fault

__all__ = ["SinkStream"]

# Whether processes may share the stream: set in both once this one forks (or is a fork).
_is_forked = False
# A record lock is the process's own: its threads take turns on this one first. Reentrant:
# a signal handler that logs mid-line must not wait for itself.
_threads = threading.RLock()


def _note_fork() -> None:
    global _is_forked
    _is_forked = True


def _note_fork_in_child() -> None:
    """A fork is a process of its own: it may share the stream, and no thread of its parent
    holds its lock (one that did when it forked never lets go in the child)."""
    global _threads
    _note_fork()
    _threads = threading.RLock()


os.register_at_fork(after_in_parent=_note_fork, after_in_child=_note_fork_in_child)


class SinkStream:
    """The log stream, where a line the sink cannot take is dropped and counted, not raised.

    A reader that went away (a broken pipe), a full disk, a closed stream or any other
    failure of the stream (a binary one given text) must not fail the mission or
    request that logged: the line is lost, and counted as a fault
    of stage ``log`` (:func:`report_log_fault`). Each line is written and flushed in
    one :meth:`write`, so a line that fails is counted once. Without a stream at all
    (standard error closed before start) lines are dropped: they must not go to
    standard output, where ``taskforce run`` prints its result.

    Processes forked after the set-up (the workers of ``taskforce serve --workers N``)
    share the stream. On a pipe, the kernel keeps only a write of up to ``PIPE_BUF`` (4
    KiB) whole: a longer line waiting for room goes in in pieces, and another process's
    line could land between them. Once this process has forked, each line is written
    under a lock on a file made at the set-up, which every fork shares (a POSIX record
    lock: one per process, released when the process dies).
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._lock_file: IO[bytes] | None = None
        with contextlib.suppress(OSError):  # no temporary folder: lines may split, as before
            self._lock_file = tempfile.TemporaryFile()  # noqa: SIM115  # open for the sink's life

    def write(self, text: str) -> int:
        """Write and flush ``text``; on a failure of the stream, drop it and count it."""
        if self._stream is None:
            return len(text)
        if not _is_forked or self._lock_file is None:
            self._write(text)
            return len(text)
        with _threads:
            is_locked = self._lock()
            try:
                self._write(text)
            finally:
                if is_locked:
                    self._unlock()
        return len(text)

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except Exception:  # OSError, ValueError (a closed stream), or any stream's own
            report_log_fault()

    def flush(self) -> None:
        """Nothing to do: :meth:`write` flushed already."""

    def _lock(self) -> bool:
        """Take the lock the forked processes share; False when the file system has none."""
        try:
            fcntl.lockf(cast(IO[bytes], self._lock_file), fcntl.LOCK_EX)
        except OSError:  # no locks on this file system: the line is written all the same
            return False
        return True

    def _unlock(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.lockf(cast(IO[bytes], self._lock_file), fcntl.LOCK_UN)
