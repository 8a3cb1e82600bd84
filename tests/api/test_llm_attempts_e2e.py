"""Attempts, error classes, streamed tokens and spend against an OpenAI-compatible server.

The fake server of tests/support/fake_openai.py runs on 127.0.0.1 and answers 429 with
``Retry-After`` then 200, 500 three times, 401, or delays its first chunk; taskforce
talks to it over real HTTP and serves its own metrics from a real uvicorn.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from taskforce.api.server import create_app
from taskforce.config import Settings
from taskforce.core.interfaces.log import text_fields
from tests.api.conftest import parse_sse
from tests.api.test_metrics_e2e import Samples, scrape, total
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.live_server import LiveServer, serve

pytestmark = pytest.mark.integration

_MODEL = "gpt-fake-2026"
_PRICE_IN, _PRICE_OUT = 2.5, 10.0
_FIRST_CHUNK_DELAY = 0.3


@pytest.fixture(name="service")
def fixture_service(tmp_path: Path) -> Iterator[tuple[LiveServer, FakeOpenAIServer]]:
    """taskforce (max_retries=2, no backoff to speak of) in front of the fake server."""
    fake = FakeOpenAIServer(reported_model=_MODEL)
    with fake.serve() as base_url:
        settings = Settings(
            state_dir=tmp_path / "state",
            workspace_dir=tmp_path / "ws",
            llm={
                "provider": "openai",
                "base_url": base_url,
                "api_key": "sk-test-key",
                "model": "gpt-test",
                "max_retries": 2,
                "prices": {"gpt-test": {"input": _PRICE_IN, "output": _PRICE_OUT}},
            },
        )
        with serve(create_app(settings)) as live:
            yield live, fake


async def _mission(live: LiveServer, mission: str) -> tuple[dict[str, object], Samples]:
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
        response = await client.post("/api/v1/execute", json={"mission": mission})
        return response.json(), await scrape(client)


async def _lean_mission_on(live: LiveServer, route: str) -> tuple[dict[str, Any], Samples]:
    """Run a lean mission ``hello`` on ``route``; return its result (streamed: the last
    event's) and the scrape after it."""
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
        response = await client.post(route, json={"mission": "hello", "agent_type": "lean"})
        samples = await scrape(client)
    if route.endswith("/stream"):
        return parse_sse(response.text)[-1][1]["result"], samples
    return response.json(), samples


def _failed_log_types(logs: list[MutableMapping[str, Any]]) -> list[object]:
    return [event["error_type"] for event in logs if event["event"] == "llm.call.failed"]


class TestAttempts:
    async def test_rate_limit_then_success(
        self, service: tuple[LiveServer, FakeOpenAIServer]
    ) -> None:
        """429 with Retry-After, then 200: one rate_limit retry, one successful request."""
        live, fake = service
        fake.fail_next(1, 429, retry_after=0.05)

        body, samples = await _mission(live, "hello")

        assert ("completed", None) == (body["status"], body["error_type"])
        assert 1 == total(samples, "taskforce_llm_retries_total", error_type="rate_limit")
        assert 1 == total(samples, "taskforce_llm_retries_total")
        assert 1 == total(samples, "taskforce_llm_requests_total", status="success")
        assert 0 == total(samples, "taskforce_llm_requests_total", status="error")
        assert 0 == total(samples, "taskforce_llm_failures_total")
        assert 2 == len(fake.requests)

    async def test_server_error_three_times(
        self, service: tuple[LiveServer, FakeOpenAIServer]
    ) -> None:
        """500 three times: two retries and one failure, both server_error, in log and metrics."""
        live, fake = service
        fake.fail_next(3, 500)

        with capture_logs() as logs:
            body, samples = await _mission(live, "hello")

        assert ("failed", "server_error") == (body["status"], body["error_type"])
        assert 2 == total(samples, "taskforce_llm_retries_total", error_type="server_error")
        assert 2 == total(samples, "taskforce_llm_retries_total")
        assert 1 == total(samples, "taskforce_llm_failures_total", error_type="server_error")
        assert 1 == total(samples, "taskforce_llm_failures_total")
        assert ["server_error"] == _failed_log_types(logs)
        retried = [e["error_type"] for e in logs if e["event"] == "llm.request.retry"]
        assert ["server_error", "server_error"] == retried

    @pytest.mark.parametrize("route", ["/api/v1/execute", "/api/v1/execute/stream"])
    async def test_a_failure_says_its_status_in_plain_words(
        self, service: tuple[LiveServer, FakeOpenAIServer], route: str
    ) -> None:
        """The mission's error says the status and the server's reason, no SDK class name
        nor provider, on either route; its llm.call.failed line describes that same text,
        under the metrics' error_type."""
        live, fake = service
        fake.fail_next(3, 503)

        with capture_logs() as logs:
            body, samples = await _lean_mission_on(live, route)

        said = "HTTP 503 Service Unavailable: injected failure 503"
        assert (f"LLM call failed: {said}", "server_error") == (body["error"], body["error_type"])
        (failed,) = [e for e in logs if e["event"] == "llm.call.failed"]
        described = {key: failed[key] for key in ("error_chars", "error_sha256", "error_type")}
        assert {**text_fields("error", said), "error_type": "server_error"} == described
        assert 1 == total(samples, "taskforce_llm_failures_total", error_type="server_error")

    @pytest.mark.parametrize("route", ["/api/v1/execute", "/api/v1/execute/stream"])
    async def test_an_error_object_in_a_200_counts_as_its_code_on_either_route(
        self, service: tuple[LiveServer, FakeOpenAIServer], route: str
    ) -> None:
        """A 200 whose body (or stream) is a 429 error object, then the answer: one
        rate_limit retry and one successful request, streamed or not."""
        live, fake = service
        error = {"error": {"code": 429, "message": "slow down"}}
        if route.endswith("/stream"):
            fake.stream_next([error])
        else:
            fake.respond_next(error)

        with capture_logs() as logs:
            body, samples = await _lean_mission_on(live, route)

        assert ("completed", None) == (body["status"], body["error_type"])
        assert 1 == total(samples, "taskforce_llm_retries_total", error_type="rate_limit")
        assert 1 == total(samples, "taskforce_llm_requests_total", status="success")
        assert 0 == total(samples, "taskforce_llm_failures_total")
        retried = [e["error_type"] for e in logs if e["event"] == "llm.request.retry"]
        assert ["rate_limit"] == retried

    async def test_auth_is_not_retried(self, service: tuple[LiveServer, FakeOpenAIServer]) -> None:
        """401: no retry, one auth failure, the same error_type in the log line."""
        live, fake = service
        fake.fail_next(3, 401)

        with capture_logs() as logs:
            body, samples = await _mission(live, "hello")

        assert ("failed", "auth") == (body["status"], body["error_type"])
        assert 0 == total(samples, "taskforce_llm_retries_total")
        assert 1 == total(samples, "taskforce_llm_failures_total", error_type="auth")
        assert ["auth"] == _failed_log_types(logs)
        assert 1 == len(fake.requests)


class TestStreamedTokens:
    async def test_an_event_that_is_not_an_object_is_one_invalid_response(
        self, service: tuple[LiveServer, FakeOpenAIServer]
    ) -> None:
        """``data: null`` first in a streamed turn: invalid_response, said so, in the result,
        the log line and the metrics alike, and not retried."""
        live, fake = service
        fake.stream_next(["null"])

        with capture_logs() as logs:
            async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
                response = await client.post(
                    "/api/v1/execute/stream", json={"mission": "hello", "agent_type": "lean"}
                )
                samples = await scrape(client)

        result = parse_sse(response.text)[-1][1]["result"]
        assert ("failed", "invalid_response") == (result["status"], result["error_type"])
        assert "a streamed event is null, not a JSON object" in result["error"]
        assert ["invalid_response"] == _failed_log_types(logs)
        assert 1 == total(samples, "taskforce_llm_failures_total", error_type="invalid_response")
        assert 1 == total(samples, "taskforce_llm_failures_total")
        assert 1 == len(fake.requests)

    async def test_tokens_reach_the_client_and_ttft_is_recorded(
        self, service: tuple[LiveServer, FakeOpenAIServer]
    ) -> None:
        """A streamed lean mission sends token events and records one TTFT after the delay."""
        live, fake = service
        fake.first_chunk_delay_seconds = _FIRST_CHUNK_DELAY
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            response = await client.post(
                "/api/v1/execute/stream", json={"mission": "say hello", "agent_type": "lean"}
            )
            samples = await scrape(client)

        events = parse_sse(response.text)
        tokens = [data["content"] for kind, data in events if kind == "token"]
        assert len(tokens) > 1
        assert events[-1][1]["result"]["final_message"] == "".join(tokens)
        ttft_count = total(samples, "taskforce_llm_time_to_first_token_seconds_count")
        ttft_sum = total(samples, "taskforce_llm_time_to_first_token_seconds_sum")
        duration = total(samples, "taskforce_llm_request_duration_seconds_sum", operation="stream")
        assert 1 == ttft_count
        assert _FIRST_CHUNK_DELAY <= ttft_sum <= duration
        assert fake.requests[0].body["stream"] is True

    async def test_ttft_leaves_out_the_retry_before_the_stream(
        self, service: tuple[LiveServer, FakeOpenAIServer]
    ) -> None:
        """A 429 with Retry-After, then a stream with a delayed first chunk: the TTFT runs
        from the attempt that streamed, so the wait before it is only in the duration."""
        live, fake = service
        waited = 0.5  # the Retry-After; the backoff (0.5 s) is never shorter
        fake.fail_next(1, 429, retry_after=waited)
        fake.first_chunk_delay_seconds = _FIRST_CHUNK_DELAY
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            await client.post(
                "/api/v1/execute/stream", json={"mission": "say hello", "agent_type": "lean"}
            )
            samples = await scrape(client)

        ttft_sum = total(samples, "taskforce_llm_time_to_first_token_seconds_sum")
        duration = total(samples, "taskforce_llm_request_duration_seconds_sum", operation="stream")
        assert 1 == total(samples, "taskforce_llm_time_to_first_token_seconds_count")
        assert 1 == total(samples, "taskforce_llm_retries_total", error_type="rate_limit")
        assert _FIRST_CHUNK_DELAY <= ttft_sum <= duration - waited

    async def test_a_stream_held_open_after_its_usage_ends_the_call_there(
        self, service: tuple[LiveServer, FakeOpenAIServer]
    ) -> None:
        """A server that holds the stream open after its finish and usage chunks (below
        the deadline, before ``[DONE]``): the mission completes without waiting for it, with
        the answer, one successful request and the tokens of a stream ended at once."""
        live, fake = service
        fake.hold_after_usage_seconds = 5.0

        with capture_logs() as logs:
            held, samples = await _lean_mission_on(live, "/api/v1/execute/stream")

        assert 0 == fake.done_sent, "the call read on to the server's [DONE]"
        fake.hold_after_usage_seconds = 0.0
        ended, after = await _lean_mission_on(live, "/api/v1/execute/stream")
        assert ("completed", ended["final_message"]) == (held["status"], held["final_message"])
        assert [] == _failed_log_types(logs)
        assert 1 == total(samples, "taskforce_llm_requests_total", status="success")
        assert 0 == total(samples, "taskforce_llm_failures_total")
        tokens = total(samples, "taskforce_llm_tokens_total")
        assert 0 < tokens and 2 * tokens == total(after, "taskforce_llm_tokens_total")

    async def test_streamed_tool_call_runs_the_tool(
        self, service: tuple[LiveServer, FakeOpenAIServer]
    ) -> None:
        """A tool call streamed in pieces is assembled and run; usage comes from the last chunk."""
        live, _ = service
        mission = 'tool:calculator {"expression": "6*7"}\nreport'
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            response = await client.post("/api/v1/execute/stream", json={"mission": mission})
            samples = await scrape(client)

        events = parse_sse(response.text)
        results = [data for kind, data in events if kind == "tool_result"]
        assert [42] == [r["output"] for r in results]
        assert "completed" == events[-1][1]["result"]["status"]
        assert 0 < total(samples, "taskforce_llm_tokens_total", model=_MODEL, token_type="input")


class TestSpend:
    async def test_spend_equals_tokens_times_prices(
        self, service: tuple[LiveServer, FakeOpenAIServer]
    ) -> None:
        """The dated model the server reports is priced by the model asked for."""
        live, _ = service

        _, samples = await _mission(live, 'tool:calculator {"expression": "1+1"}\nok')

        tokens_in = total(samples, "taskforce_llm_tokens_total", model=_MODEL, token_type="input")
        tokens_out = total(samples, "taskforce_llm_tokens_total", model=_MODEL, token_type="output")
        spend = total(samples, "taskforce_llm_cost_usd_total", model=_MODEL)
        assert tokens_in > 0 and tokens_out > 0
        assert pytest.approx((tokens_in * _PRICE_IN + tokens_out * _PRICE_OUT) / 1e6) == spend
        info = total(samples, "taskforce_build_info", llm_provider="openai")
        assert 1 == info


def _unusable_answer(fake: FakeOpenAIServer, route: str) -> None:
    """The server's next answer names ``_MODEL``, reports a usage of 10 + 5 tokens, and
    holds a tool call whose arguments are not JSON: billed, and unusable."""
    call = {"index": 0, "id": "c1", "type": "function"}
    call["function"] = {"name": "calculator", "arguments": "{not json"}
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    head = {"id": "x", "created": 1, "model": _MODEL}
    if route.endswith("/stream"):
        fake.stream_next(
            [
                {**head, "object": "chat.completion.chunk", "choices": [choice]}
                for choice in (
                    {"index": 0, "delta": {"role": "assistant", "content": "so"}},
                    {"index": 0, "delta": {"tool_calls": [call]}},
                    {"index": 0, "delta": {}, "finish_reason": "tool_calls"},
                )
            ]
            + [{**head, "object": "chat.completion.chunk", "choices": [], "usage": usage}]
        )
    else:
        message = {"role": "assistant", "content": "so", "tool_calls": [call]}
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
        answer = {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
        fake.respond_next(answer)


class TestReportedModel:
    @pytest.mark.parametrize("route", ["/api/v1/execute", "/api/v1/execute/stream"])
    async def test_a_failed_answer_counts_under_the_model_it_named(
        self, service: tuple[LiveServer, FakeOpenAIServer], route: str
    ) -> None:
        """The service's first call, answered by ``_MODEL`` (asked ``gpt-test``) with tool
        arguments that are not JSON: on either route the failure, its billed tokens, its
        spend and (streamed) its time to first token count under the model that answered."""
        live, fake = service
        _unusable_answer(fake, route)

        body, samples = await _lean_mission_on(live, route)

        assert ("failed", "invalid_response") == (body["status"], body["error_type"])
        failed = {"error_type": "invalid_response", "model": _MODEL}
        assert 1 == total(samples, "taskforce_llm_failures_total", **failed)
        assert 1 == total(samples, "taskforce_llm_requests_total", model=_MODEL, status="error")
        tokens = total(samples, "taskforce_llm_tokens_total", model=_MODEL)
        spend = total(samples, "taskforce_llm_cost_usd_total", model=_MODEL)
        assert 15 == tokens
        assert pytest.approx((10 * _PRICE_IN + 5 * _PRICE_OUT) / 1e6) == spend
        ttft = total(samples, "taskforce_llm_time_to_first_token_seconds_count", model=_MODEL)
        assert (1 if route.endswith("/stream") else 0) == ttft


class TestTheOtherFraming:
    @pytest.mark.parametrize("route", ["/api/v1/execute", "/api/v1/execute/stream"])
    async def test_an_answer_framed_as_not_asked_completes_and_is_billed(
        self, service: tuple[LiveServer, FakeOpenAIServer], route: str
    ) -> None:
        """A server that streams though not asked to (plain route), or answers a stream
        request with a whole completion (streamed route): the mission completes with the
        answer, one successful request, its 10 + 5 billed tokens and their spend counted."""
        live, fake = service
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        head = {"id": "x", "created": 1, "model": _MODEL}
        if route.endswith("/stream"):
            message = {"role": "assistant", "content": "forty-two"}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            fake.respond_next(
                {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
            )
        else:
            ends: list[tuple[dict[str, str], str | None]] = [({"content": "forty-two"}, None)]
            ends.append(({}, "stop"))
            chunks = [
                {**head, "object": "chat.completion.chunk", "choices": [choice]}
                for choice in (
                    {"index": 0, "delta": delta, "finish_reason": end} for delta, end in ends
                )
            ]
            fake.stream_next([*chunks, {**head, "choices": [], "usage": usage}, "[DONE]"])

        with capture_logs() as logs:
            body, samples = await _lean_mission_on(live, route)

        assert ("completed", "forty-two") == (body["status"], body["final_message"])
        assert 1 == total(samples, "taskforce_llm_requests_total", model=_MODEL, status="success")
        assert 0 == total(samples, "taskforce_llm_failures_total")
        assert [] == _failed_log_types(logs)
        assert 15 == total(samples, "taskforce_llm_tokens_total", model=_MODEL)
        spend = total(samples, "taskforce_llm_cost_usd_total", model=_MODEL)
        assert pytest.approx((10 * _PRICE_IN + 5 * _PRICE_OUT) / 1e6) == spend
        assert route.endswith("/stream") is fake.requests[0].body.get("stream", False)
