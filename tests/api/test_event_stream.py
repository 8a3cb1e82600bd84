"""``EventStreamResponse``: a Server-Sent Events stream that idles sends keep-alive comments.

Waits are conditions (a comment was sent, the gate tool was entered), never guesses
about durations; every timeout here is only a guard against a test that would hang.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.types import Message

from taskforce.api._event_stream import KEEP_ALIVE, EventStreamResponse
from taskforce.api.server import create_app
from taskforce.application import executor as executor_module
from taskforce.application.container import build_container
from taskforce.config import Settings
from tests.api.conftest import parse_sse
from tests.api.test_admission import EXECUTE, GATED, GUARD_SECONDS, STREAM, gated_server, until
from tests.api.test_metrics_e2e import scrape, total
from tests.api.test_read_deadline import stream_request
from tests.api.test_serving import SLOW_MISSION, missions_total
from tests.support.taskforce_server import serving

#: Short enough for a test to see comments at once, long past one loop turn.
KEEPALIVE_SECONDS = 0.05
_TICKER = "taskforce-sse-keep-alive"


class _Recorder:
    """An ASGI ``send`` that keeps every message and says when a comment went out."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.commented = asyncio.Event()

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
        if message.get("body") == KEEP_ALIVE:
            self.commented.set()

    def bodies(self) -> list[tuple[bytes, bool]]:
        """The body messages: (body, more_body)."""
        return [
            (m["body"], m["more_body"]) for m in self.messages if m["type"] == "http.response.body"
        ]


async def _no_receive() -> Message:
    await asyncio.Event().wait()  # the client never leaves
    raise AssertionError("unreachable")


async def _tickers() -> list[asyncio.Task[Any]]:
    """The comment tasks still running, once those cancelled had their turn to end."""
    await asyncio.sleep(0)
    return [t for t in asyncio.all_tasks() if t.get_name() == _TICKER and not t.done()]


class TestEventStreamResponse:
    async def test_comments_fill_an_idle_gap_and_never_follow_the_end(self) -> None:
        """While the body waits, comments go out; none after the last event or the end."""
        send = _Recorder()

        async def events() -> AsyncIterator[bytes]:
            yield b"event: a\ndata: {}\n\n"
            await send.commented.wait()  # idle until a comment was sent
            yield b"event: b\ndata: {}\n\n"

        response = EventStreamResponse(events(), keepalive_seconds=KEEPALIVE_SECONDS)
        async with asyncio.timeout(GUARD_SECONDS):
            await response({"type": "http", "asgi": {"spec_version": "2.4"}}, _no_receive, send)
        bodies = send.bodies()
        assert (b"event: a\ndata: {}\n\n", True) == bodies[0]
        assert [(b"event: b\ndata: {}\n\n", True), (b"", False)] == bodies[-2:]
        assert bodies[1:-2] and all((KEEP_ALIVE, True) == body for body in bodies[1:-2])
        assert "text/event-stream" == dict(response.headers)["content-type"].split(";")[0]
        assert [] == await _tickers()

    async def test_a_cancelled_stream_stops_its_comments(self) -> None:
        """A stream cancelled while it idles (a client gone, a shutdown) sends nothing more."""
        send = _Recorder()

        async def events() -> AsyncIterator[bytes]:
            yield b"event: a\ndata: {}\n\n"
            await asyncio.Event().wait()  # a mission that never ends

        response = EventStreamResponse(events(), keepalive_seconds=KEEPALIVE_SECONDS)
        scope = {"type": "http", "asgi": {"spec_version": "2.4"}}
        task = asyncio.create_task(response(scope, _no_receive, send))
        async with asyncio.timeout(GUARD_SECONDS):
            await send.commented.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        sent = len(send.messages)
        assert [] == await _tickers()
        await asyncio.sleep(KEEPALIVE_SECONDS * 4)  # comments would have come meanwhile
        assert sent == len(send.messages)
        assert all(more for _, more in send.bodies())  # the end was never sent

    @pytest.mark.parametrize(("seconds", "is_kept_alive"), [(0.0, False), (15.0, True)])
    async def test_zero_turns_the_comments_off(self, seconds: float, is_kept_alive: bool) -> None:
        """With 0 no comment task runs beside the stream; with a number one does."""
        seen: list[bool] = []

        async def events() -> AsyncIterator[bytes]:
            seen.append(bool(await _tickers()))
            yield b"event: a\ndata: {}\n\n"

        send = _Recorder()
        response = EventStreamResponse(events(), keepalive_seconds=seconds)
        await response({"type": "http", "asgi": {"spec_version": "2.4"}}, _no_receive, send)
        assert [is_kept_alive] == seen
        assert [(b"event: a\ndata: {}\n\n", True), (b"", False)] == send.bodies()


@pytest.mark.integration
class TestKeepAliveOnAServer:
    async def test_a_stream_waiting_on_a_tool_gets_comments_then_its_result(
        self, settings: Settings
    ) -> None:
        """While a tool call holds the mission, `: keep-alive` comments arrive; then the
        events go on (tokens included), the result last, counted as one 200 and one
        completed mission, and the mission's slot is free again."""
        with gated_server(settings, stream_keepalive_seconds=KEEPALIVE_SECONDS) as (url, gate):
            async with httpx.AsyncClient(base_url=url, timeout=GUARD_SECONDS) as client:
                async with client.stream("POST", STREAM, json={"mission": GATED}) as response:
                    chunks = response.aiter_text()
                    body = ""
                    async with asyncio.timeout(GUARD_SECONDS):
                        async for chunk in chunks:
                            body += chunk
                            if body.count(KEEP_ALIVE.decode()) >= 2:
                                break
                    assert 1 == gate.entered  # the comments came while the tool waited
                    gate.open()
                    body += "".join([chunk async for chunk in chunks])
                await until(lambda: _in_flight(client, 0))
                samples = await scrape(client)
        assert 200 == response.status_code
        assert response.headers["content-type"].startswith("text/event-stream")
        blocks = body.removesuffix("\n\n").split("\n\n")
        comments = [i for i, block in enumerate(blocks) if block.startswith(":")]
        assert {": keep-alive"} == {blocks[i] for i in comments}
        events = parse_sse(body)
        kinds = [kind for kind, _ in events]
        assert "token" in kinds
        assert ("result", "completed") == (kinds[-1], events[-1][1]["result"]["status"])
        # between events, never after the result: the last block is the result
        assert blocks[-1].startswith("event: result")
        assert 0 < comments[0] and comments[-1] < len(blocks) - 1
        assert 1 == total(samples, "taskforce_http_requests_total", route=STREAM)
        assert 1 == total(samples, "taskforce_http_requests_total", status_code="200", route=STREAM)
        assert 1 == total(samples, "taskforce_missions_total", status="completed")


async def _in_flight(client: httpx.AsyncClient, count: int) -> bool:
    """Whether ``count`` missions hold a slot (``/health``)."""
    health = (await client.get("/health")).json()
    return bool(count == health["missions"]["in_flight"])


def _whatwg_events(body: bytes) -> list[tuple[str, str]]:
    """The (type, data) of each event, parsed as the WHATWG SSE spec says: UTF-8, lines
    ended by CRLF, LF or CR, comments skipped, an event dispatched at a blank line; the
    text after the last blank line is no event (a stream cut there loses it)."""
    events: list[tuple[str, str]] = []
    kind, data = "", list[str]()
    for line in re.split(r"\r\n|\r|\n", body.decode("utf-8")):
        if not line:
            if data:
                events.append((kind or "message", "\n".join(data)))
            kind, data = "", list[str]()
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)
    return events


#: Line ends of every kind (the SSE spec's CR, LF, CRLF; Unicode's NEL, LS, PS) and
#: characters beyond ASCII, for a tool's argument that its events repeat.
_UNRULY = "a\rb\nc\r\nd\x85e\u2028f\u2029g é ✓ 😀"


@pytest.mark.integration
class TestOnTheWire:
    async def test_every_event_is_whole_whatever_its_text(self, client: httpx.AsyncClient) -> None:
        """Line ends of any kind in a tool's arguments stay inside their event's one
        ``data`` line of JSON, for an EventSource parser (the spec's CR, LF and CRLF only)
        and for a client that splits lines as ``str.splitlines`` does (httpx's
        ``aiter_lines``): both read the same events, the result last."""
        arguments = json.dumps({"path": _UNRULY, "content": _UNRULY})
        mission = f"tool:file_write {arguments}\ntool:nope {{}}\ndone"
        body = (await client.post(STREAM, json={"mission": mission})).content
        lines = body.decode("utf-8").splitlines()  # as httpx's aiter_lines splits
        events = [(kind, json.loads(data)) for kind, data in _whatwg_events(body)]
        assert body.endswith(b"\n\n")
        assert "result" == events[-1][0]
        call = next(data for kind, data in events if kind == "tool_call")
        assert {"path": _UNRULY, "content": _UNRULY} == call["args"]
        assert [f"event: {kind}" for kind, _ in events] == lines[0::3]
        assert [json.dumps(data, ensure_ascii=False) for _, data in events] == [
            json.dumps(json.loads(line.removeprefix("data: ")), ensure_ascii=False)
            for line in lines[1::3]
        ]
        assert {""} == set(lines[2::3])

    async def test_the_stream_ignores_accept_and_tells_proxies_not_to_buffer(
        self, client: httpx.AsyncClient
    ) -> None:
        """An ``Accept`` without ``text/event-stream`` still gets the stream (RFC 9110 lets
        a server disregard it; ``/api/v1/execute`` is the JSON answer), with the headers a
        proxy needs: no caching, no buffering (nginx's ``X-Accel-Buffering``)."""
        headers = {"Accept": "application/json"}
        response = await client.post(STREAM, json={"mission": "hi"}, headers=headers)
        assert 200 == response.status_code
        assert "result" == parse_sse(response.text)[-1][0]
        assert ("text/event-stream; charset=utf-8", "no-cache", "no") == (
            response.headers["content-type"],
            response.headers["cache-control"],
            response.headers["x-accel-buffering"],
        )

    @pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
    async def test_only_post_starts_a_stream(self, client: httpx.AsyncClient, method: str) -> None:
        """Other methods get a 405 that names POST, and start no mission."""
        response = await client.request(method, STREAM)
        samples = await scrape(client)
        assert (405, "POST") == (response.status_code, response.headers["allow"])
        assert 0 == total(samples, "taskforce_missions_total")

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    @pytest.mark.parametrize(
        "mission",
        [
            'tool:calculator {"expression": "6*7"}\ndone',
            'tool:calculator {"expression": "1/0"}',
            "tool:nope {}\ndone",
            'tool:calculator {"expression": "1+1"}\nllm:error',
            "llm:fail auth\nhi",
        ],
    )
    async def test_the_result_event_is_the_plain_answer(
        self, client: httpx.AsyncClient, agent_type: str, mission: str
    ) -> None:
        """The ``result`` event holds what ``/api/v1/execute`` answers for the same mission
        (status, error, error_type, steps, tool calls), but its own ids."""
        body = {"mission": mission, "agent_type": agent_type}
        plain = (await client.post(EXECUTE, json=body)).json()
        streamed = parse_sse((await client.post(STREAM, json=body)).text)[-1][1]["result"]
        for answer in (plain, streamed):
            del answer["session_id"], answer["mission_id"]
        assert plain == streamed


async def _leave_at(url: str, body: dict[str, Any], seen: str | None) -> None:
    """POST ``body`` to the stream route; close the connection once ``seen`` arrived
    (``None``: at once, before any byte of the answer)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(stream_request(body))
    await writer.drain()
    if seen is not None:
        await reader.readuntil(seen.encode())
    writer.close()
    await writer.wait_closed()


async def _counted(client: httpx.AsyncClient) -> bool:
    """Whether a mission is counted and none is in progress any more."""
    samples = await scrape(client)
    return 1 == total(samples, "taskforce_missions_total") and not total(
        samples, "taskforce_missions_in_progress"
    )


@pytest.mark.integration
class TestAClientThatLeaves:
    @pytest.mark.parametrize(
        ("mission", "seen", "status"),
        [
            (GATED, None, "cancelled"),
            (GATED, "event: tool_call", "cancelled"),
            ("hello", "event: result", "completed"),
        ],
        ids=["before the first event", "in a tool call", "after the result"],
    )
    async def test_its_mission_is_counted_once_as_it_ended(
        self, settings: Settings, mission: str, seen: str | None, status: str
    ) -> None:
        """Wherever the client leaves, its mission ends once: counted, recorded and given
        its slot back as it ended (cancelled, unless it had ended before)."""
        with gated_server(settings) as (url, _):
            async with httpx.AsyncClient(base_url=url, timeout=GUARD_SECONDS) as client:
                body = {"mission": mission, "session_id": "left"}
                await _leave_at(url, body, seen)
                await until(lambda: _counted(client))
                await until(lambda: _in_flight(client, 0))
                samples = await scrape(client)
                record = (await client.get("/api/v1/sessions/left")).json()["missions"]
        assert 1 == total(samples, "taskforce_missions_total", status=status)
        assert [status] == [kept["status"] for kept in record]
        assert 1 == total(samples, "taskforce_http_requests_total", route=STREAM)


class TestAStreamCancelledBeforeItsHead:
    @pytest.mark.parametrize("keepalive_seconds", [0.0, 15.0])
    async def test_its_mission_is_closed_before_the_request_ends(
        self, settings: Settings, keepalive_seconds: float
    ) -> None:
        """Cancelled while the head waits to go out (a pipelining client that reads
        nothing, then a shutdown), the stream has sent no event: its mission, started
        already, is cancelled and counted by the request all the same."""
        api = settings.api.model_copy(update={"stream_keepalive_seconds": keepalive_seconds})
        container = build_container(settings.model_copy(update={"api": api}))
        app = create_app(container=container)
        body = json.dumps({"mission": SLOW_MISSION, "session_id": "headless"}).encode()
        received = [{"type": "http.request", "body": body, "more_body": False}]
        heading = asyncio.Event()

        async def receive() -> Message:
            if received:
                return received.pop()
            await asyncio.Event().wait()  # the client never leaves
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                heading.set()
                await asyncio.Event().wait()  # the head never goes out

        async with container, app.router.lifespan_context(app):
            task = asyncio.create_task(app(_stream_scope(body), receive, send))
            async with asyncio.timeout(GUARD_SECONDS):
                await heading.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            counted = {k: v for k, v in missions_total(container).items() if v}
        assert {("lean", "cancelled"): 1.0} == counted


class _PeakBacklog(executor_module._Backlog):
    """The executor's backlog of a stream, keeping the most items any one held at once."""

    peak = 0

    def _push(self, item: object, *, took_room: bool) -> None:
        super()._push(item, took_room=took_room)
        _PeakBacklog.peak = max(_PeakBacklog.peak, len(self))


@pytest.mark.integration
class TestAReaderThatPauses:
    async def test_no_event_is_lost_and_the_backlog_stays_bounded(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A client that pauses after the head while its mission streams 2,000 tokens
        finds at most ``agent.max_queued_events`` (64) events queued in the server, the
        deltas past them joined into one (the provider's answer is not held back), then
        gets all the text, in order, the result last; counted once."""
        monkeypatch.setattr(_PeakBacklog, "peak", 0)
        monkeypatch.setattr(executor_module, "_Backlog", _PeakBacklog)
        words = ["w"] * 2000
        async with (
            serving(settings) as (port, _),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=GUARD_SECONDS) as client,
        ):
            body = {"mission": " ".join(words)}
            async with client.stream("POST", STREAM, json=body) as response:
                chunks = response.aiter_text()
                text = await anext(chunks)
                await asyncio.sleep(0.2)  # the pause: the answer streams meanwhile
                text += "".join([chunk async for chunk in chunks])
            samples = await scrape(client)
        events = parse_sse(text)
        tokens = [data["content"] for kind, data in events if kind == "token"]
        assert len(tokens) < 2 + len(words)
        assert ("result", "completed") == (events[-1][0], events[-1][1]["result"]["status"])
        assert "".join(tokens) == events[-1][1]["result"]["final_message"]
        # 64 of the agent's events, one token event past them; mission_started, the
        # result and the end need no room
        assert 0 < _PeakBacklog.peak <= 64 + 4
        assert 1 == total(samples, "taskforce_missions_total", status="completed")


def _stream_scope(body: bytes) -> dict[str, Any]:
    """The ASGI scope of a ``POST`` of ``body`` to the stream route (ASGI 2.4: no task group)."""
    path = "/api/v1/execute/stream"
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"t"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
