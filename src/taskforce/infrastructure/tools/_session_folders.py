"""The session folders of the workspace that expiry removes, and the missions that keep them.

With ``state.session_ttl_seconds`` set, each sweep of expired sessions also removes
every session folder directly below ``workspace_dir`` in which nothing was modified
for longer than the TTL (the newest modification time of the folder and of everything
in it, never through a symlink), unless a mission of its session holds it.

A mission holds its session's folder in two ways, both seen by every process on the
workspace (the workers of one ``taskforce serve --workers N``, a fleet on a shared
volume), not only its own:

- a shared ``flock`` on the folder, taken in the background when the mission starts
  (or, for a folder its tools make later, at the next refresh) and kept until the
  last mission of the session in the process ends. A sweep takes an exclusive one,
  without waiting, before it removes a folder: one held is passed over. Linux keeps
  ``flock`` locks per host (NFS too, for a folder), so this holds among the processes
  of one machine;
- the folder's modification time, set when the mission starts and again every quarter
  of the TTL while it runs, which holds across hosts whose clocks agree within
  three quarters of the TTL.

A folder is removed whole or not at all: under the exclusive lock, checked once more,
it is renamed to a tombstone (``.taskforce-swept-<16 hex digits>``, no session
folder's name) and only then deleted, so a mission that starts meanwhile finds no
folder (its tools make a new one), never half of one; a tombstone a pass could not
delete wholly is deleted by the next.

Ages are told by a :class:`SteadyWallClock`: a step forward of the wall clock removes
no folder early.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import fcntl
import functools
import os
import re
import secrets
import shutil
import stat
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from taskforce.infrastructure._wall_clock import SteadyWallClock
from taskforce.infrastructure.tools._quota import walk
from taskforce.infrastructure.tools._thread_pool import ToolThreadPool
from taskforce.infrastructure.tools._workspace import is_session_folder_name, session_folder_name

__all__ = ["FolderRemoval", "SessionFolders", "is_session_folder_name"]

_TOMBSTONE_PREFIX = ".taskforce-swept-"
# What a pass renames a folder to before it deletes it: the prefix and 16 hex digits.
_TOMBSTONE = re.compile(re.escape(_TOMBSTONE_PREFIX) + r"[0-9a-f]{16}")
# A folder opened to be locked: flock needs a descriptor open for reading, not O_PATH.
_LOCK_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
# What a folder's modification time is refreshed at while a mission holds it: the TTL's.
_REFRESHES_PER_TTL = 4


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
    """The session folders of one workspace: the missions that hold them, their removal.

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
        # What a folder's age is told by: a step forward of the wall clock removes none early.
        self._clock = SteadyWallClock()
        # The descriptors holding a shared lock on the folders of those missions, by name.
        self._held: dict[str, int] = {}
        self._refreshes: set[asyncio.Task[None]] = set()
        self._keeper: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def refresh_seconds(self) -> float:
        """How often the folders of the missions in flight are touched again."""
        return self.ttl_seconds / _REFRESHES_PER_TTL

    def is_in_use(self, name: str) -> bool:
        """Whether a mission of the session whose folder is ``name`` runs in this process."""
        return self._in_flight[name] > 0

    def is_held(self, name: str) -> bool:
        """Whether this process holds the lock on the folder ``name``."""
        return name in self._held

    def enter(self, session_id: str) -> str:
        """Count a mission of ``session_id`` in flight, and touch and lock its folder.

        The file work runs on the pool in a task of its own, never waited for: a pool
        that calls hung in keeps no mission from starting. A folder that cannot be
        touched or locked (there is none yet, a sweep is removing it, the pool is
        closed) is tried again at the next refresh; the count keeps it from this
        process's sweeps meanwhile. The first mission in flight starts the refreshes.

        Returns:
            The folder's name, to hand to :meth:`leave` when the mission ends.
        """
        name = session_folder_name(session_id)
        self._in_flight[name] += 1
        self._start_refresh([name])
        if self._keeper is None and not self._closed:
            # In an empty context, as the sweep: it outlives the mission that started it.
            self._keeper = asyncio.create_task(
                self._keep(), name="taskforce-session-folders", context=contextvars.Context()
            )
        return name

    def leave(self, name: str) -> None:
        """Count a mission :meth:`enter` counted as ended; the last one of its session
        releases the folder's lock, and the last of all stops the refreshes."""
        self._in_flight[name] -= 1
        if self._in_flight[name] > 0:
            return
        del self._in_flight[name]
        held = self._held.pop(name, None)
        if held is not None:
            os.close(held)
        if not self._in_flight and self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None

    async def touched(self) -> None:
        """Wait for the touches and locks under way to end."""
        while self._refreshes:
            await asyncio.wait(set(self._refreshes))

    def close(self) -> None:
        """Stop the refreshes and release every lock held; a refresh still under way
        releases what it takes as it ends."""
        self._closed = True
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None
        held, self._held = self._held, {}
        for fd in held.values():
            os.close(fd)

    def _start_refresh(self, names: list[str]) -> asyncio.Task[None]:
        # A task of its own, which cancelling the keeper leaves to end: what its pool
        # call locked is then kept or released, never lost.
        task = asyncio.create_task(self._refresh(names))
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)
        return task

    async def _refresh(self, names: list[str]) -> None:
        """Touch the folders ``names`` and lock those not yet held, on the pool."""
        to_lock = [name for name in names if name not in self._held]
        try:
            taken = await self._pool.run(functools.partial(_refresh, self.root, names, to_lock))
        except Exception:  # the pool is closed: nothing to keep
            return
        for name, fd in taken.items():
            if not self._closed and self.is_in_use(name) and name not in self._held:
                self._held[name] = fd
            else:  # the missions ended meanwhile, or another refresh took it first
                os.close(fd)

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            # One refresh at a time: a pool that calls hung in piles none up.
            await asyncio.wait({self._start_refresh(list(self._in_flight))})

    async def remove_idle(self) -> FolderRemoval:
        """Remove every session folder idle for longer than the TTL and not held, and the
        tombstones earlier passes left.

        Returns:
            What the pass did.

        Raises:
            RuntimeError: the pool was closed.
            OSError: the workspace could not be listed (a missing one has nothing to remove).
        """
        remove = functools.partial(
            _remove_idle, self.root, self._clock() - self.ttl_seconds, self.is_in_use
        )
        return await self._pool.run(remove)


def _refresh(root: Path, names: Iterable[str], to_lock: Iterable[str]) -> dict[str, int]:
    """Set the modification time of each folder ``names`` to now (not through a symlink),
    and take a shared lock on each of ``to_lock``.

    Returns:
        The descriptors now holding a lock, by name: a folder missing, being removed
        (its lock taken by a sweep) or on a filesystem without ``flock`` has none.
    """
    for name in names:
        with contextlib.suppress(OSError):
            os.utime(root / name, follow_symlinks=False)
    taken: dict[str, int] = {}
    for name in to_lock:
        fd = _lock(root, name)
        if fd is not None:
            taken[name] = fd
    return taken


def _lock(root: Path, name: str) -> int | None:
    """A descriptor of ``root``/``name`` holding a shared lock on it, or ``None``."""
    try:
        fd = os.open(root / name, _LOCK_FLAGS)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        # Still the folder of that name, not one a sweep renamed away before it was locked.
        if os.path.samestat(os.fstat(fd), os.stat(root / name, follow_symlinks=False)):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _remove_idle(root: Path, cutoff: float, is_in_use: Callable[[str], bool]) -> FolderRemoval:
    """Remove each session folder of ``root`` not modified since ``cutoff`` and not held,
    and each tombstone no other pass is removing."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return FolderRemoval()
    removed = failed = 0
    error: str | None = None
    try:
        with os.scandir(fd) as scan:
            names = [entry.name for entry in scan]
        for name in names:
            try:
                if _TOMBSTONE.fullmatch(name):
                    taken = _open_locked(fd, name, fcntl.LOCK_EX)
                    tombstone = name
                elif is_session_folder_name(name):
                    taken, tombstone = _take(fd, root, name, cutoff, is_in_use)
                else:
                    continue
                if taken is None:
                    continue
                try:  # under the lock, which keeps other passes off the tombstone
                    shutil.rmtree(tombstone, dir_fd=fd)
                finally:
                    os.close(taken)
            except OSError as exc:
                failed += 1
                if error is None:
                    error = f"{type(exc).__name__}: {exc.strerror or 'failed'}"
            else:
                removed += 1
    finally:
        os.close(fd)
    return FolderRemoval(removed, failed, error)


def _open_locked(fd: int, name: str, operation: int) -> int | None:
    """Open the folder ``name`` of the folder ``fd`` and lock it (``operation``, without
    waiting); on a filesystem without ``flock``, open it only.

    Returns:
        Its descriptor; ``None`` when it is gone, no folder (a symlink, a file), or
        locked by another (a mission, another pass).

    Raises:
        OSError: it could not be opened (no permission).
    """
    try:
        folder = os.open(name, _LOCK_FLAGS, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise
    try:
        fcntl.flock(folder, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(folder)
        return None
    except OSError:  # a filesystem without flock: the modification times alone
        pass
    return folder


def _take(
    fd: int, root: Path, name: str, cutoff: float, is_in_use: Callable[[str], bool]
) -> tuple[int | None, str]:
    """Rename the folder ``name`` of ``root`` (open as ``fd``) to a tombstone if it is
    idle since ``cutoff`` and no mission holds it.

    Returns:
        A descriptor of the folder holding its exclusive lock, and the tombstone's name;
        ``None`` and ``name`` when the folder stays.

    Raises:
        OSError: the folder could not be opened (but for a missing one, a symlink or a
            file) or renamed.
    """
    if is_in_use(name):
        return None, name
    try:
        own = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return None, name
    if not stat.S_ISDIR(own.st_mode) or own.st_mtime >= cutoff:
        return None, name
    folder = _open_locked(fd, name, fcntl.LOCK_EX)
    if folder is None:  # a mission holds it, in this process or another
        return None, name
    try:
        # Checked again under the lock: a mission that started meanwhile touched it.
        if not is_in_use(name) and _is_idle(root / name, cutoff):
            own = os.fstat(folder)
            # Still idle, and still the folder of that name (not one a mission made
            # after another pass removed this one).
            same = os.path.samestat(own, os.stat(name, dir_fd=fd, follow_symlinks=False))
            if own.st_mtime < cutoff and same:
                tombstone = f"{_TOMBSTONE_PREFIX}{secrets.token_hex(8)}"
                os.rename(name, tombstone, src_dir_fd=fd, dst_dir_fd=fd)
                return folder, tombstone
    except BaseException:
        os.close(folder)
        raise
    os.close(folder)
    return None, name


def _is_idle(path: Path, cutoff: float) -> bool:
    """Whether nothing in the folder ``path`` (never through a symlink) was modified since
    ``cutoff``."""
    for _, entry in walk(path):
        try:
            if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                return False
        except OSError:  # gone meanwhile: it says nothing of the folder's age
            continue
    return True
