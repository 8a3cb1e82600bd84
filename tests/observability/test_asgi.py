"""The /metrics sub-app through a real uvicorn server: auth, gzip, content type, faults."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from structlog.testing import capture_logs

from taskforce.observability.metrics import CallbackFamily, MetricSet, MetricSpec
from taskforce.observability.metrics._catalog import TOOL_CALLS, TOOL_DURATION
from taskforce.observability.web._app import MetricsMount, make_metrics_app
from tests.observability.metric_samples import value
from tests.support.live_server import LiveServer, serve

TOKEN = "s3cret-token-value"
IDENTITY = {"Accept-Encoding": "identity"}


@pytest.fixture(name="metrics")
def fixture_metrics() -> MetricSet:
    """A MetricSet with a little data in it."""
    metrics = MetricSet()
    metrics.counter(TOOL_CALLS).labels("calculator", "lean", "success").inc()
    return metrics


@pytest.fixture(name="server")
def fixture_server(metrics: MetricSet) -> Iterator[LiveServer]:
    """The sub-app without auth, served on 127.0.0.1."""
    with serve(make_metrics_app(metrics, auth_token=None)) as server:
        yield server


@pytest.fixture(name="auth_server")
def fixture_auth_server(metrics: MetricSet) -> Iterator[LiveServer]:
    """The sub-app with a bearer token, served on 127.0.0.1."""
    with serve(make_metrics_app(metrics, auth_token=TOKEN)) as server:
        yield server


async def _get(url: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url, **kwargs)


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("broken value")


class TestServing:
    @pytest.mark.integration
    async def test_serves_the_registry(self, metrics: MetricSet, server: LiveServer) -> None:
        """GET / returns the MetricSet's exposition with the 0.0.4 content type."""
        response = await _get(server.url + "/", headers=IDENTITY)
        assert 200 == response.status_code
        assert "text/plain; version=0.0.4; charset=utf-8" == response.headers["content-type"]
        assert metrics.render() == response.content
        assert "content-encoding" not in response.headers

    @pytest.mark.integration
    async def test_head(self, server: LiveServer) -> None:
        """HEAD is allowed and has no body."""
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.head(server.url + "/")
        assert (200, b"") == (response.status_code, response.content)

    @pytest.mark.integration
    async def test_no_cache_stores_a_scrape(self, server: LiveServer) -> None:
        """A scrape is the process's state at that moment: GET, gzip or not, and HEAD say
        ``Cache-Control: no-store``, so no cache in front answers a scrape with an old one."""
        async with httpx.AsyncClient(timeout=10) as client:
            answers = [
                await client.request(method, server.url + "/", headers={"Accept-Encoding": coding})
                for method, coding in (("GET", "identity"), ("GET", "gzip"), ("HEAD", "gzip"))
            ]
        assert [(200, "no-store")] * 3 == [
            (answer.status_code, answer.headers.get("cache-control")) for answer in answers
        ]

    @pytest.mark.integration
    async def test_post_not_allowed(self, server: LiveServer) -> None:
        """Only GET and HEAD are served."""
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(server.url + "/")
        assert 405 == response.status_code

    def test_registry_on_the_sub_app_state(self, metrics: MetricSet) -> None:
        """aioprometheus-style handlers find our registry on the sub-app's own state."""
        app = make_metrics_app(metrics, auth_token=None)
        assert metrics.registry is app.state.registry


@pytest.mark.integration
class TestGzip:
    async def test_gzip_when_asked(self, metrics: MetricSet, server: LiveServer) -> None:
        """Accept-Encoding: gzip gets a gzip body, Content-Encoding and Vary."""
        async with httpx.AsyncClient(timeout=10) as client:
            request = client.build_request(
                "GET", server.url + "/", headers={"Accept-Encoding": "gzip"}
            )
            response = await client.send(request, stream=True)
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        assert "gzip" == response.headers["content-encoding"]
        assert "Accept-Encoding" == response.headers["vary"]
        assert metrics.render() == gzip.decompress(raw)

    async def test_no_gzip_with_zero_quality(self, server: LiveServer) -> None:
        """gzip;q=0 means 'not gzip'."""
        response = await _get(server.url + "/", headers={"Accept-Encoding": "gzip;q=0"})
        assert "content-encoding" not in response.headers

    @pytest.mark.parametrize(
        ("accept_encoding", "is_gzip"),
        [
            ("*, gzip;q=0", False),
            ("gzip;q=0, *", False),
            ("*;q=0, gzip", True),
            ("identity;q=0, *;q=0, GZIP;q=0.5", True),
            ("gzip, br, identity;q=0", True),
            ("x-gzip", True),
        ],
    )
    async def test_named_gzip_outranks_the_wildcard(
        self, server: LiveServer, accept_encoding: str, is_gzip: bool
    ) -> None:
        """gzip's own entry decides, wherever it stands; ``*`` only speaks for unnamed codings."""
        response = await _get(server.url + "/", headers={"Accept-Encoding": accept_encoding})
        assert is_gzip == ("gzip" == response.headers.get("content-encoding"))

    async def test_large_body_is_compressed_too(self) -> None:
        """A scrape above the inline limit is compressed off the event loop, same result."""
        metrics = MetricSet(max_label_values=500)
        for i in range(200):
            metrics.counter(TOOL_CALLS).labels(f"tool_{i}", "lean", "success").inc()
            metrics.histogram(TOOL_DURATION).labels(f"tool_{i}", "lean").observe(0.01)
        assert len(metrics.render()) > 64 * 1024
        with serve(make_metrics_app(metrics, auth_token=None)) as server:
            response = await _get(server.url + "/", headers={"Accept-Encoding": "gzip"})
        assert "gzip" == response.headers["content-encoding"]
        assert metrics.render() == response.content


@pytest.mark.integration
class TestAuth:
    @pytest.mark.parametrize(
        ("headers", "reason"),
        [
            ({}, "missing"),
            ({"Authorization": "Bearer wrong"}, "mismatch"),
            ({"Authorization": TOKEN}, "mismatch"),
            ({"Authorization": f"Bearer\t{TOKEN}"}, "mismatch"),
            ({"Authorization": ""}, "missing"),
        ],
    )
    async def test_rejected_without_the_token(
        self, auth_server: LiveServer, headers: dict[str, str], reason: str
    ) -> None:
        """No token, a wrong one or no Bearer scheme: 401 with WWW-Authenticate, logged.

        ``missing`` only without a header: one the guard cannot read is a mismatch, as
        the mission API's guard says ``wrong token`` for it.
        """
        with capture_logs() as logs:
            response = await _get(auth_server.url + "/", headers=headers)
        assert 401 == response.status_code
        assert response.headers["www-authenticate"].startswith("Bearer")
        failed = [entry for entry in logs if entry["event"] == "metrics.auth.failed"]
        assert [("security", reason)] == [(e["category"], e["reason"]) for e in failed]
        assert TOKEN not in repr(logs)

    async def test_a_client_address_of_any_length_is_logged_cut(
        self, auth_server: LiveServer
    ) -> None:
        """The client address is what uvicorn says it is: behind a proxy on loopback, the
        ``X-Forwarded-For`` a peer sent, any text of up to a whole head. The security line
        keeps its first 80 characters and counts the rest, as an error message quotes."""
        forwarded = {"X-Forwarded-For": "c" * 20_000, "Authorization": "Bearer wrong"}
        with capture_logs() as logs:
            response = await _get(auth_server.url + "/", headers=forwarded)
        assert 401 == response.status_code
        failed = [entry for entry in logs if entry["event"] == "metrics.auth.failed"]
        assert ["c" * 80 + "...[+19920 chars]"] == [entry["client"] for entry in failed]

    async def test_accepted_with_the_token(
        self, metrics: MetricSet, auth_server: LiveServer
    ) -> None:
        """The right bearer token (any case of the scheme) gets the exposition."""
        for scheme in ("Bearer", "bearer"):
            headers = {"Authorization": f"{scheme} {TOKEN}", **IDENTITY}
            response = await _get(auth_server.url + "/", headers=headers)
            assert (200, metrics.render()) == (response.status_code, response.content)

    async def test_a_non_ascii_token_sent_as_utf8_is_accepted(self, metrics: MetricSet) -> None:
        """A token outside ASCII matches when a scraper sends it as UTF-8, as Prometheus does."""
        token = "jeton-\u00e9t\u00e9"
        with serve(make_metrics_app(metrics, auth_token=token)) as server:
            utf8 = await _get(
                server.url + "/", headers={"Authorization": f"Bearer {token}".encode()}
            )
            # the same characters as Latin-1 bytes are other bytes: not the token
            latin1 = await _get(
                server.url + "/", headers={"Authorization": f"Bearer {token}".encode("latin-1")}
            )
        assert (200, 401) == (utf8.status_code, latin1.status_code)


async def _scrape_twice(metrics: MetricSet) -> list[httpx.Response]:
    """Two scrapes of the metrics app, through ASGI (no server)."""
    transport = httpx.ASGITransport(app=make_metrics_app(metrics, auth_token=None))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return [await client.get("/", headers=IDENTITY) for _ in range(2)]


class TestRenderFault:
    async def test_failing_family_is_dropped_the_scrape_answers_200(
        self, metrics: MetricSet
    ) -> None:
        """A family whose reader raises is left out, counted, logged once; the rest is served."""

        def unreadable() -> list[tuple[tuple[str, ...], float]]:
            raise OSError("no /proc here")

        spec = MetricSpec("process_open_fds", "gauge", "Open file descriptors.", ())
        metrics.add_callback(CallbackFamily(spec, unreadable))
        with capture_logs() as logs:
            responses = await _scrape_twice(metrics)
        assert [200, 200] == [response.status_code for response in responses]
        body = responses[1].text
        assert "process_open_fds" not in body
        assert "taskforce_tool_calls_total{" in body
        assert 'taskforce_metrics_errors_total{stage="render"} 2\n' in body
        assert [("metrics.fault", "warning", "process_open_fds", "render", "OSError")] == [
            (e["event"], e["log_level"], e["proxy"], e["stage"], e["error_type"]) for e in logs
        ]

    async def test_a_series_that_cannot_be_written_loses_its_family_not_the_scrape(
        self, metrics: MetricSet
    ) -> None:
        """A series that cannot be written: its family is left out, the rest served with 200;
        counted on every scrape, logged once, named by the family."""
        child = metrics.counter(TOOL_CALLS).labels("broken", "lean", "success")
        child.value = _Unprintable()  # type: ignore[assignment]
        with capture_logs() as logs:
            responses = await _scrape_twice(metrics)
        assert [200, 200] == [response.status_code for response in responses]
        body = responses[1].text
        assert "# TYPE taskforce_tool_calls_total" not in body
        assert "\ntaskforce_tool_calls_total{" not in body
        assert "# TYPE taskforce_tool_failures_total counter\n" in body
        # the fault counter is written before the family sorted after it failed
        assert 'taskforce_metrics_errors_total{stage="render"} 1\n' in body
        assert 2 == value(metrics, "taskforce_metrics_errors_total", stage="render")
        assert body.endswith("\n") and "\n\n" not in body
        assert [("metrics.fault", "taskforce_tool_calls_total", "render")] == [
            (e["event"], e["proxy"], e["stage"]) for e in logs
        ]
        child.value = 0
        assert "\ntaskforce_tool_calls_total{" in metrics.render().decode()

    @pytest.mark.integration
    async def test_a_render_that_raises_as_a_whole_gives_500_and_counts(
        self, metrics: MetricSet, server: LiveServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A render that raised as a whole answers 500, counts a render fault, keeps serving.

        Every failed scrape logs ``metrics.render.failed``; the first also ``metrics.fault``.
        """

        async def broken(**kwargs: Any) -> bytes:
            raise RuntimeError("render broken")

        monkeypatch.setattr(metrics, "render_async", broken)
        with capture_logs() as logs:
            statuses = [(await _get(server.url + "/")).status_code for _ in range(2)]
        assert [500, 500] == statuses
        assert 2 == value(metrics, "taskforce_metrics_errors_total", stage="render")
        assert ["metrics.fault", "metrics.render.failed", "metrics.render.failed"] == [
            e["event"] for e in logs
        ]
        assert ("MetricSet", "render", "error") == (
            logs[0]["proxy"],
            logs[0]["stage"],
            logs[2]["log_level"],
        )
        monkeypatch.undo()
        assert 200 == (await _get(server.url + "/")).status_code


@pytest.mark.integration
class TestMount:
    @pytest.fixture(name="parent")
    def fixture_parent(self, metrics: MetricSet) -> Iterator[LiveServer]:
        """A FastAPI app with the sub-app at /metrics via MetricsMount."""
        app = FastAPI()

        @app.get("/health")
        async def health() -> dict[str, str]:
            return {"status": "ok"}

        app.router.routes.append(
            MetricsMount("/metrics", app=make_metrics_app(metrics, auth_token=None))
        )
        with serve(app) as server:
            yield server

    async def test_bare_and_slashed_paths_serve(
        self, metrics: MetricSet, parent: LiveServer
    ) -> None:
        """/metrics answers 200 directly (no 307 to /metrics/), and /metrics/ too."""
        for path in ("/metrics", "/metrics/"):
            response = await _get(parent.url + path, headers=IDENTITY)
            assert (200, metrics.render()) == (response.status_code, response.content), path

    async def test_other_paths_under_the_mount(self, parent: LiveServer) -> None:
        """Neither /metrics/x nor /metricsx is the exposition."""
        assert 404 == (await _get(parent.url + "/metrics/x")).status_code
        assert 404 == (await _get(parent.url + "/metricsx")).status_code

    async def test_not_in_openapi_schema(self, parent: LiveServer) -> None:
        """The mounted sub-app is absent from the OpenAPI schema; real routes are present."""
        paths = (await _get(parent.url + "/openapi.json")).json()["paths"]
        assert ["/health"] == list(paths)
