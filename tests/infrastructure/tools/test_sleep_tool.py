"""Tests of the sleep tool."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from taskforce.infrastructure.tools import SleepTool


class TestSleepTool:
    async def test_sleeps_and_returns_seconds(self) -> None:
        """The tool waits about as long as asked and returns the seconds as a float."""
        started = time.perf_counter()
        result = await SleepTool().execute(seconds=0.05)
        elapsed = time.perf_counter() - started
        assert {"success": True, "output": 0.05} == result
        assert elapsed >= 0.04

    async def test_zero_and_integer_seconds(self) -> None:
        """Zero is allowed, and an integer comes back as a float."""
        assert {"success": True, "output": 0.0} == await SleepTool().execute(seconds=0)

    async def test_does_not_block_the_loop(self) -> None:
        """Two sleeps run concurrently, not one after the other."""
        started = time.perf_counter()
        await asyncio.gather(SleepTool().execute(seconds=0.2), SleepTool().execute(seconds=0.2))
        assert time.perf_counter() - started < 0.35

    async def test_cancellation_passes_through(self) -> None:
        """Cancelling a sleeping call raises CancelledError in the caller."""
        task = asyncio.create_task(SleepTool().execute(seconds=10))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    @pytest.mark.parametrize(
        ("seconds", "message"),
        [
            (-1, "argument 'seconds' must be at least 0, got -1"),
            (301, "argument 'seconds' must be at most 300, got 301"),
            ("1", "argument 'seconds' must be of type number, got str"),
            (None, "argument 'seconds' must be of type number, got NoneType"),
            (float("inf"), "argument 'seconds' must be a finite number"),
        ],
    )
    async def test_bad_seconds_refused(self, seconds: Any, message: str) -> None:
        """Negative, too long or non-number seconds give an error result, not a sleep."""
        error = (
            f"invalid arguments for tool 'sleep': {message}. It takes 'seconds' (number, required)."
        )
        expected = {"success": False, "error": error, "error_type": "InvalidArguments"}
        assert expected == await SleepTool().execute(seconds=seconds)

    async def test_missing_seconds_refused(self) -> None:
        """Calling without seconds gives an error result naming the argument."""
        result = await SleepTool().execute()
        assert "sleep': missing required argument 'seconds'. It takes 'seconds'" in result["error"]
