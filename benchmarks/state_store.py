"""The state stores side by side: missions per second and save latency, file against PostgreSQL.

What is measured, on this machine, in one run:

- ``save``: one mission record (about 1 KB, what a short mission leaves) appended
  with ``store.append`` (the save every mission makes), sequentially, each to
  one of 20 sessions; median and p99 in ms, per store.
- ``missions/s``: whole missions through ``container.executor.execute_mission``
  (scripted provider without latency, lean flow, two ``calculator`` calls then
  an answer, 20 sessions in turn) at 1 and at 20 missions in flight, per store,
  metrics on and off. Ratios are against the file store, metrics off, at the
  same concurrency, measured in the same run.
- ``big session``: 200 missions of 99 KB of text into one session (the case of
  issue 10): latency of the first ten and the last ten missions, and the size
  the session ends at, with the default limits (``state.max_bytes`` 4 MiB).

Saves and missions run in rounds (``--repeats``, 7 by default) in which the
conditions take turns, their order rotated every round, so drift of a shared
machine hits them all alike; missions/s is the median over rounds, save
latencies are pooled over rounds.

The file store writes to a temp dir (fsync on every write, as in production).
PostgreSQL is a throwaway cluster started for the run (``initdb``/``pg_ctl`` as
in the tests, fsync on), or the database of ``--dsn``. Logging goes to
``os.devnull``. Figures are printed, never asserted: the script exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _bench

from taskforce.application.container import Container, build_container
from taskforce.config import Settings
from taskforce.infrastructure.state import FileStateStore, PostgresStateStore
from taskforce.observability import configure_logging

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.postgres import PostgresServer

MISSION = (
    "Work out two sums, then report.\n"
    'tool:calculator {"expression": "17 + 25"}\n'
    'tool:calculator {"expression": "6 * 7"}\n'
    "Both sums are done."
)
SESSIONS = 20
RECORD = {
    "mission_id": "0" * 32,
    "agent_type": "lean",
    "status": "completed",
    "final_message": "Both sums are done. " * 20,
    "error": None,
    "steps": [{"index": i, "description": "calculator", "status": "completed"} for i in range(3)],
    "started_at": "2026-01-01T00:00:00+00:00",
    "finished_at": "2026-01-01T00:00:01+00:00",
}


@contextlib.contextmanager
def _postgres(dsn: str | None) -> Iterator[str | None]:
    """The DSN to measure: ``--dsn``, or a throwaway cluster's; ``None`` if none can run."""
    if dsn is not None:
        yield dsn
        return
    import glob

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        yield None
        return
    server = PostgresServer(Path(found[-1]).parent, durable=True)
    try:
        server.init()
        server.start()
        yield server.dsn()
    finally:
        server.remove()


def _rotated(count: int, round_: int) -> list[int]:
    return [(round_ + i) % count for i in range(count)]


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def _save_latencies(store: Any, count: int) -> list[float]:
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        await store.append(f"bench-save-{i % SESSIONS}", RECORD)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def _settings(root: Path, dsn: str | None, *, metrics: bool) -> Settings:
    state: dict[str, Any] = {"backend": "file"}
    if dsn is not None:
        state = {"backend": "postgres", "dsn": dsn, "pool_size": 20}
    return Settings(
        state_dir=root / "state",
        workspace_dir=root / "ws",
        metrics={"enabled": metrics},
        state=state,
    )


async def _missions_per_second(container: Container, count: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)
    prefix = f"mps-{concurrency}-{time.monotonic_ns()}"

    async def one(i: int) -> None:
        async with gate:
            result = await container.executor.execute_mission(
                MISSION, session_id=f"{prefix}-{i % SESSIONS}"
            )
            assert result.status == "completed", result.error

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return count / (time.perf_counter() - started)


async def _big_session(container: Container, count: int) -> tuple[float, float, int]:
    """Latencies (median ms) of the first and last ten missions, and the final size."""
    text = "x" * 99_000
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        result = await container.executor.execute_mission(text, session_id="big")
        assert result.status == "completed", result.error
        latencies.append((time.perf_counter() - started) * 1000)
    state = await container.state_store.load("big") or {}
    size = len(json.dumps(state, ensure_ascii=False).encode())
    return statistics.median(latencies[:10]), statistics.median(latencies[-10:]), size


async def main(config: _bench.Config, dsn: str | None) -> None:
    """Run every measurement, in interleaved rounds, and print the tables."""
    saves = 10 * config.repeats if config.quick else 1000
    missions = 20 * config.repeats if config.quick else 560
    big = 12 if config.quick else 200
    root = Path(tempfile.mkdtemp(prefix="taskforce-bench-"))
    save_rows: list[list[str]] = []
    mps_rows: list[list[str]] = []
    big_rows: list[list[str]] = []
    try:
        with _postgres(dsn) as pg:
            stores: list[tuple[str, str | None]] = [("file", None)]
            if pg is not None:
                stores.append(("postgres", pg))
            else:
                print("postgres: no initdb found and no --dsn given; file store only")
            # Every measurement runs in rounds, the conditions interleaved (their order
            # rotated each round), so drift of a shared machine hits all of them alike.
            plains: list[Any] = [
                FileStateStore(root / name / "save")
                if store_dsn is None
                else PostgresStateStore(store_dsn)
                for name, store_dsn in stores
            ]
            latencies: list[list[float]] = [[] for _ in stores]
            for plain in plains:
                await plain.open()
                await _save_latencies(plain, 20)  # connections, directories: not measured
            for round_ in range(config.repeats):
                for i in _rotated(len(plains), round_):
                    latencies[i] += await _save_latencies(plains[i], saves // config.repeats)
            for plain in plains:
                await plain.aclose()
            for (name, _), values in zip(stores, latencies, strict=True):
                median, p99 = statistics.median(values), _p99(values)
                save_rows.append([name, str(len(values)), f"{median:.2f}", f"{p99:.2f}"])

            conditions = [
                (name, store_dsn, metrics, concurrency)
                for name, store_dsn in stores
                for metrics in (False, True)
                for concurrency in (1, 20)
            ]
            async with contextlib.AsyncExitStack() as stack:
                containers = [
                    await stack.enter_async_context(
                        build_container(_settings(root / f"{n}-{m}-{c}", d, metrics=m))
                    )
                    for n, d, m, c in conditions
                ]
                for container, (*_, concurrency) in zip(containers, conditions, strict=True):
                    await _missions_per_second(container, 20, concurrency)  # warm-up
                rates: list[list[float]] = [[] for _ in conditions]
                for round_ in range(config.repeats):
                    for i in _rotated(len(conditions), round_):
                        per_round = missions // config.repeats
                        concurrency = conditions[i][3]
                        rates[i].append(
                            await _missions_per_second(containers[i], per_round, concurrency)
                        )
            base = {
                c: statistics.median(rates[i])
                for i, (n, _, m, c) in enumerate(conditions)
                if n == "file" and not m
            }
            for (name, _, metrics, concurrency), values in zip(conditions, rates, strict=True):
                rate = statistics.median(values)
                mps_rows.append(
                    [
                        name,
                        "on" if metrics else "off",
                        str(concurrency),
                        str(missions),
                        f"{rate:.0f}",
                        _bench.ratio(rate, base[concurrency]),
                    ]
                )

            for name, store_dsn in stores:
                async with build_container(
                    _settings(root / f"{name}-big", store_dsn, metrics=True)
                ) as container:
                    first, last, size = await _big_session(container, big)
                big_rows.append(
                    [
                        name,
                        str(big),
                        f"{first:.1f}",
                        f"{last:.1f}",
                        _bench.ratio(last, first),
                        f"{size / 1024 / 1024:.1f}",
                    ]
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print("-- save (one append of a ~1 KB mission record) --")
    _bench.print_table(["store", "saves", "median ms", "p99 ms"], save_rows)
    print("-- missions/s (lean, 2 tool calls, 20 sessions) --")
    _bench.print_table(
        ["store", "metrics", "concurrency", "missions", "missions/s", "vs file off"], mps_rows
    )
    print("-- big session (missions of 99 KB into one session, default limits) --")
    _bench.print_table(
        ["store", "missions", "first 10 ms", "last 10 ms", "last/first", "kept MiB"], big_rows
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--dsn", default=os.environ.get("TASKFORCE_BENCH_DSN"))
    known, rest = parser.parse_known_args()
    sys.argv = [sys.argv[0], *rest]
    cfg = _bench.parse_args(__doc__ or "")
    _bench.print_environment("state stores")
    with open(os.devnull, "w") as devnull:
        configure_logging(fmt="json", level="critical", stream=devnull, cache_loggers=True)
        asyncio.run(main(cfg, known.dsn))
