"""The exposition of a fixed workload is byte-identical to the checked-in golden file.

The golden file was rendered before the metrics write path was redesigned; any
change to the exposition (order, escaping, number formatting, overflow) shows up
here as a diff. Only the two version labels of ``taskforce_build_info`` vary by
machine; they are replaced by placeholders before comparing.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

from taskforce import __version__
from taskforce.observability._metricset import MetricSet

GOLDEN = Path(__file__).parent / "golden" / "exposition.txt"

# quote, backslash, newline, non-ASCII, a lone surrogate, and a value longer than the cut
_HOSTILE = ('say "hi"', "C:\\tmp\\", "two\nlines", "ünïcødé-日本-🚀", "lone-\ud800-x", "y" * 300)
# the seconds bounds of the catalog's histograms, hit exactly, plus values past the last one
_EDGES = (0.0, 0.0005, 0.001, 0.01, 0.02, 0.5, 1.0, 1.28, 10.24, 60.0, 81.92, 600.0, 1e9)


def record_workload(metrics: MetricSet) -> None:
    """Record the fixed workload: every metric, bucket edges, hostile values, overflow."""
    for agent in ("lean", "legacy", "none"):
        metrics.record_mission_started(agent)
    metrics.record_mission_started("lean")
    metrics.record_mission_finished("lean", "completed", 0.005, 0, 0)
    metrics.record_mission_finished("lean", "completed", 600.0, 100, 50)
    metrics.record_mission_finished("legacy", "failed", -1.0, 3, None)
    metrics.record_mission_finished("none", "cancelled", float("nan"), None, 7)
    metrics.record_mission_finished("lean", "failed", 1e9, 101, 1000)

    for i, seconds in enumerate(_EDGES):
        agent = ("lean", "legacy", "none")[i % 3]
        metrics.record_tool_call("calculator", agent, "success", seconds, None)
        metrics.record_tool_call("file_read", agent, "error", seconds, "FileNotFoundError")
        metrics.record_llm_call("gpt-4o", agent, "complete", "success", seconds, 0, 0, 10, 4096)
    metrics.record_tool_call("calculator", "lean", "error", 0.003, None)  # unknown error type
    metrics.record_tool_call("sleep", "lean", "error", 30.0, "timeout")
    metrics.record_tool_call("sleep", "legacy", "error", float("nan"), _HOSTILE[1])

    # max_label_values=4: the first hostile name takes the last tool slot, the rest is ``other``
    for name in _HOSTILE:
        metrics.record_tool_call(name, "lean", "error", 0.25, name)
    metrics.record_tool_call("other", "lean", "success", 0.1, None)

    metrics.record_llm_call("gpt-4o", "lean", "complete", "success", 2.0, 1200, 80, 6, 1500)
    metrics.record_llm_call("gpt-4o", "lean", "generate", "error", 0.04, 0, 0, 1, 0)
    metrics.record_llm_call(_HOSTILE[2], "legacy", "stream", "success", 5.12, 0, 33, None, 0)
    metrics.record_llm_call(_HOSTILE[3], "lean", "stream", "error", 0.0, 7, 0, 1024, 4**13)
    metrics.record_llm_call(_HOSTILE[4], "none", "complete", "success", 0.33, 1, 1, 2048, 5)
    metrics.record_llm_call("local\\model", "lean", "complete", "success", 0.5, 2, 3, 0, 0)
    metrics.record_llm_call("claude", "lean", "generate", "success", 0.5, 0, 9, 3, 10)
    metrics.record_time_to_first_token(_HOSTILE[2], "legacy", 0.64)
    metrics.record_time_to_first_token(_HOSTILE[3], "lean", -0.5)
    metrics.record_time_to_first_token("again-other", "lean", 0.01)

    for size in (0, 64, 65, 4096, 4**13, 4**13 + 1, 123_456):
        metrics.record_state_size(size)

    metrics.record_http_request("GET", "/api/v1/tools", 200, 0.001)
    metrics.record_http_request("GET", "/api/v1/tools", "200", 0.0011)  # type: ignore[arg-type]
    metrics.record_http_request("POST", "/api/v1/execute", 200, 120.0)
    metrics.record_http_request("POST", "/api/v1/execute", 422, 0.004)
    metrics.record_http_request("BREW", "unmatched", 404, -0.2)
    metrics.record_http_request("PATCH", _HOSTILE[5], 200, 0.05)
    metrics.record_http_request("GET", '/a"b', 500, 300.0)
    metrics.record_http_request("DELETE", "/x\\y", 503, 1000.0)

    for stage in ("mission", "llm.stream", "tool", "render", "nonsense", "http"):
        metrics.record_fault(stage)


def render_normalised(metrics: MetricSet) -> bytes:
    """Render ``metrics``, with the machine-dependent version labels as placeholders."""
    text = metrics.render()
    text = text.replace(
        f'python_version="{platform.python_version()}"'.encode(), b'python_version="<python>"'
    )
    return re.sub(
        rb'(taskforce_build_info\{.*)version="' + re.escape(__version__.encode()) + rb'"',
        rb'\1version="<version>"',
        text,
    )


class TestGoldenExposition:
    def test_fixed_workload_renders_the_golden_file(self) -> None:
        """The fixed workload renders byte for byte as the checked-in exposition."""
        metrics = MetricSet(max_label_values=4)
        record_workload(metrics)
        assert GOLDEN.read_bytes() == render_normalised(metrics)
