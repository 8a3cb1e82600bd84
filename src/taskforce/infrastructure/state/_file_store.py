"""The file state store: one JSON document per session, replaced atomically on every write.

A write goes to a temp file beside the target (locked while it is written), is
fsynced and renamed over the old file, so a reader sees the old or the new
state, never half of one; the folder is fsynced after the rename, and a folder
the write creates is fsynced into its parent. A file that cannot be parsed is reported, never
overwritten or deleted by a load.

The document keeps its mission records last, one per line, so an append
splices the new record in without parsing or re-encoding the older ones.
Writes of one session are ordered by an asyncio lock in the process and by an
``flock`` on one of a fixed set of lock files (in ``.locks/``) across
processes sharing the directory (``taskforce serve --workers``).

Only regular files are read: a FIFO, a device or a socket where a session's file
should be (a symlink to one too) fails the call at once instead of blocking one
of the store's threads for good. The threads are daemons, so a call stuck in
the kernel anyway (a hung network filesystem) cannot keep a stopped service from
exiting; ``threads_busy`` against ``thread_count`` tells ``/health`` when all are busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import re
import stat
import threading
import weakref
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from taskforce._atomic_write import write_atomically
from taskforce.core.interfaces.state import (
    AppendResult,
    MissionRecord,
    SessionState,
    StateStoreHealth,
)
from taskforce.errors import StateCorruptedError, StateStoreError
from taskforce.infrastructure._daemon_executor import DaemonThreadExecutor
from taskforce.infrastructure.state._common import (
    StateLimits,
    check_session_id,
    dumps,
    records_to_drop,
)

__all__ = ["LOCK_DIR", "FileStateStore"]

_LOG = structlog.get_logger(__name__)
_R = TypeVar("_R")
_MARK = b'"missions": ['
_TAIL = b"]}"
_LOCK_STRIPES = 64
#: Threads of a store unless told otherwise (``state.threads``): writes of one session
#: are ordered anyway, so a few threads serve many sessions.
DEFAULT_THREADS = 4
#: The hidden folder of ``state_dir`` that holds the cross-process lock files.
LOCK_DIR = ".locks"
# write_atomically(prefix=".<id>.") in _write_atomically: ".<id>.<random hex>.tmp".
_TEMP_FILE = re.compile(r"\.(?P<session>[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127})\.[A-Za-z0-9_]+\.tmp")


@dataclass(slots=True)
class _Document:
    """A session file split into the JSON text before, of and after its records."""

    head: bytes
    records: list[bytes]

    @classmethod
    def parse(cls, data: bytes, session_id: str, path: Path) -> _Document:
        """Split ``data``; our own layout is split without decoding a record."""
        lines = data.split(b"\n")
        body = lines[1:-1]
        if (
            len(lines) >= 2
            and lines[0].endswith(_MARK)
            and lines[-1] == _TAIL
            and all(line.endswith(b",") for line in body[:-1])
        ):
            head = lines[0]
            if _is_json_object(head[: -len(_MARK)].rstrip(b", ") + b"}"):
                records = [line[:-1] for line in body[:-1]] + body[-1:]
                return cls(head, records)
        return cls.from_state(_decode(data, session_id, path))

    @classmethod
    def from_state(cls, state: SessionState) -> _Document:
        """Lay ``state`` out with its ``missions`` list last, one record per line."""
        missions = state.get("missions")
        if not isinstance(missions, list):
            return cls(dumps(state), [])
        others = dumps({k: v for k, v in state.items() if k != "missions"})
        head = others[:-1] + (b", " if len(others) > 2 else b"") + _MARK
        return cls(head, [dumps(record, "mission record") for record in missions])

    def to_bytes(self) -> bytes:
        if not self.head.endswith(_MARK):
            return self.head
        if not self.records:
            return self.head + b"\n" + _TAIL
        return b"\n".join([self.head, b",\n".join(self.records), _TAIL])


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(data: bytes | str) -> Any:
    """Parse JSON as the store writes it: ``NaN`` and ``Infinity`` are not JSON.

    Raises:
        ValueError: not JSON (or not UTF-8).
        RecursionError: nested deeper than the parser goes.
    """
    return json.loads(data, parse_constant=_not_a_number)


def _is_json_object(data: bytes) -> bool:
    try:
        return isinstance(_loads(data), dict)
    except (ValueError, RecursionError):
        return False


def _decode(data: bytes, session_id: str, path: Path) -> SessionState:
    try:
        state = _loads(data.decode("utf-8"))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise StateCorruptedError(session_id, str(path), str(exc)) from exc
    except RecursionError:
        raise StateCorruptedError(session_id, str(path), "nested too deeply to be read") from None
    if not isinstance(state, dict):
        raise StateCorruptedError(
            session_id, str(path), f"expected a JSON object, found {type(state).__name__}"
        )
    return state


def _read_if_exists(path: Path) -> bytes | None:
    """The file's bytes, ``None`` if there is none; an ``OSError`` if it is not a regular file."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it changes nothing else)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with open(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return handle.read()


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _make_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each fsynced into its parent.

    Without that a power loss after the first write could lose the new folder, and
    the session files in it, even though each file and rename was fsynced.
    """
    if directory.is_dir():
        return
    if directory.parent != directory:
        _make_dirs(directory.parent)
    try:
        directory.mkdir()
    except FileExistsError:
        return  # made by another writer (which syncs it), or not a folder: the write says
    _fsync_dir(directory.parent)


def _lock(fd: int) -> None:
    # Held until the temp file has its new name: the start-up clean-up leaves a locked one alone.
    fcntl.flock(fd, fcntl.LOCK_EX)


def _write_atomically(directory: Path, target: Path, data: bytes) -> None:
    _make_dirs(directory)
    # Whatever fails, even an interrupt mid-write, no temp file is left behind.
    write_atomically(target, data, prefix=f".{target.stem}.", mode=0o600, prepare=_lock)
    _fsync_dir(directory)


@contextlib.contextmanager
def _stripe_lock(directory: Path, session_id: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold the cross-process lock of the session's stripe (a fixed set of lock files).

    Yields whether it is held: always when ``wait``, else only if no one held it.
    """
    _make_dirs(directory)
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


def _unwritable(directory: Path) -> str | None:
    """Why no session file could be written in ``directory`` now, ``None`` if one could.

    Writes nothing: the directory, or the nearest parent a first write would create it
    in, must be a directory this process may create files in (a read-only mount is not).
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
    return None


def _remove_temp_files(directory: Path) -> tuple[int, int]:
    """Remove the temp files no writer holds; return how many and their bytes.

    A writer makes its temp file under its session's stripe lock and locks the file
    only after: a temp file whose stripe is held now may be one made this instant, not
    locked yet, and is left for the next start (another worker writes there).
    """
    removed = size = 0
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0, 0
    for name in names:
        match = _TEMP_FILE.fullmatch(name)
        if match is None:
            continue
        path = directory / name
        with (
            contextlib.suppress(OSError),
            _stripe_lock(directory, match["session"], wait=False) as held,
        ):
            if not held:
                continue
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a live writer holds it
                length = os.fstat(fd).st_size
                os.unlink(path)
            finally:
                os.close(fd)
            removed += 1
            size += length
    return removed, size


class FileStateStore:
    """Stores each session's state as ``<state_dir>/<session_id>.json``.

    Implements ``HealthCheckingStateStoreProtocol``. Writes of one session are ordered, in the
    process and across processes sharing ``state_dir``; sessions are independent.

    Args:
        state_dir: Directory of the state files; created on the first write.
        limits: how many records and bytes an append leaves a session; no limit by default.
        threads: the store's own threads for file IO (at least 1).

    Raises:
        ValueError: ``threads`` is below 1.
    """

    #: The kind of store, as ``state.backend`` names it.
    backend = "file"

    def __init__(
        self,
        state_dir: Path,
        *,
        limits: StateLimits | None = None,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads!r}")
        self.state_dir = Path(state_dir)
        self.limits = limits if limits is not None else StateLimits()
        self.thread_count = threads
        self._threads: DaemonThreadExecutor | None = None
        self._busy = 0
        self._busy_lock = threading.Lock()
        # Weak values: a session's lock lives only while a write holds or awaits it.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def open(self) -> None:
        """Remove the temp files a crash left in ``state_dir``; logs ``state.tempfiles.removed``."""
        removed, size = await self._run(_remove_temp_files, self.state_dir)
        if removed:
            _LOG.warning("state.tempfiles.removed", category="state", files=removed, bytes=size)

    async def aclose(self) -> None:
        """Let the store's threads go once idle; a later call starts new ones."""
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=False)

    async def check_health(self) -> StateStoreHealth:
        """Check that a session file could be written in ``state_dir`` (or where it will be made).

        Runs on one of the store's threads; a hung filesystem keeps it waiting.

        Returns:
            Reachable, or not with the reason (``PermissionError: state_dir is not
            writable``, a read-only mount too; ``NotADirectoryError``; the class of
            another ``OSError``); never a path.
        """
        try:
            reason = await self._run(_unwritable, self.state_dir)
        except OSError as exc:
            reason = type(exc).__name__
        return StateStoreHealth(is_reachable=reason is None, error=reason)

    @property
    def threads_busy(self) -> int:
        """How many of the store's threads are running a call (queued calls not counted)."""
        return self._busy

    def _run(self, func: Callable[..., _R], *args: object) -> asyncio.Future[_R]:
        # Threads of its own: a call stuck in the loop's default executor (or in
        # anyone else's pool) cannot hold a mission's record back.
        if self._threads is None:
            self._threads = DaemonThreadExecutor(
                self.thread_count, thread_name_prefix="taskforce-state"
            )
        return asyncio.get_running_loop().run_in_executor(self._threads, self._counted, func, *args)

    def _counted(self, func: Callable[..., _R], *args: object) -> _R:
        with self._busy_lock:
            self._busy += 1
        try:
            return func(*args)
        finally:
            with self._busy_lock:
                self._busy -= 1

    def _path(self, session_id: str) -> Path:
        return self.state_dir / f"{check_session_id(session_id)}.json"

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())

    async def save(self, session_id: str, state: SessionState) -> int:
        """Replace the session's state atomically.

        Args:
            session_id: The session; 1 to 128 of ``A-Za-z0-9_.-``, not starting with ``.``.
            state: A JSON object.

        Returns:
            The size of the file written, in bytes (UTF-8 JSON).

        Raises:
            ValueError: The session id is not safe as a file name.
            TypeError: ``state`` is not JSON-serialisable; the stored state is unchanged.
            StateStoreError: The file could not be written.
        """
        target = self._path(session_id)
        if not isinstance(state, dict):
            raise TypeError(f"session state must be a dict, got {type(state).__name__}")
        # Encoded here, so the snapshot is the state at the call even if the
        # caller changes it while the write runs in a thread.
        data = _Document.from_state(state).to_bytes()
        async with self._lock(session_id):
            await self._in_thread("save", session_id, self._replace, session_id, target, data)
        return len(data)

    def _replace(self, session_id: str, target: Path, data: bytes) -> None:
        with _stripe_lock(self.state_dir, session_id):
            _write_atomically(self.state_dir, target, data)

    async def append(self, session_id: str, record: MissionRecord) -> AppendResult:
        """Append ``record`` to the session's ``missions``, dropping the oldest beyond the limits.

        Args:
            session_id: The session; created when it has no file yet.
            record: A JSON object.

        Returns:
            The file's size and record count after the append, and how many were dropped.

        Raises:
            ValueError: The session id is not safe as a file name.
            TypeError: ``record`` is not a JSON object; nothing is written.
            StateCorruptedError: The session's file cannot be parsed; it is left as is.
            StateStoreError: The file could not be read or written.
        """
        target = self._path(session_id)
        if not isinstance(record, dict):
            raise TypeError(f"mission record must be a dict, got {type(record).__name__}")
        line = dumps(record, "mission record")
        async with self._lock(session_id):
            return await self._in_thread(
                "save", session_id, self._append_blocking, session_id, target, line
            )

    def _append_blocking(self, session_id: str, target: Path, line: bytes) -> AppendResult:
        with _stripe_lock(self.state_dir, session_id):
            data = _read_if_exists(target)
            if data is None:
                doc = _Document.from_state({"missions": []})
            else:
                doc = _Document.parse(data, session_id, target)
            if not doc.head.endswith(_MARK):  # "missions" is not a list: start one
                state = _decode(doc.head, session_id, target)
                doc = _Document.from_state({**state, "missions": []})
            doc.records.append(line)
            # head, "\n", the records joined by ",\n", "\n", tail: each record counts
            # itself and 2 bytes, the head and tail the rest (to_bytes' length, exactly)
            overhead = len(doc.head) + len(_TAIL)
            dropped = records_to_drop([len(r) + 2 for r in doc.records], overhead, self.limits)
            del doc.records[:dropped]
            new = doc.to_bytes()
            _write_atomically(self.state_dir, target, new)
        return AppendResult(size_bytes=len(new), records=len(doc.records), dropped=dropped)

    async def load(self, session_id: str) -> SessionState | None:
        """Return the session's state.

        Args:
            session_id: The session.

        Returns:
            The stored JSON object, or ``None`` if the session has no state yet.

        Raises:
            ValueError: The session id is not safe as a file name.
            StateCorruptedError: The file exists but is not a JSON object; it is left as is.
            StateStoreError: The file could not be read.
        """
        path = self._path(session_id)
        data = await self._in_thread("load", session_id, _read_if_exists, path)
        return None if data is None else _decode(data, session_id, path)

    async def _in_thread(
        self, action: str, session_id: str, func: Callable[..., _R], *args: object
    ) -> _R:
        """Run ``func`` in a thread; an ``OSError`` becomes a path-free ``StateStoreError``."""
        try:
            return await self._run(func, *args)
        except OSError as exc:
            raise self._error(action, session_id, exc) from exc

    def _error(self, action: str, session_id: str, exc: OSError) -> StateStoreError:
        reason = exc.strerror or type(exc).__name__
        preposition = "to" if action == "save" else "from"
        return StateStoreError(
            f"cannot {action} state of session {session_id!r}: {reason}",
            detail=f"{action} {preposition} {self.state_dir}: {exc}",
        )

    def __repr__(self) -> str:
        return f"<FileStateStore state_dir={str(self.state_dir)!r}>"
