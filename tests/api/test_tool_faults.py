"""Faults of the tools through a real server: stuck calls stay bounded, sessions stay apart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from taskforce.api.server import create_app
from taskforce.application.container import Container, build_container
from taskforce.config import Settings
from taskforce.infrastructure.state import FileStateStore
from taskforce.infrastructure.tools import ToolThreadPool
from tests.support.live_server import serve

pytestmark = pytest.mark.integration

_THREADS = 3


@pytest.fixture(name="container")
async def fixture_container(tmp_path: Path) -> AsyncIterator[Container]:
    """A container with a small tool pool and a short tool timeout."""
    settings = Settings(
        state_dir=tmp_path / "state",
        workspace_dir=tmp_path / "workspace",
        tools={"threads": _THREADS},
        agent={"tool_timeout_seconds": 0.2},
    )
    async with build_container(settings) as container:
        yield container


@pytest.fixture(name="client")
async def fixture_client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the service around ``container``, served by uvicorn on 127.0.0.1."""
    with serve(create_app(container=container)) as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=30.0) as client:
            yield client


def _pool(container: Container) -> ToolThreadPool:
    assert container.tool_pool is not None
    return container.tool_pool


@contextlib.asynccontextmanager
async def _stuck_fifo_reads(pool: ToolThreadPool, fifo: Path, count: int) -> AsyncIterator[None]:
    """Hold ``count`` pool calls in a FIFO read that has no writer (the refusal bypassed)."""

    def read() -> bytes:
        with open(fifo, "rb") as handle:  # blocks until a writer opens the FIFO
            return handle.read()

    reads = asyncio.gather(*(pool.run(read) for _ in range(count)))
    try:
        yield
    finally:
        # O_RDWR never blocks on a FIFO: opening it wakes the readers in open(), closing
        # gives them EOF. Reads still queued for a thread find a plain empty file instead.
        writer = os.open(fifo, os.O_RDWR)
        fifo.unlink()
        fifo.write_bytes(b"")
        os.close(writer)
        assert [b""] * count == await reads


async def _until(predicate: object, what: str) -> None:
    for _ in range(1000):
        if callable(predicate) and predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never became true: {what}")


class TestStuckToolCalls:
    async def test_stuck_reads_do_not_block_other_missions(
        self, container: Container, client: httpx.AsyncClient, tmp_path: Path
    ) -> None:
        """With every tool thread stuck, a mission without file tools completes and state
        is saved; a file tool call times out into a failed mission instead of hanging."""
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        pool = _pool(container)
        async with _stuck_fifo_reads(pool, fifo, _THREADS + 3):
            await _until(lambda: pool.is_saturated, "the pool is saturated")
            plain = await client.post(
                "/api/v1/execute",
                json={"mission": 'tool:calculator {"expression": "6*7"}', "session_id": "s1"},
            )
            file_tool = await client.post(
                "/api/v1/execute",
                json={"mission": 'tool:file_write {"path": "a", "content": "x"}'},
            )
            assert "completed" == plain.json()["status"]
            assert (container.settings.state_dir / "s1.json").is_file()
            assert "failed" == file_tool.json()["status"]
            assert "timed out" in file_tool.json()["error"]
        await _until(lambda: 0 == pool.busy, "the reads ended")
        retry = await client.post(
            "/api/v1/execute", json={"mission": 'tool:file_write {"path": "a", "content": "x"}'}
        )
        assert "completed" == retry.json()["status"]


class TestHealth:
    async def test_degraded_while_tool_threads_are_saturated(
        self, container: Container, client: httpx.AsyncClient
    ) -> None:
        """/health says degraded (still 200) while every tool thread is busy, ok after."""
        pool = _pool(container)
        release, started = threading.Event(), threading.Semaphore(0)

        def hold() -> None:
            started.release()
            release.wait()

        assert {"status": "ok", "busy": 0} == _summary((await client.get("/health")).json())
        held = [asyncio.ensure_future(pool.run(hold)) for _ in range(_THREADS)]
        try:
            for _ in range(_THREADS):
                await asyncio.to_thread(started.acquire)
            response = await client.get("/health")
            assert 200 == response.status_code
            assert {"status": "degraded", "busy": _THREADS} == _summary(response.json())
            assert _THREADS == response.json()["tool_threads"]["size"]
        finally:
            release.set()
            await asyncio.gather(*held)
        assert {"status": "ok", "busy": 0} == _summary((await client.get("/health")).json())

    async def test_degraded_while_state_threads_are_saturated(
        self, container: Container, client: httpx.AsyncClient
    ) -> None:
        """/health says degraded while every thread of the file store is busy (a hung disk)."""
        store = container.state_store.__wrapped__  # type: ignore[attr-defined]
        assert isinstance(store, FileStateStore)
        release, started = threading.Event(), threading.Semaphore(0)

        def hold() -> None:
            started.release()
            release.wait()

        held = [store._run(hold) for _ in range(store.thread_count)]
        try:
            for _ in range(store.thread_count):
                await asyncio.to_thread(started.acquire)
            body = (await client.get("/health")).json()
            assert "degraded" == body["status"]
            assert {"busy": store.thread_count, "size": store.thread_count} == body["state_threads"]
        finally:
            release.set()
            await asyncio.gather(*held)
        body = (await client.get("/health")).json()
        assert ("ok", 0) == (body["status"], body["state_threads"]["busy"])


def _summary(body: dict[str, object]) -> dict[str, object]:
    threads = body["tool_threads"]
    assert isinstance(threads, dict)
    return {"status": body["status"], "busy": threads["busy"]}


class TestSessionWorkspaces:
    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_one_session_cannot_read_anothers_file(
        self, client: httpx.AsyncClient, agent_type: str
    ) -> None:
        """A file written in session alice is invisible to session bob, by any path."""

        async def run(session_id: str, directive: str) -> httpx.Response:
            body = {"mission": directive, "session_id": session_id, "agent_type": agent_type}
            return await client.post("/api/v1/execute", json=body)

        wrote = await run("alice", 'tool:file_write {"path": "s.txt", "content": "alice only"}')
        assert "completed" == wrote.json()["status"]
        for path, reason in (("s.txt", "does not exist"), ("../alice/s.txt", "outside")):
            stolen = await run("bob", f'tool:file_read {{"path": "{path}"}}')
            assert ("failed", True) == (stolen.json()["status"], reason in stolen.json()["error"])
            assert "alice only" not in stolen.text
        again = await run("alice", 'tool:file_read {"path": "s.txt"}')
        assert "completed" == again.json()["status"]
