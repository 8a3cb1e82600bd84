"""The errors of ``taskforce.errors``: what each one carries besides its message."""

from __future__ import annotations

from taskforce.errors import LLMProviderError


class TestLLMProviderError:
    def test_usage_is_none_unless_given(self) -> None:
        """An error raised without ``usage`` reports none."""
        assert None is LLMProviderError("down").usage

    def test_usage_is_kept_as_given(self) -> None:
        """The usage a server reported before the failure rides on the error, a copy."""
        usage = {"prompt_tokens": 11, "completion_tokens": 7}

        error = LLMProviderError("cut", error_type="invalid_response", usage=usage)
        usage["prompt_tokens"] = 0

        assert {"prompt_tokens": 11, "completion_tokens": 7} == error.usage
        assert ("invalid_response", ()) == (error.error_type, error.attempts)
