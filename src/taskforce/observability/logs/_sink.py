"""The log stream: a line it cannot take is dropped and counted; lines of its writers stay whole.

Hazard: holds process-wide state (whether other processes may write to this one's
streams: it forked, or was forked, since it started, or a server started it as one of
its workers; and a lock its threads share); :func:`os.register_at_fork` and
:func:`share_log_stream` set it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from typing import Any

from taskforce.observability._faults import report_log_fault

__all__ = ["SinkStream", "share_log_stream"]

# Whether other processes may write to this process's streams: set in both once this one
# forks (or is a fork), and in a worker a server started otherwise (see share_log_stream).
_is_shared = False
# A record lock is the process's own: its threads take turns on this one first. Reentrant:
# a signal handler that logs mid-line must not wait for itself.
_threads = threading.RLock()


def share_log_stream() -> None:
    """Write every line from now on under the lock of the stream it goes to.

    For a process that other processes write the same standard error as, and that saw no
    fork to tell it so: a worker that uvicorn ``--workers`` spawned, or that gunicorn
    forked before it imported taskforce (without ``--preload``). A fork (``taskforce
    serve --workers N``, gunicorn ``--preload``) shares it by itself.
    """
    global _is_shared
    _is_shared = True


def _note_fork_in_child() -> None:
    """A fork is a process of its own: it shares the stream, and no thread of its parent
    holds its lock (one that did when it forked never lets go in the child)."""
    global _threads
    share_log_stream()
    _threads = threading.RLock()


os.register_at_fork(after_in_parent=share_log_stream, after_in_child=_note_fork_in_child)


class SinkStream:
    """The log stream, where a line the sink cannot take is dropped and counted, not raised.

    A reader that went away (a broken pipe), a full disk, a closed stream or any other
    failure of the stream (a binary one given text) must not fail the mission or
    request that logged: the line is lost, and counted as a fault
    of stage ``log`` (:func:`report_log_fault`). Each line is written and flushed in
    one :meth:`write`, so a line that fails is counted once. Without a stream at all
    (standard error closed before start) lines are dropped: they must not go to
    standard output, where ``taskforce run`` prints its result.

    Several processes may write one stream: the workers of ``taskforce serve --workers
    N`` and their supervisor, of uvicorn ``--workers`` or of gunicorn. On a pipe, the
    kernel keeps only a write of up to ``PIPE_BUF`` (4 KiB) whole: a longer line
    waiting for room goes in in pieces, and another process's line could land between
    them. Once this process shares its streams (see :func:`share_log_stream`), each
    line is written under a POSIX record lock on the stream's own file (the pipe, the
    socket, the file): every process writing it can take that lock, however it was
    started, and the kernel releases it when a process dies (also when the process
    closes any other descriptor of that file, such as a duplicate of standard error:
    the line under way may then be split). A stream without a file (in memory) no
    other process can write, and a process that shares nothing takes no lock.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        """Write and flush ``text``; on a failure of the stream, drop it and count it."""
        if self._stream is None:
            return len(text)
        if not _is_shared:
            self._write(text)
            return len(text)
        with _threads:
            fd = self._lock()
            try:
                self._write(text)
            finally:
                if fd is not None:
                    with contextlib.suppress(OSError):
                        fcntl.lockf(fd, fcntl.LOCK_UN)
        return len(text)

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except Exception:  # OSError, ValueError (a closed stream), or any stream's own
            report_log_fault()

    def flush(self) -> None:
        """Nothing to do: :meth:`write` flushed already."""

    def _lock(self) -> int | None:
        """Lock the stream's file; ``None`` when it has none, or one without locks."""
        try:
            fd = self._stream.fileno()
            fcntl.lockf(fd, fcntl.LOCK_EX)
        except Exception:  # no file (in memory), a closed one, or no locks on it
            return None
        return fd  # type: ignore[no-any-return]  # a stream's fileno() is an int
