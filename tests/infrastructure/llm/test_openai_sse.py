"""The event stream decoder: the WHATWG HTML standard's reading of server-sent events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from taskforce.infrastructure.llm._openai_error_shapes import _handed_on
from taskforce.infrastructure.llm._openai_sse import _EventStreamDecoder


def _events(*reads: bytes) -> list[tuple[str | None, str, str | None, int | None]]:
    """The events (event type, data, id, retry) a stream read as ``reads`` holds."""
    decoded = _EventStreamDecoder().iter_bytes(iter(reads))
    return [(e.event, e.data, e.id, e.retry) for e in decoded]


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_lines_end_at_lf_crlf_or_cr(end: bytes) -> None:
    """Each line ending the standard allows ends a line; an empty line ends the event."""
    stream = b"data: a" + end + b"data:b" + end + end + b"data: c" + end + end
    assert [(None, "a\nb", None, None), (None, "c", None, None)] == _events(stream)


def test_a_crlf_split_over_reads_is_one_line_end() -> None:
    """A CR closing one read and an LF opening the next make no empty line between."""
    assert [(None, "a\nb", None, None)] == _events(b"data: a\r", b"\ndata: b\r", b"\n\r\n")


def test_a_character_split_over_reads_is_decoded_whole() -> None:
    """A UTF-8 character whose bytes arrive in two reads comes out whole."""
    encoded = "data: é\n\n".encode()
    assert [(None, "é", None, None)] == _events(encoded[:7], encoded[7:])


def test_fields_comments_and_blocks_without_data() -> None:
    """Comments are skipped; a block without data dispatches nothing; the id carries on."""
    stream = b": hi\n\nretry: 5\n\nevent: ping\nid: 3\n\n\nevent: x\ndata: d\n\ndata: e\n\n"
    assert [("x", "d", "3", 5), (None, "e", "3", 5)] == _events(stream)


def test_odd_fields_are_ignored() -> None:
    """A retry that is no number, an id with a NUL and unknown fields change nothing."""
    stream = b"retry: 1e3\nid: a\0b\nfoo: bar\ndata\ndata: d\n\n"
    assert [(None, "\nd", None, None)] == _events(stream)


def test_an_event_of_blank_data_is_no_event() -> None:
    """Data that is empty or blank (``data:`` alone, a heartbeat) dispatches nothing, where
    the standard dispatches an event no JSON decoder reads; the id still carries on."""
    stream = b"data:\n\nid: 4\ndata: \t\n\ndata\ndata: \n\ndata: e\n\n"
    assert [(None, "e", "4", None)] == _events(stream)


def test_an_event_the_stream_ends_inside_is_dropped() -> None:
    """No empty line after the last data: that event is not dispatched."""
    assert [(None, "a", None, None)] == _events(b"data: a\n\ndata: b\n")


def test_one_leading_bom_is_dropped() -> None:
    """A BOM opening the stream is dropped; a second one is part of the field name."""
    bom = "\ufeff".encode()
    assert [(None, "a", None, None)] == _events(bom[:1], bom[1:] + b"data: a\n\n")
    assert [] == _events(bom + bom + b"data: a\n\n")


async def test_async_reads_give_the_same_events() -> None:
    """``aiter_bytes`` reads as ``iter_bytes`` does."""

    async def reads() -> AsyncIterator[bytes]:
        for read in (b"data: a\r", b"\n\r\n", b"data: b\n\n"):
            yield read

    events = [e.data async for e in _EventStreamDecoder().aiter_bytes(reads())]
    assert ["a", "b"] == events


def test_a_bare_json_error_line_is_an_event_of_its_own() -> None:
    """An error written as a JSON line, not as a field (Ollama's mid-stream error), is an
    event: after a whole event, and ending one under way (its data lines came whole)."""
    error = b'{"error": "the model failed"}'
    assert [(None, "a", None, None), (None, error.decode(), None, None)] == _events(
        b"data: a\n\n" + error + b"\n"
    )
    assert [(None, "b", None, None), (None, error.decode(), None, None)] == _events(
        b"data: b\n" + error + b"\n"
    )


def test_a_bare_json_error_line_the_stream_ends_inside_is_an_event() -> None:
    """The last line, not ended, is an event if it is a bare error line (a JSON error
    body), and the event under way is still not dispatched."""
    error = '{"error": {"message": "overloaded"}}'
    assert [(None, error, None, None)] == _events(error.encode())
    assert [(None, error, None, None)] == _events(b"data: a\n", error.encode())
    assert [] == _events(b'{"id": 1}')


#: A bare line that is a JSON object nested deeper than Python decodes.
_NESTED = b'{"error": ' * 100_000 + b"1" + b"}" * 100_000


@pytest.mark.parametrize(
    "line",
    [b'{"id": 1}', b'{"error": null}', b'{"error": ""}', b"{not json", _NESTED],
    ids=["no-error", "null", "empty", "not-json", "nested-too-deeply"],
)
def test_another_bare_line_is_ignored(line: bytes) -> None:
    """A bare line that is no JSON object with an error is ignored, as the standard says."""
    assert [(None, "a", None, None)] == _events(line + b"\ndata: a\n\n")


def test_a_unified_error_chunk_is_handed_on_with_the_handed_on() -> None:
    """OpenRouter's mid-stream error (the error at the top, the choice ended by it) is a
    chunk whose choice carries the error; a choice's own error is kept."""
    error = {"code": 502, "message": "down"}
    ended = {"index": 0, "delta": {}, "finish_reason": "error"}
    own = {**ended, "index": 1, "error": {"code": 400}}
    data = json.dumps({"id": "c", "error": error, "choices": [ended, own], "usage": {"a": 1}})

    handed = json.loads(_handed_on(data))

    expected = [{**ended, "error": error}, own]
    assert {"id": "c", "choices": expected, "usage": {"a": 1}} == handed


@pytest.mark.parametrize(
    "data",
    [
        '{"choices": [], "model": "m"}',
        '{"error": {"code": 429}}',
        '{"error": {"code": 429}, "choices": [{"index": 0, "finish_reason": null}]}',
        '{"error": null, "choices": [{"index": 0, "finish_reason": "error"}]}',
        '["error"]',
        '{"error" nope',
    ],
    ids=["no-error", "no-choices", "no-choice-ended", "error-null", "no-object", "not-json"],
)
def test_anything_else_is_handed_on_as_it_came(data: str) -> None:
    assert data == _handed_on(data)


def test_an_error_given_as_text_with_its_type_beside_it_is_an_error_object() -> None:
    """TGI's error (its text, its ``error_type`` beside it) is handed on as an error object
    with that type; text without a type beside it is handed on as it came."""
    data = '{"error": "Model is overloaded", "error_type": "overloaded"}'
    expected = {"error": {"message": "Model is overloaded", "type": "overloaded"}}
    assert expected == json.loads(_handed_on(data))
    assert '{"error": "the model failed"}' == _handed_on('{"error": "the model failed"}')


def test_a_whole_completion_is_one_chunk_at_the_end() -> None:
    """A body that is a whole chat completion (pretty-printed, over several reads), not an
    event stream, is one event: a chunk whose choice's delta is the message, the tool calls
    given their index, the finish_reason and usage kept."""
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    completion = {
        "id": "x",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi", "tool_calls": [call]},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    body = json.dumps(completion, indent=2).encode()

    [(event, data, _, _)] = _events(b"\n" + body[:9], body[9:])

    chunk = json.loads(data)
    assert (None, "chat.completion.chunk") == (event, chunk["object"])
    assert [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": "hi", "tool_calls": [{**call, "index": 0}]},
            "finish_reason": "stop",
        }
    ] == chunk["choices"]
    assert completion["usage"] == chunk["usage"]


@pytest.mark.parametrize(
    "body",
    [b'{"id": "x", "choices": []}', b'{"choices": [{"text": "hi"}]}', b"{not json", b"[1]"],
    ids=["no-choices", "no-message", "not-json", "not-an-object"],
)
def test_a_json_body_that_is_no_completion_is_no_event(body: bytes) -> None:
    """A JSON body without a choice that holds a message is no event (the request then
    fails as answered without server-sent events)."""
    assert [] == _events(body)
