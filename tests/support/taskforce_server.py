"""Serve the app under ``TaskforceServer`` in the test's own loop, on 127.0.0.1 and port 0."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from taskforce.api._listener import WorkerSlot, bind_socket
from taskforce.api._serving import TaskforceServer
from taskforce.api.server import create_app
from taskforce.config import Settings

#: Only a guard against a test that would hang: every case ends long before it.
GUARD_SECONDS = 30


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, worker: WorkerSlot | None = None, write_timeout: float | None = None
) -> AsyncIterator[tuple[int, FastAPI]]:
    """Serve ``settings`` (its ``api`` read timeout and header limit); yield the port and app."""
    app = create_app(settings, worker=worker)
    sock = bind_socket("127.0.0.1", 0, what="the API")
    server = TaskforceServer(
        app,
        grace_seconds=0.5,
        read_timeout_seconds=settings.api.read_timeout_seconds,
        write_timeout_seconds=write_timeout,
        max_header_bytes=settings.api.max_header_bytes,
        max_connections=settings.api.max_connections,
        signals=(),
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1], app
    finally:
        server.should_exit = server.force_exit = True
        await task


async def until_closed(port: int, sent: bytes, *, half_close: bool = False) -> bytes:
    """Send ``sent`` in one write, then nothing more; return all it gets until the close.

    With ``half_close``, the write side is then shut (``shutdown(SHUT_WR)``, as ``nc -N``).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(sent)
        if half_close:
            writer.write_eof()
        await writer.drain()
        return await asyncio.wait_for(reader.read(), GUARD_SECONDS)
    finally:
        writer.close()
