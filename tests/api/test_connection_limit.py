"""``api.max_connections``: a connection past the limit gets a 503 and is closed, on a real server.

A flood of connections that send nothing held a file descriptor each for
``api.read_timeout_seconds``, however many came; enough of them and the process could
open no session file. Past the limit, each listener answers a new connection at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
from collections.abc import AsyncIterator

import httpx
import pytest
import structlog

from taskforce.api._listener import WorkerSlot, bind_socket
from taskforce.api._read_deadline import (
    MAX_LINGERING_REFUSALS,
    default_max_connections,
    read_deadline_protocol,
)
from taskforce.config import Settings
from tests.support.taskforce_server import GUARD_SECONDS, serving, until_closed

pytestmark = pytest.mark.integration

LIMIT = 2
DETAIL = f"too many connections: this server holds at most {LIMIT}"


@pytest.fixture(name="capped_settings")
def fixture_capped_settings(settings: Settings) -> Settings:
    """The default settings with ``api.max_connections`` of ``LIMIT``."""
    api = settings.api.model_copy(update={"max_connections": LIMIT})
    return settings.model_copy(update={"api": api})


@contextlib.asynccontextmanager
async def held_connections(
    port: int, count: int, path: str = "/health"
) -> AsyncIterator[list[asyncio.StreamWriter]]:
    """Open ``count`` connections to ``port``, each kept alive after one answered GET of ``path``.

    The answer shows the server has taken the connection; it then holds it, idle, for
    uvicorn's keep-alive timeout, longer than a test. All are closed on exit.
    """
    writers = []
    try:
        for _ in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD_SECONDS)
            assert head.startswith(b"HTTP/1.1 200 "), head
        yield writers
    finally:
        for writer in writers:
            writer.close()


async def served_again(port: int) -> httpx.Response:
    """GET /health until the server takes the connection (it notices a close in its own time)."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for _ in range(100):
            response = await client.get("/health")
            if response.status_code != 503:
                return response
            await asyncio.sleep(0.01)
    raise AssertionError("a freed place was never served")


def _refusal(answer: bytes) -> tuple[bytes, dict[bytes, bytes], object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines)
    return status_line, headers, json.loads(body)


class TestApiListener:
    async def test_connection_past_the_limit_gets_a_503_and_is_closed(
        self, capped_settings: Settings
    ) -> None:
        """With the limit held by idle connections, the next one is refused with a reason."""
        async with serving(capped_settings) as (port, _), held_connections(port, LIMIT):
            answer = await until_closed(port, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        status_line, headers, body = _refusal(answer)
        assert b"HTTP/1.1 503 Service Unavailable" == status_line
        assert b"application/json" == headers[b"content-type"]
        assert b"close" == headers[b"connection"]
        assert {"detail": DETAIL} == body

    async def test_one_log_line_per_spell_of_refusals(self, capped_settings: Settings) -> None:
        """A flood is logged once, when refusing starts; again after a connection was taken."""
        async with serving(capped_settings) as (port, _):
            with structlog.testing.capture_logs() as logs:
                async with held_connections(port, LIMIT) as writers:
                    for _ in range(3):
                        assert (await until_closed(port, b"")).startswith(b"HTTP/1.1 503 ")
                    writers.pop().close()
                    assert 200 == (await served_again(port)).status_code  # the spell ended
                    async with held_connections(port, 1):
                        assert (await until_closed(port, b"")).startswith(b"HTTP/1.1 503 ")
        refused = [log for log in logs if log["event"] == "http.connection.refused"]
        expected = {
            "category": "http",
            "status_code": 503,
            "reason": DETAIL,
            "max_connections": LIMIT,
            "log_level": "warning",
        }
        assert 2 == len(refused)
        assert all(expected.items() <= log.items() for log in refused)

    async def test_a_freed_place_serves_again(self, capped_settings: Settings) -> None:
        """Once an idle connection closes, a new client is served as usual."""
        async with serving(capped_settings) as (port, _), held_connections(port, LIMIT) as held:
            assert (await until_closed(port, b"")).startswith(b"HTTP/1.1 503 ")
            held.pop().close()
            response = await served_again(port)
        assert 200 == response.status_code

    async def test_the_default_is_half_the_open_file_limit(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Unset, the limit is half the process's open-file limit (``ulimit -n``) at start:
        under a limit of 8 the fifth connection is refused."""
        assert settings.api.max_connections is None
        monkeypatch.setattr(resource, "getrlimit", lambda _: (8, 4096))
        async with serving(settings) as (port, _), held_connections(port, 4):
            answer = await until_closed(port, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert {"detail": "too many connections: this server holds at most 4"} == _refusal(answer)[
            2
        ]

    async def test_under_the_default_limit_many_connections_are_served(
        self, settings: Settings
    ) -> None:
        """The default (half the open-file limit) takes more connections than a test opens."""
        async with (
            serving(settings) as (port, _),
            held_connections(port, 20),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            response = await client.get("/health")
        assert 200 == response.status_code


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
async def test_a_flood_of_refused_connections_holds_few_descriptors(
    capped_settings: Settings,
) -> None:
    """Past the limit, at most ``MAX_LINGERING_REFUSALS`` refused connections linger: the
    others are closed at once. Each lingering one held a descriptor for a second, so a
    flood took every descriptor of the process, and its missions failed to save."""
    flood = MAX_LINGERING_REFUSALS + 24
    async with serving(capped_settings) as (port, _), held_connections(port, LIMIT):
        before = _open_descriptors()
        streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(flood)]
        try:
            for reader, _ in streams:  # each answered and closed (or lingering) by the server
                answer = await asyncio.wait_for(reader.read(), GUARD_SECONDS)
                assert answer.startswith(b"HTTP/1.1 503 "), answer
            # the clients' own sockets, and those the server still holds
            held_by_server = _open_descriptors() - before - flood
        finally:
            for _, writer in streams:
                writer.close()
    assert held_by_server <= MAX_LINGERING_REFUSALS


class TestMetricsListener:
    async def test_metrics_port_has_its_own_limit(self, capped_settings: Settings) -> None:
        """The listener of ``metrics.port`` refuses past the limit too, apart from the API's."""
        metrics_sock = bind_socket("127.0.0.1", 0, what="metrics")
        metrics_port = metrics_sock.getsockname()[1]
        with_port = capped_settings.metrics.model_copy(update={"port": metrics_port})
        settings = capped_settings.model_copy(update={"metrics": with_port})
        slot = WorkerSlot(index=0, metrics_socket=metrics_sock)
        async with (
            serving(settings, slot) as (port, _),
            held_connections(metrics_port, LIMIT, "/metrics"),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            refused = await until_closed(metrics_port, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            health = await client.get("/health")
        assert b"HTTP/1.1 503 Service Unavailable" == _refusal(refused)[0]
        assert 200 == health.status_code


class TestDefault:
    @pytest.mark.parametrize(
        ("soft", "expected"),
        [(1024, 512), (1_048_576, 524_288), (1, 1), (resource.RLIM_INFINITY, 1_000_000)],
        ids=["debian", "kubernetes", "one", "unlimited"],
    )
    def test_half_the_soft_open_file_limit(
        self, monkeypatch: pytest.MonkeyPatch, soft: int, expected: int
    ) -> None:
        """Half the soft limit, at least 1; no limit set is the setting's maximum."""
        monkeypatch.setattr(resource, "getrlimit", lambda _: (soft, resource.RLIM_INFINITY))
        assert expected == default_max_connections()
        assert expected == read_deadline_protocol(1.0).max_connections  # type: ignore[attr-defined]
