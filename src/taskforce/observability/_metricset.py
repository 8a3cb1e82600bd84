"""STUB (to be implemented): the semantic recording API the proxies write through.

A ``MetricSet`` owns one aioprometheus ``Registry`` holding every metric of the
catalog, plus the label guard. Proxies never touch metric objects directly;
they call the ``record_*`` methods below, always from the event-loop thread.
Every method may raise on a programming error; callers (the proxies) wrap
their calls and report faults through :meth:`MetricSet.record_fault`.
"""

from __future__ import annotations

from typing import Any


class MetricSet:
    """Every metric of the catalog on one per-container aioprometheus ``Registry``."""

    registry: Any  # aioprometheus.Registry

    def __init__(self, *, max_label_values: int = 100) -> None:
        raise NotImplementedError

    # missions (closed sets: agent_type in lean|legacy|none, status completed|failed|cancelled)
    def record_mission_started(self, agent_type: str) -> None:
        """Raise ``taskforce_missions_in_progress{agent_type}`` by one."""
        raise NotImplementedError

    def record_mission_finished(
        self,
        agent_type: str,
        status: str,
        duration_seconds: float,
        steps: int | None,
        tool_calls: int | None,
    ) -> None:
        """Count the mission, observe its duration (and steps/tool calls when known), gauge -1."""
        raise NotImplementedError

    def record_tool_call(
        self,
        tool_name: str,
        agent_type: str,
        status: str,
        duration_seconds: float,
        error_type: str | None,
    ) -> None:
        """Count a tool call (status success|error), its duration, and the failure type."""
        raise NotImplementedError

    def record_llm_request(
        self, model: str, agent_type: str, operation: str, status: str, duration_seconds: float
    ) -> None:
        """Count an LLM request (operation complete|generate|stream) and observe its latency."""
        raise NotImplementedError

    def record_llm_tokens(
        self, model: str, agent_type: str, input_tokens: int, output_tokens: int
    ) -> None:
        """Add prompt/completion tokens (zero values are skipped)."""
        raise NotImplementedError

    def record_time_to_first_token(self, model: str, agent_type: str, seconds: float) -> None:
        """Observe the time to the first chunk of a stream."""
        raise NotImplementedError

    def record_context_pack(self, agent_type: str, messages: int, tokens: int) -> None:
        """Observe the size of what is sent to the model (messages, estimated tokens)."""
        raise NotImplementedError

    def record_state_size(self, size_bytes: int) -> None:
        """Observe the size of a saved session state."""
        raise NotImplementedError

    def record_http_request(
        self, method: str, route: str, status_code: int, duration_seconds: float
    ) -> None:
        """Count an HTTP request by route template and observe its duration."""
        raise NotImplementedError

    def record_fault(self, stage: str) -> None:
        """Count a fault swallowed inside instrumentation (never raises)."""
        raise NotImplementedError
