"""``api.max_missions_in_flight``: missions past the limit get a 503, on a real server.

Slow missions call a ``gate`` tool that waits until the test opens it, so "two are
running" is a condition the test waits for, never a guess about durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Scope
from structlog.testing import capture_logs

from taskforce.api._admission import (
    RETRY_AFTER_SECONDS,
    AdmissionMiddleware,
    MissionSlots,
    admit,
)
from taskforce.api.server import create_app
from taskforce.application.container import build_container
from taskforce.config import Settings
from taskforce.core.interfaces import ToolResult
from tests.api.conftest import parse_sse
from tests.api.test_metrics_e2e import Samples, scrape, total
from tests.support.live_server import serve

GATED = "tool:gate {}\ndone"
EXECUTE = "/api/v1/execute"
STREAM = "/api/v1/execute/stream"
#: Only a guard against a test that would hang: every wait ends long before it.
GUARD_SECONDS = 30


class GateTool:
    """A tool that waits until ``open()`` is called; ``entered`` counts the calls so far."""

    name = "gate"
    description = "Wait until the test opens the gate."
    parameters_schema: dict[str, Any] = {"type": "object", "properties": {}}

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._is_open = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self.entered = 0

    async def execute(self, **params: Any) -> ToolResult:
        opened = asyncio.Event()
        with self._lock:
            self.entered += 1
            if self._is_open:
                opened.set()
            self._waiters.append((asyncio.get_running_loop(), opened))
        await opened.wait()
        return {"success": True, "output": "open"}

    def open(self) -> None:
        """Let every call through, those waiting (on the server's loop) and those to come."""
        with self._lock:
            self._is_open = True
            waiters, self._waiters = self._waiters, []
        for loop, opened in waiters:
            with contextlib.suppress(RuntimeError):  # that server's loop is closed already
                loop.call_soon_threadsafe(opened.set)


async def until(condition: Callable[[], Any]) -> None:
    """Wait until ``condition()`` is true (awaiting it if it is a coroutine)."""
    deadline = asyncio.get_running_loop().time() + GUARD_SECONDS
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


@contextmanager
def gated_server(settings: Settings, **api: Any) -> Iterator[tuple[str, GateTool]]:
    """A live server with a ``gate`` tool and these ``api`` settings changed."""
    changed = settings.model_copy(update={"api": settings.api.model_copy(update=api)})
    container = build_container(changed)
    gate = GateTool()
    container.tool_registry.register(gate)
    try:
        with serve(create_app(container=container)) as live:
            yield live.url, gate
    finally:
        gate.open()


async def _http_count(client: httpx.AsyncClient, route: str, status: str) -> float:
    samples = await scrape(client)
    return total(samples, "taskforce_http_requests_total", route=route, status_code=status)


async def _counted(client: httpx.AsyncClient, route: str, status: str, count: int) -> bool:
    """Whether ``count`` answers of ``status`` on ``route`` are counted (recorded as they end)."""
    return count == await _http_count(client, route, status)


async def _two_run_while_refused(
    client: httpx.AsyncClient, gate: GateTool, route: str, probes: list[str]
) -> tuple[list[httpx.Response], Samples, list[httpx.Response]]:
    """Hold two gated missions on ``route``, POST to each of ``probes``, then open the gate.

    Returns:
        The probes' answers, the samples scraped while both missions ran, and the two
        missions' answers.
    """
    running = [asyncio.create_task(client.post(route, json={"mission": GATED})) for _ in range(2)]
    await until(lambda: gate.entered == 2)
    probed = [await client.post(path, json={"mission": "never runs"}) for path in probes]
    samples = await scrape(client)
    gate.open()
    return probed, samples, list(await asyncio.gather(*running))


def _refusals(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line["event"] == "api.mission.refused"]


def _check_refusal(response: httpx.Response) -> None:
    assert 503 == response.status_code
    assert str(RETRY_AFTER_SECONDS) == response.headers["retry-after"]
    assert {"detail": "too many missions in flight (limit 2); retry later"} == response.json()


@pytest.mark.integration
class TestExecute:
    async def test_third_mission_is_refused_then_admitted(self, settings: Settings) -> None:
        """Limit 2: two slow missions run, a third gets a 503, one after them runs."""
        with (
            gated_server(settings, max_missions_in_flight=2) as (url, gate),
            capture_logs() as logs,
        ):
            async with httpx.AsyncClient(base_url=url, timeout=GUARD_SECONDS) as client:
                (refused,), samples, done = await _two_run_while_refused(
                    client, gate, EXECUTE, [EXECUTE]
                )
                after = await client.post(EXECUTE, json={"mission": "hello"})
                await until(lambda: _counted(client, EXECUTE, "200", 3))
                final = await scrape(client)
        _check_refusal(refused)
        assert [200, 200] == [r.status_code for r in done]
        assert ["completed", "completed"] == [r.json()["status"] for r in done]
        assert "completed" == after.json()["status"]
        # while refused: two missions in progress, the refusal is no mission
        assert 2 == total(samples, "taskforce_missions_in_progress")
        assert 0 == total(samples, "taskforce_missions_total")
        assert 1 == total(
            samples, "taskforce_http_requests_total", route=EXECUTE, status_code="503"
        )
        assert 3 == total(final, "taskforce_missions_total", status="completed")
        assert 3 == total(final, "taskforce_missions_total")
        assert 3 == total(final, "taskforce_http_requests_total", route=EXECUTE, status_code="200")
        (line,) = _refusals(logs)
        assert ("http", "warning", EXECUTE, 2) == (
            line["category"],
            line["log_level"],
            line["route"],
            line["limit"],
        )
        assert "never runs" not in repr(line)


@pytest.mark.integration
class TestStream:
    async def test_third_stream_is_refused_then_admitted(self, settings: Settings) -> None:
        """Limit 2: two slow streams run, a third gets a 503 (no stream), one after them runs."""
        with (
            gated_server(settings, max_missions_in_flight=2) as (url, gate),
            capture_logs() as logs,
        ):
            async with httpx.AsyncClient(base_url=url, timeout=GUARD_SECONDS) as client:
                # the plain route shares the slots: it is refused too
                (refused, also_refused), _, done = await _two_run_while_refused(
                    client, gate, STREAM, [STREAM, EXECUTE]
                )
                after = await client.post(STREAM, json={"mission": "hello"})
                await until(lambda: _counted(client, STREAM, "200", 3))
                samples = await scrape(client)
        _check_refusal(refused)
        _check_refusal(also_refused)
        for response in [*done, after]:
            assert 200 == response.status_code
            assert "result" == parse_sse(response.text)[-1][0]
        assert 3 == total(samples, "taskforce_missions_total", status="completed")
        assert 3 == total(samples, "taskforce_missions_total")
        assert 1 == total(samples, "taskforce_http_requests_total", route=STREAM, status_code="503")
        assert [STREAM, EXECUTE] == [line["route"] for line in _refusals(logs)]

    async def test_a_client_that_leaves_a_stream_frees_its_slot(self, settings: Settings) -> None:
        """Limit 1: a stream whose client disconnects mid-way gives its slot to the next one."""
        with gated_server(settings, max_missions_in_flight=1) as (url, gate):
            async with httpx.AsyncClient(base_url=url, timeout=GUARD_SECONDS) as client:
                async with client.stream("POST", STREAM, json={"mission": GATED}) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("event: tool_call"):
                            break
                    await until(lambda: gate.entered == 1)
                    full = await client.post(EXECUTE, json={"mission": "never runs"})
                # the connection is closed here, the gate still shut: counted once it ended
                await until(lambda: _counted(client, STREAM, "200", 1))
                after = await client.post(EXECUTE, json={"mission": "hello"})
                samples = await scrape(client)
        assert 503 == full.status_code
        assert "completed" == after.json()["status"]
        assert 1 == total(samples, "taskforce_missions_total", status="cancelled")
        assert 0 == total(samples, "taskforce_missions_in_progress")


async def _probe(
    app: Any, path: str = EXECUTE, *, method: str = "POST", root_path: str = ""
) -> int:
    """Call ``app`` with a bare ``method`` request to ``path``; return the status it answered."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": root_path,
        "headers": [],
        "query_string": b"",
    }
    await app(scope, receive, send)
    return int(sent[0]["status"])


def _held_app(started: asyncio.Event, release: asyncio.Event) -> FastAPI:
    """An app whose mission route takes a slot, then waits for ``release``."""
    inner = FastAPI()

    @inner.post(EXECUTE)
    async def execute(request: Request) -> Response:
        refusal = admit(request)
        if refusal is not None:
            return refusal
        started.set()
        await release.wait()
        return Response(status_code=204)

    return inner


@asynccontextmanager
async def _one_held(slots: MissionSlots) -> AsyncIterator[tuple[Any, asyncio.Task[int]]]:
    """Admit one request that holds its slot; yield the app and that request's task."""
    started, release = asyncio.Event(), asyncio.Event()
    inner = _held_app(started, release)
    app = AdmissionMiddleware(inner, slots=slots, routes=inner.router.routes[-1:])
    task = asyncio.create_task(_probe(app))
    await started.wait()
    try:
        yield app, task
    finally:
        release.set()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class TestMissionSlots:
    def test_a_limit_below_one_is_refused(self) -> None:
        """MissionSlots(0) is a ValueError naming the value."""
        with pytest.raises(ValueError, match="not 0"):
            MissionSlots(0)

    async def test_a_cancelled_request_gives_its_slot_back_once(self) -> None:
        """A request cancelled while it holds its slot frees it, exactly once."""
        slots = MissionSlots(1)
        async with _one_held(slots) as (app, task):
            assert 1 == slots.in_flight
            assert 503 == await _probe(app)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert 0 == slots.in_flight
        async with _one_held(slots):  # admitted again
            assert 1 == slots.in_flight
        assert 0 == slots.in_flight

    async def test_other_routes_pass_when_full(self) -> None:
        """A full process still serves routes that start no mission."""
        slots = MissionSlots(1)
        async with _one_held(slots) as (app, _):
            assert 404 == await _probe(app, "/api/v1/other")
            assert 1 == slots.in_flight

    async def test_a_mission_route_is_known_by_method_and_path(self) -> None:
        """When full, a POST to a mission route is refused, mounted under a root path too;
        another method on that path is no mission and reaches the app."""
        slots = MissionSlots(1)
        async with _one_held(slots) as (app, _):
            assert 503 == await _probe(app, "/tf" + EXECUTE, root_path="/tf")
            assert 405 == await _probe(app, method="GET")
            assert 1 == slots.in_flight
