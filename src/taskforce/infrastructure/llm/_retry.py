"""The retry policy both providers share: which failures are retried, how long to wait, and
the report of every attempt.

The policy knows no SDK: a provider passes a ``classify`` function that names
the LLM error type of an exception (or ``None`` for a programming error, which
is raised at once), and optionally a ``retry_after`` reader for server hints.
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

__all__ = ["Classify", "RetryPolicy", "elapsed_since"]

_T = TypeVar("_T")
_LOG = structlog.get_logger(__name__)

#: Names the LLM error type of an exception; ``None``: not an endpoint failure, raise it.
Classify = Callable[[Exception], LLMErrorType | None]


def _no_hint(_: Exception) -> float | None:
    return None


def elapsed_since(started: float) -> float:
    """Return the seconds since ``started`` (a ``perf_counter`` reading), never negative."""
    elapsed = perf_counter() - started
    return elapsed if elapsed > 0.0 else 0.0


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: wait ``base * 2**n`` (at most ``max_delay``) before retry ``n + 1``.

    Only ``timeout``, ``rate_limit``, ``server_error`` and ``connection`` are
    retried. A ``Retry-After`` hint longer than the backoff is waited for, up to
    ``max_retry_after``.
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

    def should_retry(self, error_type: LLMErrorType, retries_done: int) -> bool:
        """Return whether an attempt that failed with ``error_type`` gets another one."""
        return retries_done < self.max_retries and error_type in RETRYABLE_LLM_ERROR_TYPES

    def delay(self, retries_done: int, hinted: float | None) -> float:
        """Return how long to wait before retry ``retries_done + 1``.

        Args:
            retries_done: how many retries were made already.
            hinted: the server's ``Retry-After`` in seconds, if it sent one.
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
        deadline_seconds: float | None = None,
        retry_after: Callable[[Exception], float | None] = _no_hint,
    ) -> _T:
        """Await ``attempt_call()`` until it succeeds, fails for good, or retries run out.

        Args:
            attempt_call: starts one attempt.
            classify: names the error type of a failed attempt.
            attempts: every attempt is appended here, also when this raises.
            provider: named in the retry log events.
            deadline_seconds: the deadline of one whole attempt, in seconds; past it the
                attempt fails as ``TimeoutError`` (classified by ``classify``).
            retry_after: reads a server's wait hint off a failure.

        Returns:
            What the successful attempt returned.

        Raises:
            Exception: the last attempt's error (not retryable, or no retries left),
                or at once any error ``classify`` does not name.
            asyncio.CancelledError: the call was cancelled, while an attempt ran or while
                it waited to retry; ``attempts`` is set on it to the report so far.
        """
        try:
            return await self._until_done(
                attempt_call, classify, attempts, provider, deadline_seconds, retry_after
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
        deadline_seconds: float | None,
        retry_after: Callable[[Exception], float | None],
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
                if not self.should_retry(error_type, retries_done):
                    raise
                delay = self.delay(retries_done, retry_after(exc))
                if delay > 0:
                    await asyncio.sleep(delay)
                # Logged as the retry starts, after the wait: a call cancelled while it
                # waits makes no retry, and neither the log nor the metrics count one.
                # Only the error type: an SDK message may quote a server body.
                _LOG.warning(
                    "llm.request.retry",
                    category="llm",
                    provider=provider,
                    attempt=retries_done + 1,
                    max_retries=self.max_retries,
                    delay_seconds=delay,
                    error_type=error_type,
                )
            else:
                attempts.append(LLMAttempt(None, elapsed_since(started), waited))
                return result
