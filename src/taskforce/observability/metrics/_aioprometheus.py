"""The adapter to aioprometheus: the only module that imports it or knows its internals.

The families own the values; aioprometheus holds a view of them. Each catalog family
gets a collector of the matching type on the metric set's ``Registry`` (the
``container.metrics.registry`` of CONTRACT.md), and each child is entered in that
collector's store under the key aioprometheus itself derives from the label dict, so
``collector.get(labels)``, ``get_all()`` and aioprometheus' own text formatter read
the children's current values. The view is read-only: a write through aioprometheus'
API raises ``TypeError``, since it would bypass the label guard. A collector of its own
that an embedder registers on the registry is served too (:meth:`RegistryAdapter.foreign_lines`),
rendered by aioprometheus' formatter: CONTRACT.md's registry is the one served at ``/metrics``.

Swapping the client library means rewriting this module only (see docs/architecture.md).

Hazard: no locks, like aioprometheus itself; event-loop thread only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aioprometheus import histogram
from aioprometheus.collectors import Collector, Counter, Gauge, Histogram, Registry
from aioprometheus.formats.text import TextFormatter

from taskforce.observability.metrics._catalog import MetricSpec
from taskforce.observability.metrics._children import HistogramChild

__all__ = ["RegistryAdapter", "reference_text"]

_COLLECTORS: dict[str, type[Collector]] = {
    "counter": Counter,
    "gauge": Gauge,
    "histogram": Histogram,
}


class _ReadOnlyView(dict[Any, Any]):
    """A collector's store: store key -> child; a read returns the child's value."""

    def __getitem__(self, key: Any) -> Any:
        child = dict.__getitem__(self, key)
        if type(child) is HistogramChild:
            return _as_aioprometheus_histogram(child)
        return child.value

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, _Bound):
            dict.__setitem__(self, key, value.child)
            return
        raise TypeError("taskforce metrics are recorded through their family's children")


class _Bound:
    __slots__ = ("child",)

    def __init__(self, child: Any) -> None:
        self.child = child


def _as_aioprometheus_histogram(child: HistogramChild) -> histogram.Histogram:
    value = histogram.Histogram(*child.bounds)
    total = 0
    cumulative: OrderedDict[float, int] = OrderedDict()
    for bound, count in zip(child.bounds, child.counts, strict=True):
        total += count
        cumulative[bound] = total
    value.buckets = cumulative
    value.observations = total
    value.sum = child.sum
    return value


class RegistryAdapter:
    """One aioprometheus ``Registry`` mirroring a metric set's families.

    Attributes:
        registry: The aioprometheus ``Registry``.
    """

    def __init__(self) -> None:
        """Create an empty registry of our own (never aioprometheus' global one)."""
        self.registry = Registry()
        self._collectors: dict[str, Collector] = {}

    def add_family(self, spec: MetricSpec) -> None:
        """Register a collector for ``spec`` whose store is a view of the family's children.

        Args:
            spec: A catalog entry.

        Raises:
            ValueError: A collector of that name is already registered.
        """
        options: dict[str, Any] = {"buckets": spec.buckets} if spec.kind == "histogram" else {}
        collector = _COLLECTORS[spec.kind](spec.name, spec.help, registry=self.registry, **options)
        collector.values.store = _ReadOnlyView()
        self._collectors[spec.name] = collector

    def bind(self, spec: MetricSpec, labels: dict[str, str], child: Any) -> None:
        """Enter a new child in its collector's store under aioprometheus' own key.

        Args:
            spec: The child's family.
            labels: Its label names and (escaped) values.
            child: The child.
        """
        values = self._collectors[spec.name].values
        # the key aioprometheus' MetricDict derives (sorted orjson), so its API finds it
        values[labels] = _Bound(child)

    def foreign_lines(self, on_error: Callable[[str, Exception], None]) -> list[bytes]:
        """Return the lines of the collectors registered on the registry by others.

        Those an embedder added to ``registry`` (any but the catalog's views), sorted by
        name, each written by aioprometheus' own text formatter.

        Args:
            on_error: Called with the name and the exception of a collector that cannot
                be written; it is left out, the others are not.

        Returns:
            Their lines; empty when there are none.
        """
        collectors = self.registry.collectors
        if len(collectors) == len(self._collectors):
            return []  # nothing but ours (the registry refuses a name twice)
        formatter = TextFormatter()
        lines: list[bytes] = []
        for name, collector in sorted(collectors.items()):
            if name in self._collectors:
                continue
            try:
                text = formatter.marshall_collector(collector)
            except Exception as exc:  # a broken collector loses its lines, not the scrape
                on_error(name, exc)
                continue
            lines.extend(text.encode("utf-8").split(b"\n"))
        return lines


def reference_text(registry: Registry) -> bytes:
    """Render ``registry`` with aioprometheus' own text formatter (for comparisons).

    Args:
        registry: An aioprometheus registry.

    Returns:
        Its text exposition, as aioprometheus writes it.
    """
    return bytes(TextFormatter().marshall(registry))
