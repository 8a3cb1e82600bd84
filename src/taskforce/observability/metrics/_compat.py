"""The ``record_*`` calls of the proxies, on top of the families, until they use children.

Transitional: the proxies move to the families' children next; then this goes away.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskforce.observability.metrics._catalog import (
    CONTEXT_PACK_MESSAGES,
    CONTEXT_PACK_TOKENS,
    HTTP_DURATION,
    HTTP_METHODS,
    HTTP_REQUESTS,
    LLM_DURATION,
    LLM_REQUESTS,
    LLM_TOKENS,
    LLM_TTFT,
    MISSION_DURATION,
    MISSION_STEPS,
    MISSION_TOOL_CALLS,
    MISSIONS,
    MISSIONS_IN_PROGRESS,
    OTHER,
    STATE_SIZE,
    TOOL_CALLS,
    TOOL_DURATION,
    TOOL_FAILURES,
)

if TYPE_CHECKING:
    from taskforce.observability.metrics._catalog import MetricSpec
    from taskforce.observability.metrics._children import CounterChild, GaugeChild, HistogramChild
    from taskforce.observability.metrics._family import Family

__all__ = ["RecordCalls"]

_METHODS = frozenset(HTTP_METHODS)


class RecordCalls:
    """``record_*`` methods for a :class:`MetricSet` (a mixin)."""

    if TYPE_CHECKING:  # provided by MetricSet

        def counter(self, spec: MetricSpec) -> Family[CounterChild]: ...
        def gauge(self, spec: MetricSpec) -> Family[GaugeChild]: ...
        def histogram(self, spec: MetricSpec) -> Family[HistogramChild]: ...

    def record_mission_started(self, agent_type: str) -> None:
        """Raise ``missions_in_progress{agent_type}`` by one."""
        self.gauge(MISSIONS_IN_PROGRESS).labels(agent_type).inc()

    def record_mission_finished(
        self,
        agent_type: str,
        status: str,
        duration_seconds: float,
        steps: int | None,
        tool_calls: int | None,
    ) -> None:
        """Count the mission, observe its duration, steps and tool calls, gauge -1."""
        missions = self.counter(MISSIONS).labels(agent_type, status)
        gauge = self.gauge(MISSIONS_IN_PROGRESS).labels(agent_type)
        duration = self.histogram(MISSION_DURATION).labels(agent_type, status)
        steps_hist = self.histogram(MISSION_STEPS).labels(agent_type)
        calls_hist = self.histogram(MISSION_TOOL_CALLS).labels(agent_type)
        duration.observe(duration_seconds)
        if steps is not None:
            steps_hist.observe(steps)
        if tool_calls is not None:
            calls_hist.observe(tool_calls)
        missions.inc()
        gauge.dec()

    def record_tool_call(
        self,
        tool_name: str,
        agent_type: str,
        status: str,
        duration_seconds: float,
        error_type: str | None,
    ) -> None:
        """Count a tool call, observe its duration, and count the failure type on error."""
        calls = self.counter(TOOL_CALLS).labels(tool_name, agent_type, status)
        self.histogram(TOOL_DURATION).labels(tool_name, agent_type).observe(duration_seconds)
        calls.inc()
        if status == "error":
            error = "unknown" if error_type is None else error_type
            self.counter(TOOL_FAILURES).labels(tool_name, agent_type, error).inc()

    def record_llm_call(
        self,
        model: str,
        agent_type: str,
        operation: str,
        status: str,
        duration_seconds: float,
        input_tokens: int,
        output_tokens: int,
        messages: int | None,
        pack_tokens: int,
    ) -> None:
        """Record one LLM request: count, latency, context pack, tokens."""
        requests = self.counter(LLM_REQUESTS).labels(model, agent_type, operation, status)
        latency = self.histogram(LLM_DURATION).labels(model, agent_type, operation)
        latency.observe(duration_seconds)
        requests.inc()
        if messages is not None:
            self.histogram(CONTEXT_PACK_MESSAGES).labels(agent_type).observe(messages)
            self.histogram(CONTEXT_PACK_TOKENS).labels(agent_type).observe(pack_tokens)
        if input_tokens or output_tokens:
            if input_tokens < 0 or output_tokens < 0:
                raise ValueError(f"token counts must be >= 0, got {input_tokens}, {output_tokens}")
            tokens = self.counter(LLM_TOKENS)
            counted_in = tokens.labels(model, agent_type, "input")
            counted_out = tokens.labels(model, agent_type, "output")
            counted_in.inc(input_tokens)
            counted_out.inc(output_tokens)

    def record_time_to_first_token(self, model: str, agent_type: str, seconds: float) -> None:
        """Observe the time to the first chunk of a stream."""
        self.histogram(LLM_TTFT).labels(model, agent_type).observe(seconds)

    def record_state_size(self, size_bytes: int) -> None:
        """Observe the size of a saved session state."""
        self.histogram(STATE_SIZE).labels().observe(size_bytes)

    def record_http_request(
        self, method: str, route: str, status_code: Any, duration_seconds: float
    ) -> None:
        """Count an HTTP request by route template and observe its duration."""
        label_method = method if isinstance(method, str) and method in _METHODS else OTHER
        status = str(int(status_code))
        self.counter(HTTP_REQUESTS).labels(label_method, route, status).inc()
        self.histogram(HTTP_DURATION).labels(label_method, route).observe(duration_seconds)
