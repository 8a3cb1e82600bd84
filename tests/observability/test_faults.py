"""report_fault: a fault of the instrumentation is counted always and logged once."""

from __future__ import annotations

from structlog.testing import capture_logs

from taskforce.observability._faults import report_fault
from taskforce.observability.metrics import MetricSet
from tests.observability.metric_samples import faults
from tests.support.odd_values import Unprintable


class TestReportFault:
    def test_counted_every_time_logged_once(self, metrics: MetricSet) -> None:
        """The same component and stage: counted twice, one metrics.fault line."""
        with capture_logs() as logs:
            for _ in range(2):
                report_fault(metrics, "ToolProxy", "tool.execute", ValueError("broken"))
        assert {"tool": 2} == faults(metrics)
        assert [("metrics.fault", "ValueError", "broken")] == [
            (log["event"], log["error_type"], log["error"]) for log in logs
        ]

    def test_a_fault_whose_message_cannot_be_read_is_still_logged(self, metrics: MetricSet) -> None:
        """str() of the exception raises: the line is logged with a placeholder, not lost."""
        with capture_logs() as logs:
            report_fault(metrics, "ToolProxy", "tool.execute", Unprintable())
            report_fault(metrics, "ToolProxy", "tool.execute", Unprintable())
        assert {"tool": 2} == faults(metrics)
        assert [
            (
                "metrics.fault",
                "Unprintable",
                "<the message of this Unprintable could not be read>",
            )
        ] == [(log["event"], log["error_type"], log["error"]) for log in logs]
