"""HTTPMetricsMiddleware records requests per route template, never per raw path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send
from structlog.testing import capture_logs

from taskforce.observability.metrics import MetricSet
from taskforce.observability.metrics._catalog import HTTP_REQUESTS
from taskforce.observability.web._app import MetricsMount, make_metrics_app
from taskforce.observability.web._http import HTTPMetricsMiddleware
from tests.observability.metric_samples import break_family, histogram, series, value
from tests.support.asgi_calls import call_app, http_scope
from tests.support.live_server import LiveServer, serve

STREAM_SECONDS = 0.3


async def _item(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.path_params["item_id"])


async def _boom(request: Request) -> PlainTextResponse:
    raise RuntimeError("boom")


async def _stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            await asyncio.sleep(STREAM_SECONDS / 3)
            yield b"data: x\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream")


def _app(metrics: MetricSet) -> Starlette:
    app = Starlette(
        routes=[
            Route("/items/{item_id}", _item, methods=["GET"]),
            Route("/boom", _boom),
            Route("/stream", _stream),
            MetricsMount("/metrics", app=make_metrics_app(metrics, auth_token=None)),
        ]
    )
    app.add_middleware(HTTPMetricsMiddleware, metrics=metrics)
    return app


def _requests(metrics: MetricSet, method: str, route: str, status_code: str) -> Any:
    return value(
        metrics,
        "taskforce_http_requests_total",
        method=method,
        route=route,
        status_code=status_code,
    )


async def _eventually(read: Callable[[], Any], expected: Any) -> None:
    """Wait until the server thread has recorded what the client already received.

    The middleware records after the last byte of the response is sent, so the
    client can hold the response a moment before the sample exists.
    """
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            if expected == read():
                return
        except KeyError:  # the series does not exist yet
            pass
        await asyncio.sleep(0.01)


@pytest.fixture(name="server")
def fixture_server(metrics: MetricSet) -> Iterator[LiveServer]:
    """A Starlette app with the middleware, served on 127.0.0.1."""
    with serve(_app(metrics)) as server:
        yield server


@pytest.mark.integration
class TestLiveRoutes:
    async def test_route_templates_not_raw_paths(
        self, metrics: MetricSet, server: LiveServer
    ) -> None:
        """/items/1 and /items/2 are one series under the template /items/{item_id}."""
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            for item in ("1", "2", "abc"):
                assert 200 == (await client.get(f"/items/{item}")).status_code
        await _eventually(lambda: _requests(metrics, "GET", "/items/{item_id}", "200"), 3)
        assert 3 == _requests(metrics, "GET", "/items/{item_id}", "200")
        assert (
            3
            == histogram(
                metrics,
                "taskforce_http_request_duration_seconds",
                method="GET",
                route="/items/{item_id}",
            )["count"]
        )

    async def test_unmatched_paths_share_one_value(
        self, metrics: MetricSet, server: LiveServer
    ) -> None:
        """Random paths all count under route="unmatched"."""
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            for i in range(20):
                assert 404 == (await client.get(f"/scan/{i}/wp-admin.php")).status_code
        await _eventually(lambda: _requests(metrics, "GET", "unmatched", "404"), 20)
        assert 20 == _requests(metrics, "GET", "unmatched", "404")
        assert {"/items/{item_id}", "/boom", "/stream", "/metrics", "unmatched"} >= {
            labels["route"] for labels in series(metrics, "taskforce_http_requests_total")
        }

    async def test_wrong_method_keeps_the_template(
        self, metrics: MetricSet, server: LiveServer
    ) -> None:
        """A 405 on a known path is recorded under that path's template."""
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            assert 405 == (await client.delete("/items/1")).status_code
        await _eventually(lambda: _requests(metrics, "DELETE", "/items/{item_id}", "405"), 1)
        assert 1 == _requests(metrics, "DELETE", "/items/{item_id}", "405")

    async def test_mount_counts_under_its_path(
        self, metrics: MetricSet, server: LiveServer
    ) -> None:
        """Scrapes of the mounted /metrics sub-app are counted as route="/metrics"."""
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            assert 200 == (await client.get("/metrics")).status_code
            assert 200 == (await client.get("/metrics/")).status_code
        await _eventually(lambda: _requests(metrics, "GET", "/metrics", "200"), 2)
        assert 2 == _requests(metrics, "GET", "/metrics", "200")

    async def test_stream_timed_to_the_end_of_the_body(
        self, metrics: MetricSet, server: LiveServer
    ) -> None:
        """A server-sent-event response is timed until its last chunk."""
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            assert 200 == (await client.get("/stream")).status_code

        def count() -> Any:
            return histogram(
                metrics, "taskforce_http_request_duration_seconds", method="GET", route="/stream"
            )["count"]

        await _eventually(count, 1)
        duration = histogram(
            metrics, "taskforce_http_request_duration_seconds", method="GET", route="/stream"
        )
        assert 1 == duration["count"]
        assert STREAM_SECONDS * 0.9 <= duration["sum"]


class TestExceptions:
    async def test_exception_recorded_as_500_and_reraised_unchanged(
        self, metrics: MetricSet
    ) -> None:
        """The app's own exception object comes out, and the request counts as 500."""
        error = LookupError("the original")

        async def failing(scope: Scope, receive: Receive, send: Send) -> None:
            raise error

        with pytest.raises(LookupError) as raised:
            await call_app(HTTPMetricsMiddleware(failing, metrics), http_scope("/anything"))
        assert error is raised.value
        assert 1 == _requests(metrics, "GET", "unmatched", "500")

    async def test_exception_in_a_starlette_route(self, metrics: MetricSet) -> None:
        """Wrapping a whole Starlette app: a raising route counts under its template as 500."""
        app = Starlette(routes=[Route("/boom", _boom)])
        with pytest.raises(RuntimeError, match="boom"):
            await call_app(HTTPMetricsMiddleware(app, metrics), http_scope("/boom"))
        assert 1 == _requests(metrics, "GET", "/boom", "500")

    async def test_cancelled_after_start_keeps_status(self, metrics: MetricSet) -> None:
        """A request cancelled mid-body keeps the status it already sent."""

        async def cancelled(scope: Scope, receive: Receive, send: Send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            raise asyncio.CancelledError

        with pytest.raises(asyncio.CancelledError):
            await call_app(HTTPMetricsMiddleware(cancelled, metrics), http_scope("/x"))
        assert 1 == _requests(metrics, "GET", "unmatched", "200")

    async def test_cancelled_before_an_answer_counts_503(self, metrics: MetricSet) -> None:
        """A request the server gave up before answering (a shutdown) counts as the 503
        taskforce serve answers it with, not as a 500."""

        async def cancelled(scope: Scope, receive: Receive, send: Send) -> None:
            raise asyncio.CancelledError

        with pytest.raises(asyncio.CancelledError):
            await call_app(HTTPMetricsMiddleware(cancelled, metrics), http_scope("/x"))
        assert 1 == _requests(metrics, "GET", "unmatched", "503")
        assert 'status_code="500"' not in metrics.render().decode()

    async def test_failed_after_start_counts_500(self, metrics: MetricSet) -> None:
        """An app that raises after it started its answer is a 500, as before."""

        async def failing(scope: Scope, receive: Receive, send: Send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            raise RuntimeError("half way")

        with pytest.raises(RuntimeError):
            await call_app(HTTPMetricsMiddleware(failing, metrics), http_scope("/x"))
        assert 1 == _requests(metrics, "GET", "unmatched", "500")

    async def test_recording_fault_is_swallowed(
        self, metrics: MetricSet, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If recording raises, the response is unaffected; each http fault is counted,
        the first also logged as ``metrics.fault``."""

        async def ok(scope: Scope, receive: Receive, send: Send) -> None:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        break_family(monkeypatch, HTTP_REQUESTS)
        middleware = HTTPMetricsMiddleware(ok, metrics)
        with capture_logs() as logs:
            sent = [await call_app(middleware, http_scope("/x")) for _ in range(2)]
        for messages in sent:
            assert [204] == [m["status"] for m in messages if m["type"] == "http.response.start"]
        assert 2 == value(metrics, "taskforce_metrics_errors_total", stage="http")
        assert [("metrics.fault", "metrics", "HTTPMetricsMiddleware", "http")] == [
            (log["event"], log["category"], log["proxy"], log["stage"]) for log in logs
        ]


class TestPassThrough:
    @pytest.mark.parametrize("scope_type", ["lifespan", "websocket"])
    async def test_non_http_scopes_untouched(self, metrics: MetricSet, scope_type: str) -> None:
        """Lifespan and websocket scopes reach the app as they are and record nothing."""
        seen: list[tuple[Scope, Receive, Send]] = []

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            seen.append((scope, receive, send))

        scope: Scope = {"type": scope_type, "path": "/ws"}

        async def receive() -> Message:
            return {}

        async def send(message: Message) -> None:
            return None

        await HTTPMetricsMiddleware(app, metrics)(scope, receive, send)
        assert [(scope, receive, send)] == seen
        assert [] == series(metrics, "taskforce_http_requests_total")

    async def test_what_the_app_writes_to_the_scope_reaches_the_caller(
        self, metrics: MetricSet
    ) -> None:
        """A middleware around this one sees the app's scope writes, as without metrics,
        when the app answers and after it returned (Starlette's router writes ``route``
        from 1.7 on; ``endpoint`` and ``path_params`` in every release)."""
        app = Starlette(routes=[Route("/items/{item_id}", _item)])

        async def marking(scope: Scope, receive: Receive, send: Send) -> None:
            scope["marked"] = True
            scope.setdefault("state", {})["user"] = "u"
            del scope["query_string"]
            await app(scope, receive, send)

        scope = http_scope("/items/7")
        seen_at_start: list[Any] = []

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen_at_start.append((scope.get("endpoint"), scope.get("route")))

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        await HTTPMetricsMiddleware(marking, metrics)(scope, receive, send)
        ((endpoint, route),) = seen_at_start
        assert _item is endpoint
        assert route is scope.get("route")
        assert route is None or "/items/{item_id}" == route.path
        assert _item is scope["endpoint"]
        assert {"item_id": "7"} == scope["path_params"]
        assert (True, {"user": "u"}) == (scope["marked"], scope["state"])
        assert "query_string" not in scope
        assert 1 == _requests(metrics, "GET", "/items/{item_id}", "200")


class TestRouteFromStarlette:
    async def test_full_match_then_partial_then_unmatched(self, metrics: MetricSet) -> None:
        """The route the router picked: FULL wins, a method mismatch gives its template (405)."""
        app = Starlette(
            routes=[
                Route("/a/{item_id}", _item, methods=["POST"]),
                Route("/a/{item_id}", _item, methods=["GET"]),
            ]
        )
        observed = HTTPMetricsMiddleware(app, metrics)
        transport = httpx.ASGITransport(app=observed)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert 200 == (await client.get("/a/1")).status_code
            assert 405 == (await client.put("/a/1")).status_code
            assert 404 == (await client.get("/b")).status_code
        assert 1 == _requests(metrics, "GET", "/a/{item_id}", "200")
        assert 1 == _requests(metrics, "PUT", "/a/{item_id}", "405")
        assert 1 == _requests(metrics, "GET", "unmatched", "404")
