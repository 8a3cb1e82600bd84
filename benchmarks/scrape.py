"""Scrape cost at ~20,000 series: render time against generate_latest, and the loop stall.

What is measured: a real ``MetricSet`` (``max_label_values=10_000``, so nothing is
folded into ``other``) is filled through its families with tool names, models and
error types until its registry holds at least 20,000 time series (sample lines:
every histogram bucket, ``_sum`` and ``_count`` counts as one). One value in six is
hostile: quotes, backslashes, newlines, non-ASCII and emoji, 10,000-character
strings. The same series (read back from our registry, label values unescaped) are
built in a ``prometheus_client.CollectorRegistry`` with ``_created`` samples
disabled, so both expositions hold the same samples.

Then, in one run, each repeat renders:

- ``taskforce``: ``MetricSet.render()``, written from the children's cached text;
- ``aioprometheus``: its own text formatter on the registry view of the same set;
- ``prometheus_client``: ``generate_latest(registry)`` on the mirror.

Between repeats one observation is added to each side, so no renderer can serve
a stale byte string. The cold render (the first scrape of a freshly filled set) is
shown apart. The stall table runs one scrape on an event loop next to a ticker task
and prints the longest gap between two ticks (how long the loop could serve
nothing) next to the render time: ``render()`` holds the loop for the whole
render, ``render_async()`` (what ``/metrics`` uses) yields between slices. Finally
our output is fed to ``promtool check metrics`` (stdin) when ``promtool`` is on PATH.

Reading the output: ``median ms`` per full render and ``vs generate_latest`` (below
1.00x is faster). The ``VERDICT`` lines compare against issue 8: a cold render at
most 0.1x of ``generate_latest``, a stall under 5 ms cold or warm, and a promtool
check that reports nothing. Verdicts are printed, never asserted: the script exits 0.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import _bench
import prometheus_client
from aioprometheus.collectors import Counter, Gauge, Histogram

from taskforce.observability import MetricSet
from taskforce.observability.metrics import _catalog as cat
from taskforce.observability.metrics._aioprometheus import reference_text

TARGET_SERIES = 20_000
TARGET_RATIO = 0.1
TARGET_STALL_MS = 5.0
MAX_LABEL_VALUES = 10_000
_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def hostile(kind: str, i: int) -> str:
    """Value number ``i`` of a free-form label; every sixth one of each kind is hostile."""
    shapes = (
        f"{kind}_{i}",
        f'{kind} "quoted" {i}',
        f"C:\\{kind}\\{i}\\",
        f"{kind}\nsecond line {i}",
        f"{kind}-ünïcödé-日本語-🚀-{i}",
        f"{i}-{kind}-" + "x" * 10_000,
    )
    return shapes[i % len(shapes)]


def sample_lines(metrics: MetricSet) -> int:
    """Count the time series (sample lines) the registry renders."""
    total = 0
    for collector in metrics.registry.get_all():
        per_series = 1
        if isinstance(collector, Histogram):
            per_series = len(list(collector.upper_bounds)) + 2
            if float("inf") not in collector.upper_bounds:
                per_series += 1
        total += per_series * len(collector.values)
    return total


def tool_call(metrics: MetricSet, tool: str, agent: str, status: str, seconds: float) -> None:
    """Count a tool call and observe its duration."""
    metrics.counter(cat.TOOL_CALLS).labels(tool, agent, status).inc()
    metrics.histogram(cat.TOOL_DURATION).labels(tool, agent).observe(seconds)


def fill(metrics: MetricSet, target: int) -> int:
    """Record tool calls, failures and LLM requests with distinct values until ``target``."""
    i = 0
    while sample_lines(metrics) < target:
        for _ in range(20):
            agent = ("lean", "legacy")[i % 2]
            tool = hostile("tool", i)
            tool_call(metrics, tool, agent, "success", 0.0001 * (i % 50))
            if i % 3 == 0:
                tool_call(metrics, tool, agent, "error", 0.002)
                failure = (tool, agent, hostile("Error", i // 3))
                metrics.counter(cat.TOOL_FAILURES).labels(*failure).inc()
            if i % 4 == 0:
                model = hostile("model", i // 4)
                labels = (model, agent, "complete")
                metrics.counter(cat.LLM_REQUESTS).labels(*labels, "success").inc()
                metrics.histogram(cat.LLM_DURATION).labels(*labels).observe(0.05 * (i % 9))
                tokens = metrics.counter(cat.LLM_TOKENS)
                tokens.labels(model, agent, "input").inc(100 + i)
                tokens.labels(model, agent, "output").inc(10 + i)
            i += 1
    return i


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        out.append(_UNESCAPES.get(next(chars, ""), "") if char == "\\" else char)
    return "".join(out)


def mirror(metrics: MetricSet) -> prometheus_client.CollectorRegistry:
    """Build every series of ``metrics.registry`` in a fresh prometheus_client registry."""
    registry = prometheus_client.CollectorRegistry()
    for collector in metrics.registry.get_all():
        series = collector.get_all()
        if not series:
            continue
        names = sorted(series[0][0])
        doc = collector.doc
        if isinstance(collector, Histogram):
            bounds = [float(b) for b in collector.upper_bounds]
            metric: Any = prometheus_client.Histogram(
                collector.name, doc, names, registry=registry, buckets=bounds
            )
        elif isinstance(collector, Counter):
            metric = prometheus_client.Counter(collector.name, doc, names, registry=registry)
        elif isinstance(collector, Gauge):
            metric = prometheus_client.Gauge(collector.name, doc, names, registry=registry)
        else:
            continue
        value: Any
        for labels, value in series:
            values = {k: _unescape(str(v)) for k, v in labels.items()}
            child = metric.labels(**values) if values else metric
            if isinstance(collector, Histogram):
                if value["count"]:
                    child.observe(value["sum"] / value["count"])
            elif isinstance(collector, Counter):
                child.inc(value)
            else:
                child.set(value)
    return registry


def promtool_check(text: bytes) -> tuple[bool | None, str]:
    """Run ``promtool check metrics`` on ``text``; (None, why) when it cannot run."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return None, "promtool not on PATH"
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60, check=False
    )
    report = (done.stdout + done.stderr).decode("utf-8", "replace").strip()
    ok = done.returncode == 0 and not report
    lines = report.splitlines()
    shown = "; ".join(lines[:3]) + (f" (+{len(lines) - 3} more)" if len(lines) > 3 else "")
    return ok, f"exit {done.returncode}, " + (f"said: {shown}" if report else "no findings")


def _nudges(metrics: MetricSet, prom: prometheus_client.CollectorRegistry) -> Iterator[None]:
    """Change one value on each side before every repeat (renderers must not serve stale text)."""
    histogram: Any = prom._names_to_collectors["taskforce_tool_duration_seconds"]
    child = histogram.labels(agent_type="lean", tool_name="tool_0")
    n = 0
    while True:
        tool_call(metrics, "tool_0", "lean", "success", 0.001 * (n % 7))
        child.observe(0.001 * (n % 7))
        n += 1
        yield


async def _stall_ms(render: Callable[[], Awaitable[bytes]]) -> tuple[float, float]:
    """Run one render while a ticker task runs; return (longest loop stall, render) in ms.

    The ticker yields to the loop in a tight cycle; the longest gap between two of its
    ticks while the render is in flight is how long the loop could not serve anything.
    """
    stop = False
    longest = 0.0

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    await render()
    took = time.perf_counter() - started
    stop = True
    await task
    return longest * 1e3, took * 1e3


def stall_rows(config: _bench.Config, target: int) -> list[list[str]]:
    """Stall and render time of one scrape, cold (fresh set) and warm, sync and sliced."""
    rows = []
    for name, sliced in (("render() (one piece)", False), ("render_async() (slices)", True)):
        cold: list[tuple[float, float]] = []
        warm: list[tuple[float, float]] = []
        for _ in range(max(3, config.repeats // 3)):
            fresh = MetricSet(max_label_values=MAX_LABEL_VALUES)
            fill(fresh, target)

            async def one(metrics: MetricSet = fresh, is_sliced: bool = sliced) -> bytes:
                return await metrics.render_async() if is_sliced else metrics.render()

            cold.append(asyncio.run(_stall_ms(one)))
            warm.append(asyncio.run(_stall_ms(one)))
        for label, runs in (("cold", cold), ("warm", warm)):
            stall = statistics.median(r[0] for r in runs)
            took = statistics.median(r[1] for r in runs)
            rows.append(
                [name, label, f"{stall:.2f}", f"{max(r[0] for r in runs):.2f}", f"{took:.2f}"]
            )
    return rows


def main() -> None:
    config = _bench.parse_args("scrape render benchmark", repeats=15)
    _bench.print_environment("scrape: rendering a registry of ~20,000 series")
    metrics = MetricSet(max_label_values=MAX_LABEL_VALUES)
    target = TARGET_SERIES if not config.quick else 500
    distinct = fill(metrics, target)
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    prom = mirror(metrics)

    ours = metrics.render()
    theirs = prometheus_client.generate_latest(prom)

    def count(text: bytes) -> int:
        return sum(1 for line in text.split(b"\n") if line and not line.startswith(b"#"))

    print(
        f"series (sample lines): taskforce {count(ours)}, prometheus_client {count(theirs)}; "
        f"{distinct} tool names, {distinct // 3} error types, {distinct // 4} models, "
        f"1 in 6 of each hostile; "
        f"{len(ours) / 1024:.0f} KiB; repeats={config.repeats}"
    )

    candidates: dict[str, Callable[[], Any]] = {
        "taskforce": metrics.render,
        "aioprometheus": lambda: reference_text(metrics.registry),
        "prometheus_client": lambda: prometheus_client.generate_latest(prom),
    }
    samples = {name: _bench.Samples(name) for name in candidates}
    nudge = _nudges(metrics, prom)
    for _ in range(config.repeats):
        next(nudge)
        for name, render in candidates.items():
            samples[name].per_call_ns.append(_bench.time_once(render))

    reference = samples["prometheus_client"].median
    rows = [
        [
            name,
            f"{s.median / 1e6:.2f}",
            f"{s.minimum / 1e6:.2f}",
            _bench.ratio(s.median, reference),
        ]
        for name, s in samples.items()
    ]
    print()
    _bench.print_table(["renderer", "median ms", "min ms", "vs generate_latest"], rows)

    colds = []
    for _ in range(max(3, config.repeats // 3)):
        fresh = MetricSet(max_label_values=MAX_LABEL_VALUES)
        fill(fresh, target)
        colds.append(_bench.time_once(fresh.render))
    cold = statistics.median(colds)
    cold_ratio = cold / reference
    print(
        f"\ntaskforce cold render (first scrape of a fresh set): {cold / 1e6:.2f} ms, "
        f"{_bench.ratio(cold, reference)} of generate_latest"
    )

    print("\nevent-loop stall during one scrape (longest gap of a ticker task):")
    stalls = stall_rows(config, target)
    headers = ["render", "cache", "stall ms (median)", "stall ms (max)", "render ms"]
    _bench.print_table(headers, stalls)

    ok, detail = promtool_check(metrics.render())
    print(f"promtool check metrics on our output: {detail}")
    _, aio_detail = promtool_check(reference_text(metrics.registry))
    print(f"promtool check metrics on aioprometheus' output (info): {aio_detail}")

    print()
    _bench.verdict(
        "scrape render time",
        cold_ratio <= TARGET_RATIO,
        f"cold {cold / 1e6:.2f} ms, {cold_ratio:.2f}x of generate_latest "
        f"(target <= {TARGET_RATIO}x)",
    )
    # the median over runs: the max also holds whatever the OS scheduler took from us
    worst = max(float(row[2]) for row in stalls if row[0].startswith("render_async"))
    _bench.verdict(
        "scrape stall",
        worst < TARGET_STALL_MS,
        f"stall {worst:.2f} ms with render_async, the worse of cold and warm "
        f"(median over runs; target < {TARGET_STALL_MS:g} ms)",
    )
    if ok is None:
        print(f"VERDICT promtool check metrics: SKIP ({detail})")
    else:
        _bench.verdict("promtool check metrics", ok, detail)


if __name__ == "__main__":
    main()
