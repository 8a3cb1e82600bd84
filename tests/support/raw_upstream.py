"""An HTTP upstream on 127.0.0.1 that answers every request with the same raw bytes.

For answers no well-behaved server gives (a gzip bomb, a broken encoding, a redirect),
written as they go on the wire. It also serves as a plain HTTP proxy: a request in
absolute form (``POST http://host/v1/...``) is answered the same, and its target kept.

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

__all__ = ["RawUpstream", "raw_response"]


def raw_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """An HTTP/1.1 response with ``body`` and its length, closing the connection after it."""
    lines = [f"HTTP/1.1 {status} X", f"content-length: {len(body)}", "connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class RawUpstream(LoopbackServer):
    """Answers every request with ``response``; counts them and keeps their targets."""

    def __init__(self, response: bytes) -> None:
        super().__init__()
        self._response = response
        self.targets: list[str] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            self.targets.append(head.split(b" ", 2)[1].decode())
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            writer.write(self._response)
            await writer.drain()
        writer.close()
