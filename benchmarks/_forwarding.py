"""Proxies that only forward: the cost of the weave's indirection, without any recording.

Same base class as the real proxies (``ObservingProxy``, a ``wrapt.BaseObjectProxy``),
same objects wrapped (executor, LLM provider, tool registry, every tool it hands
out, state store) and the same methods defined on the proxy class; each method
only awaits the wrapped call and returns its result. The throughput benchmark runs
a container built from these next to the metrics-on one, so the run shows how much
of the difference the indirection alone costs (timing, label reading and metric
updates are the rest).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskforce.application.container import build_container
from taskforce.application.executor import AgentExecutor
from taskforce.config import Settings
from taskforce.observability import MetricSet
from taskforce.observability.proxies._base import ObservingProxy, passthrough


class _Executor(ObservingProxy[Any]):
    async def execute_mission(self, *args: Any, **kwargs: Any) -> Any:
        return await self.__wrapped__.execute_mission(*args, **kwargs)


class ForwardingProvider(ObservingProxy[Any]):
    """An LLM provider proxy whose ``complete`` and ``generate`` only forward."""

    async def complete(self, *args: Any, **kwargs: Any) -> Any:
        return await self.__wrapped__.complete(*args, **kwargs)

    async def generate(self, *args: Any, **kwargs: Any) -> Any:
        return await self.__wrapped__.generate(*args, **kwargs)


class _Tool(ObservingProxy[Any]):
    name = passthrough("name")
    description = passthrough("description")
    parameters_schema = passthrough("parameters_schema")

    async def execute(self, **params: Any) -> Any:
        return await self.__wrapped__.execute(**params)


class _Registry(ObservingProxy[Any]):
    openai_schemas = passthrough("openai_schemas")

    def __init__(self, wrapped: Any, metrics: MetricSet) -> None:
        super().__init__(wrapped, metrics)
        self._self_tools: dict[int, Any] = {}

    def get(self, name: str) -> Any:
        return self._self_proxy(self.__wrapped__.get(name))

    def list_tools(self) -> Sequence[Any]:
        return [self._self_proxy(tool) for tool in self.__wrapped__.list_tools()]

    def _self_proxy(self, tool: Any) -> Any:
        proxy = self._self_tools.get(id(tool))
        if proxy is None:
            proxy = self._self_tools[id(tool)] = _Tool(tool, self._self_metrics)
        return proxy


class _Store(ObservingProxy[Any]):
    async def load(self, *args: Any, **kwargs: Any) -> Any:
        return await self.__wrapped__.load(*args, **kwargs)

    async def save(self, *args: Any, **kwargs: Any) -> Any:
        return await self.__wrapped__.save(*args, **kwargs)

    async def append(self, *args: Any, **kwargs: Any) -> Any:
        return await self.__wrapped__.append(*args, **kwargs)


def forwarding_executor(settings: Settings) -> Any:
    """An executor built as ``build_container`` builds it, every part behind a forwarding proxy.

    Args:
        settings: The settings of the container (its metrics section is not used).

    Returns:
        The executor proxy to run missions through.
    """
    plain = build_container(settings)  # the parts exactly as the service builds them
    if plain.metrics is not None:
        raise ValueError("a forwarding executor is built from settings with metrics off")
    unused = MetricSet()
    llm = ForwardingProvider(plain.llm_provider, unused)
    tools = _Registry(plain.tool_registry, unused)
    state = _Store(plain.state_store, unused)
    executor = AgentExecutor(llm, tools, state, agent_settings=settings.agent)
    return _Executor(executor, unused)
