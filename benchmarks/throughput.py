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

The whole measurement runs in five fresh interpreters one after the other, and
the figures are the median over them (a process's memory layout and string hash
seed move its figures more than its rounds vary; ``added, by process`` shows
each). Within a process, rounds are interleaved, the order of the executors
rotated every round, so drift of the machine cancels; each of the 41 rounds
runs one batch of 50 missions per container and flow (short rounds: the
difference from ``off`` is paired within each round, and many short pairs are
less noisy than a few long ones), timed in wall-clock time, in CPU time of the
event-loop thread (``time.thread_time``) and in CPU time of the whole process
(``time.process_time``); both CPU clocks are blind to neighbours competing for the
cores. The figures and verdicts use the event-loop thread: every candidate's
instrumentation runs there (the proxies, the peers' wrappers and every metric
update), while the process clock also counts the state store's worker threads,
whose file writes are the same work for every executor and move a batch's CPU time
by tens of microseconds per mission from one batch to the next (the ``off (A/A)``
control shows it); the process figure is printed next to it. Logging is set to
``critical`` and written to ``os.devnull``, so the difference is the metrics alone
(with info-level logs the metrics' share would only be smaller).

Reading the output: ``missions/s`` (wall) and ``missions/CPU-s`` per flow and
executor; ``slower``: the median over rounds of the paired per-round slowdown
against ``off``, in percent (positive: slower than metrics off); ``CPU us/mission
added``: the same pairing as CPU microseconds per mission (``process CPU us
added``: the same on the process clock). The scrape of the
metrics-on container must count every mission it ran (printed as a check). A
second table runs on and off at 0 ms and 1 ms of scripted LLM latency (figures
only). The ``VERDICT`` lines per flow compare the CPU added per mission against
issue 8: at most 0.5x of the prometheus_client peer and 0.15x of the
OpenTelemetry one, as the median over processes of the ratio within each
process. Verdicts are printed, never asserted: the script exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
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

# Many short rounds rather than a few long ones: a round's CPU time is noisy (the
# neighbours of a shared machine share the caches), and each paired difference is
# then taken over a short stretch in which both executors met the same machine.
BATCH = 50
# Fresh interpreters the measurement runs in (see in_processes).
PROCESSES = 5
_WORKER = "TASKFORCE_THROUGHPUT_WORKER"
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
        Missions per second of wall-clock time, per second of CPU time of this (the
        event-loop) thread, and per second of CPU time of the whole process.
    """
    wall, cpu, process = time.perf_counter_ns(), time.thread_time_ns(), time.process_time_ns()
    for _ in range(missions):
        result = await executor.execute_mission(MISSION, agent_type=flow)
        if result.status != "completed":
            raise RuntimeError(f"benchmark mission did not complete: {result!r}")
    wall, cpu = time.perf_counter_ns() - wall, time.thread_time_ns() - cpu
    process = time.process_time_ns() - process
    return (
        missions / (wall / 1e9),
        missions / (max(cpu, 1) / 1e9),
        missions / (max(process, 1) / 1e9),
    )


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


_Series = dict[tuple[str, str], list[float]]


async def _rounds(
    executors: dict[str, Any], batch: int, repeats: int, ran: dict[str, int]
) -> tuple[_Series, _Series, _Series]:
    """Run the rounds; per (flow, executor) the rates of each round: wall, loop CPU, process CPU."""
    wall: _Series = {(f, n): [] for f in FLOWS for n in executors}
    cpu: _Series = {(f, n): [] for f in FLOWS for n in executors}
    process: _Series = {(f, n): [] for f in FLOWS for n in executors}
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
                per_wall, per_cpu, per_process = await run_batch(executors[name], flow, batch)
                wall[(flow, name)].append(per_wall)
                cpu[(flow, name)].append(per_cpu)
                process[(flow, name)].append(per_process)
            ran[flow] += batch
    return wall, cpu, process


async def measure(config: _bench.Config, root: Path) -> dict[str, Any]:
    """Run the rounds in this process; return its figures (see :func:`aggregate`)."""
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
    wall, cpu, process = await _rounds(executors, batch, config.repeats, ran)
    figures: dict[str, Any] = {"batch": batch, "rows": {}}
    for flow in FLOWS:
        for name in executors:
            figures["rows"][f"{flow}|{name}"] = {
                "wall": statistics.median(wall[(flow, name)]),
                "cpu": statistics.median(cpu[(flow, name)]),
                "slower_wall": slowdown(wall[(flow, name)], wall[(flow, "off")]),
                "slower_cpu": slowdown(cpu[(flow, name)], cpu[(flow, "off")]),
                "added": _added_us(cpu[(flow, name)], cpu[(flow, "off")]),
                "added_process": _added_us(process[(flow, name)], process[(flow, "off")]),
            }
    counted = counted_missions(containers["on"])
    figures["counted"] = {flow: [counted.get(flow, 0), ran[flow]] for flow in FLOWS}
    figures["off_has_metrics"] = containers["off"].metrics is not None
    for container in containers.values():
        await container.aclose()
    otel.provider.shutdown()
    return figures


def aggregate(config: _bench.Config, runs: list[dict[str, Any]]) -> None:
    """Print the table from the median over processes, each process's added CPU, verdicts."""
    names = [key.split("|", 1)[1] for key in runs[0]["rows"] if key.startswith(f"{FLOWS[0]}|")]

    def median_of(key: str, field: str) -> float:
        return statistics.median(run["rows"][key][field] for run in runs)

    rows = []
    added: dict[tuple[str, str], float] = {}
    for flow in FLOWS:
        for name in names:
            key, is_off = f"{flow}|{name}", name == "off"
            added[(flow, name)] = median_of(key, "added")
            each = " ".join(f"{run['rows'][key]['added']:+.1f}" for run in runs)
            rows.append(
                [
                    flow,
                    name,
                    f"{median_of(key, 'wall'):.0f}",
                    "-" if is_off else f"{median_of(key, 'slower_wall'):+.2f}%",
                    f"{median_of(key, 'cpu'):.0f}",
                    "-" if is_off else f"{median_of(key, 'slower_cpu'):+.2f}%",
                    "-" if is_off else f"{added[(flow, name)]:+.1f}",
                    "-" if is_off else each,
                    "-" if is_off else f"{median_of(key, 'added_process'):+.1f}",
                ]
            )
    print(
        f"scripted latency 0 ms; {len(runs)} processes, each: missions per batch "
        f"{runs[0]['batch']}, rounds {config.repeats} (interleaved, order rotated); figures "
        "are the median over processes; 'off (A/A)' is a second metrics-off container: its "
        "difference is the noise floor; 'forward only': proxies that only forward; "
        "'prometheus_client' / 'opentelemetry': the same metric set recorded at the same "
        "points by hand-written wrappers (pre-bound children / SDK instruments); CPU: the "
        "event-loop thread's, where all of them record; process CPU: the whole process, "
        "the state store's threads included\n"
    )
    headers = [
        "flow",
        "metrics",
        "missions/s",
        "slower (wall)",
        "missions/CPU-s",
        "slower (CPU)",
        "CPU us/mission added",
        "added, by process",
        "process CPU us added",
    ]
    _bench.print_table(headers, rows)
    for run in runs:
        checks = ", ".join(f"{flow} {n:.0f} of {of}" for flow, (n, of) in run["counted"].items())
        print(f"missions counted by the metrics-on scrape: {checks}")
    print(f"metrics-off container has metrics: {any(run['off_has_metrics'] for run in runs)}")
    print()
    for flow in FLOWS:
        ours = added[(flow, "on")]
        for peer, target in (
            ("prometheus_client", TARGET_VS_PROM),
            ("opentelemetry", TARGET_VS_OTEL),
        ):
            # the ratio within each process (both measured on the same machine state),
            # then the median over processes
            ratios = [
                run["rows"][f"{flow}|on"]["added"] / run["rows"][f"{flow}|{peer}"]["added"]
                for run in runs
                if run["rows"][f"{flow}|{peer}"]["added"] > 0
            ]
            ratio = statistics.median(ratios) if ratios else float("inf")
            _bench.verdict(
                f"per mission {flow} vs {peer}",
                ratio <= target,
                f"added {ours:.1f} us CPU per mission, {peer} {added[(flow, peer)]:.1f} us; "
                f"ratio by process {' '.join(f'{r:.2f}x' for r in ratios)}, median "
                f"{ratio:.2f}x (target <= {target}x)",
            )


async def latency_rows(config: _bench.Config, root: Path) -> None:
    """On vs off at each scripted latency: the figures, without a verdict."""
    rows = []
    for latency in LATENCY_MS:
        on = make_container(root / f"{latency}-on", enabled=True, latency_ms=latency)
        off = make_container(root / f"{latency}-off", enabled=False, latency_ms=latency)
        executors = {"on": on.executor, "off": off.executor}
        batch = config.iterations(50 if latency == 0 else 10)
        wall, cpu, _ = await _rounds(
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
    measure_in: Callable[[_bench.Config, Path], Awaitable[Any]], config: _bench.Config
) -> Any:
    """Run ``measure_in`` on one event loop, logging silenced, in a temporary directory.

    The directory (see :func:`scratch_dir`) is deleted afterwards.

    Returns:
        What ``measure_in`` returned.
    """
    with (
        open(os.devnull, "w") as devnull,
        tempfile.TemporaryDirectory(prefix="taskforce-bench-", dir=scratch_dir()) as tmp,
    ):
        print(f"state and workspace under {tmp} (deleted afterwards)")
        configure_logging(fmt="json", level="critical", stream=devnull, cache_loggers=True)
        return asyncio.run(measure_in(config, Path(tmp)))


def in_processes(config: _bench.Config) -> list[dict[str, Any]]:
    """Run :func:`measure` in ``PROCESSES`` fresh interpreters, one after the other.

    Each process lays its objects out in memory differently (and hashes strings with
    its own seed), which moves a process's figures by more than the rounds inside it
    vary, so the figures are taken over several processes, as pyperf does.
    """
    runs = []
    for index in range(1 if config.quick else PROCESSES):
        done = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:]],
            env={**os.environ, _WORKER: "1"},
            capture_output=True,
            text=True,
            check=True,
        )
        result = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        runs.append(json.loads(result[-1].removeprefix("RESULT ")))
        print(f"process {index + 1}: done")
    return runs


def main() -> None:
    config = _bench.parse_args("mission throughput, metrics on vs off", repeats=41)
    if os.environ.get(_WORKER):
        print("RESULT " + json.dumps(run_in_scratch(measure, config)))
        return
    _bench.print_environment("throughput: missions per second, metrics on vs off")
    aggregate(config, in_processes(config))
    run_in_scratch(lambda c, root: latency_rows(c, root / "latency"), config)


if __name__ == "__main__":
    main()
