"""What a generated hostile-input audit found, each kept as a case through a real server.

The audit ran schemathesis against the server's own ``/openapi.json`` (positive and
negative data, every check), and raw-socket probes of every route and path (odd methods,
headers, framing). Each class below is one defect it found, and the
behaviour that holds now.
"""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from taskforce.api._listener import WorkerSlot, bind_socket
from taskforce.config import Settings
from tests.support.taskforce_server import GUARD_SECONDS, serving

pytestmark = pytest.mark.integration

TOKEN = "scrape-token"


def _assert_json_reason(response: httpx.Response, status: int) -> None:
    assert status == response.status_code, response.text[:200]
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert 0 < len(detail) < 200


class TestMetricsPathRefusals:
    """The metrics endpoint refused in plain text (``Method Not Allowed``, ``Not Found``,
    ``unauthorized``) where every other path of the service answers ``{"detail": ...}``."""

    @pytest.mark.parametrize("own_port", [False, True], ids=["api-port", "metrics-port"])
    async def test_every_refusal_is_a_json_reason(self, settings: Settings, own_port: bool) -> None:
        """405 (with its ``Allow``), 404 under the path and 401 are JSON, on either listener."""
        metrics = settings.metrics.model_copy(update={"auth_token": SecretStr(TOKEN)})
        slot = None
        if own_port:
            sock = bind_socket("127.0.0.1", 0, what="metrics")
            metrics = metrics.model_copy(update={"port": sock.getsockname()[1]})
            slot = WorkerSlot(index=0, metrics_socket=sock)
        async with (
            serving(settings.model_copy(update={"metrics": metrics}), slot) as (port, _),
            httpx.AsyncClient(timeout=GUARD_SECONDS) as client,
        ):
            base = f"http://127.0.0.1:{metrics.port or port}"
            auth = {"Authorization": f"Bearer {TOKEN}"}
            for method in ("POST", "OPTIONS", "DELETE", "PROPFIND"):
                refused = await client.request(method, f"{base}/metrics", headers=auth)
                _assert_json_reason(refused, 405)
                assert {"GET", "HEAD"} <= set(refused.headers["allow"].replace(" ", "").split(","))
            _assert_json_reason(await client.get(f"{base}/metrics/x", headers=auth), 404)
            unauthorized = await client.get(f"{base}/metrics")
            _assert_json_reason(unauthorized, 401)
            assert unauthorized.headers["www-authenticate"].startswith("Bearer")
            scrape = await client.get(f"{base}/metrics", headers=auth)
            if own_port:
                _assert_json_reason(await client.get(f"{base}/elsewhere"), 404)
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
