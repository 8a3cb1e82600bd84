"""What an LLM call adds to the request metrics: its retries, its failure, its spend.

The provider reports every attempt of a call (``attempts`` on its result, on the
last chunk of a stream, or on the error it raises): each attempt but the last was
followed by a retry, labelled with its error type. The call's final error type is
one failure. Tokens times ``MetricSet.llm_prices`` are the spend. The same report
says when the last attempt started, where a stream's time to first token begins.

Hazard: the set of models already reported as unpriced lives on the ``MetricSet``
(one per container) and is read and written on the event-loop thread only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import structlog

from taskforce.core.interfaces.outcome import label_safe, llm_error_type
from taskforce.observability.metrics import CounterChild, Family, MetricSet
from taskforce.observability.metrics._catalog import OTHER

__all__ = ["ATTEMPT_REPORTS", "OutcomeFamilies", "before_last_attempt", "record_outcome"]

#: What an attempt report is read from; anything else is no report.
ATTEMPT_REPORTS = (list, tuple)
_PER_MILLION = 1_000_000.0
_LOGGER = structlog.get_logger("taskforce.observability")


class OutcomeFamilies(Protocol):
    """The counter families an outcome is written to."""

    retries: Family[CounterChild]
    failures: Family[CounterChild]
    cost: Family[CounterChild]


def before_last_attempt(attempts: object) -> float:
    """Return the seconds from a call's start to the start of its last attempt.

    Read from the provider's attempt report: every earlier attempt's
    ``duration_seconds`` and every attempt's ``waited_seconds`` (the wait before it),
    summed. A field missing, or not a finite number above 0, adds nothing (a provider
    that reports no waits: its waits stay in the time after the call's start).

    Args:
        attempts: The provider's attempt report, oldest first (a list or tuple; anything
            else is no report).

    Returns:
        The seconds, 0 without a report.
    """
    if not isinstance(attempts, ATTEMPT_REPORTS):
        return 0.0
    last = len(attempts) - 1
    total = 0.0
    for index, attempt in enumerate(attempts):
        spent = (
            getattr(attempt, "waited_seconds", 0.0),
            getattr(attempt, "duration_seconds", 0.0) if index < last else 0.0,
        )
        for seconds in spent:
            if type(seconds) in (int, float) and math.isfinite(seconds) and seconds > 0:
                total += seconds
    return total


def record_outcome(
    families: OutcomeFamilies,
    metrics: MetricSet,
    labels: tuple[str, str],
    attempts: object,
    error_type: str | None,
    tokens: tuple[int, int],
    requested: Callable[[], str],
) -> bool:
    """Write the retries, the failure and the spend of one call.

    Args:
        families: Where the retries, failures and cost go.
        metrics: The metric set whose ``llm_prices`` price the call.
        labels: ``(model, agent_type)``.
        attempts: The provider's attempt report, oldest first: a list or tuple (empty if
            it gave none; anything else is no report, and the failure still counts).
        error_type: The call's final error type, ``None`` if it succeeded.
        tokens: The call's input and output tokens, from its ``usage``.
        requested: Returns the model asked for (called only when the reported one has
            no price).

    Returns:
        Whether the call had tokens and no price: ``llm.price.missing`` has been logged
        for its model, now or before, under the key it is remembered by.
    """
    if error_type is not None:  # first: a broken report must not lose the failure
        families.failures.labels(*labels, llm_error_type(error_type)).inc()
    if isinstance(attempts, ATTEMPT_REPORTS):
        for attempt in attempts[:-1]:  # every attempt but the last was followed by a retry
            failed = getattr(attempt, "error_type", None)
            if failed is not None:
                families.retries.labels(*labels, llm_error_type(failed)).inc()
    input_tokens, output_tokens = tokens
    if not (input_tokens or output_tokens):
        return False
    price = metrics.llm_prices.get(labels[0])
    if price is None:
        price = metrics.llm_prices.get(requested())
    if price is None:
        _note_unpriced(metrics, labels[0])
        return True
    cost = (input_tokens * price[0] + output_tokens * price[1]) / _PER_MILLION
    families.cost.labels(*labels).inc(cost)
    return False


def _note_unpriced(metrics: MetricSet, model: str) -> None:
    """Log ``llm.price.missing`` once for ``model``, as its label has it (``label_safe``).

    Once ``metrics.max_label_values`` models are remembered, any further one is
    ``other``, as its series are: a provider that names a new model on every call
    logs a bounded number of lines and keeps a bounded set.
    """
    # as the model label has it: the provider's text, cut to length and writable as UTF-8
    model = label_safe(model)
    unpriced = metrics.unpriced_models
    if model in unpriced:
        return
    if len(unpriced) >= metrics.max_label_values:
        if OTHER in unpriced:
            return
        model = OTHER
    unpriced.add(model)
    # A warning when prices are in use (this one was forgotten), else a note.
    log = _LOGGER.warning if metrics.llm_prices else _LOGGER.info
    log("llm.price.missing", category="llm", model=model)
