"""The metric catalog: every metric taskforce exposes, declared once, and its series budget.

Nothing else in the code base names a metric: code that records one imports its spec
(:data:`TOOL_CALLS`, ...) and asks the metric set for that family. ``MetricSet`` builds
one family per entry of :data:`CATALOG`, ``docs/metrics.md`` is checked against it, and
:func:`series_budget` derives the worst-case number of exposition lines from the closed
label sets and the label guard's cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from taskforce.core.interfaces.llm import LLM_ERROR_TYPES

__all__ = [
    "AGENT_TYPES",
    "BUILD_INFO",
    "CALL_STATUSES",
    "CATALOG",
    "CONTEXT_PACK_MESSAGES",
    "CONTEXT_PACK_TOKENS",
    "FAULT_STAGES",
    "HTTP_DURATION",
    "HTTP_METHODS",
    "HTTP_REQUESTS",
    "LABEL_OVERFLOW",
    "LLM_COST",
    "LLM_DURATION",
    "LLM_FAILURES",
    "LLM_OPERATIONS",
    "LLM_REQUESTS",
    "LLM_RETRIES",
    "LLM_TOKENS",
    "LLM_TTFT",
    "METRICS_ERRORS",
    "MISSIONS",
    "MISSIONS_IN_PROGRESS",
    "MISSION_DURATION",
    "MISSION_STATUSES",
    "MISSION_STEPS",
    "MISSION_TOOL_CALLS",
    "OTHER",
    "PROCESS_CATALOG",
    "STATE_ERRORS",
    "STATE_OPERATIONS",
    "STATE_SIZE",
    "TOKEN_TYPES",
    "TOOL_CALLS",
    "TOOL_DURATION",
    "TOOL_FAILURES",
    "UNMATCHED_ROUTE",
    "Label",
    "MetricKind",
    "MetricSpec",
    "guarded_pairs",
    "metric",
    "series_budget",
]

MetricKind = Literal["counter", "gauge", "histogram"]
LabelKind = Literal["closed", "guarded", "constant"]

#: The value a guarded label takes once its cap is reached (and for unknown methods).
OTHER = "other"
#: The ``route`` of every HTTP request that matched no route of the app.
UNMATCHED_ROUTE = "unmatched"

AGENT_TYPES: tuple[str, ...] = ("lean", "legacy", "none")
MISSION_STATUSES: tuple[str, ...] = ("completed", "failed", "cancelled")
CALL_STATUSES: tuple[str, ...] = ("success", "error")
LLM_OPERATIONS: tuple[str, ...] = ("complete", "generate", "stream")
TOKEN_TYPES: tuple[str, ...] = ("input", "output")
#: Where a fault swallowed by the instrumentation happened; unknown stages count as ``other``.
FAULT_STAGES: tuple[str, ...] = (
    "mission",  # ExecutorProxy: the mission scope
    "llm",  # LLMProviderProxy: complete, generate, stream
    "tool",  # ToolProxy: one tool call
    "registry",  # ToolRegistryProxy: wrapping tools handed out
    "state",  # StateStoreProxy: state size
    "http",  # HTTPMetricsMiddleware
    "render",  # the /metrics endpoint while rendering
    "log",  # the log sink: a line it could not take was dropped
    OTHER,
)
HTTP_METHODS: tuple[str, ...] = (
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "PATCH",
    "OPTIONS",
    "TRACE",
    "CONNECT",
    OTHER,
)

_MISSION_SECONDS: tuple[float, ...] = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)
_TOOL_SECONDS: tuple[float, ...] = (
    *(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
#: OpenTelemetry GenAI advisory boundaries of gen_ai.client.operation.duration (semconv v1.41.0).
_LLM_SECONDS: tuple[float, ...] = (
    *(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64),
    *(1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92),
)
#: Powers of 4 from 1 to 4**13, the advisory boundaries of gen_ai.client.token.usage.
_TOKENS: tuple[float, ...] = tuple(float(4**i) for i in range(14))
_COUNTS: tuple[float, ...] = (
    0.0,
    1.0,
    2.0,
    3.0,
    4.0,
    5.0,
    7.0,
    10.0,
    15.0,
    20.0,
    30.0,
    50.0,
    100.0,
)
_MESSAGES: tuple[float, ...] = tuple(float(2**i) for i in range(11))  # 1 .. 1024
_STATE_BYTES: tuple[float, ...] = tuple(float(4**i) for i in range(3, 14))  # 64 B .. 64 MiB
_HTTP_SECONDS: tuple[float, ...] = (
    *(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)


@dataclass(frozen=True, slots=True)
class Label:
    """One label of a metric: its name and where its values come from.

    ``closed`` labels take only ``values``; ``guarded`` ones take any value through the
    label guard (at most ``max_label_values`` distinct ones plus ``other``); ``constant``
    ones hold a single value per process (``taskforce_build_info``).
    """

    name: str
    kind: LabelKind
    values: tuple[str, ...] = ()

    def cardinality(self, max_label_values: int) -> int:
        """Return how many distinct values this label can take at worst.

        Args:
            max_label_values: The label guard's cap per label per metric.

        Returns:
            The size of the closed set, ``max_label_values + 1`` for a guarded label
            (the admitted values and ``other``), or 1 for a constant one.
        """
        if self.kind == "closed":
            return len(self.values)
        if self.kind == "guarded":
            return max_label_values + 1
        return 1


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric: full name, type, help text, labels and (histograms) bucket bounds.

    ``buckets`` are the finite upper bounds; ``+Inf`` is implied. ``combinations`` replaces
    the product of the label cardinalities when only some combinations can exist.
    """

    name: str
    kind: MetricKind
    help: str
    labels: tuple[Label, ...] = ()
    buckets: tuple[float, ...] = ()
    combinations: int | None = None

    @property
    def label_names(self) -> tuple[str, ...]:
        """The label names in declaration order."""
        return tuple(label.name for label in self.labels)

    @property
    def lines_per_series(self) -> int:
        """Exposition lines per label set: 1, or buckets + ``+Inf`` + ``_sum`` + ``_count``."""
        return len(self.buckets) + 3 if self.kind == "histogram" else 1

    def series_budget(self, max_label_values: int) -> int:
        """Return the worst-case number of exposition lines (series) of this metric.

        Args:
            max_label_values: The label guard's cap per label per metric.

        Returns:
            Label-set count times :attr:`lines_per_series`.
        """
        if self.combinations is not None:
            label_sets = self.combinations
        else:
            label_sets = math.prod(label.cardinality(max_label_values) for label in self.labels)
        return label_sets * self.lines_per_series


def _closed(name: str, values: tuple[str, ...]) -> Label:
    return Label(name, "closed", values)


def _guarded(name: str) -> Label:
    return Label(name, "guarded")


_AGENT = _closed("agent_type", AGENT_TYPES)
_TOOL = _guarded("tool_name")
_MODEL = _guarded("model")

MISSIONS = MetricSpec(
    "taskforce_missions_total",
    "counter",
    "Missions finished, by agent flow and final status.",
    (_AGENT, _closed("status", MISSION_STATUSES)),
)
MISSION_DURATION = MetricSpec(
    "taskforce_mission_duration_seconds",
    "histogram",
    "Wall-clock duration of a mission, by agent flow and final status.",
    (_AGENT, _closed("status", MISSION_STATUSES)),
    _MISSION_SECONDS,
)
MISSIONS_IN_PROGRESS = MetricSpec(
    "taskforce_missions_in_progress",
    "gauge",
    "Missions currently running, by agent flow.",
    (_AGENT,),
)
MISSION_STEPS = MetricSpec(
    "taskforce_mission_steps",
    "histogram",
    "Agent-loop steps taken per finished mission.",
    (_AGENT,),
    _COUNTS,
)
MISSION_TOOL_CALLS = MetricSpec(
    "taskforce_mission_tool_calls",
    "histogram",
    "Tool calls made per finished mission.",
    (_AGENT,),
    _COUNTS,
)
TOOL_CALLS = MetricSpec(
    "taskforce_tool_calls_total",
    "counter",
    "Tool calls, by tool, agent flow and outcome.",
    (_TOOL, _AGENT, _closed("status", CALL_STATUSES)),
)
TOOL_FAILURES = MetricSpec(
    "taskforce_tool_failures_total",
    "counter",
    "Failed tool calls, by tool, agent flow and error type.",
    (_TOOL, _AGENT, _guarded("error_type")),
)
TOOL_DURATION = MetricSpec(
    "taskforce_tool_duration_seconds",
    "histogram",
    "Duration of a tool call, by tool and agent flow.",
    (_TOOL, _AGENT),
    _TOOL_SECONDS,
)
LLM_REQUESTS = MetricSpec(
    "taskforce_llm_requests_total",
    "counter",
    "LLM provider requests, by model, agent flow, operation and outcome.",
    (
        _MODEL,
        _AGENT,
        _closed("operation", LLM_OPERATIONS),
        _closed("status", CALL_STATUSES),
    ),
)
LLM_DURATION = MetricSpec(
    "taskforce_llm_request_duration_seconds",
    "histogram",
    "LLM request latency (a stream until it ends), by model, agent flow and operation.",
    (_MODEL, _AGENT, _closed("operation", LLM_OPERATIONS)),
    _LLM_SECONDS,
)
LLM_TTFT = MetricSpec(
    "taskforce_llm_time_to_first_token_seconds",
    "histogram",
    "Time from a stream request to its first chunk, by model and agent flow.",
    (_MODEL, _AGENT),
    _LLM_SECONDS,
)
LLM_TOKENS = MetricSpec(
    "taskforce_llm_tokens_total",
    "counter",
    "Tokens reported by the provider, by model, agent flow and token type.",
    (_MODEL, _AGENT, _closed("token_type", TOKEN_TYPES)),
)
_LLM_ERROR = _closed("error_type", LLM_ERROR_TYPES)
LLM_RETRIES = MetricSpec(
    "taskforce_llm_retries_total",
    "counter",
    "LLM attempts after the first, by model, agent flow and the error type of the attempt"
    " that failed before.",
    (_MODEL, _AGENT, _LLM_ERROR),
)
LLM_FAILURES = MetricSpec(
    "taskforce_llm_failures_total",
    "counter",
    "LLM calls that failed in the end (after any retries), by model, agent flow and final"
    " error type.",
    (_MODEL, _AGENT, _LLM_ERROR),
)
LLM_COST = MetricSpec(
    "taskforce_llm_cost_usd_total",
    "counter",
    "Spend on LLM tokens in US dollars (tokens times llm.prices), by model and agent flow.",
    (_MODEL, _AGENT),
)
CONTEXT_PACK_MESSAGES = MetricSpec(
    "taskforce_context_pack_messages",
    "histogram",
    "Messages sent to the model per LLM request, by agent flow.",
    (_AGENT,),
    _MESSAGES,
)
CONTEXT_PACK_TOKENS = MetricSpec(
    "taskforce_context_pack_tokens",
    "histogram",
    "Estimated tokens sent to the model per LLM request, by agent flow.",
    (_AGENT,),
    _TOKENS,
)
STATE_SIZE = MetricSpec(
    "taskforce_state_size_bytes",
    "histogram",
    "Size of a saved session state.",
    (),
    _STATE_BYTES,
)
#: The state store calls whose failures ``taskforce_state_errors_total`` counts.
STATE_OPERATIONS: tuple[str, ...] = ("load", "save", "append")
STATE_ERRORS = MetricSpec(
    "taskforce_state_errors_total",
    "counter",
    "State store calls that raised (unreadable state, a full disk, a database down), by operation.",
    (_closed("operation", STATE_OPERATIONS),),
)
HTTP_REQUESTS = MetricSpec(
    "taskforce_http_requests_total",
    "counter",
    "HTTP requests served, by method, route template and status code.",
    (_closed("method", HTTP_METHODS), _guarded("route"), _guarded("status_code")),
)
HTTP_DURATION = MetricSpec(
    "taskforce_http_request_duration_seconds",
    "histogram",
    "HTTP request duration to the end of the response body, by method and route template.",
    (_closed("method", HTTP_METHODS), _guarded("route")),
    _HTTP_SECONDS,
)

_SPECS: tuple[MetricSpec, ...] = (
    MISSIONS,
    MISSION_DURATION,
    MISSIONS_IN_PROGRESS,
    MISSION_STEPS,
    MISSION_TOOL_CALLS,
    TOOL_CALLS,
    TOOL_FAILURES,
    TOOL_DURATION,
    LLM_REQUESTS,
    LLM_DURATION,
    LLM_TTFT,
    LLM_TOKENS,
    LLM_RETRIES,
    LLM_FAILURES,
    LLM_COST,
    CONTEXT_PACK_MESSAGES,
    CONTEXT_PACK_TOKENS,
    STATE_SIZE,
    STATE_ERRORS,
    HTTP_REQUESTS,
    HTTP_DURATION,
)

_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (spec.name, label.name) for spec in _SPECS for label in spec.labels if label.kind == "guarded"
)

LABEL_OVERFLOW = MetricSpec(
    "taskforce_metrics_label_overflow_total",
    "counter",
    "Label values mapped to other because their label reached its cap, by metric and label.",
    (
        _closed("metric", tuple(dict.fromkeys(name for name, _ in _PAIRS))),
        _closed("label", tuple(dict.fromkeys(label for _, label in _PAIRS))),
    ),
    combinations=len(_PAIRS),
)
METRICS_ERRORS = MetricSpec(
    "taskforce_metrics_errors_total",
    "counter",
    "Faults swallowed inside the instrumentation, by stage.",
    (_closed("stage", FAULT_STAGES),),
)
BUILD_INFO = MetricSpec(
    "taskforce_build_info",
    "gauge",
    "Always 1; the labels carry the taskforce and Python versions and the LLM provider.",
    (
        Label("version", "constant"),
        Label("python_version", "constant"),
        Label("llm_provider", "constant"),
    ),
)

#: Every metric of the catalog, in the order of CONTRACT.md.
CATALOG: tuple[MetricSpec, ...] = (*_SPECS, LABEL_OVERFLOW, METRICS_ERRORS, BUILD_INFO)

# The process families: read at scrape time, named, labelled and explained exactly as
# prometheus_client's process, gc and platform collectors export them, so stock
# dashboards and alerts work unchanged. Not prefixed, and not part of CATALOG.
_GENERATION = Label("generation", "closed", ("0", "1", "2"))
PROCESS_CPU = MetricSpec(
    "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds."
)
PROCESS_RESIDENT = MetricSpec(
    "process_resident_memory_bytes", "gauge", "Resident memory size in bytes."
)
PROCESS_VIRTUAL = MetricSpec(
    "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes."
)
PROCESS_OPEN_FDS = MetricSpec("process_open_fds", "gauge", "Number of open file descriptors.")
PROCESS_MAX_FDS = MetricSpec("process_max_fds", "gauge", "Maximum number of open file descriptors.")
PROCESS_START = MetricSpec(
    "process_start_time_seconds",
    "gauge",
    "Start time of the process since unix epoch in seconds.",
)
GC_OBJECTS_COLLECTED = MetricSpec(
    "python_gc_objects_collected_total", "counter", "Objects collected during gc", (_GENERATION,)
)
GC_OBJECTS_UNCOLLECTABLE = MetricSpec(
    "python_gc_objects_uncollectable_total",
    "counter",
    "Uncollectable objects found during GC",
    (_GENERATION,),
)
GC_COLLECTIONS = MetricSpec(
    "python_gc_collections_total",
    "counter",
    "Number of times this generation was collected",
    (_GENERATION,),
)
PYTHON_INFO = MetricSpec(
    "python_info",
    "gauge",
    "Python platform information",
    tuple(
        Label(name, "constant")
        for name in ("implementation", "major", "minor", "patchlevel", "version")
    ),
)
#: The process families, served beside the catalog by ``observe_process``.
PROCESS_CATALOG: tuple[MetricSpec, ...] = (
    PROCESS_CPU,
    PROCESS_RESIDENT,
    PROCESS_VIRTUAL,
    PROCESS_OPEN_FDS,
    PROCESS_MAX_FDS,
    PROCESS_START,
    GC_OBJECTS_COLLECTED,
    GC_OBJECTS_UNCOLLECTABLE,
    GC_COLLECTIONS,
    PYTHON_INFO,
)

_BY_NAME = {spec.name: spec for spec in CATALOG}


def metric(name: str) -> MetricSpec:
    """Return the catalog entry named ``name``.

    Args:
        name: A full metric name, e.g. ``taskforce_missions_total``.

    Returns:
        Its :class:`MetricSpec`.

    Raises:
        KeyError: ``name`` is not in the catalog.
    """
    return _BY_NAME[name]


def guarded_pairs() -> tuple[tuple[str, str], ...]:
    """Return every ``(metric, label)`` pair whose values pass the label guard."""
    return _PAIRS


def series_budget(max_label_values: int) -> int:
    """Return the worst-case number of series (exposition sample lines) of the whole catalog.

    Per metric: the product of its labels' cardinalities (closed-set size, guard cap + 1
    for ``other``, 1 for a constant), times ``len(buckets) + 3`` for a histogram (its
    finite buckets, ``+Inf``, ``_sum`` and ``_count``) or 1 otherwise. The overflow counter
    counts only the guarded ``(metric, label)`` pairs that exist.

    Args:
        max_label_values: The label guard's cap per label per metric (>= 1).

    Returns:
        The sum over the catalog.

    Raises:
        ValueError: ``max_label_values`` is below 1.
    """
    if max_label_values < 1:
        raise ValueError(f"max_label_values must be >= 1, got {max_label_values!r}")
    return sum(spec.series_budget(max_label_values) for spec in CATALOG)
