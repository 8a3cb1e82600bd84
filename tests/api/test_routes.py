"""The SSE stream's last word: a result, or a final error event when the mission broke off."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator

import pytest

from taskforce.api._routes import _sse
from taskforce.core.interfaces.executor import ExecutionResult, ProgressEvent
from taskforce.errors import MissionError

_STARTED = ProgressEvent(kind="mission_started", data={"mission_id": "m"})
_RESULT = ProgressEvent(kind="result", result=ExecutionResult("s", "m", "lean", "completed", "ok"))


async def _events(
    *events: ProgressEvent, fail: Exception | None = None
) -> AsyncGenerator[ProgressEvent, None]:
    for event in events:
        yield event
    if fail is not None:
        raise fail


async def _collect(
    first: ProgressEvent | None, stream: AsyncGenerator[ProgressEvent, None]
) -> list[tuple[str, dict[str, object]]]:
    out = []
    async for chunk in _sse(first, stream, lambda text: text):
        event, data = chunk.decode("utf-8").strip().split("\n")
        out.append((event.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


class TestSse:
    async def test_result_is_the_last_event(self) -> None:
        """A mission that ends normally streams its events, the result last, nothing after."""
        events = await _collect(_STARTED, _events(_RESULT))
        assert ["mission_started", "result"] == [event for event, _ in events]

    @pytest.mark.parametrize(
        ("fail", "reason"),
        [
            (RuntimeError("/srv/secret/path broke"), "the mission stopped unexpectedly"),
            (MissionError("session is busy"), "session is busy"),
        ],
    )
    async def test_a_stream_that_raises_ends_with_a_final_error(
        self, fail: Exception, reason: str
    ) -> None:
        """An exception after the 200 ends the stream with a final error event, no internals."""
        events = await _collect(_STARTED, _events(fail=fail))
        assert "error" == events[-1][0]
        assert {
            "kind": "error",
            "error": reason,
            "error_type": type(fail).__name__,
            "is_final": True,
        } == events[-1][1]

    async def test_a_stream_without_result_ends_with_a_final_error(self) -> None:
        """A stream that stops without its result still ends with a final error event."""
        events = await _collect(_STARTED, _events())
        assert ["mission_started", "error"] == [event for event, _ in events]
