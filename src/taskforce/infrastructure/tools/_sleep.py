"""The ``sleep`` tool: waits without blocking the event loop, for latency demos and tests."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

from taskforce.core.interfaces.tools import ToolResult
from taskforce.infrastructure.tools._base import BaseTool, ok_result

__all__ = ["DEFAULT_MAX_SLEEP_SECONDS", "SleepTool"]

#: The longest sleep the tool takes by default (``tools.max_sleep_seconds``).
DEFAULT_MAX_SLEEP_SECONDS = 300


def _description(max_seconds: float) -> str:
    return f"Wait for the given number of seconds (0 to {max_seconds:g}), then return it."


def _schema(max_seconds: float) -> dict[str, Any]:
    """The sleep tool's parameters schema, with ``max_seconds`` as the ``maximum``."""
    return {
        "type": "object",
        "properties": {
            "seconds": {
                "type": "number",
                "description": "How long to wait, in seconds.",
                "minimum": 0,
                # a whole number as an int: the refusal then says "at most 300", not "300.0"
                "maximum": int(max_seconds) if float(max_seconds).is_integer() else max_seconds,
            },
        },
        "required": ["seconds"],
        "additionalProperties": False,
    }


class SleepTool(BaseTool):
    """Sleeps for the given number of seconds (0 to ``max_seconds``).

    Args:
        max_seconds: The longest sleep it takes; its schema's ``maximum``, so a
            longer one is refused as ``InvalidArguments``.

    Raises:
        ValueError: ``max_seconds`` is not a finite number above 0.
    """

    name = "sleep"
    description = _description(DEFAULT_MAX_SLEEP_SECONDS)
    parameters_schema = _schema(DEFAULT_MAX_SLEEP_SECONDS)

    def __init__(self, *, max_seconds: float = DEFAULT_MAX_SLEEP_SECONDS) -> None:
        if not (math.isfinite(max_seconds) and max_seconds > 0):
            raise ValueError(f"max_seconds must be a finite number above 0, got {max_seconds!r}")
        self.max_seconds = max_seconds
        self.description = _description(max_seconds)
        self.parameters_schema = _schema(max_seconds)

    async def run(self, args: Mapping[str, Any]) -> ToolResult:
        """Sleep for ``args["seconds"]``; cancellation passes through.

        Args:
            args: ``{"seconds": float}``, already checked to be within 0 and ``max_seconds``.

        Returns:
            The number of seconds slept.
        """
        seconds = float(args["seconds"])
        await asyncio.sleep(seconds)
        return ok_result(seconds)
