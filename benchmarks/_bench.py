"""Shared helpers of the benchmarks: timing loops, the median/min summary, the printed table.

Not a benchmark itself. Each script imports it as ``_bench`` (the scripts run as
``python benchmarks/<name>.py``, so this directory is first on ``sys.path``).
Timing follows ``timeit``: ``time.perf_counter_ns`` around a tight loop, the
garbage collector paused for the loop, several repeats, median reported.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

PASS = "PASS"
FAIL = "FAIL"


@dataclass(frozen=True)
class Config:
    """How long to measure: ``--quick`` shrinks everything to a smoke run."""

    quick: bool
    repeats: int
    scale: float

    def iterations(self, default: int) -> int:
        """Return the loop length for a measurement whose full-run length is ``default``.

        A smoke run (``--quick``) runs each loop a few times only: it shows that the
        script works, not what it measures.
        """
        return max(5 if self.quick else 50, int(default * self.scale))


def parse_args(description: str, *, repeats: int = 7) -> Config:
    """Parse the common command line (``--quick``, ``--repeats``) of a benchmark script."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke test)")
    parser.add_argument("--repeats", type=int, default=None, help=f"rounds (default {repeats})")
    args = parser.parse_args()
    quick = bool(args.quick)
    rounds = args.repeats if args.repeats is not None else (3 if quick else repeats)
    return Config(quick=quick, repeats=max(1, rounds), scale=0.01 if quick else 1.0)


def print_environment(title: str) -> None:
    """Print what the figures depend on: interpreter, machine, CPU count."""
    print(f"== {title} ==")
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"
    )


@dataclass
class Samples:
    """Per-call times of one candidate, one value per round, in nanoseconds."""

    name: str
    per_call_ns: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.per_call_ns)

    @property
    def minimum(self) -> float:
        return min(self.per_call_ns)


def _paused_gc(run: Callable[[], int]) -> int:
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        return run()
    finally:
        if was_enabled:
            gc.enable()


async def time_async_loop(call: Callable[[], Awaitable[Any]], iterations: int) -> float:
    """Await ``call()`` ``iterations`` times in one coroutine; return nanoseconds per call."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter_ns()
        for _ in range(iterations):
            await call()
        elapsed = time.perf_counter_ns() - started
    finally:
        if was_enabled:
            gc.enable()
    return elapsed / iterations


def time_sync_loop(call: Callable[[], Any], iterations: int) -> float:
    """Call ``call()`` ``iterations`` times; return nanoseconds per call."""

    def run() -> int:
        started = time.perf_counter_ns()
        for _ in range(iterations):
            call()
        return time.perf_counter_ns() - started

    return _paused_gc(run) / iterations


def time_once(call: Callable[[], Any]) -> float:
    """Time one call of ``call()`` (a whole render, say); return nanoseconds."""

    def run() -> int:
        started = time.perf_counter_ns()
        call()
        return time.perf_counter_ns() - started

    return float(_paused_gc(run))


def added_ns(candidate: Samples, baseline: Samples) -> tuple[float, float]:
    """Return (median, min) of the per-round difference candidate - baseline.

    Differences are taken within a round, so slow drift of the machine between
    rounds cancels out.
    """
    diffs = [c - b for c, b in zip(candidate.per_call_ns, baseline.per_call_ns, strict=True)]
    return statistics.median(diffs), min(diffs)


def ratio(value: float, reference: float) -> str:
    """Format ``value / reference`` as ``0.42x``; ``n/a`` when the reference is not positive."""
    if reference <= 0:
        return "n/a"
    return f"{value / reference:.2f}x"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a left-aligned plain-text table."""
    columns = zip(headers, *rows, strict=False)
    widths = [max(len(str(cell)) for cell in column) for column in columns]
    line = "  ".join(f"{header:<{width}}" for header, width in zip(headers, widths, strict=True))
    print(line)
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print("  ".join(f"{cell!s:<{width}}" for cell, width in zip(row, widths, strict=True)))


def verdict(target: str, ok: bool, detail: str) -> None:
    """Print one verdict line: ``VERDICT <target>: PASS|FAIL (<detail>)``; never raises."""
    print(f"VERDICT {target}: {PASS if ok else FAIL} ({detail})")


def unavailable(what: str, exc: BaseException) -> None:
    """Report a candidate that could not be built (a missing piece), without failing the run."""
    print(f"SKIPPED {what}: {type(exc).__name__}: {exc}", file=sys.stdout)
