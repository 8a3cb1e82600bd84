"""Tests of the sleep tool."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from taskforce.application.container import build_container
from taskforce.config import Settings
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
        """Two sleeps run concurrently, not one after the other: while both sleep, the loop
        runs other work (a sleep that blocked it would have ended before the loop got back)."""
        sleeps = [asyncio.create_task(SleepTool().execute(seconds=0.2)) for _ in range(2)]
        for _ in range(3):  # each call starts, validates its arguments and awaits its sleep
            await asyncio.sleep(0)
        try:
            assert [False, False] == [sleep.done() for sleep in sleeps]
        finally:
            for sleep in sleeps:
                sleep.cancel()
            await asyncio.gather(*sleeps, return_exceptions=True)

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


class TestSleepLimit:
    async def test_a_longer_limit_takes_a_longer_sleep(self) -> None:
        """With max_seconds 600 a 400 s sleep is taken (cancelled here), and the schema and
        description the model reads say 600."""
        tool = SleepTool(max_seconds=600)
        assert 600 == tool.parameters_schema["properties"]["seconds"]["maximum"]
        assert "(0 to 600)" in tool.description
        task = asyncio.create_task(tool.execute(seconds=400))
        await asyncio.sleep(0.01)
        assert not task.done()  # sleeping, not refused
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def test_a_shorter_limit_refuses_and_says_so(self) -> None:
        """With max_seconds 0.5 a 1 s sleep is refused, the limit named as given."""
        result = await SleepTool(max_seconds=0.5).execute(seconds=1)
        assert "InvalidArguments" == result["error_type"]
        assert "argument 'seconds' must be at most 0.5, got 1" in result["error"]

    @pytest.mark.parametrize("max_seconds", [0, -1, float("nan"), float("inf")])
    def test_a_limit_not_above_zero_is_refused(self, max_seconds: float) -> None:
        """max_seconds must be a finite number above 0."""
        with pytest.raises(ValueError, match="max_seconds"):
            SleepTool(max_seconds=max_seconds)

    async def test_the_setting_reaches_the_containers_sleep(self, tmp_path: Path) -> None:
        """tools.max_sleep_seconds sets the limit of the container's sleep tool."""
        settings = Settings(
            state_dir=tmp_path / "state",
            workspace_dir=tmp_path / "ws",
            tools={"max_sleep_seconds": 0.5},
        )
        async with build_container(settings) as container:
            result = await container.executor.execute_mission('tool:sleep {"seconds": 1}')
        assert "failed" == result.status
        assert "must be at most 0.5, got 1" in (result.error or "")
