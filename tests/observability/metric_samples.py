"""Read samples of a ``MetricSet`` from its aioprometheus collectors (no scrape text)."""

from __future__ import annotations

from typing import Any

from taskforce.observability.metrics import MetricSet
from taskforce.observability.metrics._guard import escape_label_value


def value(metrics: MetricSet, name: str, **labels: str) -> Any:
    """The value of a counter or gauge series; raw label values are escaped as stored."""
    collector = metrics.registry.get(name)
    return collector.get({k: escape_label_value(v) for k, v in labels.items()})


def histogram(metrics: MetricSet, name: str, **labels: str) -> dict[Any, Any]:
    """A histogram series as aioprometheus reports it: cumulative buckets, count, sum."""
    collector: Any = metrics.registry.get(name)
    return dict(collector.get({k: escape_label_value(v) for k, v in labels.items()}))


def series(metrics: MetricSet, name: str) -> list[dict[str, str]]:
    """The label sets (as stored) of every series of metric ``name``."""
    return [labels for labels, _ in metrics.registry.get(name).get_all()]
