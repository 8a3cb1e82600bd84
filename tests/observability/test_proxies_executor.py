"""ExecutorProxy: the mission scope, and each mission recorded exactly once however it ends."""

from __future__ import annotations

import asyncio
import inspect
from contextlib import aclosing
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from taskforce.core.interfaces import ExecutorProtocol, ProgressEvent, mission_scope
from taskforce.errors import MissionError
from taskforce.observability import (
    ExecutorProxy,
    ToolRegistryProxy,
    current_agent_type,
    observe_llm_provider,
)
from taskforce.observability.metrics import MetricSet
from tests.observability.metric_samples import BrokenMetrics, faults, samples, value
from tests.observability.proxy_fakes import (
    FakeExecutor,
    FakeRegistry,
    FakeStreamingProvider,
    FakeTool,
    make_result,
)
from tests.support.odd_values import UnequalArgument, Unrepresentable


def _finished(metrics: MetricSet) -> list[tuple[str, str, int | None, int | None]]:
    """Missions finished: (agent_type, status, steps, tool calls), one per mission.

    Steps and tool calls are the sums observed for that flow, None when none was.
    """
    steps = samples(metrics, "taskforce_mission_steps")
    tool_calls = samples(metrics, "taskforce_mission_tool_calls")
    durations = samples(metrics, "taskforce_mission_duration_seconds")
    finished: list[tuple[str, str, int | None, int | None]] = []
    for (agent, status), count in samples(metrics, "taskforce_missions_total").items():
        assert count == durations[(agent, status)][0]
        flow_steps, flow_calls = steps.get((agent,)), tool_calls.get((agent,))
        finished += [
            (
                agent,
                status,
                None if flow_steps is None else int(flow_steps[1]),
                None if flow_calls is None else int(flow_calls[1]),
            )
        ] * int(count)
    return finished


def _in_progress(metrics: MetricSet, agent_type: str) -> Any:
    return value(metrics, "taskforce_missions_in_progress", agent_type=agent_type)


def _nothing_recorded(metrics: MetricSet) -> bool:
    """No mission counted, timed or in progress, no fault."""
    return not any(
        samples(metrics, name)
        for name in (
            "taskforce_missions_total",
            "taskforce_mission_duration_seconds",
            "taskforce_missions_in_progress",
            "taskforce_metrics_errors_total",
        )
    )


class TestParity:
    def test_identity(self, metrics: MetricSet) -> None:
        """isinstance, __wrapped__ and calling conventions are the executor's."""
        executor = FakeExecutor()
        proxy = ExecutorProxy(executor, metrics)
        assert isinstance(proxy, FakeExecutor)
        assert isinstance(proxy, ExecutorProtocol)
        assert executor is proxy.__wrapped__
        assert inspect.iscoroutinefunction(proxy.execute_mission)
        assert inspect.isasyncgenfunction(proxy.execute_mission_streaming)

    async def test_same_result_object(self, metrics: MetricSet) -> None:
        """execute_mission returns the very result the executor returned."""
        result = make_result("s", "m", "lean")

        async def body(*ids: Any) -> Any:
            return result

        assert result is await ExecutorProxy(FakeExecutor(body), metrics).execute_mission("go")


class TestExecuteMission:
    async def test_completed(self, metrics: MetricSet) -> None:
        """A completed mission: started, then finished completed with steps and tool calls."""
        await ExecutorProxy(FakeExecutor(), metrics).execute_mission("go", "legacy")
        assert [("legacy", "completed", 2, 3)] == _finished(metrics)
        assert 0 == _in_progress(metrics, "legacy")

    async def test_failed_result(self, metrics: MetricSet) -> None:
        """A mission returned with status failed is counted failed."""

        async def body(sid: str, mid: str, agent_type: str) -> Any:
            return make_result(sid, mid, agent_type, status="failed")

        await ExecutorProxy(FakeExecutor(body), metrics).execute_mission("go")
        assert [("lean", "failed", 2, 3)] == _finished(metrics)

    async def test_raise_is_failed_and_the_same_exception(self, metrics: MetricSet) -> None:
        """An executor that raises: the same exception object, the mission counted failed."""
        error = RuntimeError("broken")

        async def body(*ids: Any) -> Any:
            raise error

        with pytest.raises(RuntimeError) as caught:
            await ExecutorProxy(FakeExecutor(body), metrics).execute_mission("go")
        assert error is caught.value
        assert [("lean", "failed", None, None)] == _finished(metrics)
        assert 0 == _in_progress(metrics, "lean")

    async def test_cancelled(self, metrics: MetricSet) -> None:
        """A cancelled mission is counted cancelled, the gauge is back at 0."""
        running = asyncio.Event()

        async def body(*ids: Any) -> Any:
            running.set()
            await asyncio.sleep(10)

        proxy = ExecutorProxy(FakeExecutor(body), metrics)
        task = asyncio.create_task(proxy.execute_mission("go"))
        await running.wait()
        assert 1 == _in_progress(metrics, "lean")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [("lean", "cancelled", None, None)] == _finished(metrics)
        assert 0 == _in_progress(metrics, "lean")

    async def test_missing_ids_left_to_the_executor(self, metrics: MetricSet) -> None:
        """The proxy makes no ids: missing ones reach the executor as None, which makes them."""
        executor = FakeExecutor()
        await ExecutorProxy(executor, metrics).execute_mission("go")
        (call,) = executor.calls
        assert (None, None) == (call["session_id"], call["mission_id"])

    async def test_given_ids_kept(self, metrics: MetricSet) -> None:
        """Given ids reach the executor unchanged."""
        executor = FakeExecutor()
        await ExecutorProxy(executor, metrics).execute_mission("go", "lean", "sess", "miss")
        assert ("sess", "miss") == (
            executor.calls[0]["session_id"],
            executor.calls[0]["mission_id"],
        )

    async def test_sets_no_context_of_its_own(self, metrics: MetricSet) -> None:
        """The executor owns the mission context: the proxy binds nothing, in either context."""
        seen: dict[str, Any] = {}

        async def body(sid: str, mid: str, agent_type: str) -> Any:
            seen.update(structlog.contextvars.get_contextvars(), current=current_agent_type())
            return make_result(sid, mid, agent_type)

        await ExecutorProxy(FakeExecutor(body), metrics).execute_mission("go", "legacy", "s1", "m1")
        assert {"current": "none"} == seen
        assert {} == structlog.contextvars.get_contextvars()

    async def test_unknown_agent_type_is_not_a_mission(self, metrics: MetricSet) -> None:
        """A bad agent_type passes straight through: the executor's error, nothing recorded."""
        executor = FakeExecutor()
        with pytest.raises(MissionError):
            await ExecutorProxy(executor, metrics).execute_mission("go", 'bogus\n"type')  # type: ignore[arg-type]
        assert _nothing_recorded(metrics)
        assert executor.calls[0]["session_id"] is None

    async def test_an_agent_type_that_cannot_be_compared_reaches_the_executor(
        self, metrics: MetricSet
    ) -> None:
        """Comparing the agent_type raises: the call still passes through, counted nowhere,
        and the executor refuses it."""
        executor = FakeExecutor()
        agent_type = UnequalArgument()
        with pytest.raises(MissionError, match="unknown agent_type"):
            await ExecutorProxy(executor, metrics).execute_mission("go", agent_type)  # type: ignore[arg-type]
        assert [agent_type] == [call["agent_type"] for call in executor.calls]
        assert _nothing_recorded(metrics)

    @pytest.mark.parametrize("observed", [True, False], ids=["metrics-on", "metrics-off"])
    async def test_a_value_whose_repr_fails_is_refused_alike(
        self, metrics: MetricSet, observed: bool
    ) -> None:
        """A mission, agent_type or id whose repr (and class) fail is refused with the same
        MissionError with metrics on and off, by both forms; nothing is counted."""
        plain = FakeExecutor()
        executor: Any = ExecutorProxy(plain, metrics) if observed else plain
        for args in [(Unrepresentable(),), ("go", Unrepresentable()), ("go", "lean", 10**5000)]:
            with pytest.raises(MissionError, match=r"got <|unknown agent_type <"):
                await executor.execute_mission(*args)
            with pytest.raises(MissionError, match=r"got <|unknown agent_type <"):
                await anext(executor.execute_mission_streaming(*args))
        assert _nothing_recorded(metrics)

    async def test_refused_request_is_not_a_mission(self, metrics: MetricSet) -> None:
        """A request the executor refuses (a flow, but a blank mission) is counted nowhere."""
        with pytest.raises(MissionError):
            await ExecutorProxy(FakeExecutor(), metrics).execute_mission(" \n", "legacy")
        assert _nothing_recorded(metrics)
        assert 0 == _in_progress(metrics, "legacy")

    async def test_tools_and_llm_inside_carry_agent_type(self, metrics: MetricSet) -> None:
        """Proxied tools and LLM calls made by the mission are labelled with its agent_type."""
        registry = ToolRegistryProxy(FakeRegistry(FakeTool("calc")), metrics)
        llm = observe_llm_provider(FakeStreamingProvider(), metrics)

        async def body(sid: str, mid: str, agent_type: str) -> Any:
            with mission_scope("s", "m", agent_type):  # as the executor sets it
                await llm.complete([{"role": "user", "content": "hi"}])
                await registry.get("calc").execute()
            return make_result(sid, mid, agent_type)

        await ExecutorProxy(FakeExecutor(body), metrics).execute_mission("go", "legacy")
        tools = samples(metrics, "taskforce_tool_calls_total")
        requests = samples(metrics, "taskforce_llm_requests_total")
        assert {"legacy"} == {agent for _, agent, _ in tools}
        assert {"legacy"} == {agent for _, agent, _, _ in requests}


class TestExecuteMissionStreaming:
    async def test_completed_from_result_event(self, metrics: MetricSet) -> None:
        """A stream read to its end: the same events, counted as the result event says."""
        executor = FakeExecutor()
        proxy = ExecutorProxy(executor, metrics)
        events = [e async for e in proxy.execute_mission_streaming("go", "legacy")]
        assert ["mission_started", "step_started", "result"] == [e.kind for e in events]
        assert [("legacy", "completed", 2, 3)] == _finished(metrics)
        assert 0 == _in_progress(metrics, "legacy")

    async def test_nothing_recorded_before_iteration(self, metrics: MetricSet) -> None:
        """Creating the stream starts nothing; a stream never iterated records nothing."""
        stream = ExecutorProxy(FakeExecutor(), metrics).execute_mission_streaming("go")
        await stream.aclose()
        assert _nothing_recorded(metrics)

    async def test_consumer_stops_early_is_cancelled(self, metrics: MetricSet) -> None:
        """A consumer that stops before the result: cancelled, inner stream closed, once."""
        executor = FakeExecutor()
        stream = ExecutorProxy(executor, metrics).execute_mission_streaming("go")
        async with aclosing(stream) as events:
            async for _ in events:
                break
        assert executor.stream_closed
        assert [("lean", "cancelled", None, None)] == _finished(metrics)
        assert 0 == _in_progress(metrics, "lean")

    async def test_stop_after_result_is_the_result(self, metrics: MetricSet) -> None:
        """A consumer that stops right after the result event: the mission had completed."""
        stream = ExecutorProxy(FakeExecutor(), metrics).execute_mission_streaming("go")
        async with aclosing(stream) as events:
            async for event in events:
                if event.kind == "result":
                    break
        assert [("lean", "completed", 2, 3)] == _finished(metrics)

    async def test_consumer_cancelled(self, metrics: MetricSet) -> None:
        """A consumer task cancelled mid-stream (a disconnect): cancelled, once."""
        executor = FakeExecutor()
        executor.event_delay = 0.05
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in ExecutorProxy(executor, metrics).execute_mission_streaming("go"):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [("lean", "cancelled", None, None)] == _finished(metrics)
        assert 0 == _in_progress(metrics, "lean")

    async def test_exception_mid_stream(self, metrics: MetricSet) -> None:
        """An exception from the stream: the same object, counted failed, once."""
        executor = FakeExecutor()
        executor.stream_error = RuntimeError("mid")
        with pytest.raises(RuntimeError) as caught:
            async for _ in ExecutorProxy(executor, metrics).execute_mission_streaming("go"):
                pass
        assert executor.stream_error is caught.value
        assert [("lean", "failed", None, None)] == _finished(metrics)

    async def test_stream_without_result_is_failed(self, metrics: MetricSet) -> None:
        """A stream that ends without its result event broke the protocol: failed."""
        executor = FakeExecutor()
        executor.events = [ProgressEvent(kind="mission_started")]
        async for _ in ExecutorProxy(executor, metrics).execute_mission_streaming("go"):
            pass
        assert [("lean", "failed", None, None)] == _finished(metrics)

    async def test_context_left_alone(self, metrics: MetricSet) -> None:
        """The streaming form sets no context either: inner steps and consumer see none."""
        executor = FakeExecutor()
        outside = []
        async for _ in ExecutorProxy(executor, metrics).execute_mission_streaming("go", "legacy"):
            outside.append(current_agent_type())
        assert ["none"] * 3 == executor.seen_agent_types
        assert ["none"] * 3 == outside

    async def test_blank_mission_is_not_a_mission(self, metrics: MetricSet) -> None:
        """A whitespace-only mission is refused by the executor and counted nowhere."""
        events = ExecutorProxy(FakeExecutor(), metrics).execute_mission_streaming("  \n\t")
        with pytest.raises(MissionError):
            await events.__anext__()
        assert _nothing_recorded(metrics)

    async def test_unknown_agent_type_passes_through(self, metrics: MetricSet) -> None:
        """A bad agent_type in the streaming form is not counted either."""
        events = ExecutorProxy(FakeExecutor(), metrics).execute_mission_streaming(
            "go",
            "nope",  # type: ignore[arg-type]
        )
        with pytest.raises(MissionError):
            await events.__anext__()
        assert _nothing_recorded(metrics)

    async def test_mission_error_after_the_first_event_is_failed(self, metrics: MetricSet) -> None:
        """A MissionError once the mission has started is a failed mission, not a refusal."""
        executor = FakeExecutor()
        executor.stream_error = MissionError("raised mid-stream")
        with pytest.raises(MissionError):
            async for _ in ExecutorProxy(executor, metrics).execute_mission_streaming("go"):
                pass
        assert [("lean", "failed", None, None)] == _finished(metrics)
        assert 0 == _in_progress(metrics, "lean")


class TestExecutorFaults:
    async def test_broken_metrics(self) -> None:
        """A raising MetricSet leaves the mission result unchanged; faults counted, logged once."""
        metrics = BrokenMetrics()
        proxy = ExecutorProxy(FakeExecutor(), metrics)
        with capture_logs() as logs:
            first = await proxy.execute_mission("go")
            await proxy.execute_mission("go")
        assert "completed" == first.status
        assert {"mission": 4} == faults(metrics)
        assert ["mission.start", "mission.finish"] == [log["stage"] for log in logs]

    async def test_unreadable_result_is_a_fault(self, metrics: MetricSet) -> None:
        """A result without status/steps: returned as is, counted completed, fault counted."""
        odd = object()

        async def body(*ids: Any) -> Any:
            return odd

        assert odd is await ExecutorProxy(FakeExecutor(body), metrics).execute_mission("go")
        assert [("lean", "completed", None, None)] == _finished(metrics)
        assert {"mission": 1} == faults(metrics)

    @pytest.mark.parametrize("tool_calls", [10**400, -3], ids=["huge", "negative"])
    async def test_tool_calls_that_are_no_count_lose_no_mission(
        self, metrics: MetricSet, tool_calls: int
    ) -> None:
        """A tool call count past what a sample holds, or below 0: the mission is counted
        once with its status, duration and count agree, no counts written, one fault."""

        class _OddCount:
            status = "failed"
            steps: list[Any] = []

        _OddCount.tool_calls = tool_calls  # type: ignore[attr-defined]
        result: Any = _OddCount()

        async def body(*ids: Any) -> Any:
            return result

        assert result is await ExecutorProxy(FakeExecutor(body), metrics).execute_mission("go")
        assert [("lean", "failed", None, None)] == _finished(metrics)
        assert {"mission": 1} == faults(metrics)

    async def test_readable_status_is_kept_when_the_counts_are_not(
        self, metrics: MetricSet
    ) -> None:
        """A result whose status reads but whose steps do not: that status, no counts, a fault."""

        class _NoSteps:
            status = "failed"
            tool_calls = 0

            @property
            def steps(self) -> list[Any]:
                raise RuntimeError("steps unavailable")

        async def body(*ids: Any) -> Any:
            return _NoSteps()

        await ExecutorProxy(FakeExecutor(body), metrics).execute_mission("go")
        assert [("lean", "failed", None, None)] == _finished(metrics)
        assert {"mission": 1} == faults(metrics)
