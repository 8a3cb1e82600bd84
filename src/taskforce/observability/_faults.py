"""How the instrumentation reports a fault of its own: counted always, logged once.

Holds process-wide state: the set of (component, stage) pairs whose fault was
already logged, so a metric update that fails on every call (or a family that
fails on every scrape) logs ``metrics.fault`` once and is only counted afterwards;
and the metric set that counts the log lines the process could not write.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Protocol

import structlog

from taskforce.core.interfaces.outcome import exception_message

__all__ = ["count_log_faults_in", "raise_interrupt", "report_fault", "report_log_fault"]

_LOGGER = structlog.get_logger("taskforce.observability")
_LOGGED_FAULTS: set[tuple[str, str]] = set()


class FaultCounter(Protocol):
    """What counts a fault: the metric set (``MetricSet.record_fault``), seen only so."""

    def record_fault(self, stage: str) -> None:
        """Count one fault of ``stage``."""


# Weak: a container that is gone (tests build many) stops counting, and is not kept alive.
_LOG_FAULTS_TO: weakref.ref[FaultCounter] | None = None


def raise_interrupt(exc: BaseException) -> None:
    """Raise ``exc`` again if it is a ``KeyboardInterrupt`` itself (what Ctrl-C raises).

    Anything else a value of a tool's, provider's, store's or executor's own raises when
    the instrumentation reads it (``SystemExit``, ``GeneratorExit``, a ``CancelledError``
    or ``KeyboardInterrupt`` subclass of its own) is a fault of the read, not the
    process's: it must not replace what the observed call returned or raised.

    Args:
        exc: What a read of the instrumentation raised.

    Raises:
        KeyboardInterrupt: ``exc``, when it is one itself.
    """
    if type(exc) is KeyboardInterrupt:
        raise exc


def report_fault(metrics: FaultCounter, proxy: str, stage: str, exc: BaseException) -> None:
    """Count a fault of the instrumentation and log it the first time it happens.

    Never raises (short of a ``KeyboardInterrupt`` itself, ``exc`` or one of the fault
    path's own, which is raised): a fault of the fault path is dropped. ``exc`` may be
    any ``BaseException`` a read of the instrumentation raised (see
    :func:`raise_interrupt`).

    Args:
        metrics: Where the fault is counted (the fault counter, by ``stage``).
        proxy: The component that hit the fault (part of the log-once key, logged as
            ``proxy``): a proxy class, ``HTTPMetricsMiddleware``, ``MetricSet`` for a
            whole render, or the name of a family whose samples could not be read.
        stage: The closed-set name of the step that failed, e.g. ``"http"``, ``"render"``.
        exc: The exception the instrumentation raised (or, for a call the proxy made
            of its own, what the wrapped object raised to it).
    """
    raise_interrupt(exc)
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
            error=exception_message(exc),
            once=True,
        )


def count_log_faults_in(metrics: FaultCounter) -> None:
    """Count the log lines the process cannot write in ``metrics`` from now on (stage ``log``).

    The log sink is the process's, so this is process-wide: the metric set given last
    counts them (a process builds one container).

    Args:
        metrics: The container's metric set.
    """
    global _LOG_FAULTS_TO
    _LOG_FAULTS_TO = weakref.ref(metrics)


def report_log_fault() -> None:
    """Count one log line the log stream failed to take.

    Never raises, and never logs: the log is what failed.
    """
    metrics = None if _LOG_FAULTS_TO is None else _LOG_FAULTS_TO()
    if metrics is not None:
        metrics.record_fault("log")


def _forget_logged_faults() -> None:
    """Let every fault be logged again (for tests that check the log-once rule)."""
    _LOGGED_FAULTS.clear()
