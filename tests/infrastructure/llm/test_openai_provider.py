"""The OpenAI-compatible provider against a fake OpenAI server over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import itertools
import json
import socket
import time
import weakref
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, formatdate
from typing import Any

import pytest
import structlog

from taskforce.core.domain.prompts import FINAL_STEP_DESCRIPTION, MISSION_PREFIX, PLAN_PROMPT
from taskforce.core.interfaces import StreamingLLMProviderProtocol
from taskforce.core.interfaces.jsonable import MAX_WRITTEN_DEPTH
from taskforce.errors import LLMProviderError
from taskforce.infrastructure.llm import OpenAICompatibleProvider
from taskforce.infrastructure.llm._openai_http import _CappedBody, _TooLarge
from taskforce.observability.metrics import MetricSet
from taskforce.observability.proxies import observe_llm_provider
from tests.observability.metric_samples import samples
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.raw_upstream import RawUpstream, chunked, raw_response
from tests.support.trickle_server import COMPLETION_BODY, TrickleServer, sse_body

pytestmark = pytest.mark.integration

_KEY = "sk-test-do-not-leak-1234"
_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate arithmetic.",
            "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
        },
    }
]


@pytest.fixture(name="provider")
async def fixture_provider(base_url: str) -> AsyncIterator[OpenAICompatibleProvider]:
    async with OpenAICompatibleProvider(
        "gpt-test", base_url, api_key=_KEY, timeout_seconds=5, backoff_base_seconds=0.01
    ) as provider:
        yield provider


def _chunks(text: str) -> list[dict[str, Any]]:
    """A streamed answer: one chunk per character of ``text``, then its end."""
    base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    deltas: list[dict[str, Any]] = [
        {"index": 0, "delta": {"content": c}, "finish_reason": None} for c in text
    ]
    deltas.append({"index": 0, "delta": {}, "finish_reason": "stop"})
    return [{**base, "choices": [delta]} for delta in deltas]


def _hello_events() -> list[bytes]:
    """The server-sent events of a streamed answer ``hello`` (no ``[DONE]``)."""
    return [b"data: " + json.dumps(c).encode() + b"\n\n" for c in _chunks("hello")]


async def _assert_gzip_stream_says_hello(pieces: list[bytes], *, pause: float) -> None:
    """Stream a gzip body sent as ``pieces`` (one chunk each): the answer is ``hello``, whole.

    No retries: a first attempt that failed must not be hidden by a second.
    """
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"content-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    async with (
        RawUpstream([head, *chunked(pieces)], pause=pause) as upstream,
        OpenAICompatibleProvider("m", upstream.base_url, max_retries=0) as provider,
    ):
        got = [chunk async for chunk in provider.stream(_mission("hi"))]
    assert "hello" == "".join(c.get("content", "") for c in got)
    assert True is got[-1]["done"]


async def _attempts_of_a_failed_call(provider: OpenAICompatibleProvider, route: str) -> Any:
    """Call ``route`` (``stream`` or ``complete``), which must fail; return its attempts."""
    if route == "complete":
        result = await provider.complete(_mission("hi"))
        assert False is result["success"]
        return result["attempts"]
    with pytest.raises(LLMProviderError) as info:
        async for _ in provider.stream(_mission("hi")):
            pass
    return info.value.attempts


#: Tool call arguments that are a JSON object, nested deeper than Python's recursion limit.
_NESTED_TOO_DEEPLY = '{"a": ' * 100_000 + "1" + "}" * 100_000


def _nested_object(levels: int) -> str:
    """A JSON object ``levels`` deep, itself the first level."""
    return '{"a": ' * levels + "1" + "}" * levels


#: An answer (a whole body, or one streamed event) nested deeper than Python decodes.
_NESTED_BODY = b'{"id": "x", "extra": ' + _NESTED_TOO_DEEPLY.encode() + b"}"


def _named_call(name: Any) -> dict[str, Any]:
    """A tool call of a completion's message, named ``name`` (any JSON), no arguments."""
    return {"id": "c1", "type": "function", "function": {"name": name, "arguments": "{}"}}


def _mission(text: str) -> list[Any]:
    return [{"role": "user", "content": MISSION_PREFIX + text}]


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class TestConstruction:
    def test_satisfies_streaming_protocol(self, provider: OpenAICompatibleProvider) -> None:
        """The provider is a streaming LLM provider."""
        assert isinstance(provider, StreamingLLMProviderProtocol)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"model": ""},
            {"base_url": ""},
            {"timeout_seconds": 0},
            {"max_retries": -1},
            {"backoff_base_seconds": float("nan")},
        ],
    )
    def test_rejects_bad_arguments(self, kwargs: dict[str, Any]) -> None:
        """Invalid arguments fail at construction with a ValueError."""
        arguments: dict[str, Any] = {"model": "m", "base_url": "http://127.0.0.1:1/v1", **kwargs}
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            OpenAICompatibleProvider(**arguments)

    def test_repr_hides_key(self, provider: OpenAICompatibleProvider) -> None:
        """The repr names the model and never the API key."""
        text = repr(provider)

        assert "gpt-test" in text
        assert _KEY not in text


class TestComplete:
    async def test_tool_call_is_decoded(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """Native tool calls come back with arguments decoded into a dict."""
        mission = _mission('tool:calculator {"expression": "6*7"}')
        result = await provider.complete(mission, tools=_TOOLS, tool_choice="auto")

        assert True is result["success"]
        assert None is result["content"]
        expected = [{"id": "call_0", "name": "calculator", "arguments": {"expression": "6*7"}}]
        assert expected == result["tool_calls"]
        assert "gpt-test" == result["model"]
        assert {"prompt_tokens", "completion_tokens", "total_tokens"} == set(result["usage"])

    async def test_an_event_stream_answers_a_request_for_a_whole_completion(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A server that streams though asked not to (``stream: false`` disregarded): its
        events are the answer, text, tool calls and usage, from one attempt; not an
        ``invalid_response`` whose billed tokens are lost."""
        base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m-1"}
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        pieces: list[dict[str, Any]] = [
            {"content": "one "},
            {"content": "two"},
            {"tool_calls": [{"index": 0, "id": "k", "function": {"name": "calculator"}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"expression": '}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '"6*7"}'}}]},
        ]
        frames: list[Any] = [
            {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            for delta in pieces
        ]
        frames += [
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
            {**base, "choices": [], "usage": usage},
            "[DONE]",
        ]
        fake.stream_next(frames)

        result = await provider.complete(_mission("hi"), tools=_TOOLS)

        assert (True, "one two", "m-1", usage) == (
            result["success"],
            result["content"],
            result["model"],
            result["usage"],
        )
        expected = [{"id": "k", "name": "calculator", "arguments": {"expression": "6*7"}}]
        assert expected == result["tool_calls"]
        assert [None] == [a.error_type for a in result["attempts"]]
        assert False is fake.requests[0].body.get("stream", False)

    @pytest.mark.parametrize(
        ("frames", "error_type", "requests"),
        [
            ([{"choices": [{"index": 0, "delta": {"content": "cut"}}]}], "connection", 3),
            ([{"error": {"message": "no", "code": 429}}], "rate_limit", 3),
            (["null"], "invalid_response", 1),
        ],
        ids=["cut", "error-object", "not-an-object"],
    )
    async def test_an_event_stream_that_is_no_answer_fails_as_a_stream_would(
        self,
        provider: OpenAICompatibleProvider,
        fake: FakeOpenAIServer,
        frames: list[Any],
        error_type: str,
        requests: int,
    ) -> None:
        """Events to a request for a whole completion fail as the same stream fails: cut
        before a finish_reason (``connection``), an error object (by what it says), an
        event that is no object (``invalid_response``); retried as those are."""
        for _ in range(requests):
            fake.stream_next(frames)

        result = await provider.complete(_mission("hi"))

        assert (False, error_type) == (result["success"], result["error_type"])
        assert [error_type] * requests == [a.error_type for a in result["attempts"]]

    async def test_events_ended_by_an_error_keep_the_usage_after_it(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """Events to a request for a whole completion that an error object ends, a usage
        after it (a router that bills what its upstream wrote): the failure reports it."""
        base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        text = {"index": 0, "delta": {"content": "so"}, "finish_reason": None}
        error = {"error": {"code": 400, "message": "bad tool"}}
        fake.stream_next(
            [{**base, "choices": [text]}, error, {**base, "choices": [], "usage": usage}]
        )

        result = await provider.complete(_mission("hi"))

        assert (False, "bad_request", usage) == (
            result["success"],
            result["error_type"],
            result.get("usage"),
        )

    async def test_request_carries_key_model_and_tools(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """The request has the bearer key, the asked model, the tools and the tool choice."""
        await provider.complete(_mission("hi"), model="gpt-other", tools=_TOOLS, tool_choice="auto")

        (request,) = fake.requests
        assert f"Bearer {_KEY}" == request.headers["authorization"]
        assert "gpt-other" == request.body["model"]
        assert _TOOLS == request.body["tools"]
        assert "auto" == request.body["tool_choice"]

    async def test_conversation_reaches_final_answer(
        self, provider: OpenAICompatibleProvider
    ) -> None:
        """Sending back the tool call and its result gets the final text answer."""
        messages = _mission("tool:calculator {}")
        first = await provider.complete(messages, tools=_TOOLS)
        call = first["tool_calls"][0]
        messages += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["name"], "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call["id"], "content": '{"output": 42}'},
        ]

        final = await provider.complete(messages, tools=_TOOLS)

        assert "Completed 1 tool call(s). Last result: 42" == final["content"]
        assert [] == final["tool_calls"]

    async def test_model_is_what_server_reports(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """``model`` in the result is the model the server says it used."""
        fake.reported_model = "gpt-test-2025-01-01"

        result = await provider.complete(_mission("hi"))

        assert "gpt-test-2025-01-01" == result["model"]

    @pytest.mark.parametrize(
        ("arguments", "reason"),
        [
            ("{not json", "not JSON"),
            ("[1, 2]", "not a JSON object"),
            (_NESTED_TOO_DEEPLY, "nested too deeply"),
        ],
        ids=["not-json", "not-an-object", "nested-too-deeply"],
    )
    async def test_bad_tool_arguments_fail(
        self,
        provider: OpenAICompatibleProvider,
        fake: FakeOpenAIServer,
        arguments: str,
        reason: str,
    ) -> None:
        """Tool call arguments that are not a JSON object give a failure naming the tool."""
        fake.respond_next(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-test",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "tool_calls",
                        "message": {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [
                                {
                                    "id": "c1",
                                    "type": "function",
                                    "function": {"name": "calculator", "arguments": arguments},
                                }
                            ],
                        },
                    }
                ],
            }
        )

        result = await provider.complete(_mission("hi"), tools=_TOOLS)

        assert False is result["success"]
        assert "invalid_response" == result["error_type"]
        assert ["invalid_response"] == [a.error_type for a in result["attempts"]]
        assert "'calculator'" in result["error"]
        assert reason in result["error"]

    async def test_a_long_tool_name_is_quoted_by_its_start(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """The failure of a tool call whose name is long quotes its first 80 characters."""
        choice = _tool_choice("{bad")
        choice["message"]["tool_calls"][0]["function"]["name"] = "n" * 10_000
        fake.respond_next(_completion([choice], None))

        result = await provider.complete(_mission("hi"), tools=_TOOLS)

        assert "invalid_response" == result["error_type"]
        assert f"tool call {'n' * 80!r}...[+9920 chars] has arguments" in str(result["error"])

    @pytest.mark.parametrize("choice", [{}, {"index": 0, "message": None}])
    async def test_a_choice_without_a_message_is_invalid_response(
        self, base_url: str, fake: FakeOpenAIServer, choice: dict[str, Any]
    ) -> None:
        """Null fields the SDK lets through fail as invalid_response, with the retry before."""
        fake.fail_next(1, 500)
        fake.respond_next(
            {"id": "x", "object": "chat.completion", "model": "m", "choices": [choice]}
        )
        async with OpenAICompatibleProvider(
            "m", base_url, api_key=_KEY, backoff_base_seconds=0.0
        ) as provider:
            result = await provider.complete(_mission("hi"))

        assert (False, "invalid_response") == (result["success"], result["error_type"])
        assert ["server_error", "invalid_response"] == [a.error_type for a in result["attempts"]]

    async def test_a_page_that_is_not_json_is_invalid_response(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A 200 whose body is an HTML page (a captive proxy, say) fails as invalid_response."""
        fake.respond_next(b"<html><body>Welcome to the proxy</body></html>")

        result = await provider.complete(_mission("hi"))

        assert (False, "invalid_response") == (result["success"], result["error_type"])
        assert "not a chat completion" in result["error"]
        assert ["invalid_response"] == [a.error_type for a in result["attempts"]]

    @pytest.mark.parametrize(
        "message",
        [
            {"role": "assistant", "content": 5},
            {"role": "assistant", "content": ["hi"]},
            {"role": "assistant", "content": [{"type": "text", "text": 5}]},
            {"role": "assistant", "content": None, "tool_calls": [_named_call(None)]},
            {"role": "assistant", "content": None, "tool_calls": [_named_call(["calculator"])]},
        ],
        ids=[
            "content-number",
            "content-part-no-object",
            "content-part-text-a-number",
            "tool-name-null",
            "tool-name-array",
        ],
    )
    async def test_text_of_another_json_kind_is_invalid_response(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer, message: dict[str, Any]
    ) -> None:
        """Content or a tool name that is no string fails the call as invalid_response, as
        it does in a stream, rather than reaching the agent as an answer."""
        fake.respond_next(_answered(message))

        result = await provider.complete(_mission("hi"), tools=_TOOLS)

        assert (False, "invalid_response") == (result["success"], result["error_type"])
        assert ["invalid_response"] == [a.error_type for a in result["attempts"]]


class TestResolvedModel:
    async def test_a_failure_is_reported_as_the_model_the_server_answered_with(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """Asked for ``gpt-4o``, answered as ``gpt-4o-2024-08-06``: a later failure, which the
        server names no model for, is reported as that model, streamed or not; a failure
        teaches nothing (before any answer it is the model asked for)."""
        fake.fail_next(1, 401)
        before = await provider.complete(_mission("hi"), model="gpt-4o")
        fake.reported_model = "gpt-4o-2024-08-06"
        answered = await provider.complete(_mission("hi"), model="gpt-4o")
        fake.fail_next(1, 401)
        failed = await provider.complete(_mission("hi"), model="gpt-4o")
        fake.fail_next(1, 401)
        again = await provider.complete(_mission("hi"), model="gpt-4o")
        fake.fail_next(1, 401)
        other = await provider.complete(_mission("hi"), model="gpt-4o-mini")

        assert [False, True, False, False, False] == [
            r["success"] for r in (before, answered, failed, again, other)
        ]
        assert ["gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-2024-08-06", "gpt-4o-2024-08-06"] == [
            r["model"] for r in (before, answered, failed, again)
        ]
        assert "gpt-4o-mini" == other["model"]


class TestGenerate:
    async def test_plan_from_prompt(self, provider: OpenAICompatibleProvider) -> None:
        """A planning prompt is answered with the plan as JSON text."""
        result = await provider.generate(PLAN_PROMPT + MISSION_PREFIX + "tool:calculator {}")

        steps = json.loads(result["content"] or "")["steps"]
        assert ["Call tool calculator with {}", FINAL_STEP_DESCRIPTION] == steps
        assert "tool_calls" not in result

    async def test_context_is_a_system_message(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """The context goes first as a JSON system message, the prompt as the user message."""
        await provider.generate("the prompt", context={"b": 2, "a": 1})

        expected = [
            {"role": "system", "content": 'Context (JSON):\n{"a": 1, "b": 2}'},
            {"role": "user", "content": "the prompt"},
        ]
        assert expected == fake.requests[0].body["messages"]


class TestRetries:
    async def test_retries_server_errors_then_succeeds(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """Two 500s are retried; the third attempt's answer is returned."""
        fake.fail_next(2, 500)

        result = await provider.complete(_mission("hi"))

        assert True is result["success"]
        assert 3 == len(fake.requests)

    async def test_failure_after_retries_is_returned(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """After max_retries the failure is returned with its error type and every attempt."""
        fake.fail_next(5, 429)

        with structlog.testing.capture_logs() as logs:
            result = await provider.complete(_mission("hi"))

        assert False is result["success"]
        assert "rate_limit" == result["error_type"]
        assert ["rate_limit"] * 3 == [a.error_type for a in result["attempts"]]
        assert "gpt-test" == result["model"]
        assert 3 == len(fake.requests)
        assert [1, 2] == [e["attempt"] for e in logs if e["event"] == "llm.request.retry"]

    async def test_client_errors_are_not_retried(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A 401 fails at once as ``auth``."""
        fake.fail_next(1, 401)

        result = await provider.complete(_mission("hi"))

        assert "auth" == result["error_type"]
        assert ["auth"] == [a.error_type for a in result["attempts"]]
        assert 1 == len(fake.requests)

    async def test_retry_after_is_honoured(self, base_url: str, fake: FakeOpenAIServer) -> None:
        """A Retry-After hint longer than the backoff is waited for."""
        fake.fail_next(1, 503, retry_after=0.3)
        start = time.perf_counter()
        async with OpenAICompatibleProvider(
            "m", base_url, api_key=_KEY, backoff_base_seconds=0.0
        ) as provider:
            result = await provider.complete(_mission("hi"))

        assert True is result["success"]
        assert time.perf_counter() - start >= 0.3

    @pytest.mark.parametrize("route", ["complete", "stream"])
    async def test_the_wait_before_a_retry_is_reported(
        self, base_url: str, fake: FakeOpenAIServer, route: str
    ) -> None:
        """The attempt after a 503 reports the Retry-After it waited, on the result or the
        last chunk (where a stream's time to first token starts from)."""
        fake.fail_next(1, 503, retry_after=0.05)
        async with OpenAICompatibleProvider(
            "m", base_url, api_key=_KEY, backoff_base_seconds=0.0
        ) as provider:
            if route == "complete":
                attempts = (await provider.complete(_mission("hi")))["attempts"]
            else:
                attempts = [c async for c in provider.stream(_mission("hi"))][-1]["attempts"]

        assert ["server_error", None] == [a.error_type for a in attempts]
        assert 0.0 == attempts[0].waited_seconds
        assert attempts[1].waited_seconds >= 0.05

    @pytest.mark.parametrize("route", ["complete", "generate", "stream"])
    async def test_a_call_cancelled_in_its_retry_carries_the_report(self, route: str) -> None:
        """Cancelled during the retry after a 429: the cancellation carries both attempts,
        so the retry that was logged is counted, on every route."""
        rate_limited = raw_response(429, b'{"error": {"message": "slow down"}}', {})
        async with (
            RawUpstream(rate_limited, answers=1) as upstream,
            OpenAICompatibleProvider("m", upstream.base_url, backoff_base_seconds=0.0) as provider,
        ):
            if route == "stream":
                call: Any = anext(aiter(provider.stream(_mission("hi"))))
            elif route == "complete":
                call = provider.complete(_mission("hi"))
            else:
                call = provider.generate("hi")
            task = asyncio.ensure_future(call)
            await upstream.holding.wait()  # the retry reached the server, and hangs there
            task.cancel()
            with pytest.raises(asyncio.CancelledError) as info:
                await task

        assert ["rate_limit", None] == [a.error_type for a in info.value.attempts]  # type: ignore[attr-defined]

    async def test_timeout_is_returned(self, base_url: str, fake: FakeOpenAIServer) -> None:
        """A request slower than timeout_seconds fails as a ``timeout``."""
        fake.delay_seconds = 0.5
        async with OpenAICompatibleProvider(
            "m", base_url, api_key=_KEY, timeout_seconds=0.1, max_retries=0
        ) as provider:
            result = await provider.complete(_mission("hi"))

        assert "timeout" == result["error_type"]

    async def test_unreachable_server_is_returned(self) -> None:
        """Connection refused is retried, then returned as ``connection``."""
        async with OpenAICompatibleProvider(
            "m", _closed_port_url(), api_key=_KEY, max_retries=1, backoff_base_seconds=0.01
        ) as provider:
            result = await provider.complete(_mission("hi"))

        assert "connection" == result["error_type"]
        assert ["connection"] * 2 == [a.error_type for a in result["attempts"]]


class TestSecrets:
    async def test_key_echoed_by_server_is_redacted(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """An error body that echoes the API key is returned with the key masked."""
        fake.respond_next({"error": {"message": f"bad key {_KEY}", "type": "auth"}}, status=401)

        result = await provider.complete(_mission("hi"))

        assert _KEY not in result["error"]
        assert "bad key ***" in result["error"]

    async def test_key_across_the_cut_of_a_long_reason_is_redacted(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A server's reason is cut to 200 characters after the key is masked: a key the
        cut goes through leaves no part of itself, in the result or the raised error."""
        reason = "x" * 175 + f" key {_KEY}"  # the cut falls inside the key
        fake.respond_next({"error": {"message": reason}}, status=401)
        fake.respond_next({"error": {"message": reason}}, status=401)

        result = await provider.complete(_mission("hi"))
        with pytest.raises(LLMProviderError) as info:
            async for _ in provider.stream(_mission("hi")):
                pass

        expected = "HTTP 401 Unauthorized: " + "x" * 175 + " key ***"
        assert [expected, expected] == [result["error"], str(info.value)]

    async def test_key_not_in_stream_error(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A raised stream error masks the key too."""
        fake.respond_next({"error": {"message": f"bad key {_KEY}", "type": "auth"}}, status=401)

        with pytest.raises(LLMProviderError) as info:
            async for _ in provider.stream(_mission("hi")):
                pass

        assert _KEY not in str(info.value)


class TestStream:
    async def test_text_deltas_then_usage(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """Text deltas stream in order; the last chunk has the server's usage and model."""
        fake.reported_model = "gpt-test-x"

        chunks = [chunk async for chunk in provider.stream(_mission("Say hello"))]

        text = "".join(c.get("content", "") for c in chunks[:-1])
        assert "Scripted answer: Say hello" == text
        done = chunks[-1]
        assert (True, "gpt-test-x") == (done["done"], done["model"])
        assert {"prompt_tokens", "completion_tokens", "total_tokens"} == set(done["usage"])
        body = fake.requests[0].body
        assert (True, {"include_usage": True}) == (body["stream"], body["stream_options"])

    async def test_early_close(self, provider: OpenAICompatibleProvider) -> None:
        """Closing the stream after the first delta ends it without error."""
        stream = provider.stream(_mission("one two three"))
        async with contextlib.aclosing(stream):
            first = await anext(stream)

        assert {"content": "Scripted "} == first
        with pytest.raises(StopAsyncIteration):
            await anext(stream)

    async def test_a_retried_stream_reports_its_attempts_first(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A 429 then a stream: the attempt report comes alone first, completed at the close."""
        fake.fail_next(1, 429, retry_after=0)
        stream = provider.stream(_mission("one two three"))
        async with contextlib.aclosing(stream):
            report = await anext(stream)
            assert ["attempts"] == list(report)
            assert {"content": "Scripted "} == await anext(stream)

        assert ["rate_limit", None] == [attempt.error_type for attempt in report["attempts"]]
        with pytest.raises(StopAsyncIteration):
            await anext(stream)

    async def test_answer_without_events_is_invalid_response(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A 200 to a stream request that holds no server-sent event fails, never retried."""
        fake.respond_next({"id": "c1", "object": "chat.completion", "model": "m", "choices": []})

        with pytest.raises(LLMProviderError, match="without server-sent events") as info:
            async for _ in provider.stream(_mission("hi")):
                pass

        assert "invalid_response" == info.value.error_type
        assert ["invalid_response"] == [a.error_type for a in info.value.attempts]
        assert 1 == len(fake.requests)

    async def test_a_whole_completion_answers_a_stream_request(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A server that disregards ``stream: true`` and answers with a whole completion:
        its text, tool calls and usage are the stream's, from one attempt (not a failed
        ``invalid_response`` whose billed tokens are lost)."""
        function = {"name": "calculator", "arguments": '{"a": 1}'}
        call = {"id": "c9", "type": "function", "function": function}
        message = {"role": "assistant", "content": "done", "tool_calls": [call]}
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        fake.respond_next(
            {
                "id": "c1",
                "object": "chat.completion",
                "model": "m-2024",
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                "usage": usage,
            }
        )

        chunks = [c async for c in provider.stream(_mission("hi"), tools=_TOOLS)]

        assert {"content": "done"} == chunks[0]
        last = chunks[-1]
        assert [{"id": "c9", "name": "calculator", "arguments": {"a": 1}}] == last["tool_calls"]
        assert (usage, "m-2024") == (last["usage"], last["model"])
        assert [None] == [a.error_type for a in last["attempts"]]
        assert 1 == len(fake.requests)

    async def test_cancelled_before_the_first_chunk_carries_the_attempts(
        self, base_url: str, fake: FakeOpenAIServer
    ) -> None:
        """A consumer gone while the retried request waits: the cancellation has the report."""
        fake.fail_next(1, 500)
        fake.first_chunk_delay_seconds = 30
        async with OpenAICompatibleProvider(
            "m", base_url, api_key=_KEY, backoff_base_seconds=0.0, timeout_seconds=60
        ) as provider:
            stream = provider.stream(_mission("hi"))
            reading = asyncio.ensure_future(anext(stream))
            for _ in range(3000):  # until the retry is under way, its first chunk held back
                if len(fake.requests) >= 2:
                    break
                await asyncio.sleep(0.01)
            reading.cancel()
            with pytest.raises(asyncio.CancelledError) as info:
                await reading
            await stream.aclose()

        # the failed attempt, and the one under way when the consumer left
        attempts = info.value.attempts  # type: ignore[attr-defined]
        assert ["server_error", None] == [a.error_type for a in attempts]

    async def test_a_chunk_without_a_delta_is_invalid_response(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A streamed choice without its delta fails the stream as invalid_response."""
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        fake.stream_next([{**chunk, "choices": [{"index": 0}]}, "[DONE]"])

        with pytest.raises(LLMProviderError, match="malformed") as info:
            async for _ in provider.stream(_mission("hi")):
                pass

        assert "invalid_response" == info.value.error_type
        assert ["invalid_response"] == [a.error_type for a in info.value.attempts]

    async def test_stream_cut_before_its_finish_is_connection(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A stream that ends cleanly without a finish_reason lost the rest of the answer."""
        fake.cut_next_stream()
        texts: list[str] = []

        with pytest.raises(LLMProviderError, match="before the model finished") as info:
            async for chunk in provider.stream(_mission("one two three")):
                texts.append(chunk.get("content", ""))

        assert texts  # the deltas before the cut were delivered
        assert "connection" == info.value.error_type
        assert ["connection"] == [a.error_type for a in info.value.attempts]

    async def test_a_usage_on_every_chunk_does_not_finish_the_answer(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A server that sends its usage on every chunk: a stream that ends without a
        finish_reason is still a fragment (connection), its usage kept."""
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        fake.stream_next(
            [
                {
                    **chunk,
                    "choices": [{"index": 0, "delta": {"content": word}}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n},
                }
                for n, word in enumerate(["one ", "two"], start=1)
            ]
            + ["[DONE]"]
        )

        with pytest.raises(LLMProviderError, match="before the model finished") as info:
            async for _ in provider.stream(_mission("hi")):
                pass

        assert "connection" == info.value.error_type
        assert info.value.usage is not None
        assert (5, 2) == (info.value.usage["prompt_tokens"], info.value.usage["completion_tokens"])

    async def test_error_raises_chained(self, provider: OpenAICompatibleProvider) -> None:
        """A failed stream raises LLMProviderError chained to the SDK error."""
        with pytest.raises(LLMProviderError, match="llm:error") as info:
            async for _ in provider.stream(_mission("llm:error")):
                pass

        assert "BadRequestError" == type(info.value.__cause__).__name__

    @pytest.mark.parametrize(
        ("error", "error_type"),
        [
            ({"message": "slow down", "code": 429}, "rate_limit"),
            ({"message": "busy", "type": "overloaded_error"}, "server_error"),
            ({"message": "down", "code": "503"}, "server_error"),
        ],
    )
    async def test_an_error_object_before_the_first_chunk_is_retried(
        self,
        provider: OpenAICompatibleProvider,
        fake: FakeOpenAIServer,
        error: dict[str, Any],
        error_type: str,
    ) -> None:
        """An error a server sends inside a 2xx stream counts as the status or type it
        names, so a rate limit reported that way is retried like a 429."""
        fake.stream_next([{"error": error}])

        chunks = [chunk async for chunk in provider.stream(_mission("hi"))]

        assert True is chunks[-1]["done"]
        assert [error_type, None] == [a.error_type for a in chunks[0]["attempts"]]

    @pytest.mark.parametrize(
        "before",
        [
            [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}],
            [],  # a keep-alive: a chunk without choices
        ],
    )
    async def test_an_error_after_a_chunk_without_text_is_retried(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer, before: list[Any]
    ) -> None:
        """The role-only chunk a server sends first is no answer yet: a 429 after it is
        retried like one before any chunk."""
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        fake.stream_next([{**chunk, "choices": before}, {"error": {"code": 429}}])

        chunks = [chunk async for chunk in provider.stream(_mission("hi"))]

        assert True is chunks[-1]["done"]
        assert ["rate_limit", None] == [a.error_type for a in chunks[0]["attempts"]]

    async def test_an_error_after_reasoning_is_not_retried(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A reasoning model's thinking is output (billed): an error after it ends the
        stream without a retry, as one after text does."""
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        thinking = {"index": 0, "delta": {"reasoning_content": "hmm"}, "finish_reason": None}
        fake.stream_next([{**chunk, "choices": [thinking]}, {"error": {"code": 429}}])

        with pytest.raises(LLMProviderError) as info:
            async for _ in provider.stream(_mission("hi")):
                pass

        assert ["rate_limit"] == [a.error_type for a in info.value.attempts]
        assert 1 == len(fake.requests)

    @pytest.mark.parametrize(
        ("frame", "error_type"),
        [
            # a first event that is no object: an invalid_response attempt, counted
            ("[1, 2]", "invalid_response"),
            ('"hello"', "invalid_response"),
            ("5", "invalid_response"),
            # an error object whose code is no status (a superscript digit, 5000 digits):
            # `other`, never a ValueError out of the provider
            ({"error": {"message": "odd", "code": "\u00b2"}}, "other"),
            ({"error": {"message": "odd", "code": "9" * 5000}}, "other"),
            ({"error": {"message": "odd", "code": None}}, "other"),
            ({"error": {"message": "odd", "code": 3.5}}, "other"),
        ],
    )
    async def test_an_odd_first_event_fails_one_counted_attempt(
        self,
        provider: OpenAICompatibleProvider,
        fake: FakeOpenAIServer,
        frame: Any,
        error_type: str,
    ) -> None:
        """Whatever the first event is, the stream fails with one attempt of a known type."""
        fake.stream_next([frame])

        with pytest.raises(LLMProviderError) as info:
            async for _ in provider.stream(_mission("hi")):
                pass

        assert (error_type, [error_type]) == (
            info.value.error_type,
            [a.error_type for a in info.value.attempts],
        )

    @pytest.mark.parametrize(
        ("frame", "kind"),
        [
            ("null", "null"),
            ("[1, 2]", "an array"),
            ('"hello"', "a string"),
            ("5", "a number"),
            ("true", "a boolean"),
        ],
    )
    @pytest.mark.parametrize("after_text", [False, True], ids=["first", "after-text"])
    async def test_an_event_that_is_not_an_object_is_named_so(
        self,
        provider: OpenAICompatibleProvider,
        fake: FakeOpenAIServer,
        frame: str,
        kind: str,
        after_text: bool,
    ) -> None:
        """``data: null`` (or another JSON value that is no object), first or later, fails
        the stream as an invalid_response that says what the event was: not as a stream
        without server-sent events, nor as a stream cut short."""
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        text = {"index": 0, "delta": {"content": "hi"}, "finish_reason": None}
        end = {"index": 0, "delta": {}, "finish_reason": "stop"}
        before = [{**chunk, "choices": [text]}] if after_text else []
        fake.stream_next([*before, frame, {**chunk, "choices": [end]}, "[DONE]"])
        texts: list[str] = []

        with pytest.raises(LLMProviderError) as info:
            async for piece in provider.stream(_mission("hi")):
                texts.append(piece.get("content", ""))

        assert f"a streamed event is {kind}, not a JSON object" == str(info.value)
        assert ("invalid_response", ["invalid_response"]) == (
            info.value.error_type,
            [a.error_type for a in info.value.attempts],
        )
        assert (["hi"] if after_text else []) == texts
        assert 1 == len(fake.requests)

    async def test_a_keep_alive_chunk_without_choices_is_skipped(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """``data: {}`` between deltas (a keep-alive) adds nothing and breaks nothing."""
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        delta = {"index": 0, "delta": {"content": "hi"}, "finish_reason": None}
        end = {"index": 0, "delta": {}, "finish_reason": "stop"}
        frames = [{}, {**chunk, "choices": [delta]}, {}, {**chunk, "choices": [end]}, "[DONE]"]
        fake.stream_next(frames)

        chunks = [chunk async for chunk in provider.stream(_mission("hi"))]

        assert "hi" == "".join(c.get("content", "") for c in chunks)
        assert True is chunks[-1]["done"]

    async def test_stream_retries_before_first_chunk(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """Opening the stream is retried like any request."""
        fake.fail_next(1, 502)

        chunks = [chunk async for chunk in provider.stream(_mission("hi"))]

        assert True is chunks[-1]["done"]
        assert 2 == len(fake.requests)


class TestResponseSize:
    """``max_response_bytes``: no answer body past it is read, whether declared or streamed."""

    @staticmethod
    def _answer(text: str) -> dict[str, Any]:
        return {
            "id": "a",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
        }

    @pytest.mark.parametrize(("length", "refused"), [(1000, False), (5000, True)])
    async def test_an_answer_over_the_limit_fails_without_retry(
        self, base_url: str, fake: FakeOpenAIServer, length: int, refused: bool
    ) -> None:
        """A body whose length is over the limit is invalid_response, not retried; one
        under it is read. The request asks for an uncompressed body."""
        fake.respond_next(self._answer("x" * length))
        async with OpenAICompatibleProvider("m", base_url, max_response_bytes=2048) as provider:
            result = await provider.complete(_mission("hi"))
        assert "identity" == fake.requests[-1].headers["accept-encoding"]
        assert 1 == len(fake.requests)
        if not refused:
            assert (True, "x" * length) == (result["success"], result["content"])
            return
        assert (False, "invalid_response") == (result["success"], result["error_type"])
        assert "larger than 2048 bytes (llm.max_response_bytes)" in result["error"]
        assert ["invalid_response"] == [a.error_type for a in result["attempts"]]

    @pytest.mark.parametrize("declared", [True, False])
    async def test_a_stream_over_the_limit_is_cut(
        self, base_url: str, fake: FakeOpenAIServer, declared: bool
    ) -> None:
        """A stream over the limit is invalid_response: refused whole when its length is
        declared, else counted as it arrives and cut once past the limit."""
        if declared:
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
            delta = {"index": 0, "delta": {"content": "y" * 100}, "finish_reason": None}
            fake.stream_next([{**chunk, "choices": [delta]}] * 100 + ["[DONE]"])
        texts: list[str] = []
        async with OpenAICompatibleProvider("m", base_url, max_response_bytes=4096) as provider:
            with pytest.raises(LLMProviderError, match=r"llm\.max_response_bytes") as info:
                # undeclared: the fake streams a long answer chunk by chunk (chunked encoding)
                async for piece in provider.stream(_mission("word " * 2000)):
                    texts.append(piece.get("content", ""))
        assert "invalid_response" == info.value.error_type
        assert ["invalid_response"] == [a.error_type for a in info.value.attempts]
        assert (0 if declared else 1) <= len("".join(texts)) < 4096

    @pytest.mark.parametrize("encoding", ["gzip", "deflate", "gzip-members"])
    async def test_a_compressed_bomb_is_cut_as_it_inflates(self, encoding: str) -> None:
        """An answer compressed although identity was asked: counted decoded, so a small
        body that unpacks into gigabytes is cut at the limit, once, not retried; the bytes
        of all gzip members count, a bomb in the second as much as in the first."""
        if encoding == "gzip-members":
            packed = gzip.compress(b"{") + gzip.compress(b" " * (16 * 1024 * 1024) + b"}", 9)
            encoding = "gzip"
        else:
            huge = b"{" + b" " * (256 * 1024 * 1024) + b"}"
            packed = zlib.compress(huge, 9) if encoding == "deflate" else gzip.compress(huge, 9)
        assert len(packed) < 1024 * 1024  # under the limit as sent
        response = raw_response(200, packed, {"content-encoding": encoding})
        async with (
            RawUpstream(response) as upstream,
            OpenAICompatibleProvider(
                "m", upstream.base_url, max_response_bytes=1024 * 1024
            ) as provider,
        ):
            result = await provider.complete(_mission("hi"))
        assert ("invalid_response", 1) == (result.get("error_type"), len(upstream.targets))
        assert result["error"].startswith("the answer is larger than 1048576 bytes")

    @pytest.mark.parametrize(
        ("encoding", "body", "expected"),
        [
            # inflated here, read as usual; mtime=0 keeps the test's id the same on every run
            ("gzip", gzip.compress(COMPLETION_BODY, mtime=0), None),
            ("deflate", zlib.compress(COMPLETION_BODY), None),
            ("gzip", b"not gzip at all", "the answer's gzip encoding is broken"),
            ("br", b"\x00", "the answer is encoded with 'br'"),
        ],
    )
    async def test_an_encoded_answer_is_read_or_refused(
        self, encoding: str, body: bytes, expected: str | None
    ) -> None:
        """gzip and deflate are decoded under the limit; a broken or other encoding is an
        invalid_response, not a connection error retried three times."""
        response = raw_response(200, body, {"content-encoding": encoding})
        async with (
            RawUpstream(response) as upstream,
            OpenAICompatibleProvider("m", upstream.base_url) as provider,
        ):
            result = await provider.complete(_mission("hi"))
        if expected is None:
            assert (True, "slow answer " * 20) == (result["success"], result["content"])
            return
        assert ("invalid_response", 1) == (result.get("error_type"), len(upstream.targets))
        assert result["error"].startswith(expected)

    async def test_a_compressed_stream_whose_end_comes_late_is_whole(self) -> None:
        """A gzip stream flushed per event, its trailer after [DONE]: the SDK reads the rest
        of the body again after the end, and the decoding carries on where it stopped."""
        packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        pieces = [packer.compress(e) + packer.flush(zlib.Z_SYNC_FLUSH) for e in _hello_events()]
        pieces.append(packer.compress(b"data: [DONE]\n\n") + packer.flush(zlib.Z_SYNC_FLUSH))
        pieces.append(packer.flush())  # the gzip trailer, a moment later
        await _assert_gzip_stream_says_hello(pieces, pause=0.02)

    async def test_a_gzip_stream_whose_last_member_starts_in_the_read_of_done_is_whole(
        self,
    ) -> None:
        """A member ends with [DONE] and the next (empty) one starts in the same read: the
        SDK stops there and reads the rest anew; the start it left undecoded is not lost."""
        events = _hello_events()
        body = gzip.compress(b"".join([*events, b"data: [DONE]\n\n"])) + gzip.compress(b"")
        cut = len(body) - 15  # five bytes into the empty member's header
        await _assert_gzip_stream_says_hello([body[:cut], body[cut:]], pause=0.02)

    @pytest.mark.parametrize(
        "body",
        [
            gzip.compress(COMPLETION_BODY[:40]) + gzip.compress(COMPLETION_BODY[40:]),
            # members of one byte each, read in pieces that cut through their headers
            b"".join(
                gzip.compress(COMPLETION_BODY[i : i + 1]) for i in range(len(COMPLETION_BODY))
            ),
            # zero bytes between and after members: padding, as gzip reads it
            gzip.compress(COMPLETION_BODY[:40])
            + bytes(7)
            + gzip.compress(COMPLETION_BODY[40:])
            + bytes(3),
        ],
        ids=["two", "one-per-byte", "zero-padded"],
    )
    async def test_a_gzip_body_of_several_members_is_read_whole(self, body: bytes) -> None:
        """Concatenated gzip members (RFC 1952) are all inflated, not only the first."""
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
            b"content-length: %d\r\n\r\n" % len(body)
        )
        pieces = [head, *(body[i : i + 7] for i in range(0, len(body), 7))]
        async with (
            RawUpstream(pieces) as upstream,
            OpenAICompatibleProvider("m", upstream.base_url) as provider,
        ):
            result = await provider.complete(_mission("hi"))
        assert (True, "slow answer " * 20) == (result["success"], result["content"])

    async def test_a_gzip_stream_of_one_member_per_event_is_read_whole(self) -> None:
        """A proxy that compresses each event as a member of its own: every event is read."""
        members = [gzip.compress(e) for e in [*_hello_events(), b"data: [DONE]\n\n"]]
        await _assert_gzip_stream_says_hello(members, pause=0.01)

    @pytest.mark.parametrize(
        ("encoding", "body"),
        [
            ("gzip", gzip.compress(COMPLETION_BODY) + b"trailing junk"),
            # too few bytes for zlib to refuse as a header: refused at the body's end
            ("gzip", gzip.compress(COMPLETION_BODY) + b"\n"),
            ("gzip", gzip.compress(COMPLETION_BODY) + b"\x1f\x8b"),
            ("gzip", gzip.compress(COMPLETION_BODY) + bytes(3) + b"x"),
            ("gzip", gzip.compress(COMPLETION_BODY) + gzip.compress(b" ")[:10]),
            # a body that ends inside a member: the last one cut short
            ("gzip", gzip.compress(COMPLETION_BODY)[:-8]),
            ("gzip", gzip.compress(COMPLETION_BODY) + gzip.compress(b" ")[:-8]),
            ("deflate", zlib.compress(COMPLETION_BODY)[:-4]),
        ],
        ids=["junk", "newline", "magic", "padding-then-x", "header", "trailer", "member", "zlib"],
    )
    async def test_bytes_after_a_gzip_member_that_are_no_member_are_refused(
        self, encoding: str, body: bytes
    ) -> None:
        """What follows a member must be another whole one (or zero padding): anything
        else, however short, and a member cut short are a broken encoding,
        invalid_response, not an answer whose end was dropped unseen."""
        response = raw_response(200, body, {"content-encoding": encoding})
        async with (
            RawUpstream(response) as upstream,
            OpenAICompatibleProvider("m", upstream.base_url) as provider,
        ):
            result = await provider.complete(_mission("hi"))
        assert ("invalid_response", 1) == (result.get("error_type"), len(upstream.targets))
        assert f"the answer's {encoding} encoding is broken" == result["error"]

    async def test_a_deflate_body_read_a_byte_at_a_time(self) -> None:
        """A zlib-wrapped deflate body whose first read is one byte is still told apart."""
        packed = zlib.compress(COMPLETION_BODY)
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-encoding: identity, deflate\r\n"
            b"content-length: %d\r\n\r\n" % len(packed)
        )
        pieces = [head, *(packed[i : i + 1] for i in range(4)), packed[4:]]
        async with (
            RawUpstream(pieces, pause=0.01) as upstream,
            OpenAICompatibleProvider("m", upstream.base_url) as provider,
        ):
            result = await provider.complete(_mission("hi"))
        assert (True, "slow answer " * 20) == (result["success"], result["content"])

    @pytest.mark.parametrize(
        ("status", "headers", "body", "error_type"),
        [
            (503, {"content-encoding": "br"}, b"\x00\x01", "server_error"),
            (429, {"content-encoding": "gzip"}, b"not gzip", "rate_limit"),
            (500, {}, b"x" * 4096, "server_error"),  # over the limit: cut, not refused
        ],
    )
    async def test_an_error_keeps_its_status_whatever_its_body(
        self, status: int, headers: dict[str, str], body: bytes, error_type: str
    ) -> None:
        """An error body that cannot be read (a coding not undone here, a broken one, over
        the limit) is cut or dropped: the error is told by its status, and retried so."""
        async with (
            RawUpstream(raw_response(status, body, headers)) as upstream,
            OpenAICompatibleProvider(
                "m", upstream.base_url, max_response_bytes=1024, backoff_base_seconds=0.0
            ) as provider,
        ):
            result = await provider.complete(_mission("hi"))
        assert [error_type] * 3 == [a.error_type for a in result["attempts"]]
        assert 3 == len(upstream.targets)

    async def test_an_error_body_without_end_is_cut(self) -> None:
        """A 500 whose body never ends is read up to the limit, then left: each attempt is
        a quick server_error, not a download that runs to the deadline as a timeout."""

        handlers: list[asyncio.Task[Any]] = []

        async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.append(task)
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 500 X\r\ntransfer-encoding: chunked\r\n\r\n")
                while not writer.is_closing():  # until the client leaves
                    writer.write(b"10000\r\n" + b"x" * 0x10000 + b"\r\n")
                    await writer.drain()
                    if reader.at_eof():  # the client closed its side
                        break
            writer.close()

        server = await asyncio.start_server(endless, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with OpenAICompatibleProvider(
                "m",
                f"http://127.0.0.1:{port}/v1",
                timeout_seconds=60,
                max_response_bytes=4096,
                backoff_base_seconds=0.0,
            ) as provider:
                result = await provider.complete(_mission("hi"))
        finally:
            server.close()
            await asyncio.gather(*handlers, return_exceptions=True)  # all ended by now
            await server.wait_closed()
        assert ["server_error"] * 3 == [a.error_type for a in result["attempts"]]

    def test_a_limit_below_one_byte_is_refused(self) -> None:
        """The provider refuses a limit that no answer could meet."""
        with pytest.raises(ValueError, match="max_response_bytes"):
            OpenAICompatibleProvider("m", "http://127.0.0.1:1/v1", max_response_bytes=0)


class TestInflation:
    """How a compressed body is inflated: in bounded pieces, other tasks running between them.

    Driven on the body class itself, fed from memory: over a socket, the reads alone
    would hand the event loop turns, and hide whether inflating does.
    """

    @staticmethod
    async def _fed(*chunks: bytes) -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def test_a_bomb_is_inflated_in_pieces_with_other_tasks_run_between(self) -> None:
        """A body that unpacks past the limit in one read is inflated a bounded piece at a
        time, and another task runs between every two pieces; the limit still holds."""
        limit = 1024 * 1024
        capped = _CappedBody(
            self._fed(gzip.compress(b" " * (8 * limit), 9)), limit, "gzip", strict=True
        )
        turns = 0

        async def other() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        other_task = asyncio.create_task(other())
        await asyncio.sleep(0)  # the other task is under way
        pieces: list[tuple[int, int]] = []  # (size, the other task's turns so far)
        try:
            with pytest.raises(_TooLarge):
                async for piece in capped:
                    pieces.append((len(piece), turns))
        finally:
            other_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await other_task
        sizes = [size for size, _ in pieces]
        turns_seen = [seen for _, seen in pieces]
        assert len(pieces) > 1
        assert sum(sizes) <= limit
        assert all(later > earlier for earlier, later in itertools.pairwise(turns_seen))

    async def test_what_a_read_carries_comes_out_before_the_next_read(self) -> None:
        """Wherever a read ends (inside a long match, a piece's room just filled), all it
        inflates to comes out before the body is read again: nothing waits in the inflater
        for bytes that may come much later (the next event of a stream)."""
        text = b"{" + b" " * (256 * 1024) + b"}"
        packed = gzip.compress(text)
        for split in range(1, len(packed)):
            carried = len(zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(packed[:split]))
            out = bytearray()
            before_second: list[int] = []
            body = self._read_twice(packed[:split], packed[split:], out, before_second)
            async for piece in _CappedBody(body, 2 * len(text), "gzip", strict=True):
                out += piece
            assert (split, carried, text) == (split, before_second[0], bytes(out))

    async def test_a_reader_that_stops_between_pieces_loses_nothing(self) -> None:
        """A reader may stop after any piece and another read on (the SDK stops at [DONE]
        and drains the rest): wherever the reads fall, the same text comes out, the input
        left undecoded (a member's start, the rest of a long match) taken up again."""
        text = b"data: a\n\n" + b" " * (200 * 1024) + b"\n\ndata: [DONE]\n\n"
        packed = gzip.compress(text[:5]) + gzip.compress(text[5:]) + gzip.compress(b"")
        for split in range(1, len(packed)):
            capped = _CappedBody(
                self._fed(packed[:split], packed[split:]), 2 * len(text), "gzip", strict=True
            )
            out = bytearray()
            while (piece := await anext(aiter(capped), None)) is not None:
                out += piece  # one piece per reader, each new reader starting where it left
            assert (split, text) == (split, bytes(out))

    @staticmethod
    async def _read_twice(
        first: bytes, second: bytes, out: bytearray, before_second: list[int]
    ) -> AsyncIterator[bytes]:
        """Feed two reads; note how much had come ``out`` when the second was asked for."""
        yield first
        before_second.append(len(out))
        yield second


class TestHTTPClient:
    """The SDK's own client is kept: its pool, the proxy variables; redirects are not followed."""

    async def test_a_redirect_is_not_followed(self) -> None:
        """A 307 would re-send the whole conversation to wherever it points: an error instead."""
        async with RawUpstream(raw_response(200, COMPLETION_BODY)) as elsewhere:
            moved = raw_response(307, b"", {"location": f"{elsewhere.base_url}/chat/completions"})
            async with (
                RawUpstream(moved) as upstream,
                OpenAICompatibleProvider("m", upstream.base_url) as provider,
            ):
                result = await provider.complete(_mission("hi"))
        assert ("other", 1, []) == (
            result.get("error_type"),
            len(upstream.targets),
            elsewhere.targets,
        )

    async def test_the_proxy_variables_are_honoured(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """HTTP_PROXY reaches the client: the request goes through the proxy, as the SDK's does."""
        async with RawUpstream(raw_response(200, COMPLETION_BODY)) as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.base_url.removesuffix("/v1"))
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            async with OpenAICompatibleProvider("m", "http://llm.upstream.test/v1") as provider:
                result = await provider.complete(_mission("hi"))
        assert True is result["success"]
        assert ["http://llm.upstream.test/v1/chat/completions"] == proxy.targets

    async def test_more_calls_at_once_than_httpx_pools_by_default(self) -> None:
        """150 calls at once all reach the server: the SDK's pool (1,000), not httpx's 100.

        The upstream answers none until all 150 are there: with a pool of 100 the first
        100 would wait for the other 50, which wait for a connection, until the deadline.
        """
        async with (
            RawUpstream(raw_response(200, COMPLETION_BODY), gather=150) as upstream,
            OpenAICompatibleProvider(
                "m", upstream.base_url, timeout_seconds=10, max_retries=0
            ) as provider,
        ):
            results = await asyncio.gather(*(provider.complete(_mission("hi")) for _ in range(150)))
        assert [True] * 150 == [r["success"] for r in results]


class TestErrorTypes:
    @pytest.mark.parametrize(
        ("status", "error_type"),
        [
            (400, "bad_request"),
            (401, "auth"),
            (403, "auth"),
            (404, "bad_request"),
            (408, "timeout"),
            (409, "bad_request"),
            (422, "bad_request"),
            (429, "rate_limit"),
            (500, "server_error"),
            (503, "server_error"),
        ],
    )
    async def test_status_maps_to_error_type(
        self, base_url: str, fake: FakeOpenAIServer, status: int, error_type: str
    ) -> None:
        """Each HTTP status fails the call with its error type from the closed set."""
        fake.fail_next(1, status)
        async with OpenAICompatibleProvider("m", base_url, api_key=_KEY, max_retries=0) as p:
            result = await p.complete(_mission("hi"))

        assert (False, error_type) == (result["success"], result["error_type"])

    async def test_rate_limit_then_success_reports_both_attempts(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A 429 then a 200: one successful call whose report shows the rate-limited attempt."""
        fake.fail_next(1, 429, retry_after=0)

        result = await provider.complete(_mission("hi"))

        assert True is result["success"]
        assert ["rate_limit", None] == [a.error_type for a in result["attempts"]]
        assert all(a.duration_seconds >= 0 for a in result["attempts"])

    async def test_server_error_three_times_fails_with_three_attempts(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """Three 500s with max_retries=2: the call fails as server_error after three attempts."""
        fake.fail_next(3, 500)

        result = await provider.complete(_mission("hi"))

        assert "server_error" == result["error_type"]
        assert ["server_error"] * 3 == [a.error_type for a in result["attempts"]]
        assert 3 == len(fake.requests)

    @pytest.mark.parametrize("status", [400, 401, 403])
    async def test_auth_and_bad_request_never_retried(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer, status: int
    ) -> None:
        """auth and bad_request fail after one attempt, retries left or not."""
        fake.fail_next(3, status)

        result = await provider.complete(_mission("hi"))

        assert 1 == len(result["attempts"])
        assert 1 == len(fake.requests)

    @pytest.mark.parametrize(
        ("hint", "waited"),
        [
            (600, 0.05),  # seconds, longer than the cap
            (format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True), 0.05),
            (format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True), 0.0),
            (formatdate(time.time() + 3600), 0.05),  # "-0000": a date in GMT all the same
        ],
        ids=["seconds", "date-ahead", "date-past", "date-without-zone"],
    )
    async def test_retry_after_is_capped(
        self, base_url: str, fake: FakeOpenAIServer, hint: float | str, waited: float
    ) -> None:
        """A Retry-After (seconds or an HTTP date) is waited for up to retry_after_max_seconds.

        A date already past asks for no wait beyond the backoff (zero here).
        """
        fake.fail_next(1, 429, retry_after=hint)
        async with OpenAICompatibleProvider(
            "m", base_url, api_key=_KEY, backoff_base_seconds=0.0, retry_after_max_seconds=0.05
        ) as provider:
            with structlog.testing.capture_logs() as logs:
                result = await provider.complete(_mission("hi"))

        assert True is result["success"]
        retries = [e for e in logs if e["event"] == "llm.request.retry"]
        assert [(waited, "rate_limit")] == [(e["delay_seconds"], e["error_type"]) for e in retries]

    @pytest.mark.parametrize(
        ("hint", "waited"),
        [
            ("0.02", 0.02),
            ("600", 0.05),  # longer than the cap
            (format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True), 0.05),
        ],
        ids=["seconds", "over-the-cap", "date-ahead"],
    )
    @pytest.mark.parametrize("route", ["stream", "complete"])
    async def test_retry_after_on_a_2xx_with_an_error_object_is_honoured(
        self, hint: str, waited: float, route: str
    ) -> None:
        """A 2xx that holds a 429 error object (in its stream, or as the whole answer, as
        OpenRouter sends one): its Retry-After is waited for before the retry, up to
        retry_after_max_seconds, as a real 429's is."""
        error = b'{"error": {"code": 429, "message": "slow down"}}'
        body, content_type = (
            (b"data: " + error + b"\n\n", "text/event-stream")
            if route == "stream"
            else (error, "application/json")
        )
        headers = {"content-type": content_type, "retry-after": hint}
        async with (
            RawUpstream(raw_response(200, body, headers)) as upstream,
            OpenAICompatibleProvider(
                "m",
                upstream.base_url,
                max_retries=1,
                backoff_base_seconds=0.0,
                retry_after_max_seconds=0.05,
            ) as provider,
        ):
            with structlog.testing.capture_logs() as logs:
                attempts = await _attempts_of_a_failed_call(provider, route)

        assert ["rate_limit"] * 2 == [a.error_type for a in attempts]
        retries = [e for e in logs if e["event"] == "llm.request.retry"]
        assert [(waited, "rate_limit")] == [(e["delay_seconds"], e["error_type"]) for e in retries]

    @pytest.mark.parametrize(
        ("error", "error_type", "attempts", "said"),
        [
            ({"code": 429, "message": "slow down"}, "rate_limit", 3, " (429): slow down"),
            ({"code": 502, "message": "provider down"}, "server_error", 3, " (502): provider down"),
            ({"code": "overloaded", "message": "busy"}, "server_error", 3, " (overloaded): busy"),
            ({"code": 401, "message": "key revoked"}, "auth", 1, " (401): key revoked"),
            ("plain words", "other", 1, ": plain words"),
        ],
    )
    async def test_an_error_object_in_a_2xx_answer_is_read_as_in_a_stream(
        self,
        provider: OpenAICompatibleProvider,
        fake: FakeOpenAIServer,
        error: Any,
        error_type: str,
        attempts: int,
        said: str,
    ) -> None:
        """A 200 whose body is an error object (a router's failure while the model wrote its
        answer) fails as the error it names, retried by the same rule, as in a stream."""
        for _ in range(3):
            fake.respond_next({"error": error})

        result = await provider.complete(_mission("hi"))

        assert (False, error_type) == (result["success"], result["error_type"])
        assert [error_type] * attempts == [a.error_type for a in result["attempts"]]
        assert attempts == len(fake.requests)
        assert f"the answer carried an error{said}" == result["error"]

    async def test_an_error_object_in_a_2xx_answer_then_the_answer(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A 200 holding a 429 error object, then the answer: one retried, successful call."""
        fake.respond_next({"error": {"code": 429, "message": "slow down"}})

        result = await provider.complete(_mission("hi"))

        assert True is result["success"]
        assert ["rate_limit", None] == [a.error_type for a in result["attempts"]]

    async def test_stream_error_carries_type_and_attempts(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A stream that cannot open raises with the error type and every attempt."""
        fake.fail_next(3, 500)

        with pytest.raises(LLMProviderError) as info:
            async for _ in provider.stream(_mission("hi")):
                pass

        assert "server_error" == info.value.error_type
        assert ["server_error"] * 3 == [a.error_type for a in info.value.attempts]

    async def test_stream_auth_is_not_retried(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A 401 on a stream fails at once as auth."""
        fake.fail_next(1, 401)

        with pytest.raises(LLMProviderError) as info:
            async for _ in provider.stream(_mission("hi")):
                pass

        assert ("auth", 1) == (info.value.error_type, len(info.value.attempts))
        assert False is info.value.retryable


class TestMessages:
    """What a failure says, in the result and the raised error alike: plain words, no SDK
    or HTTP class name, no provider (the raised error names it apart); its error_type is
    what it was."""

    @pytest.mark.parametrize(
        ("status", "error_type"),
        [(429, "rate_limit"), (503, "server_error"), (401, "auth"), (400, "bad_request")],
    )
    async def test_a_status_says_its_number_name_and_reason(
        self, base_url: str, fake: FakeOpenAIServer, status: int, error_type: str
    ) -> None:
        """An error status says the status, its name and the server's own message."""
        name = {429: "Too Many Requests", 503: "Service Unavailable", 401: "Unauthorized"}
        name[400] = "Bad Request"
        fake.fail_next(2, status)
        async with OpenAICompatibleProvider("m", base_url, max_retries=0) as provider:
            result = await provider.complete(_mission("hi"))
            with pytest.raises(LLMProviderError) as info:
                async for _ in provider.stream(_mission("hi")):
                    pass

        expected = f"HTTP {status} {name[status]}: injected failure {status}"
        assert (expected, error_type) == (result["error"], result["error_type"])
        raised = (str(info.value), info.value.error_type, info.value.provider)
        assert (expected, error_type, "openai") == raised

    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            (b"<html><body>Bad gateway</body></html>", "HTTP 502 Bad Gateway"),
            (
                json.dumps({"error": {"message": "upstream\n  down " + "x" * 500}}).encode(),
                "HTTP 502 Bad Gateway: " + ("upstream down " + "x" * 500)[:197] + "...",
            ),
        ],
        ids=["page", "long-reason"],
    )
    async def test_a_reason_is_short_and_on_one_line(self, body: bytes, expected: str) -> None:
        """A page is not quoted; a long reason is cut, and its line breaks are spaces."""
        async with (
            RawUpstream(raw_response(502, body)) as upstream,
            OpenAICompatibleProvider("m", upstream.base_url, max_retries=0) as provider,
        ):
            result = await provider.complete(_mission("hi"))
        assert (expected, "server_error") == (result["error"], result["error_type"])

    @pytest.mark.parametrize(
        ("status", "body", "expected"),
        [
            (400, {"error": "plain words"}, "HTTP 400 Bad Request: plain words"),
            (404, {"detail": "Not Found"}, "HTTP 404 Not Found: Not Found"),
            (
                422,
                {"detail": [{"loc": ["body", "model"], "msg": "Field required"}, {"msg": "bad"}]},
                "HTTP 422 Unprocessable Entity: Field required; bad",
            ),
            (500, b"upstream exploded", "HTTP 500 Internal Server Error"),
        ],
        ids=["error-text", "detail", "detail-list", "no-json"],
    )
    async def test_a_reason_is_read_from_the_bodies_servers_send(
        self, base_url: str, fake: FakeOpenAIServer, status: int, body: Any, expected: str
    ) -> None:
        """An error that is text and FastAPI's ``detail`` (a text, or problems with their
        ``msg``) are the reason too; a body that is no JSON is still not quoted."""
        fake.respond_next(body, status=status)
        async with OpenAICompatibleProvider("m", base_url, max_retries=0) as provider:
            result = await provider.complete(_mission("hi"))
        assert expected == result["error"]

    async def test_a_reason_shows_no_control_character(self) -> None:
        """A reason's control characters (an ANSI escape, NUL), bidi overrides and lone
        surrogates are replaced: a message is safe to print, log and store as UTF-8."""
        message = r"red \u001b[31mX nul\u0000 bidi\u202egnp.exe half \ud83d emoji \u2705"
        body = b'{"error": {"message": "%s"}}' % message.encode()
        async with (
            RawUpstream(raw_response(400, body)) as upstream,
            OpenAICompatibleProvider("m", upstream.base_url, max_retries=0) as provider,
        ):
            result = await provider.complete(_mission("hi"))
            with pytest.raises(LLMProviderError) as info:
                async for _ in provider.stream(_mission("hi")):
                    pass
        said = "red \ufffd[31mX nul\ufffd bidi\ufffdgnp.exe half \ufffd emoji \u2705"
        expected = f"HTTP 400 Bad Request: {said}"
        assert [expected, expected] == [result["error"], str(info.value)]

    @pytest.mark.parametrize(
        ("error", "expected"),
        [
            ({"message": "slow down", "code": 429}, " (429): slow down"),
            ({"message": "busy", "code": "overloaded", "type": "x"}, " (overloaded): busy"),
            ({"code": "503"}, " (503)"),
            ({"message": "odd", "code": "not a code!"}, ": odd"),
            ("plain words", ": plain words"),
        ],
    )
    async def test_an_error_object_in_a_stream_says_its_code_and_reason(
        self,
        base_url: str,
        fake: FakeOpenAIServer,
        error: Any,
        expected: str,
    ) -> None:
        """An error object inside a 2xx stream says the code it names and its message; an
        error that is text says that text."""
        fake.stream_next([{"error": error}])
        async with OpenAICompatibleProvider("m", base_url, max_retries=0) as provider:
            with pytest.raises(LLMProviderError) as info:
                async for _ in provider.stream(_mission("hi")):
                    pass
        assert f"the stream carried an error{expected}" == str(info.value)

    async def test_a_connection_error_names_no_class(self) -> None:
        """A refused connection says so, without the SDK's class name."""
        async with OpenAICompatibleProvider("m", _closed_port_url(), max_retries=0) as provider:
            result = await provider.complete(_mission("hi"))
        assert ("Connection error.", "connection") == (result["error"], result["error_type"])

    @pytest.mark.parametrize(
        ("route", "response"),
        [
            ("complete", raw_response(200, _NESTED_BODY, {"content-type": "application/json"})),
            (
                "stream",
                raw_response(
                    200, b"data: " + _NESTED_BODY + b"\n\n", {"content-type": "text/event-stream"}
                ),
            ),
        ],
        ids=["complete", "stream"],
    )
    async def test_an_answer_nested_too_deeply_cannot_be_read(
        self, route: str, response: bytes
    ) -> None:
        """JSON nested deeper than Python decodes: invalid_response (not other), as any
        answer that cannot be read, and not retried."""
        async with (
            RawUpstream(response) as upstream,
            OpenAICompatibleProvider("m", upstream.base_url, max_retries=2) as provider,
        ):
            attempts = await _attempts_of_a_failed_call(provider, route)
        assert ["invalid_response"] == [attempt.error_type for attempt in attempts]

    async def test_an_event_that_cannot_be_decoded_says_the_answer_cannot_be_read(
        self,
    ) -> None:
        """A streamed event that is not JSON: the answer cannot be read, and why."""
        response = raw_response(200, b'data: {"a\n\n', {"content-type": "text/event-stream"})
        async with (
            RawUpstream(response) as upstream,
            OpenAICompatibleProvider("m", upstream.base_url, max_retries=0) as provider,
        ):
            with pytest.raises(LLMProviderError) as info:
                async for _ in provider.stream(_mission("hi")):
                    pass
        assert "invalid_response" == info.value.error_type
        assert str(info.value).startswith("the answer cannot be read (Unterminated")


class TestStreamToolCalls:
    async def test_tool_call_assembled_from_deltas(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A streamed tool call, sent in pieces, arrives whole on the last chunk."""
        mission = _mission('tool:calculator {"expression": "6*7"}')

        chunks = [c async for c in provider.stream(mission, tools=_TOOLS)]

        done = chunks[-1]
        expected = [{"id": "call_0", "name": "calculator", "arguments": {"expression": "6*7"}}]
        assert expected == done["tool_calls"]
        assert [None] == [a.error_type for a in done["attempts"]]
        assert _TOOLS == fake.requests[0].body["tools"]

    async def test_text_answer_has_no_tool_calls(self, provider: OpenAICompatibleProvider) -> None:
        """A text answer streamed with tools ends with an empty tool call list."""
        chunks = [c async for c in provider.stream(_mission("just talk"), tools=_TOOLS)]

        assert [] == chunks[-1]["tool_calls"]
        assert "Scripted answer: just talk" == "".join(c.get("content", "") for c in chunks)

    @pytest.mark.parametrize(
        "delta",
        [
            {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": [1]}}]},
            {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": ["f"]}}]},
            {"content": {"type": "text", "text": "hi"}},
            {"content": [{"type": "text", "text": ["hi"]}]},
        ],
        ids=["arguments-an-array", "name-an-array", "content-an-object", "part-text-an-array"],
    )
    async def test_a_delta_part_that_is_no_text_is_invalid_response(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer, delta: Any
    ) -> None:
        """Text, a tool's name or arguments sent as other JSON than a string fail the stream
        as unusable, as such an answer fails ``complete``: no other error leaves it."""
        choice = {"index": 0, "delta": delta, "finish_reason": "tool_calls"}
        fake.stream_next([{**_CHUNK, "choices": [choice]}, "[DONE]"])

        with pytest.raises(LLMProviderError, match=r"malformed.*not a string") as info:
            async for _ in provider.stream(_mission("hi"), tools=_TOOLS):
                pass

        assert "invalid_response" == info.value.error_type

    @pytest.mark.parametrize("together", [False, True], ids=["chunk-each", "one-chunk"])
    async def test_deltas_without_an_index_are_told_apart_by_their_id(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer, together: bool
    ) -> None:
        """A server that leaves out ``index``: a new id starts the next call, a delta
        without an id goes on with the last one; no two calls are merged into one."""
        parts = [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a"'}},
            {"function": {"arguments": ": 1}"}},
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
        ]
        deltas = [parts] if together else [[part] for part in parts]

        calls = await _streamed_calls(provider, fake, deltas)

        expected = [
            {"id": "c1", "name": "f", "arguments": {"a": 1}},
            {"id": "c2", "name": "g", "arguments": {}},
        ]
        assert expected == calls

    @pytest.mark.parametrize("together", [False, True], ids=["chunk-each", "one-chunk"])
    async def test_whole_calls_sent_under_one_index_are_told_apart_by_their_id(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer, together: bool
    ) -> None:
        """A server translating another API sends parallel calls each whole at ``index``
        0: a new id after a whole call starts the next call, continued under that index;
        a call at another index stays its own, in index order."""
        parts = [
            {"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a": 1}'}},
            {"index": 0, "id": "c2", "function": {"name": "f", "arguments": '{"a"'}},
            {"index": 0, "function": {"arguments": ": 2}"}},
            {"index": 1, "id": "c3", "function": {"name": "g", "arguments": "{}"}},
        ]
        deltas = [parts] if together else [[part] for part in parts]

        calls = await _streamed_calls(provider, fake, deltas)

        told = [(call["id"], call["name"], call["arguments"]) for call in calls]
        assert [("c1", "f", {"a": 1}), ("c2", "f", {"a": 2}), ("c3", "g", {})] == told

    async def test_an_id_that_changes_before_the_arguments_are_whole_is_one_call(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A server that sends a new id with each piece of one call's arguments: one call,
        under the last id, as the index says."""
        parts = [
            {"index": 0, "id": "p1", "function": {"name": "f", "arguments": '{"a"'}},
            {"index": 0, "id": "p2", "function": {"arguments": ": 1}"}},
        ]

        calls = await _streamed_calls(provider, fake, [[part] for part in parts])

        assert [{"id": "p2", "name": "f", "arguments": {"a": 1}}] == calls

    @pytest.mark.parametrize("call_id", [None, ""], ids=["no-id", "empty-id"])
    async def test_deltas_without_an_index_or_id_are_told_apart_by_their_name(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer, call_id: str | None
    ) -> None:
        """Without ``index`` or id, a delta that names a tool after a named call starts
        the next call; the pieces of arguments after it go on with it."""
        parts: list[dict[str, Any]] = [
            {"function": {"name": "f", "arguments": '{"a"'}},
            {"function": {"arguments": ": 1}"}},
            {"function": {"name": "f", "arguments": "{}"}},
        ]
        if call_id is not None:
            parts = [{**part, "id": call_id} for part in parts]

        calls = await _streamed_calls(provider, fake, [[part] for part in parts])

        expected = [
            {"id": "call_0", "name": "f", "arguments": {"a": 1}},
            {"id": "call_1", "name": "f", "arguments": {}},
        ]
        assert expected == calls

    async def test_a_name_repeated_on_every_delta_without_an_index_or_id_is_one_call(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A server that repeats the name on each piece: a call until its arguments are whole."""
        parts: list[dict[str, Any]] = [
            {"function": {"name": "f", "arguments": '{"a"'}},
            {"function": {"name": "f", "arguments": ": 1}"}},
            {"function": {"name": "f", "arguments": '{"a": 2}'}},
        ]

        calls = await _streamed_calls(provider, fake, [[part] for part in parts])

        expected = [
            {"id": "call_0", "name": "f", "arguments": {"a": 1}},
            {"id": "call_1", "name": "f", "arguments": {"a": 2}},
        ]
        assert expected == calls

    @pytest.mark.parametrize(
        "unread",
        [
            ('{"a": ' + "1" * 5000 + "}", "with a number too long"),
            (_NESTED_TOO_DEEPLY, "nested too deeply"),
            (_nested_object(MAX_WRITTEN_DEPTH + 1), "nested too deeply"),
            (_nested_object(2_000), "nested too deeply"),
        ],
        ids=["number-too-long", "nested-too-deeply", "past-the-writers", "past-3.11s-parser"],
    )
    async def test_arguments_python_cannot_read_fail_as_in_a_completion(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer, unread: tuple[str, str]
    ) -> None:
        """Arguments that are JSON Python will not read (a number past its int digits,
        nesting past its recursion limit) fail a stream as ``invalid_response`` naming the
        tool, as they fail ``complete``: no ValueError or RecursionError leaves it. So do
        arguments nested past what the JSON writers keep, on every Python (2,000 levels:
        3.13 reads them, 3.11 does not)."""
        arguments, reason = unread
        fake.respond_next(_completion([_tool_choice(arguments)], None))
        completed = await provider.complete(_mission("hi"), tools=_TOOLS)
        fake.stream_next([_frame([_tool_delta(arguments)]), "[DONE]"])

        with pytest.raises(LLMProviderError) as info:
            async for _ in provider.stream(_mission("hi"), tools=_TOOLS):
                pass

        assert ("invalid_response", "invalid_response") == (
            completed["error_type"],
            info.value.error_type,
        )
        assert completed["error"] == str(info.value)
        assert f"tool call 'calculator' has arguments {reason}" in str(info.value)

    async def test_a_new_id_after_arguments_nested_too_deeply_fails_as_invalid_response(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A call whose arguments nest deeper than Python decodes, then another id under
        its index: the arguments are no whole object, so the pieces are one call, which
        fails as ``invalid_response``, not with a RecursionError."""
        parts = [
            {"index": 0, "id": "c1", "function": {"name": "f", "arguments": _NESTED_TOO_DEEPLY}},
            {"index": 0, "id": "c2", "function": {"name": "g", "arguments": "{}"}},
        ]

        with pytest.raises(LLMProviderError, match="nested too deeply") as info:
            await _streamed_calls(provider, fake, [[part] for part in parts])

        assert "invalid_response" == info.value.error_type

    async def test_a_delta_without_an_index_or_id_naming_another_tool_starts_a_call(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """Mixed: an id on the first call only; a delta naming another tool is the next."""
        parts: list[dict[str, Any]] = [
            {"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a": 1}'}},
            {"function": {"name": "g", "arguments": "{}"}},
        ]

        calls = await _streamed_calls(provider, fake, [[part] for part in parts])

        expected = [
            {"id": "c1", "name": "f", "arguments": {"a": 1}},
            {"id": "call_1", "name": "g", "arguments": {}},
        ]
        assert expected == calls


_USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
_CHUNK = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}


async def _streamed_calls(
    provider: OpenAICompatibleProvider, fake: FakeOpenAIServer, deltas: list[list[Any]]
) -> Any:
    """The tool calls of a stream whose chunks carry these tool call deltas, one list each."""
    frames = [_frame([{"index": 0, "delta": {"tool_calls": d}}]) for d in deltas]
    finish = {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    fake.stream_next([*frames, _frame([finish]), "[DONE]"])
    chunks = [c async for c in provider.stream(_mission("hi"), tools=_TOOLS)]
    return chunks[-1]["tool_calls"]


def _completion(choices: list[Any], usage: Any) -> dict[str, Any]:
    """A chat completion body with these choices and this ``usage``."""
    body = {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": choices}
    return {**body, "usage": usage}


def _tool_choice(arguments: str) -> dict[str, Any]:
    """A choice that calls the calculator with these raw ``arguments``."""
    function = {"name": "calculator", "arguments": arguments}
    call = {"id": "c1", "type": "function", "function": function}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return {"index": 0, "finish_reason": "tool_calls", "message": message}


def _tool_delta(arguments: str) -> dict[str, Any]:
    """A streamed choice that calls the calculator with these raw ``arguments``, whole."""
    function = {"name": "calculator", "arguments": arguments}
    part = {"index": 0, "id": "c1", "type": "function", "function": function}
    return {"index": 0, "delta": {"tool_calls": [part]}, "finish_reason": "tool_calls"}


def _frame(choices: list[Any], **fields: Any) -> dict[str, Any]:
    """A streamed chunk with these choices (and ``usage``, say)."""
    return {**_CHUNK, "choices": choices, **fields}


def _text(text: str) -> dict[str, Any]:
    """A streamed choice that carries ``text``."""
    return {"index": 0, "delta": {"content": text}, "finish_reason": None}


def _finish() -> dict[str, Any]:
    """The streamed choice that ends the answer."""
    return {"index": 0, "delta": {}, "finish_reason": "stop"}


async def _stream_cut_after(frames: list[dict[str, Any]]) -> list[Any]:
    """Stream ``frames`` from a server whose connection drops after them (no ``[DONE]``).

    The body is chunked and its last chunk never comes: the client sees the connection
    closed inside the body, as after a reset or a proxy that cut it.

    Returns:
        The chunks the stream yielded; raises what it raised.
    """
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    events = [b"data: " + json.dumps(frame).encode() + b"\n\n" for frame in frames]
    cut = chunked(events)[:-1]  # without the last chunk, which ends the body
    async with (
        RawUpstream([head, *cut], pause=0.01) as upstream,
        OpenAICompatibleProvider("m", upstream.base_url, max_retries=0) as provider,
    ):
        return [chunk async for chunk in provider.stream(_mission("hi"), tools=_TOOLS)]


class TestUsage:
    """The usage a server reported is kept whatever becomes of the call: it was billed."""

    @pytest.mark.parametrize(
        ("operation", "choices"),
        [
            ("complete", [_tool_choice("{bad")]),
            ("complete", [_tool_choice("[1, 2]")]),
            ("complete", [_tool_choice(_NESTED_TOO_DEEPLY)]),
            ("complete", []),
            ("complete", [{"index": 0, "message": None}]),
            ("generate", []),
        ],
        ids=[
            "arguments-not-json",
            "arguments-not-object",
            "arguments-nested-too-deeply",
            "no-choices",
            "no-message",
            "generate",
        ],
    )
    async def test_a_failed_answer_keeps_the_usage_it_reported(
        self,
        provider: OpenAICompatibleProvider,
        fake: FakeOpenAIServer,
        operation: str,
        choices: list[Any],
    ) -> None:
        """A 200 that cannot be used fails as invalid_response with the usage it reported."""
        fake.respond_next(_completion(choices, _USAGE))

        if operation == "generate":
            result = await provider.generate("hi")
        else:
            result = await provider.complete(_mission("hi"), tools=_TOOLS)

        assert (False, "invalid_response") == (result["success"], result["error_type"])
        assert _USAGE == result.get("usage")

    async def test_a_failure_without_usage_has_none(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A failed answer that reported no usage has no ``usage``, nor has an error status."""
        fake.respond_next(_completion([], None))
        fake.fail_next(1, 400)

        unusable = await provider.complete(_mission("hi"))
        refused = await provider.complete(_mission("hi"))

        assert (False, False) == (unusable["success"], refused["success"])
        assert (False, False) == ("usage" in unusable, "usage" in refused)

    @pytest.mark.parametrize(
        ("usage", "expected"),
        [
            ({"prompt_tokens": 11}, {"prompt_tokens": 11}),
            ({"prompt_tokens": 11, "completion_tokens": None}, {"prompt_tokens": 11}),
            ({}, None),
            ("eleven", None),  # no object: no usage, and the answer all the same
        ],
        ids=["prompt-only", "null-count", "empty", "not-an-object"],
    )
    async def test_a_usage_is_read_count_by_count(
        self,
        provider: OpenAICompatibleProvider,
        fake: FakeOpenAIServer,
        usage: Any,
        expected: dict[str, int] | None,
    ) -> None:
        """The counts a server gave are reported, no null for those it left out; a usage
        that cannot be read costs nothing but itself."""
        fake.respond_next(_completion([_tool_choice("{}")], usage))

        result = await provider.complete(_mission("hi"), tools=_TOOLS)

        assert True is result["success"]
        assert expected == result.get("usage")

    @pytest.mark.parametrize(
        "frames",
        [
            # tool arguments that are not JSON, then the usage
            [_frame([_tool_delta("{bad")]), _frame([], usage=_USAGE), "[DONE]"],
            # tool arguments nested deeper than Python reads, then the usage
            [_frame([_tool_delta(_NESTED_TOO_DEEPLY)]), _frame([], usage=_USAGE), "[DONE]"],
            # an event that is no object after the usage of a chunk before the finish
            [_frame([_text("hi")], usage=_USAGE), "null"],
        ],
        ids=["arguments-not-json", "arguments-nested-too-deeply", "null-after-usage"],
    )
    async def test_a_stream_that_fails_after_its_usage_keeps_it(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer, frames: list[Any]
    ) -> None:
        """The error a stream raises after the server reported usage carries that usage."""
        fake.stream_next(frames)

        with pytest.raises(LLMProviderError) as info:
            async for _ in provider.stream(_mission("hi"), tools=_TOOLS):
                pass

        assert ("invalid_response", _USAGE) == (info.value.error_type, info.value.usage)

    async def test_a_stream_that_fails_before_usage_has_none(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A stream refused before any usage raises an error whose ``usage`` is None."""
        fake.cut_next_stream()

        with pytest.raises(LLMProviderError) as info:
            async for _ in provider.stream(_mission("one two")):
                pass

        assert ("connection", None) == (info.value.error_type, info.value.usage)

    @pytest.mark.parametrize(
        ("usages", "expected"),
        [
            # in parts: merged
            (
                [{"prompt_tokens": 11}, {"completion_tokens": 7}],
                {"prompt_tokens": 11, "completion_tokens": 7},
            ),
            # cumulative, in every chunk: the last of each, not the sum
            (
                [
                    {"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12},
                    {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
                ],
                _USAGE,
            ),
            # a count given, then its null: the count stays
            ([_USAGE, {"prompt_tokens": None, "completion_tokens": 7}], _USAGE),
        ],
        ids=["parts", "cumulative", "null-later"],
    )
    async def test_usage_over_several_chunks_is_merged_count_by_count(
        self,
        provider: OpenAICompatibleProvider,
        fake: FakeOpenAIServer,
        usages: list[dict[str, Any]],
        expected: dict[str, int],
    ) -> None:
        """Each chunk's usage adds the counts it gives to those before; a later count
        replaces the earlier one of its kind. The last usage comes after the finish (a
        usage there ends the stream)."""
        frames: list[Any] = [_frame([_text("hi")], usage=usage) for usage in usages[:-1]]
        frames += [_frame([_finish()]), _frame([], usage=usages[-1])]
        fake.stream_next([*frames, "[DONE]"])

        chunks = [chunk async for chunk in provider.stream(_mission("hi"))]

        assert (True, expected) == (chunks[-1]["done"], chunks[-1].get("usage"))

    async def test_a_usage_in_parts_after_the_finish_is_read_to_its_last_part(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A usage sent in parts after the finish: the stream is read on until it holds both
        counts, then ends."""
        parts = [{"prompt_tokens": 11}, {"completion_tokens": 7}]
        frames = [_frame([_text("hi")]), _frame([_finish()])]
        fake.stream_next([*frames, *(_frame([], usage=part) for part in parts), "[DONE]"])

        chunks = [chunk async for chunk in provider.stream(_mission("hi"))]

        assert {"prompt_tokens": 11, "completion_tokens": 7} == chunks[-1].get("usage")


class TestReasoningTokens:
    """Reasoning is output, in ``completion_tokens``, however the server counts it."""

    @staticmethod
    def _usage(completion: int, total: int, reasoning: Any) -> dict[str, Any]:
        details = {"reasoning_tokens": reasoning}
        return {
            "prompt_tokens": 32,
            "completion_tokens": completion,
            "total_tokens": total,
            "completion_tokens_details": details,
        }

    @pytest.mark.parametrize("route", ["complete", "stream"])
    @pytest.mark.parametrize(
        ("completion", "total", "reasoning", "expected"),
        [
            (9, 135, 94, 103),  # besides completion_tokens (xAI): prompt + completion + reasoning
            (103, 135, 94, 103),  # within it (OpenAI): prompt + completion
            (9, 41, 0, 9),  # no reasoning
            (9, 140, 94, 9),  # a total that is neither sum: the counts as given
            (9, 135, None, 9),  # no reasoning count
        ],
        ids=["besides", "within", "none", "other-total", "null"],
    )
    async def test_reasoning_counted_besides_the_completion_is_added_to_it(
        self,
        provider: OpenAICompatibleProvider,
        fake: FakeOpenAIServer,
        route: str,
        completion: int,
        total: int,
        reasoning: Any,
        expected: int,
    ) -> None:
        """A server whose total is prompt plus completion plus reasoning counts reasoning
        besides the completion: it is added, so output tokens and spend include it."""
        usage = self._usage(completion, total, reasoning)
        if route == "complete":
            fake.respond_next(_completion([_tool_choice("{}")], usage))
            reported = (await provider.complete(_mission("hi"), tools=_TOOLS))["usage"]
        else:
            fake.stream_next([_frame([_text("hi")]), _frame([_finish()], usage=usage), "[DONE]"])
            reported = [c async for c in provider.stream(_mission("hi"))][-1]["usage"]

        assert {"prompt_tokens": 32, "completion_tokens": expected, "total_tokens": total} == (
            reported
        )


class TestStreamBrokenAfterItsAnswer:
    """A connection that drops after the finish_reason takes nothing from the answer."""

    @pytest.mark.parametrize("with_usage", [True, False], ids=["after-usage", "before-usage"])
    async def test_a_stream_cut_after_its_finish_is_its_answer(self, with_usage: bool) -> None:
        """The answer was whole: it ends as delivered, with its usage if it got it."""
        frames = [_frame([_text("hel")]), _frame([_text("lo")]), _frame([_finish()])]
        if with_usage:
            frames.append(_frame([], usage=_USAGE))

        chunks = await _stream_cut_after(frames)

        assert "hello" == "".join(chunk.get("content", "") for chunk in chunks)
        done = chunks[-1]
        assert (True, []) == (done["done"], done["tool_calls"])
        assert (_USAGE if with_usage else None) == done.get("usage")
        assert [None] == [attempt.error_type for attempt in done["attempts"]]

    async def test_a_tool_call_cut_after_its_finish_is_the_answer(self) -> None:
        """A streamed tool call whose finish_reason came arrives whole, the cut unseen."""
        call = _tool_delta('{"expression": "6*7"}')

        chunks = await _stream_cut_after([_frame([call]), _frame([], usage=_USAGE)])

        expected = [{"id": "c1", "name": "calculator", "arguments": {"expression": "6*7"}}]
        assert (expected, _USAGE) == (chunks[-1]["tool_calls"], chunks[-1]["usage"])

    @pytest.mark.parametrize("with_usage", [True, False], ids=["after-usage", "before-usage"])
    async def test_a_stream_held_open_after_its_finish_is_its_answer(
        self, with_usage: bool
    ) -> None:
        """A server that keeps the stream open past the deadline after the finish_reason
        (no [DONE], no end of the body) takes nothing from the answer either."""
        frames = [_frame([_text("hel")]), _frame([_text("lo")]), _frame([_finish()])]
        if with_usage:
            frames.append(_frame([], usage=_USAGE))
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        head += b"transfer-encoding: chunked\r\n\r\n"
        events = b"".join(b"data: " + json.dumps(frame).encode() + b"\n\n" for frame in frames)
        body = chunked([events])[0]  # without the last chunk: the body never ends
        async with (
            RawUpstream(head + body, hold_open=True) as upstream,
            OpenAICompatibleProvider(
                "m", upstream.base_url, max_retries=0, timeout_seconds=0.2
            ) as provider,
        ):
            chunks = [chunk async for chunk in provider.stream(_mission("hi"))]

        assert "hello" == "".join(chunk.get("content", "") for chunk in chunks)
        assert (_USAGE if with_usage else None) == chunks[-1].get("usage")
        assert [None] == [attempt.error_type for attempt in chunks[-1]["attempts"]]

    async def test_a_stream_cut_before_its_finish_is_connection(self) -> None:
        """Cut before the finish_reason, the text is a fragment: a connection failure, with
        the usage a server that sends it on every chunk reported (usage is no finish)."""
        frames = [_frame([_text("hel")], usage=_USAGE), _frame([_text("lo")])]

        with pytest.raises(LLMProviderError) as info:
            await _stream_cut_after(frames)

        assert ("connection", _USAGE) == (info.value.error_type, info.value.usage)
        assert ["connection"] == [attempt.error_type for attempt in info.value.attempts]


class TestStreamHeldOpenAfterItsUsage:
    async def test_the_call_ends_at_its_usage_not_at_the_end_of_the_body(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """Its finish_reason and its usage read, the answer is whole: the stream is closed
        there, not read on while the server holds it open before ``[DONE]`` (below the
        provider's deadline, so reading on would end at the server's ``[DONE]``). The
        answer, its usage and its attempts are those of a stream the server ends at once."""
        fake.hold_after_usage_seconds = 3.0

        held = [chunk async for chunk in provider.stream(_mission("Say hello"))]

        assert 0 == fake.done_sent, "the call read on to the server's [DONE]"
        fake.hold_after_usage_seconds = 0.0
        ended = [chunk async for chunk in provider.stream(_mission("Say hello"))]
        assert [c.get("content") for c in ended] == [c.get("content") for c in held]
        assert (ended[-1]["usage"], ended[-1]["model"]) == (held[-1]["usage"], held[-1]["model"])
        assert [None] == [attempt.error_type for attempt in held[-1]["attempts"]]

    async def test_what_follows_its_finish_and_usage_is_not_read(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """An event that is no object after the finish and the usage is never read: the
        answer was whole before it."""
        fake.stream_next(
            [_frame([_text("hi")]), _frame([_finish()]), _frame([], usage=_USAGE), "null"]
        )

        chunks = [chunk async for chunk in provider.stream(_mission("hi"))]

        assert ("hi", _USAGE) == (chunks[0]["content"], chunks[-1]["usage"])


class TestSeveralChoices:
    """Asked for ``n`` > 1, a stream is the answer of its first choice, as a completion is."""

    @staticmethod
    def _choice(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "finish_reason": finish}

    async def test_the_other_choices_stay_out_of_the_text(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """Role-only deltas of both choices first, then their text interleaved: the text is
        the first choice's alone, the usage (both billed) the stream's."""
        c = self._choice
        frames: list[Any] = [
            _frame([c(1, {"role": "assistant"})]),
            _frame([c(0, {"role": "assistant"})]),
            _frame([c(0, {"content": "A1"}), c(1, {"content": "B1"})]),
            _frame([c(1, {"content": "B2"})]),
            _frame([c(0, {"content": "A2"})]),
            _frame([c(1, {}, "stop"), c(0, {}, "stop")]),
            _frame([], usage=_USAGE),
        ]
        fake.stream_next([*frames, "[DONE]"])

        chunks = [chunk async for chunk in provider.stream(_mission("hi"), n=2)]

        assert "A1A2" == "".join(chunk.get("content", "") for chunk in chunks)
        assert _USAGE == chunks[-1]["usage"]

    async def test_the_other_choices_tool_calls_stay_out(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """Both choices call a tool at tool call index 0: the first choice's call, whole."""
        other = _tool_delta('{"expression": "1+1"}') | {"index": 1}
        fake.stream_next([_frame([_tool_delta('{"expression": "6*7"}'), other]), "[DONE]"])

        chunks = [c async for c in provider.stream(_mission("hi"), tools=_TOOLS, n=2)]

        expected = [{"id": "c1", "name": "calculator", "arguments": {"expression": "6*7"}}]
        assert expected == chunks[-1]["tool_calls"]

    async def test_another_choice_finishing_does_not_end_the_answer(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """The second choice finished, the first did not: the answer is a fragment."""
        c = self._choice
        fake.stream_next(
            [_frame([c(0, {"content": "A1"})]), _frame([c(1, {"content": "B"}, "stop")])]
        )

        with pytest.raises(LLMProviderError) as info:
            _ = [chunk async for chunk in provider.stream(_mission("hi"), n=2)]

        assert "connection" == info.value.error_type


_COMPLETION = COMPLETION_BODY
_SSE = sse_body(20)


class TestDeadline:
    """``timeout_seconds`` bounds a whole attempt, not only the gap between two reads."""

    @pytest.mark.parametrize("trickle_headers", [True, False], ids=["headers", "body"])
    async def test_trickling_answer_is_cut_at_the_deadline(self, trickle_headers: bool) -> None:
        """An upstream sending a byte at a time (each gap under the timeout) ends as a timeout."""
        async with TrickleServer(
            _COMPLETION, interval=0.02, trickle_headers=trickle_headers
        ) as upstream:
            async with OpenAICompatibleProvider(
                "m", upstream.base_url, timeout_seconds=0.3, max_retries=0
            ) as provider:
                result = await provider.complete(_mission("hi"))

            assert ("timeout", False) == (result["error_type"], upstream.finished)
            assert ["timeout"] == [a.error_type for a in result["attempts"]]
            assert "within 0.3 s (llm.timeout_seconds)" in result["error"]

    async def test_trickling_stream_is_cut_at_the_deadline(self) -> None:
        """A stream whose chunks keep coming, each in time, still ends at the attempt's deadline."""
        async with TrickleServer(
            _SSE,
            interval=0.02,
            chunk_size=20,
            trickle_headers=False,
            content_type="text/event-stream",
        ) as upstream:
            async with OpenAICompatibleProvider(
                "m", upstream.base_url, timeout_seconds=0.6, max_retries=0
            ) as provider:
                received: list[str] = []
                with pytest.raises(LLMProviderError) as info:
                    async for chunk in provider.stream(_mission("hi")):
                        received.append(chunk.get("content", ""))

            assert ("timeout", False) == (info.value.error_type, upstream.finished)
            assert received  # chunks arrived before the deadline: the gaps were short
            assert "within 0.6 s (llm.timeout_seconds)" in str(info.value)
            assert ["timeout"] == [a.error_type for a in info.value.attempts]

    async def test_timeout_is_retried_with_a_fresh_deadline(self) -> None:
        """Each retry gets its own deadline: max_retries=1 means two cut attempts."""
        async with TrickleServer(_COMPLETION, interval=0.02, trickle_headers=True) as upstream:
            async with OpenAICompatibleProvider(
                "m", upstream.base_url, timeout_seconds=0.2, max_retries=1, backoff_base_seconds=0
            ) as provider:
                result = await provider.complete(_mission("hi"))

            assert ["timeout", "timeout"] == [a.error_type for a in result["attempts"]]
            assert 2 == upstream.requests


class TestCompressedBodyOnTheWire:
    """A compressed body counts against the limit as it comes, not only as it inflates."""

    @staticmethod
    async def _fed(*chunks: bytes) -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    class _Counted:
        """A body fed from memory that counts the bytes read from it."""

        def __init__(self, chunks: list[bytes]) -> None:
            self.chunks = chunks
            self.read = 0

        async def __aiter__(self) -> AsyncIterator[bytes]:
            for chunk in self.chunks:
                self.read += len(chunk)
                yield chunk

    @pytest.mark.parametrize(
        "tail",
        [
            pytest.param(b"\0" * 4096, id="padding"),
            pytest.param(gzip.compress(b""), id="empty-members"),
        ],
    )
    async def test_what_inflates_to_nothing_still_counts(self, tail: bytes) -> None:
        """Zero padding or empty gzip members after a valid answer inflate to nothing: past
        the limit on the wire the answer is refused, not read (and inflated) without end."""
        limit = 64 * 1024
        answer = gzip.compress(b'{"ok": true}')
        chunks = [answer, *([tail] * (2 * limit // len(tail) + 1))]
        body = self._Counted(chunks)
        with pytest.raises(_TooLarge):
            async for _ in _CappedBody(body, limit, "gzip", strict=True):
                pass
        assert body.read <= limit + len(tail)

    async def test_an_error_body_is_cut_there_quietly(self) -> None:
        """An error body (not strict) past the limit on the wire ends there, without a raise."""
        limit = 64 * 1024
        chunks = [gzip.compress(b'{"error": "x"}'), *([b"\0" * 4096] * 40)]
        body = self._Counted(chunks)
        out = bytearray()
        async for piece in _CappedBody(body, limit, "gzip", strict=False):
            out += piece
        assert b'{"error": "x"}' == bytes(out)
        assert body.read <= limit + 4096

    async def test_an_answer_within_the_limit_is_read_whole(self) -> None:
        """A compressed answer whose wire bytes stay within the limit is read as before."""
        text = b"x" * 50_000
        packed = gzip.compress(text)
        out = bytearray()
        async for piece in _CappedBody(
            self._fed(packed, b"\0" * 100), 64 * 1024, "gzip", strict=True
        ):
            out += piece
        assert text == bytes(out)


def _answered(message: dict[str, Any]) -> dict[str, Any]:
    """A chat completion whose one choice is ``message``, finished, with ``_USAGE``."""
    return _completion([{"index": 0, "finish_reason": "stop", "message": message}], _USAGE)


class TestRefusal:
    """A model that declines answers with a ``refusal`` and no content: that is its answer."""

    async def test_a_refusal_is_the_answer_of_complete(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """``complete`` returns the refusal's text as the content of a success."""
        message = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
        fake.respond_next(_answered(message))

        result = await provider.complete(_mission("hi"), tools=_TOOLS)

        assert (True, "I can't help with that.") == (result["success"], result["content"])
        assert [] == result["tool_calls"]

    async def test_a_streamed_refusal_is_its_text(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A stream's refusal deltas come out as its text deltas, in order."""
        refusals = [
            {"index": 0, "delta": {"refusal": part}, "finish_reason": None}
            for part in ("I can", "'t.")
        ]
        fake.stream_next(
            [_frame([refusal]) for refusal in refusals] + [_frame([_finish()]), "[DONE]"]
        )

        chunks = [chunk async for chunk in provider.stream(_mission("hi"), tools=_TOOLS)]

        assert ["I can", "'t."] == [chunk["content"] for chunk in chunks if "content" in chunk]
        assert [] == chunks[-1]["tool_calls"]

    async def test_content_wins_over_a_refusal(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A message with content is answered by its content, refusal or not."""
        message = {"role": "assistant", "content": "Here it is.", "refusal": "no"}
        fake.respond_next(_answered(message))

        result = await provider.complete(_mission("hi"))

        assert "Here it is." == result["content"]

    async def test_a_refusal_beside_empty_content_is_the_answer_of_complete(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """An empty content hides no refusal: ``complete`` answers as ``stream`` does."""
        message = {"role": "assistant", "content": "", "refusal": "I can't help with that."}
        fake.respond_next(_answered(message))
        fake.stream_next(
            [
                _frame(
                    [{"index": 0, "delta": {"content": "", "refusal": "I can't help with that."}}]
                ),
                _frame([_finish()]),
                "[DONE]",
            ]
        )

        result = await provider.complete(_mission("hi"))
        streamed = [chunk async for chunk in provider.stream(_mission("hi"))]

        assert "I can't help with that." == result["content"]
        assert ["I can't help with that."] == [c["content"] for c in streamed if "content" in c]

    async def test_a_refusal_that_is_no_string_is_an_invalid_response_of_complete(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """A refusal sent as an array fails ``complete`` as ``invalid_response``, as in a stream."""
        message = {"role": "assistant", "content": None, "refusal": ["no"]}
        fake.respond_next(_answered(message))

        result = await provider.complete(_mission("hi"))

        assert (False, "invalid_response") == (result["success"], result.get("error_type"))
        assert "refusal" in result["error"]


class TestIncompleteAnswers:
    """An answer the model did not finish (``finish_reason`` ``length`` or ``content_filter``)
    is still the call's answer, and says so in the log: ``llm.answer.incomplete``."""

    @pytest.mark.parametrize("reason", ["length", "content_filter"])
    async def test_a_completion_cut_short_is_its_answer_and_logged(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer, reason: str
    ) -> None:
        """complete: the text as sent, and one warning naming the reason and the tokens."""
        message = {"role": "assistant", "content": "The answer is forty"}
        choice = {"index": 0, "finish_reason": reason, "message": message}
        usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
        fake.respond_next(_completion([choice], usage))
        with structlog.testing.capture_logs() as logs:
            result = await provider.complete(_mission("hi"))
        assert (True, "The answer is forty") == (result["success"], result["content"])
        incomplete = [log for log in logs if log["event"] == "llm.answer.incomplete"]
        assert [("llm", "warning", "m", reason, 4)] == [
            (
                log["category"],
                log["log_level"],
                log["model"],
                log["finish_reason"],
                log["output_tokens"],
            )
            for log in incomplete
        ]

    @pytest.mark.parametrize("reason", ["length", "content_filter"])
    async def test_a_stream_cut_short_is_its_answer_and_logged(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer, reason: str
    ) -> None:
        """stream: the deltas as sent, a last chunk as usual, and the same warning."""
        chunks = _chunks("abc")
        chunks[-1]["choices"][0]["finish_reason"] = reason
        fake.stream_next([*chunks, "[DONE]"])
        with structlog.testing.capture_logs() as logs:
            got = [chunk async for chunk in provider.stream(_mission("hi"))]
        assert ["a", "b", "c"] == [chunk["content"] for chunk in got if "content" in chunk]
        assert True is got[-1]["done"]
        incomplete = [log for log in logs if log["event"] == "llm.answer.incomplete"]
        assert [(reason, None)] == [
            (log["finish_reason"], log["output_tokens"]) for log in incomplete
        ]

    @pytest.mark.parametrize("route", ["complete", "stream"])
    async def test_the_model_is_logged_as_its_label_has_it(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer, route: str
    ) -> None:
        """A model name the server chose (10,000 characters) is logged cut to 128, as
        ``llm.price.missing`` and the ``model`` label have it: a warning line stays short
        whatever the server says."""
        model = "\u00e9" + "m" * 10_000
        if route == "complete":
            message = {"role": "assistant", "content": "The answer is forty"}
            choice = {"index": 0, "finish_reason": "length", "message": message}
            fake.respond_next({**_completion([choice], None), "model": model})
        else:
            chunks = [{**chunk, "model": model} for chunk in _chunks("abc")]
            chunks[-1]["choices"][0]["finish_reason"] = "length"
            fake.stream_next([*chunks, "[DONE]"])
        with structlog.testing.capture_logs() as logs:
            if route == "complete":
                assert (await provider.complete(_mission("hi")))["success"]
            else:
                _ = [chunk async for chunk in provider.stream(_mission("hi"))]
        incomplete = [log for log in logs if log["event"] == "llm.answer.incomplete"]
        assert ["\u00e9" + "m" * 127] == [log["model"] for log in incomplete]

    @pytest.mark.parametrize("route", ["complete", "stream"])
    async def test_a_finished_answer_logs_nothing(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer, route: str
    ) -> None:
        """``stop`` (and ``tool_calls``) end an answer the model finished: no such line."""
        with structlog.testing.capture_logs() as logs:
            if route == "complete":
                assert (await provider.complete(_mission("hi")))["success"]
            else:
                _ = [chunk async for chunk in provider.stream(_mission("hi"))]
        assert [] == [log for log in logs if log["event"] == "llm.answer.incomplete"]


def _error_finish(error: Any, content: str = "") -> dict[str, Any]:
    """A choice a router ended with ``finish_reason: "error"`` and, unless ``None``, the
    ``error`` object it carries (OpenRouter's, when the model's provider failed mid-answer)."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": "error"}
    if error is not None:
        choice["error"] = error
    return choice | {"message": {"role": "assistant", "content": content}}


class TestAnswersEndedByAnError:
    """A choice that ends with ``finish_reason: "error"`` is no answer, whatever text it
    holds: the call fails as the error object the choice carries names (as one at the top
    of the answer does), retried by the same rule; without one, as ``other``."""

    @pytest.mark.parametrize(
        ("error", "expected"),
        [
            ({"code": 502, "message": "Provider disconnected"}, ("server_error", 3, " (502): ")),
            ({"code": 400, "message": "Provider refused"}, ("bad_request", 1, " (400): ")),
            (None, ("other", 1, "")),
        ],
    )
    async def test_a_completion_ended_by_an_error_fails_as_it_names(
        self,
        provider: OpenAICompatibleProvider,
        fake: FakeOpenAIServer,
        error: Any,
        expected: tuple[str, int, str],
    ) -> None:
        """complete: not the partial text as a success, but the failure the choice names
        (the error type, how many attempts, the code the message quotes)."""
        error_type, attempts, said = expected
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        for _ in range(3):
            fake.respond_next(_completion([_error_finish(error, "The answer is")], usage))

        result = await provider.complete(_mission("hi"))

        assert (False, error_type) == (result["success"], result["error_type"])
        # billed each time: kept, as a failed answer's is, and added over the attempts
        assert {name: count * attempts for name, count in usage.items()} == result.get("usage")
        assert [error_type] * attempts == [a.error_type for a in result["attempts"]]
        assert attempts == len(fake.requests)
        reason = (error or {}).get("message", "")
        assert f"the answer carried an error{said}{reason}" == result["error"]

    async def test_a_stream_ended_by_an_error_after_its_text_fails_unretried(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """stream: the text came, then the error: the stream fails as the error names,
        once (text was sent), with the usage it reported."""
        chunks = _chunks("ab")
        last = chunks[-1]["choices"][0]
        last.update(finish_reason="error", error={"code": 502, "message": "Provider down"})
        chunks[-1]["usage"] = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        fake.stream_next([*chunks, "[DONE]"])

        got: list[Any] = []
        with pytest.raises(LLMProviderError) as info:
            async for chunk in provider.stream(_mission("hi")):
                got.append(chunk)

        assert ["a", "b"] == [chunk["content"] for chunk in got]
        assert ("server_error", True) == (info.value.error_type, info.value.retryable)
        assert ["server_error"] == [a.error_type for a in info.value.attempts]
        assert 7 == (info.value.usage or {}).get("total_tokens")
        assert "the answer carried an error (502): Provider down" == str(info.value)
        assert 1 == len(fake.requests)

    async def test_a_stream_ended_by_an_error_before_any_text_is_retried(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """stream: an error ending the answer before anything of it came is retried like
        an error object before the first chunk."""
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        choice = {"index": 0, "delta": {}, "finish_reason": "error", "error": {"code": 429}}
        fake.stream_next([{**chunk, "choices": [choice]}, "[DONE]"])

        got = [chunk async for chunk in provider.stream(_mission("hi"))]

        assert True is got[-1]["done"]
        assert ["rate_limit", None] == [a.error_type for a in got[0]["attempts"]]

    @pytest.mark.parametrize(
        ("before", "in_the_chunk", "error"),
        [
            # text, then the error; the usage in a chunk of its own after it (OpenRouter)
            ([_frame([_text("ab")])], None, {"code": 502, "message": "Provider down"}),
            # nothing of the answer first, an error not retried: part of the usage in the
            # chunk the error ends, the rest after it
            ([], {"prompt_tokens": 11}, {"code": 400, "message": "Provider refused"}),
        ],
        ids=["after-text", "first"],
    )
    async def test_a_stream_ended_by_an_error_keeps_the_usage_sent_after_it(
        self,
        provider: OpenAICompatibleProvider,
        fake: FakeOpenAIServer,
        before: list[Any],
        in_the_chunk: dict[str, int] | None,
        error: dict[str, Any],
    ) -> None:
        """The usage a router sends after the error that ended the answer was billed: the
        error carries it, as a whole completion's failed result does."""
        choice = {"index": 0, "delta": {}, "finish_reason": "error", "error": error}
        ended = _frame([choice], usage=in_the_chunk) if in_the_chunk else _frame([choice])
        after = {"completion_tokens": 7, "total_tokens": 18}
        fake.stream_next([*before, ended, _frame([], usage=after), "[DONE]"])

        with pytest.raises(LLMProviderError) as info:
            async for _ in provider.stream(_mission("hi")):
                pass

        expected = {**(in_the_chunk or {}), **after}
        assert (1, expected) == (len(fake.requests), info.value.usage)

    @pytest.mark.parametrize("usage_after", [False, True], ids=["usage-on-it", "usage-after"])
    async def test_openrouters_unified_error_chunk_keeps_its_usage(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer, usage_after: bool
    ) -> None:
        """OpenRouter's documented mid-stream error: the error object at the chunk's top,
        its choice ended with ``finish_reason: "error"``. It fails the stream as the error
        names, with the usage on it or after it, as the same error on the choice does."""
        error = {"code": "server_error", "message": "Provider disconnected unexpectedly"}
        ended = {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
        unified = _frame([ended], provider="openai", error=error)
        after = [_frame([], usage=_USAGE)] if usage_after else []
        if not usage_after:
            unified["usage"] = _USAGE
        fake.stream_next([_frame([_text("ab")]), unified, *after, "[DONE]"])

        with pytest.raises(LLMProviderError) as info:
            async for _ in provider.stream(_mission("hi")):
                pass

        assert ("server_error", _USAGE) == (info.value.error_type, info.value.usage)
        assert ["server_error"] == [a.error_type for a in info.value.attempts]
        expected = "the answer carried an error (server_error): Provider disconnected unexpectedly"
        assert expected == str(info.value)

    async def test_the_metrics_count_what_the_failed_stream_reports(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """Behind the proxy, OpenRouter's error chunk is one failure of the type the raised
        error names, and the usage after it is counted as tokens, both under the model its
        chunks named (``m``, asked ``gpt-test``)."""
        error = {"code": "server_error", "message": "Provider disconnected unexpectedly"}
        ended = {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
        after = _frame([], usage=_USAGE)
        fake.stream_next([_frame([_text("ab")]), _frame([ended], error=error), after, "[DONE]"])
        metrics = MetricSet()

        with pytest.raises(LLMProviderError) as info:
            async for _ in observe_llm_provider(provider, metrics).stream(_mission("hi")):
                pass

        assert {("m", "none", "server_error"): 1} == samples(
            metrics, "taskforce_llm_failures_total"
        )
        assert {("m", "none", "input"): 11, ("m", "none", "output"): 7} == samples(
            metrics, "taskforce_llm_tokens_total"
        )
        assert ("server_error", _USAGE) == (info.value.error_type, info.value.usage)

    async def test_an_error_body_keeps_its_usage(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """complete: a 2xx whose body is an error object with a usage keeps the usage, as
        a choice ended by an error does."""
        fake.respond_next({"error": {"code": 400, "message": "refused"}, "usage": _USAGE})

        result = await provider.complete(_mission("hi"))

        assert ("bad_request", _USAGE) == (result["error_type"], result.get("usage"))

    @pytest.mark.parametrize("route", ["complete", "stream"])
    @pytest.mark.parametrize("succeeds", [True, False], ids=["then-answered", "then-failed"])
    async def test_the_usage_of_a_retried_answer_counts_in_the_call(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer, route: str, succeeds: bool
    ) -> None:
        """An answer ended by an error that is retried was billed all the same: its usage
        is added to the call's, whether the retry is answered or fails too."""
        answered: Any = {}  # the usage of the answer alone, by the same route
        if succeeds and route == "complete":
            answered = (await provider.complete(_mission("hi")))["usage"]
        elif succeeds:
            answered = [chunk async for chunk in provider.stream(_mission("hi"))][-1]["usage"]
        billed = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        error = {"code": 502, "message": "Provider down"}
        if route == "complete":
            fake.respond_next(_completion([_error_finish(error)], billed))
        else:
            ended = {"index": 0, "delta": {}, "finish_reason": "error", "error": error}
            fake.stream_next([_frame([ended], usage=billed), "[DONE]"])
        if not succeeds:
            fake.fail_next(2, 500)  # the retries: statuses, without usage

        usage: Any
        if route == "complete":
            usage = (await provider.complete(_mission("hi"))).get("usage")
        elif succeeds:
            chunks = [chunk async for chunk in provider.stream(_mission("hi"))]
            usage = chunks[-1].get("usage")
        else:
            with pytest.raises(LLMProviderError) as info:
                async for _ in provider.stream(_mission("hi")):
                    pass
            usage = info.value.usage

        expected = {name: count + answered.get(name, 0) for name, count in billed.items()}
        assert expected == usage

    async def test_a_stream_held_open_after_its_error_fails_as_that_error(self) -> None:
        """A server that holds the stream open after the error that ended the answer makes
        it no timeout: the usage is looked for up to the deadline, then the call fails as
        the error names."""
        choice = {"index": 0, "delta": {}, "finish_reason": "error", "error": {"code": 400}}
        event = b"data: " + json.dumps(_frame([choice], usage=_USAGE)).encode() + b"\n\n"
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        async with (
            RawUpstream([head, *chunked([event])[:-1]], hold_open=True) as up,
            OpenAICompatibleProvider("m", up.base_url, timeout_seconds=0.2) as provider,
        ):
            with pytest.raises(LLMProviderError) as info:
                async for _ in provider.stream(_mission("hi")):
                    pass

        assert ("bad_request", _USAGE) == (info.value.error_type, info.value.usage)
        assert ["bad_request"] == [a.error_type for a in info.value.attempts]


class TestArgumentsSentAsAnObject:
    """Tool call arguments a server sends as a JSON object, not as the string that encodes
    one (llama.cpp's server, Hugging Face TGI), are that object: the call is made."""

    async def test_a_completion_with_arguments_as_an_object(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        choice = _tool_choice("{}")
        choice["message"]["tool_calls"][0]["function"]["arguments"] = {"expression": "6*7"}
        fake.respond_next(_completion([choice], None))

        result = await provider.complete(_mission("hi"), tools=_TOOLS)

        expected = [{"id": "c1", "name": "calculator", "arguments": {"expression": "6*7"}}]
        assert (True, expected) == (result["success"], result.get("tool_calls"))

    async def test_a_stream_with_arguments_as_an_object(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        function = {"name": "calculator", "arguments": {"expression": "6*7"}}
        call = {"index": 0, "id": "c1", "type": "function", "function": function}
        delta = {"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": "tool_calls"}
        fake.stream_next([{**_CHUNK, "choices": [delta]}, "[DONE]"])

        got = [chunk async for chunk in provider.stream(_mission("hi"), tools=_TOOLS)]

        expected = [{"id": "c1", "name": "calculator", "arguments": {"expression": "6*7"}}]
        assert expected == got[-1].get("tool_calls")


class TestErrorObjectsNamedByType:
    """An error object in a 2xx stream that names no status but a ``type`` of OpenAI's
    (or Anthropic's) error types counts as that type's status would: the same failure
    has one error type, streamed or not. Groq reports a tool call the model wrote badly
    mid-stream as ``invalid_request_error`` (code ``tool_use_failed``; a 400 when not
    streamed), Ollama a failure of its own as ``api_error`` (a 500)."""

    @pytest.mark.parametrize(
        ("kind", "code", "expected"),
        [
            ("invalid_request_error", "tool_use_failed", "bad_request"),
            ("not_found_error", None, "bad_request"),
            ("authentication_error", None, "auth"),
            ("permission_error", None, "auth"),
            ("api_error", None, "server_error"),
        ],
    )
    async def test_an_error_object_is_read_by_its_type(
        self,
        provider: OpenAICompatibleProvider,
        fake: FakeOpenAIServer,
        kind: str,
        code: Any,
        expected: str,
    ) -> None:
        chunks = _chunks("ab")
        error = {"message": "it failed", "type": kind, "code": code}
        fake.stream_next([*chunks[:-1], {"error": error}])

        with pytest.raises(LLMProviderError) as info:
            async for _ in provider.stream(_mission("hi")):
                pass

        assert expected == info.value.error_type
        assert [expected] == [a.error_type for a in info.value.attempts]


#: A reasoning model's answer as Mistral's Magistral sends it: its thinking, then its text,
#: as a list of content parts.
_PARTS: list[Any] = [
    {"type": "thinking", "thinking": [{"type": "text", "text": "Let me think."}]},
    {"type": "text", "text": "The answer "},
    {"type": "reference", "reference_ids": [1]},
    {"type": "text", "text": "is 42."},
]


class TestContentAsAListOfParts:
    """Content a server sends as a list of content parts (Mistral, its Magistral reasoning
    models), whole or streamed, is the text of its text parts, joined in order; thinking
    and other parts are left out of the answer."""

    async def test_a_completion_with_content_parts(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        fake.respond_next(_answered({"role": "assistant", "content": _PARTS}))

        result = await provider.complete(_mission("hi"))

        assert (True, "The answer is 42.") == (result["success"], result.get("content"))

    async def test_a_stream_with_content_parts(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """Each delta's text parts are its text; a delta of thinking alone carries none."""
        deltas = [_PARTS[:1], _PARTS[1:3], _PARTS[3:], []]
        choices = [
            {"index": 0, "delta": {"content": parts}, "finish_reason": None} for parts in deltas
        ]
        frames: list[Any] = [_frame([choice]) for choice in choices]
        fake.stream_next([*frames, _frame([_finish()], usage=_USAGE), "[DONE]"])

        got = [chunk async for chunk in provider.stream(_mission("hi"))]

        assert ["The answer ", "is 42."] == [chunk["content"] for chunk in got[:-1]]
        assert (True, _USAGE) == (got[-1]["done"], got[-1].get("usage"))

    async def test_an_error_after_thinking_parts_is_not_retried(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer
    ) -> None:
        """Thinking sent as content parts is output (billed), as ``reasoning_content`` is:
        an error after it ends the stream without a retry."""
        thinking = {"index": 0, "delta": {"content": _PARTS[:1]}, "finish_reason": None}
        fake.stream_next([_frame([thinking]), {"error": {"code": 429}}])

        with pytest.raises(LLMProviderError) as info:
            async for _ in provider.stream(_mission("hi")):
                pass

        assert (["rate_limit"], 1) == (
            [a.error_type for a in info.value.attempts],
            len(fake.requests),
        )


class TestErrorsWrittenAsJSONLines:
    """An error a server writes mid-stream as a bare JSON line, not as an event (Ollama's
    ``{"error": "..."}`` when the model fails mid-answer, newline-delimited as in its own
    API), fails the stream as the error object says, as the same object sent as an event
    does: not as a stream that ended before its answer (``connection``)."""

    @pytest.mark.parametrize(
        ("error", "expected"),
        [
            ("the model failed", "other"),  # a message alone names no status or type
            ({"message": "the model failed", "type": "api_error"}, "server_error"),
            ({"message": "the model failed", "code": 429}, "rate_limit"),
        ],
        ids=["text", "type", "code"],
    )
    async def test_an_error_line_fails_the_stream_as_it_says(
        self, error: Any, expected: str
    ) -> None:
        text = b"data: " + json.dumps(_frame([_text("ab")])).encode() + b"\n\n"
        body = text + json.dumps({"error": error}).encode() + b"\n"
        headers = {"content-type": "text/event-stream"}
        got: list[Any] = []
        async with (
            RawUpstream(raw_response(200, body, headers)) as upstream,
            OpenAICompatibleProvider("m", upstream.base_url, max_retries=0) as provider,
        ):
            with pytest.raises(LLMProviderError) as info:
                async for chunk in provider.stream(_mission("hi")):
                    got.append(chunk)

        assert ["ab"] == [chunk["content"] for chunk in got]
        assert (expected, [expected]) == (
            info.value.error_type,
            [a.error_type for a in info.value.attempts],
        )
        assert str(info.value).endswith(": the model failed")

    @pytest.mark.parametrize("end", ["", "\n"], ids=["no-line-end", "line-end"])
    async def test_a_json_error_body_fails_the_stream_as_it_says(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer, end: str
    ) -> None:
        """A 200 whose body is a JSON error object, not events, is that error, as the same
        body answered to ``complete`` is: its line end or none makes no difference."""
        body = json.dumps({"error": {"message": "overloaded", "code": 503}}) + end
        for _ in range(6):  # three attempts each
            fake.respond_next(body.encode(), headers={"content-type": "application/json"})

        with pytest.raises(LLMProviderError) as info:
            async for _ in provider.stream(_mission("hi")):
                pass
        result = await provider.complete(_mission("hi"))

        assert ["server_error"] * 3 == [a.error_type for a in info.value.attempts]
        assert "the stream carried an error (503): overloaded" == str(info.value)
        assert ("server_error", 3) == (result["error_type"], len(result["attempts"]))


class TestTextGenerationInferenceErrors:
    """Hugging Face TGI reports a failure as its error's text with its type beside it
    (``{"error": "...", "error_type": "overloaded"}``), with a status when not streamed
    and as an event in a stream: the same failure has the same error type either way."""

    @pytest.mark.parametrize(
        ("kind", "status", "expected"),
        [
            ("overloaded", 429, "rate_limit"),
            ("validation", 422, "bad_request"),
            ("generation", 424, "bad_request"),
            ("incomplete_generation", 500, "server_error"),
        ],
    )
    async def test_an_error_has_one_type_streamed_or_not(
        self, base_url: str, fake: FakeOpenAIServer, kind: str, status: int, expected: str
    ) -> None:
        body = {"error": "Model is overloaded", "error_type": kind}
        fake.respond_next(body, status=status)
        fake.stream_next([_frame([_text("ab")]), body])

        async with OpenAICompatibleProvider("m", base_url, max_retries=0) as provider:
            result = await provider.complete(_mission("hi"))
            with pytest.raises(LLMProviderError) as info:
                async for _ in provider.stream(_mission("hi")):
                    pass

        assert (expected, expected) == (result["error_type"], info.value.error_type)
        assert "the stream carried an error: Model is overloaded" == str(info.value)


class TestToolCallsWithoutType:
    """A whole completion's tool call without its ``type``, or with ``null`` (some vLLM and
    Ollama versions), is a function call, as the same call streamed is (a stream's deltas
    name no type after the first)."""

    @pytest.mark.parametrize("missing", ["left-out", "null"])
    async def test_a_tool_call_without_type_is_a_function_call(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer, missing: str
    ) -> None:
        choice = _tool_choice('{"expression": "6*7"}')
        call = choice["message"]["tool_calls"][0]
        if missing == "null":
            call["type"] = None
        else:
            del call["type"]
        fake.respond_next(_completion([choice], None))

        result = await provider.complete(_mission("hi"), tools=_TOOLS)

        expected = [{"id": "c1", "name": "calculator", "arguments": {"expression": "6*7"}}]
        assert (True, expected) == (result["success"], result.get("tool_calls"))


class _Messages(list[Any]):
    """A conversation a weak reference can follow."""


class TestNoReferenceCycle:
    """What a stream's caller handed in is freed when the caller lets go, without the
    cyclic collector: an error raised from the stream holds its frame in its traceback,
    and the frame must not hold the error (from Python 3.12 on, the mission's frames, and
    its session's lock, would wait for the collector)."""

    @pytest.mark.parametrize(
        "case", ["cut before its finish", "error after text", "retried in-stream 429"]
    )
    async def test_a_stream_leaves_nothing_to_the_collector(
        self, provider: OpenAICompatibleProvider, fake: FakeOpenAIServer, case: str
    ) -> None:
        if case == "cut before its finish":
            fake.cut_next_stream()
        elif case == "error after text":
            fake.stream_next([_chunks("he")[0], {"error": {"code": 500, "message": "boom"}}])
        else:
            fake.stream_next([{"error": {"code": 429, "message": "slow down"}}])
        messages = _Messages(_mission("hi"))
        sent = weakref.ref(messages)

        async def consume(messages: _Messages) -> int:
            attempts = 0
            with contextlib.suppress(LLMProviderError):
                async for chunk in provider.stream(messages):
                    attempts = len(chunk.get("attempts") or ()) or attempts
            return attempts

        gc.collect()
        gc.disable()
        try:
            attempts = await consume(messages)
            del messages
            assert sent() is None
        finally:
            gc.enable()
        assert (2 if case == "retried in-stream 429" else 0) == attempts
