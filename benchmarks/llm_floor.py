"""What observing one LLM call costs inside a running mission, rung by rung.

What is measured: the throughput run of ``throughput.py`` (same mission, scripted
provider with no latency, file state in a temporary directory, metrics off in
every container) with only the LLM provider wrapped, in executors that differ
in what the wrapper does per ``complete``/``generate`` call:

- ``forward``: an ``ObservingProxy`` (the real proxies' wrapt base) that only
  awaits the wrapped call (``_forwarding.ForwardingProvider``);
- ``time``: plus two ``perf_counter`` reads, the duration appended to a list;
- ``read``: plus reading what the metrics label and count from the result
  (``model``, ``success``, ``usage`` tokens) and the mission's ``agent_type``;
- ``extract``: plus the context pack (messages, content characters), appended as
  one row of plain values: everything the LLM metrics need, with nothing
  aggregated;
- ``proxy``: the real ``LLMProviderProxy`` writing to a ``MetricSet``.

A legacy mission makes 6 LLM calls (1 ``generate``, 5 ``complete``); a lean one 3.
The rungs are cumulative, so each row's difference from the one above is what
that step costs in place (in a tight loop the same code runs 2-4x faster: here it
runs between the agent's and the provider's own code, with cold caches).

Reading the output: per flow and executor, missions per CPU-second of the
event-loop thread (``throughput.run_batch``; median of
interleaved rounds) and the median paired slowdown against ``off`` in percent;
``off (A/A)`` is the noise floor. Figures only, no verdict: the script exits 0.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from time import perf_counter
from typing import Any

import _bench
from _forwarding import ForwardingProvider
from throughput import FLOWS, make_settings, run_batch, run_in_scratch, slowdown

from taskforce.application.container import build_container
from taskforce.application.executor import AgentExecutor
from taskforce.config import Settings
from taskforce.observability import MetricSet, current_agent_type, instrument
from taskforce.observability.proxies._base import ObservingProxy

_ROWS: list[Any] = []  # where the rungs put what they extracted; cleared as it fills


def _keep(row: Any) -> None:
    _ROWS.append(row)
    if len(_ROWS) >= 256:
        _ROWS.clear()


class _Time(ObservingProxy[Any]):
    async def complete(self, *args: Any, **kwargs: Any) -> Any:
        started = perf_counter()
        result = await self.__wrapped__.complete(*args, **kwargs)
        _keep(perf_counter() - started)
        return result

    async def generate(self, *args: Any, **kwargs: Any) -> Any:
        started = perf_counter()
        result = await self.__wrapped__.generate(*args, **kwargs)
        _keep(perf_counter() - started)
        return result


def _read(result: Any, duration: float) -> tuple[Any, ...]:
    usage = result.get("usage") or {}
    status = "success" if result.get("success", True) else "error"
    return (
        duration,
        status,
        result.get("model"),
        current_agent_type(),
        usage.get("prompt_tokens") or 0,
        usage.get("completion_tokens") or 0,
    )


class _Read(ObservingProxy[Any]):
    async def complete(self, *args: Any, **kwargs: Any) -> Any:
        started = perf_counter()
        result = await self.__wrapped__.complete(*args, **kwargs)
        _keep(_read(result, perf_counter() - started))
        return result

    async def generate(self, *args: Any, **kwargs: Any) -> Any:
        started = perf_counter()
        result = await self.__wrapped__.generate(*args, **kwargs)
        _keep(_read(result, perf_counter() - started))
        return result


class _Extract(ObservingProxy[Any]):
    async def complete(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
        started = perf_counter()
        result = await self.__wrapped__.complete(messages, *args, **kwargs)
        row = _read(result, perf_counter() - started)
        chars = 0
        for message in messages:
            content = message.get("content")
            if content:
                chars += len(content)
        _keep((*row, len(messages), (chars + 3) // 4))
        return result

    async def generate(self, prompt: str, *args: Any, **kwargs: Any) -> Any:
        started = perf_counter()
        result = await self.__wrapped__.generate(prompt, *args, **kwargs)
        _keep((*_read(result, perf_counter() - started), 1, (len(prompt) + 3) // 4))
        return result


_RUNGS: dict[str, Any] = {
    "off": None,
    "off (A/A)": None,
    "forward": ForwardingProvider,
    "time": _Time,
    "read": _Read,
    "extract": _Extract,
    "proxy": instrument,
}


def make_executor(settings: Settings, rung: str) -> Any:
    """An executor as ``build_container`` builds it with metrics off, its provider wrapped."""
    plain = build_container(settings)
    llm: Any = plain.llm_provider
    wrap = _RUNGS[rung]
    if wrap is not None:
        llm = wrap(llm, MetricSet())
    return AgentExecutor(llm, plain.tool_registry, plain.state_store, agent_settings=settings.agent)


async def measure(config: _bench.Config, root: Path) -> None:
    executors = {
        rung: make_executor(make_settings(root / str(index), enabled=False), rung)
        for index, rung in enumerate(_RUNGS)
    }
    batch = config.iterations(50)
    cpu: dict[tuple[str, str], list[float]] = {(f, n): [] for f in FLOWS for n in executors}
    names = list(executors)
    for flow in FLOWS:  # warm-up
        for executor in executors.values():
            await run_batch(executor, flow, batch)
    for round_no in range(config.repeats):
        shift = round_no % len(names)
        order = names[shift:] + names[:shift]
        for flow in FLOWS:
            for name in order:
                cpu[(flow, name)].append((await run_batch(executors[name], flow, batch))[1])
    rows = []
    for flow in FLOWS:
        off = cpu[(flow, "off")]
        for name in names:
            runs = cpu[(flow, name)]
            # paired per round, like the slowdown: CPU microseconds per mission added
            added = statistics.median(1e6 / r - 1e6 / o for r, o in zip(runs, off, strict=True))
            is_off = name == "off"
            rows.append(
                [
                    flow,
                    name,
                    f"{statistics.median(runs):.0f}",
                    "-" if is_off else f"{slowdown(runs, off):+.2f}%",
                    "-" if is_off else f"{added:+.1f}",
                ]
            )
    print(f"missions per batch: {batch}; rounds: {config.repeats} (interleaved, order rotated)\n")
    headers = ["flow", "llm wrapper", "missions/CPU-s", "slower (CPU)", "us/mission added"]
    _bench.print_table(headers, rows)


def main() -> None:
    config = _bench.parse_args("cost of observing an LLM call inside a mission", repeats=21)
    _bench.print_environment("llm_floor: what each step of observing an LLM call costs in place")
    run_in_scratch(measure, config)


if __name__ == "__main__":
    main()
