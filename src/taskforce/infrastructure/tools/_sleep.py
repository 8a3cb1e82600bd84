"""The ``sleep`` tool: waits without blocking the event loop, for latency demos and tests."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from taskforce.core.interfaces.tools import ToolResult
from taskforce.infrastructure.tools._base import BaseTool, ok_result

__all__ = ["SleepTool"]

_MAX_SLEEP_SECONDS = 300


class SleepTool(BaseTool):
    """Sleeps for the given number of seconds (0 to 300)."""

    name = "sleep"
    description = "Wait for the given number of seconds (0 to 300), then return it."
    parameters_schema = {
        "type": "object",
        "properties": {
            "seconds": {
                "type": "number",
                "description": "How long to wait, in seconds.",
                "minimum": 0,
                "maximum": _MAX_SLEEP_SECONDS,
            },
        },
        "required": ["seconds"],
        "additionalProperties": False,
    }

    async def run(self, args: Mapping[str, Any]) -> ToolResult:
        """Sleep for ``args["seconds"]``; cancellation passes through.

        Args:
            args: ``{"seconds": float}``, already checked to be within 0 and 300.

        Returns:
            The number of seconds slept.
        """
        seconds = float(args["seconds"])
        await asyncio.sleep(seconds)
        return ok_result(seconds)
