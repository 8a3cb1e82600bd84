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
from taskforce.core.interfaces.state import AppendResult, SessionState
from tests.api.conftest import parse_sse
from tests.api.test_metrics_e2e import scrape, total
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
