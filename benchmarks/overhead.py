"""Added cost per call of the metrics aspect, against the same updates made by other libraries.

What is measured, in one run on one event loop, for two calls kept fixed:

- a no-op tool: ``await tool.execute()`` returning ``{"success": True, "output": 1}``;
- a scripted LLM call: ``await ScriptedLLMProvider().complete(messages, tools=[...])``
  with a 10-message context (system, mission, four tool-call/tool-result pairs).

Each call is made, in a tight ``for`` loop inside one coroutine:

- ``plain``: on the bare object (the baseline: loop, await and the call itself);
- ``taskforce``: through the proxy the container weaves in (``ToolProxy`` handed
  out by the registry proxy, ``LLMProviderProxy``) writing to a real ``MetricSet``;
- ``proxy only``: the same proxies writing to a stand-in whose families hand out
  children that do nothing, which shows the proxies' own share of the added cost;
- ``aioprometheus``: through a hand-written wrapper doing the same work (timing,
  outcome, tokens, context pack size) with stock ``Counter.inc``/``add`` and
  ``Histogram.observe`` and label dicts, on a fresh aioprometheus ``Registry``;
- ``prometheus_client``: the same wrapper with ``prometheus_client`` children,
  ``labels(...)`` resolved once per label set and cached, then ``inc``/``observe``;
- ``opentelemetry``: the same wrapper with the OpenTelemetry SDK (``MeterProvider``
  with an ``InMemoryMetricReader``), ``counter.add``/``histogram.record`` with attributes.

All candidates write the catalog's label sets (``agent_type="lean"``, as inside a
mission) and the catalog's buckets. A tool call updates 2 series (calls, duration),
an LLM call 7 (requests, latency, input and output tokens, context messages and
tokens). Each round times every candidate once, rounds are repeated, and the
table shows the median (and min) per call; "added" is the per-round difference
from ``plain``, so the loop and the call itself cancel out. A second table times
the metric updates alone (no call, no proxy), which splits the added cost into
the proxy's share and the metric store's share.

Reading the output: ``added us`` is what instrumentation costs per call;
``vs prom`` is that cost over the prometheus_client equivalent's (below 1.00x is
cheaper). The ``VERDICT`` lines compare against the targets of issue 8: at the
median, at most 1.5 us per tool call and 3.5 us per LLM call, and below
prometheus_client. Verdicts are printed, never asserted: the script exits 0.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _bench
from _baselines import (
    AioLLM,
    AioStock,
    AioTool,
    OtelInstruments,
    OtelLLM,
    OtelTool,
    PromChildren,
    PromLLM,
    PromTool,
)

from taskforce.core.interfaces.tools import ToolResult
from taskforce.infrastructure.llm import ScriptedLLMProvider
from taskforce.infrastructure.state import FileStateStore
from taskforce.infrastructure.tools import ToolRegistry
from taskforce.observability import MetricSet, mission_scope

TOOL_TARGET_US = 1.5
LLM_TARGET_US = 3.5
AGENT_TYPE = "lean"
MODEL = "scripted-1"
BASELINES = ("aioprometheus", "prometheus_client", "opentelemetry")

# The catalog's buckets, used when the MetricSet's own cannot be read (see catalog_buckets).
_FALLBACK_BUCKETS: dict[str, tuple[float, ...]] = {
    "taskforce_tool_duration_seconds": (
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        30.0, 60.0,
    ),
    "taskforce_llm_request_duration_seconds": (
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    ),
    "taskforce_context_pack_messages": (1, 2, 4, 8, 16, 32, 64, 128, 256),
    "taskforce_context_pack_tokens": tuple(float(4**i) for i in range(1, 11)),
}  # fmt: skip


# ---------------------------------------------------------------- the calls measured


class NoopTool:
    """The tool of the tool benchmark: does nothing, succeeds."""

    name = "noop"
    description = "Does nothing and succeeds."
    parameters_schema: dict[str, Any] = {"type": "object", "properties": {}}

    async def execute(self, **params: Any) -> ToolResult:
        return {"success": True, "output": 1}


def ten_messages() -> list[dict[str, Any]]:
    """A fixed 10-message conversation: the scripted provider answers with the 5th tool call."""
    mission = "Add numbers five times.\n" + "\n".join(
        f'tool:calculator {{"expression": "{i} + {i}"}}' for i in range(5)
    )
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a careful agent. Use tools when they help."},
        {"role": "user", "content": mission},
    ]
    for i in range(4):
        call = {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": "calculator", "arguments": f'{{"expression": "{i} + {i}"}}'},
        }
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": f"call_{i}", "content": str(2 * i)})
    return messages


CALCULATOR_SCHEMA = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}


# ------------------------------------------------------------ the taskforce candidate


class _NullChild:
    """A child that records nothing."""

    # CounterPair adds to its two children's values directly; the sum is never read.
    value: float = 0

    def inc(self, amount: float = 1) -> None:
        return None

    def dec(self, amount: float = 1) -> None:
        return None

    def set(self, value: float) -> None:
        return None

    def observe(self, value: float) -> None:
        return None


class _NullFamily:
    """A family that hands out one child that records nothing, for any labels."""

    _CHILD = _NullChild()

    def labels(self, *values: Any) -> _NullChild:
        return self._CHILD

    def is_cached(self, *values: Any) -> bool:
        return True


class NullMetrics(MetricSet):
    """A ``MetricSet`` whose families record nothing: isolates the proxy's own cost."""

    def __init__(self) -> None:
        super().__init__()
        self._is_null = True

    def _typed(self, spec: Any, kind: Any) -> Any:
        if getattr(self, "_is_null", False):
            return _NullFamily()
        return super()._typed(spec, kind)


def catalog_buckets(metrics: Any) -> tuple[dict[str, tuple[float, ...]], str]:
    """Read the histograms' buckets off the MetricSet's registry, else use the fallback."""
    found: dict[str, tuple[float, ...]] = {}
    for name in _FALLBACK_BUCKETS:
        try:
            found[name] = tuple(float(b) for b in metrics.registry.get(name).upper_bounds)
        except Exception:
            break
    if len(found) == len(_FALLBACK_BUCKETS):
        return found, "read from MetricSet.registry"
    return dict(_FALLBACK_BUCKETS), "fallback copy (MetricSet not readable)"


def taskforce_objects(
    metrics: Any, tool: NoopTool, provider: ScriptedLLMProvider, state_dir: Path
) -> tuple[Any, Any]:
    """Weave like ``build_container`` does and return (observed tool, observed provider)."""
    from taskforce.observability import weave

    llm, tools, _state = weave(
        llm_provider=provider,
        tool_registry=ToolRegistry([tool]),
        state_store=FileStateStore(state_dir),
        metrics=metrics,
    )
    return tools.get(tool.name), llm


def taskforce_candidates(
    tool: NoopTool, provider: ScriptedLLMProvider, state_dir: Path
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Build the MetricSet and the observed objects; (None, {}, {}) when a piece is missing."""
    try:
        from taskforce.observability import MetricSet, ToolProxy, observe_llm_provider

        metrics = MetricSet(max_label_values=100)
        observed_tool, observed_llm = taskforce_objects(metrics, tool, provider, state_dir)
        null = NullMetrics()
        proxy_tool = ToolProxy(tool, null)  # type: ignore[arg-type]  # duck-typed MetricSet
        proxy_llm = observe_llm_provider(provider, null)  # type: ignore[arg-type]  # duck-typed
    except Exception as exc:
        _bench.unavailable("taskforce (MetricSet / proxies)", exc)
        return None, {}, {}
    return (
        metrics,
        {"taskforce": observed_tool, "proxy only": proxy_tool},
        {"taskforce": observed_llm, "proxy only": proxy_llm},
    )


# ------------------------------------------------------------------------ measuring


async def measure(
    candidates: dict[str, Callable[[], Awaitable[Any]]],
    iterations: dict[str, int],
    rounds: int,
) -> dict[str, _bench.Samples]:
    """Time every candidate once per round, in turn, for ``rounds`` rounds."""
    samples = {name: _bench.Samples(name) for name in candidates}
    for name, call in candidates.items():  # warm-up: caches, first series, bytecode
        await _bench.time_async_loop(call, max(50, iterations[name] // 20))
    for _ in range(rounds):
        for name, call in candidates.items():
            samples[name].per_call_ns.append(await _bench.time_async_loop(call, iterations[name]))
    return samples


def measure_sync(
    candidates: dict[str, Callable[[], Any]], iterations: dict[str, int], rounds: int
) -> dict[str, _bench.Samples]:
    """Like :func:`measure` for plain functions."""
    samples = {name: _bench.Samples(name) for name in candidates}
    for name, call in candidates.items():
        _bench.time_sync_loop(call, max(50, iterations[name] // 20))
    for _ in range(rounds):
        for name, call in candidates.items():
            samples[name].per_call_ns.append(_bench.time_sync_loop(call, iterations[name]))
    return samples


def report(title: str, samples: dict[str, _bench.Samples]) -> dict[str, float]:
    """Print one table; return each candidate's median added nanoseconds."""
    plain = samples["plain"]
    added = {name: _bench.added_ns(s, plain) for name, s in samples.items()}
    prom = added.get("prometheus_client", (0.0, 0.0))[0]
    rows = []
    for name, s in samples.items():
        median_added, min_added = added[name]
        is_plain = name == "plain"
        rows.append(
            [
                name,
                f"{s.median / 1000:.3f}",
                f"{s.minimum / 1000:.3f}",
                "-" if is_plain else f"{median_added / 1000:.3f}",
                "-" if is_plain else f"{min_added / 1000:.3f}",
                "-" if is_plain else _bench.ratio(median_added, prom),
            ]
        )
    print(f"\n-- {title} --")
    headers = ["candidate", "median us", "min us", "added us", "added min", "vs prom"]
    _bench.print_table(headers, rows)
    return {name: value[0] for name, value in added.items()}


def report_updates(title: str, samples: dict[str, _bench.Samples]) -> None:
    """Print the metric-updates-only table (absolute cost, no baseline to subtract)."""
    prom = samples["prometheus_client"].median
    rows = [
        [name, f"{s.median / 1000:.3f}", f"{s.minimum / 1000:.3f}", _bench.ratio(s.median, prom)]
        for name, s in samples.items()
    ]
    print(f"\n-- {title} --")
    _bench.print_table(["updates by", "median us", "min us", "vs prom"], rows)


def tool_verdict(added: dict[str, float], target_us: float, what: str) -> None:
    ours = added.get("taskforce")
    if ours is None:
        _bench.verdict(what, False, "taskforce candidate not measured")
        return
    prom = added["prometheus_client"]
    ok = ours <= target_us * 1000 and ours < prom
    detail = (
        f"added {ours / 1000:.3f} us (target <= {target_us:g} us), "
        f"prometheus_client {prom / 1000:.3f} us, ratio {_bench.ratio(ours, prom)}"
    )
    _bench.verdict(what, ok, detail)


def iterations(config: _bench.Config, names: Any, default: int, otel: int) -> dict[str, int]:
    """Loop length per candidate; the OpenTelemetry SDK is ~10x slower, so it gets fewer."""
    counts = {name: config.iterations(default) for name in names}
    counts["opentelemetry"] = config.iterations(otel)
    return counts


def update_candidates(
    metrics: Any, tool_objects: dict[str, Any], llm_objects: dict[str, Any]
) -> tuple[dict[str, Callable[[], Any]], dict[str, Callable[[], Any]]]:
    """The metric updates of one tool call and of one LLM call, without the call or a proxy."""
    update_tool: dict[str, Callable[[], Any]] = {}
    update_llm: dict[str, Callable[[], Any]] = {}
    if metrics is not None:
        from taskforce.observability.metrics import _catalog as cat

        calls, duration = metrics.counter(cat.TOOL_CALLS), metrics.histogram(cat.TOOL_DURATION)
        requests, latency = metrics.counter(cat.LLM_REQUESTS), metrics.histogram(cat.LLM_DURATION)
        tokens = metrics.counter(cat.LLM_TOKENS)
        pack_messages = metrics.histogram(cat.CONTEXT_PACK_MESSAGES)
        pack_tokens = metrics.histogram(cat.CONTEXT_PACK_TOKENS)

        def ours_tool() -> None:
            # what ToolProxy writes per call: the family lookups included
            calls.labels("noop", AGENT_TYPE, "success").inc()
            duration.labels("noop", AGENT_TYPE).observe(1e-6)

        def ours_llm() -> None:
            # what LLMProviderProxy writes per request
            requests.labels(MODEL, AGENT_TYPE, "complete", "success").inc()
            latency.labels(MODEL, AGENT_TYPE, "complete").observe(1e-5)
            pack_messages.labels(AGENT_TYPE).observe(10)
            pack_tokens.labels(AGENT_TYPE).observe(120)
            tokens.labels(MODEL, AGENT_TYPE, "input").inc(120)
            tokens.labels(MODEL, AGENT_TYPE, "output").inc(12)

        update_tool["taskforce"], update_llm["taskforce"] = ours_tool, ours_llm
    for name in BASELINES:
        tool_wrapper, llm_wrapper = tool_objects[name], llm_objects[name]

        def theirs_tool(w: Any = tool_wrapper) -> None:
            w._record("noop", AGENT_TYPE, "success", 1e-6, None)

        def theirs_llm(w: Any = llm_wrapper) -> None:
            w._record_request(MODEL, AGENT_TYPE, "success", 1e-5)
            w._record_tokens(MODEL, AGENT_TYPE, 120, 12)
            w._record_pack(AGENT_TYPE, 10, 120)

        update_tool[name], update_llm[name] = theirs_tool, theirs_llm
    return update_tool, update_llm


async def run(config: _bench.Config, state_dir: Path) -> None:
    tool, provider = NoopTool(), ScriptedLLMProvider(model=MODEL)
    messages, tools_arg = ten_messages(), [CALCULATOR_SCHEMA]
    metrics, ours_tool, ours_llm = taskforce_candidates(tool, provider, state_dir)
    buckets, origin = catalog_buckets(metrics)
    print(f"buckets: {origin}; agent_type={AGENT_TYPE!r}; rounds={config.repeats}")

    aio, prom, otel = AioStock(buckets), PromChildren(buckets), OtelInstruments(buckets)
    tool_objects: dict[str, Any] = {
        "plain": tool,
        **ours_tool,
        "aioprometheus": AioTool(tool, aio),
        "prometheus_client": PromTool(tool, prom),
        "opentelemetry": OtelTool(tool, otel),
    }
    llm_objects: dict[str, Any] = {
        "plain": provider,
        **ours_llm,
        "aioprometheus": AioLLM(provider, aio),
        "prometheus_client": PromLLM(provider, prom),
        "opentelemetry": OtelLLM(provider, otel),
    }

    def tool_call(obj: Any) -> Callable[[], Awaitable[Any]]:
        return lambda: obj.execute()

    def llm_call(obj: Any) -> Callable[[], Awaitable[Any]]:
        return lambda: obj.complete(messages, tools=tools_arg)

    tool_samples = await measure(
        {name: tool_call(obj) for name, obj in tool_objects.items()},
        iterations(config, tool_objects, 100_000, 25_000),
        config.repeats,
    )
    tool_added = report("tool call: await tool.execute() (no-op tool), per call", tool_samples)
    llm_samples = await measure(
        {name: llm_call(obj) for name, obj in llm_objects.items()},
        iterations(config, llm_objects, 15_000, 5_000),
        config.repeats,
    )
    llm_added = report(
        "LLM call: await provider.complete(10 messages, tools=[1]) (scripted), per call",
        llm_samples,
    )

    update_tool, update_llm = update_candidates(metrics, tool_objects, llm_objects)
    report_updates(
        "metric updates alone, tool call (2 series), per call",
        measure_sync(update_tool, iterations(config, update_tool, 40_000, 10_000), config.repeats),
    )
    report_updates(
        "metric updates alone, LLM call (7 series), per call",
        measure_sync(update_llm, iterations(config, update_llm, 15_000, 4_000), config.repeats),
    )
    otel.provider.shutdown()

    print()
    tool_verdict(tool_added, TOOL_TARGET_US, "tool call added cost")
    tool_verdict(llm_added, LLM_TARGET_US, "LLM call added cost")


async def run_in_mission(config: _bench.Config) -> None:
    # Inside a mission, as the agents call tools and models: agent_type="lean" on every series.
    with (
        tempfile.TemporaryDirectory(prefix="taskforce-bench-") as tmp,
        mission_scope("bench-session", "bench-mission", AGENT_TYPE),
    ):
        await run(config, Path(tmp))


def main() -> None:
    config = _bench.parse_args(__doc__.splitlines()[0] if __doc__ else "overhead")
    _bench.print_environment("overhead: added cost per instrumented call")
    asyncio.run(run_in_mission(config))


if __name__ == "__main__":
    main()
