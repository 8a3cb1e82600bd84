"""A user's own misbehaving parts on a real server: metrics on or off, the same answers.

Two servers on 127.0.0.1 hold the same custom parts: tools registered on their
containers (as ``examples/custom_tool.py`` does) and an LLM provider passed to
``build_container`` (as ``examples/custom_provider.py`` does); one server has metrics
on, the other off. Every part here misbehaves in its own way (odd values, odd
exceptions, odd stream chunks). Each mission must get the same answer from both
servers, plain and streamed, in both flows: the observability layer changes
nothing. And a misbehaving part fails its call, or its mission, never the request: the
answer is a 200 with the mission's result, and a stream ends with its ``result`` event.
Afterwards both servers still serve, and the scrape of the observed one
passes ``promtool check metrics``.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from taskforce.api.server import create_app
from taskforce.application.container import Container, build_container
from taskforce.config import Settings
from taskforce.core.interfaces import ChatMessage
from taskforce.infrastructure.llm import ScriptedLLMProvider
from tests.api.conftest import parse_sse
from tests.support.binaries import require_binary
from tests.support.live_server import LiveServer, serve
from tests.support.odd_values import (
    InterruptOfItsOwn,
    NoItems,
    NoMembership,
    RaisingGet,
    Unequal,
    UnequalArgument,
    Unprintable,
    UnprintableText,
)
from tests.support.own_parts import TableTool, marker, raises, streamed

pytestmark = pytest.mark.integration


#: tool name -> what its ``execute`` returns (called) or raises.
_TOOLS: dict[str, Callable[[], Any]] = {
    "odd_get_raises": lambda: RaisingGet(success=True, output=1),
    "odd_error_type_unequal": lambda: {
        "success": False,
        "error": "x",
        "error_type": Unequal("custom"),
    },
    "odd_nan_inf_output": lambda: {"success": True, "output": [float("nan"), float("inf")]},
    "odd_nan_key": lambda: {"success": True, "output": {float("nan"): "nan", float("-inf"): 1}},
    "odd_non_str_keys": lambda: {"success": True, 1: "one", None: "none"},
    "odd_success_not_bool": lambda: {"success": 1},
    "odd_generator": lambda: (n for n in range(3)),
    "odd_system_exit": raises(SystemExit(3)),
    "odd_generator_exit": raises(GeneratorExit()),
    "odd_cancelled_unequal": raises(asyncio.CancelledError(UnequalArgument())),
    "odd_exception_group": raises(ExceptionGroup("group", [ValueError("inner")])),
    "odd_no_membership": lambda: NoMembership(success=True, output=1),
    "odd_no_items": lambda: NoItems(success=True, output=1),
    "odd_unprintable": raises(Unprintable()),
    # would stop the server's event loop if it went on up as an interrupt
    "odd_interrupt_of_its_own": raises(InterruptOfItsOwn()),
    "odd_tuple_keys": lambda: {"success": True, "output": {(1, 2): "pair"}},
    "odd_int_past_digits": lambda: {"success": True, "output": 10**5000},
    "odd_cycle": lambda: (lambda loop: {"success": True, "output": loop})(_cycle()),
}


def _cycle() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def _answer_with(**fields: Any) -> Callable[[], Any]:
    def answer() -> Any:
        result = {"success": True, "content": "done", "tool_calls": [], "model": "odd-1"}
        return result | {"usage": {"prompt_tokens": 3, "completion_tokens": 2}} | fields

    return answer


def _raising_attribute(name: str) -> Callable[[], Any]:
    def fail(_: object) -> Any:
        raise RuntimeError(f"{name} failed")

    return raises(type("OddProviderError", (Exception,), {name: property(fail)})("odd"))


#: mission marker -> what the provider's complete/generate returns (called) or raises.
_ANSWERS: dict[str, Callable[[], Any]] = {
    "usage-float": _answer_with(usage={"prompt_tokens": 3.5, "completion_tokens": 2.0}),
    "usage-negative": _answer_with(usage={"prompt_tokens": -3, "completion_tokens": 2}),
    "usage-bool": _answer_with(usage={"prompt_tokens": True, "completion_tokens": False}),
    "usage-str-numbers": _answer_with(usage={"prompt_tokens": "3", "completion_tokens": "2"}),
    "usage-nested": _answer_with(usage={"prompt_tokens": {"n": 3}, "completion_tokens": [2]}),
    "usage-nan-inf": _answer_with(
        usage={"prompt_tokens": float("nan"), "completion_tokens": float("inf")}
    ),
    "usage-text": _answer_with(usage="many"),
    # past float64, and past the digits Python writes: no scrape could hold either
    "usage-past-float": _answer_with(usage={"prompt_tokens": 10**400, "completion_tokens": 1}),
    "usage-past-digits": _answer_with(usage={"prompt_tokens": 1, "completion_tokens": 10**5000}),
    "model-int": _answer_with(model=42),
    "model-list": _answer_with(model=["odd"]),
    "model-surrogate": _answer_with(model="odd-\ud800"),
    "model-quote-newline": _answer_with(model='odd"\n\\'),
    "model-long": _answer_with(model="m" * 10_000),
    "attempts-odd": _answer_with(attempts=[1, None, "x"]),
    "error-type-unhashable": lambda: {"success": False, "error": "x", "error_type": ["timeout"]},
    "raises-error-type-attribute": _raising_attribute("error_type"),
    "raises-usage-attribute": _raising_attribute("usage"),
    "raises-system-exit": raises(SystemExit(2)),
    "raises-generator-exit": raises(GeneratorExit()),
    "raises-own-cancellation": raises(asyncio.CancelledError()),
    "raises-unprintable": raises(Unprintable()),
    "raises-interrupt-of-its-own": raises(InterruptOfItsOwn()),
    "fails-with-unprintable-error": lambda: {"success": False, "error": UnprintableText("x")},
}

#: mission marker -> the chunks the provider's stream yields (an exception: raised there).
_STREAMS: dict[str, Callable[[], list[Any]]] = {
    "chunk-no-membership": lambda: [NoMembership(content="x"), {"done": True}],
    "chunk-none": lambda: [{"content": "x"}, None],
    "chunk-raises-mid-way": lambda: [{"content": "x"}, RuntimeError("mid-way")],
    "chunk-system-exit": lambda: [{"content": "x"}, SystemExit(1)],
    "chunk-odd-report": lambda: [
        {"content": "x", "attempts": "odd"},
        {"done": True, "model": ["odd"], "usage": {"prompt_tokens": -1}},
    ],
    "chunk-content-not-text": lambda: [{"content": 5}, {"done": True}],
    "chunk-raises-unprintable": lambda: [{"content": "x"}, Unprintable()],
}


class _ChunkObject:
    """A stream object of the provider's own: an async iterator with an id, no ``aclose``."""

    def __init__(self, chunks: list[Any]) -> None:
        self.response_id = "resp-odd"
        self._chunks = iter(chunks)

    def __aiter__(self) -> _ChunkObject:
        return self

    async def __anext__(self) -> Any:
        for chunk in self._chunks:
            return chunk
        raise StopAsyncIteration


#: mission marker -> what the provider's ``stream`` call itself returns (called) or raises.
_STREAM_CALLS: dict[str, Callable[[], Any]] = {
    "stream-object": lambda: _ChunkObject([{"content": "x"}, {"done": True, "model": "odd-1"}]),
    "stream-object-cut": lambda: _ChunkObject([{"content": "x"}, None]),
    "stream-call-raises": raises(RuntimeError("no stream")),
    "stream-call-exits": raises(SystemExit(4)),
    "stream-not-iterable": lambda: [{"content": "x"}],
}


class _OddProvider(ScriptedLLMProvider):
    """A user's provider: the scripted one, but odd for a mission that names an odd case."""

    async def complete(self, messages: Sequence[ChatMessage], *args: Any, **kwargs: Any) -> Any:
        odd = marker([m.get("content") for m in messages], _ANSWERS)
        if odd is None:
            return await super().complete(messages, *args, **kwargs)
        return _ANSWERS[odd]()

    async def generate(self, prompt: str, *args: Any, **kwargs: Any) -> Any:
        odd = marker([prompt], _ANSWERS)
        if odd is None:
            return await super().generate(prompt, *args, **kwargs)
        return _ANSWERS[odd]()

    def stream(  # type: ignore[override]  # the protocol's AsyncIterator, not a generator
        self, messages: Sequence[ChatMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[Any]:
        call = marker([m.get("content") for m in messages], _STREAM_CALLS)
        if call is not None:
            return cast(AsyncIterator[Any], _STREAM_CALLS[call]())
        return self._odd_stream(messages, *args, **kwargs)

    async def _odd_stream(
        self, messages: Sequence[ChatMessage], *args: Any, **kwargs: Any
    ) -> AsyncGenerator[Any, None]:
        odd = marker([m.get("content") for m in messages], _STREAMS)
        if odd is None:
            async for chunk in super().stream(messages, *args, **kwargs):
                yield chunk
            return
        async for chunk in streamed(_STREAMS[odd]()):
            yield chunk


def _container(root: Path, *, metrics: bool) -> Container:
    settings = Settings(
        state_dir=root / "state",
        workspace_dir=root / "workspace",
        metrics={"enabled": metrics},
    )
    container = build_container(settings, llm_provider=_OddProvider("odd-1"))
    for name in _TOOLS:
        container.tool_registry.register(TableTool(name, _TOOLS))
    return container


@pytest.fixture(scope="module", name="servers")
def fixture_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[bool, LiveServer]]:
    """Two servers of the same parts, by whether metrics are on; shared by the module."""
    containers = {
        on: _container(tmp_path_factory.mktemp(f"metrics-{on}"), metrics=on) for on in (True, False)
    }
    with (
        serve(create_app(container=containers[True])) as observed,
        serve(create_app(container=containers[False])) as plain,
    ):
        yield {True: observed, False: plain}
    for container in containers.values():
        asyncio.run(container.aclose())


@pytest.fixture(name="clients")
async def fixture_clients(
    servers: dict[bool, LiveServer],
) -> AsyncIterator[dict[bool, httpx.AsyncClient]]:
    """A client of each server, by whether metrics are on.

    A connection per request: uvicorn closes one after a 500, which a mission that
    raised gets, and the next request must not find it closed under it.
    """
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(base_url=servers[True].url, timeout=30, limits=fresh) as observed,
        httpx.AsyncClient(base_url=servers[False].url, timeout=30, limits=fresh) as plain,
    ):
        yield {True: observed, False: plain}


def _without_ids(value: Any) -> Any:
    """``value`` without the ids and times that differ between two runs of a mission."""
    if isinstance(value, dict):
        return {
            key: _without_ids(item)
            for key, item in value.items()
            if key not in {"session_id", "mission_id", "started_at", "finished_at"}
        }
    if isinstance(value, list | tuple):
        return [_without_ids(item) for item in value]
    return value


async def _answer(client: httpx.AsyncClient, route: str, body: dict[str, Any]) -> Any:
    """What a client is told: the status, and the result or every event, ids left out."""
    response = await client.post(route, json=body)
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return response.status_code, _without_ids(parse_sse(response.text))
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.status_code, _without_ids(response.json())
    return response.status_code, response.text


async def _same_answers(clients: dict[bool, httpx.AsyncClient], mission: str) -> None:
    """Both servers answer ``mission`` alike, plain and streamed, in both flows."""
    for route in ("/api/v1/execute", "/api/v1/execute/stream"):
        for agent_type in ("lean", "legacy"):
            body = {"mission": mission, "agent_type": agent_type}
            observed = await _answer(clients[True], route, body)
            plain = await _answer(clients[False], route, body)
            assert plain == observed, (route, agent_type)
            # a misbehaving part fails its call (and so its mission), never the request
            assert 200 == observed[0], (route, agent_type)
            if route.endswith("/stream"):
                assert "result" == observed[1][-1][0], agent_type


#: Every mission of the module: one per odd tool, odd answer and odd stream.
_MISSIONS = {
    **{name: f"tool:{name} {{}}" for name in _TOOLS},
    **{marker: f"odd:{marker}" for marker in [*_ANSWERS, *_STREAMS, *_STREAM_CALLS]},
}


class TestOddParts:
    @pytest.mark.parametrize("case", list(_MISSIONS))
    async def test_same_answer_with_metrics_on_and_off(
        self, clients: dict[bool, httpx.AsyncClient], case: str
    ) -> None:
        """A mission of a misbehaving tool or provider ends the same way either way."""
        await _same_answers(clients, _MISSIONS[case])


class TestAfterTheOddParts:
    async def test_both_still_serve_and_the_scrape_passes_promtool(
        self, clients: dict[bool, httpx.AsyncClient]
    ) -> None:
        """After every odd part above, both servers answer and the scrape is valid."""
        promtool = require_binary("promtool")
        for client in clients.values():
            assert "ok" == (await client.get("/health")).json()["status"]
            answer = await client.post("/api/v1/execute", json={"mission": "hi"})
            assert "completed" == answer.json()["status"]
        scrape = await clients[True].get("/metrics")
        assert 200 == scrape.status_code
        checked = await asyncio.to_thread(
            subprocess.run,
            [promtool, "check", "metrics"],
            input=scrape.content,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert (0, b"", b"") == (checked.returncode, checked.stdout, checked.stderr)
