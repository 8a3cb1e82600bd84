"""The base of the test upstreams: an asyncio server on 127.0.0.1, used as a context manager."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

__all__ = ["LoopbackServer"]


class LoopbackServer:
    """Serves ``_handle`` on a free port of 127.0.0.1; ``base_url`` is its ``/v1`` root."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self.base_url = ""

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._finish_handlers()
        await self._server.wait_closed()

    async def _finish_handlers(self) -> None:
        """Let the connections still being served end (before the server is waited on)."""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError
