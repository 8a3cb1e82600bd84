"""CONTRACT.md checked from outside: a real server on 127.0.0.1, its scrape, its answers.

The expected names, types, label sets and closed values are written out here from
CONTRACT.md (and the issues' table of names they add), not read from the catalog module,
so that a rename in the code fails here even when the catalog and its own test agree.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from taskforce.api.server import create_app
from taskforce.application.container import build_container
from taskforce.config import Settings
from tests.support.live_server import serve
from tests.support.processes import clean_env, free_ports, started, wait_until_up

pytestmark = pytest.mark.integration

_CLOSED_AGENT = {"lean", "legacy", "none"}
_LLM_ERRORS = {
    *("timeout", "rate_limit", "auth", "bad_request"),
    *("server_error", "connection", "invalid_response", "other"),
}
# name -> (type, {label: closed values, or None for a guarded label}), as CONTRACT.md lists
_CATALOG: dict[str, tuple[str, dict[str, set[str] | None]]] = {
    "taskforce_missions_total": (
        "counter",
        {"agent_type": _CLOSED_AGENT, "status": {"completed", "failed", "cancelled"}},
    ),
    "taskforce_mission_duration_seconds": (
        "histogram",
        {"agent_type": _CLOSED_AGENT, "status": {"completed", "failed", "cancelled"}},
    ),
    "taskforce_missions_in_progress": ("gauge", {"agent_type": _CLOSED_AGENT}),
    "taskforce_mission_steps": ("histogram", {"agent_type": _CLOSED_AGENT}),
    "taskforce_mission_tool_calls": ("histogram", {"agent_type": _CLOSED_AGENT}),
    "taskforce_tool_calls_total": (
        "counter",
        {"tool_name": None, "agent_type": _CLOSED_AGENT, "status": {"success", "error"}},
    ),
    "taskforce_tool_failures_total": (
        "counter",
        {"tool_name": None, "agent_type": _CLOSED_AGENT, "error_type": None},
    ),
    "taskforce_tool_duration_seconds": (
        "histogram",
        {"tool_name": None, "agent_type": _CLOSED_AGENT},
    ),
    "taskforce_llm_requests_total": (
        "counter",
        {
            "model": None,
            "agent_type": _CLOSED_AGENT,
            "operation": {"complete", "generate", "stream"},
            "status": {"success", "error"},
        },
    ),
    "taskforce_llm_request_duration_seconds": (
        "histogram",
        {
            "model": None,
            "agent_type": _CLOSED_AGENT,
            "operation": {"complete", "generate", "stream"},
        },
    ),
    "taskforce_llm_time_to_first_token_seconds": (
        "histogram",
        {"model": None, "agent_type": _CLOSED_AGENT},
    ),
    "taskforce_llm_tokens_total": (
        "counter",
        {"model": None, "agent_type": _CLOSED_AGENT, "token_type": {"input", "output"}},
    ),
    "taskforce_context_pack_messages": ("histogram", {"agent_type": _CLOSED_AGENT}),
    "taskforce_context_pack_tokens": ("histogram", {"agent_type": _CLOSED_AGENT}),
    "taskforce_state_size_bytes": ("histogram", {}),
    "taskforce_http_requests_total": (
        "counter",
        {"method": None, "route": None, "status_code": None},
    ),
    "taskforce_http_request_duration_seconds": ("histogram", {"method": None, "route": None}),
    "taskforce_metrics_label_overflow_total": ("counter", {"metric": None, "label": None}),
    "taskforce_metrics_errors_total": ("counter", {"stage": None}),
    "taskforce_build_info": (
        "gauge",
        {"version": None, "python_version": None, "llm_provider": None},
    ),
    # added by the issues
    "taskforce_llm_retries_total": (
        "counter",
        {"model": None, "agent_type": _CLOSED_AGENT, "error_type": _LLM_ERRORS},
    ),
    "taskforce_llm_failures_total": (
        "counter",
        {"model": None, "agent_type": _CLOSED_AGENT, "error_type": _LLM_ERRORS},
    ),
    "taskforce_llm_cost_usd_total": ("counter", {"model": None, "agent_type": _CLOSED_AGENT}),
}
# The standard families the scale-out issue names; prometheus_client's parser drops the
# counters' ``_total`` from the family name.
_PROCESS_FAMILIES = {
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
    "python_gc_objects_collected": "counter",
    "python_gc_collections": "counter",
    "python_info": "gauge",
}
# One of each outcome, both flows: every family above gets a sample (TTFT from the stream).
_MISSIONS = [
    (
        "lean",
        'tool:calculator {"expression": "6*7"}\ntool:file_write {"path": "a.txt", "content": "42"}',
    ),
    ("legacy", 'tool:calculator {"expression": "2**10"}'),
    ("lean", 'tool:calculator {"expression": "1/0"}'),
    ("legacy", "tool:nosuch {}"),
    ("lean", "llm:error"),
    ("lean", "llm:fail rate_limit\nsay hi"),
]
_PRICES = '{"scripted-1": {"input": 1.0, "output": 2.0}}'


def _ports(count: int) -> int:
    """The first of ``count`` free consecutive ports: from ``TASKFORCE_TEST_PORTS``
    (``LOW-HIGH``, a range the machine sets aside for this run) when given, else any."""
    spec = os.environ.get("TASKFORCE_TEST_PORTS")
    if not spec:
        return free_ports(count)
    low, high = (int(part) for part in spec.split("-"))
    for base in range(low, high - count + 2):
        with contextlib.ExitStack() as held:
            try:
                for port in range(base, base + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
    raise RuntimeError(f"no {count} consecutive free ports in {spec}")


@contextlib.contextmanager
def _service(tmp_path: Path, **env: str) -> Iterator[str]:
    """``python -m taskforce serve`` on 127.0.0.1 with ``env``; yield its base URL."""
    port = _ports(1)
    environment = clean_env(tmp_path, **env)
    args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    with started(args, environment, tmp_path) as child:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(child, [f"{url}/health"])
        yield url


def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


class TestScrapeMatchesTheContract:
    def test_every_metric_with_its_type_labels_and_closed_values(self, tmp_path: Path) -> None:
        """After one of each outcome through the API, the scrape of `taskforce serve` has
        every contract metric with its type, its exact label names and closed values."""
        with _service(tmp_path, TASKFORCE_LLM__PRICES=_PRICES) as url:
            for agent, mission in _MISSIONS:
                body = {"mission": mission, "agent_type": agent}
                answer = httpx.post(f"{url}/api/v1/execute", json=body, timeout=30)
                assert 200 == answer.status_code, answer.text
            streamed = httpx.post(
                f"{url}/api/v1/execute/stream", json={"mission": "say hello"}, timeout=30
            )
            assert "event: token" in streamed.text
            scrape = httpx.get(f"{url}/metrics", timeout=30)
        assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = _families(scrape.text)
        for name, (kind, labels) in _CATALOG.items():
            family = families[name.removesuffix("_total")]
            assert kind == family.type, name
            assert family.samples, name
            for sample in family.samples:
                names = set(sample.labels) - {"le"}
                assert set(labels) == names, (name, sample.labels)
                for label, closed in labels.items():
                    if closed is not None:
                        assert sample.labels[label] in closed, (name, sample.labels)
        for name, kind in _PROCESS_FAMILIES.items():
            assert kind == families[name].type, name
        (info,) = families["taskforce_build_info"].samples
        assert (1.0, "scripted") == (info.value, info.labels["llm_provider"])

    def test_metrics_path_is_no_api_route(self, tmp_path: Path) -> None:
        """`GET {metrics.path}` is not in the OpenAPI schema, also at a path of one's own,
        and the default path then answers 404."""
        with _service(tmp_path, TASKFORCE_METRICS__PATH="/scrape") as url:
            paths = httpx.get(f"{url}/openapi.json", timeout=10).json()["paths"]
            own = httpx.get(f"{url}/scrape", timeout=10)
            default = httpx.get(f"{url}/metrics", timeout=10)
        assert not {"/scrape", "/metrics"} & set(paths)
        assert (200, 404) == (own.status_code, default.status_code)
        assert "taskforce_build_info" in own.text


class TestMalformedBodies:
    @pytest.mark.parametrize("route", ["/api/v1/execute", "/api/v1/execute/stream"])
    @pytest.mark.parametrize(
        ("content", "headers"),
        [
            (b"{not json", {"content-type": "application/json"}),
            (b'{"agent_type": "lean"}', {"content-type": "application/json"}),
            (b'{"mission": "hi", "agent_type": "neither"}', {"content-type": "application/json"}),
            (b"{not json", {}),  # a raw body as httpx and requests send it: no content type
            (b"", {}),
        ],
    )
    def test_a_malformed_body_is_422(
        self, tmp_path: Path, route: str, content: bytes, headers: dict[str, str]
    ) -> None:
        """CONTRACT.md: "a malformed body is 422", on both mission routes."""
        settings = Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "ws")
        with serve(create_app(settings), port=_ports(1)) as live:
            answer = httpx.post(live.url + route, content=content, headers=headers, timeout=30)
        assert 422 == answer.status_code, answer.text


class TestTheRegistryIsServed:
    def test_a_collector_registered_by_the_embedder_is_scraped(self, tmp_path: Path) -> None:
        """CONTRACT.md: `container.metrics.registry` is the aioprometheus `Registry`
        served at `/metrics`: a collector an embedder registers on it is in the scrape,
        next to the catalog's families, which are unchanged."""
        from aioprometheus.collectors import Counter

        settings = Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "ws")
        container = build_container(settings)
        assert container.metrics is not None
        registry = container.metrics.registry
        jobs = Counter("embedder_jobs_total", "Jobs the embedding app ran.", registry=registry)
        jobs.inc({"queue": "default"})
        with serve(create_app(container=container), port=_ports(1)) as live:
            scrape = httpx.get(f"{live.url}/metrics", timeout=30).text
        families = _families(scrape)
        (sample,) = families["embedder_jobs"].samples
        assert ("counter", {"queue": "default"}, 1.0) == (
            families["embedder_jobs"].type,
            sample.labels,
            sample.value,
        )
        assert "taskforce_missions" in families


class _ReturnsNone:
    """A tool registered after the build that breaks ToolProtocol: it returns None."""

    name = "returns_none"
    description = "returns None instead of a result"
    parameters_schema: dict[str, Any] = {"type": "object", "properties": {}}

    async def execute(self, **params: Any) -> Any:
        return None


class TestIssue8ToolReturningNone:
    @pytest.mark.parametrize("agent", ["lean", "legacy"])
    def test_invalid_result_in_result_log_and_metrics(self, tmp_path: Path, agent: str) -> None:
        """Issue 8, "Done when": `error`/`invalid_result` in the result, in
        `tool.call.failed` and in `taskforce_tool_failures_total`, and no instrumentation
        fault, seen through a real server and its scrape."""
        settings = Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "ws")
        container = build_container(settings)
        container.tool_registry.register(_ReturnsNone())
        body = {"mission": "tool:returns_none {}", "agent_type": agent}
        with capture_logs() as logs, serve(create_app(container=container), port=_ports(1)) as live:
            result = httpx.post(f"{live.url}/api/v1/execute", json=body, timeout=30).json()
            scrape = httpx.get(f"{live.url}/metrics", timeout=30).text
        assert ("failed", "invalid_result") == (result["status"], result["error_type"])
        failed = [log for log in logs if log["event"] == "tool.call.failed"]
        assert [("returns_none", "invalid_result")] == [
            (log["tool"], log["error_type"]) for log in failed
        ]
        families = _families(scrape)
        calls = {
            (s.labels["tool_name"], s.labels["status"]): s.value
            for s in families["taskforce_tool_calls"].samples
            if s.labels["agent_type"] == agent
        }
        assert 1.0 == calls[("returns_none", "error")]
        # the series exists at 0 from the first scrape (a registered tool), never above
        assert 0.0 == calls.get(("returns_none", "success"), 0.0)
        failures = [
            (s.labels["tool_name"], s.labels["error_type"], s.value)
            for s in families["taskforce_tool_failures"].samples
        ]
        assert [("returns_none", "invalid_result", 1.0)] == failures
        faults = {s.labels["stage"]: s.value for s in families["taskforce_metrics_errors"].samples}
        assert {0.0} == set(faults.values()), faults


class TestSetUpLines:
    def test_the_service_line_serves_the_readme_example(self, tmp_path: Path) -> None:
        """The README's 'Try it' mission through `taskforce serve`: both tools run, and
        the scrape counts it under `taskforce_missions_total`."""
        readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
        body = json.loads(readme.split("-d '", 1)[1].split("'", 1)[0])
        with _service(tmp_path) as url:
            result = httpx.post(f"{url}/api/v1/execute", json=body, timeout=30).json()
            scrape = httpx.get(f"{url}/metrics", timeout=30).text
        assert "completed" == result["status"], result
        assert 2 == result["tool_calls"]
        counted = {
            (s.labels["agent_type"], s.labels["status"]): s.value
            for s in _families(scrape)["taskforce_missions"].samples
        }
        assert 1.0 == counted[("lean", "completed")]
