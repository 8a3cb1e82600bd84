"""Both flows through the service with the OpenAI-compatible provider, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taskforce.api.server import create_app
from taskforce.config import Settings
from taskforce.infrastructure.tools import session_folder_name
from tests.api.conftest import CALC_WRITE_MISSION, parse_sse
from tests.api.test_llm_attempts_e2e import _lean_mission_on
from tests.api.test_metrics_e2e import scrape, total
from tests.infrastructure.llm.test_openai_provider import (
    _NESTED_TOO_DEEPLY,
    _chunks,
    _completion,
    _error_finish,
    _frame,
    _tool_choice,
    _tool_delta,
)
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.live_server import LiveServer, serve

pytestmark = pytest.mark.integration


@pytest.fixture(name="openai_service")
def fixture_openai_service(tmp_path: Path) -> Iterator[tuple[LiveServer, FakeOpenAIServer, Path]]:
    """The taskforce app configured for the fake OpenAI-compatible server."""
    fake = FakeOpenAIServer(reported_model="gpt-fake-2026")
    with fake.serve() as base_url:
        settings = Settings(
            state_dir=tmp_path / "state",
            workspace_dir=tmp_path / "ws",
            llm={
                "provider": "openai",
                "base_url": base_url,
                "api_key": "sk-test-key",
                "model": "gpt-test",
            },
        )
        with serve(create_app(settings)) as live:
            yield live, fake, tmp_path / "ws"


class TestOpenAIMissions:
    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_two_tool_mission(
        self, openai_service: tuple[LiveServer, FakeOpenAIServer, Path], agent_type: str
    ) -> None:
        """calculator, then file_write, then the answer, through the OpenAI-compatible provider."""
        live, fake, workspace = openai_service
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            response = await client.post(
                "/api/v1/execute", json={"mission": CALC_WRITE_MISSION, "agent_type": agent_type}
            )
            body = response.json()
            assert ("completed", 2) == (body["status"], body["tool_calls"])
            answer = workspace / session_folder_name(body["session_id"]) / "answer.txt"
            assert "42" == answer.read_text(encoding="utf-8")
            assert all(r.headers["authorization"] == "Bearer sk-test-key" for r in fake.requests)
            samples = await scrape(client)
        calls = total(samples, "taskforce_llm_requests_total", model="gpt-fake-2026")
        assert len(fake.requests) == calls
        assert 0 < total(samples, "taskforce_llm_tokens_total", model="gpt-fake-2026")

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_streaming_mission(
        self, openai_service: tuple[LiveServer, FakeOpenAIServer, Path], agent_type: str
    ) -> None:
        """The SSE mission stream works the same with the OpenAI-compatible provider."""
        live, _, _ = openai_service
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            response = await client.post(
                "/api/v1/execute/stream",
                json={"mission": CALC_WRITE_MISSION, "agent_type": agent_type},
            )
        events = parse_sse(response.text)
        kinds = [kind for kind, _ in events]
        assert 2 == kinds.count("tool_result")
        assert "completed" == events[-1][1]["result"]["status"]

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_llm_error(
        self, openai_service: tuple[LiveServer, FakeOpenAIServer, Path], agent_type: str
    ) -> None:
        """An endpoint error fails the mission with a message and no leaked API key."""
        live, _, _ = openai_service
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            response = await client.post(
                "/api/v1/execute", json={"mission": "llm:error", "agent_type": agent_type}
            )
        body = response.json()
        assert "failed" == body["status"]
        assert body["error"]
        assert "sk-test-key" not in response.text

    @pytest.mark.parametrize("route", ["/api/v1/execute", "/api/v1/execute/stream"])
    async def test_tool_arguments_nested_too_deeply(
        self, openai_service: tuple[LiveServer, FakeOpenAIServer, Path], route: str
    ) -> None:
        """Tool call arguments nested deeper than Python reads are an answer that cannot be
        read: the mission fails as invalid_response, as the LLM failure metric counts it."""
        live, fake, _ = openai_service
        if route.endswith("stream"):
            finish = {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
            fake.stream_next([_frame([_tool_delta(_NESTED_TOO_DEEPLY)]), _frame([finish])])
        else:
            fake.respond_next(_completion([_tool_choice(_NESTED_TOO_DEEPLY)], None))
        result, samples = await _lean_mission_on(live, route)
        assert ("failed", "invalid_response") == (result["status"], result["error_type"])
        assert "nested too deeply" in result["error"]
        assert 1 == total(samples, "taskforce_llm_failures_total")
        assert 1 == total(samples, "taskforce_llm_failures_total", error_type="invalid_response")

    @pytest.mark.parametrize("route", ["/api/v1/execute", "/api/v1/execute/stream"])
    async def test_an_answer_ended_by_an_error(
        self, openai_service: tuple[LiveServer, FakeOpenAIServer, Path], route: str
    ) -> None:
        """A router's answer that ends with ``finish_reason: "error"`` (its upstream refused
        mid-answer) fails the mission as the choice's error names, no retry for a 400, its
        tokens counted: the API result and the metrics agree."""
        live, fake, _ = openai_service
        error = {"code": 400, "message": "Provider refused"}
        usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        if route.endswith("stream"):
            chunks = _chunks("ab")
            chunks[-1]["choices"][0].update(finish_reason="error", error=error)
            fake.stream_next([*chunks[:-1], {**chunks[-1], "usage": usage}])
        else:
            fake.respond_next(_completion([_error_finish(error, "ab")], usage))
        result, samples = await _lean_mission_on(live, route)
        assert ("failed", "bad_request") == (result["status"], result["error_type"])
        assert "the answer carried an error (400): Provider refused" in result["error"]
        assert 1 == len(fake.requests)
        assert 1 == total(samples, "taskforce_llm_failures_total", error_type="bad_request")
        assert 0 == total(samples, "taskforce_llm_retries_total")
        assert 7 == total(samples, "taskforce_llm_tokens_total")
