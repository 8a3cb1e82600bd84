"""No secret leaves a served process: every answer and every log line of a real server.

The configured secrets (``llm.api_key``, ``api.auth_token``, ``metrics.auth_token``) and
the credentials a client sends on its own (a wrong bearer token, ``x-api-key``, a
``?token=`` or ``?api_key=`` in the URL) are looked for in every answer's body and
headers and in everything logged, uvicorn's access lines included.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest

from taskforce.config import Settings
from taskforce.observability import configure_logging
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.taskforce_server import serving

pytestmark = pytest.mark.integration

API_KEY = "sk-LEAKCHECK-llm-key-123"
API_TOKEN = "LEAKCHECK-api-token-456"
METRICS_TOKEN = "LEAKCHECK-metrics-token-789"
#: What the probes send of their own: a distinct value each, none of them configured.
CLIENT = "LEAKCHECK-client"


def _requests() -> list[tuple[str, str, dict[str, str]]]:
    """Method, target and headers of each probe; every credential in it is a secret."""
    api = {"Authorization": f"Bearer {API_TOKEN}"}
    return [
        ("GET", f"/health?token={CLIENT}-1&password={CLIENT}-2", {}),
        ("GET", f"/api/v1/tools?api_key={CLIENT}-3", {"Authorization": f"Bearer {CLIENT}-4"}),
        ("GET", "/api/v1/tools", {"x-api-key": f"{CLIENT}-5", "api-key": f"{CLIENT}-6"}),
        ("GET", f"/metrics?token={CLIENT}-7", {"Authorization": f"Bearer {CLIENT}-8"}),
        ("GET", "/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"}),
        ("GET", f"/no/such/route?access_token={CLIENT}-9", {}),
        ("GET", "/openapi.json", {}),
        ("POST", f"/api/v1/execute?key={CLIENT}-10", api),
        ("GET", "/api/v1/sessions/no-such-session", api),
    ]


async def test_no_secret_in_any_answer_or_log_line(tmp_path: Path) -> None:
    """A provider that quotes the API key back, failed and wrong logins, credentials in
    URLs: none of the secrets is in an answer, and every log line has none either."""
    fake = FakeOpenAIServer()
    log = io.StringIO()
    with fake.serve() as base_url:
        settings = Settings(
            llm={"provider": "openai", "base_url": base_url, "api_key": API_KEY},
            api={"auth_token": API_TOKEN},
            metrics={"auth_token": METRICS_TOKEN},
            state_dir=tmp_path / "state",
            workspace_dir=tmp_path / "ws",
        )
        configure_logging(fmt="json", level="debug", secrets=settings.secret_values(), stream=log)
        # a provider (or a proxy before it) that quotes the request's key back
        fake.respond_next({"error": {"message": f"bad key; sent Bearer {API_KEY}"}}, status=401)
        seen: list[str] = []
        async with (
            serving(settings) as (port, _),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            for method, target, headers in _requests():
                body = {"mission": "hello"} if method == "POST" else None
                answer = await client.request(method, target, headers=headers, json=body)
                seen += [answer.text, str(answer.headers)]
    text = log.getvalue()
    assert "LLM call failed: HTTP 401 Unauthorized: bad key; sent Bearer ***" in "".join(seen)
    # the access lines were logged, their credentials replaced
    assert "/health?token=***&password=*** HTTP/1.1" in text
    assert "LEAKCHECK" not in text
    assert "LEAKCHECK" not in "".join(seen)
