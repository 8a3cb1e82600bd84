"""The retry policy both providers share: which failures are retried, how long to wait, and
the report of every attempt.

The policy knows no SDK: a provider passes a ``classify`` function that names
the LLM error type of an exception (or ``None`` for a programming error, which
is raised at once), and optionally a ``server_hint`` reader for what the server said
about a retry (:class:`RetryHint`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import TypeVar

import structlog

from taskforce.core.interfaces.llm import RETRYABLE_LLM_ERROR_TYPES, LLMAttempt, LLMErrorType
from taskforce.core.interfaces.outcome import label_safe

__all__ = ["Classify", "RetryHint", "RetryPolicy", "elapsed_since", "is_retryable"]

_T = TypeVar("_T")
_LOG = structlog.get_logger(__name__)

#: Names the LLM error type of an exception; ``None``: not an endpoint failure, raise it.
Classify = Callable[[Exception], LLMErrorType | None]


@dataclass(frozen=True)
class RetryHint:
    """What a failed attempt's server said about a retry; nothing when it said nothing.

    ``wait``: the seconds it asks to wait before the retry (``retry-after-ms`` or
    ``Retry-After``). ``retry``: whether to retry at all (``x-should-retry``), which
    overrides the rule of the error type, within the attempt budget (never retrying
    ``auth`` or ``bad_request``: :func:`is_retryable`).
    """

    wait: float | None = None
    retry: bool | None = None


_NO_HINT = RetryHint()


def _no_hint(_: Exception) -> RetryHint:
    return _NO_HINT


#: The error types no server's word (``x-should-retry: true``) gets retried: another
#: attempt with the same key or the same request cannot cure them (issue 9).
_NEVER_RETRIED: frozenset[LLMErrorType] = frozenset({"auth", "bad_request"})


def is_retryable(error_type: LLMErrorType, said: bool | None = None) -> bool:
    """Return whether a failure of ``error_type`` may be retried (the budget aside).

    Args:
        error_type: why the attempt failed.
        said: whether its server said to retry (``x-should-retry``); ``None``: it did
            not say, and the error type decides. It never makes ``auth`` or
            ``bad_request`` retried.
    """
    if said is None:
        return error_type in RETRYABLE_LLM_ERROR_TYPES
    return said and error_type not in _NEVER_RETRIED


def elapsed_since(started: float) -> float:
    """Return the seconds since ``started`` (a ``perf_counter`` reading), never negative."""
    elapsed = perf_counter() - started
    return elapsed if elapsed > 0.0 else 0.0


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: wait ``base * 2**n`` (at most ``max_delay``) before retry ``n + 1``.

    Only ``timeout``, ``rate_limit``, ``server_error`` and ``connection`` are
    retried, unless the server says otherwise (:attr:`RetryHint.retry`; never for ``auth``
    and ``bad_request``): never more than ``max_retries`` times. A server's wait longer
    than the backoff is waited for, up to ``max_retry_after``.
    """

    max_retries: int
    base_delay: float
    max_delay: float
    max_retry_after: float = 30.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries!r}")
        for name, value in (
            ("backoff_base_seconds", self.base_delay),
            ("backoff_max_seconds", self.max_delay),
            ("retry_after_max_seconds", self.max_retry_after),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    def should_retry(
        self, error_type: LLMErrorType, retries_done: int, said: bool | None = None
    ) -> bool:
        """Return whether an attempt that failed with ``error_type`` gets another one.

        Args:
            error_type: why the attempt failed.
            retries_done: how many retries were made already.
            said: whether its server said to retry (``x-should-retry``); ``None``: it did
                not say, and the error type decides (see :func:`is_retryable`).
        """
        if retries_done >= self.max_retries:
            return False
        return is_retryable(error_type, said)

    def delay(self, retries_done: int, hinted: float | None) -> float:
        """Return how long to wait before retry ``retries_done + 1``.

        Args:
            retries_done: how many retries were made already.
            hinted: the wait the server asked for in seconds, if it asked for one.
        """
        delay = min(self.max_delay, self.base_delay * 2.0**retries_done)
        if hinted is not None and math.isfinite(hinted) and hinted > delay:
            # the hint, cut to its cap; never shorter than the backoff it replaces
            delay = max(delay, min(hinted, self.max_retry_after))
        return delay

    async def run(
        self,
        attempt_call: Callable[[], Awaitable[_T]],
        *,
        classify: Classify,
        attempts: list[LLMAttempt],
        provider: str,
        model: str,
        deadline_seconds: float | None = None,
        server_hint: Callable[[Exception], RetryHint] = _no_hint,
    ) -> _T:
        """Await ``attempt_call()`` until it succeeds, fails for good, or retries run out.

        Args:
            attempt_call: starts one attempt.
            classify: names the error type of a failed attempt.
            attempts: every attempt is appended here, also when this raises.
            provider: named in the retry log events.
            model: named in the retry log events: the model the call is labelled with
                so far (the one asked for, or the one its name last resolved to).
            deadline_seconds: the deadline of one whole attempt, in seconds; past it the
                attempt fails as ``TimeoutError`` (classified by ``classify``).
            server_hint: reads what a failure's server said about a retry.

        Returns:
            What the successful attempt returned.

        Raises:
            Exception: the last attempt's error (not retried, or no retries left),
                or at once any error ``classify`` does not name.
            asyncio.CancelledError: the call was cancelled, while an attempt ran or while
                it waited to retry; ``attempts`` is set on it to the report so far.
        """
        try:
            return await self._until_done(
                attempt_call, classify, attempts, provider, model, deadline_seconds, server_hint
            )
        except asyncio.CancelledError as exc:
            # A cancelled call has no outcome, but its attempts were made, and its retries
            # logged: the report rides on the cancellation, for the caller to count them.
            exc.attempts = attempts  # type: ignore[attr-defined]
            raise

    async def _until_done(
        self,
        attempt_call: Callable[[], Awaitable[_T]],
        classify: Classify,
        attempts: list[LLMAttempt],
        provider: str,
        model: str,
        deadline_seconds: float | None,
        server_hint: Callable[[Exception], RetryHint],
    ) -> _T:
        """Run the attempts of :meth:`run`, which documents the arguments."""
        ended: float | None = None  # when the attempt before this one failed
        while True:
            started = perf_counter()
            # the backoff, and the little around it: time between two attempts
            waited = 0.0 if ended is None else max(started - ended, 0.0)
            try:
                if deadline_seconds is None:
                    result = await attempt_call()
                else:
                    async with asyncio.timeout(deadline_seconds):
                        result = await attempt_call()
            except asyncio.CancelledError:
                # The attempt under way was made (the server may have seen it): it stays in
                # the report, without an outcome of its own.
                attempts.append(LLMAttempt(None, elapsed_since(started), waited))
                raise
            except Exception as exc:
                error_type = classify(exc)
                if error_type is None:
                    raise
                duration = elapsed_since(started)
                ended = started + duration
                attempts.append(LLMAttempt(error_type, duration, waited))
                retries_done = len(attempts) - 1
                hint = server_hint(exc)
                if not self.should_retry(error_type, retries_done, hint.retry):
                    raise
                delay = self.delay(retries_done, hint.wait)
                if delay > 0:
                    await asyncio.sleep(delay)
                # Logged as the retry starts, after the wait: a call cancelled while it
                # waits makes no retry, and neither the log nor the metrics count one.
                # Only the error type: an SDK message may quote a server body.
                _LOG.warning(
                    "llm.request.retry",
                    category="llm",
                    provider=provider,
                    model=label_safe(model),
                    attempt=retries_done + 1,
                    max_retries=self.max_retries,
                    delay_seconds=delay,
                    error_type=error_type,
                )
            else:
                attempts.append(LLMAttempt(None, elapsed_since(started), waited))
                return result
