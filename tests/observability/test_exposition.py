"""The scrape is valid Prometheus text: promtool accepts it, parsers round-trip hostile values,
and no workload can push it past the catalog's series budget."""

from __future__ import annotations

import itertools
import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskforce.observability._asgi import make_metrics_app
from taskforce.observability._catalog import (
    AGENT_TYPES,
    CALL_STATUSES,
    HTTP_METHODS,
    LLM_OPERATIONS,
    MISSION_STATUSES,
)
from taskforce.observability._guard import MAX_VALUE_LENGTH
from taskforce.observability._metricset import MetricSet
from tests.support.binaries import require_binary
from tests.support.live_server import serve

HOSTILE = [
    'quo"te',
    "back\\slash",
    "new\nline",
    'mix \\" \n \\n end',
    "ünïcødé €😀 中文",
    "tab\tcr\rnul\x00",
    "{braces}=,",
    "",
    "x" * 10_000,
]


def _hostile(i: int) -> str:
    return f"{HOSTILE[i % len(HOSTILE)]}#{i}"


def _series_lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line and not line.startswith("#")]


def _drive_everything(metrics: MetricSet, values: list[str]) -> None:
    """Record through every method with every closed value and the given free-form values."""
    for agent_type in AGENT_TYPES:
        metrics.record_mission_started(agent_type)
        for status in MISSION_STATUSES:
            metrics.record_mission_finished(agent_type, status, 1.0, 2, 1)
        metrics.record_context_pack(agent_type, 3, 300)
        for tool, error in itertools.product(values, values):
            for status in CALL_STATUSES:
                metrics.record_tool_call(tool, agent_type, status, 0.01, error)
        for model in values:
            for operation, status in itertools.product(LLM_OPERATIONS, CALL_STATUSES):
                metrics.record_llm_request(model, agent_type, operation, status, 0.5)
            metrics.record_llm_tokens(model, agent_type, 10, 5)
            metrics.record_time_to_first_token(model, agent_type, 0.1)
    metrics.record_state_size(1000)
    for method in (*HTTP_METHODS, "BREW"):
        for route, code in itertools.product(values, range(200, 200 + len(values))):
            metrics.record_http_request(method, route, code, 0.01)
    metrics.record_fault("render")


class TestPromtool:
    def test_scrape_with_hostile_values_passes_promtool(self) -> None:
        """promtool check metrics reports nothing on a scrape full of hostile label values."""
        promtool = require_binary("promtool")
        metrics = MetricSet(max_label_values=20)
        _drive_everything(metrics, [_hostile(i) for i in range(12)])
        with serve(make_metrics_app(metrics, auth_token=None)) as server:
            scrape = httpx.get(server.url + "/", timeout=10).content
        result = subprocess.run(
            [promtool, "check", "metrics"],
            input=scrape,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert (0, b"", b"") == (result.returncode, result.stdout, result.stderr)


class TestParsers:
    def test_hostile_values_round_trip(self) -> None:
        """prometheus_client's parser reads back each value as given (cut to 128 chars)."""
        metrics = MetricSet(max_label_values=len(HOSTILE) * 2)
        names = [_hostile(i) for i in range(len(HOSTILE))]
        for name in names:
            metrics.record_tool_call(name, "lean", "error", 0.1, name)
            metrics.record_llm_tokens(name, "lean", 1, 1)
        families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
        expected = {name[:MAX_VALUE_LENGTH] for name in names}
        calls = families["taskforce_tool_calls"].samples
        assert expected == {s.labels["tool_name"] for s in calls}
        failures = families["taskforce_tool_failures"].samples
        assert expected == {s.labels["error_type"] for s in failures}
        tokens = families["taskforce_llm_tokens"].samples
        assert expected == {s.labels["model"] for s in tokens}
        durations = families["taskforce_tool_duration_seconds"].samples
        assert {"+Inf"} <= {s.labels.get("le") for s in durations}

    def test_int_and_str_codes_are_one_series_in_the_scrape(self) -> None:
        """status_code 200 and "200" never render as two identical-looking series."""
        metrics = MetricSet()
        metrics.record_http_request("GET", "/x", 200, 0.1)
        metrics.record_http_request("GET", "/x", "200", 0.1)  # type: ignore[arg-type]
        lines = [
            line
            for line in _series_lines(metrics.render().decode())
            if line.startswith("taskforce_http_requests_total{")
        ]
        assert [
            'taskforce_http_requests_total{method="GET",route="/x",status_code="200"} 2'
        ] == lines


class TestCardinalityBudget:
    def test_scrape_never_exceeds_budget(self) -> None:
        """Thousands of distinct hostile values keep the scrape within series_budget."""
        metrics = MetricSet(max_label_values=3)
        for start in range(0, 3000, 500):
            values = [_hostile(i) for i in range(start, start + 500)]
            for i, value in enumerate(values):
                agent_type = AGENT_TYPES[i % 3]
                metrics.record_tool_call(value, agent_type, "error", 0.01, value)
                metrics.record_llm_request(value, agent_type, "stream", "error", 1.0)
                metrics.record_llm_tokens(value, agent_type, 1, 1)
                metrics.record_time_to_first_token(value, agent_type, 0.1)
                metrics.record_http_request("GET", value, 100 + i, 0.01)
            assert len(_series_lines(metrics.render().decode())) <= metrics.series_budget
        _drive_everything(metrics, [_hostile(i) for i in range(5)])
        assert len(_series_lines(metrics.render().decode())) <= metrics.series_budget

    @pytest.mark.parametrize("cap", [1, 2])
    def test_budget_is_tight_for_small_caps(self, cap: int) -> None:
        """With every combination driven, the scrape has exactly series_budget series."""
        metrics = MetricSet(max_label_values=cap)
        _drive_everything(metrics, [_hostile(i) for i in range(cap + 2)])
        assert metrics.series_budget == len(_series_lines(metrics.render().decode()))
