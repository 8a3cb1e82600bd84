"""Reading the chunks of a streamed chat completion for the OpenAI-compatible provider.

Tells a chunk that carries an answer from a role-only chunk or a keep-alive, the
stream's end from ``data: null``, and assembles text deltas, tool call deltas and
usage (merged count by count over the chunks that carry it) into what the stream's
last chunk reports. Of several choices (``n`` > 1) only the first streamed is the
answer, as a whole completion's first choice is. Events sent to a request that asked
for a whole completion are read the same way into one (:func:`_completion_of_events`).
"""

from __future__ import annotations

import asyncio
import enum
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from openai._models import construct_type_unchecked
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall

from taskforce.core.interfaces.jsonable import loads_within
from taskforce.core.interfaces.llm import LLMAttempt, StreamChunk, ToolCall, Usage
from taskforce.infrastructure.llm._openai_chat import (
    _arguments_text,
    _content_text,
    _decoded_call,
    _ended_by_error,
    _json_kind,
    _text,
    _usage,
)
from taskforce.infrastructure.llm._openai_errors import _ErrorInAnswer, _InvalidResponse, _StreamCut
from taskforce.infrastructure.llm._openai_sse import _EventStreamDecoder

__all__ = [
    "_End",
    "_StreamState",
    "_completion_of_events",
    "_is_events",
    "_json_kind",
    "_opening",
    "_usage_after_error",
]


class _End(enum.Enum):
    """The end of a stream, told apart from ``None``: what the SDK makes of ``data: null``."""

    END = enum.auto()


def _carries(chunk: ChatCompletionChunk | _End) -> bool:
    """Whether a streamed chunk is (part of) an answer: text, a tool call, an end, usage.

    The stream's end, an event that is not an object (the SDK passes on whatever JSON
    an event holds) and a chunk too malformed to tell count as carrying: reading stops
    there, and what follows judges them.
    """
    if not isinstance(chunk, ChatCompletionChunk):
        return True
    try:
        return chunk.usage is not None or any(map(_choice_carries, chunk.choices or ()))
    except AttributeError:  # not a chunk, a choice without a delta: for the caller to refuse
        return True


def _choice_carries(choice: Any) -> bool:
    """Whether a streamed choice carries (part of) an answer: not a role-only delta.

    Raises:
        AttributeError: the choice has no delta.
    """
    delta = choice.delta
    return bool(
        choice.finish_reason
        or delta.content
        or delta.tool_calls
        or delta.refusal
        # a reasoning model's thinking (an extra field of the delta): output, billed
        or getattr(delta, "reasoning_content", None)
        or getattr(delta, "reasoning", None)
    )


async def _opening(
    chunks: AsyncIterator[Any], headers: Any, redact: Callable[[str], str]
) -> list[ChatCompletionChunk | _End]:
    """Read a stream up to its first chunk that carries something (:func:`_carries`).

    The role-only chunk a server sends first, or a keep-alive, is no answer yet. Of
    the chunks before the first that carries, only the last is kept (it names the
    model): a long run of them (a reasoning phase) must not pile up in memory.

    Args:
        chunks: the stream's chunks, as the SDK hands them on.
        headers: the response's headers, whose content type a refusal names.
        redact: masks the API key in that content type.

    Returns:
        The chunk that carries something (or the stream's end), after the last chunk
        before it, if any.

    Raises:
        _InvalidResponse: the answer is no event stream (a JSON body, a page) and
            held no event.
        _StreamCut: the stream ended before its first chunk that carries something:
            an event stream that ended empty, or after chunks that carry nothing (the
            role-only chunk, keep-alives). Nothing of the answer came: the attempt
            fails as a connection dropped before it, and is retried like one.
        _ErrorInAnswer: the chunk that carries something ends a choice with an error
            (:func:`~._openai_chat._ended_by_error`): no answer came, as when an error
            object comes first. It carries that chunk's usage, if any; the caller reads
            the rest of the stream for a usage after it (:func:`_usage_after_error`).
    """
    held: list[ChatCompletionChunk | _End] = []
    while not held or not _carries(held[-1]):
        held = [*held[-1:], await anext(chunks, _End.END)]
    choices = getattr(held[-1], "choices", None)
    for choice in choices if isinstance(choices, list) else ():
        _ended_by_error(choice, headers, _usage(getattr(held[-1], "usage", None)))
    if held[-1] is _End.END and (len(held) > 1 or _is_event_stream(headers)):
        raise _StreamCut("the stream ended before its answer began")
    if held == [_End.END]:
        # A JSON body, an error page: no server-sent event at all.
        content_type = headers.get("content-type", "none")
        content_type = redact(content_type)[:60]  # redacted, then cut
        raise _InvalidResponse(
            f"the stream request was answered without server-sent events "
            f"(content-type {content_type!r})"
        )
    return held


def _is_events(answer: object, headers: Any) -> bool:
    """Whether ``answer``, the text the SDK hands back for a body that is not JSON, is an
    event stream: its content type says so, or its text opens with a ``data:`` field."""
    if not isinstance(answer, str):
        return False
    return _is_event_stream(headers) or answer.lstrip("\ufeff \t\r\n").startswith("data:")


def _completion_of_events(body: bytes, headers: Any) -> ChatCompletion:
    """The chat completion an event stream ``body`` holds, to a request that asked for none.

    Some compatible servers stream whatever they are asked (``stream: false``
    disregarded). Their events are read as a stream is (:class:`_StreamState`: its text,
    tool calls, the model, ``finish_reason`` and usage merged count by count) and make
    one completion of one choice, which is then read as any completion is.

    Raises:
        _InvalidResponse: an event is not a JSON object, or a chunk is malformed.
        _StreamCut: the events end before a ``finish_reason``: the text is a fragment.
        _ErrorInAnswer: an event is an error object, or ends the answer with one; it
            carries ``headers`` and the usage reported, also after it (billed, as
            :func:`_usage_after_error` reads it in a stream).
    """
    state = _StreamState("")
    texts: list[str] = []
    events = iter(_EventStreamDecoder().iter_bytes(iter((body,))))
    for data in map(_event_json, events):
        if data is None:  # [DONE]
            break
        if data.get("error"):
            raise _ErrorInAnswer(data["error"], headers, _usage_of_rest(events, state.usage))
        try:
            texts += state.add(construct_type_unchecked(value=data, type_=ChatCompletionChunk))
        except _ErrorInAnswer as exc:
            exc.headers, exc.usage = headers, _usage_of_rest(events, state.usage)
            raise
        except (AttributeError, TypeError, ValueError) as exc:
            raise _InvalidResponse(f"a streamed chunk is malformed ({exc})") from exc
    if not state.finish_read:
        raise _StreamCut("the stream ended before the model finished its answer")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if state.calls:
        calls = [(key[0], state.calls[key]) for key in sorted(state.calls)]
        message["tool_calls"] = [
            {
                "id": call.id or f"call_{index}",
                "type": "function",
                # no name: None, which the completion refuses as the stream does
                "function": {"name": call.name or None, "arguments": "".join(call.arguments)},
            }
            for index, call in calls
        ]
    choice = {"index": 0, "message": message, "finish_reason": state.finish_reason}
    completion = {"id": "", "object": "chat.completion", "created": 0, "model": state.model}
    completion |= {"choices": [choice], "usage": state.usage}
    return construct_type_unchecked(value=completion, type_=ChatCompletion)


def _event_json(event: Any) -> dict[str, Any] | None:
    """The JSON object an event holds; ``None`` for ``[DONE]``.

    Raises:
        _InvalidResponse: the event holds no JSON, or JSON that is no object.
    """
    if event.data.startswith("[DONE]"):
        return None
    try:
        data = json.loads(event.data)
    except (ValueError, RecursionError) as exc:
        raise _InvalidResponse("a streamed event is not JSON") from exc
    if not isinstance(data, dict):
        raise _InvalidResponse(f"a streamed event is {_json_kind(data)}, not a JSON object")
    return data


def _usage_of_rest(events: Iterator[Any], usage: Usage | None) -> Usage | None:
    """``usage`` with the counts the ``events`` left after an error report merged in."""
    try:
        for data in map(_event_json, events):
            if data is None:
                break
            chunk = construct_type_unchecked(value=data, type_=ChatCompletionChunk)
            usage = _merged(usage, _usage(chunk.usage))
    except Exception:  # the error before them is the call's failure, not this
        pass
    return usage


def _is_event_stream(headers: Any) -> bool:
    """Whether a response's content type says it is a server-sent event stream."""
    media_type = headers.get("content-type", "").partition(";")[0]
    return bool(media_type.strip().lower() == "text/event-stream")


async def _usage_after_error(
    chunks: AsyncIterator[Any], usage: Usage | None, deadline: float
) -> Usage | None:
    """Read the rest of a stream an error ended, for the usage the server reports after it.

    A router whose upstream fails mid-answer ends the choice with ``finish_reason:
    "error"`` and may send what it billed in a usage chunk after it (OpenRouter), as it
    does after any other finish. Read up to the stream's end, ``deadline`` (a loop time)
    or a failure, whichever comes first, as after any finish: what comes after the error
    is no answer, only its usage is taken (merged into ``usage``, count by count).

    Returns:
        ``usage`` with the counts read after it, or ``usage`` as it was.
    """
    try:
        async with asyncio.timeout_at(deadline):
            async for chunk in chunks:
                if isinstance(chunk, ChatCompletionChunk):
                    usage = _merged(usage, _usage(chunk.usage))
    except Exception:  # the error that ended the answer is the call's failure, not this
        pass
    return usage


def _merged(usage: Usage | None, reported: Usage | None) -> Usage | None:
    """``usage`` with the counts of ``reported`` merged in, a later count replacing an earlier.

    A server may send its usage in parts over chunks; cumulative usage in every chunk
    comes out right, not summed.
    """
    return usage if reported is None else {**(usage or {}), **reported}


#: What the shape of streamed arguments turns on: an escape (a backslash and the character
#: after it, when that came in the same piece), a quote, a bracket.
_SHAPE_TOKENS = re.compile(r'\\.?|["{}\[\]]', re.DOTALL)
_JSON_BLANKS = " \t\n\r"


class _ArgumentsShape:
    """Whether a tool call's arguments, streamed in pieces, may be one whole JSON object.

    Follows the pieces as they come (the brackets outside strings), so that telling costs
    each piece once, not all the arguments so far at every piece: they are decoded only
    when the bracket they open with closes at the very end, and never again once anything
    but blanks follows it (no more text makes them one object then).
    """

    __slots__ = ("_depth", "_escaped", "_has_opened", "_in_string", "_is_broken", "_is_whole")

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escaped = False  # the last piece ended inside a string, in a backslash
        self._has_opened = False  # the first character but blanks was a "{"
        self._is_broken = False  # never one object: it opens otherwise, or text follows
        self._is_whole: bool | None = None  # decoded once it closed; None: not yet

    def feed(self, piece: str) -> None:
        """Take in the next piece of the arguments."""
        if self._is_broken:
            return
        start = 0
        if self._escaped:
            self._escaped, start = False, 1
        if not self._has_opened:
            rest = piece.lstrip(_JSON_BLANKS)
            if not rest:
                return
            if rest[0] != "{":
                self._is_broken = True
                return
            self._has_opened, start = True, len(piece) - len(rest)
        elif self._is_closed:
            self._is_broken = bool(piece.strip(_JSON_BLANKS))
            return
        for match in _SHAPE_TOKENS.finditer(piece, start):
            token = match.group()
            if self._in_string:
                if token == "\\":  # an escape whose character comes in the next piece
                    self._escaped = True
                self._in_string = token != '"'
            elif token == '"':
                self._in_string = True
            elif token in "{[":
                self._depth += 1
            elif token in "}]":
                self._depth -= 1
                if self._depth == 0:
                    self._is_broken = bool(piece[match.end() :].strip(_JSON_BLANKS))
                    return

    @property
    def _is_closed(self) -> bool:
        return self._has_opened and self._depth == 0

    def is_whole(self, arguments: list[str]) -> bool:
        """Whether ``arguments``, the pieces taken in, are one whole JSON object (one Python
        reads: arguments nested past what the JSON writers keep are none, and fail when read)."""
        if self._is_broken or not self._is_closed:
            return False
        if self._is_whole is None:
            try:
                self._is_whole = isinstance(loads_within("".join(arguments)), dict)
            except (ValueError, RecursionError):
                self._is_whole = False
        return self._is_whole


@dataclass
class _StreamedCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    shape: _ArgumentsShape = field(default_factory=_ArgumentsShape)

    def add(self, piece: str) -> None:
        """Take in the next piece of the arguments."""
        self.arguments.append(piece)
        self.shape.feed(piece)


def _is_whole(call: _StreamedCall) -> bool:
    """Whether the arguments of ``call`` so far are a whole JSON object."""
    return call.shape.is_whole(call.arguments)


@dataclass
class _StreamState:
    """What a stream has told so far, besides its text: model, usage, tool call deltas."""

    model: str
    usage: Usage | None = None
    # keyed by (index, generation): a later call a server sends under an index already
    # used (see _key_of) is the next generation of that index
    calls: dict[tuple[int, int], _StreamedCall] = field(default_factory=dict)
    # the generation of each index the server sent, its latest call
    generations: dict[int, int] = field(default_factory=dict)
    # A finish_reason was read: the answer is whole. A usage alone does not say so when
    # a server sends one on every chunk: a stream that ends after it ends a fragment.
    finish_read: bool = False
    # the answer's finish_reason, as the server gave it (``stop``, ``length``, ...)
    finish_reason: str | None = None
    # A usage came with the finish_reason or after it, and the usage read holds both
    # counts: the answer and what it cost are both read (the usage asked for by
    # ``stream_options.include_usage``); nothing the rest of the stream may hold
    # (``[DONE]``) adds to either. A usage sent in parts goes on to its last part.
    is_complete: bool = False
    # The index of the choice that is the answer: the first one streamed. The others (a
    # call that asked for ``n`` > 1) are left out, as a whole completion's are.
    choice: int | None = None

    def add(self, chunk: ChatCompletionChunk) -> list[str]:
        """Take in one chunk; return its text deltas.

        Raises:
            _ErrorInAnswer: the answer's choice ended with an error (its usage is taken in).
        """
        self.model = chunk.model or self.model
        reported = _usage(chunk.usage)
        self.usage = _merged(self.usage, reported)
        texts: list[str] = []
        # no choices at all: a keep-alive some servers send (``data: {}``), nothing to add
        for choice in chunk.choices or ():
            if not self._is_answer(choice):
                continue
            _ended_by_error(choice)
            if choice.finish_reason:
                self.finish_read = True
                self.finish_reason = str(choice.finish_reason)
            delta = choice.delta
            # A model that declines streams a refusal in place of text: it is the answer.
            content = _content_text(delta.content, "a text delta") or _text(
                getattr(delta, "refusal", None), "a refusal delta"
            )
            if content:
                texts.append(content)
            for part in delta.tool_calls or ():
                self._add_call_part(part)
        if reported is not None and self.finish_read:
            usage = self.usage or {}
            self.is_complete = "prompt_tokens" in usage and "completion_tokens" in usage
        return texts

    def _is_answer(self, choice: Any) -> bool:
        """Whether a streamed choice belongs to the answer: the first choice that carries
        something (:func:`_choice_carries`) picks it, by its index.

        A role-only delta picks none (it adds nothing either way: servers send one per
        choice first). A choice without an integer index (a server that leaves it out)
        cannot be told apart from the answer, and is taken as part of it.
        """
        index = getattr(choice, "index", None)
        if type(index) is not int or index == self.choice:
            return True
        if self.choice is not None or not _choice_carries(choice):
            return False
        self.choice = index
        return True

    def _add_call_part(self, part: ChoiceDeltaToolCall) -> None:
        """Take in the delta of one tool call: its id, its name, a piece of its arguments."""
        call_id = _text(part.id, "a tool call's id")
        name = _text(part.function.name, "a tool call's name") if part.function else None
        call = self.calls.setdefault(self._key_of(part.index, call_id, name), _StreamedCall())
        call.id = call_id or call.id
        if part.function is not None:
            # The name comes whole (once, or repeated by some servers); arguments in pieces.
            call.name = name or call.name
            arguments = _arguments_text(part.function.arguments)
            if arguments:
                call.add(arguments)

    def _key_of(self, index: object, call_id: str | None, name: str | None) -> tuple[int, int]:
        """The call a tool call delta belongs to, also when the server leaves out its index
        or sends several calls under one.

        A delta under an index already used, with an id that is not that call's, once
        that call's arguments are a whole JSON object, starts the next call: servers that
        translate another API send parallel calls each whole and each at ``index`` 0 (a
        piece whose id changes before the arguments are whole goes on with its call).
        Some compatible servers send no ``index``: a delta with an id that is not the
        last call's starts the next call; so does one without an id that names another
        tool than the last call, or names it again once the last call's arguments are a
        whole JSON object (a server that sends no ids, or empty ones: one that repeats
        the name on every piece goes on with its call until its arguments are whole);
        any other goes on with the last call.
        """
        if type(index) is int:
            generation = self.generations.get(index)
            if generation is None:
                generation = 0
            else:
                latest = self.calls[index, generation]
                if call_id and latest.id and call_id != latest.id and _is_whole(latest):
                    generation += 1
            self.generations[index] = generation
            return index, generation
        if index is not None:
            raise TypeError(f"a tool call's index is {_json_kind(index)}, not an integer")
        last = max(self.calls, default=None)
        if last is None:
            return 0, 0
        call = self.calls[last]
        if call_id:
            starts = call_id != call.id
        else:
            starts = bool(name and call.name) and (name != call.name or _is_whole(call))
        return (last[0] + 1, 0) if starts else last

    def tool_calls(self) -> list[ToolCall]:
        """Return the assembled tool calls, in index order (each index's in the order sent).

        Raises:
            _InvalidResponse: a call has no name or arguments that are not a JSON object.
        """
        calls: list[ToolCall] = []
        for index, generation in sorted(self.calls):
            call = self.calls[index, generation]
            if not call.name:
                raise _InvalidResponse(f"streamed tool call {index} has no name")
            call_id = call.id or f"call_{index}"
            calls.append(_decoded_call(call_id, call.name, "".join(call.arguments)))
        return calls

    def last_chunk(
        self, attempts: list[LLMAttempt], tool_calls: list[ToolCall] | None
    ) -> StreamChunk:
        """Return the stream's last chunk: done, with its model, usage and attempts.

        Args:
            attempts: the report of every attempt made.
            tool_calls: the assembled tool calls; ``None`` when the call offered no tools.

        Returns:
            ``{"done": True, "model": ..., "attempts": ...}``, with ``tool_calls`` unless
            ``None`` and ``usage`` when the server reported it.
        """
        done: StreamChunk = {"done": True, "model": self.model, "attempts": attempts}
        if tool_calls is not None:
            done["tool_calls"] = tool_calls
        if self.usage is not None:
            done["usage"] = self.usage
        return done
