"""The bound on the workspace as a whole: the bytes of its files and how many entries it has.

``tools.max_file_bytes`` bounds each file, not their number, so without this a
model could fill the disk with many files each under it, or its inodes with
empty files and folders. The count is kept in memory and moved by each write;
the workspace is walked (every folder, never through a symlink) only to set it
right: at the first write, when the count is older than :data:`RECOUNT_SECONDS`,
and before a write is refused on a count older than :data:`RECHECK_SECONDS`, so
what others removed (an operator's clean-up) or wrote (another worker of
``taskforce serve --workers``, another process) is seen within that long. A walk
keeps counting the writes under way, which it may not find on disk yet.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from taskforce.infrastructure.tools._workspace import Failure

__all__ = [
    "DEFAULT_MAX_WORKSPACE_BYTES",
    "DEFAULT_MAX_WORKSPACE_ENTRIES",
    "RECHECK_SECONDS",
    "RECOUNT_SECONDS",
    "WORKSPACE_FULL",
    "WorkspaceQuota",
    "measure",
    "walk",
]

#: The most bytes the regular files of the workspace may hold together (tools.max_workspace_bytes).
DEFAULT_MAX_WORKSPACE_BYTES = 1024**3
#: The most files, folders and other entries the workspace may hold (tools.max_workspace_entries).
DEFAULT_MAX_WORKSPACE_ENTRIES = 100_000
#: How long a count is trusted before a write walks the workspace again.
RECOUNT_SECONDS = 30.0
#: How old a count may be before a write it would refuse walks the workspace again first.
RECHECK_SECONDS = 1.0
#: The ``error_type`` of a write refused because the workspace is full.
WORKSPACE_FULL = "WorkspaceFull"


def walk(root: Path) -> Iterator[tuple[int, os.DirEntry[str]]]:
    """Every entry below ``root``, with a descriptor of the folder it is in.

    ``root`` itself may be a symlink (the file tools follow it too); below it, symlinks
    are entries, never followed. A folder that vanishes or cannot be read while the walk
    goes is passed over. The descriptor is open until the next entry of another folder:
    act on the entry relative to it (``dir_fd``). Runs blocking filesystem calls.
    """
    folders = [root]
    nofollow = 0  # for root, which is popped first
    while folders:
        folder = folders.pop()
        try:  # not through a folder swapped for a symlink since it was listed
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | nofollow)
        except OSError:
            continue
        nofollow = os.O_NOFOLLOW
        try:
            with os.scandir(fd) as scan:
                for entry in scan:
                    yield fd, entry
                    with contextlib.suppress(OSError):
                        if entry.is_dir(follow_symlinks=False):
                            folders.append(folder / entry.name)
        finally:
            os.close(fd)


def measure(root: Path) -> tuple[int, int]:
    """Walk ``root``: the bytes of its regular files and how many entries it holds, below it.

    ``root`` itself may be a symlink (the file tools follow it too); below it, symlinks
    are counted as entries, never followed. An entry that vanishes or cannot be read
    while the walk goes is passed over. Runs blocking filesystem calls.

    Returns:
        ``(bytes, entries)``; ``(0, 0)`` when ``root`` does not exist.
    """
    total = entries = 0
    for _, entry in walk(root):
        entries += 1
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
    return total, entries


class WorkspaceQuota:
    """The bytes and entries of a workspace, counted, with limits a write may not pass.

    Safe to use from several threads: a write reserves its growth under a lock, so
    writes that run at once cannot pass a limit together either.

    Args:
        root: The workspace directory (all sessions' folders together).
        max_bytes: The most bytes its regular files may hold together.
        max_entries: The most entries (files, folders, anything) it may hold.

    Raises:
        ValueError: A limit is less than 1.
    """

    def __init__(self, root: Path, *, max_bytes: int, max_entries: int) -> None:
        if max_bytes < 1 or max_entries < 1:
            raise ValueError(
                f"workspace limits must be at least 1, got {max_bytes} bytes, {max_entries} entries"
            )
        self.root = root
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._bytes = 0
        self._entries = 0
        # what the writes under way reserved: a walk may not find it on disk yet
        self._pending_bytes = 0
        self._pending_entries = 0
        self._counted_at: float | None = None

    @property
    def counted(self) -> tuple[int, int]:
        """The bytes and entries the count holds now (writes under way included)."""
        return self._bytes, self._entries

    def reserve(self, grow: int, new_entries: int) -> None:
        """Count a write in before it is made: ``grow`` bytes more, ``new_entries`` more.

        A write that shrinks the workspace (a smaller file replacing a larger one) is
        never refused. The write ends it with :meth:`commit` or :meth:`release`. Runs
        blocking filesystem calls (a walk, now and then).

        Raises:
            Failure: The write would take the workspace past a limit (``WorkspaceFull``);
                nothing was counted.
        """
        with self._lock:
            counted_at = self._counted_at
            if counted_at is None or time.monotonic() - counted_at >= RECOUNT_SECONDS:
                counted_at = self._recount()
            problem = self._past(grow, new_entries)
            if problem is not None and time.monotonic() - counted_at >= RECHECK_SECONDS:
                self._recount()
                problem = self._past(grow, new_entries)
            if problem is not None:
                raise Failure(problem, WORKSPACE_FULL)
            self._bytes += grow
            self._entries += new_entries
            self._pending_bytes += grow
            self._pending_entries += new_entries

    def commit(self, grow: int, new_entries: int) -> None:
        """End what :meth:`reserve` counted in for a write that was made: it stays counted."""
        with self._lock:
            self._pending_bytes -= grow
            self._pending_entries -= new_entries

    def release(self, grow: int, new_entries: int, *, entries_made: int = 0) -> None:
        """Take back what :meth:`reserve` counted in for a write that failed.

        Args:
            grow: The bytes reserved.
            new_entries: The entries reserved.
            entries_made: Those of them the write made before it failed (its folders),
                which stay counted.
        """
        with self._lock:
            self._pending_bytes -= grow
            self._pending_entries -= new_entries
            self._bytes -= grow
            self._entries -= new_entries - entries_made

    def _recount(self) -> float:
        found_bytes, found_entries = measure(self.root)
        self._bytes = found_bytes + self._pending_bytes
        self._entries = found_entries + self._pending_entries
        # dated from the walk's end: a walk slower than RECOUNT_SECONDS is not repeated
        # by every write after it
        self._counted_at = time.monotonic()
        return self._counted_at

    def _past(self, grow: int, new_entries: int) -> str | None:
        if grow > 0 and self._bytes + grow > self.max_bytes:
            return (
                f"would take the workspace past {self.max_bytes} bytes "
                "(tools.max_workspace_bytes), which its files fill"
            )
        if new_entries > 0 and self._entries + new_entries > self.max_entries:
            return (
                f"would take the workspace past {self.max_entries} files and folders "
                "(tools.max_workspace_entries): write into an existing file instead"
            )
        return None

    def __repr__(self) -> str:
        return (
            f"<WorkspaceQuota {self._bytes}/{self.max_bytes} bytes, "
            f"{self._entries}/{self.max_entries} entries>"
        )
