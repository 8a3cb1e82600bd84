"""Issue 4's acceptance: missions of both flows through the HTTP API; the scrape tells the truth."""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
import wrapt
from prometheus_client.parser import text_string_to_metric_families

from taskforce.api.server import create_app
from taskforce.application.container import build_container
from taskforce.config import Settings
from taskforce.core.interfaces import ToolResult
from taskforce.observability.metrics._catalog import TOOL_CALLS
from tests.api.conftest import CALC_WRITE_MISSION, parse_sse
from tests.observability.metric_samples import break_family
from tests.support.binaries import require_binary
from tests.support.live_server import serve

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

FAILING_TOOL_MISSION = 'tool:calculator {"expression": "1/0"}'
# (mission, expected status, LLM calls {(operation, status): n}, tool calls {(tool, status): n})
WORKLOAD: dict[str, list[tuple[str, str, dict[tuple[str, str], int], dict[tuple[str, str], int]]]]
WORKLOAD = {
    "lean": [
        (
            CALC_WRITE_MISSION,
            "completed",
            {("complete", "success"): 3},
            {("calculator", "success"): 1, ("file_write", "success"): 1},
        ),
        (
            FAILING_TOOL_MISSION,
            "failed",
            {("complete", "success"): 1},
            {("calculator", "error"): 1},
        ),
        ("llm:error", "failed", {("complete", "error"): 1}, {}),
    ],
    "legacy": [
        (
            CALC_WRITE_MISSION,
            "completed",
            {("generate", "success"): 1, ("complete", "success"): 5},
            {("calculator", "success"): 1, ("file_write", "success"): 1},
        ),
        (
            FAILING_TOOL_MISSION,
            "failed",
            {("generate", "success"): 1, ("complete", "success"): 1},
            {("calculator", "error"): 1},
        ),
        ("llm:error", "failed", {("generate", "error"): 1}, {}),
    ],
}
REPEAT = 3  # each mission of the workload runs this many times per flow


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (sample name, label set)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def scrape(client: httpx.AsyncClient, **headers: str) -> Samples:
    response = await client.get("/metrics", headers=headers)
    assert 200 == response.status_code
    return parse(response.text)


class TestMissionWorkload:
    async def test_counts_match_the_workload(self, settings: Settings) -> None:
        """N missions per flow: missions, LLM and tool counts, tokens, context, gauge all exact."""
        with serve(create_app(settings)) as live:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
                jobs = [
                    client.post("/api/v1/execute", json={"mission": m, "agent_type": flow})
                    for flow, missions in WORKLOAD.items()
                    for m, *_ in missions
                    for _ in range(REPEAT)
                ]
                results = [r.json() for r in await asyncio.gather(*jobs)]
                samples = await scrape(client)
                text = (await client.get("/metrics")).text

        statuses = Counter((r["agent_type"], r["status"]) for r in results)
        for flow, missions in WORKLOAD.items():
            expected_status: Counter[str] = Counter()
            llm: Counter[tuple[str, str]] = Counter()
            tools: Counter[tuple[str, str]] = Counter()
            for _, status, llm_calls, tool_calls in missions:
                expected_status[status] += REPEAT
                llm.update({k: v * REPEAT for k, v in llm_calls.items()})
                tools.update({k: v * REPEAT for k, v in tool_calls.items()})
            for status in ("completed", "failed", "cancelled"):
                assert expected_status[status] == statuses[(flow, status)]
                assert expected_status[status] == total(
                    samples, "taskforce_missions_total", agent_type=flow, status=status
                )
                assert expected_status[status] == total(
                    samples,
                    "taskforce_mission_duration_seconds_count",
                    agent_type=flow,
                    status=status,
                )
            for (operation, status), n in llm.items():
                assert n == total(
                    samples,
                    "taskforce_llm_requests_total",
                    agent_type=flow,
                    operation=operation,
                    status=status,
                    model="scripted-1",
                ), (flow, operation, status)
            assert sum(llm.values()) == total(
                samples, "taskforce_llm_requests_total", agent_type=flow
            )
            for (tool, status), n in tools.items():
                assert n == total(
                    samples,
                    "taskforce_tool_calls_total",
                    agent_type=flow,
                    tool_name=tool,
                    status=status,
                ), (flow, tool, status)
            assert sum(tools.values()) == total(
                samples, "taskforce_tool_calls_total", agent_type=flow
            )
            assert REPEAT == total(
                samples,
                "taskforce_tool_failures_total",
                agent_type=flow,
                tool_name="calculator",
                error_type="DivisionByZero",  # the calculator's own, as logged
            )
            assert 0 == total(samples, "taskforce_missions_in_progress", agent_type=flow)
            assert 0 < total(
                samples, "taskforce_llm_tokens_total", agent_type=flow, token_type="input"
            )
            assert 0 < total(
                samples, "taskforce_llm_tokens_total", agent_type=flow, token_type="output"
            )
            assert 0 < total(samples, "taskforce_context_pack_messages_sum", agent_type=flow)
            assert 0 < total(samples, "taskforce_context_pack_tokens_sum", agent_type=flow)
            assert 3 * REPEAT == total(samples, "taskforce_mission_steps_count", agent_type=flow)
            assert 3 * REPEAT == total(
                samples, "taskforce_mission_tool_calls_count", agent_type=flow
            )
        # every mission saves its session once
        assert len(results) == total(samples, "taskforce_state_size_bytes_count")
        assert 0 == total(samples, "taskforce_metrics_errors_total")
        assert len(results) == total(
            samples, "taskforce_http_requests_total", route="/api/v1/execute", status_code="200"
        )
        promtool = require_binary("promtool")
        lint = await asyncio.to_thread(
            subprocess.run,
            [promtool, "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert (0, "") == (lint.returncode, lint.stdout + lint.stderr)

    async def test_streaming_disconnect_counts_cancelled(self, settings: Settings) -> None:
        """A streaming client that disconnects half-way leaves a `cancelled` mission, gauge at 0."""
        mission = 'tool:calculator {"expression": "1+1"}\ntool:sleep {"seconds": 30}\nbye'
        with serve(create_app(settings)) as live:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
                for flow in ("lean", "legacy"):
                    body = {"mission": mission, "agent_type": flow}
                    async with client.stream("POST", "/api/v1/execute/stream", json=body) as r:
                        async for line in r.aiter_lines():
                            if line.startswith("event: tool_call") and "sleep" in line:
                                break
                            if "sleep" in line and line.startswith("data:"):
                                break
                    # the connection is closed here, half-way through the sleep
                deadline = asyncio.get_running_loop().time() + 10
                while True:
                    samples = await scrape(client)
                    done = total(samples, "taskforce_missions_total", status="cancelled")
                    if done == 2 or asyncio.get_running_loop().time() > deadline:
                        break
                    await asyncio.sleep(0.05)
                ok = await client.post("/api/v1/execute", json={"mission": "still there?"})
                assert "completed" == ok.json()["status"]
                samples = await scrape(client)
        for flow in ("lean", "legacy"):
            assert 1 == total(
                samples, "taskforce_missions_total", agent_type=flow, status="cancelled"
            )
            assert 0 == total(samples, "taskforce_missions_in_progress", agent_type=flow)
            # the sleep call was interrupted, not completed
            assert 0 == total(
                samples, "taskforce_tool_calls_total", tool_name="sleep", status="success"
            )


class EchoTool:
    """A user's tool: no instrumentation code of its own."""

    name = "echo"
    description = "Echo the text."
    parameters_schema: dict[str, Any] = {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    }

    async def execute(self, **params: Any) -> ToolResult:
        return {"success": True, "output": params.get("text")}


class ExplodingTool(EchoTool):
    """A tool that raises instead of returning an error result."""

    name = "explode"

    async def execute(self, **params: Any) -> ToolResult:
        raise RuntimeError("kaboom")


class RaisingProvider:
    """A user's LLM provider that raises on every call."""

    model = "broken-1"

    async def complete(
        self,
        messages: Iterable[Any],
        model: str | None = None,
        tools: Any = None,
        tool_choice: Any = None,
        **kw: Any,
    ) -> Any:
        raise ConnectionError("provider down")

    async def generate(
        self, prompt: str, context: Any = None, model: str | None = None, **kw: Any
    ) -> Any:
        raise ConnectionError("provider down")


class RaisingTool(EchoTool):
    """A tool that raises what ``raised`` holds: a BaseException that is not an Exception."""

    name = "raising"

    def __init__(self) -> None:
        self.raised: BaseException = SystemExit(2)

    async def execute(self, **params: Any) -> ToolResult:
        raise self.raised


class BaseRaisingProvider(RaisingProvider):
    """A provider that raises a SystemExit of its own on every call."""

    async def complete(self, messages: Iterable[Any], *args: Any, **kw: Any) -> Any:
        raise SystemExit(3)

    async def generate(self, prompt: str, *args: Any, **kw: Any) -> Any:
        raise SystemExit(3)


class TestRobustness:
    async def test_late_tool_and_raising_tool(self, settings: Settings) -> None:
        """A tool registered after the build is measured; a raising tool fails only its mission."""
        container = build_container(settings)
        container.tool_registry.register(EchoTool())
        container.tool_registry.register(ExplodingTool())
        with serve(create_app(container=container)) as live:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
                for flow in ("lean", "legacy"):
                    ok = await client.post(
                        "/api/v1/execute",
                        json={"mission": 'tool:echo {"text": "hi"}', "agent_type": flow},
                    )
                    assert "completed" == ok.json()["status"]
                    bad = await client.post(
                        "/api/v1/execute", json={"mission": "tool:explode", "agent_type": flow}
                    )
                    assert "failed" == bad.json()["status"]
                    assert "kaboom" in bad.json()["error"]
                samples = await scrape(client)
        assert 2 == total(samples, "taskforce_tool_calls_total", tool_name="echo", status="success")
        assert 2 == total(
            samples,
            "taskforce_tool_failures_total",
            tool_name="explode",
            error_type="RuntimeError",
        )
        assert 0 == total(samples, "taskforce_missions_in_progress")

    @pytest.mark.parametrize("route", ["/api/v1/execute", "/api/v1/execute/stream"])
    async def test_a_tool_raising_a_base_exception_fails_its_call(
        self, settings: Settings, route: str
    ) -> None:
        """A tool's own CancelledError, SystemExit or GeneratorExit fails its call and its
        mission (a 200 with the same error_type as the metrics), never the process, and
        is no 500 or cut stream."""
        container = build_container(settings)
        tool = RaisingTool()
        container.tool_registry.register(tool)
        raised = [asyncio.CancelledError("inner"), SystemExit(2), GeneratorExit()]
        with serve(create_app(container=container)) as live:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
                for exc in raised:
                    tool.raised = exc
                    r = await client.post(route, json={"mission": "tool:raising"})
                    assert 200 == r.status_code
                    streamed = route.endswith("/stream")
                    result = parse_sse(r.text)[-1][1]["result"] if streamed else r.json()
                    assert ("failed", type(exc).__name__) == (
                        result["status"],
                        result["error_type"],
                    )
                assert 200 == (await client.get("/health")).status_code
                samples = await scrape(client)
        for exc in raised:
            assert 1 == total(
                samples,
                "taskforce_tool_failures_total",
                tool_name="raising",
                error_type=type(exc).__name__,
            )
        assert 3 == total(samples, "taskforce_missions_total", status="failed")
        assert 0 == total(samples, "taskforce_missions_total", status="cancelled")

    async def test_an_argument_named_self_is_an_argument_like_any_other(
        self, settings: Settings
    ) -> None:
        """The model names the arguments: ``self`` is refused by the tool's schema like any
        unknown one, the same in the result and the metrics, metrics on or off."""
        mission = 'tool:calculator {"expression": "1+1", "self": 1}'
        outcomes = []
        for enabled in (True, False):
            metrics = settings.metrics.model_copy(update={"enabled": enabled})
            container = build_container(settings.model_copy(update={"metrics": metrics}))
            with serve(create_app(container=container)) as live:
                async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
                    r = await client.post("/api/v1/execute", json={"mission": mission})
                    outcomes.append((r.json()["status"], r.json()["error_type"], r.json()["error"]))
                    if enabled:
                        samples = await scrape(client)
        assert outcomes[0] == outcomes[1]
        assert ("failed", "InvalidArguments") == outcomes[0][:2]
        assert "self" in outcomes[0][2]
        assert 1 == total(
            samples,
            "taskforce_tool_failures_total",
            tool_name="calculator",
            error_type="InvalidArguments",
        )

    @pytest.mark.parametrize(
        ("provider", "said", "error_type"),
        [
            (RaisingProvider(), "provider down", "other"),
            (BaseRaisingProvider(), "SystemExit: 3", "other"),
        ],
        ids=["ConnectionError", "SystemExit"],
    )
    async def test_raising_provider(
        self, settings: Settings, provider: Any, said: str, error_type: str
    ) -> None:
        """A provider that raises (an Exception, or a SystemExit of its own) fails the
        mission, counts an LLM error of the same error_type as the result, and the app
        serves on."""
        container = build_container(settings, llm_provider=provider)
        with serve(create_app(container=container)) as live:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
                for flow in ("lean", "legacy"):
                    r = await client.post(
                        "/api/v1/execute", json={"mission": "hi", "agent_type": flow}
                    )
                    assert ("failed", error_type) == (r.json()["status"], r.json()["error_type"])
                    assert said in r.json()["error"]
                assert 200 == (await client.get("/health")).status_code
                samples = await scrape(client)
        assert 2 == total(samples, "taskforce_llm_requests_total", status="error", model="broken-1")
        assert 2 == total(samples, "taskforce_llm_failures_total", error_type=error_type)
        assert 2 == total(samples, "taskforce_missions_total", status="failed")

    async def test_metric_update_fault_is_swallowed(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A metric update that raises: the mission result is unchanged, the fault counted."""
        container = build_container(settings)
        assert container.metrics is not None

        break_family(monkeypatch, TOOL_CALLS)
        with serve(create_app(container=container)) as live:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
                r = await client.post("/api/v1/execute", json={"mission": CALC_WRITE_MISSION})
                assert "completed" == r.json()["status"]
                assert 2 == r.json()["tool_calls"]
                samples = await scrape(client)
        assert 2 == total(samples, "taskforce_metrics_errors_total", stage="tool")
        assert 1 == total(samples, "taskforce_missions_total", status="completed")


class TestDisabled:
    async def test_no_proxies_and_404(self, tmp_path: Path) -> None:
        """metrics.enabled=false: /metrics is 404 and nothing in the container is a proxy."""
        settings = Settings(
            state_dir=tmp_path / "s", workspace_dir=tmp_path / "w", metrics={"enabled": False}
        )
        container = build_container(settings)
        assert container.metrics is None
        parts = [
            container.llm_provider,
            container.tool_registry,
            container.state_store,
            container.executor,
            *container.tool_registry.list_tools(),
        ]
        assert [] == [p for p in parts if isinstance(p, wrapt.BaseObjectProxy)]
        with serve(create_app(container=container)) as live:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
                assert 404 == (await client.get("/metrics")).status_code
                r = await client.post("/api/v1/execute", json={"mission": CALC_WRITE_MISSION})
                assert "completed" == r.json()["status"]

    async def test_enabled_container_is_woven(self, settings: Settings) -> None:
        """metrics.enabled (default): the four dependencies and handed-out tools are proxies."""
        container = build_container(settings)
        parts = [
            container.llm_provider,
            container.tool_registry,
            container.state_store,
            container.executor,
            *container.tool_registry.list_tools(),
        ]
        assert all(isinstance(p, wrapt.BaseObjectProxy) for p in parts)


class TestAuth:
    async def test_bearer_token(self, tmp_path: Path) -> None:
        """With metrics.auth_token, /metrics is 401 without the right bearer token."""
        settings = Settings(
            state_dir=tmp_path / "s", workspace_dir=tmp_path / "w", metrics={"auth_token": "s3cret"}
        )
        with serve(create_app(settings)) as live:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
                assert 401 == (await client.get("/metrics")).status_code
                wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
                assert 401 == wrong.status_code
                samples = await scrape(client, Authorization="Bearer s3cret")
                assert 1 == total(samples, "taskforce_build_info")
                two = [("authorization", "Bearer s3cret"), ("authorization", "Bearer nope")]
                assert 401 == (await client.get("/metrics", headers=two)).status_code
                schema = (await client.get("/openapi.json")).json()
                assert "/metrics" not in schema["paths"]
