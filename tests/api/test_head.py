"""``HEAD`` on the API's ``GET`` routes: the ``GET`` answer's status and headers, no body.

HTTP requires a general-purpose server to answer ``HEAD`` wherever it answers ``GET``
(RFC 9110, section 9.1); a monitor or a cache that probes with ``HEAD`` must not get
a 405 where ``GET`` works.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from taskforce.api.server import create_app
from taskforce.config import Settings
from tests.support.live_server import serve

pytestmark = pytest.mark.integration


@pytest.fixture(name="client")
async def fixture_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a live server whose state and workspace are in ``tmp_path``."""
    settings = Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "ws")
    with serve(create_app(settings)) as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            yield client


async def test_head_answers_as_get_without_a_body(client: httpx.AsyncClient) -> None:
    """Every GET route of /api/v1 answers HEAD with GET's status and type, and no body."""
    ran = await client.post("/api/v1/execute", json={"mission": "say hi", "session_id": "h"})
    assert 200 == ran.status_code
    for path in ["/api/v1/tools", "/api/v1/sessions/h", "/api/v1/sessions/unknown"]:
        get = await client.get(path)
        head = await client.head(path)
        assert (get.status_code, get.headers["content-type"], b"") == (
            head.status_code,
            head.headers["content-type"],
            head.content,
        ), path
