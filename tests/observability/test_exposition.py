"""The scrape is valid Prometheus text: promtool accepts it, parsers round-trip hostile values,
and no workload can push it past the catalog's series budget."""

from __future__ import annotations

import itertools
import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskforce.observability.metrics import CounterChild, GaugeChild, HistogramChild, MetricSet
from taskforce.observability.metrics._catalog import (
    BUILD_INFO,
    CATALOG,
    HTTP_REQUESTS,
    LABEL_OVERFLOW,
    LLM_TOKENS,
    METRICS_ERRORS,
    TOOL_CALLS,
    TOOL_DURATION,
    TOOL_FAILURES,
)
from taskforce.observability.metrics._guard import MAX_VALUE_LENGTH
from taskforce.observability.web._app import make_metrics_app
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
    """Write every series of every family: each closed value times the given free-form values."""
    for spec in CATALOG:
        if spec in (LABEL_OVERFLOW, METRICS_ERRORS, BUILD_INFO):
            continue
        choices = [label.values if label.kind == "closed" else values for label in spec.labels]
        family = metrics.family(spec)
        for combo in itertools.product(*choices):
            child = family.labels(*combo)
            _write(child)
    metrics.record_fault("render")


def _write(child: CounterChild | GaugeChild | HistogramChild) -> None:
    if isinstance(child, HistogramChild):
        child.observe(0.5)
    else:
        child.inc()


@pytest.mark.integration
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
            metrics.counter(TOOL_CALLS).labels(name, "lean", "error").inc()
            metrics.counter(TOOL_FAILURES).labels(name, "lean", name).inc()
            metrics.histogram(TOOL_DURATION).labels(name, "lean").observe(0.1)
            metrics.counter(LLM_TOKENS).labels(name, "lean", "input").inc()
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
        requests = metrics.counter(HTTP_REQUESTS)
        requests.labels("GET", "/x", 200).inc()
        requests.labels("GET", "/x", "200").inc()
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
                for spec in CATALOG:
                    if spec.kind == "gauge" or spec in (LABEL_OVERFLOW, METRICS_ERRORS):
                        continue
                    labels = [
                        label.values[i % len(label.values)] if label.kind == "closed" else value
                        for label in spec.labels
                    ]
                    _write(metrics.family(spec).labels(*labels))
            assert len(_series_lines(metrics.render().decode())) <= metrics.series_budget
        _drive_everything(metrics, [_hostile(i) for i in range(5)])
        assert len(_series_lines(metrics.render().decode())) <= metrics.series_budget

    @pytest.mark.parametrize("cap", [1, 2])
    def test_budget_is_tight_for_small_caps(self, cap: int) -> None:
        """With every combination driven, the scrape has exactly series_budget series."""
        metrics = MetricSet(max_label_values=cap)
        _drive_everything(metrics, [_hostile(i) for i in range(cap + 2)])
        assert metrics.series_budget == len(_series_lines(metrics.render().decode()))
