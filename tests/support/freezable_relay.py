"""A TCP relay on 127.0.0.1 that can stop passing bytes: a database (or its network) that hangs,
or one that goes away right after it said something.

Usage (inside a running event loop, which must keep running while clients use it)::

    async with FreezableRelay(server_port) as relay:
        dsn = dsn.replace(f":{server_port}/", f":{relay.port}/")
        ...
        relay.freeze()
        relay.cut_after(b"COMMIT\x00")  # the link dies right after the server confirms a commit

``hold_server_close()`` keeps a connection the server closes open to its client: the
server's last word arrives, its close only when the relay ends.

With ``idle_seconds``, it is a load balancer or NAT that forgets a flow idle that long:
the bytes of such a connection are dropped from then on, and it is never closed.
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

    def __init__(self, port: int, *, idle_seconds: float | None = None) -> None:
        self._port = port
        self._idle_seconds = idle_seconds
        #: How many connections were forgotten for being idle longer than ``idle_seconds``.
        self.forgotten = 0
        self.connections = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._cut_marker: bytes | None = None
        self._is_hang = False
        self._is_close_held = False
        #: Set when the client of a connection hung by ``cut_after(..., hang=True)`` closed it.
        self.hung_up = asyncio.Event()
        self.port = 0
        self.cuts = 0

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

    def cut_after(self, marker: bytes | None, *, hang: bool = False) -> None:
        """From now on, a connection whose server sent ``marker`` (in one read) is cut, both
        ways, when its client next sends anything: what the server said arrives, and the
        link is gone before anything else is said. With ``hang``, the client's bytes are
        dropped instead and the link stays open, silent (a network that stopped then),
        until the client closes it (``hung_up`` is set then). ``None`` stops cutting."""
        self._cut_marker = marker
        self._is_hang = hang

    def hold_server_close(self, is_held: bool = True) -> None:
        """From now on, a connection the server closes stays open to its client, silent: what
        the server said last (the FATAL of a connection it ended) arrives, its close does not.
        ``False`` passes the closes to come again."""
        self._is_close_held = is_held

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        await self._flowing.wait()
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._port)
        self._writers.append(upstream_writer)

        said_marker = is_hung = False
        loop = asyncio.get_running_loop()
        last_seen = loop.time()

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            nonlocal said_marker, is_hung, last_seen
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    await self._flowing.wait()
                    if is_hung:
                        continue
                    idle, last_seen = loop.time() - last_seen, loop.time()
                    if self._idle_seconds is not None and idle > self._idle_seconds:
                        self.forgotten += 1
                        is_hung = True
                        continue
                    if said_marker and source is reader:
                        self.cuts += 1
                        if self._is_hang:
                            is_hung = True
                            continue
                        writer.transport.abort()
                        upstream_writer.transport.abort()
                        return
                    sink.write(data)
                    await sink.drain()
                    marker = self._cut_marker
                    if marker is not None and source is upstream_reader and marker in data:
                        said_marker = True
            if is_hung and source is reader:
                self.hung_up.set()
            if source is upstream_reader and self._is_close_held:
                return  # aborted on the way out
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
