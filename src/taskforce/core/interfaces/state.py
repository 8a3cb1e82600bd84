"""The state store port: persistence of one JSON document per session, and its mission records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "AppendResult",
    "ExpiringStateStoreProtocol",
    "ExpiryProgress",
    "HealthCheckingStateStoreProtocol",
    "MissionRecord",
    "SessionExpiry",
    "SessionState",
    "StateStoreHealth",
    "StateStoreProtocol",
]

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


@dataclass(frozen=True, slots=True)
class StateStoreHealth:
    """What a :meth:`HealthCheckingStateStoreProtocol.check_health` found.

    Attributes:
        is_reachable: whether the store answered: its calls can be served now.
        error: when not, a short reason: the class of the failure, perhaps with a
            phrase of the store's own; never a path, a connection string, a host
            or the server's words.
    """

    is_reachable: bool
    error: str | None = None


class HealthCheckingStateStoreProtocol(StateStoreProtocol, Protocol):
    """A state store that can also say whether it can be reached. Callers find the
    check by its members, ``check_health`` and a ``backend`` name (a proxy forwards
    both).

    Contract:

    - ``backend`` is a short fixed name of the kind of store (``file``, ``postgres``).
    - ``check_health`` returns a storage failure as
      ``StateStoreHealth(is_reachable=False, error=...)``; it raises nothing but
      cancellation. It reads no session and changes nothing.
    - Safe under concurrency; each call checks afresh (with the resources of a
      store call: a pooled connection, one of the store's threads), so a caller
      that polls shares one call among its concurrent requests.
    - A store with a deadline of its own ends the call by it; a call can still
      wait on storage that hangs (a stalled network filesystem), so the caller
      bounds its wait.
    """

    @property
    def backend(self) -> str:
        """The kind of store, as ``state.backend`` names it."""
        ...

    async def check_health(self) -> StateStoreHealth:
        """Check that the store can serve calls now."""
        ...


@dataclass(frozen=True, slots=True)
class SessionExpiry:
    """What one :meth:`ExpiringStateStoreProtocol.expire_sessions` did.

    Attributes:
        expired: how many sessions it deleted.
        failed: how many expired sessions it could not delete (the file store goes on
            past a file it may not remove); a later sweep tries them again.
        error: when ``failed``, the first failure: its class and the store's words,
            never a path or a connection string.
    """

    expired: int
    failed: int = 0
    error: str | None = None


@dataclass(slots=True)
class ExpiryProgress:
    """What an :meth:`ExpiringStateStoreProtocol.expire_sessions` under way has done so
    far, for its caller to read when the call raises or is cancelled.

    Attributes:
        expired: how many sessions it has deleted so far, each counted once its deletion
            is final (PostgreSQL: its batch committed).
    """

    expired: int = 0


class ExpiringStateStoreProtocol(StateStoreProtocol, Protocol):
    """A state store whose sessions expire once not written for ``session_ttl_seconds``.

    Contract:

    - ``session_ttl_seconds`` is the time to live, ``None`` when sessions never expire
      (then ``expire_sessions`` deletes nothing).
    - A session expires once not written (``save`` or ``append``) for longer than the
      TTL, by the store's own clock (PostgreSQL's, the file's modification time). From
      then on ``load`` returns ``None`` for it, and ``append`` starts it afresh (its old
      state and records are gone), whether or not a sweep has deleted it yet.
    - ``expire_sessions`` deletes the expired sessions, state and records alike, in
      bounded steps (no step holds a lock or a connection for long). It is safe under
      concurrency with every call and with sweeps of other processes sharing the store:
      a session being written is left for a later sweep, and no session ends up half
      deleted; each session deleted is counted by the one sweep that deleted it.
    - It raises :class:`taskforce.errors.StateStoreError` when the store fails; what it
      deleted before stays deleted. Cancelling it stops it between two steps.
    - Given a ``progress``, it adds each session it deletes to ``progress.expired`` as
      the deletion becomes final, so a caller whose call raised or was cancelled still
      knows how many it deleted. A store of one's own may leave the parameter out: the
      sweep then calls it without one (and cannot tell what a failed call deleted).
    """

    @property
    def session_ttl_seconds(self) -> float | None:
        """How long a session lives unwritten; ``None``: for good."""
        ...

    async def expire_sessions(self, progress: ExpiryProgress | None = None) -> SessionExpiry:
        """Delete the sessions not written for longer than ``session_ttl_seconds``,
        counting each in ``progress`` as it goes."""
        ...
