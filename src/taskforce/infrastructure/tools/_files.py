"""The workspace file tools ``file_read``, ``file_write`` and ``list_dir``.

Every path is resolved (following symlinks) and must land inside the session's
folder of the workspace; anything else is refused and logged as a security
event. The resolved path is then opened folder by folder, never through a
symlink, and the tools act relative to the folder so opened, so a folder
swapped for a symlink after the check cannot lead them out. Only regular files
are read or written: a FIFO, device or socket is refused without being waited
on. A write that replaces a file fills a new one and renames it over the old,
so nobody ever finds it half written; appends to one file take turns under a
lock on it. A write counts against the workspace's quota (see ``_quota``)
before it makes anything. All file IO runs in the tools' own bounded thread
pool, so neither a large file nor a hung call blocks the event loop or the
threads the rest of the service uses.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import heapq
import os
import re
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import structlog

from taskforce._atomic_write import remove_all_left_behind, write_atomically
from taskforce.core.interfaces.log import quoted, text_fields
from taskforce.core.interfaces.tools import ToolResult
from taskforce.infrastructure.tools._base import (
    INVALID_ARGUMENTS,
    BaseTool,
    error_result,
    ok_result,
)
from taskforce.infrastructure.tools._quota import (
    DEFAULT_MAX_WORKSPACE_BYTES,
    DEFAULT_MAX_WORKSPACE_ENTRIES,
    WorkspaceQuota,
    walk,
)
from taskforce.infrastructure.tools._thread_pool import ToolThreadPool
from taskforce.infrastructure.tools._workspace import (
    Failure,
    Location,
    PathRefused,
    Workspace,
    open_folder,
)

__all__ = [
    "DEFAULT_MAX_DIR_ENTRIES",
    "DEFAULT_MAX_FILE_BYTES",
    "LEFTOVER_SECONDS",
    "FileReadTool",
    "FileWriteTool",
    "ListDirTool",
    "remove_write_leftovers",
]

#: The largest file the file tools read, or make by a write or an append (tools.max_file_bytes).
DEFAULT_MAX_FILE_BYTES = 1024 * 1024
#: The most entries one ``list_dir`` result holds (tools.max_dir_entries).
DEFAULT_MAX_DIR_ENTRIES = 1000
# Refuse to follow a symlink swapped in between the path check and the open.
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# Opening a FIFO without a peer would wait for one; non-blocking, it returns at once
# (or fails with ENXIO for a writer), and the fstat that follows refuses it.
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
# A folder list_dir reads: never through a symlink, never waiting on a FIFO.
_LISTED_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _O_NOFOLLOW | _O_NONBLOCK
#: Start of the name of the file a replacing write fills before it is renamed over the target.
_TEMPORARY_PREFIX = ".taskforce-write-"
# write_atomically(prefix=_TEMPORARY_PREFIX) names it: the prefix, 16 hex digits, ".tmp".
_TEMPORARY_FILE = re.compile(re.escape(_TEMPORARY_PREFIX) + r"[0-9a-f]{16}\.tmp")
#: How long a write's temp file must have been left unwritten before start-up removes it.
LEFTOVER_SECONDS = 1.0
#: The longest an append waits for the lock on its file, held by another writer.
APPEND_LOCK_WAIT_SECONDS = 10.0
_FIRST_PAUSE_SECONDS = 0.001
_LAST_PAUSE_SECONDS = 0.05
# How often an append opens its file again because it was replaced while it waited for the lock.
_APPEND_ATTEMPTS = 100
_BUSY = "is being written by another writer; try again later"


class _NotRegular(Exception):
    """The path names something other than a regular file (FIFO, device, socket)."""


class _WorkspaceTool(BaseTool):
    """A tool confined to a workspace; maps refusals and OS errors to error results.

    Args:
        workspace_dir: The workspace; created on the first call if missing.
        pool: The thread pool to run file IO in; shared by the tools of one
            container. Without one the tool makes its own of the default size.
        max_file_bytes: The largest file the tool reads or leaves behind.
    """

    def __init__(
        self,
        workspace_dir: Path,
        pool: ToolThreadPool | None = None,
        *,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        if max_file_bytes < 1:
            raise ValueError(f"max_file_bytes must be at least 1, got {max_file_bytes}")
        self.workspace = Workspace(workspace_dir)
        self.pool = pool if pool is not None else ToolThreadPool()
        self.max_file_bytes = max_file_bytes

    #: whether the tool acts on a file (a path ending in ``/`` names none), and makes one
    _wants_file = False
    _makes_file = False

    async def _in_workspace(self, raw: str, action: Callable[[Location], Any]) -> ToolResult:
        root = self.workspace.current_root()

        def locate_and_act() -> Any:
            location = self.workspace.locate(raw, root)
            try:
                if self._wants_file and raw.endswith(("/", "/.")):
                    _refuse_folder_path(location, makes=self._makes_file)
                return action(location)
            finally:
                location.close()

        shown = quoted(raw)  # the caller's, of any length: its start, for the messages below
        try:
            return ok_result(await self.pool.run(locate_and_act))
        except PathRefused:
            structlog.get_logger(__name__).warning(
                "tool.path.refused", category="security", tool=self.name, **text_fields("path", raw)
            )
            return error_result(f"path {shown} is outside the workspace", "PathOutsideWorkspace")
        except Failure as exc:
            return error_result(f"path {shown} {exc}", exc.error_type)
        except _NotRegular:
            return error_result(
                f"path {shown} is not a regular file (FIFO, device or socket)", "NotARegularFile"
            )
        except FileNotFoundError:
            return error_result(f"path {shown} does not exist", "FileNotFound")
        except IsADirectoryError:
            return error_result(f"path {shown} is a directory", "IsADirectory")
        except NotADirectoryError:
            return error_result(f"path {shown} is not a directory", "NotADirectory")
        except PermissionError:
            return error_result(f"permission denied for {shown}", "PermissionDenied")
        except UnicodeEncodeError:  # said of the whole server path, which it must not show
            return error_result(f"invalid path {shown}: {_unnameable(raw)}", "InvalidPath")
        except ValueError as exc:  # e.g. an embedded NUL byte
            return error_result(f"invalid path {shown}: {exc}", "InvalidPath")
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:  # the model's mistake, not the disk's trouble
                return error_result(
                    f"invalid path {shown}: the path or a name in it is too long", "InvalidPath"
                )
            return error_result(f"cannot access {shown}: {exc.strerror or exc}", type(exc).__name__)


def _unnameable(raw: str) -> str:
    """Why ``raw`` cannot be a file name: where it holds a character no name can."""
    try:
        os.fsencode(raw)
    except UnicodeEncodeError as exc:  # a lone surrogate, from a JSON escape
        return f"character {exc.start} is an unpaired surrogate, which no file name holds"
    return "it holds a character no file name holds"


def _refuse_folder_path(location: Location, *, makes: bool) -> None:
    """Refuse a path that ends in ``/``, which names a folder, where a file is needed.

    Resolving the path drops the slash, so ``notes/`` would otherwise be read as the file
    ``notes``, or written as one. As open(2) does: an existing file is ``NotADirectory``,
    a missing name is a directory to a write (a read goes on to find it missing), and an
    existing folder is left to the tool's own check.
    """
    try:
        mode = None if location.missing else os.lstat(location.name, dir_fd=location.folder).st_mode
    except FileNotFoundError:
        mode = None
    if mode is None:
        if makes:
            raise IsADirectoryError(errno.EISDIR, "is a directory", location.name)
    elif not stat.S_ISDIR(mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", location.name)


def _check_regular(mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise IsADirectoryError
    if not stat.S_ISREG(mode):
        raise _NotRegular


def _existing(location: Location) -> Location:
    """``location``, whose folders all exist, else FileNotFoundError (for a read)."""
    if location.missing:
        raise FileNotFoundError(errno.ENOENT, "no such file or directory", location.name)
    return location


def _open_regular(location: Location, flags: int, mode: int = 0o644) -> int:
    """Open ``location`` without waiting on a FIFO or device; refuse all but regular files.

    The ``lstat`` spares a device the side effects of being opened; the ``fstat``
    of the open descriptor catches a swap between the two calls.
    """
    name, folder = location.name, location.folder
    try:
        _check_regular(os.lstat(name, dir_fd=folder).st_mode)
    except FileNotFoundError:
        if not flags & os.O_CREAT:
            raise
    try:
        fd = os.open(name, flags | _O_NOFOLLOW | _O_NONBLOCK, mode, dir_fd=folder)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO without a reader, swapped in after the lstat
            raise _NotRegular from exc
        raise
    try:
        _check_regular(os.fstat(fd).st_mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _reader(limit: int) -> Callable[[Location], str]:
    def read(location: Location) -> str:
        return _read_text(location, limit)

    return read


def _read_text(location: Location, limit: int) -> str:
    with open(_open_regular(_existing(location), os.O_RDONLY), "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise Failure(f"is larger than {limit} bytes (tools.max_file_bytes)", "FileTooLarge")
    try:
        if b"\x00" in data:
            raise ValueError("NUL byte")
        return data.decode("utf-8")
    except ValueError as exc:
        raise Failure("is binary, not UTF-8 text", "BinaryFile") from exc


class FileReadTool(_WorkspaceTool):
    """Reads a UTF-8 text file from the workspace (at most ``max_file_bytes``)."""

    name = "file_read"
    description = "Read a UTF-8 text file from the workspace and return its content."
    _wants_file = True
    parameters_schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "File path relative to the workspace."},
        },
        "required": ["path"],
        "additionalProperties": False,
    }

    async def run(self, args: Mapping[str, Any]) -> ToolResult:
        """Read the file at ``args["path"]``.

        Args:
            args: ``{"path": str}``.

        Returns:
            The file's text, or an error result (outside, missing, binary, too large).
        """
        return await self._in_workspace(args["path"], _reader(self.max_file_bytes))


def _replace(location: Location, data: bytes) -> None:
    """Write ``data`` to a new file beside ``location``, then rename it over it.

    A reader, a concurrent write or a write that fails part way (a full disk) never
    sees or leaves a mix: the file holds the old content or the new, whole. A file
    this process may not write is refused, as writing into it would be; the new
    file keeps what a write into the old one kept (see :func:`_keep_owner_and_mode`);
    a hard link to the old file keeps the old content.
    """
    name, folder = location.name, location.folder
    try:
        existing: os.stat_result | None = os.lstat(name, dir_fd=folder)
    except FileNotFoundError:
        existing = None
    if existing is not None:
        _check_regular(existing.st_mode)
        # as an open for writing would
        if not os.access(name, os.W_OK, dir_fd=folder, follow_symlinks=False):
            raise PermissionError(errno.EACCES, "the file is not writable", name)
    write_atomically(
        Path(name),
        data,
        dir_fd=folder,
        prefix=_TEMPORARY_PREFIX,
        mode=0o644,
        prepare=functools.partial(
            _hold, None if existing is None else functools.partial(_keep_owner_and_mode, existing)
        ),
        durable=False,
    )


def _hold(then: Callable[[int], None] | None, fd: int) -> None:
    """Lock the new file ``fd`` while it is written, then call ``then`` with it.

    The lock tells the start-up clean-up of another process (a worker of ``--workers``
    restarted meanwhile) that the file is no crash's leftover.
    """
    fcntl.flock(fd, fcntl.LOCK_EX)
    if then is not None:
        then(fd)


async def remove_write_leftovers(workspace_dir: Path, pool: ToolThreadPool) -> bool:
    """Remove the temp files of writes a crash cut off; log how many (``tool.tempfiles.removed``).

    A replacing ``file_write`` fills ``.taskforce-write-<random>.tmp`` and renames it over
    its target; killed in between (``kill -9``, a power loss), the process leaves it. One
    a live write holds locked, or written within :data:`LEFTOVER_SECONDS`, is left, and
    so is anything of such a name that is no regular file, never waited on.

    Args:
        workspace_dir: The workspace, all sessions' folders (walked, never through a symlink).
        pool: The tools' thread pool, which runs the walk.

    Returns:
        Whether a temp file was written within :data:`LEFTOVER_SECONDS`: a worker killed
        just before this process started (its replacement) leaves such a one, so the
        caller looks again once that time has passed.
    """
    removed, size, recent = await pool.run(functools.partial(_remove_leftovers, workspace_dir))
    if removed:
        structlog.get_logger(__name__).warning(
            "tool.tempfiles.removed", category="tool", files=removed, bytes=size
        )
    return recent


def _remove_leftovers(root: Path) -> tuple[int, int, bool]:
    fresh = time.time() - LEFTOVER_SECONDS
    recent = False

    def found() -> Iterator[tuple[int, str]]:
        nonlocal recent
        for folder, entry in walk(root):
            if not recent and _TEMPORARY_FILE.fullmatch(entry.name):
                with contextlib.suppress(OSError):
                    recent = entry.stat(follow_symlinks=False).st_mtime > fresh
            yield folder, entry.name

    removed, size = remove_all_left_behind(found(), _TEMPORARY_FILE, fresh=fresh)
    return removed, size, recent


def _keep_owner_and_mode(existing: os.stat_result, fd: int) -> None:
    """Give the new file ``fd`` the owner, group and mode of the ``existing`` one it replaces.

    The owner and group where this process may give them (as root): a file of another
    user in a shared workspace stays that user's. The permission bits whatever the umask,
    but no set-user-ID or set-group-ID bit, which a write by anyone but root clears too:
    new content must not run as the file's owner, least of all as this process's.
    """
    # before the chown: a process that may give a file away may not change it after
    os.fchmod(fd, stat.S_IMODE(existing.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
    with contextlib.suppress(OSError):  # only root may give a file away
        os.fchown(fd, existing.st_uid, existing.st_gid)


def _append(location: Location, data: bytes, limit: int, too_large: str) -> None:
    """Append ``data`` to ``location`` unless the file would pass ``limit``; all of it or none.

    The size check and the write hold an exclusive ``flock`` on the file: appends to one
    file, from the pool's threads or from other processes (``--workers``), take turns, so
    together they cannot pass the limit either. The file is never written in place: it is
    replaced by a copy with ``data`` added, as a write replaces it, so a process killed part
    way (SIGKILL, the OOM killer) leaves the old content under its name, and a file with
    another name (a hard link) is not written through. An append that fails part way (a
    full disk) leaves the file as it was, and a file it made is removed again; one killed
    leaves such a file empty.
    """
    for _ in range(_APPEND_ATTEMPTS):
        try:
            fd, made = _open_to_append(location)
        except FileExistsError:  # made by another writer meanwhile: open it as found
            continue
        try:
            _lock(fd)
            held = os.fstat(fd)
            if not _names(location, held):  # replaced while this call waited: append to the new one
                continue
            if held.st_size + len(data) > limit:
                raise Failure(too_large, "FileTooLarge")
            try:
                _replace(location, _read_whole(location, held) + data)
            except BaseException:
                if made and _names(location, held):
                    with contextlib.suppress(OSError):
                        os.unlink(location.name, dir_fd=location.folder)  # as it was: none
                raise
            return
        finally:
            os.close(fd)  # and with it the lock
    raise Failure(_BUSY, "FileBusy")


def _open_to_append(location: Location) -> tuple[int, bool]:
    """Open ``location`` to append to it, making it if there is none; whether this call made it.

    Raises:
        FileExistsError: Someone else made it between the two opens.
    """
    try:
        return _open_regular(location, os.O_WRONLY | os.O_APPEND), False
    except FileNotFoundError:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL
        return _open_regular(location, flags), True


def _lock(fd: int) -> None:
    """Take the exclusive ``flock`` on ``fd``, waiting at most ``APPEND_LOCK_WAIT_SECONDS``.

    Another append holds it only while it writes; a process of someone else's that holds
    it for good must not tie up a tool thread for good.
    """
    deadline = time.monotonic() + APPEND_LOCK_WAIT_SECONDS
    pause = _FIRST_PAUSE_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise Failure(_BUSY, "FileBusy") from None
            time.sleep(pause)
            pause = min(pause * 2, _LAST_PAUSE_SECONDS)


def _names(location: Location, held: os.stat_result) -> bool:
    """Whether ``location`` still names the file ``held`` describes."""
    try:
        now = os.lstat(location.name, dir_fd=location.folder)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _read_whole(location: Location, held: os.stat_result) -> bytes:
    """The content of the file ``held`` describes, opened by ``location`` (still its name)."""
    with open(_open_regular(location, os.O_RDONLY), "rb") as handle:
        if not os.path.samestat(os.fstat(handle.fileno()), held):
            raise Failure(_BUSY, "FileBusy")  # replaced under the lock, by a writer of another kind
        return handle.read(held.st_size)


def _size(location: Location) -> int | None:
    """The size of what ``location`` names now (not followed); None if nothing."""
    if location.missing:
        return None
    try:
        return os.lstat(location.name, dir_fd=location.folder).st_size
    except FileNotFoundError:
        return None


def _writer(
    content: str, *, append: bool, limit: int, quota: WorkspaceQuota
) -> Callable[[Location], int]:
    data = content.encode("utf-8")
    too_large = f"would be larger than {limit} bytes (tools.max_file_bytes)"

    def write(location: Location) -> int:
        if len(data) > limit:  # before anything is made or changed
            raise Failure(too_large, "FileTooLarge")
        folders = len(location.missing)
        size = _size(location)
        grow = len(data) if append or size is None else len(data) - size
        new_entries = folders + int(size is None)
        quota.reserve(grow, new_entries)
        try:
            location.make_folders()
            if append:
                _append(location, data, limit, too_large)
            else:
                _replace(location, data)
        except BaseException:
            quota.release(grow, new_entries, entries_made=folders - len(location.missing))
            raise
        quota.commit(grow, new_entries)
        return len(data)

    return write


class FileWriteTool(_WorkspaceTool):
    """Writes (or appends) UTF-8 text to a file in the workspace, within its quota.

    Args:
        workspace_dir: The workspace; created on the first call if missing.
        pool: The thread pool to run file IO in (see :class:`FileReadTool`).
        max_file_bytes: The largest file the tool leaves behind.
        max_workspace_bytes: The most bytes the workspace's files (all sessions'
            folders together) may hold; a write that would pass it fails.
        max_workspace_entries: The most files and folders the workspace may hold.
    """

    name = "file_write"
    description = (
        "Write UTF-8 text to a file in the workspace, creating parent directories; "
        "returns the number of bytes written."
    )
    _wants_file = True
    _makes_file = True
    parameters_schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "File path relative to the workspace."},
            "content": {"type": "string", "description": "The text to write."},
            "append": {
                "type": "boolean",
                "description": "Append instead of replacing the file.",
                "default": False,
            },
        },
        "required": ["path", "content"],
        "additionalProperties": False,
    }

    def __init__(
        self,
        workspace_dir: Path,
        pool: ToolThreadPool | None = None,
        *,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_workspace_bytes: int = DEFAULT_MAX_WORKSPACE_BYTES,
        max_workspace_entries: int = DEFAULT_MAX_WORKSPACE_ENTRIES,
    ) -> None:
        super().__init__(workspace_dir, pool, max_file_bytes=max_file_bytes)
        self.quota = WorkspaceQuota(
            self.workspace.root, max_bytes=max_workspace_bytes, max_entries=max_workspace_entries
        )

    async def run(self, args: Mapping[str, Any]) -> ToolResult:
        """Write ``args["content"]`` to ``args["path"]``.

        Args:
            args: ``{"path": str, "content": str, "append": bool = False}``.

        Returns:
            The number of bytes written, or an error result (``InvalidArguments`` for
            content UTF-8 cannot carry: a lone surrogate; ``FileTooLarge``,
            ``WorkspaceFull`` past a limit).
        """
        content: str = args["content"]
        try:
            write = _writer(
                content,
                append=args.get("append", False),
                limit=self.max_file_bytes,
                quota=self.quota,
            )
        except UnicodeEncodeError as exc:  # a lone surrogate, from a JSON escape
            return error_result(
                f"invalid arguments for tool 'file_write': argument 'content' is not UTF-8 "
                f"text: character {exc.start} is an unpaired surrogate",
                INVALID_ARGUMENTS,
            )
        return await self._in_workspace(args["path"], write)


def _kind(entry: os.DirEntry[str]) -> str:
    if entry.is_symlink():
        return "symlink"
    if entry.is_dir(follow_symlinks=False):
        return "dir"
    if entry.is_file(follow_symlinks=False):
        return "file"
    return "other"  # FIFO, device or socket: the file tools refuse these


def _lister(limit: int) -> Callable[[Location], Any]:
    def list_dir(location: Location) -> Any:
        return _list(location, limit)

    return list_dir


def _list(location: Location, limit: int) -> Any:
    """The first ``limit`` entries of ``location`` by name; the rest only counted, never held."""
    total = 0

    def counted(scan: Iterator[os.DirEntry[str]]) -> Iterator[os.DirEntry[str]]:
        nonlocal total
        for entry in scan:
            total += 1
            yield entry

    fd = open_folder(_existing(location).name, location.folder, _LISTED_FLAGS)
    try:
        # the entries' types are read through fd: it stays open until they are
        with os.scandir(fd) as scan:
            kept = heapq.nsmallest(limit, counted(scan), key=lambda entry: entry.name)
            entries = [{"name": entry.name, "type": _kind(entry)} for entry in kept]
    finally:
        os.close(fd)
    if total <= limit:
        return entries
    omitted = total - limit
    return {
        "entries": entries,
        "omitted": omitted,
        "note": (
            f"listing cut at {limit} entries (tools.max_dir_entries): "
            f"{omitted} more, after these by name, are not shown"
        ),
    }


class ListDirTool(_WorkspaceTool):
    """Lists a directory of the workspace, at most ``max_entries`` entries of it.

    Args:
        workspace_dir: The workspace; created on the first call if missing.
        pool: The thread pool to run file IO in (see :class:`FileReadTool`).
        max_entries: The most entries one result holds; a longer listing is cut.
    """

    name = "list_dir"
    description = (
        "List a workspace directory: entries sorted by name, each with its type "
        "(file, dir, symlink, or other for a FIFO, device or socket). A directory with "
        "more entries than the limit gives an object instead: the first entries by name, "
        "how many were omitted, and a note."
    )
    parameters_schema = {
        "type": "object",
        "properties": {
            "path": {
                "type": "string",
                "description": "Directory path relative to the workspace.",
                "default": ".",
            },
        },
        "required": [],
        "additionalProperties": False,
    }

    def __init__(
        self,
        workspace_dir: Path,
        pool: ToolThreadPool | None = None,
        *,
        max_entries: int = DEFAULT_MAX_DIR_ENTRIES,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        super().__init__(workspace_dir, pool)
        self.max_entries = max_entries

    async def run(self, args: Mapping[str, Any]) -> ToolResult:
        """List the directory at ``args["path"]`` (default: the workspace root).

        Args:
            args: ``{"path": str = "."}``.

        Returns:
            ``[{"name": str, "type": "file" | "dir" | "symlink" | "other"}, ...]``;
            for a directory of more than ``max_entries`` entries, ``{"entries": [the
            first max_entries by name], "omitted": int, "note": str}``, still a
            success; or an error result.
        """
        return await self._in_workspace(args.get("path", "."), _lister(self.max_entries))
