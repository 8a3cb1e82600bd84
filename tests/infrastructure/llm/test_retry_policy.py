"""The OpenAI provider's retry policy: backoff growth, its cap, and argument checks."""

from __future__ import annotations

import openai
import pytest

from taskforce.infrastructure.llm._retry import RetryPolicy, is_retryable


class TestRetryPolicy:
    def test_backoff_doubles_up_to_the_cap(self) -> None:
        """Each retry waits twice as long as the one before, never more than the cap."""
        policy = RetryPolicy(max_retries=5, base_delay=0.5, max_delay=3.0)

        delays = [policy.delay(attempt, RuntimeError()) for attempt in range(5)]

        assert [0.5, 1.0, 2.0, 3.0, 3.0] == delays

    @pytest.mark.parametrize(
        ("kwargs", "name"),
        [
            ({"max_retries": -1}, "max_retries"),
            ({"base_delay": -0.1}, "backoff_base_seconds"),
            ({"max_delay": float("inf")}, "backoff_max_seconds"),
        ],
    )
    def test_rejects_bad_values(self, kwargs: dict[str, float], name: str) -> None:
        """Negative or infinite values fail with a ValueError naming the argument."""
        arguments = {"max_retries": 1, "base_delay": 0.1, "max_delay": 1.0, **kwargs}

        with pytest.raises(ValueError, match=name):
            RetryPolicy(**arguments)  # type: ignore[arg-type]

    async def test_non_retryable_error_is_raised_at_once(self) -> None:
        """An error that is not retryable is raised after one attempt."""
        policy = RetryPolicy(max_retries=3, base_delay=0.0, max_delay=0.0)
        attempts = 0

        async def attempt() -> None:
            nonlocal attempts
            attempts += 1
            raise openai.OpenAIError("no key configured")

        with pytest.raises(openai.OpenAIError):
            await policy.run(attempt, provider="test")

        assert 1 == attempts
        assert False is is_retryable(openai.OpenAIError("x"))
