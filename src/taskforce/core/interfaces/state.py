"""The state store port: persistence of one JSON document per session."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["SessionState", "StateStoreProtocol"]

#: A session's state: a JSON object (only JSON-serialisable values).
SessionState = dict[str, Any]


@runtime_checkable
class StateStoreProtocol(Protocol):
    """Saves and loads a session's state.

    Contract: ``save`` replaces the whole state atomically (a reader never
    sees half a write). ``load`` returns ``None`` for an unknown session and
    raises :class:`taskforce.errors.StateCorruptedError` for state that exists
    but cannot be read; it never silently replaces it. Session ids that are
    not safe as file names raise ``ValueError``.
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
