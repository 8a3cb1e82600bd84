"""The whole metric set of a mission, recorded by other libraries: the per-mission peers.

``peer_executor(settings, sink)`` builds an executor as ``build_container`` does with
metrics off, and wraps its parts in plain wrappers that time and classify what our
proxies time and classify (the mission, every tool call, every LLM call, every state
save) and write the same series to ``sink``: pre-bound ``prometheus_client`` children
(:class:`PromSink`) or OpenTelemetry SDK instruments (:class:`OtelSink`). The catalog's
names, labels and buckets are read from a ``MetricSet``, so the peers write what we write.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from time import perf_counter
from typing import Any

import prometheus_client
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from taskforce.application.container import build_container
from taskforce.application.executor import AgentExecutor
from taskforce.config import Settings
from taskforce.core.interfaces.context import current_agent_type
from taskforce.observability.metrics import CATALOG, MetricSpec

_SPECS = {spec.name: spec for spec in CATALOG}


def _spec(name: str) -> MetricSpec:
    return _SPECS[f"taskforce_{name}"]


class PromSink:
    """The catalog's mission, tool, LLM and state series as prometheus_client children.

    ``labels(...)`` is resolved once per label set and the child kept (pre-bound), the
    fastest way to use prometheus_client.
    """

    def __init__(self) -> None:
        registry = prometheus_client.CollectorRegistry()
        self._metrics: dict[str, Any] = {}
        kinds = {
            "counter": prometheus_client.Counter,
            "gauge": prometheus_client.Gauge,
            "histogram": prometheus_client.Histogram,
        }
        for spec in CATALOG:
            if spec.kind == "counter" and spec.name.startswith("taskforce_metrics"):
                continue
            options: dict[str, Any] = {"buckets": spec.buckets} if spec.buckets else {}
            name = spec.name.removesuffix("_total")
            self._metrics[spec.name] = kinds[spec.kind](
                name, spec.help, spec.label_names, registry=registry, **options
            )
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, name: str, *labels: str) -> Any:
        key = (name, *labels)
        found = self._children.get(key)
        if found is None:
            metric = self._metrics[f"taskforce_{name}"]
            found = self._children[key] = metric.labels(*labels) if labels else metric
        return found

    def inc(self, name: str, labels: tuple[str, ...], amount: float = 1) -> None:
        self._child(name, *labels).inc(amount)

    def add(self, name: str, labels: tuple[str, ...], amount: float) -> None:
        self._child(name, *labels).inc(amount)

    def dec(self, name: str, labels: tuple[str, ...]) -> None:
        self._child(name, *labels).dec()

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        self._child(name, *labels).observe(value)


class OtelSink:
    """The same series as OpenTelemetry SDK instruments with attributes, in-memory reader."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        meter = self.provider.get_meter("taskforce.bench")
        self._instruments: dict[str, Any] = {}
        self._names: dict[str, tuple[str, ...]] = {}
        for spec in CATALOG:
            if spec.kind == "histogram":
                instrument = meter.create_histogram(
                    spec.name, explicit_bucket_boundaries_advisory=list(spec.buckets)
                )
            elif spec.kind == "gauge":
                instrument = meter.create_up_down_counter(spec.name)
            else:
                instrument = meter.create_counter(spec.name)
            self._instruments[spec.name] = instrument
            self._names[spec.name] = spec.label_names

    def _attributes(self, name: str, labels: tuple[str, ...]) -> dict[str, str]:
        return dict(zip(self._names[name], labels, strict=True))

    def inc(self, name: str, labels: tuple[str, ...], amount: float = 1) -> None:
        full = f"taskforce_{name}"
        self._instruments[full].add(amount, self._attributes(full, labels))

    add = inc

    def dec(self, name: str, labels: tuple[str, ...]) -> None:
        full = f"taskforce_{name}"
        self._instruments[full].add(-1, self._attributes(full, labels))

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        full = f"taskforce_{name}"
        self._instruments[full].record(value, self._attributes(full, labels))


class _Delegate:
    def __init__(self, wrapped: Any, sink: Any) -> None:
        self._wrapped = wrapped
        self._sink = sink

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


class _Tool(_Delegate):
    @property
    def name(self) -> str:
        return str(self._wrapped.name)

    async def execute(self, **params: Any) -> Any:
        started = perf_counter()
        error_type: str | None = None
        try:
            result = await self._wrapped.execute(**params)
            if not (isinstance(result, dict) and result.get("success") is True):
                error_type = "tool_error"
            return result
        except Exception as exc:
            error_type = type(exc).__name__
            raise
        finally:
            seconds = perf_counter() - started
            labels = (self._wrapped.name, current_agent_type())
            sink = self._sink
            sink.inc("tool_calls_total", (*labels, "success" if error_type is None else "error"))
            sink.observe("tool_duration_seconds", labels, seconds)
            if error_type is not None:
                sink.inc("tool_failures_total", (*labels, error_type))


class _Registry(_Delegate):
    def __init__(self, wrapped: Any, sink: Any) -> None:
        super().__init__(wrapped, sink)
        self._tools: dict[int, _Tool] = {}

    def _tool(self, tool: Any) -> Any:
        found = self._tools.get(id(tool))
        if found is None:
            found = self._tools[id(tool)] = _Tool(tool, self._sink)
        return found

    def get(self, name: str) -> Any:
        return self._tool(self._wrapped.get(name))

    def list_tools(self) -> Sequence[Any]:
        return [self._tool(tool) for tool in self._wrapped.list_tools()]

    def openai_schemas(self) -> Any:
        return self._wrapped.openai_schemas()


class _Provider(_Delegate):
    async def complete(self, messages: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        chars = sum(len(m["content"]) for m in messages if m.get("content"))
        return await self._call("complete", len(messages), chars, messages, *args, **kwargs)

    async def generate(self, prompt: str, *args: Any, **kwargs: Any) -> Any:
        context = args[0] if args else kwargs.get("context")
        chars = len(prompt) + (len(str(context)) if context else 0)
        return await self._call("generate", 1, chars, prompt, *args, **kwargs)

    async def _call(self, operation: str, sent: int, chars: int, *args: Any, **kw: Any) -> Any:
        started = perf_counter()
        result = None
        try:
            result = await getattr(self._wrapped, operation)(*args, **kw)
            return result
        finally:
            seconds = perf_counter() - started
            ok = isinstance(result, dict) and result.get("success") is True
            model = str((result or {}).get("model") or self._wrapped.model)
            agent = current_agent_type()
            sink = self._sink
            sink.inc("llm_requests_total", (model, agent, operation, "success" if ok else "error"))
            sink.observe("llm_request_duration_seconds", (model, agent, operation), seconds)
            sink.observe("context_pack_messages", (agent,), sent)
            sink.observe("context_pack_tokens", (agent,), (chars + 3) // 4)
            usage = (result or {}).get("usage")
            if usage:
                sink.add("llm_tokens_total", (model, agent, "input"), usage["prompt_tokens"])
                sink.add("llm_tokens_total", (model, agent, "output"), usage["completion_tokens"])


class _Store(_Delegate):
    async def append(self, session_id: str, record: Any) -> Any:
        appended = await self._wrapped.append(session_id, record)
        self._sink.observe("state_size_bytes", (), appended.size_bytes)
        return appended

    async def save(self, session_id: str, state: Any) -> Any:
        saved = await self._wrapped.save(session_id, state)
        size = saved if isinstance(saved, int) else len(json.dumps(state).encode())
        self._sink.observe("state_size_bytes", (), size)
        return saved


class _Executor(_Delegate):
    async def execute_mission(self, mission: str, agent_type: str = "lean", **kw: Any) -> Any:
        sink = self._sink
        sink.inc("missions_in_progress", (agent_type,))
        started = perf_counter()
        status, steps, tool_calls = "cancelled", None, None
        try:
            result = await self._wrapped.execute_mission(mission, agent_type, **kw)
            status, steps, tool_calls = result.status, len(result.steps), result.tool_calls
            return result
        except Exception:
            status = "failed"
            raise
        finally:
            seconds = perf_counter() - started
            sink.inc("missions_total", (agent_type, status))
            sink.observe("mission_duration_seconds", (agent_type, status), seconds)
            if steps is not None:
                sink.observe("mission_steps", (agent_type,), steps)
                sink.observe("mission_tool_calls", (agent_type,), tool_calls)
            sink.dec("missions_in_progress", (agent_type,))


def peer_executor(settings: Settings, sink: PromSink | OtelSink) -> Any:
    """An executor built as ``build_container`` builds it, observed by hand into ``sink``.

    Args:
        settings: The container's settings (metrics off).
        sink: Where the series go.

    Returns:
        The executor to run missions through.
    """
    plain = build_container(settings)  # the parts exactly as the service builds them
    if plain.metrics is not None:
        raise ValueError("a peer executor is built from settings with metrics off")
    llm = _Provider(plain.llm_provider, sink)
    tools = _Registry(plain.tool_registry, sink)
    state = _Store(plain.state_store, sink)
    executor = AgentExecutor(llm, tools, state, agent_settings=settings.agent)  # type: ignore[arg-type]
    return _Executor(executor, sink)
