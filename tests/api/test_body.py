"""Strict JSON bodies: a JSON content type, and what Python's json takes but the API refuses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from taskforce.api._body import (
    MANY_TYPES_REASON,
    MAX_JSON_DEPTH,
    NOT_JSON_REASON,
    is_json_media_type,
    parse_strict_json,
)
from taskforce.api._schemas import ExecuteRequest
from taskforce.api.server import create_app
from taskforce.config import Settings
from tests.api.conftest import parse_sse
from tests.api.test_metrics_e2e import scrape, total
from tests.support.live_server import serve

#: Only a guard against a test that would hang: every wait ends long before it.
GUARD_SECONDS = 30


class TestParseStrictJSON:
    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            (b'{"mission": "hi"}', {"mission": "hi"}),
            (b'{"m": "\\ud83d\\ude00 caf\\u00e9"}', {"m": "\U0001f600 café"}),
            (b'{"n": [1.5, -2e10, 3]}', {"n": [1.5, -2e10, 3]}),
            (b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, json.loads("[" * 32 + "]" * 32)),
        ],
    )
    def test_plain_json_passes(self, body: bytes, expected: object) -> None:
        """Valid JSON within the limits parses as json.loads would."""
        assert expected == parse_strict_json(body)

    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            (b'{"mission": NaN}', "NaN is not a JSON number"),
            (b'{"mission": -Infinity}', "-Infinity is not a JSON number"),
            (b'{"x": 1e999}', "out of range"),
            (b'{"mission": "\\ud800"}', "unpaired surrogate \\ud800"),
            (b'{"\\udfff": 1}', "unpaired surrogate \\udfff"),
            (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "nested deeper"),
            (b"[" * 200_000 + b"]" * 200_000, "nested deeper"),
            (b'{"mission": "\xff\xfe"}', "not valid UTF-8"),
            (b'{"x": ' + b"9" * 5000 + b"}", "Exceeds the limit"),
            (b'{"mission": ', "Expecting value"),
            (b'{"mission": "hi", "mission": "rm"}', "duplicate key 'mission'"),
            (b'{"a": {"k": 1, "k": 1}}', "duplicate key 'k'"),
            (b'{"' + b"k" * 100_000 + b'": 1, "' + b"k" * 100_000 + b'": 2}', "duplicate key"),
        ],
    )
    def test_hostile_json_refused_with_reason(self, body: bytes, reason: str) -> None:
        """Each hostile body raises JSONDecodeError whose msg says what is wrong."""
        with pytest.raises(json.JSONDecodeError) as info:
            parse_strict_json(body)
        assert reason in info.value.msg
        assert len(info.value.msg) < 100


MISSION = b'{"mission": "say hi"}'
ROUTES = ["/api/v1/execute", "/api/v1/execute/stream"]


@asynccontextmanager
async def _plain_fastapi(path: str = "/") -> AsyncIterator[httpx.AsyncClient]:
    """A client of a bare FastAPI app whose ``path`` takes an ``ExecuteRequest`` body."""
    plain = FastAPI()

    @plain.post(path)
    async def _route(body: ExecuteRequest) -> dict[str, str]:
        return {"mission": body.mission}

    transport = httpx.ASGITransport(app=plain)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


#: (Content-Type, whether it is JSON)
MEDIA_TYPES = [
    ("application/json", True),
    ("application/json; charset=utf-8", True),
    ("Application/JSON;charset=UTF-8", True),
    ("application/vnd.foo+json", True),
    ("application/problem+json; charset=utf-8", True),
    (" application/json ", True),
    ("application/x-www-form-urlencoded", False),
    ("text/plain; charset=utf-8", False),
    ("multipart/form-data; boundary=x", False),
    ("text/json", False),
    ("application/jsonx", False),
    ("application/a/b+json", False),
    ("json", False),
]


class TestIsJSONMediaType:
    @pytest.mark.parametrize(("content_type", "expected"), MEDIA_TYPES)
    def test_json_with_any_parameters_and_plus_json_only(
        self, content_type: str, expected: bool
    ) -> None:
        """application/json with any parameters, in any case, and application/*+json are
        JSON; a form, text (text/json too), a malformed type or a bare word are not."""
        assert expected == is_json_media_type(content_type)

    @pytest.mark.parametrize("content_type", [content_type for content_type, _ in MEDIA_TYPES])
    async def test_a_type_passes_if_fastapi_parses_it(self, content_type: str) -> None:
        """What passes is what FastAPI itself reads as JSON: nothing let through is then
        refused as a 422 for its type, and nothing FastAPI would read is refused."""
        headers = {"content-type": content_type}
        async with _plain_fastapi() as bare:
            fastapi_parses = (
                200 == (await bare.post("/", content=MISSION, headers=headers)).status_code
            )
        assert fastapi_parses == is_json_media_type(content_type)


def _answered(route: str, response: httpx.Response) -> bool:
    """Whether ``response`` is a mission's success on ``route`` (its result, or a stream's)."""
    if 200 != response.status_code:
        return False
    if route.endswith("/stream"):
        return "result" == parse_sse(response.text)[-1][0]
    return "completed" == response.json()["status"]


@pytest.mark.integration
class TestJSONContentType:
    @pytest.mark.parametrize("route", ROUTES)
    @pytest.mark.parametrize(
        "content_type", ["application/x-www-form-urlencoded", "text/plain; charset=utf-8"]
    )
    async def test_a_body_that_is_not_json_by_its_type_is_a_415(
        self, client: httpx.AsyncClient, route: str, content_type: str
    ) -> None:
        """curl -d's form type or text/plain: a 415 naming what is accepted; the next request
        on the kept-alive connection is served."""
        response = await client.post(route, content=MISSION, headers={"content-type": content_type})
        assert (415, {"detail": NOT_JSON_REASON}) == (response.status_code, response.json())
        assert "application/json" == response.headers["content-type"]
        again = await client.post(
            route, content=MISSION, headers={"content-type": "application/json"}
        )
        assert _answered(route, again)

    @pytest.mark.parametrize("route", ROUTES)
    @pytest.mark.parametrize(
        "content_type",
        ["application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd.foo+json"],
    )
    async def test_json_types_run_the_mission(
        self, client: httpx.AsyncClient, route: str, content_type: str
    ) -> None:
        """application/json with parameters, in any case, and application/*+json run it."""
        response = await client.post(route, content=MISSION, headers={"content-type": content_type})
        assert _answered(route, response), response.text[:300]

    @pytest.mark.parametrize("route", ROUTES)
    @pytest.mark.parametrize(
        "types", [("application/json", "text/plain"), ("text/plain", "application/json")]
    )
    async def test_two_differing_content_types_are_a_415(
        self, client: httpx.AsyncClient, route: str, types: tuple[str, str]
    ) -> None:
        """Two Content-Type headers that differ are refused whichever comes first: a proxy
        that reads the other one (a WAF that skips a text/plain body) must not see
        another request than the one that runs; no mission ran."""
        headers = [("content-type", kind) for kind in types]
        response = await client.post(route, content=MISSION, headers=headers)
        assert (415, {"detail": MANY_TYPES_REASON}) == (response.status_code, response.json())
        samples = await scrape(client)
        assert 0 == total(samples, "taskforce_missions_total")

    @pytest.mark.parametrize("route", ROUTES)
    @pytest.mark.parametrize("coding", ["gzip", "GZIP", "identity, deflate", "br"])
    async def test_a_compressed_body_is_a_415(
        self, client: httpx.AsyncClient, route: str, coding: str
    ) -> None:
        """A Content-Encoding is not decoded: a 415 that says so, plain JSON under it too
        (a proxy that inflates it would check another body than the one that runs)."""
        headers = {"content-type": "application/json", "content-encoding": coding}
        response = await client.post(route, content=MISSION, headers=headers)
        assert 415 == response.status_code
        assert "compressed (content-encoding)" in response.json()["detail"]
        samples = await scrape(client)
        assert 0 == total(samples, "taskforce_missions_total")

    async def test_identity_is_no_content_coding(self, client: httpx.AsyncClient) -> None:
        """Pins existing behaviour: Content-Encoding identity (any case) runs the mission."""
        headers = {"content-type": "application/json", "content-encoding": "Identity"}
        response = await client.post(ROUTES[0], content=MISSION, headers=headers)
        assert _answered(ROUTES[0], response), response.text[:300]

    async def test_the_same_content_type_twice_is_one(self, client: httpx.AsyncClient) -> None:
        """Pins existing behaviour: a Content-Type repeated with the same value is no
        ambiguity, and the mission runs."""
        headers = [("content-type", "application/json")] * 2
        response = await client.post(ROUTES[0], content=MISSION, headers=headers)
        assert _answered(ROUTES[0], response), response.text[:300]

    @pytest.mark.parametrize("route", ROUTES)
    async def test_no_content_type_is_a_422_that_names_the_header(
        self, client: httpx.AsyncClient, route: str
    ) -> None:
        """Without a Content-Type the body is not read as JSON (FastAPI would not either):
        the 422 CONTRACT.md gives a malformed body, as FastAPI's own, but with a reason
        that names the header; no mission ran, and the next request is served."""
        response = await client.post(route, content=MISSION)
        assert "content-type" not in response.request.headers
        assert (422, {"detail": NOT_JSON_REASON}) == (response.status_code, response.json())
        samples = await scrape(client)
        assert 0 == total(samples, "taskforce_missions_total")
        again = await client.post(
            route, content=MISSION, headers={"content-type": "application/json"}
        )
        assert _answered(route, again)

    @pytest.mark.parametrize("route", ROUTES)
    async def test_a_415_is_counted_under_its_route_and_starts_no_mission(
        self, client: httpx.AsyncClient, route: str
    ) -> None:
        """The HTTP metrics count the 415 under the route template; no mission ran."""
        response = await client.post(route, content=MISSION, headers={"content-type": "text/plain"})
        assert 415 == response.status_code
        samples = await scrape(client)
        assert 1 == total(samples, "taskforce_http_requests_total", route=route, status_code="415")
        assert 0 == total(samples, "taskforce_missions_total")
        assert {"in_flight": 0, "limit": 64} == (await client.get("/health")).json()["missions"]

    async def test_the_415_comes_before_the_body(self, tmp_path: Path) -> None:
        """A declared body never sent is not waited for: a 415, not the body's 408."""
        settings = Settings(
            state_dir=tmp_path / "state",
            workspace_dir=tmp_path / "ws",
            api={"read_timeout_seconds": 0.5},
        )
        head = (
            b"POST /api/v1/execute HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 100\r\n\r\n"
        )
        with serve(create_app(settings)) as live:
            reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
            try:
                writer.write(head)
                await writer.drain()
                answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD_SECONDS)
            finally:
                writer.close()
        assert answer.startswith(b"HTTP/1.1 415 Unsupported Media Type\r\n")

    async def test_the_token_is_checked_first(self, settings: Settings) -> None:
        """Pins existing behaviour: with api.auth_token, a request without it is a 401
        whatever its Content-Type; a client learns nothing more before it authenticates."""
        guarded = settings.model_copy(
            update={"api": settings.api.model_copy(update={"auth_token": SecretStr("t0ken")})}
        )
        with serve(create_app(guarded)) as live:
            async with httpx.AsyncClient(base_url=live.url, timeout=GUARD_SECONDS) as client:
                plain = {"content-type": "text/plain"}
                anonymous = await client.post(ROUTES[0], content=MISSION, headers=plain)
                signed = await client.post(
                    ROUTES[0],
                    content=MISSION,
                    headers={**plain, "authorization": "Bearer t0ken"},
                )
        assert (401, 415) == (anonymous.status_code, signed.status_code)
