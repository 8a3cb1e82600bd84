"""GET /api/v1/sessions/{session_id} through a real server, on the file and PostgreSQL stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from taskforce.api.server import create_app
from taskforce.config import Settings
from tests.support.live_server import serve

pytestmark = pytest.mark.integration

_TOOL_MISSION = 'tool:calculator {"expression": "6*7"}\nReport.'


def _settings(tmp_path: Path, backend: str, dsn: str | None, **extra: Any) -> Settings:
    state: dict[str, Any] = {"backend": backend}
    if dsn is not None:
        state["dsn"] = dsn
    return Settings(
        state_dir=tmp_path / "state", workspace_dir=tmp_path / "ws", state=state, **extra
    )


@pytest.fixture(name="backend", params=["file", "postgres"])
def fixture_backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """The store kind and, for PostgreSQL, a fresh database's DSN."""
    if request.param == "file":
        return "file", None
    return "postgres", request.getfixturevalue("postgres_dsn")


@pytest.fixture(name="client")
async def fixture_client(
    tmp_path: Path, backend: tuple[str, str | None]
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a live server on the parametrised store."""
    with serve(create_app(_settings(tmp_path, *backend))) as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            yield client


class TestReadSession:
    async def test_records_of_both_flows(self, client: httpx.AsyncClient) -> None:
        """Two missions of one session come back in order with status, times and tool calls."""
        sent = []
        for mission, agent in ((_TOOL_MISSION, "lean"), ("hello", "legacy")):
            body = {"mission": mission, "agent_type": agent, "session_id": "s-1"}
            sent.append((await client.post("/api/v1/execute", json=body)).json())
        response = await client.get("/api/v1/sessions/s-1")
        assert 200 == response.status_code
        body = response.json()
        assert "s-1" == body["session_id"]
        assert [
            (r["mission_id"], r["agent_type"], r["status"], r["final_message"]) for r in sent
        ] == [
            (m["mission_id"], m["agent_type"], m["status"], m["final_message"])
            for m in body["missions"]
        ]
        first = body["missions"][0]
        assert ["calculator"] == first["tool_calls"]
        assert first["started_at"] <= first["finished_at"]

    async def test_a_failed_mission_reads_back_its_error_type(
        self, client: httpx.AsyncClient
    ) -> None:
        """The record of a failed mission carries the error and error_type its result did."""
        body = {"mission": "llm:fail auth\nsay hi", "session_id": "s-failed"}
        result = (await client.post("/api/v1/execute", json=body)).json()
        assert ("failed", "auth") == (result["status"], result["error_type"])
        (read,) = (await client.get("/api/v1/sessions/s-failed")).json()["missions"]
        assert (result["error"], "auth") == (read["error"], read["error_type"])

    async def test_post_takes_every_id_the_route_reads(self, client: httpx.AsyncClient) -> None:
        """A session id with a leading dash (valid for the CLI and the route) can be continued."""
        body = {"mission": "hello", "session_id": "-dash"}
        assert 200 == (await client.post("/api/v1/execute", json=body)).status_code
        response = await client.get("/api/v1/sessions/-dash")
        assert (200, 1) == (response.status_code, len(response.json()["missions"]))

    async def test_unknown_session_is_404(self, client: httpx.AsyncClient) -> None:
        """A session nobody used is a 404 naming it."""
        response = await client.get("/api/v1/sessions/never-used")
        assert 404 == response.status_code
        assert "never-used" in response.json()["detail"]

    async def test_no_cache_stores_a_session(self, client: httpx.AsyncClient) -> None:
        """A session's records are private: every answer of the route, GET and HEAD, found
        or not, says ``Cache-Control: no-store``, so no proxy or browser cache keeps them."""
        body = {"mission": "hello", "session_id": "private-1"}
        assert 200 == (await client.post("/api/v1/execute", json=body)).status_code
        answers = [
            await client.request(method, f"/api/v1/sessions/{session}")
            for method in ("GET", "HEAD")
            for session in ("private-1", "never-used")
        ]
        assert [(200, "no-store"), (404, "no-store")] * 2 == [
            (answer.status_code, answer.headers.get("cache-control")) for answer in answers
        ]

    @pytest.mark.parametrize("bad", [".hidden", "a%20b", "x" * 129, "%C3%BC", "a%00"])
    async def test_malformed_id_is_422(self, client: httpx.AsyncClient, bad: str) -> None:
        """An id no store accepts is a 422 with a short reason, never a 500."""
        response = await client.get(f"/api/v1/sessions/{bad}")
        assert 422 == response.status_code

    async def test_slash_is_no_session_route(self, client: httpx.AsyncClient) -> None:
        """An id with an (encoded) slash matches no route at all: 404, nothing read."""
        assert 404 == (await client.get("/api/v1/sessions/..%2Fetc")).status_code


class TestGuard:
    async def test_token_required_when_set(self, tmp_path: Path) -> None:
        """With api.auth_token set, the session route answers 401 without the token."""
        settings = _settings(tmp_path, "file", None, api={"auth_token": "t0ken-s3cret"})
        with serve(create_app(settings)) as live:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
                refused = await client.get("/api/v1/sessions/s")
                allowed = await client.get(
                    "/api/v1/sessions/s", headers={"authorization": "Bearer t0ken-s3cret"}
                )
        assert (401, 404) == (refused.status_code, allowed.status_code)


class _NulTool:
    """A tool that fails with a NUL character in its error, as a tool's output may hold."""

    name = "nul"
    description = "fails with a NUL in its error"
    parameters_schema: dict[str, Any] = {"type": "object", "properties": {}}

    async def execute(self, **_: Any) -> dict[str, Any]:
        return {"success": False, "error": "before\x00after", "error_type": "Nul"}


class TestAwkwardText:
    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_nul_characters_round_trip_on_both_stores(
        self, tmp_path: Path, backend: tuple[str, str | None], agent_type: str
    ) -> None:
        """NUL in the mission text, so in the LLM's answer, and in a tool's error: each
        mission answers 200 and its record reads back as it answered, on PostgreSQL (whose
        text and jsonb refuse NUL) as on the file store; the session goes on after them."""
        app = create_app(_settings(tmp_path, *backend))
        app.state.container.tool_registry.register(_NulTool())
        missions = ["say \x00 back", "tool:nul {}\nReport.", "then \x00 again"]
        with serve(app) as live:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
                sent = []
                for mission in missions:
                    body = {"mission": mission, "agent_type": agent_type, "session_id": "nul"}
                    response = await client.post("/api/v1/execute", json=body)
                    assert 200 == response.status_code, response.text
                    sent.append(response.json())
                read = await client.get("/api/v1/sessions/nul")
        assert 200 == read.status_code
        assert ["completed", "failed", "completed"] == [r["status"] for r in sent]
        assert "\x00" in sent[0]["final_message"]
        assert ("tool 'nul' failed: before\x00after", "Nul") == (
            sent[1]["error"],
            sent[1]["error_type"],
        )
        assert [
            (r["mission_id"], r["final_message"], r["error"], r["error_type"]) for r in sent
        ] == [
            (m["mission_id"], m["final_message"], m["error"], m["error_type"])
            for m in read.json()["missions"]
        ]


class TestStoreFailureLines:
    async def test_error_is_the_class_and_the_message_the_client_sees(self, tmp_path: Path) -> None:
        """A built-in store's failure: each line's `error` is its class, then the message the
        client got (the 500's detail, the failed mission's error after its prefix)."""
        settings = _settings(tmp_path, "file", None)
        settings.state_dir.mkdir(parents=True)
        (settings.state_dir / "s-1.json").write_text("{broken", encoding="utf-8")
        with serve(create_app(settings)) as live, capture_logs() as logs:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
                read = await client.get("/api/v1/sessions/s-1")
                body = {"mission": "hello", "session_id": "s-1"}
                ran = (await client.post("/api/v1/execute", json=body)).json()
        lines = {line["event"]: line for line in logs if line["event"].startswith("state.")}
        prefix = "could not save the session state: "
        assert (500, "StateCorruptedError", True) == (
            read.status_code,
            ran["error_type"],
            ran["error"].startswith(prefix),
        )
        assert (
            f"StateCorruptedError: {read.json()['detail']}" == lines["state.load.failed"]["error"]
        )
        said = ran["error"].removeprefix(prefix)
        assert f"StateCorruptedError: {said}" == lines["state.save.failed"]["error"]
