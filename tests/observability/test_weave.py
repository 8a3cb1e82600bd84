"""The weave: proxy class chosen per object, no double wrapping, the undo path, real missions."""

from __future__ import annotations

import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import wrapt

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
from taskforce.observability.metrics import MetricSet
from taskforce.observability.proxies._base import ObservingProxy
from tests.observability.metric_samples import samples
from tests.observability.proxy_fakes import (
    FakeExecutor,
    FakeProvider,
    FakeRegistry,
    FakeStore,
    FakeStreamingProvider,
    FakeTool,
)


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
        self, metrics: MetricSet, make: Any, proxy_class: type
    ) -> None:
        """Each protocol gets its proxy class, which still passes isinstance of the object."""
        plain = make()
        proxy = instrument(plain, metrics)
        assert proxy_class is type(proxy)
        assert isinstance(proxy, type(plain))

    @pytest.mark.parametrize(
        "proxy_class",
        [
            ExecutorProxy,
            ToolRegistryProxy,
            LLMProviderProxy,
            StreamingLLMProviderProxy,
            StateStoreProxy,
            ToolProxy,
        ],
    )
    def test_no_typing_generic_at_run_time(self, proxy_class: type) -> None:
        """A proxy's MRO is its own classes, wrapt's and ``object``: subscripting
        ``ObservingProxy[T]`` is for the type checker and adds no ``typing.Generic``."""
        assert typing.Generic not in proxy_class.__mro__
        assert [wrapt.BaseObjectProxy, object] == list(proxy_class.__mro__[-2:])
        assert ObservingProxy in proxy_class.__mro__

    def test_already_proxied_returned_unchanged(self, metrics: MetricSet) -> None:
        """Instrumenting a proxy (even with another MetricSet) returns that proxy."""
        proxy = instrument(FakeTool(), metrics)
        assert proxy is instrument(proxy, metrics)
        assert proxy is instrument(proxy, MetricSet())

    async def test_no_double_counting(self, metrics: MetricSet) -> None:
        """A twice-instrumented tool records one call per call."""
        tool = instrument(instrument(FakeTool(), metrics), metrics)
        await tool.execute()
        assert {("fake", "none", "success"): 1} == samples(metrics, "taskforce_tool_calls_total")

    def test_uninstrument(self, metrics: MetricSet) -> None:
        """uninstrument hands back __wrapped__, and a plain object unchanged."""
        plain = FakeStore()
        assert plain is uninstrument(instrument(plain, metrics))
        assert plain is uninstrument(plain)

    def test_unknown_object_refused(self, metrics: MetricSet) -> None:
        """An object of no known protocol is a TypeError naming its type."""
        with pytest.raises(TypeError, match="'object'"):
            instrument(object(), metrics)


class TestWeave:
    def test_weave_three(self, metrics: MetricSet) -> None:
        """weave returns the provider, registry and store, each proxied."""
        llm, tools, state = weave(
            llm_provider=FakeProvider(),
            tool_registry=FakeRegistry(),
            state_store=FakeStore(),
            metrics=metrics,
        )
        woven: tuple[Any, ...] = (llm, tools, state)
        assert [LLMProviderProxy, ToolRegistryProxy, StateStoreProxy] == [type(o) for o in woven]
        assert not hasattr(llm, "stream")

    def test_weave_checks_each_role(self, metrics: MetricSet) -> None:
        """An object passed in the wrong role is refused with a TypeError."""
        with pytest.raises(TypeError, match="ToolRegistryProtocol"):
            weave(
                llm_provider=FakeProvider(),
                tool_registry=FakeStore(),  # type: ignore[type-var]  # the wrong role
                state_store=FakeStore(),
                metrics=metrics,
            )

    def test_weave_executor(self, metrics: MetricSet) -> None:
        """weave_executor wraps the executor; twice is still one proxy."""
        executor: Any = weave_executor(FakeExecutor(), metrics)
        assert ExecutorProxy is type(executor)
        assert executor is weave_executor(executor, metrics)


def _flows(metrics: MetricSet) -> set[str]:
    """The agent_type of every tool call and LLM request recorded."""
    tools = samples(metrics, "taskforce_tool_calls_total")
    requests = samples(metrics, "taskforce_llm_requests_total")
    return {agent for _, agent, _ in tools} | {agent for _, agent, _, _ in requests}


def _woven_executor(tmp_path: Path, metrics: MetricSet) -> Any:
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
        self, tmp_path: Path, metrics: MetricSet, agent_type: str
    ) -> None:
        """A real mission: one mission record, tool/LLM calls and state labelled by its flow."""
        executor = _woven_executor(tmp_path, metrics)
        result = await executor.execute_mission(MISSION, agent_type)
        assert {(agent_type, result.status): 1} == samples(metrics, "taskforce_missions_total")
        assert {} == samples(metrics, "taskforce_missions_in_progress")
        tools = samples(metrics, "taskforce_tool_calls_total")
        assert "calculator" in {tool for tool, _, _ in tools}
        assert {agent_type} == _flows(metrics)
        assert samples(metrics, "taskforce_llm_tokens_total")
        assert samples(metrics, "taskforce_state_size_bytes")

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_streamed_mission_labels_inner_calls(
        self, tmp_path: Path, metrics: MetricSet, agent_type: str
    ) -> None:
        """A streamed mission (run in the executor's own task) labels tool/LLM calls by flow."""
        executor = _woven_executor(tmp_path, metrics)
        events = [e async for e in executor.execute_mission_streaming(MISSION, agent_type)]
        assert "result" == events[-1].kind
        status = events[-1].result.status
        assert {(agent_type, status): 1} == samples(metrics, "taskforce_missions_total")
        assert {agent_type} == _flows(metrics)
        assert samples(metrics, "taskforce_tool_calls_total")


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


@pytest.mark.slow  # each runs an example script in a subprocess
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
