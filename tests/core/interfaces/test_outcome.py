"""The outcome functions read whatever a tool or provider hands back, and never raise."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from taskforce.core.interfaces.jsonable import MAX_RESULT_DEPTH
from taskforce.core.interfaces.outcome import (
    UnusableChunk,
    classify_llm_result,
    classify_tool_result,
    exception_message,
    is_caller_cancelled,
    llm_exception_error_type,
    no_answer_within,
    stream_chunk_text,
    tool_exception_error_type,
)
from tests.support.odd_values import (
    InterruptOfItsOwn,
    RaisingGet,
    Unequal,
    UnequalArgument,
    Unprintable,
    Unrepresentable,
)


class _OwnDict(dict[str, Any]):
    """A result mapping of the tool's own class that reads as a plain dict."""


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

    @pytest.mark.parametrize("success", [True, False])
    @pytest.mark.parametrize("key", ["output", "detail"])
    def test_a_result_nested_too_deep_for_json_is_an_invalid_result(
        self, success: bool, key: str
    ) -> None:
        """Past ``MAX_RESULT_DEPTH`` levels (the result the first), in any key of a success
        or a failure: no writer can write it, so no tool result; up to it, as it says."""
        fits: Any = "x"
        for _ in range(MAX_RESULT_DEPTH - 1):
            fits = [fits]
        result = {"success": success, "error": "x", key: fits}
        assert (None if success else "tool_error") == classify_tool_result(result)
        assert "invalid_result" == classify_tool_result({**result, key: [fits]})
        assert "invalid_result" == classify_tool_result(_OwnDict({**result, key: [fits]}))

    def test_a_value_whose_class_cannot_be_read_is_an_invalid_result(self) -> None:
        """``isinstance`` of a value whose ``__class__`` raises: invalid_result, not the error."""
        assert "invalid_result" == classify_tool_result(Unrepresentable())

    def test_an_error_type_whose_class_cannot_be_read_is_a_tool_error(self) -> None:
        """A failure whose ``error_type`` cannot be read as text gave none: tool_error."""
        result = {"success": False, "error": "x", "error_type": Unrepresentable()}
        assert "tool_error" == classify_tool_result(result)

    def test_a_text_subclass_error_type_is_read_as_plain_text(self) -> None:
        """An error_type whose comparisons raise is taken as the text it holds."""
        result = {"success": False, "error": "x", "error_type": Unequal("DiskFull")}
        assert "DiskFull" == classify_tool_result(result)


#: Tool calls no agent can run -> why (after "the provider answered ").
_UNUSABLE_CALLS: dict[str, Any] = {
    "int": 5,
    "text": "x",
    "dict": {"name": "t"},
    "int-entry": [5],
    "text-entry": ["t"],
    "no-name": [{"id": "c1", "arguments": {}}],
    "wire-format": [{"id": "c1", "type": "function", "function": {"name": "t"}}],
    "int-name": [{"id": "c1", "name": 5}],
    "get-raises": [RaisingGet(name="t")],
    "truth-raises": Unequal("x"),
}


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

    def test_an_error_type_whose_class_cannot_be_read_is_other(self) -> None:
        """A failure whose ``error_type`` cannot be read is ``other``, not an exception."""
        result = {"success": False, "error": "x", "error_type": Unrepresentable()}
        assert "other" == classify_llm_result(result)

    def test_a_value_whose_class_cannot_be_read_is_an_invalid_response(self) -> None:
        """``isinstance`` of a value whose ``__class__`` raises: invalid_response."""
        assert "invalid_response" == classify_llm_result(Unrepresentable())

    @pytest.mark.parametrize("content", [5, b"hi", ["hi"], {"text": "hi"}, "unrepresentable"])
    def test_a_success_whose_text_is_no_string_is_an_invalid_response(self, content: Any) -> None:
        """A success whose ``content`` is a true value that is no string (or whose class
        cannot be read) is unusable, as a streamed text delta that is no string is
        (``stream_chunk_text``)."""
        text = Unrepresentable() if content == "unrepresentable" else content
        result: dict[str, Any] = {"success": True, "content": text, "tool_calls": []}
        assert "invalid_response" == classify_llm_result(result)

    @pytest.mark.parametrize("content", [None, "", "hi", 0, b"", []])
    def test_a_success_with_text_or_none_is_a_success(self, content: Any) -> None:
        """A success whose ``content`` is a string or holds no text (no answer, for the agent
        to judge) is a success."""
        assert classify_llm_result({"success": True, "content": content}) is None

    @pytest.mark.parametrize("tool_calls", _UNUSABLE_CALLS.values(), ids=_UNUSABLE_CALLS.keys())
    def test_a_success_whose_tool_calls_cannot_be_run_is_an_invalid_response(
        self, tool_calls: Any
    ) -> None:
        """Tool calls that are no list of dicts with a name that is text (or cannot be
        read) are unusable, as the OpenAI-compatible provider fails them."""
        result = {"success": True, "content": None, "tool_calls": tool_calls}
        assert "invalid_response" == classify_llm_result(result)

    @pytest.mark.parametrize(
        "tool_calls",
        [None, [], (), 0, "", [{"id": "c1", "name": "t", "arguments": "[1]"}], [{"name": ""}]],
        ids=["none", "empty", "empty-tuple", "zero", "blank", "call", "blank-name"],
    )
    def test_a_success_whose_tool_calls_can_be_run_is_a_success(self, tool_calls: Any) -> None:
        """None (any false value) or calls with a name: whether the name is a tool and the
        arguments an object is for the tool runner to say."""
        result = {"success": True, "content": "hi", "tool_calls": tool_calls}
        assert classify_llm_result(result) is None


class _Chunk(dict[str, Any]):
    """A chunk of the provider's own dict class that reads as any dict."""


class _Text(str):
    """A text of the provider's own str class."""


class _UntrueDone:
    """A ``done`` value whose truth cannot be read."""

    def __bool__(self) -> bool:
        raise RuntimeError("bool failed")


class TestStreamChunkText:
    @pytest.mark.parametrize(
        "chunk",
        [{"content": "hel"}, _Chunk(content="hel"), {"content": "hel", "done": False}],
        ids=["dict", "dict-subclass", "not-done"],
    )
    def test_a_text_delta_is_its_content(self, chunk: Any) -> None:
        """A chunk carrying text, also of a dict class of the provider's own."""
        assert "hel" == stream_chunk_text(chunk)

    def test_a_text_subclass_is_handed_on_as_it_is(self) -> None:
        """The content object itself, not a copy: the agents stream what the provider sent."""
        content = _Text("hel")
        assert content is stream_chunk_text({"content": content})

    @pytest.mark.parametrize(
        "chunk",
        [{}, {"content": ""}, {"content": None}, {"content": 0}, {"content": []}],
        ids=["no-content", "empty", "none", "zero", "empty-list"],
    )
    def test_a_chunk_without_text_has_none(self, chunk: Any) -> None:
        """No content, or any false one, even of another type: no text, no failure."""
        assert "" == stream_chunk_text(chunk)

    def test_an_attempt_report_has_no_text(self) -> None:
        """The report a retried stream may send first is no text and no end."""
        report = {"attempts": [{"error_type": "rate_limit", "duration_seconds": 0.1}]}
        assert "" == stream_chunk_text(report)

    @pytest.mark.parametrize(
        "chunk",
        [{"done": True}, {"done": True, "content": "late"}, {"done": 1, "content": 5}],
        ids=["done", "done-with-text", "done-with-odd-content"],
    )
    def test_the_last_chunk_is_none(self, chunk: Any) -> None:
        """A true ``done`` ends the stream: its content, whatever it is, is no delta."""
        assert stream_chunk_text(chunk) is None

    @pytest.mark.parametrize(
        ("tool_calls", "why"),
        [
            (5, "tool calls as a int, not a list"),
            ([5], "a tool call that is a int, not a dict"),
            ([{"id": "c1"}], "a tool call with no name (a tool call is {id, name, arguments})"),
            ([RaisingGet(name="t")], "a chunk that cannot be read (RuntimeError)"),
            (Unequal("x"), "a chunk that cannot be read (RuntimeError)"),
        ],
        ids=["int", "int-entry", "no-name", "entry-get-raises", "truth-raises"],
    )
    def test_a_last_chunk_whose_tool_calls_cannot_be_run_says_why(
        self, tool_calls: Any, why: str
    ) -> None:
        """The last chunk carries the tool calls: unusable ones fail the call there, as
        ``classify_llm_result`` fails them in a result."""
        with pytest.raises(UnusableChunk) as raised:
            stream_chunk_text({"done": True, "tool_calls": tool_calls})
        assert (why, "invalid_response") == (str(raised.value), raised.value.error_type)

    @pytest.mark.parametrize(
        ("chunk", "why"),
        [
            (None, "a NoneType, not a chunk"),
            ("hel", "a str, not a chunk"),
            ([("content", "hel")], "a list, not a chunk"),
            ({"content": 5}, "a int as text, not a string"),
            ({"content": b"hel"}, "a bytes as text, not a string"),
            ({"content": ["hel"]}, "a list as text, not a string"),
            (RaisingGet(content="hel"), "a chunk that cannot be read (RuntimeError)"),
            (RaisingGet(done=True), "a chunk that cannot be read (RuntimeError)"),
            ({"done": _UntrueDone()}, "a chunk that cannot be read (RuntimeError)"),
            ({"content": Unequal("hel")}, "a chunk that cannot be read (RuntimeError)"),
            (Unrepresentable(), "a chunk that cannot be read (RuntimeError)"),
        ],
        ids=[
            "none",
            "text",
            "list",
            "int-content",
            "bytes-content",
            "list-content",
            "get-raises",
            "done-get-raises",
            "done-truth-raises",
            "content-truth-raises",
            "class-raises",
        ],
    )
    def test_an_unusable_chunk_says_why(self, chunk: Any, why: str) -> None:
        """Each way a chunk is unusable raises UnusableChunk, an invalid_response."""
        with pytest.raises(UnusableChunk) as raised:
            stream_chunk_text(chunk)
        assert (why, "invalid_response") == (str(raised.value), raised.value.error_type)
        assert raised.value.__context__ is None


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
