"""``api.max_header_bytes``: a request head over the limit gets a 431 its client can read.

Before, uvicorn's h11 protocol refused a head only while it was incomplete and over
16 KiB, wrote a 400 and closed with the client's input unread: the kernel reset the
connection and the client saw ECONNRESET, no status. A head whole in one read passed.
"""

from __future__ import annotations

import asyncio
import json

import h11
import httpx
import pytest
import structlog

from taskforce.api._head_limit import head_bytes
from taskforce.config import Settings
from tests.observability.metric_samples import series
from tests.support.taskforce_server import GUARD_SECONDS, serving, until_closed

DEFAULT_LIMIT = 64 * 1024
HEAD = b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"


def _head_of(total: int) -> bytes:
    """A request head of ``total`` bytes: ``HEAD``, one padding field and the blank line."""
    pad = total - len(HEAD) - len(b"X-Pad: \r\n\r\n")
    return HEAD + b"X-Pad: " + b"a" * pad + b"\r\n\r\n"


def _answer(raw: bytes) -> tuple[int, dict[bytes, bytes], dict[str, str]]:
    """Split a response with a ``content-length`` into status, headers and JSON body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines)
    assert int(headers[b"content-length"]) == len(body)
    return int(status_line.split(b" ")[1]), headers, json.loads(body)


async def _trickled(port: int, sent: bytes, piece: int = 1024) -> bytes:
    """Send ``sent`` a ``piece`` at a time, stopping once the server has answered; return that."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.ensure_future(reader.read())
    try:
        for start in range(0, len(sent), piece):
            if answer.done():
                break
            writer.write(sent[start : start + piece])
            await writer.drain()
            await asyncio.sleep(0.001)  # each piece its own read on the server
        return await asyncio.wait_for(answer, GUARD_SECONDS)
    finally:
        answer.cancel()
        writer.close()


class TestHeadBytes:
    def test_counts_a_head_as_written(self) -> None:
        """The size of a parsed head is the length of its ``Name: value`` CRLF text."""
        raw = _head_of(5000)
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(raw)
        event = conn.next_event()
        assert isinstance(event, h11.Request)
        assert len(raw) == head_bytes(event)


@pytest.mark.integration
class TestOversizedHead:
    @pytest.mark.parametrize(
        "sent",
        [
            pytest.param(HEAD + b"X-A: " + b"a" * 200_000 + b"\r\n\r\n", id="200-kb-field"),
            pytest.param(
                HEAD + b"".join(b"X-%d: v\r\n" % i for i in range(20_000)) + b"\r\n",
                id="20000-fields",
            ),
            pytest.param(_head_of(DEFAULT_LIMIT + 1), id="one-byte-over"),
        ],
    )
    async def test_head_sent_whole_gets_a_readable_431(
        self, settings: Settings, sent: bytes
    ) -> None:
        """A head over the limit in one send: the client reads a 431 and its JSON reason."""
        async with serving(settings) as (port, _):
            status, headers, body = _answer(await until_closed(port, sent))
        assert 431 == status
        assert b"close" == headers[b"connection"]
        assert {"detail": f"request headers exceed {DEFAULT_LIMIT} bytes"} == body

    async def test_head_trickled_gets_a_readable_431(self, settings: Settings) -> None:
        """A head over the limit sent slowly: the client reads the 431, not a reset."""
        sent = HEAD + b"X-A: " + b"a" * 200_000 + b"\r\n\r\n"
        async with serving(settings) as (port, _):
            status, _, body = _answer(await _trickled(port, sent))
        assert 431 == status
        assert {"detail": f"request headers exceed {DEFAULT_LIMIT} bytes"} == body

    async def test_head_at_the_limit_is_served(self, settings: Settings) -> None:
        """A head of exactly the limit is served, sent whole or trickled."""
        async with serving(settings) as (port, _):
            whole = await until_closed(port, _head_of(DEFAULT_LIMIT))
            trickled = await _trickled(port, _head_of(DEFAULT_LIMIT), piece=4096)
        assert whole.startswith(b"HTTP/1.1 200 ")
        assert trickled.startswith(b"HTTP/1.1 200 ")

    async def test_server_stays_healthy(self, settings: Settings) -> None:
        """After refusing heads, the server answers the next request as usual."""
        async with serving(settings) as (port, _):
            for _ in range(3):
                await until_closed(port, _head_of(200_000))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                health = await client.get("/health")
        assert 200 == health.status_code

    async def test_setting_sets_the_limit(self, settings: Settings) -> None:
        """``api.max_header_bytes`` moves the limit: a 4 KB head is refused under 2 KiB."""
        api = settings.api.model_copy(update={"max_header_bytes": 2048})
        small = settings.model_copy(update={"api": api})
        async with serving(small) as (port, _):
            status, _, body = _answer(await until_closed(port, _head_of(4096)))
            served = await until_closed(port, _head_of(2048))
        assert 431 == status
        assert {"detail": "request headers exceed 2048 bytes"} == body
        assert served.startswith(b"HTTP/1.1 200 ")

    async def test_refusal_is_logged_not_counted(self, settings: Settings) -> None:
        """The 431 is logged as ``http.request.refused``; it comes before any route: uncounted."""
        async with serving(settings) as (port, app):
            with structlog.testing.capture_logs() as logs:
                await until_closed(port, _head_of(200_000))
            counted = series(app.state.container.metrics, "taskforce_http_requests_total")
        refused = [log for log in logs if log["event"] == "http.request.refused"]
        assert [(431, "http", DEFAULT_LIMIT)] == [
            (log["status_code"], log["category"], log["max_header_bytes"]) for log in refused
        ]
        assert [] == [labels for labels in counted if labels["status_code"] == "431"]


@pytest.mark.integration
class TestMalformedRequest:
    async def test_invalid_request_gets_a_readable_400(self, settings: Settings) -> None:
        """A request h11 cannot parse, more input behind it: the client reads its 400."""
        sent = b"GET /health HTTP/1.1\r\nHost: t\r\nno colon here\r\n\r\n" + b"x" * 200_000
        async with serving(settings) as (port, _):
            status, headers, body = _answer(await until_closed(port, sent))
        assert 400 == status
        assert b"close" == headers[b"connection"]
        assert {"detail": "invalid HTTP request"} == body

    async def test_a_body_framed_twice_is_a_400(self, settings: Settings) -> None:
        """Content-Length and Transfer-Encoding together: a 400, the connection closed, so
        what a proxy reading the length took for the body's end is never run as a request
        (request smuggling); logged as refused, not counted, no mission."""
        body = b"0\r\n\r\nGET /api/v1/tools HTTP/1.1\r\nHost: t\r\n\r\n"
        sent = (
            b"POST /api/v1/execute HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(body) + body
        )
        async with serving(settings) as (port, app):
            with structlog.testing.capture_logs() as logs:
                raw = await until_closed(port, sent)
            counted = series(app.state.container.metrics, "taskforce_http_requests_total")
        status, headers, answer = _answer(raw)
        assert (400, b"close", {"detail": "invalid HTTP request"}) == (
            status,
            headers[b"connection"],
            answer,
        )
        assert 1 == raw.count(b"HTTP/1.1 ")  # the smuggled GET got no answer
        refused = [log for log in logs if log["event"] == "http.request.refused"]
        assert [400] == [log["status_code"] for log in refused]
        assert [] == counted
