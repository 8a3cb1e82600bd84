"""Mission latency while blocking calls are stuck: the tools' own pool against the old layout.

What is measured: missions run one after another through a real container's
executor (scripted LLM, built-in tools, file state store in a temp dir), lean
flow, ``agent.tool_timeout_seconds=1``. The "normal" mission calls
``calculator``, then ``file_write``, then answers; its state is saved at the end.
Each condition is a fresh container; the loop's default executor has 6 threads
(what ``min(32, cpu + 4)`` gives on 2 cores, where issue 10 was found):

- ``none stuck``: the baseline;
- ``6 stuck in tool pool``: six reads of a FIFO without a writer hold six of the
  tool pool's threads (the refusal of non-regular files bypassed: the worst the
  pool can meet, a call that hangs in the kernel);
- ``all stuck in tool pool``: every tool thread held; a mission without file
  tools, then the normal one (its ``file_write`` can only time out);
- ``6 stuck in default executor``: the layout before the tool pool existed: the
  same six reads on the loop's default executor (which the state store used too,
  before it had threads of its own). A mission that does not finish within 3 s
  is reported as hung.

Finally six ``file_read`` calls of a FIFO are made at once through the tool, to
show they are refused rather than stuck.

Reading the output: ``median ms`` per mission and ``vs baseline`` (the median of
the baseline in the same run). The ``VERDICT`` line checks that six stuck calls
leave the normal mission within 2x of the baseline. Verdicts are printed, never
asserted: the script exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _bench

from taskforce.application.container import Container, build_container
from taskforce.config import Settings
from taskforce.infrastructure.tools import FileReadTool
from taskforce.observability import configure_logging

NORMAL = (
    'tool:calculator {"expression": "6*7"}\ntool:file_write {"path": "a.txt", "content": "42"}\nok'
)
NO_FILES = 'tool:calculator {"expression": "6*7"}\nok'
STUCK = 6
DEFAULT_EXECUTOR_THREADS = 6
HANG_SECONDS = 3.0
TARGET_RATIO = 2.0


def _read(fifo: Path) -> bytes:
    with open(fifo, "rb") as handle:  # blocks until a writer opens the FIFO
        return handle.read()


@contextlib.asynccontextmanager
async def _stuck(
    fifo: Path, count: int, submit: Callable[[Callable[[], bytes]], Awaitable[bytes]]
) -> AsyncIterator[None]:
    """Hold ``count`` calls in a FIFO read; wake them all on exit."""
    os.mkfifo(fifo)
    reads = asyncio.gather(*(submit(lambda: _read(fifo)) for _ in range(count)))
    await asyncio.sleep(0.2)  # let the reads reach open()
    try:
        yield
    finally:
        # O_RDWR never blocks on a FIFO: opening it wakes the readers, closing gives
        # them EOF; reads still queued for a thread find a plain empty file instead.
        writer = os.open(fifo, os.O_RDWR)
        os.unlink(fifo)
        os.close(os.open(fifo, os.O_WRONLY | os.O_CREAT, 0o600))
        os.close(writer)
        await reads
        os.unlink(fifo)


async def _missions(
    container: Container, mission: str, count: int, hang: float = HANG_SECONDS
) -> tuple[list[float], str]:
    """Run ``count`` missions, each in a new session; return latencies (ms), last outcome."""
    latencies: list[float] = []
    outcome = ""
    for _ in range(count):
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(container.executor.execute_mission(mission), hang)
        except TimeoutError:
            return latencies, f"hung (no result within {hang:g} s)"
        latencies.append((time.perf_counter() - started) * 1000)
        outcome = result.status if result.error is None else f"{result.status}: {result.error}"
    return latencies, outcome


def _row(
    condition: str, mission: str, samples: list[float], outcome: str, base: float
) -> list[str]:
    if not samples:
        return [condition, mission, "0", "-", "-", outcome]
    median = statistics.median(samples)
    return [
        condition,
        mission,
        str(len(samples)),
        f"{median:.1f}",
        _bench.ratio(median, base),
        outcome,
    ]


async def _refused_fifo_reads(root: Path) -> str:
    workspace = root / "refuse"
    workspace.mkdir()
    os.mkfifo(workspace / "pipe")
    tool = FileReadTool(workspace)
    started = time.perf_counter()
    results: list[Any] = await asyncio.gather(*(tool.execute(path="pipe") for _ in range(STUCK)))
    elapsed = (time.perf_counter() - started) * 1000
    kinds = sorted({r.get("error_type", "ok") for r in results})
    return f"{STUCK} concurrent file_read of a FIFO: {kinds} in {elapsed:.1f} ms"


async def main(config: _bench.Config) -> None:
    """Run every condition in one run and print the table."""
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(DEFAULT_EXECUTOR_THREADS))
    count = 5 if config.quick else 50
    root = Path(tempfile.mkdtemp(prefix="taskforce-bench-"))
    rows: list[list[str]] = []
    try:

        def container(name: str) -> Container:
            return build_container(
                Settings(
                    state_dir=root / name / "state",
                    workspace_dir=root / name / "workspace",
                    agent={"tool_timeout_seconds": 1.0},
                )
            )

        async with container("warm-up") as c:
            await _missions(c, NORMAL, count)  # imports, first files: not part of any figure
        # Baseline and stuck missions alternate, one each per round, so drift of a
        # shared machine (fsync, other processes) hits both alike.
        base_samples, stuck_samples = [], []
        async with container("base") as b, container("pool6") as c:
            assert c.tool_pool is not None
            async with _stuck(root / "fifo", STUCK, c.tool_pool.run):
                for _ in range(count):
                    samples, base_outcome = await _missions(b, NORMAL, 1)
                    base_samples += samples
                    samples, outcome = await _missions(c, NORMAL, 1)
                    stuck_samples += samples
        base = statistics.median(base_samples)
        rows.append(_row("none stuck", "normal", base_samples, base_outcome, base))
        rows.append(_row(f"{STUCK} stuck in tool pool", "normal", stuck_samples, outcome, base))

        async with container("pool-all") as c:
            assert c.tool_pool is not None
            async with _stuck(root / "fifo", c.tool_pool.size, c.tool_pool.run):
                label = f"all {c.tool_pool.size} stuck in tool pool"
                samples, outcome = await _missions(c, NO_FILES, count)
                rows.append(_row(label, "no file tools", samples, outcome, base))
                samples, outcome = await _missions(c, NORMAL, 1 if config.quick else 3)
                rows.append(_row(label, "normal", samples, outcome, base))

        loop = asyncio.get_running_loop()
        in_default = _stuck(root / "fifo", STUCK, lambda f: loop.run_in_executor(None, f))
        async with container("default") as c, in_default:
            samples, outcome = await _missions(
                c, NO_FILES, 1, 1.0 if config.quick else HANG_SECONDS
            )
        rows.append(
            _row(f"{STUCK} stuck in default executor", "no file tools", samples, outcome, base)
        )
        # The hung mission is still waiting for a default-executor thread; let it end.
        await asyncio.sleep(0.1)

        refused = await _refused_fifo_reads(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    _bench.print_table(
        ["condition", "mission", "missions", "median ms", "vs baseline", "outcome"], rows
    )
    print(refused)
    stuck = statistics.median(stuck_samples) if stuck_samples else float("inf")
    _bench.verdict(
        "mission latency with six stuck tool calls",
        stuck <= TARGET_RATIO * base,
        f"{stuck:.1f} ms against {base:.1f} ms without, target at most {TARGET_RATIO:g}x",
    )


if __name__ == "__main__":
    cfg = _bench.parse_args(__doc__.splitlines()[0])
    _bench.print_environment("stuck tool calls")
    with open(os.devnull, "w", encoding="utf-8") as devnull:
        configure_logging(fmt="json", level="critical", stream=devnull, cache_loggers=True)
        asyncio.run(main(cfg))
