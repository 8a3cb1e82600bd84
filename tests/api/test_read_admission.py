"""``api.max_session_reads_in_flight``: session reads past the limit get a 503, on a real server.

Reads wait on a gate in front of the store's ``load`` until the test opens it, so "two
reads are in flight" is a condition the test waits for, never a guess about durations.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.responses import Response
from structlog.testing import capture_logs

from taskforce.api._admission import AdmissionMiddleware, SessionReadSlots
from taskforce.api.server import create_app
from taskforce.application.container import build_container
from taskforce.config import Settings
from taskforce.infrastructure.state import FileStateStore
from tests.api.test_admission import GUARD_SECONDS, GateTool, _probe, until
from tests.api.test_metrics_e2e import scrape, total
from tests.support.live_server import serve

ROUTE = "/api/v1/sessions/{session_id}"
READ = "/api/v1/sessions/s-1"
#: A session whose answer is far more than the server's send buffer (4 MiB at most here)
#: and the client's receive buffer (held small) take: its read is still sending when the
#: client stops reading.
BIG = "/api/v1/sessions/s-big"
BIG_MESSAGE_CHARS = 12 * 1024 * 1024


def _record(text: str) -> dict[str, Any]:
    return {"mission_id": "m-1", "status": "completed", "final_message": text}


async def _store_sessions(state_dir: Path) -> None:
    """Write s-1 (small) and s-big (``BIG_MESSAGE_CHARS`` of text) as a store would."""
    store = FileStateStore(state_dir)
    try:
        await store.save("s-1", {"missions": [_record("done")]})
        await store.save("s-big", {"missions": [_record("x" * BIG_MESSAGE_CHARS)]})
    finally:
        await store.aclose()


@contextmanager
def read_server(settings: Settings, limit: int) -> Iterator[tuple[str, GateTool]]:
    """A live server whose store's loads wait on the gate it yields (open it to let them go)."""
    changed = settings.model_copy(
        update={"api": settings.api.model_copy(update={"max_session_reads_in_flight": limit})}
    )
    container = build_container(changed)
    store = container.state_store
    load = store.load
    gate = GateTool()

    async def gated_load(session_id: str) -> Any:
        await gate.execute()
        return await load(session_id)

    # an attribute set on the store (or through its observing proxy) that its load calls
    store.load = gated_load  # type: ignore[method-assign]
    try:
        with serve(create_app(container=container)) as live:
            yield live.url, gate
    finally:
        gate.open()


async def _admitted(client: httpx.AsyncClient) -> bool:
    """Whether a read of s-1 gets its answer now (not a 503)."""
    return 200 == (await client.get(READ)).status_code


def _refusals(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line["event"] == "api.session_read.refused"]


@pytest.mark.integration
async def test_a_third_read_is_refused_then_admitted(settings: Settings) -> None:
    """Limit 2: two reads in flight, a third (GET or HEAD) gets a 503 with its reason and
    Retry-After, logged and counted; once they end a read is admitted again."""
    await _store_sessions(settings.state_dir)
    with read_server(settings, 2) as (url, gate), capture_logs() as logs:
        async with httpx.AsyncClient(base_url=url, timeout=GUARD_SECONDS) as client:
            reads = [asyncio.create_task(client.get(READ)) for _ in range(2)]
            await until(lambda: gate.entered == 2)
            refused = await client.get(READ)
            head_refused = await client.head(READ)
            health = (await client.get("/health")).json()["session_reads"]
            gate.open()
            done = await asyncio.gather(*reads)
            after = await client.get(READ)
            samples = await scrape(client)
    assert [503, 503] == [refused.status_code, head_refused.status_code]
    assert {"detail": "too many session reads in flight (limit 2); retry later"} == refused.json()
    assert ["1", "1"] == [r.headers["retry-after"] for r in (refused, head_refused)]
    assert {"in_flight": 2, "limit": 2} == health
    for response in [*done, after]:
        assert 200 == response.status_code
        assert ["done"] == [m["final_message"] for m in response.json()["missions"]]
    assert 2 == total(samples, "taskforce_http_requests_total", route=ROUTE, status_code="503")
    assert 3 == total(
        samples, "taskforce_http_requests_total", method="GET", route=ROUTE, status_code="200"
    )
    lines = _refusals(logs)
    assert [("http", "warning", ROUTE, 2)] * 2 == [
        (line["category"], line["log_level"], line["route"], line["limit"]) for line in lines
    ]
    assert "s-1" not in repr(lines)


@pytest.mark.integration
async def test_a_client_that_leaves_mid_answer_frees_its_slot(settings: Settings) -> None:
    """Limit 1: a read whose client stops reading holds its slot while its answer is unsent
    (another read gets a 503), and gives it back once that client disconnects."""
    await _store_sessions(settings.state_dir)
    # a receive buffer held small: the answer stays in the server until it is read
    small_window = httpx.AsyncHTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)]
    )
    with read_server(settings, 1) as (url, gate):
        gate.open()
        async with httpx.AsyncClient(base_url=url, timeout=GUARD_SECONDS) as client:
            async with (
                httpx.AsyncClient(
                    base_url=url, timeout=GUARD_SECONDS, transport=small_window
                ) as leaver,
                leaver.stream("GET", BIG) as big,
            ):
                assert 200 == big.status_code
                while_sending = await client.get(READ)
            # the answer unread: its connection is closed, not kept
            await until(lambda: _admitted(client))
            health = (await client.get("/health")).json()["session_reads"]
    assert 503 == while_sending.status_code
    assert {"in_flight": 0, "limit": 1} == health


async def test_a_read_route_is_known_by_method_and_pattern() -> None:
    """When full, a GET or HEAD matching the template is refused, mounted too; another
    method, or a path the template does not match, reaches the app."""
    inner = FastAPI()

    @inner.get(ROUTE)
    async def read(session_id: str) -> Response:
        return Response(status_code=204)

    inner.add_api_route(ROUTE, read, methods=["HEAD"])
    slots = SessionReadSlots(1)
    slots.in_flight = 1  # full
    app = AdmissionMiddleware(inner, slots=slots, routes=inner.router.routes[-2:])
    assert [503, 503, 503] == [
        await _probe(app, READ, method="GET"),
        await _probe(app, READ, method="HEAD"),
        await _probe(app, "/tf" + READ, method="GET", root_path="/tf"),
    ]
    assert [405, 404, 404] == [
        await _probe(app, READ, method="POST"),
        await _probe(app, READ + "/more", method="GET"),
        await _probe(app, "/api/v1/sessions/", method="GET"),
    ]
    slots.in_flight = 0
    assert 204 == await _probe(app, READ, method="GET")
