"""The metric catalog matches the contract and computes its series budget."""

from __future__ import annotations

import re

import pytest

from taskforce.observability.metrics._catalog import (
    AGENT_TYPES,
    CATALOG,
    FAULT_STAGES,
    OTHER,
    guarded_pairs,
    metric,
    series_budget,
)

# CONTRACT.md "Metric catalog": name -> (type, labels)
CONTRACT = {
    "taskforce_missions_total": ("counter", ("agent_type", "status")),
    "taskforce_mission_duration_seconds": ("histogram", ("agent_type", "status")),
    "taskforce_missions_in_progress": ("gauge", ("agent_type",)),
    "taskforce_mission_steps": ("histogram", ("agent_type",)),
    "taskforce_mission_tool_calls": ("histogram", ("agent_type",)),
    "taskforce_tool_calls_total": ("counter", ("tool_name", "agent_type", "status")),
    "taskforce_tool_failures_total": ("counter", ("tool_name", "agent_type", "error_type")),
    "taskforce_tool_duration_seconds": ("histogram", ("tool_name", "agent_type")),
    "taskforce_llm_requests_total": ("counter", ("model", "agent_type", "operation", "status")),
    "taskforce_llm_request_duration_seconds": ("histogram", ("model", "agent_type", "operation")),
    "taskforce_llm_time_to_first_token_seconds": ("histogram", ("model", "agent_type")),
    "taskforce_llm_tokens_total": ("counter", ("model", "agent_type", "token_type")),
    "taskforce_llm_retries_total": ("counter", ("model", "agent_type", "error_type")),
    "taskforce_llm_failures_total": ("counter", ("model", "agent_type", "error_type")),
    "taskforce_llm_cost_usd_total": ("counter", ("model", "agent_type")),
    "taskforce_context_pack_messages": ("histogram", ("agent_type",)),
    "taskforce_context_pack_tokens": ("histogram", ("agent_type",)),
    "taskforce_state_size_bytes": ("histogram", ()),
    "taskforce_state_errors_total": ("counter", ("operation",)),
    "taskforce_http_requests_total": ("counter", ("method", "route", "status_code")),
    "taskforce_http_request_duration_seconds": ("histogram", ("method", "route")),
    "taskforce_metrics_label_overflow_total": ("counter", ("metric", "label")),
    "taskforce_metrics_errors_total": ("counter", ("stage",)),
    "taskforce_build_info": ("gauge", ("version", "python_version", "llm_provider")),
}

OTEL_DURATION: tuple[float, ...] = (
    *(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64),
    *(1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92),
)


class TestCatalogShape:
    def test_matches_contract(self) -> None:
        """Exactly the contract's metrics, with its types and label names in order."""
        assert CONTRACT == {spec.name: (spec.kind, spec.label_names) for spec in CATALOG}

    def test_names_follow_prometheus_conventions(self) -> None:
        """snake_case with the taskforce_ prefix; counters and only counters end in _total."""
        for spec in CATALOG:
            assert re.fullmatch(r"taskforce_[a-z][a-z0-9_]*", spec.name), spec.name
            assert (spec.kind == "counter") == spec.name.endswith("_total"), spec.name

    def test_help_is_single_line_text(self) -> None:
        """Help strings are non-empty and need no escaping in the exposition."""
        for spec in CATALOG:
            assert spec.help
            assert "\n" not in spec.help
            assert "\\" not in spec.help

    def test_buckets_only_on_histograms_and_sorted(self) -> None:
        """Histograms have strictly increasing finite bounds; other metrics have none."""
        for spec in CATALOG:
            if spec.kind == "histogram":
                assert list(spec.buckets) == sorted(set(spec.buckets)), spec.name
                assert float("inf") not in spec.buckets
            else:
                assert () == spec.buckets, spec.name

    def test_llm_latency_buckets_are_the_genai_advisory_boundaries(self) -> None:
        """LLM latency and time to first token use gen_ai.client.operation.duration's bounds."""
        assert OTEL_DURATION == metric("taskforce_llm_request_duration_seconds").buckets
        assert OTEL_DURATION == metric("taskforce_llm_time_to_first_token_seconds").buckets

    def test_token_and_state_buckets_are_powers_of_four(self) -> None:
        """Token counts use 4**0..4**13; state bytes 64 B (4**3) to 64 MiB (4**13)."""
        assert (
            tuple(float(4**i) for i in range(14)) == metric("taskforce_context_pack_tokens").buckets
        )
        assert (
            tuple(float(4**i) for i in range(3, 14)) == metric("taskforce_state_size_bytes").buckets
        )

    def test_duration_ranges(self) -> None:
        """Missions span ms to 10 min; tools sub-ms to a minute."""
        mission = metric("taskforce_mission_duration_seconds").buckets
        tool = metric("taskforce_tool_duration_seconds").buckets
        assert (0.005, 600.0) == (mission[0], mission[-1])
        assert (0.0005, 60.0) == (tool[0], tool[-1])

    def test_closed_sets(self) -> None:
        """The contract's closed sets, and fault stages with an 'other' catch-all."""
        assert ("lean", "legacy", "none") == AGENT_TYPES
        assert ("completed", "failed", "cancelled") == metric("taskforce_missions_total").labels[
            1
        ].values
        assert ("success", "error") == metric("taskforce_tool_calls_total").labels[2].values
        assert ("complete", "generate", "stream") == metric("taskforce_llm_requests_total").labels[
            2
        ].values
        assert ("input", "output") == metric("taskforce_llm_tokens_total").labels[2].values
        assert OTHER in FAULT_STAGES
        assert OTHER in metric("taskforce_http_requests_total").labels[0].values

    def test_guarded_labels(self) -> None:
        """Exactly the free-form labels pass the guard; the overflow counter lists them."""
        expected = {
            ("taskforce_tool_calls_total", "tool_name"),
            ("taskforce_tool_failures_total", "tool_name"),
            ("taskforce_tool_failures_total", "error_type"),
            ("taskforce_tool_duration_seconds", "tool_name"),
            ("taskforce_llm_requests_total", "model"),
            ("taskforce_llm_request_duration_seconds", "model"),
            ("taskforce_llm_time_to_first_token_seconds", "model"),
            ("taskforce_llm_tokens_total", "model"),
            ("taskforce_llm_retries_total", "model"),
            ("taskforce_llm_failures_total", "model"),
            ("taskforce_llm_cost_usd_total", "model"),
            ("taskforce_http_requests_total", "route"),
            ("taskforce_http_requests_total", "status_code"),
            ("taskforce_http_request_duration_seconds", "route"),
        }
        assert expected == set(guarded_pairs())
        overflow = metric("taskforce_metrics_label_overflow_total")
        assert {name for name, _ in expected} == set(overflow.labels[0].values)

    def test_llm_error_type_is_the_closed_set(self) -> None:
        """Retries and failures take exactly the LLM error types of core.interfaces."""
        from taskforce.core.interfaces import LLM_ERROR_TYPES

        for name in ("taskforce_llm_retries_total", "taskforce_llm_failures_total"):
            (error_type,) = [label for label in metric(name).labels if label.name == "error_type"]
            assert ("closed", LLM_ERROR_TYPES) == (error_type.kind, error_type.values)

    def test_unknown_metric(self) -> None:
        """Looking up a name outside the catalog raises KeyError."""
        with pytest.raises(KeyError):
            metric("taskforce_nope_total")


class TestSeriesBudget:
    def test_counter_is_product_of_cardinalities(self) -> None:
        """tool_calls_total: (cap + 1) tool names x 3 agent types x 2 statuses."""
        assert 101 * 3 * 2 == metric("taskforce_tool_calls_total").series_budget(100)

    def test_histogram_counts_buckets_inf_sum_and_count(self) -> None:
        """A histogram label set is len(buckets) + 3 series (+Inf, _sum, _count)."""
        spec = metric("taskforce_tool_duration_seconds")
        assert 101 * 3 * (len(spec.buckets) + 3) == spec.series_budget(100)
        assert len(metric("taskforce_state_size_bytes").buckets) + 3 == metric(
            "taskforce_state_size_bytes"
        ).series_budget(100)

    def test_overflow_counter_counts_real_pairs_only(self) -> None:
        """The overflow counter's budget is the number of guarded pairs, not a product."""
        spec = metric("taskforce_metrics_label_overflow_total")
        assert len(guarded_pairs()) == spec.series_budget(100)

    def test_constant_labels_count_once(self) -> None:
        """build_info has one series whatever the cap."""
        assert 1 == metric("taskforce_build_info").series_budget(7)

    def test_total_is_sum_and_grows_with_cap(self) -> None:
        """The catalog budget sums the metrics and is monotonic in the cap."""
        assert sum(s.series_budget(3) for s in CATALOG) == series_budget(3)
        assert series_budget(3) < series_budget(4)
        assert 186758 == series_budget(100)

    def test_rejects_cap_below_one(self) -> None:
        """A cap of 0 is a configuration error."""
        with pytest.raises(ValueError, match="max_label_values"):
            series_budget(0)
