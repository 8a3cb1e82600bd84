"""How the file store touches the disk: reads, atomic replacement, durable folders, the
cross-process stripe locks, the clean-up of temp files a crash left, and the removal
of expired sessions.

Every function here blocks: the store runs them on its own threads.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from taskforce import _atomic_write
from taskforce.core.interfaces.executor import SESSION_ID_PATTERN
from taskforce.core.interfaces.state import ExpiryProgress, SessionExpiry

__all__ = [
    "LOCK_DIR",
    "expire_files",
    "fsync_dir",
    "make_dirs",
    "read_if_exists",
    "remove_temp_files",
    "stripe_lock",
    "unusable_locks",
    "unwritable",
    "write_atomically",
]

_LOCK_STRIPES = 64
#: The hidden folder of ``state_dir`` that holds the cross-process lock files.
LOCK_DIR = ".locks"
# _atomic_write.write_atomically(prefix=".<id>.") in write_atomically: ".<id>.<random hex>.tmp".
_TEMP_FILE = re.compile(r"\.(?P<session>[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127})\.[A-Za-z0-9_]+\.tmp")


def read_if_exists(
    path: Path, ttl: float | None = None, now: Callable[[], float] = time.time
) -> bytes | None:
    """The file's bytes, ``None`` if there is none; an ``OSError`` if it is not a regular file.

    With ``ttl``, a file last written longer ago than that (by the wall clock ``now``)
    reads as none: its session has expired, whether or not a sweep has removed it yet.
    """
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it changes nothing else)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with open(fd, "rb") as handle:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if ttl is not None and _is_expired(found, ttl, now):
            return None
        return handle.read()


def _is_expired(found: os.stat_result, ttl: float, now: Callable[[], float]) -> bool:
    """Whether a session file with this status was last written longer than ``ttl`` ago."""
    return found.st_mtime < now() - ttl


def fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def make_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each fsynced into its parent.

    Without that a power loss after the first write could lose the new folder, and
    the session files in it, even though each file and rename was fsynced.
    """
    if directory.is_dir():
        return
    if directory.parent != directory:
        make_dirs(directory.parent)
    try:
        directory.mkdir()
    except FileExistsError:
        return  # made by another writer (which syncs it), or not a folder: the write says
    fsync_dir(directory.parent)


def _lock(fd: int) -> None:
    # Held until the temp file has its new name: the start-up clean-up leaves a locked one alone.
    fcntl.flock(fd, fcntl.LOCK_EX)


def write_atomically(directory: Path, target: Path, data: bytes) -> None:
    make_dirs(directory)
    # Whatever fails, even an interrupt mid-write, no temp file is left behind.
    _atomic_write.write_atomically(
        target, data, prefix=f".{target.stem}.", mode=0o600, prepare=_lock
    )
    fsync_dir(directory)


@contextlib.contextmanager
def stripe_lock(directory: Path, session_id: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold the cross-process lock of the session's stripe (a fixed set of lock files).

    Yields whether it is held: always when ``wait``, else only if no one held it.
    """
    make_dirs(directory)
    locks = directory / LOCK_DIR
    locks.mkdir(exist_ok=True)
    stripe = zlib.crc32(session_id.encode()) % _LOCK_STRIPES
    fd = os.open(locks / f"{stripe:02d}", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def unwritable(directory: Path) -> str | None:
    """Why no session file could be written in ``directory`` now, ``None`` if one could.

    Writes nothing: the directory, or the nearest parent a first write would create it
    in, must be a directory this process may create files in (a read-only mount is not,
    nor one on a file system with no block or no inode left for this process).
    """
    existing = directory
    while True:
        try:
            mode = os.stat(existing).st_mode
            break
        except FileNotFoundError:
            if existing.parent == existing:
                raise
            existing = existing.parent
    if not stat.S_ISDIR(mode):
        return "NotADirectoryError: state_dir is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return "PermissionError: state_dir is not writable"
    if _is_full(existing):
        return "OSError: no space left on state_dir's file system"
    return unusable_locks(directory) if existing == directory else None


def _is_full(directory: Path) -> bool:
    """Whether the file system of ``directory`` has no block, or no inode, this process may use.

    Root may use the blocks a file system reserves; a count of 0 in all (a file system
    that keeps no such count) is no answer, and neither is one ``statvfs`` cannot give.
    """
    try:
        fs = os.statvfs(directory)
    except OSError:
        return False
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    blocks, inodes = (fs.f_bfree, fs.f_ffree) if is_root else (fs.f_bavail, fs.f_favail)
    return (fs.f_blocks > 0 and blocks == 0) or (fs.f_files > 0 and inodes == 0)


def unusable_locks(directory: Path) -> str | None:
    """Why the stripe locks in ``directory`` could not all be taken now, ``None`` if they could.

    Writes nothing. Every write takes its session's stripe lock, so a ``.locks`` that is
    no directory, or a lock file this process may not open (left by another user, as a
    ``taskforce run`` under ``sudo`` leaves them), fails those writes whatever
    ``state_dir`` allows.
    """
    locks = directory / LOCK_DIR
    try:
        mode = os.lstat(locks).st_mode
    except FileNotFoundError:
        return None  # made by the first write
    if not stat.S_ISDIR(mode):
        return f"NotADirectoryError: state_dir/{LOCK_DIR} is not a directory"
    if not os.access(locks, os.W_OK | os.X_OK):
        return f"PermissionError: state_dir/{LOCK_DIR} is not writable"
    for stripe in range(_LOCK_STRIPES):
        name = f"{LOCK_DIR}/{stripe:02d}"
        try:
            mode = os.stat(directory / name).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(mode):
            return f"IsADirectoryError: state_dir/{name} is a directory"
        if not os.access(directory / name, os.R_OK | os.W_OK):
            return f"PermissionError: state_dir/{name} is not writable"
    return None


def remove_temp_files(directory: Path) -> tuple[int, int]:
    """Remove the temp files no writer holds (as ``remove_all_left_behind``); return how
    many and their bytes.

    A writer makes its temp file under its session's stripe lock and locks the file
    only after: a temp file whose stripe is held now may be one made this instant, not
    locked yet, and is left for the next start (another worker writes there).
    """
    return _atomic_write.remove_all_left_behind(
        directory, _TEMP_FILE, hold=lambda m: stripe_lock(directory, m["session"], wait=False)
    )


def expire_files(
    directory: Path,
    ttl: float,
    stop: threading.Event,
    progress: ExpiryProgress,
    now: Callable[[], float] = time.time,
) -> SessionExpiry:
    """Remove the session files last written longer than ``ttl`` ago (by the wall clock
    ``now``), until ``stop`` is set. Each file removed is counted in ``progress`` at once.

    A file whose session's stripe lock is held (a write of that session, here or in
    another process, or another sweep) is left for the next sweep; under the lock it is
    looked at again, so a session written meanwhile stays. Temp files, the lock folder
    and names no session has are never touched. A file that cannot be removed is counted
    in ``failed`` and passed over.

    Raises:
        OSError: ``directory`` could not be read (one that does not exist holds nothing).
    """
    expired = failed = 0
    error: str | None = None
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return SessionExpiry(0)
    with entries:
        for entry in entries:
            if stop.is_set():
                break
            session_id = entry.name.removesuffix(".json")
            if session_id == entry.name or not SESSION_ID_PATTERN.fullmatch(session_id):
                continue  # a temp file (".x.tmp"), the lock folder, a file of someone else's
            try:
                if not _is_expired_file(entry.stat(follow_symlinks=False), ttl, now):
                    continue
                with stripe_lock(directory, session_id, wait=False) as held:
                    # a write that held the lock may have replaced the file: look again
                    if not held or not _is_expired_file(os.lstat(entry.path), ttl, now):
                        continue
                    os.unlink(entry.path)
            except FileNotFoundError:
                continue  # removed by another sweep meanwhile
            except OSError as exc:
                failed += 1
                error = error or f"{type(exc).__name__}: {exc.strerror or exc.errno}"
                continue
            expired += 1
            progress.expired += 1
    return SessionExpiry(expired, failed, error)


def _is_expired_file(found: os.stat_result, ttl: float, now: Callable[[], float]) -> bool:
    """Whether this is a regular file last written longer than ``ttl`` ago."""
    return stat.S_ISREG(found.st_mode) and _is_expired(found, ttl, now)
