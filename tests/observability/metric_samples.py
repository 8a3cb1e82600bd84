"""Read samples of a real ``MetricSet`` through its registry (no scrape text), and break one."""

from __future__ import annotations

from typing import Any

import pytest

from taskforce.observability.metrics import Family, MetricSet, MetricSpec
from taskforce.observability.metrics._catalog import metric
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


def samples(metrics: MetricSet, name: str) -> dict[tuple[str, ...], Any]:
    """Every series of ``name`` that was written: label values (catalog order) -> value.

    A counter or gauge series maps to its value, a histogram series to ``(count, sum)``;
    series at zero (those made in advance) are left out.
    """
    spec = metric(name)
    found: dict[tuple[str, ...], Any] = {}
    sample: Any
    for labels, sample in metrics.registry.get(name).get_all():
        key = tuple(labels[label] for label in spec.label_names)
        if spec.kind == "histogram":
            if sample["count"]:
                found[key] = (sample["count"], sample["sum"])
        elif sample:
            found[key] = sample
    return found


def faults(metrics: MetricSet) -> dict[str, int]:
    """Faults counted so far, by stage (stages at zero left out)."""
    return {
        key[0]: count for key, count in samples(metrics, "taskforce_metrics_errors_total").items()
    }


class _BrokenFamily:
    def __init__(self, spec: MetricSpec) -> None:
        self.spec = spec

    def labels(self, *values: Any) -> Any:
        raise RuntimeError("metrics are broken")


class BrokenMetrics(MetricSet):
    """A real metric set whose every family fails on lookup; faults are still counted."""

    def __init__(self) -> None:
        super().__init__()
        self._is_broken = True

    def _typed(self, spec: MetricSpec, kind: Any) -> Any:
        if getattr(self, "_is_broken", False):
            return _BrokenFamily(spec)
        return super()._typed(spec, kind)


def break_family(monkeypatch: pytest.MonkeyPatch, spec: MetricSpec) -> None:
    """Make every series lookup of ``spec``'s family raise, in every metric set, for one test."""
    labels = Family.labels

    def broken(family: Family[Any], *values: Any) -> Any:
        if family.spec is spec:
            raise RuntimeError("metrics are broken")
        return labels(family, *values)

    monkeypatch.setattr(Family, "labels", broken)
