"""``TaskforceServer``: a bounded shutdown that cancels, records and counts missions in flight."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI, Request
from prometheus_client.parser import text_string_to_metric_families

from taskforce.api._listener import bind_socket
from taskforce.api._serving import TaskforceServer
from taskforce.api._supervisor import serve
from taskforce.api.server import create_app
from taskforce.application import executor as executor_module
from taskforce.application.container import Container, build_container
from taskforce.config import Settings
from taskforce.errors import StartupError
from tests.api.conftest import parse_sse
from tests.api.test_admission import GUARD_SECONDS, until
from tests.api.test_read_deadline import narrow_client, stream_request
from tests.observability.metric_samples import value
from tests.support.held_store import HeldStore
from tests.support.own_parts import TableTool

SLOW_MISSION = 'tool:sleep {"seconds": 30}\ndone'
FAST_MISSION = "hello"
#: Far more than the kernel buffers of a loopback connection hold (4 MiB to send, a
#: few KiB to receive here): an event this large cannot reach a client that reads
#: nothing, so the server waits in ``send``.
_UNSENDABLE_CHARS = 16 * 1024 * 1024


def missions_total(container: Container) -> dict[tuple[str, str], float]:
    """``taskforce_missions_total`` by (agent_type, status), read from the exposition."""
    assert container.metrics is not None
    text = container.metrics.render().decode()
    return {
        (s.labels["agent_type"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "taskforce_missions"
        for s in family.samples
        if s.name == "taskforce_missions_total"
    }


@dataclass
class Running:
    """A TaskforceServer serving the app in this event loop."""

    server: TaskforceServer
    task: asyncio.Task[None]
    container: Container
    url: str


@pytest.fixture(name="running")
async def fixture_running(settings: Settings) -> AsyncIterator[Running]:
    """The app under ``TaskforceServer`` (grace 0.5 s, no signal handlers), stopped by the test."""
    async with _serving(settings) as running:
        yield running


@contextlib.asynccontextmanager
async def _serving(
    settings: Settings,
    container: Container | None = None,
    *,
    prepare: Callable[[FastAPI], None] | None = None,
) -> AsyncIterator[Running]:
    """Serve the app (of ``container`` if given, passed to ``prepare`` if given) under
    ``TaskforceServer`` with a 0.5 s grace."""
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"shutdown_grace_seconds": 0.5})}
    )
    app = create_app(settings, container)
    if prepare is not None:
        prepare(app)
    sock = bind_socket("127.0.0.1", 0, what="the API")
    port = sock.getsockname()[1]
    server = TaskforceServer(app, grace_seconds=0.5, signals=())
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.01)
    running = Running(server, task, app.state.container, f"http://127.0.0.1:{port}")
    try:
        yield running
    finally:
        server.should_exit = server.force_exit = True
        await task


async def test_an_app_that_fails_to_start_exits_3() -> None:
    """A lifespan start-up that raises ends the server with uvicorn's exit code 3, whatever
    uvicorn is installed (before 0.50 it returned as from a stop: ``serve`` exited 0)."""

    @contextlib.asynccontextmanager
    async def broken(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("the environment broke")
        yield  # pragma: no cover

    server = TaskforceServer(FastAPI(lifespan=broken), grace_seconds=0.5, signals=())
    with bind_socket("127.0.0.1", 0, what="the API") as sock, pytest.raises(SystemExit) as exc:
        await server.serve(sockets=[sock])
    assert 3 == exc.value.code
    assert not server.started


async def _in_flight(client: httpx.AsyncClient, n: int) -> list[asyncio.Task[httpx.Response]]:
    """Start ``n`` slow missions (sessions s0..) and return once all of them are running."""
    requests = [
        asyncio.create_task(
            client.post("/api/v1/execute", json={"mission": SLOW_MISSION, "session_id": f"s{i}"})
        )
        for i in range(n)
    ]
    async with httpx.AsyncClient(base_url=client.base_url) as probe:
        while True:
            text = (await probe.get("/metrics")).text
            if f'taskforce_missions_in_progress{{agent_type="lean"}} {n}' in text:
                return requests
            await asyncio.sleep(0.02)


def _records(state_dir: Path, session_id: str) -> list[dict[str, object]]:
    data = json.loads((state_dir / f"{session_id}.json").read_text(encoding="utf-8"))
    missions: list[dict[str, object]] = data["missions"]
    return missions


def _mission_events(logs: list[Any]) -> list[str]:
    """The events that say how a mission ended, in order."""
    ends = ("mission.completed", "mission.failed", "mission.cancelled")
    return [e["event"] for e in logs if e["event"] in ends]


async def _until_in_progress(url: str) -> None:
    """Return once a mission is running on the server at ``url``."""
    async with httpx.AsyncClient(base_url=url) as probe:
        while True:
            text = (await probe.get("/metrics")).text
            if 'taskforce_missions_in_progress{agent_type="lean"} 1' in text:
                return
            await asyncio.sleep(0.02)


def _has_arrived(sock: socket.socket, part: bytes) -> bool:
    """Whether ``part`` is in what ``sock`` holds unread (peeked at: nothing is read)."""
    with contextlib.suppress(BlockingIOError):
        return part in sock.recv(65536, socket.MSG_PEEK)
    return False


def _half_a_body(path: str) -> bytes:
    """A POST to ``path`` with the start of its body only."""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    return f'{head}Content-Length: 100\r\n\r\n{{"mission":'.encode()


async def _send(url: str, request: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a connection to the server at ``url`` and send ``request`` on it."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    return reader, writer


async def _asked_for_late(settings: Settings, request: bytes) -> tuple[bytes, list[Any]]:
    """Send ``request`` to ``/late-reader``, a route that asks for its body only once the
    shutdown began (grace 1 h); return the answer and the shutdown's log events."""
    entered, go_on = asyncio.Event(), asyncio.Event()

    async def late_reader(request: Request) -> dict[str, int]:
        entered.set()
        await go_on.wait()
        return {"bytes": len(await request.body())}

    def add_late_reader(app: FastAPI) -> None:
        app.add_api_route("/late-reader", late_reader, methods=["POST"])

    async with _serving(settings, prepare=add_late_reader) as running:
        running.server.grace_seconds = 3600
        reader, writer = await _send(running.url, request)
        await asyncio.wait_for(entered.wait(), timeout=5)  # a hang guard
        with structlog.testing.capture_logs() as logs:
            running.server.should_exit = True
            await _until_logged(logs, "server.draining")  # the shutdown has begun
            go_on.set()
            # hang guards, not timings: a request that waits for its body waits out the grace
            answer = await asyncio.wait_for(reader.read(), timeout=5)
            await asyncio.wait_for(running.task, timeout=5)
        writer.close()
    return answer, logs


async def _until_logged(logs: list[Any], event: str) -> None:
    """Return once ``event`` is among the captured ``logs``."""
    while True:
        if event in [e["event"] for e in logs]:
            return
        await asyncio.sleep(0.01)


@pytest.mark.integration
class TestShutdownWithASlowStore:
    @pytest.mark.parametrize("route", ["/api/v1/execute", "/api/v1/execute/stream"])
    async def test_a_record_slower_than_the_bound_does_not_hold_the_shutdown(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch, route: str
    ) -> None:
        """A cancelled mission waits RECORD_SECONDS for its record, then ends as cancelled.

        The client has its answer once the server stopped, although the store still
        holds the record; the mission is counted and logged cancelled once, and the
        record, let go later, adds nothing to either.
        """
        monkeypatch.setattr(executor_module, "RECORD_SECONDS", 0.5)
        store = HeldStore(settings.state_dir)
        container = build_container(settings, state_store=store)
        async with (
            _serving(settings, container) as running,
            httpx.AsyncClient(base_url=running.url, timeout=30) as client,
        ):
            body = {"mission": SLOW_MISSION, "session_id": "slow"}
            request = asyncio.create_task(client.post(route, json=body))
            await _until_in_progress(running.url)
            with structlog.testing.capture_logs() as logs:
                running.server.should_exit = True
                await asyncio.wait_for(running.task, timeout=20)
                # a hang guard, not a timing: without the bound the answer waits for the store
                response = await asyncio.wait_for(request, timeout=10)
                counted = missions_total(container)
                assert ["mission.cancelled"] == _mission_events(logs)
                assert "state.save.late" in [e["event"] for e in logs]
                store.released.set()
                await store.landed.wait()
            assert ["cancelled"] == [r["status"] for r in _records(settings.state_dir, "slow")]
            await container.aclose()
        if route.endswith("/stream"):
            assert 200 == response.status_code
            assert '"error_type":"cancelled","is_final":true' in response.text
        else:
            assert 503 == response.status_code
        assert {("lean", "cancelled"): 1.0} == {k: v for k, v in counted.items() if v}
        assert counted == missions_total(container)
        assert ["mission.cancelled"] == _mission_events(logs)

    @pytest.mark.parametrize("route", ["/api/v1/execute", "/api/v1/execute/stream"])
    async def test_a_record_saved_while_cancelled_is_the_answer(
        self, settings: Settings, route: str
    ) -> None:
        """The shutdown cancels a request whose mission is saving its result: the save ends
        within the bound, and the answer is that result (a stream's last event), as the
        metrics, the log and the record say."""
        store = HeldStore(settings.state_dir)
        container = build_container(settings, state_store=store)
        async with (
            _serving(settings, container) as running,
            httpx.AsyncClient(base_url=running.url, timeout=30) as client,
        ):
            body = {"mission": FAST_MISSION, "session_id": "saving"}
            request = asyncio.create_task(client.post(route, json=body))
            await store.appending.wait()  # the mission ended; its record is being written
            with structlog.testing.capture_logs() as logs:
                running.server.should_exit = True
                # the grace is over: the request is cancelled
                await _until_logged(logs, "server.requests.cancelled")
                store.released.set()
                await asyncio.wait_for(running.task, timeout=20)
                response = await request
            await container.aclose()
        assert 200 == response.status_code
        if route.endswith("/stream"):
            events = parse_sse(response.text)
            (last_kind, last), *_ = reversed(events)
            assert ("result", "completed") == (last_kind, last["result"]["status"])
            assert "error" not in [kind for kind, _ in events]
        else:
            assert "completed" == response.json()["status"]
        assert {("lean", "completed"): 1.0} == {
            k: v for k, v in missions_total(container).items() if v
        }
        assert ["mission.completed"] == _mission_events(logs)
        assert ["completed"] == [r["status"] for r in _records(settings.state_dir, "saving")]


@pytest.mark.integration
class TestShutdownAfterTheClientLeft:
    async def test_the_request_ends_after_its_mission(self, settings: Settings) -> None:
        """A client left /execute; its mission writes its ``cancelled`` record when the
        shutdown cancels the request. The request still waits for its mission (bounded
        by the executor), so the mission is logged and recorded before the server stops,
        and the request counts as the 499 of a client that left, not as a 503."""
        store = HeldStore(settings.state_dir)
        container = build_container(settings, state_store=store)
        async with _serving(settings, container) as running:
            async with httpx.AsyncClient(base_url=running.url, timeout=30) as leaving:
                body = {"mission": SLOW_MISSION, "session_id": "left"}
                request = asyncio.create_task(leaving.post("/api/v1/execute", json=body))
                await _until_in_progress(running.url)
                request.cancel()  # the client goes away
                with contextlib.suppress(asyncio.CancelledError):
                    await request
            await store.appending.wait()  # the mission is cancelled: its record is held
            (served,) = running.server.server_state.tasks
            when_request_ended: list[Any] = []
            with structlog.testing.capture_logs() as logs:
                served.add_done_callback(lambda _: when_request_ended.extend(logs))
                running.server.should_exit = True
                await _until_logged(logs, "server.requests.cancelled")
                store.released.set()
                await asyncio.wait_for(running.task, timeout=20)
            await container.aclose()
        assert ["mission.cancelled"] == _mission_events(when_request_ended)
        events = [e["event"] for e in logs]
        assert events.index("mission.cancelled") < events.index("server.stopped")
        assert ["cancelled"] == [r["status"] for r in _records(settings.state_dir, "left")]
        assert container.metrics is not None
        execute = {"method": "POST", "route": "/api/v1/execute"}
        assert 1 == value(
            container.metrics, "taskforce_http_requests_total", status_code="499", **execute
        )
        assert {("lean", "cancelled"): 1.0} == {
            k: v for k, v in missions_total(container).items() if v
        }


@pytest.mark.integration
class TestShutdown:
    async def test_grace_expiry_cancels_records_and_counts(
        self, running: Running, settings: Settings
    ) -> None:
        """Missions still running when the grace expires are cancelled, saved and counted."""
        async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
            done = await client.post("/api/v1/execute", json={"mission": FAST_MISSION})
            requests = await _in_flight(client, 2)
            with structlog.testing.capture_logs() as logs:
                running.server.should_exit = True
                await asyncio.wait_for(running.task, timeout=20)
            outcomes = await asyncio.gather(*requests, return_exceptions=True)
        assert 200 == done.status_code
        assert [503, 503] == [o.status_code for o in outcomes if isinstance(o, httpx.Response)]
        for i in range(2):
            assert ["cancelled"] == [r["status"] for r in _records(settings.state_dir, f"s{i}")]
        counted = missions_total(running.container)
        assert (1.0, 2.0) == (counted[("lean", "completed")], counted[("lean", "cancelled")])
        events = [e["event"] for e in logs]
        assert "server.requests.cancelled" in events
        assert "server.stopped" == events[-1]

    async def test_second_signal_stops_at_once_and_keeps_completed_records(
        self, running: Running, settings: Settings
    ) -> None:
        """A forced stop does not wait out the grace, still records and logs server.stopped."""
        running.server.grace_seconds = 3600
        async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
            done = await client.post(
                "/api/v1/execute", json={"mission": FAST_MISSION, "session_id": "kept"}
            )
            requests = await _in_flight(client, 1)
            with structlog.testing.capture_logs() as logs:
                running.server.handle_exit(15, None)
                await asyncio.sleep(0.2)
                assert not running.task.done()  # draining: the grace is an hour
                running.server.handle_exit(15, None)
                await asyncio.wait_for(running.task, timeout=20)
            await asyncio.gather(*requests, return_exceptions=True)
        assert 200 == done.status_code
        assert ["completed"] == [r["status"] for r in _records(settings.state_dir, "kept")]
        assert ["cancelled"] == [r["status"] for r in _records(settings.state_dir, "s0")]
        assert "server.stopped" == logs[-1]["event"]

    async def test_stream_cancelled_at_shutdown_ends_with_an_error_event(
        self, running: Running, settings: Settings
    ) -> None:
        """A stream whose mission the shutdown cancels still ends with its final event."""
        async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
            body = {"mission": SLOW_MISSION, "session_id": "st"}
            async with client.stream("POST", "/api/v1/execute/stream", json=body) as response:
                lines = response.aiter_lines()
                async for line in lines:
                    if line.startswith("event: tool_call"):
                        break
                running.server.should_exit = True
                rest = [line async for line in lines]
            await asyncio.wait_for(running.task, timeout=20)
        events = [line.removeprefix("event: ") for line in rest if line.startswith("event: ")]
        assert "error" == events[-1]
        last = json.loads([line for line in rest if line.startswith("data: ")][-1][6:])
        assert ("cancelled", True) == (last["error_type"], last["is_final"])
        # the record says what the stream said
        (record,) = _records(settings.state_dir, "st")
        assert ("cancelled", "cancelled") == (record["status"], record["error_type"])

    async def test_a_kept_alive_stream_cancelled_at_shutdown_ends_with_its_error_event(
        self, settings: Settings
    ) -> None:
        """Keep-alive comments, sent while the mission waits, stop before the shutdown's
        final `error` event: it stays the stream's last word."""
        api = settings.api.model_copy(update={"stream_keepalive_seconds": 0.01})
        async with _serving(settings.model_copy(update={"api": api})) as running:
            async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
                body = {"mission": SLOW_MISSION}
                async with client.stream("POST", "/api/v1/execute/stream", json=body) as response:
                    chunks = response.aiter_text()
                    text = ""
                    async for chunk in chunks:
                        text += chunk
                        if "event: tool_call" in text and ": keep-alive" in text:
                            break
                    running.server.should_exit = True
                    text += "".join([chunk async for chunk in chunks])
            await asyncio.wait_for(running.task, timeout=20)
        assert text.removesuffix("\n\n").split("\n\n")[-1].startswith("event: error")
        last = parse_sse(text)[-1][1]
        assert ("cancelled", True) == (last["error_type"], last["is_final"])

    @pytest.mark.parametrize("keepalive_seconds", [0.0, 15.0])
    async def test_a_stream_stuck_sending_to_a_client_that_reads_nothing_is_counted(
        self, settings: Settings, keepalive_seconds: float
    ) -> None:
        """The shutdown cancels a stream while it waits to send an event its client does
        not read: its mission is cancelled, recorded, logged and counted then, by the
        request, not left running until the drain and never counted."""
        api = settings.api.model_copy(update={"stream_keepalive_seconds": keepalive_seconds})
        container = build_container(settings.model_copy(update={"api": api}))
        unsendable = {"big": lambda: {"success": True, "output": "x" * _UNSENDABLE_CHARS}}
        container.tool_registry.register(TableTool("big", unsendable))
        with structlog.testing.capture_logs() as logs:
            async with _serving(settings, container) as running:
                body = {"mission": f"tool:big {{}}\n{SLOW_MISSION}", "session_id": "stuck"}
                port = int(running.url.rsplit(":", 1)[1])
                with await narrow_client(port, stream_request(body)) as client:
                    # the server is sending the big event: it waits for the client
                    await until(lambda: _has_arrived(client, b"event: tool_result"))
                    running.server.should_exit = True
                    await until(lambda: any(missions_total(container).values()))
                counted = missions_total(container)  # before the drain: by the request
                await asyncio.wait_for(running.task, timeout=GUARD_SECONDS)
            await container.aclose()
        assert {("lean", "cancelled"): 1.0} == {k: v for k, v in counted.items() if v}
        assert counted == missions_total(container)
        assert ["mission.cancelled"] == _mission_events(logs)
        assert ["cancelled"] == [r["status"] for r in _records(settings.state_dir, "stuck")]

    async def test_a_body_still_arriving_is_refused_at_once(self, running: Running) -> None:
        """A request still sending its body gets a 503 saying why, without waiting out the grace."""
        running.server.grace_seconds = 3600
        reader, writer = await _send(running.url, _half_a_body("/api/v1/execute"))
        with structlog.testing.capture_logs() as logs:
            for _ in range(500):  # until the request reached the app and waits for its body
                if running.server.server_state.tasks:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            running.server.should_exit = True
            answer = await asyncio.wait_for(reader.read(), timeout=5)
            await asyncio.wait_for(running.task, timeout=5)
        writer.close()
        status, _, body = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 503")
        assert {"detail": "the service is shutting down; the request was not read"} == json.loads(
            body
        )
        refused = [e for e in logs if e["event"] == "server.requests.refused"]
        assert [1] == [e["requests"] for e in refused]
        assert "server.requests.cancelled" not in [e["event"] for e in logs]

    async def test_a_body_first_asked_for_after_the_signal_is_refused_at_once(
        self, settings: Settings
    ) -> None:
        """A request the server took before the signal, whose route asks for its body only
        after the shutdown began, gets the same 503 at once, logged as refused, instead of
        waiting out the grace for its body."""
        answer, logs = await _asked_for_late(settings, _half_a_body("/late-reader"))
        status, _, body = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 503")
        assert b"\r\nconnection: close" in status.lower()
        assert {"detail": "the service is shutting down; the request was not read"} == json.loads(
            body
        )
        refused = [e for e in logs if e["event"] == "server.requests.refused"]
        assert [("lifecycle", 1)] == [(e["category"], e["requests"]) for e in refused]
        assert "server.requests.cancelled" not in [e["event"] for e in logs]

    async def test_a_whole_body_first_asked_for_after_the_signal_is_served(
        self, settings: Settings
    ) -> None:
        """A request whose whole body came before the signal, whose route asks for it only
        after the shutdown began, is served within the grace: nothing is left to wait for."""
        whole = b"POST /late-reader HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        answer, logs = await _asked_for_late(settings, whole)
        status, _, body = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 200")
        assert {"bytes": 2} == json.loads(body)
        assert "server.requests.refused" not in [e["event"] for e in logs]

    async def test_idle_server_stops_without_cancelling(self, running: Running) -> None:
        """With nothing running, a stop cancels nothing and logs server.stopped."""
        with structlog.testing.capture_logs() as logs:
            running.server.should_exit = True
            await asyncio.wait_for(running.task, timeout=20)
        events = [e["event"] for e in logs]
        assert "server.requests.cancelled" not in events
        assert "server.stopped" == events[-1]


class TestBindSocket:
    def test_port_in_use_names_host_and_port(self) -> None:
        """A port in use is a StartupError of one line naming host and port."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(StartupError) as caught:
                bind_socket("127.0.0.1", port, what="the API")
        message = str(caught.value)
        assert f"127.0.0.1:{port}" in message
        assert "address already in use" in message
        assert "\n" not in message

    def test_unresolvable_host(self) -> None:
        """A host that does not resolve is a StartupError naming it."""
        with pytest.raises(StartupError, match=r"no-such-host\.invalid:80"):
            bind_socket("no-such-host.invalid", 80, what="the API")

    @pytest.mark.parametrize(
        "host", ["x..y", "a" * 64, "\udcff"], ids=["empty-label", "long", "bytes"]
    )
    def test_a_host_no_resolver_can_encode_is_one_line(self, host: str) -> None:
        """A host the IDNA codec refuses (an empty or a 64-character label, a byte that is
        not UTF-8 from the command line) is a StartupError of one line, not a UnicodeError."""
        with pytest.raises(StartupError, match="cannot listen on") as caught:
            bind_socket(host, 80, what="the API")
        assert "\n" not in str(caught.value)

    def test_an_api_address_that_cannot_be_bound_names_the_flags(self, tmp_path: Path) -> None:
        """An API address that is not the machine's stops start-up naming --host and --port,
        an IPv6 address in brackets as a URL writes it (its port apart from its colons)."""
        settings = Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "workspace")
        with pytest.raises(StartupError) as caught:
            serve(settings, "2001:db8::1", 0, 1)  # documentation prefix: never local
        message = str(caught.value)
        assert message.startswith("cannot listen on [2001:db8::1]:0 for the API (--host, --port): ")
        assert "\n" not in message

    @pytest.mark.parametrize("host", ["[::1]", "[::]"])
    def test_an_ipv6_address_in_brackets_is_refused_with_the_form_to_use(self, host: str) -> None:
        """``[::1]`` (a URL's form) is refused at once, saying to drop the brackets: no
        resolver takes it, and a lookup of it may wait on DNS before it fails."""
        with pytest.raises(StartupError) as caught:
            bind_socket(host, 0, what="the API (--host, --port)")
        bare = host[1:-1]
        assert f"write an IPv6 address without brackets ({bare}, not {host})" in str(caught.value)

    def test_the_ipv6_wildcard_takes_both_versions(self) -> None:
        """``::`` listens on every address of both versions, as uvicorn's ``--host ::`` does
        on Linux: a client of 127.0.0.1 and one of ::1 both connect (an IPv6-only cluster
        and an IPv4 one alike reach a pod that listens on ``::``)."""
        _require_ipv6()
        with bind_socket("::", 0, what="the API") as listening:
            port = listening.getsockname()[1]
            for client in ("127.0.0.1", "::1"):
                with socket.create_connection((client, port), timeout=5):
                    accepted, _ = listening.accept()
                    accepted.close()

    @pytest.mark.parametrize("workers", [1, 2])
    def test_a_metrics_address_that_cannot_be_bound_names_its_settings(
        self, tmp_path: Path, workers: int
    ) -> None:
        """A metrics.host that cannot be bound stops start-up naming its variables."""
        settings = Settings(
            state_dir=tmp_path / "state",
            workspace_dir=tmp_path / "workspace",
            metrics={"host": "no-such-host.invalid", "port": 49556},
        )
        with pytest.raises(StartupError) as caught:
            serve(settings, "127.0.0.1", 49555, workers)
        message = str(caught.value)
        assert "no-such-host.invalid:49556" in message
        assert "TASKFORCE_METRICS__HOST" in message
        assert "\n" not in message

    @pytest.mark.parametrize(
        ("has_flag", "named", "unnamed"),
        [
            (True, "--metrics-port", "TASKFORCE_METRICS__PORT"),
            (False, "TASKFORCE_METRICS__PORT", "--metrics-port"),
        ],
    )
    def test_a_metrics_port_in_use_names_what_set_it(
        self, tmp_path: Path, has_flag: bool, named: str, unnamed: str
    ) -> None:
        """A metrics port that is taken names where the port came from (the flag or the
        variable) and, without metrics.host, that its address is the service's --host."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            settings = Settings(
                state_dir=tmp_path / "state",
                workspace_dir=tmp_path / "workspace",
                metrics={"port": port},
            )
            with pytest.raises(StartupError) as caught:
                serve(settings, "127.0.0.1", 0, 1, has_metrics_port_flag=has_flag)
        message = str(caught.value)
        assert f"127.0.0.1:{port} for worker 0's metrics (--host, {named})" in message
        assert unnamed not in message
        assert "TASKFORCE_METRICS__HOST" not in message


def _require_ipv6() -> None:
    """Skip where the machine has no IPv6 loopback: a property of the machine (a container
    may run with IPv6 off), not a binary CI installs, so CI skips too."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
