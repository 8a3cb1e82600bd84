"""The process families (CPU, memory, file descriptors, start time, GC, Python) read per scrape.

Each family is a :class:`CallbackFamily` over :class:`ProcessReader` or :mod:`gc`, so
nothing is recorded between scrapes and the numbers are those of the process that
answers the scrape, as with every Prometheus client library. Where ``/proc`` cannot
be read (not Linux) the ``process_*`` families are left out; the Python ones remain.
"""

from __future__ import annotations

import gc
import os
import platform
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from taskforce.observability.metrics._catalog import (
    GC_COLLECTIONS,
    GC_OBJECTS_COLLECTED,
    GC_OBJECTS_UNCOLLECTABLE,
    PROCESS_CPU,
    PROCESS_MAX_FDS,
    PROCESS_OPEN_FDS,
    PROCESS_RESIDENT,
    PROCESS_START,
    PROCESS_VIRTUAL,
    PYTHON_INFO,
    MetricSpec,
)
from taskforce.observability.metrics._family import CallbackFamily, Sample
from taskforce.observability.metrics._metricset import MetricSet
from taskforce.observability.metrics._procfs import ProcessReader

__all__ = ["count_gc_from_here", "observe_process", "process_families"]


#: The collector's counts when this process was forked (none: it was not). A forked worker
#: counts from its fork, as the kernel counts its CPU time: else each worker would carry
#: its parent's collections, summed once per worker and seen as new by increase() when a
#: worker is replaced.
_GC_AT_FORK: list[dict[str, int]] = []


def _count_gc_from_fork() -> None:
    _GC_AT_FORK[:] = gc.get_stats()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_count_gc_from_fork)


def count_gc_from_here() -> None:
    """Count ``python_gc_*`` from now on, unless this process counts from its fork already.

    A worker forked by a server that imports taskforce only after the fork (gunicorn
    without ``--preload``) ran no at-fork hook, and would carry the collections its
    parent made before; its counts start here instead, the nearest point to its fork
    it can see. Call it when the app is built in such a worker.
    """
    if not _GC_AT_FORK:
        _GC_AT_FORK[:] = gc.get_stats()


def _one(value: float | None) -> list[Sample]:
    return [] if value is None else [((), value)]


def _gc(key: str) -> Callable[[], Iterator[Sample]]:
    def read() -> Iterator[Sample]:
        at_fork = _GC_AT_FORK
        for generation, stats in enumerate(gc.get_stats()):
            start = at_fork[generation][key] if generation < len(at_fork) else 0
            yield (str(generation),), float(stats[key] - start)

    return read


def _python_info() -> list[Sample]:
    major, minor, patchlevel = platform.python_version_tuple()
    labels = (platform.python_implementation(), major, minor, patchlevel)
    return [((*labels, platform.python_version()), 1.0)]


def process_families(proc: Path = Path("/proc")) -> tuple[CallbackFamily, ...]:
    """Return the process and Python families of this process, to add to a metric set.

    Args:
        proc: where the proc file system is mounted (tests point it elsewhere).

    Returns:
        ``process_*`` (when ``/proc`` is readable), ``python_gc_*`` and ``python_info``.
    """
    reader = ProcessReader(proc)
    info = _python_info()  # fixed for the life of the process
    readers: list[tuple[MetricSpec, Callable[[], Iterable[Sample]]]] = [
        (GC_OBJECTS_COLLECTED, _gc("collected")),
        (GC_OBJECTS_UNCOLLECTABLE, _gc("uncollectable")),
        (GC_COLLECTIONS, _gc("collections")),
        (PYTHON_INFO, lambda: info),
    ]
    if reader.is_available:
        readers += [
            (PROCESS_CPU, lambda: _one(reader.read_stat()[0])),
            (PROCESS_RESIDENT, lambda: _one(reader.read_stat()[1])),
            (PROCESS_VIRTUAL, lambda: _one(reader.read_stat()[2])),
            (PROCESS_START, lambda: _one(reader.read_stat()[3])),
            (PROCESS_OPEN_FDS, lambda: _one(reader.open_fds())),
            (PROCESS_MAX_FDS, lambda: _one(reader.max_fds())),
        ]
    return tuple(CallbackFamily(spec, read) for spec, read in readers)


def observe_process(metrics: MetricSet, proc: Path = Path("/proc")) -> None:
    """Add the process and Python families to ``metrics`` (once per metric set).

    Args:
        metrics: the container's metric set.
        proc: where the proc file system is mounted.

    Raises:
        ValueError: they were added to this metric set already.
    """
    for family in process_families(proc):
        metrics.add_callback(family)
