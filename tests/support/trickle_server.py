"""An HTTP upstream on 127.0.0.1 that answers one byte at a time: the slow-loris of LLM servers.

Usage (inside a running event loop)::

    async with TrickleServer(body, interval=0.05, trickle_headers=True) as upstream:
        provider = OpenAICompatibleProvider("m", upstream.base_url, timeout_seconds=0.3)
        ...
    upstream.finished  # False: the client gave up before the answer was complete

With ``trickle_headers`` the status line and headers trickle too; otherwise the
headers go out at once and only the body trickles (a stream that stalls).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from tests.support.loopback import LoopbackServer

__all__ = ["COMPLETION_BODY", "TrickleServer", "sse_body"]

#: A chat completion answered in full: what a trickling upstream sends byte by byte.
COMPLETION_BODY = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "slow answer " * 20},
            }
        ],
    }
).encode()

_CHUNK = {
    "id": "x",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "m",
    "choices": [{"index": 0, "delta": {"content": "tick "}, "finish_reason": None}],
}


def sse_body(chunks: int) -> bytes:
    """Return a streamed completion of ``chunks`` text deltas, as server-sent events."""
    return b"".join(b"data: " + json.dumps(_CHUNK).encode() + b"\n\n" for _ in range(chunks))


class TrickleServer(LoopbackServer):
    """Answers every request with ``body``, ``chunk_size`` bytes every ``interval`` seconds."""

    def __init__(
        self,
        body: bytes,
        *,
        interval: float,
        trickle_headers: bool,
        content_type: str = "application/json",
        chunk_size: int = 1,
    ) -> None:
        super().__init__()
        self._body = body
        self._interval = interval
        self._chunk_size = chunk_size
        self._stopping = asyncio.Event()
        self._trickle_headers = trickle_headers
        self._content_type = content_type
        self._handlers: set[asyncio.Task[None]] = set()
        self.requests = 0
        self.bytes_sent = 0
        self.finished = False

    async def _finish_handlers(self) -> None:
        # Not cancelled: asyncio's stream protocol logs a cancelled handler as an error.
        self._stopping.set()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            await reader.readexactly(length)
            self.requests += 1
            headers = (
                "HTTP/1.1 200 OK\r\n"
                f"content-type: {self._content_type}\r\n"
                f"content-length: {len(self._body)}\r\n"
                "connection: close\r\n\r\n"
            ).encode()
            if not self._trickle_headers:
                writer.write(headers)
                await writer.drain()
            payload = (headers if self._trickle_headers else b"") + self._body
            for index in range(0, len(payload), self._chunk_size):
                piece = payload[index : index + self._chunk_size]
                writer.write(piece)
                await writer.drain()
                self.bytes_sent += len(piece)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._interval)
                if self._stopping.is_set():
                    return
            self.finished = True
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: what a deadline should make it do
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
