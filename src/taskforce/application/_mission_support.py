"""Helpers of the executor: ids, mission records, uncancellable awaits, store failures."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

from taskforce.core.interfaces.executor import ExecutionResult, StepRecord
from taskforce.core.interfaces.outcome import class_error_type, exception_message

__all__ = [
    "new_id",
    "now_iso",
    "record_fields",
    "seconds_since",
    "step_dict",
    "store_failure_fields",
    "to_the_end",
]

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
        "steps": [step_dict(step) for step in result.steps],
    }


def store_failure_fields(exc: BaseException) -> dict[str, str]:
    """The fields of ``state.save.failed`` and ``state.load.failed`` for what a store raised.

    ``error_type`` is what the failed mission (or session read) says, the class name;
    ``error`` the class and message, ``detail`` the store's detail. A store of one's own
    may raise an exception whose message or ``detail`` cannot be read: the line is
    logged all the same, and the mission fails with that exception's class.

    Args:
        exc: What the store raised.

    Returns:
        ``error_type``, ``error`` and ``detail``.
    """
    try:
        detail = getattr(exc, "detail", "")
    except Exception:  # a property of the store's own exception that raises
        detail = ""
    return {
        "error_type": class_error_type(exc),
        "error": f"{type(exc).__name__}: {exception_message(exc)}",
        "detail": detail if isinstance(detail, str) else "",
    }


def step_dict(step: StepRecord) -> dict[str, Any]:
    """Return the JSON fields of one step of a mission record."""
    return {**dataclasses.asdict(step), "tool_calls": list(step.tool_calls)}


async def to_the_end(
    aw: Awaitable[_T], *, at_most_once_cancelled: float | None = None, is_cancelled: bool = False
) -> _T:
    """Await ``aw`` to its end even when cancelled meanwhile, then re-raise the cancellation.

    Args:
        aw: What to await; it runs in a task of its own, which a cancellation does not reach.
        at_most_once_cancelled: When given, stop waiting this many seconds after the first
            cancellation and re-raise it; ``aw`` then goes on in its task, on its own.
        is_cancelled: The caller is being cancelled already (it awaits in an ``except
            CancelledError``): ``at_most_once_cancelled`` counts from now.

    Returns:
        What ``aw`` returned, when no cancellation came meanwhile.

    Raises:
        asyncio.CancelledError: A cancellation came meanwhile (re-raised once ``aw`` ended,
            or once ``at_most_once_cancelled`` passed), or ``aw`` was cancelled itself.
        Exception: What ``aw`` raised.
    """
    task = asyncio.ensure_future(aw)
    loop = asyncio.get_running_loop()
    deadline = None
    if is_cancelled and at_most_once_cancelled is not None:
        deadline = loop.time() + at_most_once_cancelled
    is_cancelled_meanwhile = False
    while not task.done():
        timeout = None if deadline is None else deadline - loop.time()
        if timeout is not None and timeout <= 0:
            raise asyncio.CancelledError  # waited long enough: ``aw`` goes on on its own
        try:
            await asyncio.wait([task], timeout=timeout)
        except asyncio.CancelledError:
            is_cancelled_meanwhile = True
            if deadline is None and at_most_once_cancelled is not None:
                deadline = loop.time() + at_most_once_cancelled
    if task.cancelled() or (is_cancelled_meanwhile and task.exception() is None):
        raise asyncio.CancelledError
    return task.result()


def now_iso() -> str:
    """Return the current UTC time in ISO 8601."""
    return datetime.now(UTC).isoformat()


def seconds_since(started: float) -> float:
    """Return the seconds since the ``time.perf_counter()`` value ``started``, at least 0."""
    return max(0.0, time.perf_counter() - started)
