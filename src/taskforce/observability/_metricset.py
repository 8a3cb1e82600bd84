"""The semantic recording API the proxies write through, on one per-container ``Registry``.

A ``MetricSet`` owns one aioprometheus ``Registry`` holding every metric of the catalog,
plus the label guard. Proxies never touch metric objects directly; they call the
``record_*`` methods below. Every method may raise on a programming error (a value
outside a closed label set, a negative count); callers (the proxies) wrap their calls
and report faults through :meth:`MetricSet.record_fault`, which never raises.

Hazard: aioprometheus has no locks and neither does this module. Record only from the
event-loop thread (after the awaited call returns), never from a worker thread.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left

from taskforce.observability._catalog import series_budget
from taskforce.observability._render import TextRenderer
from taskforce.observability._series_cache import LLM_TTFT, TOOL_FAILURES, SeriesCache

__all__ = ["MetricSet"]


class MetricSet(SeriesCache):
    """Every metric of the catalog on one per-container aioprometheus ``Registry``.

    Each ``record_*`` method caches, per tuple of raw label values, the series it writes
    (the store key aioprometheus derives from the label dict, and the histogram value
    object), so a repeated call is a dict lookup, a bisect and a few additions. Values
    outside the closed sets raise ``ValueError``; free-form values pass the label guard.
    Durations below zero (or NaN) are recorded as 0. Not thread-safe: event loop only.

    Attributes:
        registry: The aioprometheus ``Registry`` served at ``/metrics``.
        guard: The :class:`LabelGuard` capping free-form label values.
        series_budget: Worst-case number of series this set can expose.
        max_label_values: The guard's cap per label per metric.
    """

    def __init__(self, *, max_label_values: int = 100) -> None:
        """Create the registry, every catalog metric and the zero-valued closed series.

        Args:
            max_label_values: Cap of distinct values per free-form label per metric.

        Raises:
            ValueError: ``max_label_values`` is below 1.
        """
        if max_label_values < 1:
            raise ValueError(f"max_label_values must be >= 1, got {max_label_values!r}")
        super().__init__(max_label_values)
        self.max_label_values = max_label_values
        self.series_budget = series_budget(max_label_values)
        self.registry = self._table.registry
        self.guard = self._table.guard
        self._renderer = TextRenderer(self.registry)

    # missions (closed sets: agent_type in lean|legacy|none, status completed|failed|cancelled)
    def record_mission_started(self, agent_type: str) -> None:
        """Raise ``taskforce_missions_in_progress{agent_type}`` by one.

        Args:
            agent_type: ``lean``, ``legacy`` or ``none``.

        Raises:
            ValueError: ``agent_type`` is outside its closed set.
        """
        entry = self._missions_started.get(agent_type)
        if entry is None:
            entry = self._missions_started_entry(agent_type)
        store, key = entry
        store[key] += 1

    def record_mission_finished(
        self,
        agent_type: str,
        status: str,
        duration_seconds: float,
        steps: int | None,
        tool_calls: int | None,
    ) -> None:
        """Count the mission, observe its duration (and steps/tool calls when known), gauge -1.

        Args:
            agent_type: ``lean``, ``legacy`` or ``none``.
            status: ``completed``, ``failed`` or ``cancelled``.
            duration_seconds: Wall-clock duration of the mission.
            steps: Agent-loop steps taken, or None when unknown.
            tool_calls: Tool calls made, or None when unknown.

        Raises:
            ValueError: A label value is outside its closed set.
        """
        entry = self._missions_finished.get((agent_type, status))
        if entry is None:
            entry = self._missions_finished_entry(agent_type, status)
        store, key, seconds, steps_hist, calls_hist, gauge, gauge_key = entry
        # once per mission: FastHistogram.observe's call costs nothing here worth inlining
        seconds.observe(duration_seconds if duration_seconds >= 0.0 else 0.0)
        if steps is not None:
            steps_hist.observe(steps)
        if tool_calls is not None:
            calls_hist.observe(tool_calls)
        store[key] += 1
        gauge[gauge_key] -= 1

    def record_tool_call(
        self,
        tool_name: str,
        agent_type: str,
        status: str,
        duration_seconds: float,
        error_type: str | None,
    ) -> None:
        """Count a tool call (status success|error), its duration, and the failure type.

        Args:
            tool_name: The tool's name (guarded).
            agent_type: ``lean``, ``legacy`` or ``none``.
            status: ``success`` or ``error``.
            duration_seconds: Duration of the call.
            error_type: On error, the exception class name, ``tool_error`` or ``timeout``
                (guarded); ``unknown`` when None. Ignored on success.

        Raises:
            ValueError: A label value is outside its closed set.
        """
        entry = self._tool_calls.get((tool_name, agent_type, status))
        if entry is None:
            entry = self._tool_call_entry(tool_name, agent_type, status)
        hist, store, key = entry
        value = duration_seconds if duration_seconds >= 0.0 else 0.0
        hist.counts[bisect_left(hist.keys, value)] += 1  # FastHistogram.observe, inlined
        hist.sum += value
        store[key] += 1
        if status == "error":
            failure = (tool_name, agent_type, "unknown" if error_type is None else error_type)
            found = self._tool_failures.get(failure)
            if found is None:
                found = self._counter_entry(self._tool_failures, TOOL_FAILURES, failure)
            found[0][found[1]] += 1

    def record_llm_request(
        self, model: str, agent_type: str, operation: str, status: str, duration_seconds: float
    ) -> None:
        """Count an LLM request (operation complete|generate|stream) and observe its latency.

        Args:
            model: The model the provider resolved (guarded).
            agent_type: ``lean``, ``legacy`` or ``none``.
            operation: ``complete``, ``generate`` or ``stream``.
            status: ``success`` or ``error``.
            duration_seconds: Latency; for a stream, until it ended.

        Raises:
            ValueError: A label value is outside its closed set.
        """
        # the request part of record_llm_call, through the same cached series
        self.record_llm_call(model, agent_type, operation, status, duration_seconds, 0, 0, None, 0)

    def record_llm_tokens(
        self, model: str, agent_type: str, input_tokens: int, output_tokens: int
    ) -> None:
        """Add prompt/completion tokens (zero values are skipped).

        Args:
            model: The model the provider resolved (guarded).
            agent_type: ``lean``, ``legacy`` or ``none``.
            input_tokens: Prompt tokens reported.
            output_tokens: Completion tokens reported.

        Raises:
            ValueError: A count is negative, or ``agent_type`` is outside its closed set.
        """
        if input_tokens < 0 or output_tokens < 0:
            raise ValueError(f"token counts must be >= 0, got {input_tokens}, {output_tokens}")
        entry = self._llm_tokens.get((model, agent_type))
        if entry is None:
            entry = self._llm_tokens_entry(model, agent_type)
        store, input_key, output_key = entry
        if input_tokens:
            store[input_key] += input_tokens
        if output_tokens:
            store[output_key] += output_tokens

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
        """Record one LLM request whole, through one cached bundle of its series.

        The same as :meth:`record_llm_request`, then :meth:`record_context_pack`
        (unless ``messages`` is None), then :meth:`record_llm_tokens`, in one call:
        the proxies make it on every LLM call.

        Args:
            model: The model the provider resolved (guarded).
            agent_type: ``lean``, ``legacy`` or ``none``.
            operation: ``complete``, ``generate`` or ``stream``.
            status: ``success`` or ``error``.
            duration_seconds: Latency; for a stream, until it ended.
            input_tokens: Prompt tokens reported (0 when none).
            output_tokens: Completion tokens reported (0 when none).
            messages: Number of messages sent, or None when the pack is unknown.
            pack_tokens: Estimated tokens of those messages.

        Raises:
            ValueError: A label value is outside its closed set, or a token count is
                negative (the request and the pack are recorded before that check).
        """
        entry = self._llm_calls.get((model, agent_type, operation, status))
        if entry is None:
            entry = self._llm_call_entry(model, agent_type, operation, status)
        seconds, requests, key, counted, packs = entry
        # FastHistogram.observe inlined: a Python call per histogram was most of the cost.
        value = duration_seconds if duration_seconds >= 0.0 else 0.0
        seconds.counts[bisect_left(seconds.keys, value)] += 1
        seconds.sum += value
        requests[key] += 1
        if messages is not None:
            if packs is None:
                packs = entry[4] = self._pack_entry(agent_type)
            sizes, estimates = packs
            sizes.counts[bisect_left(sizes.keys, messages)] += 1
            sizes.sum += messages
            estimates.counts[bisect_left(estimates.keys, pack_tokens)] += 1
            estimates.sum += pack_tokens
        if input_tokens or output_tokens:
            if input_tokens < 0 or output_tokens < 0:
                raise ValueError(f"token counts must be >= 0, got {input_tokens}, {output_tokens}")
            if counted is None:
                # token series are created on first use, as record_llm_tokens does
                counted = self._llm_tokens.get((model, agent_type))
                if counted is None:
                    counted = self._llm_tokens_entry(model, agent_type)
                if (model, agent_type) in self._llm_tokens:  # never keep an overflowed one
                    entry[3] = counted
            tokens, input_key, output_key = counted
            if input_tokens:
                tokens[input_key] += input_tokens
            if output_tokens:
                tokens[output_key] += output_tokens

    def record_time_to_first_token(self, model: str, agent_type: str, seconds: float) -> None:
        """Observe the time to the first chunk of a stream.

        Args:
            model: The model the provider resolved (guarded).
            agent_type: ``lean``, ``legacy`` or ``none``.
            seconds: Time from the request to the first chunk.

        Raises:
            ValueError: ``agent_type`` is outside its closed set.
        """
        hist = self._llm_ttft.get((model, agent_type))
        if hist is None:
            hist, cacheable = self._table.histogram(LLM_TTFT, (model, agent_type))
            self._remember(self._llm_ttft, (model, agent_type), hist, cacheable)
        hist.observe(seconds if seconds >= 0.0 else 0.0)

    def record_context_pack(self, agent_type: str, messages: int, tokens: int) -> None:
        """Observe the size of what is sent to the model (messages, estimated tokens).

        Args:
            agent_type: ``lean``, ``legacy`` or ``none``.
            messages: Number of messages sent.
            tokens: Estimated tokens of those messages.

        Raises:
            ValueError: ``agent_type`` is outside its closed set.
        """
        sizes, estimates = self._pack_entry(agent_type)
        sizes.observe(messages)
        estimates.observe(tokens)

    def record_state_size(self, size_bytes: int) -> None:
        """Observe the size of a saved session state.

        Args:
            size_bytes: Bytes written.
        """
        hist = self._state_hist
        if size_bytes == size_bytes:  # FastHistogram.observe, inlined (NaN: no bucket)
            hist.counts[bisect_left(hist.keys, size_bytes)] += 1
        else:
            hist.unbucketed += 1
        hist.sum += size_bytes

    def record_http_request(
        self, method: str, route: str, status_code: int, duration_seconds: float
    ) -> None:
        """Count an HTTP request by route template and observe its duration.

        Args:
            method: The request method; non-standard methods count as ``other``.
            route: The matched route template, or ``unmatched`` (guarded).
            status_code: The response status (guarded).
            duration_seconds: Time to the end of the response body.
        """
        entry = self._http.get((method, route, status_code))
        if entry is None:
            entry = self._http_entry(method, route, status_code)
        hist, store, key = entry
        hist.observe(duration_seconds if duration_seconds >= 0.0 else 0.0)
        store[key] += 1

    def record_fault(self, stage: str) -> None:
        """Count a fault swallowed inside instrumentation (never raises).

        Args:
            stage: One of the catalog's fault stages, optionally dotted (``llm.stream``
                counts as ``llm``); anything else counts as ``other``.
        """
        # the last line of defence: a fault while counting a fault must not raise
        with contextlib.suppress(Exception):
            self._table.count_fault(stage)

    def render(self) -> bytes:
        """Return the registry as a Prometheus text exposition (format 0.0.4).

        Returns:
            UTF-8 encoded exposition; see :class:`TextRenderer`.
        """
        return self._renderer.render()
