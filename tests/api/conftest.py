"""Fixtures for the API tests: a real uvicorn server around ``create_app`` on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from taskforce.api.server import create_app
from taskforce.config import Settings
from taskforce.observability.logs._logging import configure_logging
from tests.support.json_lines import JSONLines
from tests.support.live_server import LiveServer, serve

CALC_WRITE_MISSION = "\n".join(
    [
        'tool:calculator {"expression": "6*7"}',
        'tool:file_write {"path": "answer.txt", "content": "42"}',
        "Report the answer.",
    ]
)


@pytest.fixture(name="server")
def fixture_server(settings: Settings) -> Iterator[LiveServer]:
    """The taskforce app (default settings, tmp dirs) under a real uvicorn server."""
    with serve(create_app(settings)) as live:
        yield live


@pytest.fixture(name="client")
async def fixture_client(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the live server."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30.0) as client:
        yield client


@pytest.fixture(name="lines")
def fixture_lines() -> JSONLines:
    """The JSON log lines of this test (logging is set up again for each test)."""
    lines = JSONLines()
    configure_logging(fmt="json", stream=lines)
    return lines


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Split a Server-Sent Events body into (event, data) pairs, as EventSource reads it:
    comment lines (``: keep-alive``) are skipped."""
    events: list[tuple[str, dict[str, Any]]] = []
    for block in text.strip().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if not lines:
            continue
        fields = dict(line.split(": ", 1) for line in lines if ": " in line)
        events.append((fields["event"], json.loads(fields["data"])))
    return events
