"""One call, one outcome against an OpenAI-compatible endpoint: result, log lines and scrape agree.

The checks of ``tests/api/test_agreement.py``, for the failures a real endpoint gives
(the fake server of ``tests/support/fake_openai.py`` on 127.0.0.1): an error status of
each LLM error type, an error object in a 200 and an answer that is no completion, in
both flows, on ``POST /api/v1/execute`` and ``/api/v1/execute/stream``, with a session
and without one (a new session, which keeps the record all the same); and ``taskforce
run`` against an endpoint that refuses the connection or does not answer in time.
"""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from taskforce.api.server import create_app
from taskforce.application.container import Container, build_container
from taskforce.config import Settings
from taskforce.infrastructure.llm import OpenAICompatibleProvider
from tests.api.test_agreement import _check_lines, _of, agree, run_json
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.json_lines import JSONLines
from tests.support.live_server import LiveServer, serve

pytestmark = pytest.mark.integration

_MODEL = "gpt-test"
_KEY = "sk-agreement-key"
#: Only a guard against a test that would hang; every wait ends long before it.
_GUARD_SECONDS = 30.0
_MAX_RETRIES = 2

#: case -> (how the fake answers the mission's first call, the mission's error_type); one
#: case for each way the provider classifies a failure
_CASES: dict[str, tuple[Callable[[FakeOpenAIServer], None], str]] = {
    "429 on every attempt": (lambda fake: fake.fail_next(_MAX_RETRIES + 1, 429), "rate_limit"),
    "401": (lambda fake: fake.fail_next(1, 401), "auth"),
    "404": (lambda fake: fake.fail_next(1, 404), "bad_request"),
    "500 on every attempt": (lambda fake: fake.fail_next(_MAX_RETRIES + 1, 500), "server_error"),
    "an HTML page": (lambda fake: fake.respond_next(b"<html>down</html>"), "invalid_response"),
    "an error object in a 200": (
        lambda fake: fake.respond_next({"error": {"code": 400, "message": "refused"}}),
        "bad_request",
    ),
}
#: (flow, route) -> whether the mission names a session: each flow and each route both ways
_SESSION = {
    ("lean", "execute"): True,
    ("lean", "stream"): False,
    ("legacy", "execute"): False,
    ("legacy", "stream"): True,
}


def _closing_at_shutdown(app: FastAPI, container: Container) -> FastAPI:
    """``app``, its lifespan closing ``container`` too: on the server's event loop, where
    the provider's connections were opened (closed from another loop, they would leak)."""
    started = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(served: Any) -> AsyncIterator[Any]:
        async with started(served) as state:
            yield state
        await container.aclose()

    app.router.lifespan_context = lifespan
    return app


@pytest.fixture(scope="module", name="endpoint")
def fixture_endpoint(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiveServer, FakeOpenAIServer]]:
    """taskforce with the OpenAI-compatible provider (no backoff) in front of the fake."""
    with _served_in_front_of(
        FakeOpenAIServer(), tmp_path_factory.mktemp("agreement-openai")
    ) as both:
        yield both


@contextlib.contextmanager
def _served_in_front_of(
    fake: FakeOpenAIServer, root: Path
) -> Iterator[tuple[LiveServer, FakeOpenAIServer]]:
    """taskforce with the OpenAI-compatible provider (no backoff) in front of ``fake``."""
    with fake.serve() as base_url:
        settings = Settings(
            state_dir=root / "state",
            workspace_dir=root / "workspace",
            llm={"provider": "openai", "base_url": base_url, "api_key": _KEY, "model": _MODEL},
        )
        provider = OpenAICompatibleProvider(
            _MODEL,
            base_url,
            api_key=_KEY,
            max_retries=_MAX_RETRIES,
            backoff_base_seconds=0.0,
            backoff_max_seconds=0.0,
        )
        container = build_container(settings, llm_provider=provider)
        with serve(_closing_at_shutdown(create_app(container=container), container)) as live:
            yield live, fake


class TestAnEndpointThatFails:
    @pytest.mark.parametrize(("flow", "route"), list(_SESSION))
    @pytest.mark.parametrize("case", list(_CASES))
    async def test_result_record_log_and_metrics_agree(
        self,
        endpoint: tuple[LiveServer, FakeOpenAIServer],
        lines: JSONLines,
        case: str,
        flow: str,
        route: str,
    ) -> None:
        """The mission fails with the endpoint's error type; its result, session record,
        log lines and scrape say the same of it, of its failed call and of its retries."""
        live, fake = endpoint
        fake.reset()
        answer, expected = _CASES[case]
        answer(fake)
        body = {"mission": "hello", "agent_type": flow}
        if _SESSION[(flow, route)]:
            body["session_id"] = uuid.uuid4().hex
        result, mine, grown = await agree(live.url, lines, body, route, expected)
        assert _KEY not in json.dumps(result)
        assert [expected] == _of(mine, "llm.call.failed")
        assert Counter({expected: 1}) == grown("taskforce_llm_failures_total", "error_type")


_SERVED = "gpt-test-2026-01-01"


@pytest.fixture(name="aliased")
def fixture_aliased(tmp_path: Path) -> Iterator[tuple[LiveServer, FakeOpenAIServer]]:
    """taskforce in front of a fake that serves ``gpt-test`` as a dated model."""
    with _served_in_front_of(FakeOpenAIServer(reported_model=_SERVED), tmp_path) as both:
        yield both


class TestAnAliasThatFails:
    @pytest.mark.parametrize("flow", ["lean", "legacy"])
    async def test_failure_and_retry_lines_name_the_model_of_their_series(
        self, aliased: tuple[LiveServer, FakeOpenAIServer], lines: JSONLines, flow: str
    ) -> None:
        """Once the endpoint answered ``gpt-test`` as a dated model, a call that fails
        after its retries counts under the dated model, and its ``llm.call.failed`` and
        ``llm.request.retry`` lines name that model, as its series do."""
        live, fake = aliased
        await agree(live.url, lines, {"mission": "hello", "agent_type": flow}, "execute", None)
        fake.fail_next(_MAX_RETRIES + 1, 429)
        body = {"mission": "hello", "agent_type": flow}
        _, mine, grown = await agree(live.url, lines, body, "execute", "rate_limit")
        assert [_SERVED] == _of(mine, "llm.call.failed", "model")
        assert [_SERVED] * _MAX_RETRIES == _of(mine, "llm.request.retry", "model")
        assert Counter({_SERVED: 1}) == grown("taskforce_llm_failures_total", "model")
        assert Counter({_SERVED: _MAX_RETRIES}) == grown("taskforce_llm_retries_total", "model")


# -- taskforce run: an endpoint that is not there, one that does not answer in time --


def _closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (bound, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def _run(root: Path, base_url: str, *args: str) -> tuple[int, list[Any], list[Any]]:
    """``taskforce run --json --stream`` against ``base_url`` (one attempt, a 1 s deadline):
    its exit code, events and JSON log lines."""
    code, out, logged = await run_json(
        root,
        "--stream",
        *args,
        "hello",
        TASKFORCE_LLM__PROVIDER="openai",
        TASKFORCE_LLM__BASE_URL=base_url,
        TASKFORCE_LLM__API_KEY=_KEY,
        TASKFORCE_LLM__MAX_RETRIES="0",
        TASKFORCE_LLM__TIMEOUT_SECONDS="1",
    )
    return code, [json.loads(line) for line in out.splitlines()], logged


class TestTheCommandLine:
    @pytest.mark.parametrize(
        ("case", "flow", "session", "expected"),
        [
            ("refused connection", "legacy", None, "connection"),
            ("no answer in time", "lean", "kept", "timeout"),
        ],
    )
    async def test_run_agrees_with_its_log(
        self, tmp_path: Path, case: str, flow: str, session: str | None, expected: str
    ) -> None:
        """``taskforce run`` fails the mission with the endpoint's error type, in its exit
        code, its last error event, its result and its log lines alike."""
        fake = FakeOpenAIServer()
        fake.delay_seconds = 1.5  # past the 1 s deadline, whatever the machine's load
        with fake.serve() as base_url:
            if case == "refused connection":
                base_url = f"http://127.0.0.1:{_closed_port()}/v1"
            extra = ["--session", session] if session else []
            code, events, logged = await _run(tmp_path, base_url, "--agent", flow, *extra)
        result = events[-1]["result"]
        assert (1, "failed", expected) == (code, result["status"], result["error_type"])
        assert expected == [e for e in events if e["kind"] == "error"][-1]["error_type"]
        if session:
            assert session == result["session_id"]
        mine = [line for line in logged if line.get("mission_id") == result["mission_id"]]
        _check_lines(result, mine, flow)
        assert [expected] == _of(mine, "llm.call.failed")
        assert [expected] == _of(mine, "mission.failed")
        assert _KEY not in json.dumps(events)
