"""``api.read_timeout_seconds``: a request that does not arrive whole in time, on a real server.

Idle connections, unfinished headers and bodies that never end held a socket for good:
uvicorn only times a connection out between two requests. Each case here gets a 408
(or, for a body the app did not wait for, a closed connection) once the deadline passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import structlog

from taskforce.api._listener import WorkerSlot, bind_socket
from taskforce.config import Settings
from taskforce.infrastructure.tools import session_folder_name
from tests.api.test_metrics_e2e import scrape, total
from tests.observability.metric_samples import series, value
from tests.support.taskforce_server import GUARD_SECONDS, serving, until_closed

pytestmark = pytest.mark.integration

READ_TIMEOUT = 0.3
HTTP = "taskforce_http_requests_total"
EXECUTE_HEAD = b"POST /api/v1/execute HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"


@pytest.fixture(name="timed_settings")
def fixture_timed_settings(settings: Settings) -> Settings:
    """The default settings with a short ``api.read_timeout_seconds``."""
    api = settings.api.model_copy(update={"read_timeout_seconds": READ_TIMEOUT})
    return settings.model_copy(update={"api": api})


async def _one_response(reader: asyncio.StreamReader) -> bytes:
    """Read one response with a ``content-length`` from ``reader``."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
    return head + await reader.readexactly(length)


class TestHeaders:
    @pytest.mark.parametrize(
        "sent",
        [
            pytest.param(b"", id="idle-connection"),
            pytest.param(b"GET /hea", id="partial-request-line"),
            pytest.param(b"GET /health HTTP/1.1\r\nHost: t\r\n", id="unfinished-headers"),
        ],
    )
    async def test_unfinished_head_gets_a_408(self, timed_settings: Settings, sent: bytes) -> None:
        """A connection whose request headers do not end in time gets a 408 and is closed."""
        async with serving(timed_settings) as (port, _):
            with structlog.testing.capture_logs() as logs:
                answer = await until_closed(port, sent)
        head, _, body = answer.partition(b"\r\n\r\n")
        status_line, *lines = head.split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines)
        assert b"HTTP/1.1 408 Request Timeout" == status_line
        assert b"application/json" == headers[b"content-type"]
        assert b"close" == headers[b"connection"]
        assert len(body) == int(headers[b"content-length"])
        detail = "request headers were not received within 0.3 seconds"
        assert {"detail": detail} == json.loads(body)
        timeouts = [log for log in logs if log["event"] == "http.request.timeout"]
        assert [("headers", "http")] == [(log["stage"], log["category"]) for log in timeouts]

    async def test_late_headers_are_not_counted(self, timed_settings: Settings) -> None:
        """A 408 for late headers comes before any route: no HTTP request series counts it."""
        async with serving(timed_settings) as (port, app):
            answer = await until_closed(port, b"GET /health HTTP/1.1\r\n")
            metrics = app.state.container.metrics
            counted = [labels for labels in series(metrics, HTTP) if labels["status_code"] == "408"]
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert [] == counted

    async def test_next_request_on_a_kept_connection_is_timed(
        self, timed_settings: Settings
    ) -> None:
        """After a whole request and its answer, a second one left unfinished gets a 408 too."""
        async with serving(timed_settings) as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
                first = await asyncio.wait_for(_one_response(reader), GUARD_SECONDS)
                writer.write(b"GET /health HTTP/1.1\r\n")
                second = await asyncio.wait_for(reader.read(), GUARD_SECONDS)
            finally:
                writer.close()
        assert first.startswith(b"HTTP/1.1 200 ")
        assert second.startswith(b"HTTP/1.1 408 ")

    async def test_whole_request_is_answered(self, timed_settings: Settings) -> None:
        """A request sent whole is answered as usual; the deadline never fires."""
        async with serving(timed_settings) as (port, _):
            with structlog.testing.capture_logs() as logs:
                sent = b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                answer = await until_closed(port, sent)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert [] == [log for log in logs if log["event"] == "http.request.timeout"]


class TestBody:
    @pytest.mark.parametrize(
        "sent",
        [
            pytest.param(EXECUTE_HEAD + b'Content-Length: 100\r\n\r\n{"mis', id="short-body"),
            pytest.param(
                EXECUTE_HEAD + b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"mis\r\n',
                id="endless-chunked-body",
            ),
        ],
    )
    async def test_unfinished_body_gets_a_408_counted(
        self, timed_settings: Settings, sent: bytes
    ) -> None:
        """A body the route waits for and that does not end in time is a 408, counted."""
        async with serving(timed_settings) as (port, app):
            answer = await until_closed(port, sent)
            metrics = app.state.container.metrics
            counted = value(
                metrics, HTTP, method="POST", route="/api/v1/execute", status_code="408"
            )
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"request body was not received within 0.3 seconds" in answer
        assert 1 == counted

    async def test_body_dripped_after_the_answer_is_cut(self, timed_settings: Settings) -> None:
        """A route that answered without the body does not keep a dripping client connected."""
        async with serving(timed_settings) as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head = b"GET /health HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            writer.write(head + b"1\r\na\r\n")
            with structlog.testing.capture_logs() as logs:
                for _ in range(GUARD_SECONDS * 20):  # a guard only: the server cuts it first
                    writer.write(b"1\r\na\r\n")
                    with contextlib.suppress(TimeoutError, ConnectionError):
                        await asyncio.wait_for(reader.read(65536), 0.05)
                    if reader.at_eof():
                        break
            writer.close()
        assert reader.at_eof()
        events = [(log["event"], log.get("stage")) for log in logs]
        assert ("http.request.timeout", "body") in events


class TestAnswerBeforeTheWholeBody:
    @pytest.mark.parametrize("framing", ["content-length", "chunked"])
    async def test_a_client_still_sending_an_oversize_body_reads_the_413(
        self, settings: Settings, framing: str
    ) -> None:
        """A body over api.max_body_bytes refused while its client still sends it, as an
        upload does: the client reads the 413 and its reason, not a connection reset (the
        server reads and drops what still comes, within bounds, before it closes)."""
        body = b"x" * (8 * 1024 * 1024)

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 64 * 1024):
                yield body[start : start + 64 * 1024]

        content = body if framing == "content-length" else pieces()
        async with serving(settings) as (port, _):
            url = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=url, timeout=GUARD_SECONDS) as client:
                answer = await client.post(
                    "/api/v1/execute",
                    content=content,
                    headers={"content-type": "application/json"},
                )
        limit = settings.api.max_body_bytes
        assert (413, {"detail": f"request body is larger than {limit} bytes"}) == (
            answer.status_code,
            answer.json(),
        )


def stream_request(body: dict[str, Any]) -> bytes:
    """The HTTP request, as sent, that POSTs ``body`` to the stream route."""
    payload = json.dumps(body).encode()
    head = b"POST /api/v1/execute/stream HTTP/1.1\r\nHost: t\r\n"
    head += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(payload)
    return head + payload


def _big_stream(settings: Settings, session: str, reads: int) -> bytes:
    """A stream request whose mission reads a large file ``reads`` times."""
    folder = settings.workspace_dir / session_folder_name(session)
    folder.mkdir(parents=True)
    (folder / "big.txt").write_text("x" * 900_000, encoding="utf-8")
    steps = ['tool:file_read {"path": "big.txt"}'] * reads
    return stream_request({"mission": "\n".join([*steps, "done"]), "session_id": session})


async def narrow_client(port: int, request: bytes) -> socket.socket:
    """Send ``request`` from a socket with a small receive buffer; return the socket."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(client, ("127.0.0.1", port))
    await loop.sock_sendall(client, request)
    return client


class TestUnreadAnswer:
    @pytest.mark.parametrize("keepalive", [15.0, 0.01])
    async def test_a_stream_left_unread_is_cut_and_frees_its_slot(
        self, timed_settings: Settings, keepalive: float
    ) -> None:
        """A client that stops reading its stream loses it after the write timeout, also
        while keep-alive comments wait to be sent (they do not count as read)."""
        api = timed_settings.api.model_copy(update={"stream_keepalive_seconds": keepalive})
        settings = timed_settings.model_copy(update={"api": api})
        request = _big_stream(settings, "unread", 15)
        with structlog.testing.capture_logs() as logs:
            async with serving(settings, write_timeout=0.5) as (port, _):
                client = await narrow_client(port, request)
                async with asyncio.timeout(GUARD_SECONDS):
                    while True:  # until the server gave up on the unread answer
                        if "http.response.stalled" in [e["event"] for e in logs]:
                            break
                        await asyncio.sleep(0.05)
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as probe:
                        while True:  # until the mission's slot is free again
                            health = (await probe.get("/health")).json()
                            if health["missions"]["in_flight"] == 0:
                                break
                            await asyncio.sleep(0.05)
                client.close()
        stalled = [e for e in logs if e["event"] == "http.response.stalled"]
        assert [0.5] == [e["timeout_seconds"] for e in stalled]

    async def test_a_mission_held_back_by_an_unread_stream_is_cancelled_with_it(
        self, timed_settings: Settings
    ) -> None:
        """With one event allowed to queue, a mission whose client stops reading waits
        for it rather than running on: when the write timeout cuts the stream, the
        mission is cancelled short of its 15 reads, and its record, log and metrics say
        ``cancelled`` alike."""
        agent = timed_settings.agent.model_copy(update={"max_queued_events": 1})
        settings = timed_settings.model_copy(update={"agent": agent})
        request = _big_stream(settings, "held", 15)
        with structlog.testing.capture_logs() as logs:
            async with serving(settings, write_timeout=0.5) as (port, _):
                client = await narrow_client(port, request)
                async with (
                    asyncio.timeout(GUARD_SECONDS),
                    httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as probe,
                ):
                    while True:  # until the mission is counted
                        samples = await scrape(probe)
                        if total(samples, "taskforce_missions_total"):
                            break
                        await asyncio.sleep(0.05)
                    record = (await probe.get("/api/v1/sessions/held")).json()["missions"]
                client.close()
        assert "http.response.stalled" in [e["event"] for e in logs]
        measured = [e for e in logs if e["event"] == "mission.duration.measured"]
        assert ["cancelled"] == [e["status"] for e in measured]
        assert [("cancelled", True)] == [(r["status"], len(r["steps"]) < 15) for r in record]
        assert 1 == total(samples, "taskforce_missions_total", status="cancelled")

    async def test_a_stream_read_slowly_but_steadily_is_not_cut(
        self, timed_settings: Settings
    ) -> None:
        """A client that keeps reading, slower than the answer comes, gets all of it."""
        request = _big_stream(timed_settings, "slow", 4)
        answer = b""
        with structlog.testing.capture_logs() as logs:
            async with serving(timed_settings, write_timeout=0.5) as (port, _):
                client = await narrow_client(port, request)
                loop = asyncio.get_running_loop()
                async with asyncio.timeout(GUARD_SECONDS * 2):
                    while chunk := await loop.sock_recv(client, 16384):
                        answer += chunk
                        await asyncio.sleep(0.01)  # slower than the server writes
                client.close()
        assert "http.response.stalled" not in [e["event"] for e in logs]
        assert answer.endswith(b'"error":null,"error_type":null}}\n\n\r\n0\r\n\r\n')
        assert b"Completed 4 tool call(s)" in answer[-2_000_000:]


def _with_metrics_port(settings: Settings) -> tuple[Settings, WorkerSlot, int]:
    """``settings`` with a ``metrics.port`` listener on a free port: its slot and port."""
    metrics_sock = bind_socket("127.0.0.1", 0, what="metrics")
    metrics_port = metrics_sock.getsockname()[1]
    with_port = settings.metrics.model_copy(update={"port": metrics_port})
    slot = WorkerSlot(index=0, metrics_socket=metrics_sock)
    return settings.model_copy(update={"metrics": with_port}), slot, metrics_port


HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


def _answers(received: bytes) -> list[tuple[bytes, Any]]:
    """Split responses with a ``content-length`` into (status line, JSON body) pairs."""
    answers = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        status_line, *lines = head.split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines)
        length = int(headers[b"content-length"])
        answers.append((status_line, json.loads(rest[:length])))
        received = rest[length:]
    return answers


class TestHalfClose:
    """A client that shuts its write side after its request (``nc -N``) still reads.

    The old code closed the connection at the client's FIN: nothing was answered.
    """

    async def test_a_whole_request_then_a_half_close_is_answered(self, settings: Settings) -> None:
        """``GET /health`` then ``shutdown(SHUT_WR)``: the 200 and its JSON, then the close;
        two pipelined requests before the FIN are both answered."""
        async with serving(settings) as (port, _):
            answers = [_answers(await until_closed(port, HEALTH, half_close=True))]
            two = await until_closed(port, HEALTH + HEALTH, half_close=True)
        assert [[(b"HTTP/1.1 200 OK", {"status": "ok"})]] == [
            [(line, {"status": body["status"]}) for line, body in got] for got in answers
        ]
        assert [b"HTTP/1.1 200 OK"] * 2 == [line for line, _ in _answers(two)]

    async def test_the_metrics_listener_answers_a_half_closed_scrape(
        self, settings: Settings
    ) -> None:
        """The ``metrics.port`` listener shares the protocol: a half-closed scrape is answered."""
        settings, slot, metrics_port = _with_metrics_port(settings)
        async with serving(settings, slot):
            scrape = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
            answer = await until_closed(metrics_port, scrape, half_close=True)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"taskforce_http_requests_total" in answer

    async def test_an_incomplete_request_then_a_half_close_is_closed(
        self, settings: Settings
    ) -> None:
        """Half a request, then the FIN: closed without an answer, as before."""
        async with serving(settings) as (port, _):
            assert b"" == await until_closed(port, b"GET /health HTTP/1.1\r\n", half_close=True)


class TestMetricsListener:
    async def test_idle_connection_to_metrics_port_gets_a_408(
        self, timed_settings: Settings
    ) -> None:
        """The metrics listener of ``metrics.port`` times a request out the same way."""
        settings, slot, metrics_port = _with_metrics_port(timed_settings)
        async with serving(settings, slot):
            answer = await until_closed(metrics_port, b"GET /metr")
        assert answer.startswith(b"HTTP/1.1 408 ")
