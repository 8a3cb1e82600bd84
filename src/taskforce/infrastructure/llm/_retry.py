"""The retry policy of the OpenAI-compatible provider: what is retryable and how long to wait."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import openai
import structlog

__all__ = ["RetryPolicy", "is_retryable"]

_T = TypeVar("_T")
_LOG = structlog.get_logger(__name__)
_RETRYABLE_STATUS = frozenset({408, 409, 429})


def is_retryable(exc: BaseException) -> bool:
    """Return whether another attempt may succeed: connection errors, timeouts, 408/409/429, 5xx."""
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRYABLE_STATUS or exc.status_code >= 500
    return False


def _retry_after(exc: Exception) -> float | None:
    if not isinstance(exc, openai.APIStatusError):
        return None
    try:
        seconds = float(exc.response.headers.get("retry-after", ""))
    except ValueError:  # absent, or an HTTP date: fall back to our own backoff
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: wait ``base * 2**n`` (at most ``max_delay``) before retry ``n + 1``.

    A ``Retry-After`` header longer than the backoff is honoured up to ``max_delay``.
    """

    max_retries: int
    base_delay: float
    max_delay: float

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries!r}")
        for name, value in (
            ("backoff_base_seconds", self.base_delay),
            ("backoff_max_seconds", self.max_delay),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    def delay(self, attempt: int, exc: Exception) -> float:
        """Return how long to wait before retry ``attempt + 1``."""
        delay = min(self.max_delay, self.base_delay * 2.0**attempt)
        hinted = _retry_after(exc)
        if hinted is not None:
            delay = min(self.max_delay, max(delay, hinted))
        return delay

    async def run(self, attempt_call: Callable[[], Awaitable[_T]], *, provider: str) -> _T:
        """Await ``attempt_call()`` until it succeeds, fails for good, or retries run out.

        Args:
            attempt_call: starts one attempt.
            provider: named in the retry log events.

        Returns:
            What the successful attempt returned.

        Raises:
            openai.OpenAIError: the last attempt's error (not retryable, or no retries left).
        """
        attempt = 0
        while True:
            try:
                return await attempt_call()
            except openai.OpenAIError as exc:
                if attempt >= self.max_retries or not is_retryable(exc):
                    raise
                delay = self.delay(attempt, exc)
                attempt += 1
                # Only the class name: an SDK message may quote a server body.
                _LOG.warning(
                    "llm.request.retry",
                    category="llm",
                    provider=provider,
                    attempt=attempt,
                    max_retries=self.max_retries,
                    delay_seconds=delay,
                    error_type=type(exc).__name__,
                )
                await asyncio.sleep(delay)
