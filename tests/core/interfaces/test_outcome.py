"""The outcome functions read whatever a tool or provider hands back, and never raise."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from taskforce.core.interfaces.outcome import (
    classify_llm_result,
    classify_tool_result,
    exception_message,
    is_caller_cancelled,
    llm_exception_error_type,
    no_answer_within,
    tool_exception_error_type,
)
from tests.support.odd_values import (
    InterruptOfItsOwn,
    RaisingGet,
    Unequal,
    UnequalArgument,
    Unprintable,
)


class _NoCopy(dict[str, Any]):
    """A result mapping that reads but cannot be copied (its iteration fails)."""

    def __iter__(self) -> Any:
        raise RuntimeError("iter failed")

    def keys(self) -> Any:
        raise RuntimeError("keys failed")


def _raising_property(name: str) -> Exception:
    def fail(_: object) -> Any:
        raise RuntimeError(f"{name} failed")

    return type("ProviderError", (Exception,), {name: property(fail)})("odd")


def _exc_with(error_type: object) -> Exception:
    exc = RuntimeError("odd")
    exc.error_type = error_type  # type: ignore[attr-defined]
    return exc


class TestClassifyToolResult:
    @pytest.mark.parametrize(
        "result",
        [RaisingGet(success=True), _NoCopy(success=True)],
        ids=["get-raises", "copy-raises"],
    )
    def test_a_mapping_that_cannot_be_read_is_an_invalid_result(self, result: Any) -> None:
        """A dict of the tool's own class that fails to be read or copied: invalid_result."""
        assert "invalid_result" == classify_tool_result(result)

    def test_a_text_subclass_error_type_is_read_as_plain_text(self) -> None:
        """An error_type whose comparisons raise is taken as the text it holds."""
        result = {"success": False, "error": "x", "error_type": Unequal("DiskFull")}
        assert "DiskFull" == classify_tool_result(result)


class TestClassifyLLMResult:
    @pytest.mark.parametrize("error_type", [["rate_limit"], UnequalArgument(), {"type": "timeout"}])
    def test_an_error_type_that_is_no_text_is_other(self, error_type: Any) -> None:
        """An unhashable or incomparable error_type is ``other``, not an exception."""
        result = {"success": False, "error": "x", "error_type": error_type}
        assert "other" == classify_llm_result(result)

    def test_a_text_subclass_error_type_keeps_its_value(self) -> None:
        """A known error type given as a str subclass is that error type."""
        result = {"success": False, "error": "x", "error_type": Unequal("rate_limit")}
        assert "rate_limit" == classify_llm_result(result)

    def test_a_mapping_that_cannot_be_read_is_an_invalid_response(self) -> None:
        """A result whose ``get`` raises is an invalid_response."""
        assert "invalid_response" == classify_llm_result(RaisingGet(success=True))


class TestExceptionErrorTypes:
    @pytest.mark.parametrize("exc", [_raising_property("error_type"), _exc_with(["timeout"])])
    def test_an_llm_error_type_that_cannot_be_read_is_other(self, exc: Exception) -> None:
        """An error_type attribute that raises or is unhashable: ``other``."""
        assert "other" == llm_exception_error_type(exc)

    async def test_a_cancellation_with_an_incomparable_argument_is_the_tools_failure(
        self,
    ) -> None:
        """A CancelledError of the tool's own carrying an argument whose == raises."""
        exc = asyncio.CancelledError(UnequalArgument())
        assert "CancelledError" == tool_exception_error_type(exc, None)


class TestIsCallerCancelled:
    async def test_an_interrupt_is_the_processs(self) -> None:
        """KeyboardInterrupt itself (Ctrl-C) ends the call without an outcome."""
        assert is_caller_cancelled(KeyboardInterrupt())

    async def test_an_interrupt_subclass_is_the_calls_failure(self) -> None:
        """A subclass of KeyboardInterrupt, raised while nobody cancelled, is a failure."""
        exc = InterruptOfItsOwn()
        assert not is_caller_cancelled(exc)
        assert "InterruptOfItsOwn" == tool_exception_error_type(exc, None)
        assert "other" == llm_exception_error_type(exc)


class TestExceptionMessage:
    def test_the_message(self) -> None:
        """str() of the exception."""
        assert "boom" == exception_message(ValueError("boom"))

    def test_a_message_that_cannot_be_read(self) -> None:
        """A placeholder naming the class when str() raises."""
        expected = "<the message of this Unprintable could not be read>"
        assert expected == exception_message(Unprintable())


class TestNoAnswerWithin:
    @pytest.mark.parametrize(
        ("seconds", "expected"),
        [
            (1.0, "no answer within 1 s (state.timeout_seconds)"),
            (0.25, "no answer within 0.25 s (state.timeout_seconds)"),
        ],
    )
    def test_the_limit_and_its_setting(self, seconds: float, expected: str) -> None:
        """The limit as configured, without a trailing .0, and the setting that holds it."""
        assert expected == no_answer_within(seconds, "state.timeout_seconds")

    def test_what_did_not_come(self) -> None:
        """A stream cut short says what it lacked."""
        expected = "no complete answer within 30 s (llm.timeout_seconds)"
        assert expected == no_answer_within(30, "llm.timeout_seconds", what="complete answer")
