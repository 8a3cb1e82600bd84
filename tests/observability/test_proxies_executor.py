"""ExecutorProxy: the mission scope, and each mission recorded exactly once however it ends."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
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
from taskforce.observability._proxy_base import _forget_logged_faults
from tests.observability.proxy_fakes import (
    BrokenMetrics,
    FakeExecutor,
    FakeRegistry,
    FakeStreamingProvider,
    FakeTool,
    RecordingMetrics,
    make_result,
)


@pytest.fixture(autouse=True, name="_fresh_fault_log")
def fixture_fresh_fault_log() -> Iterator[None]:
    """Each test sees every fault logged afresh (the log-once set is process-wide)."""
    _forget_logged_faults()
    yield
    _forget_logged_faults()


@pytest.fixture(name="metrics")
def fixture_metrics() -> RecordingMetrics:
    return RecordingMetrics()


def _finished(metrics: RecordingMetrics) -> list[tuple[str, str, int | None, int | None]]:
    return [
        (c["agent_type"], c["status"], c["steps"], c["tool_calls"])
        for c in metrics.of("mission_finished")
    ]


class TestParity:
    def test_identity(self, metrics: RecordingMetrics) -> None:
        """isinstance, __wrapped__ and calling conventions are the executor's."""
        executor = FakeExecutor()
        proxy = ExecutorProxy(executor, metrics)
        assert isinstance(proxy, FakeExecutor)
        assert isinstance(proxy, ExecutorProtocol)
        assert executor is proxy.__wrapped__
        assert inspect.iscoroutinefunction(proxy.execute_mission)
        assert inspect.isasyncgenfunction(proxy.execute_mission_streaming)

    async def test_same_result_object(self, metrics: RecordingMetrics) -> None:
        """execute_mission returns the very result the executor returned."""
        result = make_result("s", "m", "lean")

        async def body(*ids: Any) -> Any:
            return result

        assert result is await ExecutorProxy(FakeExecutor(body), metrics).execute_mission("go")


class TestExecuteMission:
    async def test_completed(self, metrics: RecordingMetrics) -> None:
        """A completed mission: started, then finished completed with steps and tool calls."""
        await ExecutorProxy(FakeExecutor(), metrics).execute_mission("go", "legacy")
        assert [{"agent_type": "legacy"}] == metrics.of("mission_started")
        assert [("legacy", "completed", 2, 3)] == _finished(metrics)
        assert {"legacy": 0} == metrics.in_progress

    async def test_failed_result(self, metrics: RecordingMetrics) -> None:
        """A mission returned with status failed is counted failed."""

        async def body(sid: str, mid: str, agent_type: str) -> Any:
            return make_result(sid, mid, agent_type, status="failed")

        await ExecutorProxy(FakeExecutor(body), metrics).execute_mission("go")
        assert [("lean", "failed", 2, 3)] == _finished(metrics)

    async def test_raise_is_failed_and_the_same_exception(self, metrics: RecordingMetrics) -> None:
        """An executor that raises: the same exception object, the mission counted failed."""
        error = RuntimeError("broken")

        async def body(*ids: Any) -> Any:
            raise error

        with pytest.raises(RuntimeError) as caught:
            await ExecutorProxy(FakeExecutor(body), metrics).execute_mission("go")
        assert error is caught.value
        assert [("lean", "failed", None, None)] == _finished(metrics)
        assert {"lean": 0} == metrics.in_progress

    async def test_cancelled(self, metrics: RecordingMetrics) -> None:
        """A cancelled mission is counted cancelled, the gauge is back at 0."""
        running = asyncio.Event()

        async def body(*ids: Any) -> Any:
            running.set()
            await asyncio.sleep(10)

        proxy = ExecutorProxy(FakeExecutor(body), metrics)
        task = asyncio.create_task(proxy.execute_mission("go"))
        await running.wait()
        assert {"lean": 1} == metrics.in_progress
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [("lean", "cancelled", None, None)] == _finished(metrics)
        assert {"lean": 0} == metrics.in_progress

    async def test_missing_ids_left_to_the_executor(self, metrics: RecordingMetrics) -> None:
        """The proxy makes no ids: missing ones reach the executor as None, which makes them."""
        executor = FakeExecutor()
        await ExecutorProxy(executor, metrics).execute_mission("go")
        (call,) = executor.calls
        assert (None, None) == (call["session_id"], call["mission_id"])

    async def test_given_ids_kept(self, metrics: RecordingMetrics) -> None:
        """Given ids reach the executor unchanged."""
        executor = FakeExecutor()
        await ExecutorProxy(executor, metrics).execute_mission("go", "lean", "sess", "miss")
        assert ("sess", "miss") == (
            executor.calls[0]["session_id"],
            executor.calls[0]["mission_id"],
        )

    async def test_sets_no_context_of_its_own(self, metrics: RecordingMetrics) -> None:
        """The executor owns the mission context: the proxy binds nothing, in either context."""
        seen: dict[str, Any] = {}

        async def body(sid: str, mid: str, agent_type: str) -> Any:
            seen.update(structlog.contextvars.get_contextvars(), current=current_agent_type())
            return make_result(sid, mid, agent_type)

        await ExecutorProxy(FakeExecutor(body), metrics).execute_mission("go", "legacy", "s1", "m1")
        assert {"current": "none"} == seen
        assert {} == structlog.contextvars.get_contextvars()

    async def test_unknown_agent_type_is_not_a_mission(self, metrics: RecordingMetrics) -> None:
        """A bad agent_type passes straight through: the executor's error, nothing recorded."""
        executor = FakeExecutor()
        with pytest.raises(MissionError):
            await ExecutorProxy(executor, metrics).execute_mission("go", 'bogus\n"type')  # type: ignore[arg-type]
        assert [] == metrics.calls
        assert executor.calls[0]["session_id"] is None

    async def test_tools_and_llm_inside_carry_agent_type(self, metrics: RecordingMetrics) -> None:
        """Proxied tools and LLM calls made by the mission are labelled with its agent_type."""
        registry = ToolRegistryProxy(FakeRegistry(FakeTool("calc")), metrics)
        llm = observe_llm_provider(FakeStreamingProvider(), metrics)

        async def body(sid: str, mid: str, agent_type: str) -> Any:
            with mission_scope("s", "m", agent_type):  # as the executor sets it
                await llm.complete([{"role": "user", "content": "hi"}])
                await registry.get("calc").execute()
            return make_result(sid, mid, agent_type)

        await ExecutorProxy(FakeExecutor(body), metrics).execute_mission("go", "legacy")
        labels = {c["agent_type"] for c in metrics.of("tool_call") + metrics.of("llm_request")}
        assert {"legacy"} == labels


class TestExecuteMissionStreaming:
    async def test_completed_from_result_event(self, metrics: RecordingMetrics) -> None:
        """A stream read to its end: the same events, counted as the result event says."""
        executor = FakeExecutor()
        proxy = ExecutorProxy(executor, metrics)
        events = [e async for e in proxy.execute_mission_streaming("go", "legacy")]
        assert ["mission_started", "step_started", "result"] == [e.kind for e in events]
        assert [("legacy", "completed", 2, 3)] == _finished(metrics)
        assert {"legacy": 0} == metrics.in_progress

    async def test_nothing_recorded_before_iteration(self, metrics: RecordingMetrics) -> None:
        """Creating the stream starts nothing; a stream never iterated records nothing."""
        stream = ExecutorProxy(FakeExecutor(), metrics).execute_mission_streaming("go")
        await stream.aclose()
        assert [] == metrics.calls

    async def test_consumer_stops_early_is_cancelled(self, metrics: RecordingMetrics) -> None:
        """A consumer that stops before the result: cancelled, inner stream closed, once."""
        executor = FakeExecutor()
        stream = ExecutorProxy(executor, metrics).execute_mission_streaming("go")
        async with aclosing(stream) as events:
            async for _ in events:
                break
        assert executor.stream_closed
        assert [("lean", "cancelled", None, None)] == _finished(metrics)
        assert {"lean": 0} == metrics.in_progress

    async def test_stop_after_result_is_the_result(self, metrics: RecordingMetrics) -> None:
        """A consumer that stops right after the result event: the mission had completed."""
        stream = ExecutorProxy(FakeExecutor(), metrics).execute_mission_streaming("go")
        async with aclosing(stream) as events:
            async for event in events:
                if event.kind == "result":
                    break
        assert [("lean", "completed", 2, 3)] == _finished(metrics)

    async def test_consumer_cancelled(self, metrics: RecordingMetrics) -> None:
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
        assert {"lean": 0} == metrics.in_progress

    async def test_exception_mid_stream(self, metrics: RecordingMetrics) -> None:
        """An exception from the stream: the same object, counted failed, once."""
        executor = FakeExecutor()
        executor.stream_error = RuntimeError("mid")
        with pytest.raises(RuntimeError) as caught:
            async for _ in ExecutorProxy(executor, metrics).execute_mission_streaming("go"):
                pass
        assert executor.stream_error is caught.value
        assert [("lean", "failed", None, None)] == _finished(metrics)

    async def test_stream_without_result_is_failed(self, metrics: RecordingMetrics) -> None:
        """A stream that ends without its result event broke the protocol: failed."""
        executor = FakeExecutor()
        executor.events = [ProgressEvent(kind="mission_started")]
        async for _ in ExecutorProxy(executor, metrics).execute_mission_streaming("go"):
            pass
        assert [("lean", "failed", None, None)] == _finished(metrics)

    async def test_context_left_alone(self, metrics: RecordingMetrics) -> None:
        """The streaming form sets no context either: inner steps and consumer see none."""
        executor = FakeExecutor()
        outside = []
        async for _ in ExecutorProxy(executor, metrics).execute_mission_streaming("go", "legacy"):
            outside.append(current_agent_type())
        assert ["none"] * 3 == executor.seen_agent_types
        assert ["none"] * 3 == outside

    async def test_blank_mission_is_not_a_mission(self, metrics: RecordingMetrics) -> None:
        """A whitespace-only mission is refused by the executor and counted nowhere."""
        events = ExecutorProxy(FakeExecutor(), metrics).execute_mission_streaming("  \n\t")
        assert 3 == len([e async for e in events])
        assert [] == metrics.calls

    async def test_unknown_agent_type_passes_through(self, metrics: RecordingMetrics) -> None:
        """A bad agent_type in the streaming form is not counted either."""
        events = [
            e
            async for e in ExecutorProxy(FakeExecutor(), metrics).execute_mission_streaming(
                "go",
                "nope",  # type: ignore[arg-type]
            )
        ]
        assert 3 == len(events)
        assert [] == metrics.calls


class TestExecutorFaults:
    async def test_broken_metrics(self) -> None:
        """A raising MetricSet leaves the mission result unchanged; faults counted, logged once."""
        metrics = BrokenMetrics()
        proxy = ExecutorProxy(FakeExecutor(), metrics)
        with capture_logs() as logs:
            first = await proxy.execute_mission("go")
            await proxy.execute_mission("go")
        assert "completed" == first.status
        assert ["mission.start", "mission.finish"] * 2 == [f["stage"] for f in metrics.of("fault")]
        assert ["mission.start", "mission.finish"] == [log["stage"] for log in logs]

    async def test_unreadable_result_is_a_fault(self, metrics: RecordingMetrics) -> None:
        """A result without status/steps: returned as is, counted completed, fault counted."""
        odd = object()

        async def body(*ids: Any) -> Any:
            return odd

        assert odd is await ExecutorProxy(FakeExecutor(body), metrics).execute_mission("go")
        assert [("lean", "completed", None, None)] == _finished(metrics)
        assert [{"stage": "mission.result"}] == metrics.of("fault")
