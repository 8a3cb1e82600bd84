"""The series table: one aioprometheus ``Registry`` with every catalog metric, and the
slow path that turns raw label values into a series of it.

Resolving checks closed label sets, passes free-form values through the label guard,
derives the store key exactly as aioprometheus' ``MetricDict`` does and creates the
series at zero. ``MetricSet`` caches what this returns; this module is the only place
that creates collectors.

Hazard: no locks (aioprometheus has none); use it from the event-loop thread.
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aioprometheus.collectors import Collector, Counter, Gauge, Histogram, Registry

from taskforce.observability._catalog import (
    CATALOG,
    FAULT_STAGES,
    OTHER,
    guarded_pairs,
    metric,
)
from taskforce.observability._fastmetrics import FastHistogram
from taskforce.observability._guard import LabelGuard, normalize_label_value

__all__ = ["SeriesTable"]

_KINDS: dict[str, type[Collector]] = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}
_OVERFLOW = "taskforce_metrics_label_overflow_total"
_ERRORS = "taskforce_metrics_errors_total"
_BUILD_INFO = "taskforce_build_info"


def _version() -> str:
    try:
        return version("pytaskforce")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0+unknown"


class SeriesTable:
    """Every catalog metric on a fresh ``Registry``, plus the guard that feeds it.

    On creation the overflow counter (per guarded metric and label), the fault counter
    (per stage) and ``taskforce_build_info`` (= 1) get their series.
    """

    def __init__(self, max_label_values: int) -> None:
        """Register every catalog metric on a new registry.

        Args:
            max_label_values: The label guard's cap per label per metric.

        Raises:
            ValueError: ``max_label_values`` is below 1.
        """
        self.registry = Registry()
        self.collectors: dict[str, Collector] = {}
        for spec in CATALOG:
            options: dict[str, Any] = {"buckets": spec.buckets} if spec.buckets else {}
            collector = _KINDS[spec.kind](spec.name, spec.help, registry=self.registry, **options)
            self.collectors[spec.name] = collector
        self.guard = LabelGuard(max_label_values, self._count_overflow)
        self._overflow_store = self.store(_OVERFLOW)
        self._overflow_keys = {pair: self.key(_OVERFLOW, pair)[0] for pair in guarded_pairs()}
        self._errors_store = self.store(_ERRORS)
        self._error_keys = {stage: self.key(_ERRORS, (stage,))[0] for stage in FAULT_STAGES}
        info = (_version(), platform.python_version())
        self.store(_BUILD_INFO)[self.key(_BUILD_INFO, info)[0]] = 1

    def store(self, name: str) -> dict[Any, Any]:
        """Return the dict aioprometheus keeps the series of metric ``name`` in."""
        store: dict[Any, Any] = self.collectors[name].values.store
        return store

    def key(self, name: str, raw: tuple[Any, ...]) -> tuple[Any, bool]:
        """Resolve raw label values to a series of ``name``, creating it at zero.

        Args:
            name: A catalog metric name.
            raw: One value per label, in catalog order.

        Returns:
            The series' store key, and whether ``raw`` may be cached as its alias (False
            when a free-form value is not a ``str`` or overflowed to ``other``).

        Raises:
            ValueError: Wrong number of values, or a value outside its closed set.
        """
        spec = metric(name)
        if len(raw) != len(spec.labels):
            raise ValueError(f"{name} takes labels {spec.label_names}, got {raw!r}")
        for label, value in zip(spec.labels, raw, strict=True):
            if label.kind == "closed" and not (isinstance(value, str) and value in label.values):
                raise ValueError(f"{name}: {label.name}={value!r} is not one of {label.values}")
        labels: dict[str, str] = {}
        cacheable = True
        for label, value in zip(spec.labels, raw, strict=True):
            if label.kind == "guarded":
                safe = self.guard.admit(name, label.name, value)
                if type(value) is not str or (safe == OTHER and value != OTHER):
                    cacheable = False
            elif label.kind == "closed":
                safe = label.values[label.values.index(value)]
            else:
                safe = normalize_label_value(value)
            labels[label.name] = safe
        collector = self.collectors[name]
        # the very key aioprometheus' MetricDict derives (sorted orjson), so its API finds it
        key = collector.values.__keytransform__(labels)  # type: ignore[no-untyped-call]
        store = collector.values.store
        if key not in store:
            store[key] = FastHistogram(*spec.buckets) if spec.kind == "histogram" else 0
        return key, cacheable

    def histogram(self, name: str, raw: tuple[Any, ...]) -> tuple[FastHistogram, bool]:
        """Like :meth:`key`, but return the series' histogram value object."""
        key, cacheable = self.key(name, raw)
        hist: FastHistogram = self.store(name)[key]
        return hist, cacheable

    def count_fault(self, stage: str) -> None:
        """Add one to ``taskforce_metrics_errors_total{stage}``.

        A dotted stage counts under its first segment (``llm.stream`` as ``llm``); a stage
        outside the closed set counts as ``other``.
        """
        key = self._error_keys.get(stage)
        if key is None:
            key = self._error_keys.get(str(stage).partition(".")[0], self._error_keys[OTHER])
        self._errors_store[key] += 1

    def _count_overflow(self, metric_name: str, label: str) -> None:
        self._overflow_store[self._overflow_keys[(metric_name, label)]] += 1
