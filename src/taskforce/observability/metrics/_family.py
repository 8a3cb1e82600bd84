"""Families: one per catalog metric, handing out a cached child per label set.

``family.labels(*values)`` is the only way to a child. A hit is one dict lookup on
the tuple of raw values. A miss checks the values (closed sets, arity), passes the
free-form ones through the label guard, and finds or makes the child for the
admitted values; the raw tuple is then remembered as an alias of that child unless
a value overflowed to ``other`` (an attacker sending new values must not grow the
cache: each of them takes the slow path and is counted as an overflow again) or is
not a ``str`` (``1``, ``1.0`` and ``True`` are one dict key but three label values).

:class:`CallbackFamily` is the other kind: its samples are read at scrape time from
a function (process metrics, anything computed rather than recorded).

Hazard: no locks. Use a family from the event-loop thread only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from taskforce.observability.metrics._catalog import OTHER, MetricSpec
from taskforce.observability.metrics._children import CounterChild, GaugeChild, HistogramChild
from taskforce.observability.metrics._guard import LabelGuard, normalize_label_value
from taskforce.observability.metrics._render import (
    header_lines,
    histogram_texts,
    series_text,
)

__all__ = ["CallbackFamily", "Family", "Sample"]

_C = TypeVar("_C", CounterChild, GaugeChild, HistogramChild)

#: A sample of a callback family: label values (in the spec's order) and the value.
Sample = tuple[tuple[str, ...], float]
#: Called when a family makes a child: the family's spec, the child's labels, the child.
OnNewChild = Callable[[MetricSpec, dict[str, str], Any], None]


def _search_keys(bounds: tuple[float, ...]) -> list[float]:
    # Integral bounds as ints: an int observation (a count, a size) then compares int
    # to int, which bisect does faster than int to float. Exact either way.
    if all(bound.is_integer() or bound == float("inf") for bound in bounds):
        return [int(bound) if bound.is_integer() else bound for bound in bounds]
    return list(bounds)


class Family(Generic[_C]):
    """Every series of one catalog metric, each a child of type ``_C``.

    Attributes:
        spec: The catalog entry the family was built from.
        header: The ``# HELP`` and ``# TYPE`` lines, as bytes.
        children: Every child in the order it was made (the order of the scrape);
            append-only, so a render may walk it while new children arrive.
    """

    __slots__ = (
        "_alias_limit",
        "_aliases",
        "_bounds",
        "_by_labels",
        "_guard",
        "_keys",
        "_on_new",
        "children",
        "header",
        "spec",
    )

    def __init__(
        self,
        spec: MetricSpec,
        guard: LabelGuard,
        *,
        alias_limit: int,
        on_new: OnNewChild | None = None,
    ) -> None:
        """Create the family with no child.

        Args:
            spec: The catalog entry.
            guard: The metric set's label guard, for the ``guarded`` labels.
            alias_limit: How many raw label tuples to remember (a bound on memory).
            on_new: Told about every new child (the registry adapter binds it).
        """
        self.spec = spec
        self.header = header_lines(spec.name, spec.kind, spec.help)
        self.children: list[_C] = []
        self._guard = guard
        self._aliases: dict[tuple[Any, ...], _C] = {}
        self._alias_limit = alias_limit
        self._by_labels: dict[tuple[str, ...], _C] = {}
        self._on_new = on_new
        self._bounds = (*(float(b) for b in spec.buckets), float("inf"))
        self._keys = _search_keys(self._bounds)

    def labels(self, *values: Any) -> _C:
        """Return the child for these label values, making it on first use.

        Args:
            *values: One value per label, in the catalog's order.

        Returns:
            The child; the same object for the same admitted values.

        Raises:
            ValueError: Wrong number of values, or a value outside its closed set.
        """
        child = self._aliases.get(values)
        if child is None:
            child = self._admit(values)
        return child

    def is_cached(self, *values: Any) -> bool:
        """Tell whether ``labels(*values)`` is one lookup: admitted, not overflowed, a ``str``.

        Code that keeps children of its own (a bundle per label set) keeps them only
        then, so an overflowed value still takes the slow path and counts every time.
        """
        return values in self._aliases

    def _admit(self, values: tuple[Any, ...]) -> _C:
        spec = self.spec
        if len(values) != len(spec.labels):
            raise ValueError(f"{spec.name} takes labels {spec.label_names}, got {values!r}")
        admitted: list[str] = []
        is_alias = True
        for label, value in zip(spec.labels, values, strict=True):
            if label.kind == "closed":
                if not (isinstance(value, str) and value in label.values):
                    raise ValueError(
                        f"{spec.name}: {label.name}={value!r} is not one of {label.values}"
                    )
                admitted.append(label.values[label.values.index(value)])
            elif label.kind == "guarded":
                safe = self._guard.admit(spec.name, label.name, value)
                if type(value) is not str or (safe == OTHER and value != OTHER):
                    is_alias = False
                admitted.append(safe)
            else:
                admitted.append(normalize_label_value(value))
        key = tuple(admitted)
        child = self._by_labels.get(key)
        if child is None:
            child = self._by_labels[key] = self._make(dict(zip(spec.label_names, key, strict=True)))
        if is_alias and len(self._aliases) < self._alias_limit:
            self._aliases[values] = child
        return child

    def _make(self, labels: dict[str, str]) -> _C:
        name, kind = self.spec.name, self.spec.kind
        child: Any
        if kind == "histogram":
            texts = histogram_texts(name, labels, self._bounds)
            child = HistogramChild(self._bounds, self._keys, texts)
        elif kind == "counter":
            child = CounterChild(series_text(name, labels))
        else:
            child = GaugeChild(series_text(name, labels))
        self.children.append(child)
        if self._on_new is not None:
            self._on_new(self.spec, labels, child)
        made: _C = child
        return made


class CallbackFamily:
    """A counter or gauge whose samples a function returns at scrape time.

    For values that are read rather than recorded (CPU seconds, resident memory,
    garbage-collector counts). The function runs on the event-loop thread during a
    scrape, so it must be quick and must not block; an exception from it is counted
    as a ``render`` fault (logged once per family as ``metrics.fault``) and the family
    is left out of that scrape, which serves the rest. A value is written as a number:
    ``True`` as ``1.0``, a ``Decimal`` as its float; one ``float`` refuses is such a fault.

    Attributes:
        spec: Name, kind (``counter`` or ``gauge``), help and label names.
        header: The ``# HELP`` and ``# TYPE`` lines, as bytes.
        read: Returns the samples: label values in the spec's order, and the value.
    """

    __slots__ = ("header", "read", "spec")

    def __init__(self, spec: MetricSpec, read: Callable[[], Iterable[Sample]]) -> None:
        """Describe a family read at scrape time.

        Args:
            spec: Its name, kind, help and labels (the values are escaped per scrape).
            read: Called once per scrape.

        Raises:
            ValueError: ``spec`` is a histogram (only counters and gauges are supported).
        """
        if spec.kind == "histogram":
            raise ValueError(f"{spec.name}: a callback family is a counter or a gauge")
        self.spec = spec
        self.header = header_lines(spec.name, spec.kind, spec.help)
        self.read = read

    def lines(self) -> list[bytes]:
        """Call ``read`` and return the family's sample lines (header not included)."""
        names = self.spec.label_names
        return [
            series_text(
                self.spec.name,
                {n: normalize_label_value(v) for n, v in zip(names, values, strict=True)},
            )
            + f"{_number(value)}".encode()
            for values, value in self.read()
        ]


def _number(value: Any) -> float:
    # A bool prints as "True", which no scraper parses: the whole scrape would fail. An int
    # or a float prints as a number already (and keeps its form); anything else becomes
    # the float it stands for, or raises, which loses the family, not the scrape.
    return value if type(value) is int or type(value) is float else float(value)
