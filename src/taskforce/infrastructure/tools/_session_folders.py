"""The session folders of the workspace that expiry removes, and the missions that keep them.

With ``state.session_ttl_seconds`` set, each sweep of expired sessions also removes
every session folder directly below ``workspace_dir`` in which nothing was modified
for longer than the TTL (the newest modification time of the folder and of everything
in it, never through a symlink), unless a mission of its session runs in this process.
A mission that starts touches its session's folder, so the folder ages with the
session. All of it is local to this process's workspace: right for replicas that
each have their own, whichever replica's sweep deleted the session's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import stat
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from taskforce.infrastructure.tools._quota import walk
from taskforce.infrastructure.tools._thread_pool import ToolThreadPool
from taskforce.infrastructure.tools._workspace import is_session_folder_name, session_folder_name

__all__ = ["FolderRemoval", "SessionFolders", "is_session_folder_name"]


@dataclass(frozen=True, slots=True)
class FolderRemoval:
    """What one pass over the workspace did.

    Attributes:
        removed: the idle session folders it removed.
        failed: the idle session folders it could not remove (wholly), left for the next pass.
        error: the first failure's class and words, without a path; ``None`` without one.
    """

    removed: int = 0
    failed: int = 0
    error: str | None = None


class SessionFolders:
    """The session folders of one workspace: their missions in flight, their removal.

    Args:
        root: the workspace directory.
        ttl_seconds: how long a folder may go unmodified before a pass removes it.
        pool: the tools' thread pool, which runs the blocking file work.

    Raises:
        ValueError: ``ttl_seconds`` is not above 0.
    """

    def __init__(self, root: Path, ttl_seconds: float, pool: ToolThreadPool) -> None:
        if not ttl_seconds > 0:
            raise ValueError(f"ttl_seconds must be above 0, got {ttl_seconds!r}")
        self.root = Path(root)
        self.ttl_seconds = ttl_seconds
        self._pool = pool
        # The missions of this process in flight, by folder name; read by the pool's threads.
        self._in_flight: Counter[str] = Counter()
        self._touches: set[asyncio.Task[None]] = set()

    def is_in_use(self, name: str) -> bool:
        """Whether a mission of the session whose folder is ``name`` runs in this process."""
        return self._in_flight[name] > 0

    def enter(self, session_id: str) -> str:
        """Count a mission of ``session_id`` in flight and touch its folder, if it has one.

        The touch runs on the pool in a task of its own, never waited for: a pool that
        calls hung in keeps no mission from starting. A folder that cannot be touched
        (there is none yet, the pool is closed) is passed over: the count alone keeps it
        while the mission runs.

        Returns:
            The folder's name, to hand to :meth:`leave` when the mission ends.
        """
        name = session_folder_name(session_id)
        self._in_flight[name] += 1
        task = asyncio.create_task(self._touch(name))
        self._touches.add(task)
        task.add_done_callback(self._touches.discard)
        return name

    async def _touch(self, name: str) -> None:
        with contextlib.suppress(Exception):
            await self._pool.run(functools.partial(_touch, self.root, name))

    async def touched(self) -> None:
        """Wait for the touches under way to end."""
        while self._touches:
            await asyncio.wait(set(self._touches))

    def leave(self, name: str) -> None:
        """Count a mission :meth:`enter` counted as ended."""
        self._in_flight[name] -= 1
        if self._in_flight[name] <= 0:
            del self._in_flight[name]

    async def remove_idle(self) -> FolderRemoval:
        """Remove every session folder idle for longer than the TTL and not in use.

        Returns:
            What the pass did.

        Raises:
            RuntimeError: the pool was closed.
            OSError: the workspace could not be listed (a missing one has nothing to remove).
        """
        remove = functools.partial(
            _remove_idle, self.root, time.time() - self.ttl_seconds, self.is_in_use
        )
        return await self._pool.run(remove)


def _touch(root: Path, name: str) -> None:
    """Set the modification time of ``root``/``name`` to now, not through a symlink."""
    with contextlib.suppress(FileNotFoundError):
        os.utime(root / name, follow_symlinks=False)


def _remove_idle(root: Path, cutoff: float, is_in_use: Callable[[str], bool]) -> FolderRemoval:
    """Remove each session folder of ``root`` not modified since ``cutoff`` and not in use."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return FolderRemoval()
    removed = failed = 0
    error: str | None = None
    try:
        with os.scandir(fd) as scan:
            names = [entry.name for entry in scan if is_session_folder_name(entry.name)]
        for name in names:
            if is_in_use(name) or not _is_idle(fd, root / name, name, cutoff):
                continue
            if is_in_use(name):  # a mission started while the folder was walked
                continue
            try:
                shutil.rmtree(name, dir_fd=fd)
            except OSError as exc:
                failed += 1
                if error is None:
                    error = f"{type(exc).__name__}: {exc.strerror or 'failed'}"
            else:
                removed += 1
    finally:
        os.close(fd)
    return FolderRemoval(removed, failed, error)


def _is_idle(fd: int, path: Path, name: str, cutoff: float) -> bool:
    """Whether ``name`` in the folder ``fd`` (``path``) is a folder, not a symlink, in
    which nothing, itself included, was modified since ``cutoff``."""
    try:
        own = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return False
    if not stat.S_ISDIR(own.st_mode) or own.st_mtime >= cutoff:
        return False
    for _, entry in walk(path):
        try:
            if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                return False
        except OSError:  # gone meanwhile: it says nothing of the folder's age
            continue
    return True
