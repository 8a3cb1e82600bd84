"""Tests of running one tool call: lookup, argument checks, result checks and the time limit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from taskforce.core.domain import run_tool_call
from taskforce.core.interfaces.jsonable import MAX_RESULT_DEPTH
from taskforce.core.interfaces.tools import TOOL_TIMEOUT_CANCEL_MESSAGE
from tests.core.domain.fakes import FakeRegistry, FakeTool, ok_handler


async def _sleep_forever(**_: Any) -> Any:
    await asyncio.sleep(3600)


class TestRunToolCall:
    async def test_success_passes_through(self) -> None:
        """A tool's successful result is returned as the tool gave it."""
        registry = FakeRegistry(FakeTool("echo", ok_handler))

        result = await run_tool_call(registry, "echo", {"a": 1}, timeout_seconds=5)

        assert {"success": True, "output": {"a": 1}} == result

    async def test_unknown_tool_is_an_error_result(self) -> None:
        """Calling a tool that is not registered gives an error result, not an exception."""
        result = await run_tool_call(FakeRegistry(), "nope", {}, timeout_seconds=5)

        assert False is result["success"]
        assert "unknown_tool" == result["error_type"]
        assert "nope" in result["error"]

    async def test_a_long_unknown_name_is_quoted_by_its_start(self) -> None:
        """An unknown tool's name of any length: its first 80 characters, and how many more."""
        result = await run_tool_call(FakeRegistry(), "n" * 100_000, {}, timeout_seconds=5)

        assert f"unknown tool {'n' * 80!r}...[+99920 chars]" == result["error"]

    async def test_arguments_must_be_an_object(self) -> None:
        """Arguments that are not a JSON object are refused before the tool runs."""
        tool = FakeTool("echo", ok_handler)

        result = await run_tool_call(FakeRegistry(tool), "echo", [1, 2], timeout_seconds=5)

        assert ("InvalidArguments", []) == (result["error_type"], tool.calls)

    async def test_arguments_must_not_nest_too_deep(self) -> None:
        """Arguments nested deeper than ``MAX_RESULT_DEPTH`` are refused before the tool
        runs, the limit named; up to it they reach the tool."""
        tool = FakeTool("echo", ok_handler)
        fits: Any = 1
        for _ in range(MAX_RESULT_DEPTH - 1):
            fits = [fits]

        refused = await run_tool_call(FakeRegistry(tool), "echo", {"x": [fits]}, timeout_seconds=5)
        await run_tool_call(FakeRegistry(tool), "echo", {"x": fits}, timeout_seconds=5)

        assert {
            "success": False,
            "error": "arguments of tool 'echo' must not nest deeper than "
            f"{MAX_RESULT_DEPTH} levels (agent.max_result_depth)",
            "error_type": "InvalidArguments",
        } == refused
        assert [{"x": fits}] == tool.calls

    async def test_raising_tool_gives_its_class_name(self) -> None:
        """An exception raised by a tool becomes an error result typed by the class name."""

        async def boom(**_: Any) -> Any:
            raise ZeroDivisionError("division by zero")

        result = await run_tool_call(
            FakeRegistry(FakeTool("div", boom)), "div", {}, timeout_seconds=5
        )

        assert ("ZeroDivisionError", False) == (result["error_type"], result["success"])
        assert "division by zero" in result["error"]

    @pytest.mark.parametrize(
        ("raised", "expected"),
        [
            (asyncio.CancelledError("inner task"), "CancelledError"),
            (SystemExit(2), "SystemExit"),
            (GeneratorExit(), "GeneratorExit"),
        ],
        ids=["CancelledError", "SystemExit", "GeneratorExit"],
    )
    async def test_a_base_exception_of_the_tools_own_fails_the_call(
        self, raised: BaseException, expected: str
    ) -> None:
        """What a tool raises that is not a cancellation of the mission fails its call, never
        the mission as if cancelled, nor the process: its own CancelledError (an inner task
        of its was cancelled), a SystemExit (argparse), a GeneratorExit."""

        async def bad(**_: Any) -> Any:
            raise raised

        result = await run_tool_call(
            FakeRegistry(FakeTool("bad", bad)), "bad", {}, timeout_seconds=5
        )

        current = asyncio.current_task()
        assert current is not None
        assert (False, expected, 0) == (
            result["success"],
            result["error_type"],
            current.cancelling(),
        )
        assert result["error"].startswith(f"{expected}")

    async def test_keyboard_interrupt_propagates(self) -> None:
        """An interrupt is the process's, not the call's: it goes on up."""

        async def interrupted(**_: Any) -> Any:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            await run_tool_call(
                FakeRegistry(FakeTool("int", interrupted)), "int", {}, timeout_seconds=5
            )

    async def test_unexpected_keyword_is_a_type_error_result(self) -> None:
        """Arguments the tool does not accept fail the call with error_type TypeError."""

        async def strict(*, x: int) -> Any:
            return {"success": True, "output": x}

        result = await run_tool_call(
            FakeRegistry(FakeTool("strict", strict)), "strict", {"y": 1}, timeout_seconds=5
        )

        assert "TypeError" == result["error_type"]

    @pytest.mark.parametrize("raw", [None, "ok", {"output": 1}, {"success": "yes"}])
    async def test_malformed_result_is_an_error(self, raw: object) -> None:
        """A result that is not a dict with a boolean success becomes an error result."""

        async def bad(**_: Any) -> Any:
            return raw

        result = await run_tool_call(
            FakeRegistry(FakeTool("bad", bad)), "bad", {}, timeout_seconds=5
        )

        assert ("invalid_result", False) == (result["error_type"], result["success"])

    async def test_max_depth_sets_how_deep_arguments_and_results_may_nest(self) -> None:
        """With max_depth 150 arguments and a result of 121 levels pass; with max_depth 5,
        arguments of 6 are refused naming 5 and the setting, the tool not run."""

        async def echo(**params: Any) -> Any:
            return {"success": True, "output": params["x"]}

        tool = FakeTool("echo", echo)
        deep: Any = 1
        for _ in range(120):
            deep = [deep]

        passed = await run_tool_call(
            FakeRegistry(tool), "echo", {"x": deep}, timeout_seconds=5, max_depth=150
        )
        refused = await run_tool_call(
            FakeRegistry(tool), "echo", {"x": [[[[[1]]]]]}, timeout_seconds=5, max_depth=5
        )

        assert {"success": True, "output": deep} == passed
        assert (
            "arguments of tool 'echo' must not nest deeper than 5 levels (agent.max_result_depth)"
            == refused["error"]
        )
        assert 1 == len(tool.calls)

    @pytest.mark.parametrize("success", [True, False])
    async def test_result_nested_too_deep_is_an_error_that_says_so(self, success: bool) -> None:
        """A result JSON cannot hold is invalid_result; the error names the limit, not the
        result's type, and the deep output is not handed on."""
        deep: Any = 1
        for _ in range(MAX_RESULT_DEPTH):
            deep = [deep]

        async def bad(**_: Any) -> Any:
            return {"success": success, "error": "x", "output": deep}

        result = await run_tool_call(
            FakeRegistry(FakeTool("bad", bad)), "bad", {}, timeout_seconds=5
        )

        assert {
            "success": False,
            "error": "tool 'bad' returned a result JSON cannot hold: nested deeper than "
            f"{MAX_RESULT_DEPTH} levels (agent.max_result_depth), or holding a container that "
            "cannot be read",
            "error_type": "invalid_result",
        } == result

    async def test_failure_without_message_gets_one(self) -> None:
        """A tool reporting failure without an error text gets one, so the model learns why."""

        async def silent(**_: Any) -> Any:
            return {"success": False}

        result = await run_tool_call(
            FakeRegistry(FakeTool("silent", silent)), "silent", {}, timeout_seconds=5
        )

        assert "silent" in result["error"]

    async def test_failed_call_is_logged_without_arguments(self) -> None:
        """A failed call logs tool.call.failed in category tool; arguments never reach the log."""

        async def boom(**_: Any) -> Any:
            raise RuntimeError("broken")

        with capture_logs() as logs:
            await run_tool_call(
                FakeRegistry(FakeTool("boom", boom)),
                "boom",
                {"secret_arg": "s3cr3t"},
                timeout_seconds=5,
            )

        failed = [entry for entry in logs if entry["event"] == "tool.call.failed"]
        assert [("tool", "boom", "RuntimeError")] == [
            (e["category"], e["tool"], e["error_type"]) for e in failed
        ]
        assert "s3cr3t" not in repr(logs)


class TestTimeLimit:
    async def test_timeout_is_an_error_result(self) -> None:
        """A call past its time limit returns error_type timeout and leaves the task uncancelled."""
        registry = FakeRegistry(FakeTool("slow", _sleep_forever))

        result = await run_tool_call(registry, "slow", {}, timeout_seconds=0.05)

        assert ("timeout", False) == (result["error_type"], result["success"])
        assert "timed out" in result["error"]
        current = asyncio.current_task()
        assert current is not None
        assert 0 == current.cancelling()
        await asyncio.sleep(0)  # no cancellation is left pending for later awaits

    async def test_tool_sees_the_timeout_message(self) -> None:
        """The tool is cancelled with TOOL_TIMEOUT_CANCEL_MESSAGE, in the mission's own task."""
        seen: list[tuple[Any, ...]] = []
        outer = asyncio.current_task()
        tasks: list[asyncio.Task[Any] | None] = []

        async def watch(**_: Any) -> Any:
            tasks.append(asyncio.current_task())
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError as exc:
                seen.append(exc.args)
                raise

        await run_tool_call(
            FakeRegistry(FakeTool("watch", watch)), "watch", {}, timeout_seconds=0.02
        )

        assert [(TOOL_TIMEOUT_CANCEL_MESSAGE,)] == seen
        assert [outer] == tasks

    async def test_swallowed_timeout_is_still_a_timeout(self) -> None:
        """A tool that swallows the timeout cancellation still yields a timeout result."""

        async def stubborn(**_: Any) -> Any:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                return {"success": True, "output": "late"}

        result = await run_tool_call(
            FakeRegistry(FakeTool("stubborn", stubborn)), "stubborn", {}, timeout_seconds=0.02
        )

        current = asyncio.current_task()
        assert current is not None
        assert ("timeout", 0) == (result["error_type"], current.cancelling())

    @pytest.mark.parametrize(
        "raised",
        [None, ValueError("no"), SystemExit(2)],
        ids=["re-raised", "ValueError", "SystemExit"],
    )
    async def test_outer_cancellation_propagates(self, raised: BaseException | None) -> None:
        """Cancelling the mission's task during a tool call raises CancelledError, no result;
        also when the tool catches the cancellation and raises something else: the mission
        is still cancelled, not a failed call it would go on after."""
        started = asyncio.Event()

        async def hang(**_: Any) -> Any:
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if raised is None:
                    raise
                raise raised from None

        registry = FakeRegistry(FakeTool("slow", hang))
        task = asyncio.create_task(run_tool_call(registry, "slow", {}, timeout_seconds=30))
        await started.wait()

        task.cancel()

        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    async def test_a_cancellation_asked_for_before_the_call_propagates(self) -> None:
        """A stop signal that asked to cancel the task just before the tool started: the
        CancelledError at the tool's first await is the mission's, not a tool failure."""
        registry = FakeRegistry(FakeTool("slow", _sleep_forever))

        async def mission() -> Any:
            current = asyncio.current_task()
            assert current is not None
            current.cancel()  # asked for, not yet delivered
            return await run_tool_call(registry, "slow", {}, timeout_seconds=30)

        task = asyncio.create_task(mission())
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    async def test_outer_cancellation_wins_over_a_timeout_firing_during_cleanup(self) -> None:
        """When the timer fires while an outer cancellation unwinds the tool, the outer one wins."""

        started = asyncio.Event()
        cleanup_cut: list[tuple[Any, ...]] = []

        async def slow_cleanup(**_: Any) -> Any:
            started.set()
            try:
                await asyncio.sleep(3600)
            finally:
                try:
                    await asyncio.sleep(3600)  # cut short by the time limit
                except asyncio.CancelledError as exc:
                    cleanup_cut.append(exc.args)
                    raise

        registry = FakeRegistry(FakeTool("slow", slow_cleanup))
        task = asyncio.create_task(run_tool_call(registry, "slow", {}, timeout_seconds=0.05))
        await started.wait()

        task.cancel()

        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        assert [(TOOL_TIMEOUT_CANCEL_MESSAGE,)] == cleanup_cut
