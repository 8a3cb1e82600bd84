"""The caches of ``MetricSet``: per tuple of raw label values, the series a record writes.

``SeriesCache`` is the base of :class:`~taskforce.observability._metricset.MetricSet`.
It holds one cache per recording method and the slow path that fills them: resolve
the label values to series through the :class:`SeriesTable` (closed sets checked,
free-form values guarded, series created at zero) and remember what was resolved,
unless a value overflowed (the cache would grow with an attack). ``MetricSet``'s hot
paths read these caches and write the series directly.

Hazard: no locks (aioprometheus has none); use it from the event-loop thread.
"""

from __future__ import annotations

from typing import Any

from taskforce.observability._catalog import HTTP_METHODS, MISSION_STATUSES, OTHER, metric
from taskforce.observability._fastmetrics import FastHistogram
from taskforce.observability._series import SeriesTable

__all__ = ["LLM_TTFT", "TOOL_FAILURES", "SeriesCache"]

_METHODS = frozenset(HTTP_METHODS)

MISSIONS = "taskforce_missions_total"
MISSION_SECONDS = "taskforce_mission_duration_seconds"
IN_PROGRESS = "taskforce_missions_in_progress"
STEPS = "taskforce_mission_steps"
MISSION_TOOL_CALLS = "taskforce_mission_tool_calls"
TOOL_CALLS = "taskforce_tool_calls_total"
TOOL_FAILURES = "taskforce_tool_failures_total"
TOOL_SECONDS = "taskforce_tool_duration_seconds"
LLM_REQUESTS = "taskforce_llm_requests_total"
LLM_SECONDS = "taskforce_llm_request_duration_seconds"
LLM_TTFT = "taskforce_llm_time_to_first_token_seconds"
LLM_TOKENS = "taskforce_llm_tokens_total"
PACK_MESSAGES = "taskforce_context_pack_messages"
PACK_TOKENS = "taskforce_context_pack_tokens"
STATE_BYTES = "taskforce_state_size_bytes"
HTTP_REQUESTS = "taskforce_http_requests_total"
HTTP_SECONDS = "taskforce_http_request_duration_seconds"


class SeriesCache:
    """The series table of one metric set, and what its recording methods cached of it."""

    def __init__(self, max_label_values: int) -> None:
        """Create the series table, empty caches and the zero-valued closed series.

        Args:
            max_label_values: Cap of distinct values per free-form label per metric.
        """
        self._table = SeriesTable(max_label_values)
        self._cache_limit = 16 * max_label_values + 1024
        self._tool_calls: dict[Any, Any] = {}
        self._tool_failures: dict[Any, Any] = {}
        self._llm_calls: dict[Any, Any] = {}
        self._llm_tokens: dict[Any, Any] = {}
        self._llm_ttft: dict[Any, Any] = {}
        self._packs: dict[Any, Any] = {}
        self._missions_started: dict[Any, Any] = {}
        self._missions_finished: dict[Any, Any] = {}
        self._http: dict[Any, Any] = {}
        self._state_hist = self._table.histogram(STATE_BYTES, ())[0]
        for agent_type in ("lean", "legacy"):  # exist at zero from the first scrape
            self._missions_started_entry(agent_type)
            for status in MISSION_STATUSES:
                self._missions_finished_entry(agent_type, status)

    def _remember(self, cache: dict[Any, Any], key: Any, entry: Any, cacheable: bool) -> None:
        # overflowed raw values are never cached: the cache would grow with the attack
        if cacheable and len(cache) < self._cache_limit:
            cache[key] = entry

    def _counter_entry(
        self, cache: dict[Any, Any], name: str, raw: tuple[Any, ...]
    ) -> tuple[dict[Any, Any], Any]:
        key, cacheable = self._table.key(name, raw)
        entry = (self._table.store(name), key)
        self._remember(cache, raw, entry, cacheable)
        return entry

    def _timed_entry(
        self, cache: dict[Any, Any], names: tuple[str, str], raw: tuple[Any, ...]
    ) -> tuple[FastHistogram, dict[Any, Any], Any]:
        counter, histogram = names
        key, counter_ok = self._table.key(counter, raw)
        hist, hist_ok = self._table.histogram(histogram, raw[: len(metric(histogram).labels)])
        entry = (hist, self._table.store(counter), key)
        self._remember(cache, raw, entry, counter_ok and hist_ok)
        return entry

    def _tool_call_entry(self, *raw: Any) -> tuple[FastHistogram, dict[Any, Any], Any]:
        return self._timed_entry(self._tool_calls, (TOOL_CALLS, TOOL_SECONDS), raw)

    def _http_entry(
        self, method: str, route: str, status_code: int
    ) -> tuple[FastHistogram, dict[Any, Any], Any]:
        label_method = method if isinstance(method, str) and method in _METHODS else OTHER
        status = str(int(status_code))
        key, counter_ok = self._table.key(HTTP_REQUESTS, (label_method, route, status))
        hist, hist_ok = self._table.histogram(HTTP_SECONDS, (label_method, route))
        entry = (hist, self._table.store(HTTP_REQUESTS), key)
        # garbage methods and non-int codes would each add an entry: never cache them
        cacheable = counter_ok and hist_ok and type(status_code) is int and method in _METHODS
        self._remember(self._http, (method, route, status_code), entry, cacheable)
        return entry

    def _llm_call_entry(self, *raw: Any) -> list[Any]:
        # [latency, request store, key, token series or None, pack histograms or None]:
        # the last two are filled on first use, so no series exists before it is written
        key, counter_ok = self._table.key(LLM_REQUESTS, raw)
        seconds, hist_ok = self._table.histogram(LLM_SECONDS, raw[:3])
        entry = [seconds, self._table.store(LLM_REQUESTS), key, None, None]
        self._remember(self._llm_calls, raw, entry, counter_ok and hist_ok)
        return entry

    def _pack_entry(self, agent_type: str) -> tuple[FastHistogram, FastHistogram]:
        entry = self._packs.get(agent_type)
        if entry is None:
            entry = (
                self._table.histogram(PACK_MESSAGES, (agent_type,))[0],
                self._table.histogram(PACK_TOKENS, (agent_type,))[0],
            )
            self._remember(self._packs, agent_type, entry, True)
        return entry

    def _llm_tokens_entry(self, model: str, agent_type: str) -> tuple[dict[Any, Any], Any, Any]:
        input_key, input_ok = self._table.key(LLM_TOKENS, (model, agent_type, "input"))
        output_key, output_ok = self._table.key(LLM_TOKENS, (model, agent_type, "output"))
        entry = (self._table.store(LLM_TOKENS), input_key, output_key)
        self._remember(self._llm_tokens, (model, agent_type), entry, input_ok and output_ok)
        return entry

    def _missions_started_entry(self, agent_type: str) -> tuple[dict[Any, Any], Any]:
        key, _ = self._table.key(IN_PROGRESS, (agent_type,))
        entry = (self._table.store(IN_PROGRESS), key)
        self._remember(self._missions_started, agent_type, entry, True)
        return entry

    def _missions_finished_entry(self, agent_type: str, status: str) -> tuple[Any, ...]:
        key, _ = self._table.key(MISSIONS, (agent_type, status))
        gauge, gauge_key = self._missions_started_entry(agent_type)
        entry = (
            self._table.store(MISSIONS),
            key,
            self._table.histogram(MISSION_SECONDS, (agent_type, status))[0],
            self._table.histogram(STEPS, (agent_type,))[0],
            self._table.histogram(MISSION_TOOL_CALLS, (agent_type,))[0],
            gauge,
            gauge_key,
        )
        self._remember(self._missions_finished, (agent_type, status), entry, True)
        return entry
