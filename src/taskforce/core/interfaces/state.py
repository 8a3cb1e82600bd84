"""The state store port: persistence of one JSON document per session, and its mission records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["AppendResult", "MissionRecord", "SessionState", "StateStoreProtocol"]

#: A session's state: a JSON object (only JSON-serialisable values).
SessionState = dict[str, Any]

#: One mission's record in ``state["missions"]``: a JSON object.
MissionRecord = dict[str, Any]


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an :meth:`StateStoreProtocol.append` left in the store.

    Attributes:
        size_bytes: the size of the session's stored state after the append.
        records: how many mission records the session keeps now.
        dropped: how many of the oldest records the limits removed.
    """

    size_bytes: int
    records: int
    dropped: int = 0


@runtime_checkable
class StateStoreProtocol(Protocol):
    """Saves and loads a session's state and appends its mission records.

    Contract:

    - ``save`` replaces the whole state atomically (a reader never sees half a
      write).
    - ``append`` adds one record at the end of ``state["missions"]``
      atomically: concurrent appends to one session, from any number of tasks
      (and, for a shared store, processes), never lose a record. When the
      store's limits are exceeded it drops the oldest records first, never the
      one just appended.
    - ``load`` returns ``None`` for an unknown session and raises
      :class:`taskforce.errors.StateCorruptedError` for state that exists but
      cannot be read; it never silently replaces it.
    - Session ids that the store cannot keep raise ``ValueError``; a state or
      record that is not JSON raises ``TypeError``; a storage failure raises
      :class:`taskforce.errors.StateStoreError`, whose message names no server
      path or connection string.
    """

    async def save(self, session_id: str, state: SessionState) -> int | None:
        """Persist ``state`` as the session's whole state.

        Returns the number of bytes persisted when the store knows it (the
        observability layer reads it instead of serialising the state again),
        else ``None``.
        """
        ...

    async def load(self, session_id: str) -> SessionState | None:
        """Return the session's state, or ``None`` if it has none yet."""
        ...

    async def append(self, session_id: str, record: MissionRecord) -> AppendResult:
        """Append ``record`` to the session's ``missions`` list, creating the session if new.

        Returns what the session holds after the append (its size feeds the
        state size metric).
        """
        ...
