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

With a time to live (``StateLimits.session_ttl_seconds``) a session whose file was
last written longer ago than that is expired: a load finds none and an append
starts it afresh, and :meth:`FileStateStore.expire_sessions` removes the file under
the session's stripe lock, so never while one of its writes runs. Its age is told by
a :class:`SteadyWallClock`: a step forward of the wall clock while the store lives
expires no session early.

Only regular files are read: a FIFO, a device or a socket where a session's file
should be (a symlink to one too) fails the call at once instead of blocking one
of the store's threads for good. The threads are daemons, so a call stuck in
the kernel anyway (a hung network filesystem) cannot keep a stopped service from
exiting; ``threads_busy`` against ``thread_count`` tells ``/health`` when all are busy.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import structlog

from taskforce.core.interfaces.state import (
    AppendResult,
    ExpiryProgress,
    MissionRecord,
    SessionExpiry,
    SessionState,
    StateStoreHealth,
)
from taskforce.errors import StateCorruptedError, StateStoreError, StateStoreUnavailableError
from taskforce.infrastructure._daemon_executor import DaemonThreadExecutor
from taskforce.infrastructure._wall_clock import SteadyWallClock
from taskforce.infrastructure.state._common import (
    StateLimits,
    check_session_id,
    dumps,
    loads,
    records_to_drop,
)
from taskforce.infrastructure.state._file_io import (
    LOCK_DIR,
    expire_files,
    read_if_exists,
    remove_temp_files,
    stripe_lock,
    unusable_locks,
    unwritable,
    write_atomically,
)

__all__ = ["LOCK_DIR", "FileStateStore"]

_LOG = structlog.get_logger(__name__)
_R = TypeVar("_R")
_MARK = b'"missions": ['
_TAIL = b"]}"
#: Threads of a store unless told otherwise (``state.threads``): writes of one session
#: are ordered anyway, so a few threads serve many sessions.
DEFAULT_THREADS = 4


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


def _is_json_object(data: bytes) -> bool:
    try:
        return isinstance(loads(data), dict)
    except (ValueError, RecursionError):
        return False


def _decode(data: bytes, session_id: str, path: Path) -> SessionState:
    try:
        # utf-8-sig: a byte order mark an editor saved the file with is not content (an
        # append takes such a file already: the JSON parser reads bytes that way)
        state = loads(data.decode("utf-8-sig"))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise StateCorruptedError(session_id, str(path), str(exc)) from exc
    except RecursionError:
        raise StateCorruptedError(session_id, str(path), "nested too deeply to be read") from None
    if not isinstance(state, dict):
        raise StateCorruptedError(
            session_id, str(path), f"expected a JSON object, found {type(state).__name__}"
        )
    return state


class FileStateStore:
    """Stores each session's state as ``<state_dir>/<session_id>.json``.

    Implements ``HealthCheckingStateStoreProtocol`` and ``ExpiringStateStoreProtocol``.
    Writes of one session are ordered, in the process and across processes sharing
    ``state_dir``; sessions are independent.

    Args:
        state_dir: Directory of the state files; created on the first write.
        limits: how many records and bytes an append leaves a session, and how long a
            session file lives unwritten (its modification time); no limit by default.
        threads: the store's own threads for file IO (at least 1); a sweep of expired
            sessions runs on a thread of its own besides.

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
        self._sweeper: DaemonThreadExecutor | None = None
        self._busy = 0
        self._busy_lock = threading.Lock()
        # What a session file's age is told by: a step forward of the wall clock expires none early.
        self._clock = SteadyWallClock()
        # Weak values: a session's lock lives only while a write holds or awaits it.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def open(self) -> None:
        """Remove the temp files a crash left in ``state_dir``; logs ``state.tempfiles.removed``.

        Raises:
            StateStoreUnavailableError: a lock file in ``state_dir/.locks`` cannot be used
                (another user's, or ``.locks`` is no directory): the writes of its sessions
                would all fail. A worker replacing one that served starts anyway, as it
                does while the PostgreSQL store's database is down (``/health`` says why).
        """
        removed, size = await self._run(remove_temp_files, self.state_dir)
        if removed:
            _LOG.warning("state.tempfiles.removed", category="state", files=removed, bytes=size)
        reason = await self._run(unusable_locks, self.state_dir)
        if reason is not None:
            raise StateStoreUnavailableError(
                f"cannot use the state directory: {reason}",
                detail=f"in {self.state_dir}",
                setting="state_dir",
            )

    async def aclose(self) -> None:
        """Let the store's threads go once idle; a later call starts new ones."""
        for threads in (self._threads, self._sweeper):
            if threads is not None:
                threads.shutdown(wait=False)
        self._threads = self._sweeper = None

    @property
    def session_ttl_seconds(self) -> float | None:
        """How long a session file lives unwritten; ``None``: for good."""
        return self.limits.session_ttl_seconds

    async def expire_sessions(self, progress: ExpiryProgress | None = None) -> SessionExpiry:
        """Remove the session files not written for longer than ``session_ttl_seconds``.

        Runs on a thread of its own, not one of the store's: a long pass over a large
        ``state_dir`` holds up no read or write. A session being written, here or in
        another process sharing ``state_dir``, is left for the next sweep. Cancelling
        the call stops the pass at the next file.

        Args:
            progress: gets each file as it is removed (also when the pass fails later or
                is cancelled; a file removed in the instant of the cancellation may come
                after the caller read it).

        Returns:
            How many sessions were removed, and how many expired ones could not be
            (a file this process may not remove), with the first such error.

        Raises:
            StateStoreError: ``state_dir`` could not be read.
        """
        ttl = self.limits.session_ttl_seconds
        if ttl is None:
            return SessionExpiry(0)
        if self._sweeper is None:
            self._sweeper = DaemonThreadExecutor(1, thread_name_prefix="taskforce-state-sweep")
        stop = threading.Event()
        sweep = self._sweeper
        progress = ExpiryProgress() if progress is None else progress
        try:
            return await asyncio.get_running_loop().run_in_executor(
                sweep, expire_files, self.state_dir, ttl, stop, progress, self._clock
            )
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise StateStoreError(
                f"cannot expire sessions: {reason}", detail=f"expire in {self.state_dir}: {exc}"
            ) from exc
        finally:
            stop.set()  # a cancelled call's pass ends at the next file

    async def check_health(self) -> StateStoreHealth:
        """Check that a session file could be written in ``state_dir`` (or where it will be made).

        Runs on one of the store's threads; a hung filesystem keeps it waiting.

        Returns:
            Reachable, or not with the reason (``PermissionError: state_dir is not
            writable``, a read-only mount too; ``NotADirectoryError``; the class of
            another ``OSError``); never a path.
        """
        try:
            reason = await self._run(unwritable, self.state_dir)
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
        with stripe_lock(self.state_dir, session_id):
            write_atomically(self.state_dir, target, data)

    async def append(self, session_id: str, record: MissionRecord) -> AppendResult:
        """Append ``record`` to the session's ``missions``, dropping the oldest beyond the limits.

        Args:
            session_id: The session; created when it has no file yet.
            record: A JSON object.

        An expired session (see ``session_ttl_seconds``) starts afresh: the record is its
        first, and its old state is gone.

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
        with stripe_lock(self.state_dir, session_id):
            # an expired session starts afresh, as if the sweep had removed it already
            data = read_if_exists(target, self.limits.session_ttl_seconds, self._clock)
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
            write_atomically(self.state_dir, target, new)
        return AppendResult(size_bytes=len(new), records=len(doc.records), dropped=dropped)

    async def load(self, session_id: str) -> SessionState | None:
        """Return the session's state.

        Args:
            session_id: The session.

        Returns:
            The stored JSON object, or ``None`` if the session has no state yet, or has
            expired (not written for longer than ``session_ttl_seconds``).

        Raises:
            ValueError: The session id is not safe as a file name.
            StateCorruptedError: The file exists but is not a JSON object; it is left as is.
            StateStoreError: The file could not be read.
        """
        path = self._path(session_id)
        ttl = self.limits.session_ttl_seconds
        data = await self._in_thread("load", session_id, read_if_exists, path, ttl, self._clock)
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
