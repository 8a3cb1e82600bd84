"""What metrics add to a mission, counted instead of timed: calls, instructions, cache misses.

The per-mission CPU figures of ``throughput.py`` move from run to run on a shared
machine (its A/A control shows by how much). The counts here do not: they are
the same work measured again, so they show where the added cost comes from and
how it compares with the peers when the clock is too noisy to say.

What is counted, per mission, for the executors of ``throughput.py`` (``off``:
metrics off; ``on``: metrics on; ``prometheus_client``: metrics off, the same
metric set written by hand-written wrappers to pre-bound children, see
``_peers.py``), for both flows, with the same mission:

- Python function calls (``cProfile``, always): what each executor runs, in calls;
- bytecodes (``sys.settrace`` with opcode events, always; on the event-loop thread,
  over a tenth of the missions, as each is the same): the interpreter's steps, each
  one an indirect branch the CPU has to predict, so they follow the mispredicted
  branches below more closely than instructions do;
- with ``valgrind`` installed (``cachegrind``, a simulated CPU): instructions,
  first-level data and instruction cache misses, and mispredicted branches.

Each count is taken in fresh interpreters: one that warms up (50 missions of each
flow) and stops, and one per flow that warms up the same way and then runs N more
missions of that flow; the difference over N is the per-mission count, so start-up
and warm-up cancel out. ``added`` is the difference from ``off``. The ratio row
divides ours by prometheus_client's.

Reading the output: the targets of issue 8 are about CPU time, which this script
does not measure; it prints figures, no verdict, and exits 0. Without valgrind the
cache columns say ``n/a``.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any

import _bench

_WORKER = "TASKFORCE_COUNTS_WORKER"
CANDIDATES = ("off", "on", "prometheus_client")
FLOWS = ("lean", "legacy")
WARMUP = 50
MISSIONS = 200
# cachegrind's summary line: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw Bc Bcm Bi Bim
_EVENTS = (
    "Ir",
    "I1mr",
    "ILmr",
    "Dr",
    "D1mr",
    "DLmr",
    "Dw",
    "D1mw",
    "DLmw",
    "Bc",
    "Bcm",
    "Bi",
    "Bim",
)
_CACHE_COLUMNS = {
    "instructions": ("Ir",),
    "L1d misses": ("D1mr", "D1mw"),
    "L1i misses": ("I1mr",),
    "mispredicts": ("Bcm", "Bim"),
}


# ------------------------------------------------------------------ in the worker


def _executor(candidate: str, root: Path) -> Any:
    from _peers import PromSink, peer_executor
    from throughput import make_container, make_settings

    if candidate == "prometheus_client":
        return peer_executor(make_settings(root, enabled=False), PromSink())
    return make_container(root, enabled=candidate == "on").executor


class _Bytecodes:
    """Counts the opcodes the interpreter runs on this thread while it is on."""

    def __init__(self) -> None:
        self.count = 0

    def _opcode(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "opcode":
            self.count += 1
        return self._opcode

    def _call(self, frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        return self._opcode

    def start(self) -> None:
        # From Python 3.12 (PEP 669) opcode events reach a tracer only if a frame asked for
        # them before sys.settrace: asking in the call event alone counts none there
        # (python/cpython#103615, #114480).
        sys._getframe().f_trace_opcodes = True
        sys.settrace(self._call)

    def stop(self) -> None:
        sys.settrace(None)


async def _run(
    candidate: str, flow: str, missions: int, mode: str, warmup: int
) -> dict[str, float]:
    from throughput import MISSION

    with tempfile.TemporaryDirectory(prefix="taskforce-counts-") as tmp:
        executor = _executor(candidate, Path(tmp))
        for warm in FLOWS:
            for _ in range(warmup):
                await executor.execute_mission(MISSION, agent_type=warm)
        profiler = cProfile.Profile() if mode == "calls" else None
        bytecodes = _Bytecodes() if mode == "bytecodes" else None
        if profiler is not None:
            profiler.enable()
        if bytecodes is not None:
            bytecodes.start()
        for _ in range(missions):
            result = await executor.execute_mission(MISSION, agent_type=flow)
            if result.status != "completed":
                raise RuntimeError(f"benchmark mission did not complete: {result!r}")
        if bytecodes is not None:
            bytecodes.stop()
            return {"bytecodes": float(bytecodes.count)}
        if profiler is None:
            return {}
        profiler.disable()
        stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]  # no public API
        return {"calls": float(sum(entry[1] for entry in stats.values()))}


def _worker(spec: str) -> None:
    from taskforce.observability import configure_logging

    candidate, flow, missions, mode, warmup = spec.split(":")
    with open(os.devnull, "w") as devnull:
        configure_logging(fmt="json", level="critical", stream=devnull, cache_loggers=True)
        counts = asyncio.run(_run(candidate, flow, int(missions), mode, int(warmup)))
    print("RESULT " + json.dumps(counts))


# ------------------------------------------------------------------ in the parent


def _child(spec: str, prefix: list[str]) -> dict[str, float]:
    done = subprocess.run(
        [*prefix, sys.executable, __file__],
        env={**os.environ, _WORKER: spec},
        capture_output=True,
        text=True,
        check=True,
    )
    line = [row for row in done.stdout.splitlines() if row.startswith("RESULT ")][-1]
    counts: dict[str, float] = json.loads(line.removeprefix("RESULT "))
    return counts


def _calls(candidate: str, flow: str, missions: int, warmup: int) -> float:
    """Python calls per mission: cProfile counts only the missions after the warm-up."""
    return _child(f"{candidate}:{flow}:{missions}:calls:{warmup}", [])["calls"] / missions


def _bytecodes(candidate: str, flow: str, missions: int, warmup: int) -> float:
    """Bytecodes per mission on the event-loop thread, after the warm-up."""
    counted = max(1, missions // 10)
    return _child(f"{candidate}:{flow}:{counted}:bytecodes:{warmup}", [])["bytecodes"] / counted


def _cachegrind(candidate: str, flow: str, missions: int, out: Path) -> dict[str, float]:
    """The cachegrind totals of a worker: warm-up, then ``missions`` missions of ``flow``."""
    file = out / f"cg.{candidate}.{flow}.{missions}"
    valgrind = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=yes",
        "--branch-sim=yes",
        f"--cachegrind-out-file={file}",
    ]
    _child(f"{candidate}:{flow}:{missions}:none:{WARMUP}", valgrind)
    summary = next(
        line for line in file.read_text().splitlines() if line.startswith("summary:")
    ).split()[1:]
    return dict(zip(_EVENTS, map(float, summary), strict=True))


def _real_python() -> bool:
    """valgrind must run the interpreter itself, not a shell wrapper (a pyenv shim)."""
    with open(sys.executable, "rb") as handle:
        return handle.read(2) != b"#!"


def main() -> None:
    config = _bench.parse_args(__doc__.splitlines()[0] if __doc__ else "counts")
    if os.environ.get(_WORKER):
        _worker(os.environ[_WORKER])
        return
    _bench.print_environment("counts: what metrics add to a mission, counted")
    missions = config.iterations(MISSIONS)
    warmup = config.iterations(WARMUP)
    use_valgrind = shutil.which("valgrind") is not None and _real_python() and not config.quick
    print(
        f"missions counted per flow: {missions}, after {warmup} of each flow; valgrind: "
        f"{'cachegrind' if use_valgrind else 'not used (not installed, or --quick)'}"
    )
    per: dict[tuple[str, str], dict[str, float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="taskforce-counts-") as tmp,
        # Each count is the worker's own, whatever else runs: the workers run side by side.
        ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool,
    ):
        base = {
            candidate: pool.submit(_cachegrind, candidate, "lean", 0, Path(tmp))
            for candidate in CANDIDATES
            if use_valgrind
        }
        counting: dict[tuple[str, str], dict[str, Future[Any]]] = {}
        for candidate in CANDIDATES:
            for flow in FLOWS:
                futures: dict[str, Future[Any]] = {
                    "calls": pool.submit(_calls, candidate, flow, missions, warmup),
                    "bytecodes": pool.submit(_bytecodes, candidate, flow, missions, warmup),
                }
                if use_valgrind:
                    futures["cachegrind"] = pool.submit(
                        _cachegrind, candidate, flow, missions, Path(tmp)
                    )
                counting[(candidate, flow)] = futures
        for (candidate, flow), futures in counting.items():
            row = {"calls": futures["calls"].result(), "bytecodes": futures["bytecodes"].result()}
            if use_valgrind:
                total, start = futures["cachegrind"].result(), base[candidate].result()
                for column, events in _CACHE_COLUMNS.items():
                    row[column] = sum(total[e] - start[e] for e in events) / missions
            per[(candidate, flow)] = row
    columns = ["calls", "bytecodes", *(_CACHE_COLUMNS if use_valgrind else ())]
    for flow in FLOWS:
        off = per[("off", flow)]
        rows = []
        for candidate in CANDIDATES:
            row = per[(candidate, flow)]
            rows.append(
                [candidate]
                + [
                    f"{row[c]:.0f}" if candidate == "off" else f"{row[c] - off[c]:+.0f}"
                    for c in columns
                ]
            )
        ours, peer = per[("on", flow)], per[("prometheus_client", flow)]
        rows.append(
            ["on / prometheus_client"]
            + [_bench.ratio(ours[c] - off[c], peer[c] - off[c]) for c in columns]
        )
        if not use_valgrind:
            rows = [[*r, *("n/a" for _ in _CACHE_COLUMNS)] for r in rows]
        print(f"\n-- {flow} mission: per mission ('off': the count; others: added to 'off') --")
        _bench.print_table(["executor", "Python calls", "bytecodes", *_CACHE_COLUMNS], rows)


if __name__ == "__main__":
    main()
