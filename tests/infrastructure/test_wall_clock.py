"""The wall clock that file ages are told by: a step back is followed, a step forward not."""

from __future__ import annotations

from taskforce.infrastructure._wall_clock import SteadyWallClock


class _Clocks:
    """A wall clock and a steady one, moved by hand."""

    def __init__(self) -> None:
        self.wall = 1_000_000.0
        self.steady = 50.0

    def clock(self) -> SteadyWallClock:
        return SteadyWallClock(lambda: self.wall, lambda: self.steady)

    def run(self, seconds: float) -> None:
        """Time passes (a suspend too: both clocks count it)."""
        self.wall += seconds
        self.steady += seconds


def test_it_reads_the_wall_clock_while_nothing_steps() -> None:
    clocks = _Clocks()
    clock = clocks.clock()
    assert 1_000_000.0 == clock()
    clocks.run(3600)
    assert 1_003_600.0 == clock()


def test_a_step_forward_is_not_followed() -> None:
    """A wall clock stepped 10 minutes forward: the time goes on from before the step."""
    clocks = _Clocks()
    clock = clocks.clock()
    clocks.wall += 600
    clocks.run(5)
    assert 1_000_005.0 == clock()


def test_a_step_back_is_followed_and_kept() -> None:
    """A step back is taken at once; a later step forward again is not."""
    clocks = _Clocks()
    clock = clocks.clock()
    clocks.wall -= 600
    assert 999_400.0 == clock()
    clocks.wall += 600
    clocks.run(5)
    assert 999_405.0 == clock()
