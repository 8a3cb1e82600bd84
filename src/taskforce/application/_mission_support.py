"""Helpers of the executor: ids, mission records and uncancellable awaits."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

from taskforce.core.interfaces.executor import ExecutionResult, StepRecord

__all__ = ["new_id", "now_iso", "record_fields", "seconds_since", "to_the_end"]

_T = TypeVar("_T")


def new_id() -> str:
    """Return a new session or mission id: 32 random hex digits (a uuid4)."""
    return uuid.uuid4().hex


def record_fields(result: ExecutionResult) -> dict[str, Any]:
    """Return the JSON fields of a mission record that come from its result."""
    return {
        "status": result.status,
        "final_message": result.final_message,
        "error": result.error,
        "error_type": result.error_type,
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
