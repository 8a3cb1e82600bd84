"""The providers' retry policy: backoff, the server's wait and its cap, what is retried (by
error type, or as the server says), the report."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import structlog

from taskforce.core.interfaces import LLMAttempt, LLMErrorType
from taskforce.infrastructure.llm._retry import RetryHint, RetryPolicy


class _Failed(Exception):
    def __init__(
        self, error_type: LLMErrorType, hint: float | None = None, said: bool | None = None
    ) -> None:
        self.error_type: LLMErrorType = error_type
        self.hint = hint
        self.said = said
        super().__init__(error_type)


def _classify(exc: Exception) -> LLMErrorType | None:
    if isinstance(exc, TimeoutError):
        return "timeout"
    return exc.error_type if isinstance(exc, _Failed) else None


def _hint(exc: Exception) -> RetryHint:
    return RetryHint(exc.hint, exc.said) if isinstance(exc, _Failed) else RetryHint()


def _script(*outcomes: LLMErrorType | None) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    """An attempt function failing with the given types in turn (``None`` succeeds)."""
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(1)
        outcome = outcomes[len(calls) - 1]
        if outcome is not None:
            raise _Failed(outcome)
        return "ok"

    return calls, attempt


class TestDelay:
    def test_backoff_doubles_up_to_the_cap(self) -> None:
        """Each retry waits twice as long as the one before, never more than the cap."""
        policy = RetryPolicy(max_retries=5, base_delay=0.5, max_delay=3.0)

        delays = [policy.delay(attempt, None) for attempt in range(5)]

        assert [0.5, 1.0, 2.0, 3.0, 3.0] == delays

    def test_retry_after_longer_than_backoff_is_honoured_up_to_its_cap(self) -> None:
        """A Retry-After hint beats the backoff, but never its own cap."""
        policy = RetryPolicy(max_retries=5, base_delay=0.5, max_delay=1.0, max_retry_after=4.0)

        assert [0.5, 3.0, 4.0] == [policy.delay(0, h) for h in (0.1, 3.0, 60.0)]

    def test_a_cap_below_the_backoff_never_shortens_it(self) -> None:
        """With retry_after_max_seconds under the backoff (0, say), a hint leaves the
        backoff as it is: the cap cuts a hint, it does not cut the wait below its floor."""
        policy = RetryPolicy(max_retries=5, base_delay=0.5, max_delay=2.0, max_retry_after=0.0)

        assert [0.5, 1.0, 2.0] == [policy.delay(n, 60.0) for n in range(3)]

    @pytest.mark.parametrize(
        ("kwargs", "name"),
        [
            ({"max_retries": -1}, "max_retries"),
            ({"base_delay": -0.1}, "backoff_base_seconds"),
            ({"max_delay": float("inf")}, "backoff_max_seconds"),
            ({"max_retry_after": float("nan")}, "retry_after_max_seconds"),
        ],
    )
    def test_rejects_bad_values(self, kwargs: dict[str, float], name: str) -> None:
        """Negative or infinite values fail with a ValueError naming the argument."""
        arguments = {"max_retries": 1, "base_delay": 0.1, "max_delay": 1.0, **kwargs}

        with pytest.raises(ValueError, match=name):
            RetryPolicy(**arguments)  # type: ignore[arg-type]


class TestRun:
    @pytest.mark.parametrize("error_type", ["auth", "bad_request", "invalid_response", "other"])
    async def test_not_retried(self, error_type: LLMErrorType) -> None:
        """auth, bad_request, invalid_response and other fail after one attempt."""
        policy = RetryPolicy(max_retries=3, base_delay=0.0, max_delay=0.0)
        calls, attempt = _script(error_type, None)
        attempts: list[LLMAttempt] = []

        with pytest.raises(_Failed):
            await policy.run(
                attempt, classify=_classify, attempts=attempts, provider="t", model="m"
            )

        assert 1 == len(calls)
        assert [error_type] == [a.error_type for a in attempts]

    @pytest.mark.parametrize("error_type", ["timeout", "rate_limit", "server_error", "connection"])
    async def test_retried_then_succeeds(self, error_type: LLMErrorType) -> None:
        """A retryable failure is retried; the report lists the failed and the good attempt."""
        policy = RetryPolicy(max_retries=2, base_delay=0.0, max_delay=0.0)
        _, attempt = _script(error_type, None)
        attempts: list[LLMAttempt] = []

        with structlog.testing.capture_logs() as logs:
            result: Any = await policy.run(
                attempt,
                classify=_classify,
                attempts=attempts,
                provider="t",
                model="m",
            )

        assert "ok" == result
        assert [error_type, None] == [a.error_type for a in attempts]
        assert all(a.duration_seconds >= 0 for a in attempts)
        retries = [e for e in logs if e["event"] == "llm.request.retry"]
        assert [(1, error_type, "m")] == [
            (e["attempt"], e["error_type"], e["model"]) for e in retries
        ]

    async def test_retries_run_out(self) -> None:
        """With max_retries=2, three failures end the call; all three are reported."""
        policy = RetryPolicy(max_retries=2, base_delay=0.0, max_delay=0.0)
        _, attempt = _script("server_error", "server_error", "server_error", None)
        attempts: list[LLMAttempt] = []

        with pytest.raises(_Failed):
            await policy.run(
                attempt, classify=_classify, attempts=attempts, provider="t", model="m"
            )

        assert ["server_error"] * 3 == [a.error_type for a in attempts]

    async def test_unclassified_error_is_raised_unrecorded(self) -> None:
        """An error classify does not name is a bug: raised at once, no attempt recorded."""
        policy = RetryPolicy(max_retries=3, base_delay=0.0, max_delay=0.0)

        async def attempt() -> None:
            raise KeyError("bug")

        attempts: list[LLMAttempt] = []
        with pytest.raises(KeyError):
            await policy.run(
                attempt, classify=_classify, attempts=attempts, provider="t", model="m"
            )

        assert [] == attempts

    async def test_deadline_ends_a_slow_attempt_as_timeout(self) -> None:
        """An attempt past deadline_seconds fails as a timeout (and is retried like one)."""
        policy = RetryPolicy(max_retries=1, base_delay=0.0, max_delay=0.0)
        calls: list[int] = []

        async def attempt() -> str:
            calls.append(1)
            if len(calls) == 1:
                await asyncio.Event().wait()  # never set: only the deadline ends it
            return "ok"

        attempts: list[LLMAttempt] = []
        result = await policy.run(
            attempt,
            classify=_classify,
            attempts=attempts,
            provider="t",
            model="m",
            deadline_seconds=0.05,
        )

        assert "ok" == result
        assert ["timeout", None] == [a.error_type for a in attempts]

    async def test_retry_after_hint_is_read(self) -> None:
        """The wait before a retry is the server's hint when it is longer than the backoff."""
        policy = RetryPolicy(max_retries=1, base_delay=0.0, max_delay=0.0, max_retry_after=5.0)
        calls: list[int] = []

        async def attempt() -> str:
            calls.append(1)
            if len(calls) == 1:
                raise _Failed("rate_limit", hint=0.01)
            return "ok"

        with structlog.testing.capture_logs() as logs:
            await policy.run(
                attempt, classify=_classify, attempts=[], provider="t", model="m", server_hint=_hint
            )

        assert [0.01] == [e["delay_seconds"] for e in logs if e["event"] == "llm.request.retry"]

    @pytest.mark.parametrize(
        ("error_type", "said", "attempts"),
        [
            ("rate_limit", False, ["rate_limit"]),
            ("server_error", False, ["server_error"]),
            ("bad_request", True, ["bad_request"]),
            ("auth", True, ["auth"]),
            ("other", True, ["other"] * 3),
            ("rate_limit", None, ["rate_limit"] * 3),
            ("bad_request", None, ["bad_request"]),
        ],
    )
    async def test_the_server_says_whether_to_retry(
        self, error_type: LLMErrorType, said: bool | None, attempts: list[str]
    ) -> None:
        """A server's word (x-should-retry) overrides the error type's rule, never the
        attempt budget, and never retries ``auth`` or ``bad_request``; without a word, the
        type decides. The call fails with the last
        attempt's own error, each attempt reported under its type."""
        policy = RetryPolicy(max_retries=2, base_delay=0.0, max_delay=0.0)
        made: list[LLMAttempt] = []

        async def attempt() -> str:
            raise _Failed(error_type, said=said)

        with structlog.testing.capture_logs() as logs, pytest.raises(_Failed):
            await policy.run(
                attempt,
                classify=_classify,
                attempts=made,
                provider="t",
                model="m",
                server_hint=_hint,
            )

        assert attempts == [a.error_type for a in made]
        retried = [e["error_type"] for e in logs if e["event"] == "llm.request.retry"]
        assert attempts[1:] == retried

    async def test_each_attempt_reports_the_wait_before_it(self) -> None:
        """The first attempt waited nothing; each retry reports at least the backoff it
        waited, so the report says when the last attempt started."""
        policy = RetryPolicy(max_retries=2, base_delay=0.02, max_delay=0.04)
        _, attempt = _script("server_error", "rate_limit", None)
        attempts: list[LLMAttempt] = []

        await policy.run(attempt, classify=_classify, attempts=attempts, provider="t", model="m")

        assert 0.0 == attempts[0].waited_seconds
        assert attempts[1].waited_seconds >= 0.02
        assert attempts[2].waited_seconds >= 0.04

    @pytest.mark.parametrize("during", ["wait", "retry"])
    async def test_a_cancellation_carries_the_report(self, during: str) -> None:
        """Cancelled while it waits to retry, or during the retry: the cancellation carries
        the attempts made (the one under way included), for a caller to count the retries
        that were logged."""
        policy = RetryPolicy(
            max_retries=1, base_delay=60.0 if during == "wait" else 0.0, max_delay=60.0
        )
        retrying = asyncio.Event()

        async def attempt() -> str:
            if retrying.is_set():
                await asyncio.sleep(60)
            retrying.set()
            raise _Failed("rate_limit")

        attempts: list[LLMAttempt] = []
        task = asyncio.create_task(
            policy.run(attempt, classify=_classify, attempts=attempts, provider="t", model="m")
        )
        await retrying.wait()
        await asyncio.sleep(0)  # into the wait, or into the retry
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as info:
            await task

        expected = ["rate_limit"] if during == "wait" else ["rate_limit", None]
        assert expected == [a.error_type for a in info.value.attempts]  # type: ignore[attr-defined]
