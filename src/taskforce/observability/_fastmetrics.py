"""A drop-in aioprometheus histogram value whose ``observe`` is one binary search.

aioprometheus' ``histogram.Histogram.observe`` walks every bucket and bumps each
cumulative count the value fits in. :class:`FastHistogram` keeps one count per bucket,
finds the bucket with :func:`bisect.bisect_left` (same ``value <= bound`` rule) and
rebuilds the cumulative ``buckets`` mapping (and the count of observations)
only when someone reads it, so
aioprometheus' ``Histogram.get`` and text formatter see exactly what they would have
seen with the stock class.

Hazard: no locks, like aioprometheus itself; observe only from the event-loop thread.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from math import isinf

from aioprometheus import histogram

__all__ = ["FastHistogram"]


class FastHistogram(histogram.Histogram):
    """Histogram value with per-bucket counts; ``buckets`` is computed on read."""

    def __init__(self, *buckets: float) -> None:
        """Create an empty histogram.

        Args:
            *buckets: Sorted upper bounds; ``+Inf`` is appended when missing.

        Raises:
            ValueError: The bounds are not sorted or fewer than two remain.
        """
        self.bounds: list[float] = []
        self.keys: list[float] = []
        self.counts: list[int] = []
        self.unbucketed = 0  # NaN observations: counted, in no bucket
        super().__init__(*buckets)

    @property
    def observations(self) -> int:
        """Number of observations: the bucket counts, plus those in no bucket.

        Derived rather than counted, so an observation is one bucket increment
        and one addition to the sum (the metric set inlines exactly that).
        """
        return sum(self.counts) + self.unbucketed

    @observations.setter
    def observations(self, value: int) -> None:
        # the base __init__ assigns 0 here
        self.unbucketed = value - sum(self.counts)

    @property
    def buckets(self) -> OrderedDict[float, int]:
        """Cumulative count per upper bound, as aioprometheus stores it."""
        cumulative: OrderedDict[float, int] = OrderedDict()
        total = 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            total += count
            cumulative[bound] = total
        return cumulative

    @buckets.setter
    def buckets(self, value: dict[float, int]) -> None:
        # the base __init__ assigns its zeroed OrderedDict here
        self.bounds = [float(bound) for bound in value]
        # Integral bounds as ints: an int observation (a count, a size) then compares
        # int to int, which costs bisect about half of what int to float does. The
        # comparison is exact either way, so the bucket found is the same.
        if all(bound.is_integer() or isinf(bound) for bound in self.bounds):
            self.keys = [int(bound) if bound.is_integer() else bound for bound in self.bounds]
        else:
            self.keys = self.bounds
        previous = 0
        counts: list[int] = []
        for cumulative in value.values():
            counts.append(cumulative - previous)
            previous = cumulative
        self.counts = counts

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is >= it; add it to the sum.

        Args:
            value: The observation. NaN lands in no bucket, as with aioprometheus.
        """
        if value == value:  # NaN compares unequal to itself
            self.counts[bisect_left(self.keys, value)] += 1
        else:
            self.unbucketed += 1
        self.sum += value
