"""The proxies writing to a real MetricSet: the samples each kind of call leaves in the registry."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from taskforce.application.executor import AgentExecutor
from taskforce.core.interfaces import TOOL_TIMEOUT_CANCEL_MESSAGE
from taskforce.infrastructure.llm import ScriptedLLMProvider
from taskforce.infrastructure.state import FileStateStore
from taskforce.infrastructure.tools import build_default_registry
from taskforce.observability import (
    ExecutorProxy,
    MetricSet,
    StateStoreProxy,
    ToolProxy,
    mission_scope,
    observe_llm_provider,
    weave,
    weave_executor,
)
from taskforce.observability.metrics._catalog import TOOL_CALLS
from tests.observability.metric_samples import break_family, value
from tests.observability.proxy_fakes import (
    FakeExecutor,
    FakeProvider,
    FakeStore,
    FakeStreamingProvider,
    FakeTool,
)

MESSAGES = [{"role": "user", "content": "z" * 40}]


@pytest.fixture(name="metrics")
def fixture_metrics() -> MetricSet:
    return MetricSet(max_label_values=10)


def _count(metrics: MetricSet, name: str, **labels: str) -> int:
    """The number of observations of a histogram series."""
    return int(value(metrics, name, **labels)["count"])


def _raising(exc: BaseException) -> Any:
    async def behaviour(**params: Any) -> Any:
        raise exc

    return behaviour


class TestToolSamples:
    async def test_calls_failures_and_durations(self, metrics: MetricSet) -> None:
        """success, success: false, a raise and a timeout land in their series."""

        async def refuse(**params: Any) -> Any:
            return {"success": False, "error": "no"}

        with mission_scope("s", "m", "lean"):
            await ToolProxy(FakeTool("calc"), metrics).execute()
            await ToolProxy(FakeTool("calc", refuse), metrics).execute()
            with pytest.raises(KeyError):
                await ToolProxy(FakeTool("calc", _raising(KeyError("k"))), metrics).execute()
            with pytest.raises(TimeoutError):
                await ToolProxy(FakeTool("calc", _raising(TimeoutError())), metrics).execute()
        calls = "taskforce_tool_calls_total"
        failures = "taskforce_tool_failures_total"
        labels = {"tool_name": "calc", "agent_type": "lean"}
        assert 1 == value(metrics, calls, status="success", **labels)
        assert 3 == value(metrics, calls, status="error", **labels)
        assert [1, 1, 1] == [
            value(metrics, failures, error_type=error_type, **labels)
            for error_type in ("tool_error", "KeyError", "timeout")
        ]
        assert 4 == _count(metrics, "taskforce_tool_duration_seconds", **labels)

    async def test_timeout_cancellation(self, metrics: MetricSet) -> None:
        """A tool call cancelled by the agents' time limit is a 'timeout' failure."""
        started = asyncio.Event()

        async def hang(**params: Any) -> Any:
            started.set()
            await asyncio.sleep(10)

        task = asyncio.create_task(ToolProxy(FakeTool("slow", hang), metrics).execute())
        await started.wait()
        task.cancel(TOOL_TIMEOUT_CANCEL_MESSAGE)
        with pytest.raises(asyncio.CancelledError):
            await task
        labels = {"tool_name": "slow", "agent_type": "none"}
        assert 1 == value(metrics, "taskforce_tool_failures_total", error_type="timeout", **labels)

    async def test_hostile_tool_name_is_guarded(self, metrics: MetricSet) -> None:
        """A tool name with quotes, a newline and 10,000 characters: one line per series."""
        name = 'evil"\\\n' + "x" * 10_000
        await ToolProxy(FakeTool(name), metrics).execute()
        lines = [
            line
            for line in metrics.render().decode().splitlines()
            if line.startswith("taskforce_tool_calls_total{") and 'agent_type="none"' in line
        ]
        assert 1 == len(lines)
        assert lines[0].endswith(" 1")

    async def test_fault_is_counted(
        self, metrics: MetricSet, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A failing series lookup is counted in taskforce_metrics_errors_total{stage=tool}."""
        break_family(monkeypatch, TOOL_CALLS)
        result = await ToolProxy(FakeTool(), metrics).execute()
        assert result["success"]
        assert 1 == value(metrics, "taskforce_metrics_errors_total", stage="tool")


class TestLLMSamples:
    async def test_complete_and_generate(self, metrics: MetricSet) -> None:
        """Requests by operation/status, tokens by type, pack sizes: all in their series."""
        provider = FakeProvider()
        proxy = observe_llm_provider(provider, metrics)
        await proxy.complete(MESSAGES)
        await proxy.generate("prompt")
        provider.answer = {"success": False, "model": "reported-model"}
        await proxy.complete(MESSAGES)
        requests = "taskforce_llm_requests_total"
        labels = {"model": "reported-model", "agent_type": "none"}
        assert 1 == value(metrics, requests, operation="complete", status="success", **labels)
        assert 1 == value(metrics, requests, operation="complete", status="error", **labels)
        assert 1 == value(metrics, requests, operation="generate", status="success", **labels)
        tokens = "taskforce_llm_tokens_total"
        assert (22, 14) == (
            value(metrics, tokens, token_type="input", **labels),
            value(metrics, tokens, token_type="output", **labels),
        )
        assert 3 == _count(metrics, "taskforce_context_pack_messages", agent_type="none")
        pack_tokens = value(metrics, "taskforce_context_pack_tokens", agent_type="none")
        assert 10 + 10 + 2 == pack_tokens["sum"]

    async def test_stream(self, metrics: MetricSet) -> None:
        """A stream: one TTFT observation and one stream request, with the last chunk's usage."""
        proxy = observe_llm_provider(FakeStreamingProvider(), metrics)
        with mission_scope("s", "m", "legacy"):
            async for _ in proxy.stream(MESSAGES):
                pass
        labels = {"model": "stream-model", "agent_type": "legacy"}
        assert 1 == _count(metrics, "taskforce_llm_time_to_first_token_seconds", **labels)
        assert 1 == value(
            metrics, "taskforce_llm_requests_total", operation="stream", status="success", **labels
        )
        assert 5 == value(metrics, "taskforce_llm_tokens_total", token_type="input", **labels)


class TestMissionSamples:
    async def test_statuses_and_gauge(self, metrics: MetricSet) -> None:
        """completed, failed and cancelled missions are counted; the gauge ends at 0."""
        running = asyncio.Event()

        async def hang(*ids: Any) -> Any:
            running.set()
            await asyncio.sleep(10)

        async def fail(*ids: Any) -> Any:
            raise RuntimeError("x")

        await ExecutorProxy(FakeExecutor(), metrics).execute_mission("go", "legacy")
        with pytest.raises(RuntimeError):
            await ExecutorProxy(FakeExecutor(fail), metrics).execute_mission("go", "legacy")
        task = asyncio.create_task(
            ExecutorProxy(FakeExecutor(hang), metrics).execute_mission("go", "legacy")
        )
        await running.wait()
        gauge = "taskforce_missions_in_progress"
        assert 1 == value(metrics, gauge, agent_type="legacy")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        missions = "taskforce_missions_total"
        assert [1, 1, 1] == [
            value(metrics, missions, agent_type="legacy", status=status)
            for status in ("completed", "failed", "cancelled")
        ]
        assert 0 == value(metrics, gauge, agent_type="legacy")
        steps = value(metrics, "taskforce_mission_steps", agent_type="legacy")
        assert (1, 2) == (steps["count"], steps["sum"])
        assert 3 == value(metrics, "taskforce_mission_tool_calls", agent_type="legacy")["sum"]

    async def test_state_size(self, metrics: MetricSet) -> None:
        """A saved state is one observation of its size in bytes."""
        await StateStoreProxy(FakeStore(), metrics).save("s", {"k": "ü"})
        size = value(metrics, "taskforce_state_size_bytes")
        assert (1, len('{"k": "ü"}'.encode())) == (size["count"], size["sum"])


class TestRealStack:
    async def test_missions_of_both_flows(self, tmp_path: Path, metrics: MetricSet) -> None:
        """N missions per flow (plain and streamed) through the real executor: counts agree."""
        llm, tools, state = weave(
            llm_provider=ScriptedLLMProvider(model="scripted-1"),
            tool_registry=build_default_registry(tmp_path / "workspace"),
            state_store=FileStateStore(tmp_path / "state"),
            metrics=metrics,
        )
        executor = weave_executor(AgentExecutor(llm, tools, state), metrics)
        mission = 'tool:calculator {"expression": "1+1"}'
        for agent_type in ("lean", "legacy"):
            for _ in range(2):
                await executor.execute_mission(mission, agent_type)
            await executor.execute_mission("llm:error", agent_type)
            async for _ in executor.execute_mission_streaming(mission, agent_type):
                pass
        for agent_type in ("lean", "legacy"):
            missions = {
                status: value(
                    metrics, "taskforce_missions_total", agent_type=agent_type, status=status
                )
                for status in ("completed", "failed", "cancelled")
            }
            assert {"completed": 3, "failed": 1, "cancelled": 0} == missions
            calls = value(
                metrics,
                "taskforce_tool_calls_total",
                tool_name="calculator",
                agent_type=agent_type,
                status="success",
            )
            assert 3 == calls
            assert 0 == value(metrics, "taskforce_missions_in_progress", agent_type=agent_type)

    async def test_streamed_mission_abandoned(self, tmp_path: Path, metrics: MetricSet) -> None:
        """A streamed mission whose consumer leaves half-way is cancelled, the gauge back at 0."""
        llm, tools, state = weave(
            llm_provider=ScriptedLLMProvider(model="scripted-1"),
            tool_registry=build_default_registry(tmp_path / "workspace"),
            state_store=FileStateStore(tmp_path / "state"),
            metrics=metrics,
        )
        executor = weave_executor(AgentExecutor(llm, tools, state), metrics)
        stream = executor.execute_mission_streaming('tool:sleep {"seconds": 30}', "lean")
        async with aclosing(stream) as events:
            async for event in events:
                if event.kind == "tool_call":
                    break
        labels = {"agent_type": "lean"}
        assert 1 == value(metrics, "taskforce_missions_total", status="cancelled", **labels)
        assert 0 == value(metrics, "taskforce_missions_in_progress", **labels)
