"""Children: one labelled series of a family, owning its value and its exposition text.

A child is made once per distinct label set, by its family (after the label guard
admitted the values), with the text that precedes its value on a scrape line already
built and escaped. Recording is a method call on the child; rendering reads the
value and writes it behind that text.

Hazard: no locks. Record and render on the event-loop thread only.
"""

from __future__ import annotations

from bisect import bisect_left

from taskforce.core.interfaces.llm import MAX_COUNT, as_count

__all__ = [
    "COUNT_BITS",
    "MAX_COUNT",
    "CounterChild",
    "CounterPair",
    "GaugeChild",
    "HistogramChild",
    "as_count",
]

#: ``count >> COUNT_BITS`` is 0 exactly for an int from 0 to ``MAX_COUNT - 1``: the quick
#: check of a record path, which leaves every other value to :func:`as_count`.
COUNT_BITS = 53


class _ScalarChild:
    """What a counter and a gauge series share: a value and the prefix of its line.

    Attributes:
        value: The current value (an ``int`` until a float amount is added).
        text: ``name{labels} `` as bytes, the prefix of its scrape line.
    """

    __slots__ = ("text", "value")

    def __init__(self, text: bytes) -> None:
        """Create the series at zero.

        Args:
            text: The escaped scrape-line prefix, ``name{labels} ``.
        """
        self.text = text
        self.value: float = 0


class CounterChild(_ScalarChild):
    """One series of a counter: ``inc`` only, never down."""

    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (default 1).

        Args:
            amount: What to add; 0 is allowed.

        Raises:
            ValueError: ``amount`` is negative (a counter never goes down).
        """
        if amount < 0:
            raise ValueError(f"a counter only goes up, got inc({amount!r})")
        self.value += amount


class CounterPair:
    """Two counter series that are always written together, with one call.

    An LLM call's input and output tokens are the use: a record path runs per call,
    and in a running mission each call it makes costs more than the work it does
    (``docs/architecture.md``).

    Attributes:
        first: The first series.
        second: The second series.
    """

    __slots__ = ("first", "second")

    def __init__(self, first: CounterChild, second: CounterChild) -> None:
        """Pair two series (of one family or of two).

        Args:
            first: The series ``inc``'s first amount goes to.
            second: The series its second amount goes to.
        """
        self.first = first
        self.second = second

    def inc(self, first: float, second: float) -> None:
        """Add ``first`` to the first series and ``second`` to the second.

        Args:
            first: What to add to the first series; 0 is allowed.
            second: What to add to the second series; 0 is allowed.

        Raises:
            ValueError: An amount is negative (a counter never goes down); neither
                series changes then.
        """
        if first < 0 or second < 0:
            raise ValueError(f"a counter only goes up, got inc({first!r}, {second!r})")
        self.first.value += first
        self.second.value += second


class GaugeChild(_ScalarChild):
    """One series of a gauge: up, down or set."""

    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (default 1)."""
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        """Subtract ``amount`` (default 1)."""
        self.value -= amount

    def set(self, value: float) -> None:
        """Replace the value."""
        self.value = value


class HistogramChild:
    """One series of a histogram: a count per bucket and the sum of what was observed.

    Counts are kept per bucket (not cumulative), so an observation is one binary
    search, one increment and one addition; the cumulative counts are built when a
    scrape reads them.

    Attributes:
        bounds: The upper bounds, ``+Inf`` last (shared by the family's children).
        counts: Observations per bucket, aligned with ``bounds``.
        sum: The sum of the observations.
        texts: The escaped scrape-line prefixes: one ``name_bucket{...,le="..."} `` per
            bound, then ``name_count{...} `` and ``name_sum{...} ``.
    """

    __slots__ = ("_keys", "bounds", "counts", "sum", "texts")

    def __init__(
        self,
        bounds: tuple[float, ...],
        keys: list[float],
        texts: tuple[tuple[bytes, ...], bytes, bytes],
    ) -> None:
        """Create the series with every bucket at zero.

        Args:
            bounds: The upper bounds with ``+Inf`` last.
            keys: The same bounds as searched (integral bounds as ``int``, which an
                ``int`` observation compares against faster); shared, never mutated.
            texts: The bucket prefixes (one per bound), the count and the sum prefix.
        """
        self.bounds = bounds
        self._keys = keys
        self.counts = [0] * len(bounds)
        self.sum: float = 0.0
        self.texts = texts

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is >= it and add it to the sum.

        Every metric of the catalog measures something that cannot be negative (a
        duration, a size, a count), so a negative value or NaN (a clock that stepped
        back, a broken estimate) is observed as 0.

        Args:
            value: The observation.

        Raises:
            OverflowError: ``value`` is an int past float's range; the series is unchanged.
        """
        if not value >= 0:  # also true for NaN
            value = 0
        # the sum first: a value it cannot take (an int past float's range) changes nothing
        self.sum += value
        self.counts[bisect_left(self._keys, value)] += 1

    @property
    def count(self) -> int:
        """The number of observations."""
        return sum(self.counts)
