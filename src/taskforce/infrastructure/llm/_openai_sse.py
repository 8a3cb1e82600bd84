"""Reading a server-sent event stream as the WHATWG HTML standard does, for the SDK's streams.

The SDK's own reader hands on a block of ``event:``, ``id:`` or ``retry:`` fields
without ``data`` as an event with empty data (which no JSON decoder reads), and keeps
a leading byte order mark in the first field's name (which loses the first event). A
server may send both (a reconnection time first, a named ping), so its streams are
read here instead: the client below makes the SDK use :class:`_EventStreamDecoder`.

Two departures from the standard. An event whose data is empty or blank (``data:``
alone, sent as a heartbeat) is no event: the standard dispatches it with empty data,
which no JSON decoder reads, so one such event would fail an answer that streams on
around it; it carries no chunk, as the keep-alive ``data: {}`` carries none. And a
line that is a JSON object with an ``error`` member, not a field, is an event of its
own (the standard ignores it as a field of an odd name). Ollama's own API ends a
stream that fails mid-answer with such a line, as newline-delimited JSON, not as an
event, and a 2xx JSON error body is one such line; read so, the error reaches the
SDK, which raises it as an error object inside the stream, read by what it says (as
the same body is in a whole completion), not as a stream that ended before its
answer or one without events. What an event holds of an
error is handed on as :func:`~._openai_error_shapes._handed_on` puts it.

And a body that is a whole chat completion, not an event stream (a server that does not
stream and disregards ``stream: true``), is read as one chunk that holds all of it
(:func:`_completion_as_chunk`): its text, tool calls, ``finish_reason`` and usage. The
answer is whole and billed; failing it would lose both.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
from openai._streaming import ServerSentEvent

from taskforce.infrastructure.llm._openai_error_shapes import _handed_on, _is_error_object

__all__ = ["_EventStreamClient", "_EventStreamDecoder"]

#: A line ends at CRLF, LF or CR.
_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = "\ufeff"
#: What a blank data line holds: JSON's white space within a line.
_BLANKS = " \t"


class _EventStreamDecoder:
    """Turns the bytes of an event stream into its events, a read at a time.

    Lines end at CRLF, LF or CR, also when a CRLF is split over two reads. A line is
    decoded as UTF-8 once whole, so a character split over reads is no matter. One
    leading BOM is dropped; a block whose fields hold no ``data``, or only blank data,
    dispatches nothing;
    an event the stream ends inside is not dispatched. The last event id is kept for
    the stream, as the standard asks, but makes no event by itself. A bare JSON line
    with an ``error`` member is an event (see the module's docstring), also the last
    one, not ended (a JSON error body). A body that opens with ``{`` and is a whole chat
    completion is one event at its end (:func:`_completion_as_chunk`).
    """

    def __init__(self) -> None:
        self._line = bytearray()  # the line read so far, not ended yet
        self._after_cr = False  # the last read ended in CR: an LF first in the next one is its
        self._is_first_line = True
        self._event = ""
        self._data: list[str] = []
        self._last_id: str | None = None
        self._retry: int | None = None
        # Whether the body opened with "{": None until its first byte that is not blank.
        self._is_json: bool | None = None
        # The body so far, kept only when it opened with "{" (capped as every answer is)
        self._body = bytearray()

    def iter_bytes(self, iterator: Iterator[bytes]) -> Iterator[ServerSentEvent]:
        """Yield the events of a stream read with ``iterator``."""
        for chunk in iterator:
            yield from self._feed(chunk)
        yield from self._end()

    async def aiter_bytes(self, iterator: AsyncIterator[bytes]) -> AsyncIterator[ServerSentEvent]:
        """Yield the events of a stream read with ``iterator``."""
        async for chunk in iterator:
            for event in self._feed(chunk):
                yield event
        for event in self._end():
            yield event

    def _end(self) -> list[ServerSentEvent]:
        """The event the stream's last line, not ended, makes: one only if it is a bare
        error line (a JSON error body ends so); the event under way is not dispatched."""
        line = self._line.decode("utf-8", errors="replace")
        self._line.clear()
        if line.startswith("{") and _is_error_object(line):
            self._data.clear()
            return self._error_line(line)
        if self._is_json:
            chunk = _completion_as_chunk(bytes(self._body))
            if chunk is not None:
                return [ServerSentEvent(data=chunk)]
        return []

    def _feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Take in one read; return the events it completes."""
        if not chunk:
            return []
        if self._is_json is None:
            opening = chunk.removeprefix(_BOM.encode()).lstrip()
            if opening:
                self._is_json = opening.startswith(b"{")
        if self._is_json:
            self._body += chunk
        start = 0
        if self._after_cr and chunk[:1] == b"\n":
            start = 1  # the rest of a CRLF split over two reads
        self._after_cr = False
        events: list[ServerSentEvent] = []
        for match in _LINE_END.finditer(chunk, start):
            self._line += chunk[start : match.start()]
            line = self._line.decode("utf-8")
            self._line.clear()
            start = match.end()
            if line.startswith("{") and _is_error_object(line):
                # An error written as a bare JSON line: an event of its own, after the
                # one it ends, if any (that came whole before it).
                events += self._error_line(line)
                continue
            event = self._take(line)
            if event is not None:
                events.append(event)
        self._line += chunk[start:]
        self._after_cr = chunk.endswith(b"\r")
        return events

    def _take(self, line: str) -> ServerSentEvent | None:
        """Process one line; return the event it dispatches, if any."""
        if self._is_first_line:
            self._is_first_line = False
            line = line.removeprefix(_BOM)
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment: a keep-alive
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _error_line(self, line: str) -> list[ServerSentEvent]:
        """End the event under way, if any, and dispatch ``line`` as an event of its own."""
        ended = self._dispatch()
        data = _handed_on(line)
        error = ServerSentEvent(event=None, data=data, id=self._last_id, retry=self._retry)
        return [error] if ended is None else [ended, error]

    def _dispatch(self) -> ServerSentEvent | None:
        """End the block: its event when it holds data that is not blank; nothing otherwise."""
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not any(line.strip(_BLANKS) for line in data):
            return None
        return ServerSentEvent(
            event=event or None,
            data=_handed_on("\n".join(data)),
            id=self._last_id,
            retry=self._retry,
        )


def _completion_as_chunk(body: bytes) -> str | None:
    """The chunk that holds all of a whole chat completion ``body``, as JSON; else ``None``.

    A completion is a JSON object with no ``error`` and a list of choices, each with a
    ``message`` object; each choice's message becomes its ``delta`` (the tool calls given
    their ``index``), the rest of the choice (``finish_reason``) kept, and the usage with it.
    Anything else (no choices, an error object, no JSON) is left to be read as it is.
    """
    try:
        completion = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(completion, dict) or completion.get("error"):
        return None
    choices = completion.get("choices")
    if not (isinstance(choices, list) and choices):
        return None
    streamed: list[dict[str, Any]] = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            return None
        delta = dict(message)
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            delta["tool_calls"] = [
                {**call, "index": index} if isinstance(call, dict) else call
                for index, call in enumerate(calls)
            ]
        kept = {name: value for name, value in choice.items() if name != "message"}
        streamed.append({**kept, "delta": delta})
    return json.dumps({**completion, "object": "chat.completion.chunk", "choices": streamed})


class _EventStreamClient(openai.AsyncOpenAI):
    """The SDK's client, reading every stream with :class:`_EventStreamDecoder`."""

    def _make_sse_decoder(self) -> _EventStreamDecoder:
        return _EventStreamDecoder()
