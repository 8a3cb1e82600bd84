"""The file state store: one JSON document per session, replaced atomically on save.

A save writes a temp file beside the target, fsyncs it and renames it over the
old file, so a reader sees the old or the new state, never half of one. A file
that cannot be parsed is reported, never overwritten or deleted by a load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

from taskforce.core.interfaces.state import SessionState
from taskforce.errors import StateCorruptedError, StateStoreError

__all__ = ["FileStateStore"]

_SESSION_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def _check_session_id(session_id: object) -> str:
    # A leading dot would allow "." and "..", and hides temp files from session files.
    if (
        not isinstance(session_id, str)
        or not _SESSION_ID.fullmatch(session_id)
        or session_id.startswith(".")
    ):
        raise ValueError(
            f"invalid session id {session_id!r}: use 1 to 128 of A-Z a-z 0-9 _ . - "
            "and do not start with '.'"
        )
    return session_id


def _serialise(state: SessionState) -> bytes:
    if not isinstance(state, dict):
        raise TypeError(f"session state must be a dict, got {type(state).__name__}")
    try:
        text = json.dumps(state, ensure_ascii=False, sort_keys=True, allow_nan=False)
    except ValueError as exc:  # circular reference or NaN/inf: not JSON either
        raise TypeError(f"session state is not JSON-serialisable: {exc}") from exc
    return text.encode("utf-8")


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomically(directory: Path, target: Path, data: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.stem}.", suffix=".tmp")
    try:
        with open(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        # Whatever failed, even an interrupt mid-write, no temp file is left behind.
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    _fsync_dir(directory)


class FileStateStore:
    """Stores each session's state as ``<state_dir>/<session_id>.json``.

    Implements ``StateStoreProtocol``. Concurrent saves of different sessions
    are independent; concurrent saves of one session leave one of them whole.

    Args:
        state_dir: Directory of the state files; created on the first save.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)

    def _path(self, session_id: str) -> Path:
        return self.state_dir / f"{_check_session_id(session_id)}.json"

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
        # Serialised here, on the loop, so the snapshot is consistent even if
        # another task changes ``state`` while the write runs in a thread.
        data = _serialise(state)
        try:
            await asyncio.to_thread(_write_atomically, self.state_dir, target, data)
        except OSError as exc:
            raise StateStoreError(
                f"cannot save state of session {session_id!r} to {target}: {exc}"
            ) from exc
        return len(data)

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
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateStoreError(
                f"cannot load state of session {session_id!r} from {path}: {exc}"
            ) from exc
        try:
            state = json.loads(data.decode("utf-8"))
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
            raise StateCorruptedError(session_id, str(path), str(exc)) from exc
        if not isinstance(state, dict):
            raise StateCorruptedError(
                session_id, str(path), f"expected a JSON object, found {type(state).__name__}"
            )
        return state

    def __repr__(self) -> str:
        return f"<FileStateStore state_dir={str(self.state_dir)!r}>"
