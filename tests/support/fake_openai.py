"""A fake OpenAI-compatible chat completions server, answering by the scripted provider's rules.

Usage::

    fake = FakeOpenAIServer()
    with fake.serve() as base_url:          # real uvicorn on 127.0.0.1, port 0
        provider = OpenAICompatibleProvider("gpt-test", base_url, api_key="sk-test")
        ...
    fake.requests[0].headers["authorization"]  # "Bearer sk-test"

``POST /v1/chat/completions`` answers like :class:`ScriptedLLMProvider` would
(the mission directives ``tool:NAME {json}`` and ``llm:error`` in the first user
message), translated to the OpenAI wire format:

- with ``tools``: native ``tool_calls`` (arguments as JSON strings,
  ``finish_reason: "tool_calls"``);
- a user message containing the plan prompt: the scripted ``generate`` plan;
- otherwise: the legacy JSON actions of the scripted ``complete``;
- ``stream: true``: Server-Sent Events (``data: {chunk}`` lines, then
  ``data: [DONE]``); with ``stream_options.include_usage`` the last chunk
  before ``[DONE]`` carries ``usage`` and no choices. With ``tools``, a tool
  call streams as ``delta.tool_calls`` pieces (its arguments split in two).

A scripted failure (``llm:error``, a malformed ``tool:`` line) is answered with
HTTP 400 and an OpenAI error body, which the SDK does not retry.

Knobs, settable from the test thread while the server runs:

- ``fail_next(n, status=500, retry_after=None, headers=None)``: the next ``n``
  requests get that HTTP status with an OpenAI error body (``Retry-After`` when
  given: a number of seconds, or a string sent as is, such as an HTTP date; and
  these headers, such as ``retry-after-ms`` or ``x-should-retry``);
- ``respond_next(payload, status=200, headers=None)``: the next request gets this
  raw JSON (e.g. a tool call whose ``arguments`` are not JSON), or these bytes as an
  HTML page when ``payload`` is ``bytes``, with these headers;
- ``stream_next(frames, headers=None)``: the next request gets these SSE ``data:``
  frames as is (dicts as JSON, strings verbatim), e.g. a chunk whose choice has no
  ``delta``, with these headers;
- ``cut_next_stream()``: the next stream ends cleanly after its text deltas, with
  no ``finish_reason``, no usage and no ``[DONE]`` (a proxy that dropped it);
- ``delay_seconds``: every request waits this long first (timeouts);
- ``first_chunk_delay_seconds``: a stream sends its headers at once, then
  waits this long before its first chunk (time to first token);
- ``hold_after_usage_seconds``: a stream holds its connection open this long after its
  finish and usage chunks, before ``[DONE]`` (a server slow to end a whole answer);
- ``done_sent``: how many streams sent their ``[DONE]``;
- ``reported_model``: the model the responses claim (default: the one asked for);
- ``requests``: every :class:`RecordedRequest` received, oldest first;
- ``reset()``: back to a fresh state (for a server shared between tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from taskforce.core.domain.prompts import PLAN_PROMPT
from taskforce.errors import LLMProviderError
from taskforce.infrastructure.llm import ScriptedLLMProvider
from tests.support.live_server import serve

__all__ = ["FakeOpenAIServer", "RecordedRequest"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received: lower-cased headers and the decoded JSON body."""

    path: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class _Canned:
    status: int
    payload: Any
    headers: dict[str, str]
    sse: bool = False


def _error_body(message: str, error_type: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


class FakeOpenAIServer:
    """An OpenAI-compatible ASGI app (``.app``) plus the knobs and records described above."""

    def __init__(self, *, reported_model: str | None = None, latency_ms: float = 0.0) -> None:
        self.reported_model = reported_model
        self.delay_seconds = 0.0
        self.first_chunk_delay_seconds = 0.0
        self.hold_after_usage_seconds = 0.0
        self.done_sent = 0
        self.requests: list[RecordedRequest] = []
        self._scripted = ScriptedLLMProvider(latency_ms=latency_ms)
        self._lock = threading.Lock()
        self._canned: deque[_Canned] = deque()
        self._cut_streams = 0
        self._ids = itertools.count(1)
        self.app = Starlette(
            routes=[Route("/v1/chat/completions", self._chat_completions, methods=["POST"])]
        )

    @contextlib.contextmanager
    def serve(self, port: int = 0) -> Iterator[str]:
        """Serve the app on 127.0.0.1 and ``port`` (0: an ephemeral one); yield the base
        URL for the SDK (ending in ``/v1``)."""
        with serve(self.app, port=port) as server:
            yield f"{server.url}/v1"

    def reset(self) -> None:
        """Forget recorded requests and pending canned answers; restore the defaults."""
        with self._lock:
            self._canned.clear()
            self._cut_streams = 0
        self.requests.clear()
        self.delay_seconds = 0.0
        self.first_chunk_delay_seconds = 0.0
        self.hold_after_usage_seconds = 0.0
        self.done_sent = 0
        self.reported_model = None

    def fail_next(
        self,
        n: int,
        status: int = 500,
        *,
        retry_after: float | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``n`` requests with HTTP ``status`` and an OpenAI error body."""
        headers = dict(headers or {})
        if isinstance(retry_after, str):
            headers["retry-after"] = retry_after
        elif retry_after is not None:
            headers["retry-after"] = f"{retry_after:g}"
        body = _error_body(f"injected failure {status}", "server_error", str(status))
        with self._lock:
            self._canned.extend(_Canned(status, body, headers) for _ in range(n))

    def respond_next(
        self, payload: Any, status: int = 200, *, headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next request with this JSON payload as is (bytes: as an HTML page)."""
        with self._lock:
            self._canned.append(_Canned(status, payload, dict(headers or {})))

    def stream_next(self, frames: list[Any], *, headers: dict[str, str] | None = None) -> None:
        """Answer the next request with these server-sent ``data:`` frames, nothing else."""
        with self._lock:
            self._canned.append(_Canned(200, frames, dict(headers or {}), sse=True))

    def cut_next_stream(self) -> None:
        """End the next stream after its text deltas, as if the connection was closed."""
        with self._lock:
            self._cut_streams += 1

    def _take_cut(self) -> bool:
        with self._lock:
            if self._cut_streams:
                self._cut_streams -= 1
                return True
            return False

    def _pop_canned(self) -> _Canned | None:
        with self._lock:
            return self._canned.popleft() if self._canned else None

    async def _chat_completions(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = raw.decode(errors="replace")
        self.requests.append(RecordedRequest(request.url.path, dict(request.headers), body))
        # Taken on arrival: a delayed request that outlives its test must not eat the next one's.
        canned = self._pop_canned()
        if self.delay_seconds > 0:
            await asyncio.sleep(self.delay_seconds)
        if canned is not None:
            if isinstance(canned.payload, bytes):
                return Response(
                    canned.payload, canned.status, canned.headers, media_type="text/html"
                )
            if canned.sse:
                body = "".join(
                    f"data: {f if isinstance(f, str) else json.dumps(f)}\n\n"
                    for f in canned.payload
                )
                return Response(body, 200, canned.headers, media_type="text/event-stream")
            return JSONResponse(canned.payload, canned.status, headers=canned.headers)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return JSONResponse(_error_body("body needs 'messages'", "invalid_request_error"), 400)
        model = str(body.get("model") or "")
        if body.get("stream"):
            return await self._stream(body, model)
        return await self._complete(body, model)

    async def _complete(self, body: dict[str, Any], model: str) -> Response:
        messages = body["messages"]
        tools = body.get("tools")
        plan_prompt = _plan_prompt(messages)
        if tools:
            result = await self._scripted.complete(
                messages, model=model, tools=tools, tool_choice=body.get("tool_choice")
            )
        elif plan_prompt is not None:
            result = await self._scripted.generate(plan_prompt, model=model)
        else:
            result = await self._scripted.complete(messages, model=model)
        if not result["success"]:
            return JSONResponse(_error_body(result["error"], result["error_type"]), 400)
        tool_calls = [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
            }
            for call in result.get("tool_calls", [])
        ]
        message: dict[str, Any] = {"role": "assistant", "content": result["content"]}
        if tool_calls:
            message["tool_calls"] = tool_calls
        return JSONResponse(
            {
                "id": f"chatcmpl-fake-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.reported_model or model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if tool_calls else "stop",
                        "logprobs": None,
                    }
                ],
                "usage": result["usage"],
            }
        )

    async def _stream(self, body: dict[str, Any], model: str) -> Response:
        try:
            stream = self._scripted.stream(
                body["messages"],
                model=model,
                tools=body.get("tools"),
                tool_choice=body.get("tool_choice"),
            )
            async with contextlib.aclosing(stream) as scripted_chunks:
                chunks = [chunk async for chunk in scripted_chunks]
        except LLMProviderError as exc:
            return JSONResponse(_error_body(str(exc), type(exc).__name__), 400)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        reported = self.reported_model or model
        completion_id = f"chatcmpl-fake-{next(self._ids)}"
        created = int(time.time())

        def frame(choices: list[dict[str, Any]], usage: Any = None) -> str:
            chunk = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": reported,
                "choices": choices,
            }
            if usage is not None:
                chunk["usage"] = usage
            return f"data: {json.dumps(chunk)}\n\n"

        first_chunk_delay = self.first_chunk_delay_seconds
        hold = self.hold_after_usage_seconds
        tool_calls = chunks[-1].get("tool_calls") or []
        cut = self._take_cut()

        async def events() -> AsyncIterator[str]:
            if first_chunk_delay > 0:
                await asyncio.sleep(first_chunk_delay)
            first = {"role": "assistant", "content": ""}
            yield frame([{"index": 0, "delta": first, "finish_reason": None}])
            for chunk in chunks:
                if "content" in chunk:
                    delta: dict[str, Any] = {"content": chunk["content"]}
                    yield frame([{"index": 0, "delta": delta, "finish_reason": None}])
            if cut:
                return
            for index, call in enumerate(tool_calls):
                for part in _tool_call_deltas(index, call):
                    delta = {"tool_calls": [part]}
                    yield frame([{"index": 0, "delta": delta, "finish_reason": None}])
            finish = "tool_calls" if tool_calls else "stop"
            yield frame([{"index": 0, "delta": {}, "finish_reason": finish}])
            if include_usage:
                yield frame([], usage=chunks[-1].get("usage"))
            if hold > 0:
                await asyncio.sleep(hold)
            self.done_sent += 1
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


def _tool_call_deltas(index: int, call: Any) -> list[dict[str, Any]]:
    """A tool call as the OpenAI stream sends it: id and name first, the arguments in two pieces."""
    arguments = json.dumps(call["arguments"])
    half = len(arguments) // 2
    return [
        {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": arguments[:half]},
        },
        {"index": index, "function": {"arguments": arguments[half:]}},
    ]


def _plan_prompt(messages: list[Any]) -> str | None:
    """Return the user message holding the plan prompt, if the request is a planning call."""
    marker = PLAN_PROMPT.strip()
    for message in messages:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str) and marker in content:
            return content
    return None
