"""MetricSet records every catalog metric through cached series, read back as samples."""

from __future__ import annotations

import math
import platform

import pytest
from aioprometheus.collectors import REGISTRY

from taskforce.observability._catalog import CATALOG, FAULT_STAGES, MISSION_STATUSES, series_budget
from taskforce.observability._metricset import MetricSet
from tests.observability.metric_samples import histogram, series, value


@pytest.fixture(name="metrics")
def fixture_metrics() -> MetricSet:
    """A fresh MetricSet (its own registry) for every test."""
    return MetricSet()


class TestConstruction:
    def test_registers_every_catalog_metric(self, metrics: MetricSet) -> None:
        """The registry holds exactly the catalog's metrics."""
        assert {spec.name for spec in CATALOG} == set(metrics.registry.collectors)

    def test_closed_mission_series_exist_at_zero(self, metrics: MetricSet) -> None:
        """Every agent_type x status of both flows, and the gauges, exist before any mission."""
        for agent_type in ("lean", "legacy"):
            assert 0 == value(metrics, "taskforce_missions_in_progress", agent_type=agent_type)
            for status in MISSION_STATUSES:
                labels = {"agent_type": agent_type, "status": status}
                assert 0 == value(metrics, "taskforce_missions_total", **labels)
                assert (
                    0 == histogram(metrics, "taskforce_mission_duration_seconds", **labels)["count"]
                )
        assert 6 == len(series(metrics, "taskforce_missions_total"))

    def test_fault_and_overflow_series_exist_at_zero(self, metrics: MetricSet) -> None:
        """Every fault stage and every guarded (metric, label) pair starts at 0."""
        for stage in FAULT_STAGES:
            assert 0 == value(metrics, "taskforce_metrics_errors_total", stage=stage)
        assert 0 == value(
            metrics,
            "taskforce_metrics_label_overflow_total",
            metric="taskforce_tool_calls_total",
            label="tool_name",
        )

    def test_build_info(self, metrics: MetricSet) -> None:
        """build_info is 1 with the installed version and the Python version."""
        [(labels, info)] = metrics.registry.get("taskforce_build_info").get_all()
        assert 1 == info
        assert platform.python_version() == labels["python_version"]
        assert labels["version"]

    def test_budget_and_guard_attributes(self) -> None:
        """series_budget follows the cap; the guard has the same cap."""
        metrics = MetricSet(max_label_values=7)
        assert series_budget(7) == metrics.series_budget
        assert 7 == metrics.guard.max_label_values

    def test_rejects_cap_below_one(self) -> None:
        """max_label_values=0 is refused."""
        with pytest.raises(ValueError, match="max_label_values"):
            MetricSet(max_label_values=0)

    def test_two_sets_share_nothing(self) -> None:
        """Recording on one MetricSet leaves another (and aioprometheus' global REGISTRY) alone."""
        first, second = MetricSet(), MetricSet()
        first.record_tool_call("calc", "lean", "success", 0.1, None)
        assert first.registry is not second.registry
        assert 1 == value(
            first,
            "taskforce_tool_calls_total",
            tool_name="calc",
            agent_type="lean",
            status="success",
        )
        assert [] == series(second, "taskforce_tool_calls_total")
        assert [] == [name for name in REGISTRY.collectors if name.startswith("taskforce_")]


class TestMissions:
    def test_started_and_finished(self, metrics: MetricSet) -> None:
        """A mission raises the gauge; finishing counts it, observes it and lowers the gauge."""
        metrics.record_mission_started("legacy")
        assert 1 == value(metrics, "taskforce_missions_in_progress", agent_type="legacy")
        metrics.record_mission_finished("legacy", "failed", 2.0, 4, 3)
        assert 0 == value(metrics, "taskforce_missions_in_progress", agent_type="legacy")
        assert 1 == value(metrics, "taskforce_missions_total", agent_type="legacy", status="failed")
        duration = histogram(
            metrics, "taskforce_mission_duration_seconds", agent_type="legacy", status="failed"
        )
        assert (1, 2.0, 0, 1) == (duration["count"], duration["sum"], duration[1.0], duration[2.5])
        assert 4.0 == histogram(metrics, "taskforce_mission_steps", agent_type="legacy")["sum"]
        assert 3.0 == histogram(metrics, "taskforce_mission_tool_calls", agent_type="legacy")["sum"]

    def test_unknown_steps_are_not_observed(self, metrics: MetricSet) -> None:
        """steps/tool_calls None leave those histograms alone."""
        metrics.record_mission_started("lean")
        metrics.record_mission_finished("lean", "cancelled", 0.5, None, None)
        assert 1 == value(
            metrics, "taskforce_missions_total", agent_type="lean", status="cancelled"
        )
        assert 0 == histogram(metrics, "taskforce_mission_steps", agent_type="lean")["count"]

    def test_negative_and_nan_durations_are_zero(self, metrics: MetricSet) -> None:
        """A clock going backwards or NaN records 0 seconds."""
        metrics.record_mission_finished("lean", "completed", -1.0, None, None)
        metrics.record_mission_finished("lean", "completed", math.nan, None, None)
        duration = histogram(
            metrics, "taskforce_mission_duration_seconds", agent_type="lean", status="completed"
        )
        assert (2, 0.0, 2) == (duration["count"], duration["sum"], duration[0.005])

    @pytest.mark.parametrize(
        ("agent_type", "status"), [("robot", "completed"), ("lean", "done"), ("lean", None)]
    )
    def test_closed_sets_are_enforced(
        self, metrics: MetricSet, agent_type: str, status: str
    ) -> None:
        """A value outside a closed set raises ValueError and records nothing."""
        with pytest.raises(ValueError, match="not one of"):
            metrics.record_mission_finished(agent_type, status, 1.0, 1, 1)
        assert 6 == len(series(metrics, "taskforce_missions_total"))


class TestTools:
    def test_success(self, metrics: MetricSet) -> None:
        """A successful call counts and is timed; no failure series appears."""
        for _ in range(3):
            metrics.record_tool_call("calculator", "lean", "success", 0.002, None)
        labels = {"tool_name": "calculator", "agent_type": "lean"}
        assert 3 == value(metrics, "taskforce_tool_calls_total", status="success", **labels)
        duration = histogram(metrics, "taskforce_tool_duration_seconds", **labels)
        assert (3, 0, 3) == (duration["count"], duration[0.001], duration[0.0025])
        assert [] == series(metrics, "taskforce_tool_failures_total")

    def test_failure_by_error_type(self, metrics: MetricSet) -> None:
        """An error counts under status=error and in failures by error_type (unknown if None)."""
        metrics.record_tool_call("file_read", "legacy", "error", 0.1, "FileNotFoundError")
        metrics.record_tool_call("file_read", "legacy", "error", 0.1, None)
        labels = {"tool_name": "file_read", "agent_type": "legacy"}
        assert 2 == value(metrics, "taskforce_tool_calls_total", status="error", **labels)
        assert 1 == value(
            metrics, "taskforce_tool_failures_total", error_type="FileNotFoundError", **labels
        )
        assert 1 == value(metrics, "taskforce_tool_failures_total", error_type="unknown", **labels)

    def test_hostile_tool_name_is_stored_escaped(self, metrics: MetricSet) -> None:
        """A name with quote, backslash and newline is one series under its escaped form."""
        name = 'evil"\\\nname'
        metrics.record_tool_call(name, "none", "success", 0.1, None)
        metrics.record_tool_call(name, "none", "success", 0.1, None)
        assert [
            {"agent_type": "none", "status": "success", "tool_name": 'evil\\"\\\\\\nname'}
        ] == series(metrics, "taskforce_tool_calls_total")
        assert 2 == value(
            metrics,
            "taskforce_tool_calls_total",
            tool_name=name,
            agent_type="none",
            status="success",
        )

    def test_overflow_maps_to_other_and_counts(self) -> None:
        """Past the cap, tool names become 'other' and the overflow counter rises."""
        metrics = MetricSet(max_label_values=2)
        for i in range(5):
            metrics.record_tool_call(f"tool{i}", "lean", "success", 0.1, None)
        assert 3 == value(
            metrics,
            "taskforce_tool_calls_total",
            tool_name="other",
            agent_type="lean",
            status="success",
        )
        assert 3 == value(
            metrics,
            "taskforce_metrics_label_overflow_total",
            metric="taskforce_tool_calls_total",
            label="tool_name",
        )
        assert 3 == len(series(metrics, "taskforce_tool_calls_total"))

    def test_overflowed_values_are_not_cached(self) -> None:
        """Thousands of distinct overflowing names do not grow the per-call cache."""
        metrics = MetricSet(max_label_values=2)
        for i in range(3000):
            metrics.record_tool_call(f"t{i}", "lean", "success", 0.1, None)
        assert 2 == len(metrics._tool_calls)


class TestLLM:
    def test_request_and_latency(self, metrics: MetricSet) -> None:
        """A request counts by operation and status and its latency is observed."""
        metrics.record_llm_request("gpt-4o", "lean", "complete", "success", 0.3)
        metrics.record_llm_request("gpt-4o", "lean", "complete", "error", 0.05)
        labels = {"model": "gpt-4o", "agent_type": "lean", "operation": "complete"}
        assert 1 == value(metrics, "taskforce_llm_requests_total", status="success", **labels)
        assert 1 == value(metrics, "taskforce_llm_requests_total", status="error", **labels)
        latency = histogram(metrics, "taskforce_llm_request_duration_seconds", **labels)
        assert (2, 1, 2) == (latency["count"], latency[0.08], latency[0.32])

    def test_tokens_skip_zero(self, metrics: MetricSet) -> None:
        """Input/output tokens add up; a zero count creates no increment."""
        metrics.record_llm_tokens("m", "legacy", 100, 0)
        metrics.record_llm_tokens("m", "legacy", 50, 7)
        assert 150 == value(
            metrics,
            "taskforce_llm_tokens_total",
            model="m",
            agent_type="legacy",
            token_type="input",
        )
        assert 7 == value(
            metrics,
            "taskforce_llm_tokens_total",
            model="m",
            agent_type="legacy",
            token_type="output",
        )

    def test_negative_tokens_raise(self, metrics: MetricSet) -> None:
        """Counters cannot go down."""
        with pytest.raises(ValueError, match="token counts"):
            metrics.record_llm_tokens("m", "lean", -1, 0)

    def test_time_to_first_token(self, metrics: MetricSet) -> None:
        """TTFT lands in the GenAI buckets."""
        metrics.record_time_to_first_token("m", "lean", 0.15)
        ttft = histogram(
            metrics, "taskforce_llm_time_to_first_token_seconds", model="m", agent_type="lean"
        )
        assert (1, 0, 1) == (ttft["count"], ttft[0.08], ttft[0.16])

    def test_context_pack(self, metrics: MetricSet) -> None:
        """Messages and estimated tokens of a request are observed per agent type."""
        metrics.record_context_pack("none", 10, 1000)
        messages = histogram(metrics, "taskforce_context_pack_messages", agent_type="none")
        tokens = histogram(metrics, "taskforce_context_pack_tokens", agent_type="none")
        assert (0, 1) == (messages[8.0], messages[16.0])
        assert (0, 1, 1000.0) == (tokens[256.0], tokens[1024.0], tokens["sum"])


class TestLLMCall:
    CALLS = [  # (model, agent_type, operation, status, seconds, input, output, messages, tokens)
        ("gpt-4o", "lean", "complete", "success", 0.3, 1200, 80, 6, 1500),
        ("gpt-4o", "lean", "complete", "success", 0.02, 0, 0, None, 0),
        ("m", "legacy", "generate", "error", 0.05, 0, 0, 1, 10),
        ("m", "legacy", "complete", "success", -1.0, 100, 0, 3, 0),
        ("gpt-4o", "lean", "complete", "success", 9.0, 0, 7, 40, 70000),
    ]

    def test_same_as_the_three_separate_calls(self) -> None:
        """record_llm_call renders byte for byte what request, pack and tokens calls render."""
        fused, separate = MetricSet(), MetricSet()
        for model, agent, operation, status, seconds, sent, received, messages, tokens in (
            self.CALLS * 2
        ):
            fused.record_llm_call(
                model, agent, operation, status, seconds, sent, received, messages, tokens
            )
            separate.record_llm_request(model, agent, operation, status, seconds)
            if messages is not None:
                separate.record_context_pack(agent, messages, tokens)
            if sent or received:
                separate.record_llm_tokens(model, agent, sent, received)
        assert separate.render() == fused.render()

    def test_series_appear_only_when_written(self, metrics: MetricSet) -> None:
        """No usage and no pack: no token or pack series is created, not even at zero."""
        metrics.record_llm_call("m", "lean", "complete", "error", 0.1, 0, 0, None, 0)
        assert [] == series(metrics, "taskforce_llm_tokens_total")
        assert [] == series(metrics, "taskforce_context_pack_messages")
        assert 1 == value(
            metrics,
            "taskforce_llm_requests_total",
            model="m",
            agent_type="lean",
            operation="complete",
            status="error",
        )

    def test_negative_tokens_raise_after_the_request(self, metrics: MetricSet) -> None:
        """A negative token count raises; the request and the pack are already recorded."""
        with pytest.raises(ValueError, match="token counts"):
            metrics.record_llm_call("m", "lean", "complete", "success", 0.1, -1, 0, 2, 5)
        labels = {"model": "m", "agent_type": "lean", "operation": "complete"}
        assert 1 == value(metrics, "taskforce_llm_requests_total", status="success", **labels)
        assert 1 == histogram(metrics, "taskforce_context_pack_tokens", agent_type="lean")["count"]
        assert [] == series(metrics, "taskforce_llm_tokens_total")

    def test_overflowed_models_are_not_cached(self) -> None:
        """Thousands of distinct overflowing models grow neither cache."""
        metrics = MetricSet(max_label_values=2)
        for i in range(3000):
            metrics.record_llm_call(f"m{i}", "lean", "complete", "success", 0.1, 5, 5, 1, 1)
        assert 2 == len(metrics._llm_calls)
        assert 2 == len(metrics._llm_tokens)
        assert 2998 * 5 == value(
            metrics,
            "taskforce_llm_tokens_total",
            model="other",
            agent_type="lean",
            token_type="input",
        )


class TestStateHttpAndFaults:
    def test_state_size(self, metrics: MetricSet) -> None:
        """State sizes land in power-of-4 byte buckets."""
        metrics.record_state_size(5000)
        size = histogram(metrics, "taskforce_state_size_bytes")
        assert (0, 1, 5000.0) == (size[4096.0], size[16384.0], size["sum"])

    def test_http_request(self, metrics: MetricSet) -> None:
        """Requests count by method, route and status; int and str codes are one series."""
        metrics.record_http_request("GET", "/health", 200, 0.002)
        metrics.record_http_request("GET", "/health", "200", 0.002)  # type: ignore[arg-type]
        metrics.record_http_request("BREW", "unmatched", 418, 0.001)
        assert 2 == value(
            metrics,
            "taskforce_http_requests_total",
            method="GET",
            route="/health",
            status_code="200",
        )
        assert 1 == value(
            metrics,
            "taskforce_http_requests_total",
            method="other",
            route="unmatched",
            status_code="418",
        )
        assert (
            2
            == histogram(
                metrics, "taskforce_http_request_duration_seconds", method="GET", route="/health"
            )["count"]
        )

    def test_fault_counts_by_stage(self, metrics: MetricSet) -> None:
        """Known stages count as such, dotted ones by their first part, others as 'other'."""
        metrics.record_fault("render")
        metrics.record_fault("llm.stream")
        metrics.record_fault("weird")
        metrics.record_fault(None)  # type: ignore[arg-type]
        assert 1 == value(metrics, "taskforce_metrics_errors_total", stage="render")
        assert 1 == value(metrics, "taskforce_metrics_errors_total", stage="llm")
        assert 2 == value(metrics, "taskforce_metrics_errors_total", stage="other")

    def test_fault_never_raises(self, metrics: MetricSet) -> None:
        """Even with its storage broken, record_fault returns quietly."""
        metrics.registry.get("taskforce_metrics_errors_total").values.store.clear()
        metrics.record_fault("render")
        metrics.record_fault([])  # type: ignore[arg-type]
