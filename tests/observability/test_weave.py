"""The weave: proxy class chosen per object, no double wrapping, the undo path, real missions."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskforce.application.executor import AgentExecutor
from taskforce.infrastructure.llm import ScriptedLLMProvider
from taskforce.infrastructure.state import FileStateStore
from taskforce.infrastructure.tools import build_default_registry
from taskforce.observability import (
    ExecutorProxy,
    LLMProviderProxy,
    StateStoreProxy,
    StreamingLLMProviderProxy,
    ToolProxy,
    ToolRegistryProxy,
    instrument,
    uninstrument,
    weave,
    weave_executor,
)
from taskforce.observability._proxy_base import _forget_logged_faults
from tests.observability.proxy_fakes import (
    FakeExecutor,
    FakeProvider,
    FakeRegistry,
    FakeStore,
    FakeStreamingProvider,
    FakeTool,
    RecordingMetrics,
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


class TestInstrument:
    @pytest.mark.parametrize(
        ("make", "proxy_class"),
        [
            (FakeExecutor, ExecutorProxy),
            (FakeRegistry, ToolRegistryProxy),
            (FakeProvider, LLMProviderProxy),
            (FakeStreamingProvider, StreamingLLMProviderProxy),
            (FakeStore, StateStoreProxy),
            (FakeTool, ToolProxy),
        ],
    )
    def test_proxy_class_per_protocol(
        self, metrics: RecordingMetrics, make: Any, proxy_class: type
    ) -> None:
        """Each protocol gets its proxy class, which still passes isinstance of the object."""
        plain = make()
        proxy = instrument(plain, metrics)
        assert proxy_class is type(proxy)
        assert isinstance(proxy, type(plain))

    def test_already_proxied_returned_unchanged(self, metrics: RecordingMetrics) -> None:
        """Instrumenting a proxy (even with another MetricSet) returns that proxy."""
        proxy = instrument(FakeTool(), metrics)
        assert proxy is instrument(proxy, metrics)
        assert proxy is instrument(proxy, RecordingMetrics())

    async def test_no_double_counting(self, metrics: RecordingMetrics) -> None:
        """A twice-instrumented tool records one call per call."""
        tool = instrument(instrument(FakeTool(), metrics), metrics)
        await tool.execute()
        assert 1 == len(metrics.of("tool_call"))

    def test_uninstrument(self, metrics: RecordingMetrics) -> None:
        """uninstrument hands back __wrapped__, and a plain object unchanged."""
        plain = FakeStore()
        assert plain is uninstrument(instrument(plain, metrics))
        assert plain is uninstrument(plain)

    def test_unknown_object_refused(self, metrics: RecordingMetrics) -> None:
        """An object of no known protocol is a TypeError naming its type."""
        with pytest.raises(TypeError, match="'object'"):
            instrument(object(), metrics)


class TestWeave:
    def test_weave_three(self, metrics: RecordingMetrics) -> None:
        """weave returns the provider, registry and store, each proxied."""
        llm, tools, state = weave(
            llm_provider=FakeProvider(),
            tool_registry=FakeRegistry(),
            state_store=FakeStore(),
            metrics=metrics,
        )
        assert (LLMProviderProxy, ToolRegistryProxy, StateStoreProxy) == (
            type(llm),
            type(tools),
            type(state),
        )
        assert not hasattr(llm, "stream")

    def test_weave_checks_each_role(self, metrics: RecordingMetrics) -> None:
        """An object passed in the wrong role is refused with a TypeError."""
        with pytest.raises(TypeError, match="ToolRegistryProtocol"):
            weave(
                llm_provider=FakeProvider(),
                tool_registry=FakeStore(),
                state_store=FakeStore(),
                metrics=metrics,
            )

    def test_weave_executor(self, metrics: RecordingMetrics) -> None:
        """weave_executor wraps the executor; twice is still one proxy."""
        executor = weave_executor(FakeExecutor(), metrics)
        assert ExecutorProxy is type(executor)
        assert executor is weave_executor(executor, metrics)


def _woven_executor(tmp_path: Path, metrics: RecordingMetrics) -> Any:
    llm, tools, state = weave(
        llm_provider=ScriptedLLMProvider(model="scripted-1"),
        tool_registry=build_default_registry(tmp_path / "workspace"),
        state_store=FileStateStore(tmp_path / "state"),
        metrics=metrics,
    )
    return weave_executor(AgentExecutor(llm, tools, state), metrics)


MISSION = 'tool:calculator {"expression": "6*7"}\ntool:nope {}'


class TestRealMissions:
    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_mission_through_the_real_stack(
        self, tmp_path: Path, metrics: RecordingMetrics, agent_type: str
    ) -> None:
        """A real mission: one mission record, tool/LLM calls and state labelled by its flow."""
        executor = _woven_executor(tmp_path, metrics)
        result = await executor.execute_mission(MISSION, agent_type)
        (finished,) = metrics.of("mission_finished")
        assert (agent_type, result.status) == (finished["agent_type"], finished["status"])
        assert {agent_type: 0} == metrics.in_progress
        tool_names = [c["tool_name"] for c in metrics.of("tool_call")]
        assert "calculator" in tool_names
        labels = {c["agent_type"] for c in metrics.of("tool_call") + metrics.of("llm_request")}
        assert {agent_type} == labels
        assert metrics.of("llm_tokens")
        assert metrics.of("state_size")

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_streamed_mission_labels_inner_calls(
        self, tmp_path: Path, metrics: RecordingMetrics, agent_type: str
    ) -> None:
        """A streamed mission (run in the executor's own task) labels tool/LLM calls by flow."""
        executor = _woven_executor(tmp_path, metrics)
        events = [e async for e in executor.execute_mission_streaming(MISSION, agent_type)]
        assert "result" == events[-1].kind
        (finished,) = metrics.of("mission_finished")
        assert events[-1].result.status == finished["status"]
        labels = {c["agent_type"] for c in metrics.of("tool_call") + metrics.of("llm_request")}
        assert {agent_type} == labels
        assert metrics.of("tool_call")


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run_example(name: str, tmp_path: Path) -> list[str]:
    # TMPDIR: the examples keep their state in a temporary directory, here under tmp_path.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    return done.stdout.splitlines()


class TestExamples:
    def test_custom_tool_shows_in_metrics(self, tmp_path: Path) -> None:
        """examples/custom_tool.py: a tool registered late is counted per flow in /metrics."""
        lines = _run_example("custom_tool.py", tmp_path)
        for agent_type in ("lean", "legacy"):
            assert (
                f'taskforce_tool_calls_total{{agent_type="{agent_type}",status="success",'
                'tool_name="word_count"} 1'
            ) in lines

    def test_custom_provider_shows_in_metrics(self, tmp_path: Path) -> None:
        """examples/custom_provider.py: a user's provider is counted, and has no stream."""
        lines = _run_example("custom_provider.py", tmp_path)
        assert "# provider proxied, still streams? False" in lines
        assert (
            'taskforce_llm_requests_total{agent_type="lean",model="arithmetic-1",'
            'operation="complete",status="success"} 2'
        ) in lines
