"""The exposition of a fixed workload is byte-identical to the checked-in golden file.

The golden file was rendered before the metrics write path was redesigned; any
change to the exposition (order, escaping, number formatting, overflow) shows up
here as a diff. Only the two version labels of ``taskforce_build_info`` vary by
machine; they are replaced by placeholders before comparing (a ``MetricSet`` built
without ``llm_provider`` says ``unknown``).
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

from taskforce import __version__
from taskforce.observability.metrics import MetricSet
from taskforce.observability.metrics import _catalog as cat
from taskforce.observability.metrics._aioprometheus import reference_text

GOLDEN = Path(__file__).parent / "golden" / "exposition.txt"

# quote, backslash, newline, non-ASCII, a lone surrogate, and a value longer than the cut
_HOSTILE = ('say "hi"', "C:\\tmp\\", "two\nlines", "ünïcødé-日本-🚀", "lone-\ud800-x", "y" * 300)
# the seconds bounds of the catalog's histograms, hit exactly, plus values past the last one
_EDGES = (0.0, 0.0005, 0.001, 0.01, 0.02, 0.5, 1.0, 1.28, 10.24, 60.0, 81.92, 600.0, 1e9)


def _mission(
    metrics: MetricSet, agent: str, status: str, seconds: float, *counts: int | None
) -> None:
    """Finish a mission as the executor proxy does: every mission series exists afterwards."""
    steps, tool_calls = counts
    metrics.counter(cat.MISSIONS).labels(agent, status).inc()
    metrics.histogram(cat.MISSION_DURATION).labels(agent, status).observe(seconds)
    for spec, count in ((cat.MISSION_STEPS, steps), (cat.MISSION_TOOL_CALLS, tool_calls)):
        child = metrics.histogram(spec).labels(agent)
        if count is not None:
            child.observe(count)
    metrics.gauge(cat.MISSIONS_IN_PROGRESS).labels(agent).dec()


def _tool(metrics: MetricSet, name: str, agent: str, seconds: float, error: str | None) -> None:
    """One tool call: ``error`` None is a success."""
    status = "success" if error is None else "error"
    metrics.counter(cat.TOOL_CALLS).labels(name, agent, status).inc()
    metrics.histogram(cat.TOOL_DURATION).labels(name, agent).observe(seconds)
    if error is not None:
        metrics.counter(cat.TOOL_FAILURES).labels(name, agent, error).inc()


def _llm(
    metrics: MetricSet,
    labels: tuple[str, str, str, str],
    seconds: float,
    tokens: tuple[int, int],
    pack: tuple[int, int] | None,
) -> None:
    """One LLM call: ``labels`` is (model, agent, operation, status)."""
    model, agent, operation, _ = labels
    metrics.counter(cat.LLM_REQUESTS).labels(*labels).inc()
    metrics.histogram(cat.LLM_DURATION).labels(model, agent, operation).observe(seconds)
    if pack is not None:
        metrics.histogram(cat.CONTEXT_PACK_MESSAGES).labels(agent).observe(pack[0])
        metrics.histogram(cat.CONTEXT_PACK_TOKENS).labels(agent).observe(pack[1])
    if any(tokens):
        for token_type, count in zip(("input", "output"), tokens, strict=True):
            metrics.counter(cat.LLM_TOKENS).labels(model, agent, token_type).inc(count)


def _http(metrics: MetricSet, method: str, route: str, code: str, seconds: float) -> None:
    metrics.counter(cat.HTTP_REQUESTS).labels(method, route, code).inc()
    metrics.histogram(cat.HTTP_DURATION).labels(method, route).observe(seconds)


def record_workload(metrics: MetricSet) -> None:
    """Record the fixed workload: every metric, bucket edges, hostile values, overflow."""
    in_progress = metrics.gauge(cat.MISSIONS_IN_PROGRESS)
    for agent in ("lean", "legacy", "none"):
        in_progress.labels(agent).inc()
    in_progress.labels("lean").inc()
    _mission(metrics, "lean", "completed", 0.005, 0, 0)
    _mission(metrics, "lean", "completed", 600.0, 100, 50)
    _mission(metrics, "legacy", "failed", -1.0, 3, None)
    _mission(metrics, "none", "cancelled", float("nan"), None, 7)
    _mission(metrics, "lean", "failed", 1e9, 101, 1000)

    for i, seconds in enumerate(_EDGES):
        agent = ("lean", "legacy", "none")[i % 3]
        _tool(metrics, "calculator", agent, seconds, None)
        _tool(metrics, "file_read", agent, seconds, "FileNotFoundError")
        _llm(metrics, ("gpt-4o", agent, "complete", "success"), seconds, (0, 0), (10, 4096))
    _tool(metrics, "calculator", "lean", 0.003, "unknown")
    _tool(metrics, "sleep", "lean", 30.0, "timeout")
    _tool(metrics, "sleep", "legacy", float("nan"), _HOSTILE[1])

    # max_label_values=4: the first hostile name takes the last tool slot, the rest is ``other``
    for name in _HOSTILE:
        _tool(metrics, name, "lean", 0.25, name)
    _tool(metrics, "other", "lean", 0.1, None)

    _llm(metrics, ("gpt-4o", "lean", "complete", "success"), 2.0, (1200, 80), (6, 1500))
    _llm(metrics, ("gpt-4o", "lean", "generate", "error"), 0.04, (0, 0), (1, 0))
    _llm(metrics, (_HOSTILE[2], "legacy", "stream", "success"), 5.12, (0, 33), None)
    _llm(metrics, (_HOSTILE[3], "lean", "stream", "error"), 0.0, (7, 0), (1024, 4**13))
    _llm(metrics, (_HOSTILE[4], "none", "complete", "success"), 0.33, (1, 1), (2048, 5))
    _llm(metrics, ("local\\model", "lean", "complete", "success"), 0.5, (2, 3), (0, 0))
    _llm(metrics, ("claude", "lean", "generate", "success"), 0.5, (0, 9), (3, 10))
    ttft = metrics.histogram(cat.LLM_TTFT)
    ttft.labels(_HOSTILE[2], "legacy").observe(0.64)
    ttft.labels(_HOSTILE[3], "lean").observe(-0.5)
    ttft.labels("again-other", "lean").observe(0.01)
    metrics.counter(cat.LLM_RETRIES).labels("gpt-4o", "lean", "rate_limit").inc()
    metrics.counter(cat.LLM_RETRIES).labels("gpt-4o", "lean", "server_error").inc(2)
    metrics.counter(cat.LLM_FAILURES).labels("gpt-4o", "lean", "server_error").inc()
    metrics.counter(cat.LLM_FAILURES).labels("claude", "legacy", "auth").inc()
    metrics.counter(cat.LLM_COST).labels("gpt-4o", "lean").inc(1200 * 2.5e-6 + 80 * 10e-6)

    for size in (0, 64, 65, 4096, 4**13, 4**13 + 1, 123_456):
        metrics.histogram(cat.STATE_SIZE).labels().observe(size)

    _http(metrics, "GET", "/api/v1/tools", "200", 0.001)
    _http(metrics, "GET", "/api/v1/tools", "200", 0.0011)
    _http(metrics, "POST", "/api/v1/execute", "200", 120.0)
    _http(metrics, "POST", "/api/v1/execute", "422", 0.004)
    _http(metrics, "other", "unmatched", "404", -0.2)
    _http(metrics, "PATCH", _HOSTILE[5], "200", 0.05)
    _http(metrics, "GET", '/a"b', "500", 300.0)
    _http(metrics, "DELETE", "/x\\y", "503", 1000.0)

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

    def test_the_registry_view_renders_the_same_through_aioprometheus(self) -> None:
        """aioprometheus' own formatter, reading the registry view, writes the same bytes."""
        metrics = MetricSet(max_label_values=4)
        record_workload(metrics)
        assert reference_text(metrics.registry) == metrics.render()
