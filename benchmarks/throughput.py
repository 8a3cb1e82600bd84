"""Mission throughput with metrics on and off: what the whole aspect costs a running service.

What is measured: three containers from ``build_container(Settings(...))``:
metrics on, metrics off, and a second metrics-off one (an A/A control whose
difference from the first is the noise floor of the measurement); and a fourth
executor built the same way whose parts sit behind proxies that only forward
(``_forwarding.py``: same wrapt base class, same objects wrapped, no timing, no
recording), which shows what the indirection alone costs; and two peers
(``_peers.py``): executors built the same way with metrics off whose parts are
wrapped by hand-written wrappers that time and classify what our proxies do and
write the same metric set to pre-bound ``prometheus_client`` children or to
OpenTelemetry SDK instruments. Scripted provider with no latency; state and
workspace in a temporary directory that is deleted afterwards (``/dev/shm`` when
there is one and ``$TMPDIR`` is unset: the state store fsyncs every save, and disk
latency would drown the difference).
Each runs the same mission, two ``calculator`` tool directives then an answer,
sequentially through ``container.executor.execute_mission(mission, agent_type=...)``
on one event loop, for both flows (``lean``: native tool calls; ``legacy``: plan,
then JSON actions). Every mission is a new session, so each saves one fresh
state file and the per-mission cost stays constant across the run.

Rounds are interleaved, the order of the executors rotated every round, so drift
of the machine cancels; each of the 101 rounds runs one batch of 20 missions per
container and flow (short rounds: the difference from ``off`` is paired within
each round, and many short pairs are less noisy than a few long ones), timed
in wall-clock time and in process CPU time (``time.process_time``, which
counts the state store's worker threads too and is blind to neighbours
competing for the cores). Logging is set to ``critical`` and written to
``os.devnull``, so the difference is the metrics alone (with info-level logs
the metrics' share would only be smaller).

Reading the output: ``missions/s`` (wall) and ``missions/CPU-s`` per flow and
executor; ``slower``: the median over rounds of the paired per-round slowdown
against ``off``, in percent (positive: slower than metrics off); ``CPU us/mission
added``: the same pairing as CPU microseconds per mission. The scrape of the
metrics-on container must count every mission it ran (printed as a check). A
second table runs on and off at 0 ms and 1 ms of scripted LLM latency (figures
only). The ``VERDICT`` lines per flow compare the CPU added per mission against
issue 8: at most 0.5x of the prometheus_client peer and 0.15x of the
OpenTelemetry one. Verdicts are printed, never asserted: the script exits 0.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _bench
from _forwarding import forwarding_executor
from _peers import OtelSink, PromSink, peer_executor

from taskforce.application.container import Container, build_container
from taskforce.config import LLMSettings, MetricsSettings, Settings
from taskforce.observability import configure_logging

# Many short rounds rather than a few long ones: a round's CPU time is noisy (the state
# store's threads, the neighbours of a shared machine), and each paired difference is
# then taken over a short stretch in which both executors met the same machine.
BATCH = 20
TARGET_VS_PROM = 0.5
TARGET_VS_OTEL = 0.15
LATENCY_MS = (0, 1)
FLOWS = ("lean", "legacy")
MISSION = (
    "Work out two sums, then report.\n"
    'tool:calculator {"expression": "17 + 25"}\n'
    'tool:calculator {"expression": "6 * 7"}\n'
    "Both sums are done."
)
_MISSIONS_LINE = re.compile(
    rb'^taskforce_missions_total\{agent_type="(\w+)",status="(\w+)"\} ([0-9.e+]+)$', re.M
)


def scratch_dir() -> str | None:
    """Where the temporary state and workspace go: ``$TMPDIR`` when set, else RAM.

    The state store fsyncs every save, and disk latency would drown the difference
    being measured, so ``/dev/shm`` is preferred; else the default temp dir.
    """
    if os.environ.get("TMPDIR"):
        return None  # tempfile honours it
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def make_settings(root: Path, *, enabled: bool, latency_ms: int = 0) -> Settings:
    """Settings whose state and workspace live under ``root``."""
    label = "on" if enabled else "off"
    (root / label / "workspace").mkdir(parents=True)
    return Settings(
        llm=LLMSettings(provider="scripted", scripted_latency_ms=latency_ms),
        metrics=MetricsSettings(enabled=enabled),
        state_dir=root / label / "state",
        workspace_dir=root / label / "workspace",
    )


def make_container(root: Path, *, enabled: bool, latency_ms: int = 0) -> Container:
    """A container whose state and workspace live under ``root``."""
    return build_container(make_settings(root, enabled=enabled, latency_ms=latency_ms))


async def run_batch(executor: Any, flow: str, missions: int) -> tuple[float, float]:
    """Run ``missions`` missions of ``flow`` back to back.

    Returns:
        Missions per second of wall-clock time, and per second of process CPU time.
    """
    wall, cpu = time.perf_counter_ns(), time.process_time_ns()
    for _ in range(missions):
        result = await executor.execute_mission(MISSION, agent_type=flow)
        if result.status != "completed":
            raise RuntimeError(f"benchmark mission did not complete: {result!r}")
    wall, cpu = time.perf_counter_ns() - wall, time.process_time_ns() - cpu
    return missions / (wall / 1e9), missions / (max(cpu, 1) / 1e9)


def counted_missions(container: Container) -> dict[str, float]:
    """Missions per flow in the container's own scrape (all statuses)."""
    if container.metrics is None:
        return {}
    counted: dict[str, float] = {}
    for agent_type, _status, value in _MISSIONS_LINE.findall(container.metrics.render()):
        flow = agent_type.decode()
        counted[flow] = counted.get(flow, 0.0) + float(value)
    return counted


def slowdown(slow: list[float], fast: list[float]) -> float:
    """Median over rounds of the paired slowdown of ``slow`` against ``fast``, in percent."""
    return statistics.median((f - s) / f * 100 for s, f in zip(slow, fast, strict=True))


def _added_us(runs: list[float], off: list[float]) -> float:
    """Median over rounds of the CPU microseconds per mission added against ``off``."""
    return statistics.median(1e6 / r - 1e6 / o for r, o in zip(runs, off, strict=True))


async def _rounds(
    executors: dict[str, Any], batch: int, repeats: int, ran: dict[str, int]
) -> tuple[dict[tuple[str, str], list[float]], dict[tuple[str, str], list[float]]]:
    wall: dict[tuple[str, str], list[float]] = {(f, n): [] for f in FLOWS for n in executors}
    cpu: dict[tuple[str, str], list[float]] = {(f, n): [] for f in FLOWS for n in executors}
    names = list(executors)
    for flow in FLOWS:  # warm-up: imports, caches, first series, first files
        for executor in executors.values():
            await run_batch(executor, flow, batch)
        ran[flow] += batch
    for round_no in range(repeats):
        shift = round_no % len(names)
        order = names[shift:] + names[:shift]  # rotate who goes first
        for flow in FLOWS:
            for name in order:
                per_wall, per_cpu = await run_batch(executors[name], flow, batch)
                wall[(flow, name)].append(per_wall)
                cpu[(flow, name)].append(per_cpu)
            ran[flow] += batch
    return wall, cpu


async def measure(config: _bench.Config, root: Path) -> None:
    containers = {
        "on": make_container(root / "a", enabled=True),
        "off": make_container(root / "b", enabled=False),
        "off (A/A)": make_container(root / "c", enabled=False),
    }
    executors: dict[str, Any] = {name: c.executor for name, c in containers.items()}
    executors["forward only"] = forwarding_executor(make_settings(root / "d", enabled=False))
    otel = OtelSink()
    executors["prometheus_client"] = peer_executor(
        make_settings(root / "e", enabled=False), PromSink()
    )
    executors["opentelemetry"] = peer_executor(make_settings(root / "f", enabled=False), otel)
    batch = config.iterations(BATCH)
    ran = dict.fromkeys(FLOWS, 0)
    wall, cpu = await _rounds(executors, batch, config.repeats, ran)

    rows = []
    slower: dict[tuple[str, str], tuple[float, float]] = {}
    added: dict[tuple[str, str], float] = {}
    for flow in FLOWS:
        for name in executors:
            slower[(flow, name)] = (
                slowdown(wall[(flow, name)], wall[(flow, "off")]),
                slowdown(cpu[(flow, name)], cpu[(flow, "off")]),
            )
            added[(flow, name)] = _added_us(cpu[(flow, name)], cpu[(flow, "off")])
            is_off = name == "off"
            rows.append(
                [
                    flow,
                    name,
                    f"{statistics.median(wall[(flow, name)]):.0f}",
                    "-" if is_off else f"{slower[(flow, name)][0]:+.2f}%",
                    f"{statistics.median(cpu[(flow, name)]):.0f}",
                    "-" if is_off else f"{slower[(flow, name)][1]:+.2f}%",
                    "-" if is_off else f"{added[(flow, name)]:+.1f}",
                ]
            )
    print(
        f"scripted latency 0 ms; missions per batch: {batch}; rounds: {config.repeats} "
        "(interleaved, order rotated); 'off (A/A)' is a second metrics-off container: its "
        "difference is the noise floor; 'forward only': proxies that only forward; "
        "'prometheus_client' / 'opentelemetry': the same metric set recorded at the same "
        "points by hand-written wrappers (pre-bound children / SDK instruments)\n"
    )
    headers = [
        "flow",
        "metrics",
        "missions/s",
        "slower (wall)",
        "missions/CPU-s",
        "slower (CPU)",
        "CPU us/mission added",
    ]
    _bench.print_table(headers, rows)

    on, off = containers["on"], containers["off"]
    counted = counted_missions(on)
    checks = ", ".join(f"{flow} {counted.get(flow, 0):.0f} of {ran[flow]}" for flow in FLOWS)
    print(f"\nmissions counted by the metrics-on scrape: {checks}")
    print(f"metrics-off container has metrics: {off.metrics is not None}")
    for container in containers.values():
        await container.aclose()
    otel.provider.shutdown()

    await latency_rows(config, root / "latency")

    print()
    for flow in FLOWS:
        ours, prom, sdk = (added[(flow, n)] for n in ("on", "prometheus_client", "opentelemetry"))
        _bench.verdict(
            f"per mission {flow} vs prometheus_client",
            prom > 0 and ours <= TARGET_VS_PROM * prom,
            f"added {ours:.1f} us CPU per mission, prometheus_client {prom:.1f} us, ratio "
            f"{_bench.ratio(ours, prom)} (target <= {TARGET_VS_PROM}x)",
        )
        _bench.verdict(
            f"per mission {flow} vs opentelemetry",
            sdk > 0 and ours <= TARGET_VS_OTEL * sdk,
            f"added {ours:.1f} us CPU per mission, opentelemetry {sdk:.1f} us, ratio "
            f"{_bench.ratio(ours, sdk)} (target <= {TARGET_VS_OTEL}x)",
        )


async def latency_rows(config: _bench.Config, root: Path) -> None:
    """On vs off at each scripted latency: the figures, without a verdict."""
    rows = []
    for latency in LATENCY_MS:
        on = make_container(root / f"{latency}-on", enabled=True, latency_ms=latency)
        off = make_container(root / f"{latency}-off", enabled=False, latency_ms=latency)
        executors = {"on": on.executor, "off": off.executor}
        batch = config.iterations(50 if latency == 0 else 10)
        wall, cpu = await _rounds(
            executors, batch, max(3, config.repeats // 4), {"lean": 0, "legacy": 0}
        )
        for flow in FLOWS:
            rows.append(
                [
                    f"{latency} ms",
                    flow,
                    f"{statistics.median(wall[(flow, 'on')]):.0f}",
                    f"{statistics.median(wall[(flow, 'off')]):.0f}",
                    f"{slowdown(wall[(flow, 'on')], wall[(flow, 'off')]):+.2f}%",
                    f"{slowdown(cpu[(flow, 'on')], cpu[(flow, 'off')]):+.2f}%",
                ]
            )
        await on.aclose()
        await off.aclose()
    print("\nmetrics on vs off by scripted LLM latency (figures, no target):")
    headers = [
        "latency",
        "flow",
        "on missions/s",
        "off missions/s",
        "slower (wall)",
        "slower (CPU)",
    ]
    _bench.print_table(headers, rows)


def run_in_scratch(
    measure_in: Callable[[_bench.Config, Path], Awaitable[None]], config: _bench.Config
) -> None:
    """Run ``measure_in`` on one event loop, logging silenced, in a temporary directory.

    The directory (see :func:`scratch_dir`) is deleted afterwards.
    """
    with (
        open(os.devnull, "w") as devnull,
        tempfile.TemporaryDirectory(prefix="taskforce-bench-", dir=scratch_dir()) as tmp,
    ):
        print(f"state and workspace under {tmp} (deleted afterwards)")
        configure_logging(fmt="json", level="critical", stream=devnull, cache_loggers=True)
        asyncio.run(measure_in(config, Path(tmp)))


def main() -> None:
    config = _bench.parse_args("mission throughput, metrics on vs off", repeats=101)
    _bench.print_environment("throughput: missions per second, metrics on vs off")
    run_in_scratch(measure, config)


if __name__ == "__main__":
    main()
