"""Hand-written metric wrappers for the overhead benchmark: what users write without our proxies.

Each wrapper does the work ``ToolProxy``/``LLMProviderProxy`` do (time the call,
classify its outcome, read tokens, size the context pack) and differs only in
where the numbers go: stock aioprometheus calls with label dicts, cached
prometheus_client children, or OpenTelemetry SDK instruments. The catalog's
names, label sets and buckets are used throughout.
"""

from __future__ import annotations

from collections.abc import Sequence
from time import perf_counter
from typing import Any

import prometheus_client
from aioprometheus.collectors import Counter, Histogram, Registry
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from taskforce.observability import current_agent_type


class _ToolWrapper:
    """What a user would write without our proxy: time the call, classify it, record it."""

    def __init__(self, tool: Any) -> None:
        self._tool = tool
        self.name = tool.name

    async def execute(self, **params: Any) -> Any:
        started = perf_counter()
        try:
            result = await self._tool.execute(**params)
        except Exception as exc:
            seconds = perf_counter() - started
            self._record(self.name, current_agent_type(), "error", seconds, type(exc).__name__)
            raise
        seconds = perf_counter() - started
        if result["success"]:
            self._record(self.name, current_agent_type(), "success", seconds, None)
        else:
            self._record(self.name, current_agent_type(), "error", seconds, "tool_error")
        return result

    def _record(
        self, tool: str, agent: str, status: str, seconds: float, error_type: str | None
    ) -> None:
        raise NotImplementedError


class _LLMWrapper:
    """Same work as ``LLMProviderProxy.complete``: outcome, latency, tokens, context pack."""

    def __init__(self, provider: Any) -> None:
        self._provider = provider

    async def complete(self, messages: Sequence[dict[str, Any]], **kwargs: Any) -> Any:
        started = perf_counter()
        result = None
        try:
            result = await self._provider.complete(messages, **kwargs)
        finally:
            seconds = perf_counter() - started
            status = "success" if result is not None and result.get("success", True) else "error"
            model = (result or {}).get("model") or kwargs.get("model") or self._provider.model
            agent = current_agent_type()
            self._record_request(model, agent, status, seconds)
            usage = (result or {}).get("usage")
            if usage:
                self._record_tokens(
                    model, agent, usage["prompt_tokens"], usage["completion_tokens"]
                )
            chars = sum(len(m["content"]) for m in messages if m.get("content"))
            self._record_pack(agent, len(messages), (chars + 3) // 4)
        return result

    def _record_request(self, model: str, agent: str, status: str, seconds: float) -> None:
        raise NotImplementedError

    def _record_tokens(self, model: str, agent: str, prompt: int, completion: int) -> None:
        raise NotImplementedError

    def _record_pack(self, agent: str, messages: int, tokens: int) -> None:
        raise NotImplementedError


def _no_inf(buckets: Sequence[float]) -> list[float]:
    return [float(b) for b in buckets if b != float("inf")]


class AioStock:
    """The catalog's tool and LLM metrics on a fresh aioprometheus ``Registry``, stock calls."""

    def __init__(self, buckets: dict[str, tuple[float, ...]]) -> None:
        registry = Registry()
        c, h = Counter, Histogram
        self.tool_calls = c("taskforce_tool_calls_total", "Tool calls.", registry=registry)
        self.tool_failures = c("taskforce_tool_failures_total", "Failures.", registry=registry)
        self.tool_seconds = h(
            "taskforce_tool_duration_seconds", "Tool duration.", registry=registry,
            buckets=_no_inf(buckets["taskforce_tool_duration_seconds"]),
        )  # fmt: skip
        self.llm_requests = c("taskforce_llm_requests_total", "LLM requests.", registry=registry)
        self.llm_seconds = h(
            "taskforce_llm_request_duration_seconds", "LLM latency.", registry=registry,
            buckets=_no_inf(buckets["taskforce_llm_request_duration_seconds"]),
        )  # fmt: skip
        self.tokens = c("taskforce_llm_tokens_total", "Tokens.", registry=registry)
        self.pack_messages = h(
            "taskforce_context_pack_messages", "Messages sent.", registry=registry,
            buckets=_no_inf(buckets["taskforce_context_pack_messages"]),
        )  # fmt: skip
        self.pack_tokens = h(
            "taskforce_context_pack_tokens", "Tokens sent.", registry=registry,
            buckets=_no_inf(buckets["taskforce_context_pack_tokens"]),
        )  # fmt: skip


class AioTool(_ToolWrapper):
    def __init__(self, tool: Any, m: AioStock) -> None:
        super().__init__(tool)
        self._m = m

    def _record(
        self, tool: str, agent: str, status: str, seconds: float, error_type: str | None
    ) -> None:
        m = self._m
        m.tool_calls.inc({"tool_name": tool, "agent_type": agent, "status": status})
        m.tool_seconds.observe({"tool_name": tool, "agent_type": agent}, seconds)
        if error_type is not None:
            m.tool_failures.inc({"tool_name": tool, "agent_type": agent, "error_type": error_type})


class AioLLM(_LLMWrapper):
    def __init__(self, provider: Any, m: AioStock) -> None:
        super().__init__(provider)
        self._m = m

    def _record_request(self, model: str, agent: str, status: str, seconds: float) -> None:
        labels = {"model": model, "agent_type": agent, "operation": "complete"}
        self._m.llm_requests.inc({**labels, "status": status})
        self._m.llm_seconds.observe(labels, seconds)

    def _record_tokens(self, model: str, agent: str, prompt: int, completion: int) -> None:
        self._m.tokens.add({"model": model, "agent_type": agent, "token_type": "input"}, prompt)
        self._m.tokens.add(
            {"model": model, "agent_type": agent, "token_type": "output"}, completion
        )

    def _record_pack(self, agent: str, messages: int, tokens: int) -> None:
        self._m.pack_messages.observe({"agent_type": agent}, messages)
        self._m.pack_tokens.observe({"agent_type": agent}, tokens)


class PromChildren:
    """The same metrics in a fresh ``prometheus_client.CollectorRegistry``; children cached."""

    def __init__(self, buckets: dict[str, tuple[float, ...]]) -> None:
        r = prometheus_client.CollectorRegistry()
        c, h = prometheus_client.Counter, prometheus_client.Histogram
        t3, t2 = ("tool_name", "agent_type", "status"), ("tool_name", "agent_type")
        self.metrics = {
            "tool_calls": c("taskforce_tool_calls", "Tool calls.", t3, registry=r),
            "tool_failures": c(
                "taskforce_tool_failures", "Failures.", (*t2, "error_type"), registry=r
            ),
            "tool_seconds": h(
                "taskforce_tool_duration_seconds", "Tool duration.", t2, registry=r,
                buckets=_no_inf(buckets["taskforce_tool_duration_seconds"]),
            ),
            "llm_requests": c(
                "taskforce_llm_requests", "LLM requests.",
                ("model", "agent_type", "operation", "status"), registry=r,
            ),
            "llm_seconds": h(
                "taskforce_llm_request_duration_seconds", "LLM latency.",
                ("model", "agent_type", "operation"), registry=r,
                buckets=_no_inf(buckets["taskforce_llm_request_duration_seconds"]),
            ),
            "tokens": c(
                "taskforce_llm_tokens", "Tokens.", ("model", "agent_type", "token_type"),
                registry=r,
            ),
            "pack_messages": h(
                "taskforce_context_pack_messages", "Messages sent.", ("agent_type",), registry=r,
                buckets=_no_inf(buckets["taskforce_context_pack_messages"]),
            ),
            "pack_tokens": h(
                "taskforce_context_pack_tokens", "Tokens sent.", ("agent_type",), registry=r,
                buckets=_no_inf(buckets["taskforce_context_pack_tokens"]),
            ),
        }  # fmt: skip
        self._children: dict[tuple[str, ...], Any] = {}

    def child(self, metric: str, *labels: str) -> Any:
        """Return the child for these label values, resolving ``labels(...)`` only once."""
        key = (metric, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = self.metrics[metric].labels(*labels)
        return found


class PromTool(_ToolWrapper):
    def __init__(self, tool: Any, m: PromChildren) -> None:
        super().__init__(tool)
        self._m = m

    def _record(
        self, tool: str, agent: str, status: str, seconds: float, error_type: str | None
    ) -> None:
        child = self._m.child
        child("tool_calls", tool, agent, status).inc()
        child("tool_seconds", tool, agent).observe(seconds)
        if error_type is not None:
            child("tool_failures", tool, agent, error_type).inc()


class PromLLM(_LLMWrapper):
    def __init__(self, provider: Any, m: PromChildren) -> None:
        super().__init__(provider)
        self._m = m

    def _record_request(self, model: str, agent: str, status: str, seconds: float) -> None:
        self._m.child("llm_requests", model, agent, "complete", status).inc()
        self._m.child("llm_seconds", model, agent, "complete").observe(seconds)

    def _record_tokens(self, model: str, agent: str, prompt: int, completion: int) -> None:
        self._m.child("tokens", model, agent, "input").inc(prompt)
        self._m.child("tokens", model, agent, "output").inc(completion)

    def _record_pack(self, agent: str, messages: int, tokens: int) -> None:
        self._m.child("pack_messages", agent).observe(messages)
        self._m.child("pack_tokens", agent).observe(tokens)


class OtelInstruments:
    """The same metrics as OpenTelemetry SDK instruments read by an in-memory reader."""

    def __init__(self, buckets: dict[str, tuple[float, ...]]) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        meter = self.provider.get_meter("taskforce.bench")

        def hist(name: str) -> Any:
            bounds = _no_inf(buckets[name])
            return meter.create_histogram(name, explicit_bucket_boundaries_advisory=bounds)

        self.tool_calls = meter.create_counter("taskforce_tool_calls")
        self.tool_failures = meter.create_counter("taskforce_tool_failures")
        self.tool_seconds = hist("taskforce_tool_duration_seconds")
        self.llm_requests = meter.create_counter("taskforce_llm_requests")
        self.llm_seconds = hist("taskforce_llm_request_duration_seconds")
        self.tokens = meter.create_counter("taskforce_llm_tokens")
        self.pack_messages = hist("taskforce_context_pack_messages")
        self.pack_tokens = hist("taskforce_context_pack_tokens")


class OtelTool(_ToolWrapper):
    def __init__(self, tool: Any, m: OtelInstruments) -> None:
        super().__init__(tool)
        self._m = m

    def _record(
        self, tool: str, agent: str, status: str, seconds: float, error_type: str | None
    ) -> None:
        m = self._m
        m.tool_calls.add(1, {"tool_name": tool, "agent_type": agent, "status": status})
        m.tool_seconds.record(seconds, {"tool_name": tool, "agent_type": agent})
        if error_type is not None:
            attributes = {"tool_name": tool, "agent_type": agent, "error_type": error_type}
            m.tool_failures.add(1, attributes)


class OtelLLM(_LLMWrapper):
    def __init__(self, provider: Any, m: OtelInstruments) -> None:
        super().__init__(provider)
        self._m = m

    def _record_request(self, model: str, agent: str, status: str, seconds: float) -> None:
        attributes = {"model": model, "agent_type": agent, "operation": "complete"}
        self._m.llm_requests.add(1, {**attributes, "status": status})
        self._m.llm_seconds.record(seconds, attributes)

    def _record_tokens(self, model: str, agent: str, prompt: int, completion: int) -> None:
        self._m.tokens.add(prompt, {"model": model, "agent_type": agent, "token_type": "input"})
        self._m.tokens.add(
            completion, {"model": model, "agent_type": agent, "token_type": "output"}
        )

    def _record_pack(self, agent: str, messages: int, tokens: int) -> None:
        self._m.pack_messages.record(messages, {"agent_type": agent})
        self._m.pack_tokens.record(tokens, {"agent_type": agent})
