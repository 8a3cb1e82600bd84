"""How the instrumentation reports a fault of its own: counted always, logged once.

Holds process-wide state: the set of (component, stage) pairs whose fault was
already logged, so a metric update that fails on every call (or a family that
fails on every scrape) logs ``metrics.fault`` once and is only counted afterwards.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from taskforce.observability.metrics import MetricSet

__all__ = ["report_fault"]

_LOGGER = structlog.get_logger("taskforce.observability")
_LOGGED_FAULTS: set[tuple[str, str]] = set()


def report_fault(metrics: MetricSet, proxy: str, stage: str, exc: Exception) -> None:
    """Count a fault of the instrumentation and log it the first time it happens.

    Never raises (short of ``BaseException``): a fault of the fault path is dropped.

    Args:
        metrics: Where the fault is counted (the fault counter, by ``stage``).
        proxy: The component that hit the fault (part of the log-once key, logged as
            ``proxy``): a proxy class, ``HTTPMetricsMiddleware``, ``MetricSet`` for a
            whole render, or the name of a family whose samples could not be read.
        stage: The closed-set name of the step that failed, e.g. ``"http"``, ``"render"``.
        exc: The exception the instrumentation raised.
    """
    with contextlib.suppress(Exception):  # a broken MetricSet must not break the caller
        metrics.record_fault(stage)
    key = (proxy, stage)
    if key in _LOGGED_FAULTS:
        return
    # Faults happen on the event-loop thread; a race could at worst log twice.
    _LOGGED_FAULTS.add(key)
    with contextlib.suppress(Exception):  # logging is best effort here, like the counter
        _LOGGER.warning(
            "metrics.fault",
            category="metrics",
            proxy=proxy,
            stage=stage,
            error_type=type(exc).__name__,
            error=str(exc),
            once=True,
        )


def _forget_logged_faults() -> None:
    """Let every fault be logged again (for tests that check the log-once rule)."""
    _LOGGED_FAULTS.clear()
