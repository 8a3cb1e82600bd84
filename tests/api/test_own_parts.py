"""A user's own parts that misbehave fail one mission, through a real server on 127.0.0.1.

A state store of one's own that raises what the protocol does not name fails the mission
it could not record, on both mission routes, and the service goes on serving.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from taskforce.api.server import create_app
from taskforce.application.container import build_container
from taskforce.config import Settings
from taskforce.core.interfaces.state import AppendResult, SessionState, StateStoreHealth
from tests.api.conftest import parse_sse
from tests.api.test_metrics_e2e import scrape, total
from tests.core.domain.fakes import FakeRegistry, FakeTool, ok_handler
from tests.support.live_server import serve

pytestmark = pytest.mark.integration


class BuggyStore:
    """A state store of one's own with a bug: every call raises a ``RuntimeError``."""

    async def load(self, session_id: str) -> SessionState | None:
        raise RuntimeError("/srv/secret/state broke")

    async def save(self, session_id: str, state: SessionState) -> int | None:
        raise RuntimeError("/srv/secret/state broke")

    async def append(self, session_id: str, record: dict[str, Any]) -> AppendResult:
        raise RuntimeError("/srv/secret/state broke")


@pytest.fixture(name="buggy_client")
async def fixture_buggy_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the service whose state store is a ``BuggyStore``."""
    async with build_container(settings, state_store=BuggyStore()) as container:
        with serve(create_app(container=container)) as live:
            async with httpx.AsyncClient(base_url=live.url, timeout=30.0) as client:
                yield client


class TestAStoreOfOnesOwnThatRaises:
    async def test_it_fails_only_the_missions_it_could_not_record(
        self, buggy_client: httpx.AsyncClient
    ) -> None:
        """Each route answers 200 with the failed mission (not a 500), the store's error is
        counted, and the service still serves a second round and /health."""
        error = "could not save the session state (RuntimeError)"
        for _ in range(2):
            plain = await buggy_client.post("/api/v1/execute", json={"mission": "hi"})
            assert 200 == plain.status_code, plain.text
            body = plain.json()
            assert ("failed", "RuntimeError", error) == (
                body["status"],
                body["error_type"],
                body["error"],
            )
            streamed = await buggy_client.post("/api/v1/execute/stream", json={"mission": "hi"})
            events = parse_sse(streamed.text)
            assert ["error", "result"] == [event for event, _ in events[-2:]]
            assert ("RuntimeError", error) == (events[-2][1]["error_type"], events[-2][1]["error"])
            result = events[-1][1]["result"]
            assert ("failed", "RuntimeError") == (result["status"], result["error_type"])
            assert "secret" not in plain.text + streamed.text
        assert 200 == (await buggy_client.get("/health")).status_code
        samples = await scrape(buggy_client)
        assert 4 == total(samples, "taskforce_state_errors_total", operation="append")
        assert 4 == total(samples, "taskforce_missions_total", status="failed")

    async def test_a_session_it_cannot_read_is_a_json_500(
        self, buggy_client: httpx.AsyncClient
    ) -> None:
        """Reading a session: a JSON 500 naming the exception's class only (its message, which
        may name a path, in state.load.failed), counted under the route's template."""
        with capture_logs() as logs:
            response = await buggy_client.get("/api/v1/sessions/s-1")
        assert (500, "application/json") == (
            response.status_code,
            response.headers["content-type"],
        )
        assert {"detail": "could not read the session state (RuntimeError)"} == response.json()
        (failed,) = [line for line in logs if line["event"] == "state.load.failed"]
        assert ("s-1", "RuntimeError", "RuntimeError: /srv/secret/state broke") == (
            failed["session_id"],
            failed["error_type"],
            failed["error"],
        )
        samples = await scrape(buggy_client)
        route = "/api/v1/sessions/{session_id}"
        assert 1 == total(samples, "taskforce_http_requests_total", route=route, status_code="500")
        assert 1 == total(samples, "taskforce_state_errors_total", operation="load")

    async def test_a_timeout_of_its_own_is_named_by_its_class(self, settings: Settings) -> None:
        """A store whose load raises a TimeoutError: the 500 says TimeoutError, as a failed
        mission's error_type would, not the ``timeout`` of a failed call."""

        class TimingOut(BuggyStore):
            async def load(self, session_id: str) -> SessionState | None:
                raise TimeoutError("no answer from /srv/secret/state")

        async with build_container(settings, state_store=TimingOut()) as container:
            with serve(create_app(container=container)) as live:
                async with httpx.AsyncClient(base_url=live.url, timeout=30.0) as client:
                    response = await client.get("/api/v1/sessions/s-1")
        assert 500 == response.status_code
        assert {"detail": "could not read the session state (TimeoutError)"} == response.json()


class Halt(BaseException):
    """A ``BaseException`` of a store's own, which no ``except Exception`` catches."""


class HaltingStore:
    """A state store of one's own whose every call raises a ``BaseException`` that is no
    ``Exception``: ``SystemExit`` (out of a task, asyncio hands it to the event loop)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.backend = "halting"

    async def load(self, session_id: str) -> SessionState | None:
        raise self.exc

    async def save(self, session_id: str, state: SessionState) -> int | None:
        raise self.exc

    async def append(self, session_id: str, record: dict[str, Any]) -> AppendResult:
        raise self.exc

    async def check_health(self) -> StateStoreHealth:
        raise self.exc


class TestAStoreOfOnesOwnThatRaisesABaseException:
    @pytest.mark.parametrize("exc", [SystemExit(3), Halt("/srv/secret/state"), GeneratorExit()])
    async def test_it_fails_its_calls_and_the_service_goes_on(
        self, settings: Settings, exc: BaseException
    ) -> None:
        """Each mission fails as the store's class says (a 200, the stream ending with its
        result), a session read is a JSON 500, /health says unreachable, all counted; the
        service still serves a second round (a SystemExit stopped its event loop)."""
        name = type(exc).__name__
        error = f"could not save the session state ({name})"
        async with build_container(settings, state_store=HaltingStore(exc)) as container:
            with serve(create_app(container=container)) as live:
                async with httpx.AsyncClient(base_url=live.url, timeout=30.0) as client:
                    for _ in range(2):
                        plain = await client.post("/api/v1/execute", json={"mission": "hi"})
                        assert (200, "failed", name, error) == (
                            plain.status_code,
                            plain.json()["status"],
                            plain.json()["error_type"],
                            plain.json()["error"],
                        )
                        streamed = await client.post(
                            "/api/v1/execute/stream", json={"mission": "hi"}
                        )
                        result = parse_sse(streamed.text)[-1]
                        assert ("result", name) == (result[0], result[1]["result"]["error_type"])
                        read = await client.get("/api/v1/sessions/s-1")
                        assert (500, {"detail": f"could not read the session state ({name})"}) == (
                            read.status_code,
                            read.json(),
                        )
                        health = (await client.get("/health")).json()["state_store"]
                        assert {"backend": "halting", "reachable": False, "error": name} == health
                    samples = await scrape(client)
        assert "secret" not in plain.text + streamed.text + read.text
        assert 4 == total(samples, "taskforce_state_errors_total", operation="append")
        assert 2 == total(samples, "taskforce_state_errors_total", operation="load")
        assert 4 == total(samples, "taskforce_missions_total", status="failed")
        assert 0 == total(samples, "taskforce_missions_total", status="cancelled")


class TestARegistryOfOnesOwnThatRaises:
    @pytest.mark.parametrize(
        "exc", [RuntimeError("/srv/secret"), SystemExit(3), Halt("secret"), TimeoutError("slow")]
    )
    async def test_a_listing_that_raises_is_a_json_500(
        self, settings: Settings, exc: BaseException
    ) -> None:
        """GET /api/v1/tools answers a JSON 500 naming the class (logged as tool.list.failed),
        a mission whose flow lists the tools fails with it, and the service serves on."""
        name = type(exc).__name__

        class ListingFails(FakeRegistry):
            def list_tools(self) -> Any:
                raise exc

        registry = ListingFails(FakeTool("echo", ok_handler))
        async with build_container(settings, tool_registry=registry) as container:
            with serve(create_app(container=container)) as live:
                async with httpx.AsyncClient(base_url=live.url, timeout=30.0) as client:
                    with capture_logs() as logs:
                        listed = await client.get("/api/v1/tools")
                    mission = {"mission": "tool:echo {}", "agent_type": "legacy"}
                    failed = (await client.post("/api/v1/execute", json=mission)).json()
                    assert 200 == (await client.get("/health")).status_code
        assert (500, {"detail": f"could not list the tools ({name})"}) == (
            listed.status_code,
            listed.json(),
        )
        assert [("error", "tool", name)] == [
            (e["log_level"], e["category"], e["error_type"])
            for e in logs
            if e["event"] == "tool.list.failed"
        ]
        assert ("failed", name) == (failed["status"], failed["error_type"])
