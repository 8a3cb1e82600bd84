"""Progress events of an agent run, sent to an optional async callback.

Both flows emit the same kinds (``step_started``, ``tool_call``, ``tool_result``,
``final_answer``, ``error``) with the same data keys, so a consumer never needs
to know which flow is running.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from taskforce.core.interfaces.executor import ProgressEvent, ProgressKind

__all__ = ["EventCallback", "EventEmitter"]

#: Receives every progress event of a run, in order; awaited before the run goes on.
EventCallback = Callable[[ProgressEvent], Awaitable[None]]


class EventEmitter:
    """Builds :class:`ProgressEvent` objects and hands them to the callback, if any."""

    __slots__ = ("_on_event",)

    def __init__(self, on_event: EventCallback | None) -> None:
        self._on_event = on_event

    async def emit(self, kind: ProgressKind, **data: Any) -> None:
        """Send one event of ``kind`` with ``data`` to the callback.

        Args:
            kind: the event kind.
            **data: JSON-serialisable fields of the event.
        """
        if self._on_event is not None:
            await self._on_event(ProgressEvent(kind=kind, data=data))
