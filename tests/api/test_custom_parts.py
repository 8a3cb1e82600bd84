"""A user's own misbehaving parts on a real server: metrics on or off, the same answers.

Two servers on 127.0.0.1 hold the same custom tools (registered on their containers,
as ``examples/custom_tool.py`` does): one with metrics on, one with them off. Every
tool here misbehaves in its own way (odd values, odd exceptions). Each mission must
get the same answer from both servers, plain and streamed, in both flows; the
observability layer changes nothing. Afterwards both servers still serve, and the
scrape of the observed one passes ``promtool check metrics``.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskforce.api.server import create_app
from taskforce.application.container import Container, build_container
from taskforce.config import Settings
from tests.api.conftest import parse_sse
from tests.support.binaries import require_binary
from tests.support.live_server import LiveServer, serve

pytestmark = pytest.mark.integration


class _RaisingGet(dict[str, Any]):
    """A result mapping whose ``get`` fails."""

    def get(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("get failed")


class _Unequal(str):
    """A text whose comparisons fail."""

    __hash__ = str.__hash__

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq failed")

    def __ne__(self, other: object) -> bool:
        raise RuntimeError("ne failed")


class _UnequalArgument:
    """An object whose comparisons fail, carried by a cancellation."""

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq failed")


def _raises(exc: BaseException) -> Callable[[], Any]:
    def behaviour() -> Any:
        raise exc

    return behaviour


#: tool name -> what its ``execute`` returns (called) or raises.
_TOOLS: dict[str, Callable[[], Any]] = {
    "odd_get_raises": lambda: _RaisingGet(success=True, output=1),
    "odd_error_type_unequal": lambda: {
        "success": False,
        "error": "x",
        "error_type": _Unequal("custom"),
    },
    "odd_nan_inf_output": lambda: {"success": True, "output": [float("nan"), float("inf")]},
    "odd_non_str_keys": lambda: {"success": True, 1: "one", None: "none"},
    "odd_success_not_bool": lambda: {"success": 1},
    "odd_generator": lambda: (n for n in range(3)),
    "odd_system_exit": _raises(SystemExit(3)),
    "odd_generator_exit": _raises(GeneratorExit()),
    "odd_cancelled_unequal": _raises(asyncio.CancelledError(_UnequalArgument())),
    "odd_exception_group": _raises(ExceptionGroup("group", [ValueError("inner")])),
}


class _OddTool:
    """A user's tool: no base class, no metrics code, a behaviour from ``_TOOLS``."""

    description = "misbehaves on purpose"
    parameters_schema: dict[str, Any] = {"type": "object", "properties": {}}

    def __init__(self, name: str) -> None:
        self.name = name

    async def execute(self, **params: Any) -> Any:
        return _TOOLS[self.name]()


def _container(root: Path, *, metrics: bool) -> Container:
    settings = Settings(
        state_dir=root / "state",
        workspace_dir=root / "workspace",
        metrics={"enabled": metrics},
    )
    container = build_container(settings)
    for name in _TOOLS:
        container.tool_registry.register(_OddTool(name))
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


class TestOddTools:
    @pytest.mark.parametrize("name", list(_TOOLS))
    async def test_same_answer_with_metrics_on_and_off(
        self, clients: dict[bool, httpx.AsyncClient], name: str
    ) -> None:
        """A misbehaving tool's mission ends the same way whether metrics are on or off."""
        await _same_answers(clients, f"tool:{name} {{}}")


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
