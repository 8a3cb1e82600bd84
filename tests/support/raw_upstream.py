"""An HTTP upstream on 127.0.0.1 that answers every request with the same raw bytes.

For answers no well-behaved server gives (a gzip bomb, a broken encoding, a redirect),
written as they go on the wire, at once or in pieces with pauses between them. It also
serves as a plain HTTP proxy: a request in absolute form (``POST http://host/v1/...``)
is answered the same, and its target kept.

Usage (inside a running event loop)::

    async with RawUpstream(raw_response(200, body, {"content-encoding": "gzip"})) as up:
        provider = OpenAICompatibleProvider("m", up.base_url)
        ...
    up.targets  # the request targets, in order
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.loopback import LoopbackServer

__all__ = ["RawUpstream", "chunked", "raw_response"]


def raw_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """An HTTP/1.1 response with ``body`` and its length, closing the connection after it."""
    lines = [f"HTTP/1.1 {status} X", f"content-length: {len(body)}", "connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(pieces: list[bytes]) -> list[bytes]:
    """``pieces`` in chunked transfer coding, one chunk each, then the last chunk."""
    return [b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces] + [b"0\r\n\r\n"]


class RawUpstream(LoopbackServer):
    """Answers every request with ``response``; counts them and keeps their targets.

    ``response`` is the bytes to send, or pieces sent ``pause`` seconds apart (each
    flushed on its own, so the client reads them separately). With ``gather``, no
    request is answered before that many have arrived. With ``answers``, only that many
    are: each later one is held, unanswered, until its client closes the connection
    (``holding`` is set once one is). With ``hold_open``, a connection stays open after
    its last piece until its client closes it (a body that never ends); close the client
    before the upstream, which waits for those connections to end.
    """

    def __init__(
        self,
        response: bytes | list[bytes],
        *,
        pause: float = 0.0,
        gather: int = 1,
        answers: int | None = None,
        hold_open: bool = False,
    ) -> None:
        super().__init__()
        self._pieces = [response] if isinstance(response, bytes) else response
        self._pause = pause
        self._gather = gather
        self._answers = answers
        self._hold_open = hold_open
        self._held: set[asyncio.Task[None]] = set()
        self.holding = asyncio.Event()
        self._gathered = asyncio.Event()
        self.targets: list[str] = []

    async def _finish_handlers(self) -> None:
        # Not cancelled: asyncio's stream protocol logs a cancelled handler as an error.
        await asyncio.gather(*self._held, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._hold_open:
            task = asyncio.current_task()
            assert task is not None
            self._held.add(task)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            self.targets.append(head.split(b" ", 2)[1].decode())
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            if len(self.targets) >= self._gather:
                self._gathered.set()
            await self._gathered.wait()
            pieces = self._pieces
            if self._answers is not None and len(self.targets) > self._answers:
                self.holding.set()
                await reader.read()  # held, unanswered, until the client leaves
                pieces = []
            for index, piece in enumerate(pieces):
                if index and self._pause:
                    await asyncio.sleep(self._pause)
                writer.write(piece)
                await writer.drain()
            if self._hold_open:
                await reader.read()  # until the client leaves
        writer.close()
