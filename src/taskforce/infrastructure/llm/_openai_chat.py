"""The chat completion in the SDK's types: a call's parameters out, the model's answer in.

Builds a call's parameters besides its messages, and reads the answer out of the SDK's
objects: a completion's result, its tool calls with decoded arguments, and usage. A
whole completion and an assembled stream decode tool calls and usage here alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from openai.types import CompletionUsage
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionToolChoiceOptionParam,
    ChatCompletionToolUnionParam,
)

from taskforce.core.interfaces.jsonable import loads_within
from taskforce.core.interfaces.llm import LLMResult, ToolCall, ToolSchema, Usage, as_count
from taskforce.core.interfaces.log import quoted
from taskforce.infrastructure.llm._openai_errors import _ErrorInAnswer, _InvalidResponse

__all__ = [
    "_added",
    "_answer",
    "_arguments_text",
    "_content_text",
    "_decoded_call",
    "_ended_by_error",
    "_extra",
    "_json_kind",
    "_text",
    "_usage",
]


def _decoded_call(call_id: str, name: str, raw_arguments: object) -> ToolCall:
    """Return a tool call with its JSON arguments decoded.

    Arguments sent as a JSON object in place of the string that encodes one are read as
    that object (:func:`_arguments_text`).

    Raises:
        _InvalidResponse: the arguments are not a JSON object, or one Python does not
            read (nested deeper than the JSON writers keep, on every Python; a number
            past its int digits): an answer as unusable.
        TypeError: the arguments are JSON of another kind than a string or an object.
        ValueError: the arguments are an object nested too deeply to encode.
    """
    text = _arguments_text(raw_arguments) or "{}"
    try:
        arguments = loads_within(text)
    except json.JSONDecodeError as exc:
        raise _InvalidResponse(
            f"tool call {quoted(name)} has arguments that are not JSON ({exc.msg})"
        ) from exc
    except RecursionError as exc:
        raise _InvalidResponse(f"tool call {quoted(name)} has arguments nested too deeply") from exc
    except ValueError as exc:  # JSON, but a number past Python's int digits (4300)
        raise _InvalidResponse(
            f"tool call {quoted(name)} has arguments with a number too long"
        ) from exc
    if not isinstance(arguments, dict):
        raise _InvalidResponse(f"tool call {quoted(name)} has arguments that are not a JSON object")
    return {"id": call_id, "name": name, "arguments": arguments}


#: The counts of a server's ``usage`` that a result reports.
_USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


def _usage(usage: CompletionUsage | None) -> Usage | None:
    """The counts a server's ``usage`` reports; ``None`` when it reports none.

    ``completion_tokens`` includes the model's reasoning, as OpenAI counts it, also
    from a server that counts it besides (:func:`_reasoning_besides`).

    Never raises: the SDK lets anything through (a count left out or null, a usage
    that is no object, a count that counts nothing: ``-1``, ``"3"``, ``1.5``), and a
    usage that cannot be read must not cost the answer. A count left out, null or no
    count (:func:`~taskforce.core.interfaces.llm.as_count`) is left out, so that the
    parts of a usage a stream sends over several chunks merge
    (:meth:`~._openai_stream._StreamState.add`) and the metrics get counts only: the
    server's answer is input, and a bad one is no fault of the instrumentation.
    """
    counts = {name: as_count(getattr(usage, name, None)) for name in _USAGE_FIELDS}
    reported = {name: count for name, count in counts.items() if count is not None}
    reasoning = _reasoning_besides(usage, reported)
    if reasoning:
        reported["completion_tokens"] += reasoning
    return cast("Usage", reported) if reported else None


def _added(earlier: Usage | None, later: Usage | None) -> Usage | None:
    """``later`` with the counts of ``earlier`` added, count by count: the usage of a call
    whose earlier attempts reported one too (billed, though retried).

    A count only one of them gives is taken as it is; two that are not both whole
    numbers are not added (``later``'s stands).
    """
    if earlier is None:
        return later
    if later is None:
        return earlier
    added: dict[str, Any] = dict(later)
    for name, count in earlier.items():
        other = added.get(name)
        if other is None:
            added[name] = count
        elif type(count) is int and type(other) is int:
            added[name] = count + other
    return cast("Usage", added)


def _reasoning_besides(usage: object, counts: dict[str, Any]) -> int:
    """The reasoning tokens a server counts besides ``completion_tokens``, else 0.

    OpenAI counts a model's reasoning within ``completion_tokens``
    (``completion_tokens_details.reasoning_tokens`` is a part of it, and
    ``total_tokens`` is prompt plus completion). Some compatible servers (xAI) count it
    besides: their ``total_tokens`` is prompt plus completion plus reasoning. Only that
    sum, all four counts whole numbers and the reasoning above 0, says so; the
    reasoning is then output, billed as such.
    """
    details = getattr(usage, "completion_tokens_details", None)
    reasoning = (
        details.get("reasoning_tokens")
        if isinstance(details, dict)
        else getattr(details, "reasoning_tokens", None)
    )
    prompt, completion, total = (counts.get(name) for name in _USAGE_FIELDS)
    if not all(type(count) is int for count in (prompt, completion, total, reasoning)):
        return 0
    besides = cast(int, reasoning)
    is_besides = besides > 0 and total == cast(int, prompt) + cast(int, completion) + besides
    return besides if is_besides else 0


def _ended_by_error(choice: object, headers: Any = None, usage: Usage | None = None) -> None:
    """Raise the error a choice ended with (``finish_reason: "error"``), if it did.

    A router whose upstream fails while the model writes ends the choice so (OpenRouter),
    the error object on the choice itself, not at the top of the answer: whatever text
    came before is no answer.

    Args:
        choice: a choice of a completion or of a streamed chunk, as the SDK decoded it.
        headers: the answer's headers, whose retry hints the error carries.
        usage: the answer's usage, which the error carries (billed).

    Raises:
        _ErrorInAnswer: the choice ended with an error; its body is the choice's
            ``error`` (``None`` when it has none).
    """
    if getattr(choice, "finish_reason", None) == "error":
        extra = getattr(choice, "model_extra", None) or {}
        raise _ErrorInAnswer(extra.get("error"), headers, usage)


def _arguments_text(value: object) -> str | None:
    """A tool call's arguments (or a piece of them) as the JSON text OpenAI sends.

    Some compatible servers (llama.cpp's, Hugging Face TGI) send the arguments as a JSON
    object, not as the string that encodes one: the object is encoded, so that it is
    read, streamed or whole, as the same object sent as a string would be.

    Raises:
        TypeError: ``value`` is JSON of another kind than a string or an object.
        ValueError: ``value`` is an object nested too deeply to encode.
    """
    if not isinstance(value, dict):
        return _text(value, "a tool call's arguments")
    try:
        return json.dumps(value)
    except RecursionError as exc:
        raise ValueError("a tool call's arguments are nested too deeply") from exc


def _json_kind(value: object) -> str:
    """Name the kind of a JSON value that is not an object, for a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    return "an array" if isinstance(value, list) else "of another kind"


def _text(value: object, what: str) -> str | None:
    """``value``, a piece of text (or none), streamed or whole; the SDK lets any JSON through.

    Raises:
        TypeError: ``value`` is JSON of another kind (a name as an array, text as a list
            of parts): the chunk or the completion is malformed.
    """
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{what} is {_json_kind(value)}, not a string")


def _content_text(value: object, what: str) -> str | None:
    """The text of a message's content (or a streamed piece of it): a string, or a list of
    content parts.

    Mistral (and servers that pass its answers on) sends content as a list of parts,
    whole and streamed alike: ``{"type": "text", "text": ...}`` parts are the answer,
    joined in order; a reasoning model's ``thinking`` part, a ``reference`` or any
    other typed part is not (thinking is output, billed, but no part of the answer).

    Raises:
        TypeError: ``value`` is JSON of another kind, a part is not an object, or a text
            part's text is not a string: the chunk or the completion is malformed.
    """
    if not isinstance(value, list):
        return _text(value, what)
    texts: list[str] = []
    for part in value:
        if not isinstance(part, dict):
            raise TypeError(f"a part of {what} is {_json_kind(part)}, not an object")
        if part.get("type") == "text":
            texts.append(_text(part.get("text"), f"the text of a part of {what}") or "")
    return "".join(texts)


def _answer(
    response: ChatCompletion, model: str, usage: Usage | None, *, with_tool_calls: bool
) -> LLMResult:
    """Return the successful result a chat completion holds, without its attempts.

    Args:
        response: the completion, as the SDK decoded it.
        model: the model the result names.
        usage: the completion's usage, read (:func:`_usage`) before anything here can
            fail, so that a failure still reports it.
        with_tool_calls: whether to decode the message's tool calls into ``tool_calls``.

    Returns:
        ``{"success": True, "content": ..., "model": ...}``, with ``tool_calls`` when
        asked for and ``usage`` unless ``None``. ``content`` is the message's text (of
        its text parts, when it is a list of parts), or its ``refusal`` when the model
        declined (a refusal and no or empty content).

    Raises:
        _InvalidResponse: the completion holds no choices, a tool call of a type other
            than ``function`` (one without a type is a function call) or without a
            name, or tool arguments that are not a JSON object.
        TypeError: the content is JSON of another kind than a string or a list of
            content parts (:func:`_content_text`), or a tool call's name or the refusal
            that stands for the content is JSON of another kind than a string.
        AttributeError: a field the SDK does not check is null (as may ``TypeError``
            or ``ValueError``).
    """
    if not response.choices:
        raise _InvalidResponse("the response holds no choices")
    message = response.choices[0].message
    # A model that declines answers with a refusal and no content (none, or an empty
    # one, as a stream's delta may say): that is its answer.
    text = _content_text(message.content, "the content")
    content = text or _refusal(message) or text
    result: LLMResult = {"success": True, "content": content, "model": model}
    if with_tool_calls:
        calls: list[ToolCall] = []
        for raw in message.tool_calls or []:
            # No type, or null (some vLLM and Ollama versions): a function call, as the
            # same call streamed is.
            kind = getattr(raw, "type", None)
            if kind not in ("function", None):
                raise _InvalidResponse(f"unsupported tool call type {kind!r}")
            function = cast("ChatCompletionMessageFunctionToolCall", raw).function
            name = _text(function.name, "a tool call's name")
            if name is None:
                raise _InvalidResponse("a tool call has no name")
            calls.append(_decoded_call(raw.id, name, function.arguments))
        result["tool_calls"] = calls
    if usage is not None:
        result["usage"] = usage
    return result


def _refusal(message: object) -> str | None:
    """The text of a message's ``refusal``, if it has one.

    Raises:
        TypeError: the refusal is JSON of another kind (the SDK lets any JSON through):
            the answer is malformed, as the same refusal is in a stream.
    """
    refusal = getattr(message, "refusal", None)
    if refusal is None or isinstance(refusal, str):
        return refusal or None
    raise TypeError(f"the refusal is {type(refusal).__name__}, not a string")


def _extra(
    kwargs: dict[str, Any], tools: Sequence[ToolSchema] | None, tool_choice: str | None
) -> dict[str, Any]:
    """The ``chat.completions.create`` parameters of a call, besides messages and model."""
    extra: dict[str, Any] = dict(kwargs)
    if tools:
        extra["tools"] = cast("list[ChatCompletionToolUnionParam]", list(tools))
    if tool_choice is not None:
        extra["tool_choice"] = cast("ChatCompletionToolChoiceOptionParam", tool_choice)
    return extra
