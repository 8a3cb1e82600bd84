"""The scrape is written from the children: aioprometheus' layout, in slices, with callbacks."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

from taskforce.observability.metrics import CallbackFamily, MetricSet, MetricSpec
from taskforce.observability.metrics import _catalog as cat
from taskforce.observability.metrics._aioprometheus import reference_text
from taskforce.observability.metrics._catalog import Label
from taskforce.observability.metrics._render import CONTENT_TYPE, escape_help
from tests.observability.metric_samples import value


def _populate(metrics: MetricSet) -> None:
    metrics.gauge(cat.MISSIONS_IN_PROGRESS).labels("lean").inc()
    metrics.counter(cat.TOOL_CALLS).labels("calculator", "lean", "success").inc()
    metrics.histogram(cat.TOOL_DURATION).labels("calculator", "lean").observe(0.004)
    metrics.counter(cat.LLM_TOKENS).labels("gpt-4o", "lean", "input").inc(1200)
    metrics.histogram(cat.STATE_SIZE).labels().observe(20_000)
    metrics.record_fault("tool")


@pytest.fixture(name="metrics")
def fixture_metrics() -> MetricSet:
    """A MetricSet with a few observations."""
    metrics = MetricSet()
    _populate(metrics)
    return metrics


class TestEquivalence:
    def test_byte_identical_to_aioprometheus(self, metrics: MetricSet) -> None:
        """On the catalog's metrics our output equals aioprometheus' formatter on the view."""
        assert reference_text(metrics.registry) == metrics.render()

    def test_identical_on_hostile_values_too(self, metrics: MetricSet) -> None:
        """Label values are escaped once, when the child is made; both renderers agree."""
        for name in ('q"uote', "back\\slash", "new\nline", "ünï€😀", "x" * 10_000):
            metrics.counter(cat.TOOL_FAILURES).labels(name, "none", name).inc()
        assert reference_text(metrics.registry) == metrics.render()

    def test_a_render_shows_values_recorded_after_the_last_one(self, metrics: MetricSet) -> None:
        """A second render reflects updates made after the first one."""
        first = metrics.render()
        metrics.counter(cat.TOOL_CALLS).labels("calculator", "lean", "success").inc()
        second = metrics.render()
        assert first != second
        assert b'tool_name="calculator"} 2\n' in second


class TestRenderAsync:
    async def test_same_bytes_as_render(self, metrics: MetricSet) -> None:
        """Rendering in slices writes exactly what one render writes."""
        for i in range(300):
            metrics.histogram(cat.TOOL_DURATION).labels(f"tool{i}", "lean").observe(i / 100)
        assert metrics.render() == await metrics.render_async(slice_lines=7)

    async def test_yields_to_the_loop_between_slices(self, metrics: MetricSet) -> None:
        """Another task runs while a large render is in progress."""
        for i in range(50):
            metrics.counter(cat.TOOL_CALLS).labels(f"t{i}", "lean", "success").inc()
        ran: list[bool] = []

        async def other() -> None:
            ran.append(True)

        task = asyncio.create_task(other())
        body = await metrics.render_async(slice_lines=10)
        await task
        assert [True] == ran
        assert body.count(b"taskforce_tool_calls_total{") == 51

    @pytest.mark.parametrize("slice_lines", [1, 500])
    async def test_a_series_that_cannot_be_written_is_never_written_in_part(
        self, metrics: MetricSet, slice_lines: int
    ) -> None:
        """A histogram series whose sum cannot be written: none of its lines is in the scrape
        (the series before it may be, whole, if a slice already went out), the families after
        it are, and one render fault is counted."""
        duration = metrics.histogram(cat.TOOL_DURATION)
        duration.labels("good", "lean").observe(0.2)
        bad: Any = Decimal("sNaN")  # float() of it raises
        duration.labels("bad", "lean").sum = bad
        body = (await metrics.render_async(slice_lines=slice_lines)).decode()
        assert 'tool_name="bad"' not in body
        good = [line for line in body.splitlines() if 'tool_name="good"' in line]
        whole = len(duration.labels("good", "lean").bounds) + 2  # every bucket, _count, _sum
        assert len(good) in (0, whole)
        assert "# TYPE taskforce_tool_failures_total" in body  # sorted after it
        assert 1 == value(metrics, "taskforce_metrics_errors_total", stage="render")


def _gauge_spec(name: str = "process_open_fds") -> MetricSpec:
    return MetricSpec(name, "gauge", "Open file descriptors.", (Label("kind", "constant"),))


class TestCallbackFamilies:
    def test_samples_are_read_at_scrape_time(self, metrics: MetricSet) -> None:
        """A callback family's values are those its function returns during the render."""
        value = [3.0]
        metrics.add_callback(CallbackFamily(_gauge_spec(), lambda: [(('a"b',), value[0])]))
        value[0] = 7.0
        text = metrics.render().decode()
        assert '# TYPE process_open_fds gauge\nprocess_open_fds{kind="a\\"b"} 7.0\n' in text
        # sorted by name among the catalog's families
        assert text.index("process_open_fds") < text.index("taskforce_build_info")

    def test_values_are_written_as_numbers(self, metrics: MetricSet) -> None:
        """A bool or a Decimal is written as the number it is; ``True`` would fail the scrape."""
        # typed float, but a reader may hand back any number-like object
        samples: list[Any] = [
            (("a",), True),
            (("b",), False),
            (("c",), Decimal("2.5")),
            (("d",), 3),
        ]
        metrics.add_callback(CallbackFamily(_gauge_spec(), lambda: samples))
        lines = [line for line in metrics.render().decode().splitlines() if "open_fds{" in line]
        assert [
            'process_open_fds{kind="a"} 1.0',
            'process_open_fds{kind="b"} 0.0',
            'process_open_fds{kind="c"} 2.5',
            'process_open_fds{kind="d"} 3',
        ] == lines

    def test_a_value_that_is_no_number_loses_its_family(self, metrics: MetricSet) -> None:
        """A value ``float`` refuses is a render fault, not a line no scraper parses."""
        samples: list[Any] = [(("a",), "ready")]
        metrics.add_callback(CallbackFamily(_gauge_spec(), lambda: samples))
        with capture_logs():
            text = metrics.render().decode()
        assert "process_open_fds" not in text
        assert 1 == value(metrics, "taskforce_metrics_errors_total", stage="render")

    def test_a_failing_reader_loses_its_family_not_the_scrape(self, metrics: MetricSet) -> None:
        """An exception from the reader is a render fault; the rest is rendered."""

        def broken() -> list[tuple[tuple[str, ...], float]]:
            raise OSError("no /proc here")

        metrics.add_callback(CallbackFamily(_gauge_spec(), broken))
        metrics.add_callback(CallbackFamily(_gauge_spec("process_max_fds"), broken))
        with capture_logs() as logs:
            text = metrics.render().decode()
            metrics.render()
        assert "process_open_fds" not in text
        assert 'taskforce_metrics_errors_total{stage="render"} 2\n' in text
        assert 4 == value(metrics, "taskforce_metrics_errors_total", stage="render")
        # logged once per family, then only counted
        assert [
            ("metrics.fault", "process_max_fds", "render", "OSError", "no /proc here"),
            ("metrics.fault", "process_open_fds", "render", "OSError", "no /proc here"),
        ] == [(e["event"], e["proxy"], e["stage"], e["error_type"], e["error"]) for e in logs]

    def test_names_are_unique(self, metrics: MetricSet) -> None:
        """A callback family cannot shadow a catalog family or another callback."""
        with pytest.raises(ValueError, match="exists already"):
            metrics.add_callback(CallbackFamily(cat.MISSIONS, list))
        metrics.add_callback(CallbackFamily(_gauge_spec(), list))
        with pytest.raises(ValueError, match="exists already"):
            metrics.add_callback(CallbackFamily(_gauge_spec(), list))

    def test_histograms_are_refused(self) -> None:
        """Only counters and gauges can be read at scrape time."""
        with pytest.raises(ValueError, match="counter or a gauge"):
            CallbackFamily(cat.STATE_SIZE, list)


class TestHelpers:
    def test_escape_help(self) -> None:
        """Backslash and newline are escaped in HELP text; quotes are not."""
        assert 'a\\\\b\\nc "q"' == escape_help('a\\b\nc "q"')

    def test_content_type(self) -> None:
        """The exposition is served as text format 0.0.4."""
        assert "text/plain; version=0.0.4; charset=utf-8" == CONTENT_TYPE
