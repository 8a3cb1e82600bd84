"""Server-Sent Events answers that stay alive: a comment goes out whenever a stream idles.

A reverse proxy or load balancer cuts a response that sends nothing for its idle
timeout (nginx's ``proxy_read_timeout``, an AWS ALB's idle timeout: 60 s by default),
and a tool or LLM call may take longer than that between two events. Every
``api.stream_keepalive_seconds`` without a byte sent, a comment line (``: keep-alive``)
goes out, which an EventSource client ignores. The comments come from a task of their
own that only ever calls ``send``: the events, and the mission behind them, are still
produced, cancelled and closed in the request's own task, as without it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable

from starlette.responses import StreamingResponse
from starlette.types import Send

from taskforce.core.interfaces.closing import aclose_iterator
from taskforce.core.interfaces.outcome import retrieve_outcome

__all__ = ["KEEP_ALIVE", "EventStreamResponse"]

#: What an idle stream sends: an SSE comment (a line starting with ``:``), then the
#: blank line that ends it; EventSource clients skip it, as the SSE spec says.
KEEP_ALIVE = b": keep-alive\n\n"

_SendChunk = Callable[[bytes], Awaitable[None]]


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` answer that sends :data:`KEEP_ALIVE` while it idles.

    Headers tell proxies not to cache or buffer it (``X-Accel-Buffering: no`` for nginx).
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterable[bytes],
        *,
        keepalive_seconds: float,
        source: AsyncIterable[object] | None = None,
    ) -> None:
        """Stream ``content``, each chunk one or more whole events.

        Args:
            content: the events, encoded.
            keepalive_seconds: send a comment after this long without a byte sent
                (``api.stream_keepalive_seconds``); 0 sends none.
            source: what ``content`` is read from (a mission's events), closed after it:
                a generator that never started (cancelled while the head waits to go
                out) cannot close what it was given.
        """
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._events = content
        self._source = source
        self.keepalive_seconds = keepalive_seconds

    async def stream_response(self, send: Send) -> None:
        """Send the head, every chunk of the body with comments between them, then the end.

        However the sending stops, the events and their source are closed before this
        returns, in this task: a request cancelled while it waits in ``send`` (a
        shutdown, a client that reads nothing), also for its head, before any event,
        stops its mission and has it counted and recorded then, rather than leaving it
        running until the garbage collector closes the events.
        """
        try:
            await self._send_events(send)
        finally:
            try:
                await aclose_iterator(self._events)
            finally:
                await aclose_iterator(self._source)

    async def _send_events(self, send: Send) -> None:
        """Send the head and the events (comments between them, when kept alive), then the end."""
        if not self.keepalive_seconds:
            await super().stream_response(send)
            return
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        async with _kept_alive(send, self.keepalive_seconds) as send_chunk:
            async for chunk in self._events:
                await send_chunk(chunk)
        # the comments have stopped: nothing may follow the end of the body
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@contextlib.asynccontextmanager
async def _kept_alive(send: Send, seconds: float) -> AsyncIterator[_SendChunk]:
    """Yield a sender of body chunks; meanwhile send :data:`KEEP_ALIVE` after ``seconds``
    without one. The comments stop (their task cancelled) before this returns."""
    loop = asyncio.get_running_loop()
    lock = asyncio.Lock()  # one send at a time, through the wrappers of the middlewares
    last_sent = loop.time()

    async def send_chunk(chunk: bytes) -> None:
        nonlocal last_sent
        async with lock:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            last_sent = loop.time()

    async def keep_alive() -> None:
        while True:
            await asyncio.sleep(last_sent + seconds - loop.time())
            if loop.time() - last_sent >= seconds:
                await send_chunk(KEEP_ALIVE)

    ticker = asyncio.create_task(keep_alive(), name="taskforce-sse-keep-alive")
    ticker.add_done_callback(retrieve_outcome)  # a broken connection is the events' to report
    try:
        yield send_chunk
    finally:
        # Not awaited: a request the shutdown cancelled may still end with its result
        # (the executor takes the cancellation back), but under the task group of
        # Starlette's StreamingResponse any wait would cancel it again. Once cancelled,
        # the ticker sends nothing more: it is suspended in a wait (the sleep, the lock,
        # a full socket's drain), and its next step raises there.
        ticker.cancel()
