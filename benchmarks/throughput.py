"""Mission throughput with metrics on and off: what the whole aspect costs a running service.

What is measured: three containers from ``build_container(Settings(...))``:
metrics on, metrics off, and a second metrics-off one (an A/A control whose
difference from the first is the noise floor of the measurement); and a fourth
executor built the same way whose parts sit behind proxies that only forward
(``_forwarding.py``: same wrapt base class, same objects wrapped, no timing, no
recording), which shows what the indirection alone costs. Scripted
provider with no latency; state and workspace in a temporary directory that is
deleted afterwards (``/dev/shm`` when there is one and ``$TMPDIR`` is unset: the
state store fsyncs every save, and disk latency would drown the difference).
Each runs the same mission, two ``calculator`` tool directives then an answer,
sequentially through ``container.executor.execute_mission(mission, agent_type=...)``
on one event loop, for both flows (``lean``: native tool calls; ``legacy``: plan,
then JSON actions). Every mission is a new session, so each saves one fresh
state file and the per-mission cost stays constant across the run.

Rounds are interleaved, the order of the executors rotated every round, so drift
of the machine cancels; each round runs one batch of missions per container and
flow, timed in wall-clock time and in process CPU time (``time.process_time``,
which counts the state store's worker threads too and is blind to neighbours
competing for the cores). Logging is set to ``critical`` and written to
``os.devnull``, so the difference is the metrics alone (with info-level logs
the metrics' share would only be smaller).

Reading the output: ``median missions/s`` (wall) and ``missions/CPU-s`` per flow
and container; ``slower``: the median over rounds of the paired per-round
slowdown against ``off``, in percent (positive: slower than metrics off). The
scrape of the metrics-on container must count every mission it ran (printed as
a check). The ``VERDICT`` line per flow compares the CPU-time slowdown against
issue 4 (on and off differ by under 3%) and shows the wall-time one, the noise
floor and the forwarding-only share beside it. Verdicts are printed, never
asserted: the script exits 0.
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

from taskforce.application.container import Container, build_container
from taskforce.config import LLMSettings, MetricsSettings, Settings
from taskforce.observability import configure_logging

TARGET_PERCENT = 3.0
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


def make_settings(root: Path, *, enabled: bool) -> Settings:
    """Settings whose state and workspace live under ``root``."""
    label = "on" if enabled else "off"
    (root / label / "workspace").mkdir(parents=True)
    return Settings(
        llm=LLMSettings(provider="scripted", scripted_latency_ms=0),
        metrics=MetricsSettings(enabled=enabled),
        state_dir=root / label / "state",
        workspace_dir=root / label / "workspace",
    )


def make_container(root: Path, *, enabled: bool) -> Container:
    """A container whose state and workspace live under ``root``."""
    return build_container(make_settings(root, enabled=enabled))


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


async def measure(config: _bench.Config, root: Path) -> None:
    containers = {
        "on": make_container(root / "a", enabled=True),
        "off": make_container(root / "b", enabled=False),
        "off (A/A)": make_container(root / "c", enabled=False),
    }
    executors: dict[str, Any] = {name: c.executor for name, c in containers.items()}
    executors["forward only"] = forwarding_executor(make_settings(root / "d", enabled=False))
    batch = config.iterations(50)
    wall: dict[tuple[str, str], list[float]] = {(f, n): [] for f in FLOWS for n in executors}
    cpu: dict[tuple[str, str], list[float]] = {(f, n): [] for f in FLOWS for n in executors}
    ran = dict.fromkeys(FLOWS, 0)
    names = list(executors)
    for flow in FLOWS:  # warm-up: imports, caches, first series, first files
        for executor in executors.values():
            await run_batch(executor, flow, batch)
        ran[flow] += batch
    for round_no in range(config.repeats):
        shift = round_no % len(names)
        order = names[shift:] + names[:shift]  # rotate who goes first
        for flow in FLOWS:
            for name in order:
                per_wall, per_cpu = await run_batch(executors[name], flow, batch)
                wall[(flow, name)].append(per_wall)
                cpu[(flow, name)].append(per_cpu)
            ran[flow] += batch

    rows = []
    slower: dict[tuple[str, str], tuple[float, float]] = {}
    for flow in FLOWS:
        for name in executors:
            slower[(flow, name)] = (
                slowdown(wall[(flow, name)], wall[(flow, "off")]),
                slowdown(cpu[(flow, name)], cpu[(flow, "off")]),
            )
            is_off = name == "off"
            rows.append(
                [
                    flow,
                    name,
                    f"{statistics.median(wall[(flow, name)]):.0f}",
                    f"{min(wall[(flow, name)]):.0f}-{max(wall[(flow, name)]):.0f}",
                    "-" if is_off else f"{slower[(flow, name)][0]:+.2f}%",
                    f"{statistics.median(cpu[(flow, name)]):.0f}",
                    "-" if is_off else f"{slower[(flow, name)][1]:+.2f}%",
                ]
            )
    print(
        f"missions per batch: {batch}; rounds: {config.repeats} (interleaved, order rotated); "
        "'off (A/A)' is a second metrics-off container: its difference is the noise floor; "
        "'forward only': proxies that only forward, no recording\n"
    )
    headers = [
        "flow",
        "metrics",
        "median missions/s",
        "range",
        "slower (wall)",
        "missions/CPU-s",
        "slower (CPU)",
    ]
    _bench.print_table(headers, rows)

    on, off = containers["on"], containers["off"]
    counted = counted_missions(on)
    checks = ", ".join(f"{flow} {counted.get(flow, 0):.0f} of {ran[flow]}" for flow in FLOWS)
    print(f"\nmissions counted by the metrics-on scrape: {checks}")
    print(f"metrics-off container has metrics: {off.metrics is not None}")
    print()
    for flow in FLOWS:
        by_wall, by_cpu = slower[(flow, "on")]
        noise_wall, noise_cpu = slower[(flow, "off (A/A)")]
        forward_cpu = slower[(flow, "forward only")][1]
        _bench.verdict(
            f"throughput {flow} on vs off",
            abs(by_cpu) < TARGET_PERCENT,
            f"{by_cpu:+.2f}% by CPU time, {by_wall:+.2f}% by wall time; noise floor "
            f"{noise_cpu:+.2f}% / {noise_wall:+.2f}%; proxies that only forward "
            f"{forward_cpu:+.2f}% by CPU time; target |difference| < {TARGET_PERCENT:g}%",
        )
    for container in containers.values():
        await container.aclose()


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
    config = _bench.parse_args("mission throughput, metrics on vs off", repeats=31)
    _bench.print_environment("throughput: missions per second, metrics on vs off")
    run_in_scratch(measure, config)


if __name__ == "__main__":
    main()
