"""FastHistogram: the same buckets, count and sum as aioprometheus' own histogram value."""

from __future__ import annotations

import math

import pytest
from aioprometheus import histogram

from taskforce.observability._fastmetrics import FastHistogram

VALUES = [0, 1, 1.0, 3, 4, 4.0, 4.000001, 5, 16, 17.5, 1023, 1024, 10**20, -3, 0.0001, math.inf]


class TestFastHistogram:
    @pytest.mark.parametrize(
        "bounds",
        [(1, 4, 16, 64, 256, 1024), (0.005, 0.5, 1, 5, 60), (0.25, 0.5), (-1, 0, 2)],
    )
    def test_same_as_aioprometheus(self, bounds: tuple[float, ...]) -> None:
        """Ints, floats, values on a bound, negatives and huge values land where they do there."""
        fast, stock = FastHistogram(*bounds), histogram.Histogram(*bounds)
        for value in VALUES:
            fast.observe(value)
            stock.observe(value)
        assert (stock.buckets, stock.observations, stock.sum) == (
            fast.buckets,
            fast.observations,
            fast.sum,
        )

    def test_integral_bounds_are_searched_as_ints(self) -> None:
        """Integral bounds get int search keys (+Inf stays a float); the bounds stay floats.

        A fractional bound anywhere keeps the float bounds as the keys.
        """
        fast = FastHistogram(1, 4, 16)
        assert [1.0, 4.0, 16.0, math.inf] == fast.bounds
        assert [int, int, int, float] == [type(key) for key in fast.keys]
        fractional = FastHistogram(0.5, 1)
        assert fractional.bounds is fractional.keys

    def test_nan_counts_in_no_bucket(self) -> None:
        """NaN is an observation in no bucket, as with aioprometheus."""
        fast = FastHistogram(1, 4)
        fast.observe(math.nan)
        assert (1, [0, 0, 0]) == (fast.observations, list(fast.buckets.values()))
