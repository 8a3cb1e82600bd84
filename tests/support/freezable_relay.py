"""A TCP relay on 127.0.0.1 that can stop passing bytes: a database (or its network) that hangs.

Usage (inside a running event loop, which must keep running while clients use it)::

    async with FreezableRelay(server_port) as relay:
        dsn = dsn.replace(f":{server_port}/", f":{relay.port}/")
        ...
        relay.freeze()
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["FreezableRelay"]


class FreezableRelay:
    """A TCP relay to ``127.0.0.1:port`` that can stop passing bytes (a hung database or network).

    Attributes:
        port: the relay's own port, once entered.
        connections: how many connections clients opened to the relay.
    """

    def __init__(self, port: int) -> None:
        self._port = port
        self.connections = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def __aenter__(self) -> FreezableRelay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._flowing.set()

    def freeze(self) -> None:
        """Hold every byte from now on, and every new connection's upstream, until ``thaw``."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Pass the bytes held and those to come."""
        self._flowing.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        await self._flowing.wait()
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._port)
        self._writers.append(upstream_writer)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    await self._flowing.wait()
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
