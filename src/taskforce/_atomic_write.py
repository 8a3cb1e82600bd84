"""Replace a file whole: write a new file beside it, then rename the new one over it.

The state store's session files, the file tools' ``file_write`` and the metrics
targets file are written this way, so a reader finds the old content or the new,
never a mix, and a write that fails part way (a full disk, an interrupt) leaves
the old file and no temporary one behind. What differs between them (the new
file's mode, a lock held while it is written, whether it is fsynced) the caller
says. Imports nothing of the project, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["remove_all_left_behind", "write_all", "write_atomically"]


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the file descriptor ``fd``, however many calls it takes.

    Raises:
        OSError: A write failed; part of ``data`` may have been written before it.
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_atomically(
    target: Path,
    data: bytes,
    *,
    prefix: str,
    dir_fd: int | None = None,
    mode: int = 0o600,
    prepare: Callable[[int], None] | None = None,
    durable: bool = True,
) -> None:
    """Write ``data`` to a new file beside ``target``, then rename it over ``target``.

    The new file is made exclusively (never through a symlink, never an existing
    file). A durable one is renamed while still open, so a lock ``prepare`` takes
    on it is held until it has its name; any other after it is closed. Whatever
    fails, even an interrupt, the new file is removed again and ``target`` is left
    as it was.

    Args:
        target: The file to replace (or make); its folder must exist.
        dir_fd: A descriptor of the folder ``target`` is in, taken relative to it:
            no symlink swapped in on the way since it was opened is followed.
        data: The new content, all of it.
        prefix: The start of the new file's name, which goes on with random
            characters and ends in ``.tmp``.
        mode: The new file's permission bits, less the umask (as ``os.open``).
        prepare: Called with the new file's descriptor before ``data`` is written:
            a lock, an owner or exact permission bits.
        durable: Whether the new file is fsynced before the rename. The folder is
            not: a caller that needs the rename itself durable fsyncs it after.

    Raises:
        OSError: The new file could not be made, written or renamed.
    """
    temporary = target.with_name(f"{prefix}{secrets.token_hex(8)}.tmp")
    within = {} if dir_fd is None else {"src_dir_fd": dir_fd, "dst_dir_fd": dir_fd}
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode, dir_fd=dir_fd)
    try:
        try:
            if prepare is not None:
                prepare(fd)
            write_all(fd, data)
            if durable:
                os.fsync(fd)  # reports any write error, so the rename may come before the close
                os.replace(temporary, target, **within)
        finally:
            os.close(fd)
        if not durable:  # after the close, which may be the first to report a write error (NFS)
            os.replace(temporary, target, **within)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=dir_fd)
        raise


def remove_all_left_behind(
    where: Path | Iterable[tuple[int | None, str]],
    name: re.Pattern[str],
    *,
    fresh: float = 0.0,
    hold: Callable[[re.Match[str]], contextlib.AbstractContextManager[bool]] | None = None,
) -> tuple[int, int]:
    """Remove the temp files writes left behind (a crash between a write and its rename)
    whose whole name matches ``name``; return how many and their bytes.

    Only a regular file is removed: anything else of such a name (a FIFO, a socket) is
    left, and never opened in a way that waits. A writer holds its temp file locked
    (``flock``, through ``prepare``) while it writes, and such a file is left too, as is
    one that cannot be opened, read or removed.

    Args:
        where: A folder, listed (one that does not exist holds none), or the entries to look
            at: each a descriptor of its folder and its name there (a walk's), or ``None``
            and its path.
        fresh: A modification time (``time.time()``) after which a file is left: a writer
            that locks its file only after making it may not hold it yet.
        hold: Given the name's match, a context held while the file is looked at (a lock
            its writers take), which yields whether it may be; one it raises over is left.

    Raises:
        OSError: The folder ``where`` cannot be listed.
    """
    if isinstance(where, Path):
        try:
            where = [(None, str(where / entry)) for entry in os.listdir(where)]
        except FileNotFoundError:
            return 0, 0
    removed = size = 0
    for folder, found in where:
        match = name.fullmatch(os.path.basename(found))
        if match is None:
            continue
        with (
            contextlib.suppress(OSError),
            contextlib.nullcontext(True) if hold is None else hold(match) as held,
        ):
            length = _remove_left_behind(found, folder, fresh) if held else -1
            if length >= 0:
                removed += 1
                size += length
    return removed, size


def _remove_left_behind(name: str, dir_fd: int | None, fresh: float) -> int:
    """Remove the temp file ``name`` unless it is to be left; return its bytes (``-1``: left)."""
    # O_NONBLOCK: a FIFO of that name must not hold start-up until a writer opens it
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode) or (fresh and found.st_mtime > fresh):
            return -1  # no temp file of ours, or one a write has only just made
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a live write holds it
        os.unlink(name, dir_fd=dir_fd)
    finally:
        os.close(fd)
    return found.st_size
