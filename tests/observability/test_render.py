"""The fast renderer produces aioprometheus' own text output, with escaping where it has none."""

from __future__ import annotations

import pytest
from aioprometheus.collectors import Counter, Gauge, Histogram, Registry, Summary
from aioprometheus.formats.text import TextFormatter

from taskforce.observability._metricset import MetricSet
from taskforce.observability._render import CONTENT_TYPE, TextRenderer, escape_help


def _aioprometheus_text(registry: Registry) -> bytes:
    return bytes(TextFormatter().marshall(registry))


def _populate(metrics: MetricSet) -> None:
    metrics.record_mission_started("lean")
    metrics.record_mission_finished("lean", "completed", 1.5, 3, 2)
    metrics.record_tool_call("calculator", "lean", "success", 0.004, None)
    metrics.record_tool_call("file_read", "legacy", "error", 0.02, "FileNotFoundError")
    metrics.record_llm_request("gpt-4o", "lean", "stream", "success", 2.0)
    metrics.record_llm_tokens("gpt-4o", "lean", 1200, 80)
    metrics.record_time_to_first_token("gpt-4o", "lean", 0.2)
    metrics.record_context_pack("lean", 6, 1500)
    metrics.record_state_size(20_000)
    metrics.record_http_request("POST", "/api/v1/execute", 200, 0.3)
    metrics.record_fault("tool")


@pytest.fixture(name="metrics")
def fixture_metrics() -> MetricSet:
    """A MetricSet with one observation in every metric."""
    metrics = MetricSet()
    _populate(metrics)
    return metrics


class TestEquivalence:
    def test_byte_identical_to_aioprometheus(self, metrics: MetricSet) -> None:
        """On the catalog's metrics our output equals aioprometheus' TextFormatter."""
        assert _aioprometheus_text(metrics.registry) == metrics.render()

    def test_identical_on_hostile_values_too(self, metrics: MetricSet) -> None:
        """The guard stores escaped values, so both renderers agree on hostile names."""
        for name in ('q"uote', "back\\slash", "new\nline", "ünï€😀", "x" * 10_000):
            metrics.record_tool_call(name, "none", "error", 0.5, name)
        assert _aioprometheus_text(metrics.registry) == metrics.render()

    def test_cached_text_follows_new_values(self, metrics: MetricSet) -> None:
        """A second render reflects updates made after the first one."""
        first = metrics.render()
        metrics.record_tool_call("calculator", "lean", "success", 0.004, None)
        second = metrics.render()
        assert first != second
        assert _aioprometheus_text(metrics.registry) == second

    def test_stock_histogram_values_render_the_same(self) -> None:
        """Series observed through aioprometheus' own API (stock Histogram) render identically."""
        registry = Registry()
        hist = Histogram("h_seconds", "A histogram.", registry=registry, buckets=(0.1, 1.0))
        for v in (0.05, 0.5, 5.0):
            hist.observe({"a": "x"}, v)
        hist.observe({}, 0.2)
        Counter("c_total", "A counter.", registry=registry).inc({"b": "1"})
        Gauge("g", "A gauge.", registry=registry).set({}, 2.5)
        assert _aioprometheus_text(registry) == TextRenderer(registry).render()

    def test_summary_and_const_labels_fall_back_to_aioprometheus(self) -> None:
        """Shapes the fast path does not handle are rendered by aioprometheus' formatter."""
        registry = Registry()
        Summary("s", "A summary.", registry=registry).observe({"a": "b"}, 1.0)
        Counter("k_total", "Constant.", const_labels={"env": "t"}, registry=registry).inc({})
        assert _aioprometheus_text(registry) == TextRenderer(registry).render()

    def test_empty_registry(self) -> None:
        """An empty registry renders as empty bytes, like aioprometheus."""
        assert b"" == TextRenderer(Registry()).render()


class TestSafety:
    def test_help_text_is_escaped(self) -> None:
        """A backslash or newline in HELP is escaped (aioprometheus writes it raw)."""
        registry = Registry()
        Counter("c_total", "two\nlines \\ here", registry=registry).inc({})
        assert b"# HELP c_total two\\nlines \\\\ here\n" in TextRenderer(registry).render()
        assert "a\\\\b\\nc" == escape_help("a\\b\nc")

    def test_foreign_raw_values_are_escaped(self) -> None:
        """A value written past the guard (raw quote/newline) is escaped at render time."""
        registry = Registry()
        Counter("c_total", "C.", registry=registry).inc({"v": 'a"b\nc'})
        assert b'c_total{v="a\\"b\\nc"} 1\n' in TextRenderer(registry).render()

    def test_replaced_collector_is_not_served_from_cache(self) -> None:
        """Deregistering and re-registering a name drops its cached series text."""
        registry = Registry()
        renderer = TextRenderer(registry)
        Counter("c_total", "C.", registry=registry).inc({"v": "old"})
        renderer.render()
        registry.deregister("c_total")
        Counter("c_total", "C.", registry=registry).inc({"v": "new"})
        assert b'c_total{v="new"} 1' in renderer.render()

    def test_content_type(self) -> None:
        """The exposition is announced as text format 0.0.4 in UTF-8."""
        assert "text/plain; version=0.0.4; charset=utf-8" == CONTENT_TYPE
