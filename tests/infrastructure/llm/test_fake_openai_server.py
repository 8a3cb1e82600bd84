"""The fake OpenAI server speaks the wire format the SDK and other clients expect."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from taskforce.core.domain.prompts import MISSION_PREFIX
from tests.support.fake_openai import FakeOpenAIServer

pytestmark = pytest.mark.integration


@pytest.fixture(name="url")
def fixture_url(fake_server: tuple[FakeOpenAIServer, str]) -> str:
    return fake_server[1] + "/chat/completions"


def _body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": MISSION_PREFIX + text}], **extra}


def _events(response: httpx.Response) -> list[str]:
    return [line[len("data: ") :] for line in response.text.splitlines() if line]


class TestFakeOpenAIServer:
    async def test_tool_call_wire_format(self, fake: FakeOpenAIServer, url: str) -> None:
        """Tool calls carry JSON-string arguments and finish_reason tool_calls."""
        tools = [{"type": "function", "function": {"name": "calc", "parameters": {}}}]
        async with httpx.AsyncClient() as client:
            response = await client.post(url, json=_body('tool:calc {"x": 1}', tools=tools))

        choice = response.json()["choices"][0]
        assert "tool_calls" == choice["finish_reason"]
        function = choice["message"]["tool_calls"][0]["function"]
        assert {"name": "calc", "arguments": '{"x": 1}'} == function

    async def test_sse_ends_with_usage_and_done(self, fake: FakeOpenAIServer, url: str) -> None:
        """With include_usage the last chunk before [DONE] has usage and no choices."""
        body = _body("hello there", stream=True, stream_options={"include_usage": True})
        async with httpx.AsyncClient() as client:
            response = await client.post(url, json=body)

        events = _events(response)
        assert "text/event-stream" in response.headers["content-type"]
        assert "[DONE]" == events[-1]
        usage_chunk = json.loads(events[-2])
        assert [] == usage_chunk["choices"]
        assert {"prompt_tokens", "completion_tokens", "total_tokens"} == set(usage_chunk["usage"])

    async def test_sse_without_usage(self, fake: FakeOpenAIServer, url: str) -> None:
        """Without include_usage no chunk carries usage."""
        async with httpx.AsyncClient() as client:
            response = await client.post(url, json=_body("hello", stream=True))

        chunks = [json.loads(e) for e in _events(response)[:-1]]
        assert [] == [c for c in chunks if "usage" in c]

    async def test_llm_error_is_400(self, fake: FakeOpenAIServer, url: str) -> None:
        """A scripted llm:error is an HTTP 400 with an OpenAI error body."""
        async with httpx.AsyncClient() as client:
            response = await client.post(url, json=_body("llm:error"))

        assert 400 == response.status_code
        assert "scripted llm:error directive" == response.json()["error"]["message"]

    async def test_fail_next_then_recovers(self, fake: FakeOpenAIServer, url: str) -> None:
        """fail_next answers the next n requests with the status, then normal service resumes."""
        fake.fail_next(2, 429, retry_after=1)
        async with httpx.AsyncClient() as client:
            statuses = [(await client.post(url, json=_body("hi"))) for _ in range(3)]

        assert [429, 429, 200] == [r.status_code for r in statuses]
        assert "1" == statuses[0].headers["retry-after"]
        assert 3 == len(fake.requests)
