"""/health reports the state store, through a real uvicorn server: the file store and PostgreSQL,
reachable, stopped and hung; always a 200 with status ok, answered by its deadline."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskforce.api.server import create_app
from taskforce.config import Settings
from tests.support.freezable_relay import FreezableRelay
from tests.support.live_server import LiveServer
from tests.support.postgres import PostgresServer, running_postgres

pytestmark = pytest.mark.integration


def _postgres_settings(tmp_path: Path, dsn: str, **state: Any) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        workspace_dir=tmp_path / "ws",
        state={"backend": "postgres", "dsn": dsn, "pool_size": 5, **state},
    )


@asynccontextmanager
async def _served(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app under a live server, started and stopped off the loop (a relay on this
    loop must keep serving the app's connections meanwhile), with a client for it."""
    live = LiveServer(create_app(settings))
    try:
        await asyncio.to_thread(live.start)
        # the client's timeout only keeps a broken test from hanging; nothing is timed
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            yield client
    finally:
        await asyncio.to_thread(live.stop)


async def _health(client: httpx.AsyncClient) -> dict[str, Any]:
    """GET /health: always a 200 with status ok, whatever the state store's condition."""
    response = await client.get("/health")
    assert 200 == response.status_code
    body: dict[str, Any] = response.json()
    assert "ok" == body["status"]
    return body


class TestFileStore:
    async def test_reachable(self, settings: Settings) -> None:
        """The default file store: backend file, reachable."""
        async with _served(settings) as client:
            assert {"backend": "file", "reachable": True} == (await _health(client))["state_store"]

    async def test_a_file_where_the_directory_should_be(self, settings: Settings) -> None:
        """state_dir turns into a regular file while serving: unreachable with the reason and
        no path; still 200 and ok."""
        async with _served(settings) as client:
            settings.state_dir.write_text("not a directory")
            body = await _health(client)
        assert str(settings.state_dir) not in str(body)
        expected = {
            "backend": "file",
            "reachable": False,
            "error": "NotADirectoryError: state_dir is not a directory",
        }
        assert expected == body["state_store"]


class TestPostgres:
    async def test_reachable(self, tmp_path: Path, postgres_dsn: str) -> None:
        """A database that answers: backend postgres, reachable; HEAD answers alike."""
        async with _served(_postgres_settings(tmp_path, postgres_dsn)) as client:
            body = await _health(client)
            assert 200 == (await client.head("/health")).status_code
        assert {"backend": "postgres", "reachable": True} == body["state_store"]

    async def test_a_stopped_database(self, tmp_path: Path) -> None:
        """The database stops: 200, status ok, unreachable with the error's class and no
        password; started again, reachable again (the pool reconnects)."""
        with running_postgres() as server:
            async with _served(_postgres_settings(tmp_path, server.dsn())) as client:
                before = await _health(client)
                await asyncio.to_thread(server.stop)
                down = await _health(client)
                await asyncio.to_thread(server.start)
                after = await _health(client)
        assert {"backend": "postgres", "reachable": True} == before["state_store"]
        assert server.password not in json.dumps(down)
        assert {"backend", "reachable", "error"} == set(down["state_store"])
        assert False is down["state_store"]["reachable"]
        assert re.fullmatch(r"[A-Za-z]+Error", down["state_store"]["error"])
        assert {"backend": "postgres", "reachable": True} == after["state_store"]

    async def test_a_hung_database_is_answered_by_the_deadline_with_one_check(
        self, tmp_path: Path, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        """The database stops answering: ten probes at once are all answered at /health's own
        deadline (state.health_timeout_seconds, 0.5 s here, below state.timeout_seconds), 200
        and ok, unreachable; they share one
        check (no new connection is tried); once it answers, reachable again."""
        port = postgres_server.port
        async with FreezableRelay(port) as relay:
            dsn = postgres_dsn.replace(f":{port}/", f":{relay.port}/")
            settings = _postgres_settings(
                tmp_path, dsn, timeout_seconds=30, health_timeout_seconds=0.5
            )
            async with _served(settings) as client:
                assert True is (await _health(client))["state_store"]["reachable"]
                relay.freeze()
                connections = relay.connections
                responses = await asyncio.gather(*(client.get("/health") for _ in range(10)))
                later = await _health(client)
                opened = relay.connections - connections
                relay.thaw()
                after = await _health(client)
        expected = {
            "backend": "postgres",
            "reachable": False,
            "error": "TimeoutError: no answer within 0.5 s (state.health_timeout_seconds)",
        }
        assert [200] * 10 == [response.status_code for response in responses]
        assert 10 * [expected] == [response.json()["state_store"] for response in responses]
        assert expected == later["state_store"]
        assert all(postgres_server.password not in response.text for response in responses)
        assert 0 == opened
        assert {"backend": "postgres", "reachable": True} == after["state_store"]
