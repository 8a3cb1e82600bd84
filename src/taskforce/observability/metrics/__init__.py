"""Metrics: the catalog, its families and children, the label guard, the scrape.

Record through children: ``metrics.counter(TOOL_CALLS).labels(tool, agent, status).inc()``.
Only :mod:`._aioprometheus` knows the client library behind ``MetricSet.registry``.
"""

from __future__ import annotations

from taskforce.observability.metrics._catalog import CATALOG, MetricSpec
from taskforce.observability.metrics._children import (
    COUNT_BITS,
    MAX_COUNT,
    CounterChild,
    CounterPair,
    GaugeChild,
    HistogramChild,
    as_count,
)
from taskforce.observability.metrics._family import CallbackFamily, Family, Sample
from taskforce.observability.metrics._guard import LabelGuard
from taskforce.observability.metrics._metricset import MetricSet
from taskforce.observability.metrics._process import (
    count_gc_from_here,
    observe_process,
    process_families,
)
from taskforce.observability.metrics._render import CONTENT_TYPE

__all__ = [
    "CATALOG",
    "CONTENT_TYPE",
    "COUNT_BITS",
    "MAX_COUNT",
    "CallbackFamily",
    "CounterChild",
    "CounterPair",
    "Family",
    "GaugeChild",
    "HistogramChild",
    "LabelGuard",
    "MetricSet",
    "MetricSpec",
    "Sample",
    "as_count",
    "count_gc_from_here",
    "observe_process",
    "process_families",
]
