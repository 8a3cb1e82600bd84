"""Helpers of the executor: request validation, mission records and uncancellable awaits."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from taskforce.core.interfaces.executor import AGENT_TYPES, AgentType, ExecutionResult, StepRecord
from taskforce.errors import MissionError

__all__ = ["checked_request", "now_iso", "record_fields", "seconds_since", "to_the_end"]

_T = TypeVar("_T")


def checked_request(
    mission: object, agent_type: object, session_id: object, mission_id: object
) -> tuple[AgentType, str, str]:
    """Validate a mission request and fill in missing ids.

    Args:
        mission: must be a non-empty string.
        agent_type: must be one of ``AGENT_TYPES``.
        session_id: a non-empty string, or ``None`` for a new uuid4 hex id.
        mission_id: a non-empty string, or ``None`` for a new uuid4 hex id.

    Returns:
        ``(agent_type, session_id, mission_id)``.

    Raises:
        MissionError: an argument is invalid; the message names it and its value.
    """
    if agent_type not in AGENT_TYPES:
        raise MissionError(
            f"unknown agent_type {agent_type!r}; expected one of {', '.join(AGENT_TYPES)}"
        )
    if not isinstance(mission, str) or not mission.strip():
        raise MissionError(f"mission must be a non-empty string, got {mission!r:.80}")
    for name, value in (("session_id", session_id), ("mission_id", mission_id)):
        if value is not None and (not isinstance(value, str) or not value):
            raise MissionError(f"{name} must be a non-empty string or None, got {value!r}")
    return (
        agent_type,
        cast(str, session_id) if session_id is not None else uuid.uuid4().hex,
        cast(str, mission_id) if mission_id is not None else uuid.uuid4().hex,
    )


def record_fields(result: ExecutionResult) -> dict[str, Any]:
    """Return the JSON fields of a mission record that come from its result."""
    return {
        "status": result.status,
        "final_message": result.final_message,
        "error": result.error,
        "steps": [_step_dict(step) for step in result.steps],
    }


def _step_dict(step: StepRecord) -> dict[str, Any]:
    return {**dataclasses.asdict(step), "tool_calls": list(step.tool_calls)}


async def to_the_end(aw: Awaitable[_T]) -> _T:
    """Await ``aw`` to its end even when cancelled meanwhile, then re-raise the cancellation."""
    task = asyncio.ensure_future(aw)
    is_cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            is_cancelled = True
            continue
        if is_cancelled:
            raise asyncio.CancelledError
        return result


def now_iso() -> str:
    """Return the current UTC time in ISO 8601."""
    return datetime.now(UTC).isoformat()


def seconds_since(started: float) -> float:
    """Return the seconds since the ``time.perf_counter()`` value ``started``, at least 0."""
    return max(0.0, time.perf_counter() - started)
