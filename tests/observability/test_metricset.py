"""MetricSet: one family per catalog metric, cached typed children, read back as samples."""

from __future__ import annotations

import asyncio
import math
import platform
from typing import Any

import pytest
from aioprometheus.collectors import REGISTRY

from taskforce.core.interfaces.llm import LLM_ERROR_TYPES
from taskforce.observability.metrics import (
    CounterChild,
    CounterPair,
    GaugeChild,
    HistogramChild,
    MetricSet,
)
from taskforce.observability.metrics import _catalog as cat
from taskforce.observability.metrics._catalog import (
    CATALOG,
    FAULT_STAGES,
    MISSION_STATUSES,
    series_budget,
)
from tests.observability.metric_samples import histogram, series, value


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

    def test_llm_series_of_the_model_asked_for_exist_at_zero(self) -> None:
        """With llm_model, each flow's operations of that model exist at 0, both outcomes,
        and its retries and failures of every error type: a series born above zero hides
        each worker's first request, retry or failure from increase()."""
        metrics = MetricSet(llm_model="m-1")
        assert {
            ("m-1", agent_type, operation, status)
            for agent_type, operation in (
                ("lean", "complete"),
                ("lean", "stream"),
                ("legacy", "generate"),
                ("legacy", "complete"),
            )
            for status in ("success", "error")
        } == {
            (s["model"], s["agent_type"], s["operation"], s["status"])
            for s in series(metrics, "taskforce_llm_requests_total")
        }
        for name in ("taskforce_llm_retries_total", "taskforce_llm_failures_total"):
            assert {
                ("m-1", agent_type, error_type)
                for agent_type in ("lean", "legacy")
                for error_type in LLM_ERROR_TYPES
            } == {(s["model"], s["agent_type"], s["error_type"]) for s in series(metrics, name)}
        for name in ("requests", "retries", "failures"):
            assert [] == series(MetricSet(), f"taskforce_llm_{name}_total")

    def test_panel_series_of_the_model_asked_for_exist_at_zero(self) -> None:
        """The dashboard's latency, time-to-first-token, token, spend and context-pack
        panels read rate() of these: born at their first observation, a worker's first
        call (its only stream, say) would never show there."""
        metrics = MetricSet(llm_model="m-1", llm_prices={"m-1": (1.0, 2.0)})
        flows = {("lean", "complete"), ("lean", "stream"), ("legacy", "generate")}
        flows.add(("legacy", "complete"))
        assert {("m-1", *flow) for flow in flows} == {
            (s["model"], s["agent_type"], s["operation"])
            for s in series(metrics, "taskforce_llm_request_duration_seconds")
        }
        assert {"count": 0, "sum": 0} == {
            key: histogram(
                metrics, "taskforce_llm_time_to_first_token_seconds", model="m-1", agent_type="lean"
            )[key]
            for key in ("count", "sum")
        }
        assert {
            ("m-1", agent_type, token_type)
            for agent_type in ("lean", "legacy")
            for token_type in ("input", "output")
        } == {
            (s["model"], s["agent_type"], s["token_type"])
            for s in series(metrics, "taskforce_llm_tokens_total")
        }
        assert {("m-1", "lean"), ("m-1", "legacy")} == {
            (s["model"], s["agent_type"]) for s in series(metrics, "taskforce_llm_cost_usd_total")
        }
        for name in ("messages", "tokens"):
            assert {"lean", "legacy"} == {
                s["agent_type"] for s in series(metrics, f"taskforce_context_pack_{name}")
            }
        assert [] == series(MetricSet(llm_model="m-1"), "taskforce_llm_cost_usd_total")
        for name in ("request_duration_seconds", "time_to_first_token_seconds", "tokens_total"):
            assert [] == series(MetricSet(), f"taskforce_llm_{name}")

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
        first.counter(cat.TOOL_CALLS).labels("calc", "lean", "success").inc()
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


class TestFamilies:
    def test_typed_lookup(self, metrics: MetricSet) -> None:
        """counter/gauge/histogram return the family of that kind and refuse another kind."""
        assert cat.TOOL_CALLS is metrics.counter(cat.TOOL_CALLS).spec
        assert cat.MISSIONS_IN_PROGRESS is metrics.gauge(cat.MISSIONS_IN_PROGRESS).spec
        assert cat.STATE_SIZE is metrics.histogram(cat.STATE_SIZE).spec
        with pytest.raises(TypeError, match="is a counter, not a histogram"):
            metrics.histogram(cat.TOOL_CALLS)

    def test_children_are_cached_and_typed(self, metrics: MetricSet) -> None:
        """The same label values give the same child, of the family's child class."""
        calls = metrics.counter(cat.TOOL_CALLS)
        child = calls.labels("calculator", "lean", "success")
        assert child is calls.labels("calculator", "lean", "success")
        assert isinstance(child, CounterChild)
        assert isinstance(metrics.gauge(cat.MISSIONS_IN_PROGRESS).labels("lean"), GaugeChild)
        assert isinstance(metrics.histogram(cat.STATE_SIZE).labels(), HistogramChild)

    @pytest.mark.parametrize("values", [("robot", "completed"), ("lean", "done"), ("lean", None)])
    def test_closed_sets_are_enforced(self, metrics: MetricSet, values: tuple[str, str]) -> None:
        """A value outside a closed set raises ValueError and makes no series."""
        with pytest.raises(ValueError, match="not one of"):
            metrics.counter(cat.MISSIONS).labels(*values)
        assert 6 == len(series(metrics, "taskforce_missions_total"))

    def test_arity_is_enforced(self, metrics: MetricSet) -> None:
        """Too few or too many label values raise ValueError."""
        with pytest.raises(ValueError, match="takes labels"):
            metrics.counter(cat.TOOL_CALLS).labels("calculator", "lean")

    def test_hostile_value_is_one_series_stored_escaped(self, metrics: MetricSet) -> None:
        """A name with quote, backslash and newline is one series under its escaped form."""
        name = 'evil"\\\nname'
        calls = metrics.counter(cat.TOOL_CALLS)
        calls.labels(name, "none", "success").inc()
        calls.labels(name, "none", "success").inc()
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

    def test_overflow_maps_to_other_and_counts_every_time(self) -> None:
        """Past the cap, values share the 'other' child; each lookup counts one overflow."""
        metrics = MetricSet(max_label_values=2)
        calls = metrics.counter(cat.TOOL_CALLS)
        for i in range(5):
            calls.labels(f"tool{i}", "lean", "success").inc()
        calls.labels("tool4", "lean", "success").inc()
        assert 4 == value(
            metrics,
            "taskforce_tool_calls_total",
            tool_name="other",
            agent_type="lean",
            status="success",
        )
        assert 4 == value(
            metrics,
            "taskforce_metrics_label_overflow_total",
            metric="taskforce_tool_calls_total",
            label="tool_name",
        )
        assert 3 == len(series(metrics, "taskforce_tool_calls_total"))

    def test_overflowed_values_are_not_cached(self) -> None:
        """Thousands of distinct overflowing names do not grow the family's cache."""
        metrics = MetricSet(max_label_values=2)
        calls = metrics.counter(cat.TOOL_CALLS)
        for i in range(3000):
            calls.labels(f"t{i}", "lean", "success").inc()
        assert 2 == len(calls._aliases)
        assert 3 == len(calls.children)

    def test_non_str_values_are_not_cached(self, metrics: MetricSet) -> None:
        """1, 1.0 and True are one dict key but three label values: none is cached."""
        codes = metrics.counter(cat.HTTP_REQUESTS)
        for code in (1, 1.0, True):
            codes.labels("GET", "/", code).inc()
        assert {"1", "1.0", "True"} == {
            labels["status_code"] for labels in series(metrics, "taskforce_http_requests_total")
        }
        assert {} == codes._aliases


class TestChildren:
    def test_counter_goes_up_only(self, metrics: MetricSet) -> None:
        """inc adds 1 or an amount, floats included; a negative amount raises."""
        tokens = metrics.counter(cat.LLM_TOKENS).labels("m", "legacy", "input")
        tokens.inc()
        tokens.inc(149)
        tokens.inc(0.5)
        with pytest.raises(ValueError, match="only goes up"):
            tokens.inc(-1)
        assert 150.5 == value(
            metrics,
            "taskforce_llm_tokens_total",
            model="m",
            agent_type="legacy",
            token_type="input",
        )

    def test_counter_pair_writes_both_or_neither(self, metrics: MetricSet) -> None:
        """A pair adds each amount to its own series; a negative amount changes neither."""
        tokens = metrics.counter(cat.LLM_TOKENS)
        pair = CounterPair(*(tokens.labels("m", "lean", kind) for kind in ("input", "output")))
        pair.inc(120, 30)
        pair.inc(0, 2.5)
        with pytest.raises(ValueError, match="only goes up"):
            pair.inc(5, -1)
        with pytest.raises(ValueError, match="only goes up"):
            pair.inc(-5, 1)

        def tokens_of(token_type: str) -> float | None:
            labels = {"model": "m", "agent_type": "lean", "token_type": token_type}
            return value(metrics, "taskforce_llm_tokens_total", **labels)

        assert (120, 32.5) == (tokens_of("input"), tokens_of("output"))

    def test_gauge_goes_both_ways(self, metrics: MetricSet) -> None:
        """inc, dec and set."""
        gauge = metrics.gauge(cat.MISSIONS_IN_PROGRESS).labels("legacy")
        gauge.inc()
        gauge.inc(2)
        gauge.dec()
        assert 2 == value(metrics, "taskforce_missions_in_progress", agent_type="legacy")
        gauge.set(-4)
        assert -4 == value(metrics, "taskforce_missions_in_progress", agent_type="legacy")

    def test_histogram_buckets_are_upper_inclusive(self, metrics: MetricSet) -> None:
        """A value on a bound lands in that bucket; counts are cumulative when read."""
        ttft = metrics.histogram(cat.LLM_TTFT).labels("m", "lean")
        for seconds in (0.08, 0.15, 0.16, 1e6):
            ttft.observe(seconds)
        read = histogram(
            metrics, "taskforce_llm_time_to_first_token_seconds", model="m", agent_type="lean"
        )
        assert (4, 1, 3, 3, 4) == (
            read["count"],
            read[0.08],
            read[0.16],
            read[81.92],
            read[float("inf")],
        )
        assert 4 == ttft.count

    def test_negative_and_nan_observations_are_zero(self, metrics: MetricSet) -> None:
        """A clock going backwards or NaN is observed as 0."""
        duration = metrics.histogram(cat.MISSION_DURATION).labels("lean", "completed")
        duration.observe(-1.0)
        duration.observe(math.nan)
        read = histogram(
            metrics, "taskforce_mission_duration_seconds", agent_type="lean", status="completed"
        )
        assert (2, 0.0, 2) == (read["count"], read["sum"], read[0.005])

    def test_an_observation_the_sum_cannot_take_changes_nothing(self, metrics: MetricSet) -> None:
        """A value too large for the float sum raises, and leaves count and sum as they were."""
        size = metrics.histogram(cat.STATE_SIZE).labels()
        size.observe(5000)
        with pytest.raises(OverflowError):
            size.observe(10**400)
        read = histogram(metrics, "taskforce_state_size_bytes")
        assert (1, 5000.0) == (read["count"], read["sum"])

    def test_integral_bounds_take_int_observations(self, metrics: MetricSet) -> None:
        """Byte sizes land in power-of-4 buckets."""
        metrics.histogram(cat.STATE_SIZE).labels().observe(5000)
        size = histogram(metrics, "taskforce_state_size_bytes")
        assert (0, 1, 5000.0) == (size[4096.0], size[16384.0], size["sum"])


class TestRegistryView:
    def test_aioprometheus_writes_are_refused(self, metrics: MetricSet) -> None:
        """The registry is a read-only view: writing through aioprometheus bypasses the guard."""
        collector: Any = metrics.registry.get("taskforce_tool_calls_total")
        with pytest.raises(TypeError, match="recorded through"):
            collector.inc({"tool_name": "x", "agent_type": "lean", "status": "success"})


class TestFaults:
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
        metrics._faults.clear()
        metrics.record_fault("render")
        metrics.record_fault([])  # type: ignore[arg-type]


class TestForeignCollectors:
    def test_a_collector_registered_on_the_registry_is_rendered(self) -> None:
        """The registry is the one served: a collector of one's own on it is in the
        render after the catalog's families, as aioprometheus writes it; render_async
        writes the same bytes."""
        from aioprometheus.collectors import Counter, Gauge

        metrics = MetricSet()
        jobs = Counter("jobs_total", "Jobs.", registry=metrics.registry)
        jobs.inc({"queue": "a"})
        Gauge("depth", "Queue depth.", registry=metrics.registry).set({}, 3)
        text = metrics.render()
        assert text.endswith(
            b"# HELP depth Queue depth.\n# TYPE depth gauge\ndepth 3\n"
            b'# HELP jobs_total Jobs.\n# TYPE jobs_total counter\njobs_total{queue="a"} 1\n'
        )
        assert text == asyncio.run(metrics.render_async())

    def test_a_collector_that_cannot_be_written_loses_its_lines_only(self) -> None:
        """A collector whose samples raise is left out and counted as a render fault; the
        scrape and the other collectors go on."""
        from aioprometheus.collectors import Counter

        class Broken(Counter):
            def get_all(self) -> Any:
                raise RuntimeError("broken collector")

        metrics = MetricSet()
        Broken("broken_total", "Broken.", registry=metrics.registry)
        Counter("fine_total", "Fine.", registry=metrics.registry).inc({})
        text = metrics.render()
        assert b"broken_total" not in text
        assert b"\nfine_total 1\n" in text
        assert 1 == value(metrics, "taskforce_metrics_errors_total", stage="render")
