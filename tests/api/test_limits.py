"""``BodyLimitMiddleware`` and ``ShutdownNotice``: a body not whole when the shutdown begins."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from taskforce.api._limits import BodyLimitMiddleware, ShutdownNotice

REFUSED = {"detail": "the service is shutting down; the request was not read"}


class Client:
    """The server side of one request: hands out ``messages`` in turn, then waits for ``more``."""

    def __init__(self, *messages: Message) -> None:
        self.messages = list(messages)
        self.more: asyncio.Queue[Message] = asyncio.Queue()
        self.waiting = asyncio.Event()  # the app asked for a message not yet sent
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if self.messages:
            return self.messages.pop(0)
        self.waiting.set()
        return await self.more.get()

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    def answer(self) -> tuple[int, dict[bytes, bytes], Any]:
        """The status, headers and JSON body the app sent."""
        start, *bodies = self.sent
        body = b"".join(m.get("body", b"") for m in bodies)
        return start["status"], dict(start["headers"]), json.loads(body)


def _scope(headers: list[tuple[bytes, bytes]], notice: ShutdownNotice | None) -> Scope:
    scope: Scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    return scope if notice is None else notice.given_to(scope)


def _reading_app(
    then: Callable[[Receive], Awaitable[None]] | None = None,
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """An app that reads its whole body, runs ``then`` and answers 200 with the body's size."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        if then is not None:
            await then(receive)
        body = json.dumps({"bytes": size}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


def _middleware(app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> BodyLimitMiddleware:
    return BodyLimitMiddleware(app, max_bytes=1024, read_timeout_seconds=3600)


CHUNKED = [(b"transfer-encoding", b"chunked")]


class TestShutdownRefusal:
    async def test_a_body_awaited_when_the_shutdown_begins_is_answered_503(self) -> None:
        """A request waiting for the rest of its body gets the 503 as the shutdown begins,
        counted once as refused."""
        refused: list[int] = []
        notice = ShutdownNotice(refused.append)
        client = Client({"type": "http.request", "body": b'{"a":', "more_body": True})
        served = asyncio.create_task(
            _middleware(_reading_app())(_scope(CHUNKED, notice), client.receive, client.send)
        )
        await client.waiting.wait()
        notice.begin()
        await served
        status, headers, body = client.answer()
        assert (503, b"close", REFUSED) == (status, headers[b"connection"], body)
        assert [1] == refused

    async def test_a_body_first_asked_for_after_the_shutdown_began_is_answered_503(
        self,
    ) -> None:
        """A request that asks for its body only after the shutdown began, and has to wait
        for it, gets the 503 at once, counted as refused then; it does not wait for the
        client."""
        refused: list[int] = []
        notice = ShutdownNotice(refused.append)
        notice.begin()
        client = Client()  # the body has not come
        headers = [(b"content-length", b"2")]
        await _middleware(_reading_app())(_scope(headers, notice), client.receive, client.send)
        status, _, body = client.answer()
        assert (503, REFUSED) == (status, body)
        assert [1] == refused

    async def test_the_part_held_is_read_and_a_wait_for_the_rest_refused(self) -> None:
        """Asked for after the shutdown began, the part of the body the server holds is
        read; the wait for the rest is refused at once, counted once."""
        refused: list[int] = []
        notice = ShutdownNotice(refused.append)
        notice.begin()
        client = Client({"type": "http.request", "body": b'{"a":', "more_body": True})
        await _middleware(_reading_app())(_scope(CHUNKED, notice), client.receive, client.send)
        status, _, body = client.answer()
        assert (503, REFUSED) == (status, body)
        assert ([1], []) == (refused, client.messages)

    async def test_a_body_held_whole_is_served_when_asked_for_after_the_signal(self) -> None:
        """A request whose whole body the server holds (it came before the signal), whose
        route asks for it only after the shutdown began, is served, not refused: no wait
        for the client is left."""
        refused: list[int] = []
        notice = ShutdownNotice(refused.append)
        notice.begin()
        client = Client({"type": "http.request", "body": b"{}", "more_body": False})
        headers = [(b"content-length", b"2")]
        await _middleware(_reading_app())(_scope(headers, notice), client.receive, client.send)
        assert (200, {"bytes": 2}) == client.answer()[::2]
        assert [] == refused

    async def test_a_whole_body_is_not_refused(self) -> None:
        """A request whose body is whole goes on through the shutdown (it pins the behaviour
        the old code had): a later wait, for the client's disconnect, is not refused."""
        refused: list[int] = []
        notice = ShutdownNotice(refused.append)
        client = Client({"type": "http.request", "body": b"{}", "more_body": False})

        async def wait_for_disconnect(receive: Receive) -> None:
            assert "http.disconnect" == (await receive())["type"]

        app = _middleware(_reading_app(then=wait_for_disconnect))
        headers = [(b"content-length", b"2")]
        served = asyncio.create_task(app(_scope(headers, notice), client.receive, client.send))
        await client.waiting.wait()
        notice.begin()
        client.more.put_nowait({"type": "http.disconnect"})
        await served
        assert (200, {"bytes": 2}) == client.answer()[::2]
        assert [] == refused

    async def test_a_request_without_a_body_is_not_refused(self) -> None:
        """A request that sends no body has it whole from the start: asking for it after
        the shutdown began is answered as before."""
        refused: list[int] = []
        notice = ShutdownNotice(refused.append)
        notice.begin()
        client = Client({"type": "http.request", "body": b"", "more_body": False})
        await _middleware(_reading_app())(_scope([], notice), client.receive, client.send)
        assert (200, {"bytes": 0}) == client.answer()[::2]
        assert [] == refused

    async def test_without_a_notice_a_body_is_read_as_before(self) -> None:
        """Under a server that hands out no notice (a foreign one), the body is read whole."""
        client = Client(
            {"type": "http.request", "body": b'{"a":', "more_body": True},
            {"type": "http.request", "body": b"1}", "more_body": False},
        )
        await _middleware(_reading_app())(_scope(CHUNKED, None), client.receive, client.send)
        assert (200, {"bytes": 7}) == client.answer()[::2]

    def test_a_second_begin_refuses_nobody_again(self) -> None:
        """``begin`` counts the waiting requests once; calling it again reports nothing."""
        refused: list[int] = []
        notice = ShutdownNotice(refused.append)
        notice.begin()
        notice.begin()
        assert (True, []) == (notice.has_begun, refused)
