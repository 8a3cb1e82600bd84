"""Reading a session back: its mission records, the same on every state store."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import structlog

from taskforce.application._mission_support import store_failure_fields
from taskforce.core.interfaces.outcome import is_caller_cancelled, raise_as_failure
from taskforce.core.interfaces.state import StateStoreProtocol

__all__ = ["SessionView", "read_session"]

_LOG = structlog.get_logger(__name__)

# The fields of a mission record a reader gets, in this order.
_FIELDS = ("mission_id", "agent_type", "status", "started_at", "finished_at", "final_message")


@dataclass(frozen=True, slots=True)
class SessionView:
    """A session's mission records, oldest first, as a client reads them."""

    session_id: str
    missions: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the view as a JSON-serialisable dict."""
        return {"session_id": self.session_id, "missions": list(self.missions)}


def _mission(record: dict[str, Any]) -> dict[str, Any]:
    steps = record.get("steps")
    steps = steps if isinstance(steps, list) else []
    tool_calls = [
        name
        for step in steps
        if isinstance(step, dict) and isinstance(step.get("tool_calls"), list)
        for name in step["tool_calls"]
    ]
    return {
        **{field: record.get(field) for field in _FIELDS},
        "error": record.get("error"),
        "error_type": record.get("error_type"),
        "tool_calls": tool_calls,
        "steps": steps,
    }


async def read_session(store: StateStoreProtocol, session_id: str) -> SessionView | None:
    """Load a session and shape its mission records for a reader.

    Args:
        store: the state store (file or PostgreSQL, plain or observed).
        session_id: an id the store accepts.

    Returns:
        The view, or ``None`` for a session the store does not know.

    Raises:
        ValueError: the store refuses the id.
        StateStoreError: the store failed (logged as ``state.load.failed``); its
            message names no path or connection string.
        Exception: a store of one's own failed otherwise (logged the same way); an
            ``OwnBaseException`` for a ``BaseException`` it raised (``SystemExit``, ...).
    """
    started = time.perf_counter()
    try:
        state = await store.load(session_id)
    except BaseException as exc:
        if not isinstance(exc, Exception) and is_caller_cancelled(exc):
            raise
        _LOG.error(
            "state.load.failed",
            category="state",
            session_id=session_id,
            **store_failure_fields(exc),
            duration_ms=max(0.0, time.perf_counter() - started) * 1000,
        )
        raise_as_failure(exc)
    missions = state.get("missions") if state is not None else None
    records = missions if isinstance(missions, list) else []
    _LOG.debug(
        "state.loaded",
        category="state",
        session_id=session_id,
        found=state is not None,
        records=len(records),
        duration_ms=max(0.0, time.perf_counter() - started) * 1000,
    )
    if state is None:
        return None
    shaped = tuple(_mission(record) for record in records if isinstance(record, dict))
    return SessionView(session_id, shaped)
