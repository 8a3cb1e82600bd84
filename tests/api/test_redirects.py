"""Slash redirects carry a relative ``Location``: the path and query, never the ``Host`` header.

Starlette built the ``Location`` of its 307 from the client's ``Host``, so a request
with ``Host: evil.example`` was sent to ``http://evil.example/...``.
"""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from taskforce.api._listener import WorkerSlot, bind_socket
from taskforce.api._redirects import relative_slash_redirects
from taskforce.config import Settings
from tests.support.asgi_calls import call_app, http_scope
from tests.support.taskforce_server import GUARD_SECONDS, serving

MISSION = {"mission": "say hi"}


async def _redirect(port: int, method: str, target: str, host: str) -> httpx.Response:
    """Send ``method target`` with ``Host: host`` to the server on ``port``, unfollowed."""
    async with httpx.AsyncClient(timeout=GUARD_SECONDS) as client:
        return await client.request(
            method, f"http://127.0.0.1:{port}{target}", headers={"Host": host}, json=MISSION
        )


@pytest.mark.integration
class TestOnTheApiPort:
    @pytest.mark.parametrize("host", ["evil.example", "evil.example:8443", "127.0.0.1"])
    async def test_location_is_the_path_whatever_the_host(
        self, settings: Settings, host: str
    ) -> None:
        """A hostile or a normal ``Host`` gets the same 307 to the path alone."""
        async with serving(settings) as (port, _):
            response = await _redirect(port, "POST", "/api/v1/execute/", host)
        assert response.status_code == 307
        assert response.headers["location"] == "/api/v1/execute"

    async def test_query_string_is_kept(self, settings: Settings) -> None:
        """The query of the request follows it, as it was sent."""
        async with serving(settings) as (port, _):
            response = await _redirect(port, "GET", "/health/?probe=a%20b&x=1", "evil.example")
        assert response.status_code == 307
        assert response.headers["location"] == "/health?probe=a%20b&x=1"

    async def test_following_it_reaches_the_route(self, settings: Settings) -> None:
        """A client resolves the relative URL against its own: the mission runs."""
        async with serving(settings) as (port, _):
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=GUARD_SECONDS) as client:
                response = await client.post(
                    "/api/v1/execute/", json=MISSION, follow_redirects=True
                )
        assert [r.status_code for r in response.history] == [307]
        assert response.status_code == 200
        assert str(response.url) == f"{base}/api/v1/execute"
        assert response.json()["status"] == "completed"

    async def test_routes_taken_and_unknown_paths_are_answered_as_before(
        self, settings: Settings
    ) -> None:
        """A route's own path is served and an unknown one is a 404: neither redirects."""
        async with (
            serving(settings) as (port, _),
            httpx.AsyncClient(timeout=GUARD_SECONDS) as client,
        ):
            health = await client.get(f"http://127.0.0.1:{port}/health")
            unknown = await client.get(f"http://127.0.0.1:{port}/nothing/")
        assert health.status_code == 200
        assert unknown.status_code == 404


@pytest.mark.integration
async def test_metrics_listener_redirects_relatively(settings: Settings) -> None:
    """The ``metrics.port`` listener's slash redirect carries the path alone too."""
    metrics_sock = bind_socket("127.0.0.1", 0, what="metrics")
    metrics_port = metrics_sock.getsockname()[1]
    with_port = settings.metrics.model_copy(update={"port": metrics_port})
    slot = WorkerSlot(index=0, metrics_socket=metrics_sock)
    async with (
        serving(settings.model_copy(update={"metrics": with_port}), slot),
        httpx.AsyncClient(timeout=GUARD_SECONDS) as client,
    ):
        url = f"http://127.0.0.1:{metrics_port}/metrics//"
        response = await client.get(url, headers={"Host": "evil.example"})
        followed = await client.get(url, follow_redirects=True)
    assert response.status_code == 307
    assert response.headers["location"] == "/metrics"
    assert followed.status_code == 200
    assert "taskforce_" in followed.text


async def _echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.url.path)


@pytest.mark.parametrize(
    ("path", "location"),
    [
        # read as a host: "//evil.example/x/", and "/\\evil.example/x/" by browsers
        ("//evil.example/x", b"/%2Fevil.example/x/"),
        ("/\\evil.example/x", b"/%5Cevil.example/x/"),
        # a decoded "?" or "#" (sent as %3F, %23) would start the query or the fragment
        ("/a?b", b"/a%3Fb/"),
        ("/a#b", b"/a%23b/"),
    ],
)
async def test_the_path_is_escaped_whatever_starlette_does(path: str, location: bytes) -> None:
    """The path is escaped here: Starlette before 1.9 left ``//evil.example/x/`` to be
    read as a host."""
    app = Starlette(routes=[Route("/{rest:path}/", _echo)])
    relative_slash_redirects(app.router)
    sent = await call_app(app, {**http_scope(path), "query_string": b"q=1"})
    headers = dict(sent[0]["headers"])
    assert sent[0]["status"] == 307
    assert headers[b"location"] == location + b"?q=1"


async def test_a_router_without_slash_redirects_is_left_alone() -> None:
    """``redirect_slashes=False`` stays a 404 for the other form of a path."""
    app = Starlette(routes=[Route("/a", _echo)])
    app.router.redirect_slashes = False
    relative_slash_redirects(app.router)
    sent = await call_app(app, http_scope("/a/"))
    assert sent[0]["status"] == 404
