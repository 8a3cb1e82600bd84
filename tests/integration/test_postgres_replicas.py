"""Two replicas on one real PostgreSQL: shared sessions, no lost record, a database outage survived.

Each replica is a full app (its own container, executor, pool and metrics) under
its own uvicorn server on 127.0.0.1, as two processes behind a load balancer
would be: the executors share no lock, only the database.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from taskforce.api.server import create_app
from taskforce.application.container import Container
from taskforce.config import Settings
from taskforce.infrastructure.state import PostgresStateStore
from tests.observability.metric_samples import samples
from tests.support.live_server import serve
from tests.support.postgres import PostgresServer, create_user, running_postgres

pytestmark = pytest.mark.integration

_MISSION = 'tool:calculator {"expression": "6*7"}\nReport.'


def _settings(tmp_path: Path, name: str, dsn: str) -> Settings:
    return Settings(
        state_dir=tmp_path / name / "state",
        workspace_dir=tmp_path / name / "ws",
        state={"backend": "postgres", "dsn": dsn, "pool_size": 5, "timeout_seconds": 5},
    )


class Replicas:
    """Two live replicas on one database, with an HTTP client for each."""

    def __init__(self, containers: list[Container], clients: list[httpx.AsyncClient]) -> None:
        self.containers = containers
        self.clients = clients

    async def execute(self, replica: int, session_id: str, mission: str = _MISSION) -> Any:
        body = {"mission": mission, "session_id": session_id}
        response = await self.clients[replica].post("/api/v1/execute", json=body)
        assert 200 == response.status_code, response.text
        return response.json()

    async def session(self, replica: int, session_id: str) -> httpx.Response:
        return await self.clients[replica].get(f"/api/v1/sessions/{session_id}")


@pytest.fixture(name="replicas")
async def fixture_replicas(tmp_path: Path, postgres_dsn: str) -> AsyncIterator[Replicas]:
    """Two replicas on a fresh database of the shared server."""
    with ExitStack() as stack:
        replicas = _start(stack, tmp_path, postgres_dsn)
        try:
            yield replicas
        finally:
            for client in replicas.clients:
                await client.aclose()


def _start(stack: ExitStack, tmp_path: Path, dsn: str) -> Replicas:
    # Each app builds (and on shutdown closes) its own container, pool included.
    apps = [create_app(_settings(tmp_path, f"r{i}", dsn)) for i in range(2)]
    containers: list[Container] = [app.state.container for app in apps]
    lives = [stack.enter_context(serve(app)) for app in apps]
    clients = [httpx.AsyncClient(base_url=live.url, timeout=60) for live in lives]
    return Replicas(containers, clients)


class TestSharedSessions:
    async def test_a_session_continues_on_the_other_replica(self, replicas: Replicas) -> None:
        """Started on replica 0, continued on replica 1: both replicas read both records."""
        first = await replicas.execute(0, "travel")
        second = await replicas.execute(1, "travel")
        assert ("completed", "completed") == (first["status"], second["status"])
        for replica in (0, 1):
            response = await replicas.session(replica, "travel")
            assert 200 == response.status_code
            ids = [m["mission_id"] for m in response.json()["missions"]]
            assert [first["mission_id"], second["mission_id"]] == ids

    @pytest.mark.slow
    async def test_two_hundred_missions_none_lost_none_doubled(self, replicas: Replicas) -> None:
        """200 missions on 5 sessions, alternating replicas, 20 at a time: 200 records exactly."""
        gate = asyncio.Semaphore(20)

        async def one(i: int) -> Any:
            async with gate:
                return await replicas.execute(i % 2, f"s{i % 5}")

        results = await asyncio.gather(*(one(i) for i in range(200)))
        assert {"completed": 200} == Counter(r["status"] for r in results)
        recorded: list[str] = []
        for session in range(5):
            response = await replicas.session(session % 2, f"s{session}")
            missions = response.json()["missions"]
            assert 40 == len(missions)
            recorded += [m["mission_id"] for m in missions]
        assert sorted(r["mission_id"] for r in results) == sorted(recorded)
        sizes = [
            samples(c.metrics, "taskforce_state_size_bytes")[()][0]
            for c in replicas.containers
            if c.metrics is not None
        ]
        assert 200 == sum(sizes)


@pytest.fixture(name="own_postgres")
def fixture_own_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own, which it may stop and start."""
    with running_postgres() as server:
        yield server


class TestDatabaseOutage:
    @pytest.mark.slow
    async def test_missions_fail_cleanly_and_recover(
        self, tmp_path: Path, own_postgres: PostgresServer
    ) -> None:
        """Database down: missions fail clearly, the service stays up; once back, they pass."""
        dsn = own_postgres.dsn()
        with ExitStack() as stack:
            replicas = _start(stack, tmp_path, dsn)
            try:
                assert "completed" == (await replicas.execute(0, "before"))["status"]
                await asyncio.to_thread(own_postgres.stop)

                down = [await replicas.execute(i % 2, f"down{i}") for i in range(4)]
                assert {"failed"} == {r["status"] for r in down}
                for result in down:
                    assert result["error"].startswith("could not save the session state")
                texts = [r["error"] for r in down]
                health = await replicas.clients[0].get("/health")
                read = await replicas.session(1, "before")
                metrics = await replicas.clients[0].get("/metrics")
                assert (200, 503) == (health.status_code, read.status_code)
                for text in [*texts, read.text, metrics.text]:
                    assert own_postgres.password not in text
                    assert dsn not in text

                await asyncio.to_thread(own_postgres.start)
                after = [await replicas.execute(i % 2, "before") for i in range(2)]
                assert ["completed", "completed"] == [r["status"] for r in after]
                missions = (await replicas.session(0, "before")).json()["missions"]
                assert 3 == len(missions)
            finally:
                for client in replicas.clients:
                    await client.aclose()
        failed = [
            samples(c.metrics, "taskforce_missions_total").get(("lean", "failed"), 0)
            for c in replicas.containers
            if c.metrics is not None
        ]
        assert 4 == sum(failed)
        # the store is why: each failed mission's append raised, and was counted as such
        appends = [
            samples(c.metrics, "taskforce_state_errors_total").get(("append",), 0)
            for c in replicas.containers
            if c.metrics is not None
        ]
        assert 4 == sum(appends)


class TestRevokedPrivilege:
    async def test_missions_fail_with_the_state_error_and_recover(
        self, tmp_path: Path, postgres_dsn: str
    ) -> None:
        """INSERT on the sessions revoked from the replicas' user while they run: missions
        fail with the usual state error and the service stays up; granted again, they pass
        (pins the behaviour: privileges are checked at start-up only)."""
        async with PostgresStateStore(postgres_dsn):
            pass  # the owner creates the schema; the replicas use a least-privilege user
        user = await create_user(postgres_dsn)
        owner = await asyncpg.connect(postgres_dsn)
        with ExitStack() as stack:
            replicas = _start(stack, tmp_path, user.dsn)
            try:
                assert "completed" == (await replicas.execute(0, "kept"))["status"]
                await owner.execute(f"REVOKE INSERT ON taskforce_sessions FROM {user.role}")
                refused = [await replicas.execute(i, "kept") for i in range(2)]
                health = await replicas.clients[1].get("/health")
                await owner.execute(f"GRANT INSERT ON taskforce_sessions TO {user.role}")
                after = await replicas.execute(1, "kept")
                missions = (await replicas.session(0, "kept")).json()["missions"]
            finally:
                await owner.close()
                for client in replicas.clients:
                    await client.aclose()
        error = (
            "could not save the session state: "
            "cannot save state of session 'kept': InsufficientPrivilegeError"
        )
        assert [("failed", error)] * 2 == [(r["status"], r["error"]) for r in refused]
        assert 200 == health.status_code
        assert "completed" == after["status"]
        assert 2 == len(missions)
