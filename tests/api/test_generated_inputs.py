"""What a generated hostile-input audit found, each kept as a case through a real server.

The audit ran schemathesis against the server's own ``/openapi.json`` (positive and
negative data, every check), raw-socket probes of every route and path (odd methods,
headers, framing), and generated missions against the scripted provider and against a
hostile OpenAI-compatible upstream. Each class below is one defect it found, and the
behaviour that holds now.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from taskforce.api._listener import WorkerSlot, bind_socket
from taskforce.api.server import create_app
from taskforce.config import Settings
from tests.api.conftest import parse_sse
from tests.api.test_metrics_e2e import scrape, total
from tests.infrastructure.llm.test_openai_provider import _completion, _finish, _frame, _text
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.live_server import LiveServer, serve
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


#: Token counts an upstream may send that count nothing: each beside a count that does.
_NOT_COUNTS: dict[str, Any] = {
    "negative": -1,
    "text": "3",
    "fraction": 1.5,
    "past-2**53": 2**60,
}
_OUTPUT_TOKENS = 5


@pytest.fixture(scope="module", name="upstream")
def fixture_upstream(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiveServer, FakeOpenAIServer]]:
    """The service on the OpenAI-compatible provider, and the fake upstream it asks."""
    root: Path = tmp_path_factory.mktemp("upstream")
    fake = FakeOpenAIServer()
    with fake.serve() as base_url:
        settings = Settings(
            state_dir=root / "state",
            workspace_dir=root / "ws",
            llm={"provider": "openai", "base_url": base_url, "model": "gpt-test"},
        )
        with serve(create_app(settings)) as live:
            yield live, fake


class TestUpstreamTokenCounts:
    """An upstream's ``usage`` with a count that is no count (``-1``, ``"3"``, ``1.5``) was
    passed on as it came, and the metrics proxy counted it as a fault of its own:
    ``taskforce_metrics_errors_total{stage="llm"}``, whose documented meaning is a bug in
    the instrumentation, rose with hostile input alone, and the answer's good counts were
    lost with the bad one."""

    @pytest.mark.parametrize("streamed", [False, True], ids=["execute", "stream"])
    @pytest.mark.parametrize("bad", list(_NOT_COUNTS.values()), ids=list(_NOT_COUNTS))
    async def test_a_count_that_counts_nothing_is_left_out(
        self, upstream: tuple[LiveServer, FakeOpenAIServer], bad: Any, streamed: bool
    ) -> None:
        """The mission completes, no instrumentation fault is counted, the good count is."""
        live, fake = upstream
        usage = {"prompt_tokens": bad, "completion_tokens": _OUTPUT_TOKENS}
        if streamed:
            fake.stream_next(
                [_frame([_text("done")]), _frame([_finish()]), _frame([], usage=usage)]
            )
        else:
            choice = {"index": 0, "finish_reason": "stop"}
            fake.respond_next(_completion([{**choice, "message": {"content": "done"}}], usage))
        async with httpx.AsyncClient(base_url=live.url, timeout=GUARD_SECONDS) as client:
            before = await scrape(client)
            route = "/api/v1/execute/stream" if streamed else "/api/v1/execute"
            response = await client.post(route, json={"mission": "hi"})
            after = await scrape(client)
        result = parse_sse(response.text)[-1][1]["result"] if streamed else response.json()
        assert ("completed", "done") == (result["status"], result["final_message"])

        def grown(name: str, **labels: str) -> float:
            return total(after, name, **labels) - total(before, name, **labels)

        assert 0 == grown("taskforce_metrics_errors_total")
        assert _OUTPUT_TOKENS == grown("taskforce_llm_tokens_total", token_type="output")
        assert 0 == grown("taskforce_llm_tokens_total", token_type="input")
