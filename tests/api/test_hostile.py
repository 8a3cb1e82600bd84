"""Issue 10's hostile-input suite, through a real server on 127.0.0.1.

One server takes every attack of this module in turn; the last test checks it is
still up and its ``/metrics`` still passes ``promtool check metrics``. Servers
with other settings (a bearer token, docs off) get their own, shorter-lived one.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from fastapi.routing import APIRoute

from taskforce.api.server import create_app
from taskforce.config import Settings
from taskforce.observability import configure_logging
from tests.api.conftest import parse_sse
from tests.api.test_metrics_e2e import scrape, total
from tests.support.binaries import require_binary
from tests.support.live_server import LiveServer, serve

pytestmark = pytest.mark.integration

ROUTES = ["/api/v1/execute", "/api/v1/execute/stream"]
MIB = 1024 * 1024


@pytest.fixture(scope="module", name="root")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """State and workspace of the module's server."""
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module", name="hostile_server")
def fixture_hostile_server(root: Path) -> Iterator[LiveServer]:
    """One server for the whole module: every attack hits the same process."""
    settings = Settings(
        state_dir=root / "state",
        workspace_dir=root / "workspace",
        agent={"fail_on_tool_error": False},
    )
    with serve(create_app(settings)) as live:
        yield live


@pytest.fixture(name="hc")
async def fixture_hc(hostile_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the module's server."""
    async with httpx.AsyncClient(base_url=hostile_server.url, timeout=30) as client:
        yield client


def _assert_short_reason(response: httpx.Response, status: int, reason: str) -> None:
    assert status == response.status_code, response.text[:300]
    assert len(response.content) < 2048
    assert reason in json.dumps(response.json()["detail"])


async def _raw_request(url: str, head: bytes, body: bytes = b"") -> bytes:
    """Send ``head`` (and ``body``) on a fresh connection; return all the server sends."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + body)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


class TestHostileJson:
    @pytest.mark.parametrize("route", ROUTES)
    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            (b'{"mission": "\\ud800"}', "unpaired surrogate"),
            (b'{"mission": "hi", "x": "\\udcff"}', "unpaired surrogate"),
            (b'{"mission": NaN}', "NaN"),
            (b'{"mission": "hi", "agent_type": Infinity}', "Infinity"),
            (b'{"mission": "hi", "x": -1e400}', "out of range"),
            (b'{"mission": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested deeper"),
            (b'{"mission": "caf\xe9"}', "not valid UTF-8"),
            (b"\xff\xfe{}", "not valid UTF-8"),
            (b'{"mission": "unterminated', "JSON decode error"),
            (b'{"mission": "say a", "mission": "say b"}', "duplicate key"),
        ],
    )
    async def test_hostile_body_is_a_422_with_reason(
        self, hc: httpx.AsyncClient, route: str, body: bytes, reason: str
    ) -> None:
        """Surrogates, NaN/Infinity, deep nesting and invalid UTF-8 get a short 422, never 500."""
        response = await hc.post(route, content=body, headers={"content-type": "application/json"})
        _assert_short_reason(response, 422, reason)

    @pytest.mark.parametrize("route", ROUTES)
    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            ({"mission": "m" * 200_000}, "at most 100000 characters"),
            ({"mission": "hi", "extra": "y" * 500_000}, "Extra inputs"),
            ({"mission": ["x" * 1000] * 500}, "valid string"),
            ({"mission": "hi", **{f"k{i}": i for i in range(5000)}}, "too_many_errors"),
        ],
    )
    async def test_validation_echoes_a_short_prefix(
        self, hc: httpx.AsyncClient, route: str, body: dict[str, Any], reason: str
    ) -> None:
        """A validation error repeats at most a short prefix of the input, however large."""
        _assert_short_reason(await hc.post(route, json=body), 422, reason)

    @pytest.mark.parametrize("route", ROUTES)
    @pytest.mark.parametrize("field", ["agent", "model", "temperature"])
    async def test_unknown_field_is_named(
        self, hc: httpx.AsyncClient, route: str, field: str
    ) -> None:
        """A field the route does not take is a 422 extra_forbidden naming it (operator guide)."""
        response = await hc.post(route, json={"mission": "say hi", field: "lean"})
        assert response.status_code == 422, response.text[:300]
        [error] = response.json()["detail"]
        assert (error["type"], error["loc"]) == ("extra_forbidden", ["body", field])

    async def test_body_without_content_type_is_short(self, hc: httpx.AsyncClient) -> None:
        """A large body sent without a content type is refused without echoing it."""
        response = await hc.post("/api/v1/execute", content=b"z" * 900_000)
        _assert_short_reason(response, 422, "")


class TestStreams:
    async def _stream(self, hc: httpx.AsyncClient, mission: str) -> list[tuple[str, Any]]:
        response = await hc.post("/api/v1/execute/stream", json={"mission": mission})
        assert 200 == response.status_code
        response.content.decode("utf-8")  # strict: every byte is UTF-8
        return parse_sse(response.text)

    async def test_surrogate_from_a_directive_is_streamed(self, hc: httpx.AsyncClient) -> None:
        """A directive's JSON escape of a lone surrogate is streamed escaped; the result ends it."""
        events = await self._stream(hc, 'tool:calculator {"expression": "\\ud800"}')
        assert "result" == events[-1][0]
        assert any("\ud800" in json.dumps(data, ensure_ascii=False) for _, data in events)

    @pytest.mark.parametrize("route", ROUTES)
    async def test_a_non_utf8_file_name_is_listed(self, hc: httpx.AsyncClient, route: str) -> None:
        """A file name that is not UTF-8 (made by file_write) is listed without breaking."""
        mission = "\n".join(
            [
                'tool:file_write {"path": "poison/\\udcff.txt", "content": "x"}',
                'tool:list_dir {"path": "poison"}',
                "done",
            ]
        )
        response = await hc.post(route, json={"mission": mission, "session_id": "poison"})
        assert 200 == response.status_code
        if route.endswith("stream"):
            assert "result" == parse_sse(response.text)[-1][0]
        else:
            assert "completed" == response.json()["status"]

    @pytest.mark.parametrize("route", ROUTES)
    @pytest.mark.parametrize("mission", [" ", "\n\t ", "\u200b", "\ufeff\x00 \u2060\x1b\n"])
    async def test_blank_mission_refused_before_200(
        self, hc: httpx.AsyncClient, route: str, mission: str
    ) -> None:
        """A mission of whitespace or invisible characters only is a 422 on both routes, not
        a mission (nor, on /stream, a 200 that aborts)."""
        response = await hc.post(route, json={"mission": mission})
        _assert_short_reason(response, 422, "mission must be a non-empty string with a visible")


class TestBodyLimit:
    async def test_declared_oversize_is_413_before_the_body(
        self, hostile_server: LiveServer
    ) -> None:
        """A Content-Length over api.max_body_bytes is a 413 though no body byte was sent."""
        head = (
            b"POST /api/v1/execute HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 52428800\r\n\r\n"
        )
        answer = await _raw_request(hostile_server.url, head)
        assert answer.startswith(b"HTTP/1.1 413 ")

    async def test_chunked_oversize_is_413(self, tmp_path: Path) -> None:
        """A chunked body is cut off at the limit: 413, short, and counted as a normal answer."""
        # The smallest limit, and the whole request in one write: the server has read
        # every byte when it closes, so the client gets the answer, not a reset.
        small = Settings(
            state_dir=tmp_path / "state",
            workspace_dir=tmp_path / "ws",
            api={"max_body_bytes": 1024},
        )
        chunk = b'{"mission": "' + b"a" * 1500 + b'"}'
        head = (
            b"POST /api/v1/execute HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)
        with serve(create_app(small)) as live:
            answer = await _raw_request(live.url, head, body)
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
                samples = await scrape(client)
        status, _, rest = answer.partition(b"\r\n")
        # the reason phrase is Python's: "Content Too Large" (RFC 9110) from 3.13 on
        assert b"HTTP/1.1 413" == status[:12]
        assert b"larger than 1024 bytes" in rest
        assert len(answer) < 400
        counted = total(
            samples, "taskforce_http_requests_total", route="/api/v1/execute", status_code="413"
        )
        assert 1 == counted

    async def test_a_body_at_the_limit_passes(self, hc: httpx.AsyncClient) -> None:
        """A body just under the limit is read and validated (422 for its long mission)."""
        body = json.dumps({"mission": "a" * (MIB - 100)})
        response = await hc.post(
            "/api/v1/execute", content=body, headers={"content-type": "application/json"}
        )
        _assert_short_reason(response, 422, "at most")


class TestNoServerPaths:
    @pytest.mark.parametrize("route", ROUTES)
    @pytest.mark.parametrize("kind", ["corrupt", "directory"])
    async def test_state_errors_hide_the_state_dir(
        self, hc: httpx.AsyncClient, root: Path, route: str, kind: str
    ) -> None:
        """A state file that cannot be read fails the mission without showing where it is."""
        session = f"broken-{kind}"
        target = root / "state" / f"{session}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        if kind == "corrupt":
            target.write_text("{not json", encoding="utf-8")
        else:
            target.mkdir(exist_ok=True)
        response = await hc.post(route, json={"mission": "hi", "session_id": session})
        assert 200 == response.status_code
        assert "failed" in response.text
        assert str(root) not in response.text
        # The store's message names the session, never the file (the log has the path).
        assert f"session '{session}'" in response.text


class TestDisconnect:
    async def test_a_client_that_goes_away_cancels_its_mission(
        self, hc: httpx.AsyncClient, hostile_server: LiveServer, root: Path
    ) -> None:
        """Disconnecting from /execute cancels the mission: counted and recorded `cancelled`.

        The request itself is counted with status 499 (nobody received an answer).
        """
        before = total(await scrape(hc), "taskforce_missions_total", status="cancelled")
        body = {"mission": 'tool:sleep {"seconds": 60}', "session_id": "gone"}
        async with httpx.AsyncClient(base_url=hostile_server.url, timeout=90) as leaving:
            request = asyncio.create_task(leaving.post("/api/v1/execute", json=body))
            await _until(hc, lambda s: total(s, "taskforce_missions_in_progress") >= 1)
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
        samples = await _until(
            hc,
            lambda s: (
                total(s, "taskforce_missions_total", status="cancelled") > before
                and total(s, "taskforce_http_requests_total", status_code="499") >= 1
            ),
        )
        assert 0 == total(samples, "taskforce_missions_in_progress")
        state = json.loads((root / "state" / "gone.json").read_text(encoding="utf-8"))
        assert ["cancelled"] == [m["status"] for m in state["missions"]]

    @pytest.mark.parametrize("route", ROUTES)
    async def test_a_client_that_leaves_mid_body_is_a_499(
        self, hc: httpx.AsyncClient, hostile_server: LiveServer, route: str
    ) -> None:
        """A client that goes away before its body is whole is counted as a 499 (it left,
        nobody received an answer), not as a 400 for a body it never finished."""

        def count(samples: Any, code: str) -> float:
            return total(samples, "taskforce_http_requests_total", route=route, status_code=code)

        samples = await scrape(hc)
        before = {code: count(samples, code) for code in ("400", "499")}
        host, port = hostile_server.url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST {route} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            'Content-Length: 100\r\n\r\n{"mission": '.encode()
        )
        await writer.drain()
        writer.close()
        samples = await _until(hc, lambda s: any(count(s, code) > n for code, n in before.items()))
        assert {"400": 0, "499": 1} == {
            code: count(samples, code) - n for code, n in before.items()
        }


async def _until(hc: httpx.AsyncClient, condition: Any) -> Any:
    """Scrape until ``condition(samples)`` holds (a bounded wait, not a timing assertion)."""
    for _ in range(300):
        samples = await scrape(hc)
        if condition(samples):
            return samples
        await asyncio.sleep(0.05)
    pytest.fail("condition never held")


class TestAuth:
    @pytest.fixture(name="guarded")
    def fixture_guarded(self, tmp_path: Path) -> Iterator[LiveServer]:
        """A server whose mission API needs a bearer token."""
        guarded = Settings(
            state_dir=tmp_path / "state",
            workspace_dir=tmp_path / "ws",
            api={"auth_token": "s3cret-token"},
        )
        with serve(create_app(guarded)) as live:
            yield live

    @pytest.mark.parametrize(
        ("method", "path"),
        [("POST", "/api/v1/execute"), ("POST", "/api/v1/execute/stream"), ("GET", "/api/v1/tools")],
    )
    @pytest.mark.parametrize("header", [None, "Bearer wrong", "s3cret-token", "Basic s3cret-token"])
    async def test_missing_or_wrong_token_is_401(
        self, guarded: LiveServer, method: str, path: str, header: str | None
    ) -> None:
        """Every /api/v1 route refuses a missing or wrong token with 401, before the body."""
        headers = {"authorization": header} if header else {}
        async with httpx.AsyncClient(base_url=guarded.url, timeout=30) as client:
            with structlog.testing.capture_logs() as logs:
                response = await client.request(
                    method, path, content=b'{"mission": NaN', headers=headers
                )
            samples = await scrape(client)
        assert 401 == response.status_code
        assert "Bearer" == response.headers["www-authenticate"]
        failed = [e for e in logs if e["event"] == "api.auth.failed"]
        assert [("security", "warning", path)] == [
            (e["category"], e["log_level"], e["route"]) for e in failed
        ]
        assert "s3cret-token" not in repr(logs)
        assert 1 == total(samples, "taskforce_http_requests_total", route=path, status_code="401")

    async def test_every_api_route_is_guarded(self, guarded: LiveServer) -> None:
        """Every /api/v1 route of the app, present and future, refuses a missing token."""
        app: Any = guarded.server.config.app
        routes = [
            (method, re.sub(r"\{[^}]+\}", "x", route.path))
            for route in app.routes
            if isinstance(route, APIRoute) and route.path.startswith("/api/v1")
            for method in route.methods or ()
        ]
        assert ("POST", "/api/v1/execute") in routes
        async with httpx.AsyncClient(base_url=guarded.url, timeout=30) as client:
            answers = {
                (method, path): (await client.request(method, path)).status_code
                for method, path in routes
            }
        assert {route: 401 for route in routes} == answers

    async def test_a_non_ascii_token_sent_as_utf8_passes(self, tmp_path: Path) -> None:
        """A token outside ASCII matches when the client sends it as UTF-8; the same
        characters as Latin-1 bytes are other bytes, not the token."""
        token = "jeton-\u00e9t\u00e9"
        settings = Settings(
            state_dir=tmp_path / "state", workspace_dir=tmp_path / "ws", api={"auth_token": token}
        )
        with serve(create_app(settings)) as live:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
                answers = [
                    (await client.get("/api/v1/tools", headers={b"authorization": header}))
                    for header in (f"Bearer {token}".encode(), f"Bearer {token}".encode("latin-1"))
                ]
        assert [200, 401] == [answer.status_code for answer in answers]

    async def test_two_tokens_that_differ_are_refused(self, guarded: LiveServer) -> None:
        """Two Authorization headers that differ are a 401 whichever is right (a proxy in
        front may have read the other); the same one repeated is one."""
        right, wrong = ("authorization", "Bearer s3cret-token"), ("authorization", "Bearer x")
        async with httpx.AsyncClient(base_url=guarded.url, timeout=30) as client:
            answers = [
                (await client.get("/api/v1/tools", headers=headers)).status_code
                for headers in ([right, wrong], [wrong, right], [right, right])
            ]
        assert [401, 401, 200] == answers

    async def test_right_token_passes_and_health_metrics_stay_open(
        self, guarded: LiveServer
    ) -> None:
        """With the token the API answers; /health and /metrics never ask for it."""
        async with httpx.AsyncClient(base_url=guarded.url, timeout=30) as client:
            ok = await client.post(
                "/api/v1/execute",
                json={"mission": "hi"},
                headers={"authorization": "Bearer s3cret-token"},
            )
            assert (200, "completed") == (ok.status_code, ok.json()["status"])
            lower = await client.get(
                "/api/v1/tools", headers={"authorization": "bearer s3cret-token"}
            )
            assert 200 == lower.status_code  # the scheme is case-insensitive, as on /metrics
            assert 200 == (await client.get("/health")).status_code
            assert 200 == (await client.get("/metrics")).status_code


class TestDocs:
    @pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
    async def test_docs_served_by_default(self, hc: httpx.AsyncClient, path: str) -> None:
        """By default the API documentation is served."""
        assert 200 == (await hc.get(path)).status_code

    async def test_docs_can_be_turned_off(self, tmp_path: Path) -> None:
        """api.docs_enabled=false turns /docs, /redoc and /openapi.json into 404s."""
        off = Settings(
            state_dir=tmp_path / "state", workspace_dir=tmp_path / "ws", api={"docs_enabled": False}
        )
        with serve(create_app(off)) as live:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
                for path in ("/docs", "/redoc", "/openapi.json"):
                    assert 404 == (await client.get(path)).status_code
                assert 200 == (await client.get("/health")).status_code


class _RefusingStream(io.StringIO):
    """A log stream whose reader went away: every write is a broken pipe."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


class TestBrokenLogSink:
    async def test_missions_run_while_the_log_sink_fails(self, tmp_path: Path) -> None:
        """A log stream that refuses every line (a collector that went away) fails no
        request: a mission, plain and streamed, completes, and the lost lines are counted."""
        configure_logging(fmt="json", level="debug", stream=_RefusingStream())
        settings = Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "ws")
        with serve(create_app(settings)) as live:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
                plain = await client.post("/api/v1/execute", json={"mission": "hi"})
                streamed = await client.post("/api/v1/execute/stream", json={"mission": "hi"})
                samples = await scrape(client)
        assert (200, "completed") == (plain.status_code, plain.json()["status"])
        assert 200 == streamed.status_code
        assert "result" == parse_sse(streamed.text)[-1][0]
        assert 2 == total(samples, "taskforce_missions_total", status="completed")
        assert total(samples, "taskforce_metrics_errors_total", stage="log") > 0


class TestAfterTheSuite:
    async def test_server_still_up_and_metrics_promtool_clean(self, hc: httpx.AsyncClient) -> None:
        """After every attack above the server answers, and its scrape passes promtool."""
        promtool = require_binary("promtool")
        assert "ok" == (await hc.get("/health")).json()["status"]
        assert (
            "completed"
            == (await hc.post("/api/v1/execute", json={"mission": "hi"})).json()["status"]
        )
        scrape_text = (await hc.get("/metrics")).content
        result = await asyncio.to_thread(
            subprocess.run,
            [promtool, "check", "metrics"],
            input=scrape_text,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert (0, b"", b"") == (result.returncode, result.stdout, result.stderr)
        samples = await scrape(hc)
        errors = {k: v for k, v in samples.items() if ("status_code", "500") in k[1]}
        assert {} == errors
