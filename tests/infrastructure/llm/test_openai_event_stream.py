"""Server-sent event framing a real OpenAI-compatible server may send, over HTTP on 127.0.0.1.

Fields besides ``data`` (``event:``, ``id:``, ``retry:``), blocks without data, and a
byte order mark are read as the WHATWG HTML standard reads an event stream.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from taskforce.errors import LLMProviderError
from taskforce.infrastructure.llm import OpenAICompatibleProvider
from tests.support.raw_upstream import RawUpstream, chunked

pytestmark = pytest.mark.integration

_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    """One ``data:`` event of a streamed chat completion chunk with ``delta``."""
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


_ROLE = _event({"role": "assistant", "content": ""})
_HELLO = _event({"content": "hello"})
_STOP = _event({}, "stop")
_DONE = b"data: [DONE]\n\n"


async def _streamed_text(pieces: list[bytes]) -> str:
    """The text a stream whose body is ``pieces`` (one read each) delivers, whole."""
    async with (
        RawUpstream([_HEAD, *chunked(pieces)], pause=0.01) as upstream,
        OpenAICompatibleProvider("m", upstream.base_url, max_retries=0) as provider,
    ):
        got = [chunk async for chunk in provider.stream([{"role": "user", "content": "hi"}])]
    assert True is got[-1]["done"]
    return "".join(chunk.get("content", "") for chunk in got)


class TestEventFields:
    @pytest.mark.parametrize(
        "before",
        [
            b"retry: 3000\n\n",
            b"event: ping\n\n",
            b"id: 7\n\n",
            b": keep-alive\nevent: ping\nid: 1\nretry: 10\n\n",
        ],
        ids=["retry-alone", "event-alone", "id-alone", "all-fields"],
    )
    async def test_a_block_without_data_is_no_event(self, before: bytes) -> None:
        """A block of fields but no ``data`` (a reconnection time, a ping) dispatches nothing."""
        assert "hello" == await _streamed_text([_ROLE, before, _HELLO, _STOP, _DONE])

    async def test_fields_beside_data_are_read_past(self) -> None:
        """``event:`` and ``id:`` lines before ``data:`` leave the event's data as it is."""
        named = b"event: message\nid: 2\n" + _HELLO
        assert "hello" == await _streamed_text([_ROLE, named, _STOP, _DONE])

    @pytest.mark.parametrize(
        "blank",
        [b"data:\n\n", b"data: \n\n", b"data:  \t\r\n\r\n", b"data:\ndata: \n\n"],
        ids=["empty", "one-space", "blanks-crlf", "two-empty-lines"],
    )
    async def test_an_event_of_blank_data_is_no_event(self, blank: bytes) -> None:
        """``data:`` with nothing (a heartbeat) between two chunks carries no chunk: the
        answer streams on around it, as around the keep-alive ``data: {}``."""
        assert "hello" == await _streamed_text([_ROLE, blank, _HELLO, blank, _STOP, _DONE])

    async def test_an_empty_line_after_an_id_dispatches_nothing(self) -> None:
        """An event id is kept for the stream, but a further empty line is no new event."""
        assert "hello" == await _streamed_text([b"id: 1\n" + _ROLE, b"\n", _HELLO, _STOP, _DONE])


class TestByteOrderMark:
    async def test_a_leading_bom_is_dropped(self) -> None:
        """A UTF-8 BOM before the first field leaves the first event whole."""
        assert "hello" == await _streamed_text([b"\xef\xbb\xbf" + _HELLO, _STOP, _DONE])

    async def test_a_bom_split_over_reads_is_dropped(self) -> None:
        """The BOM's bytes arriving in two reads are dropped all the same."""
        assert "hello" == await _streamed_text([b"\xef", b"\xbb\xbf" + _HELLO, _STOP, _DONE])


class TestEndBeforeTheAnswer:
    @pytest.mark.parametrize(
        "pieces",
        [[], [b": keep-alive\n\n"], [_ROLE], [_ROLE, b": keep-alive\n\n"]],
        ids=["empty", "keep-alive", "role-only", "role-and-keep-alive"],
    )
    async def test_an_end_before_the_first_chunk_that_carries_is_retried(
        self, pieces: list[bytes]
    ) -> None:
        """An event stream that ends cleanly before any text, tool call or finish (empty,
        or after its role-only chunk and keep-alives) gave nothing of the answer: a
        dropped connection before it, retried like one."""
        async with (
            RawUpstream([_HEAD, *chunked(pieces)]) as upstream,
            OpenAICompatibleProvider(
                "m", upstream.base_url, max_retries=1, backoff_base_seconds=0.01
            ) as provider,
        ):
            with pytest.raises(LLMProviderError, match="before its answer began") as info:
                async for _ in provider.stream([{"role": "user", "content": "hi"}]):
                    pass
            assert 2 == len(upstream.targets)
        assert "connection" == info.value.error_type
        assert ["connection", "connection"] == [a.error_type for a in info.value.attempts]
