"""Memory tracing for tests that bound what a workload keeps or allocates."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def traced() -> Iterator[None]:
    """Trace allocations in the block, leaving tracing on if it was on before.

    ``PYTHONTRACEMALLOC`` (or a test runner) may have started tracing for the whole
    process; stopping it here would lose its traces.
    """
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        yield
    finally:
        if not was_tracing:
            tracemalloc.stop()
