"""How long a trickling LLM upstream holds a mission: ``llm.timeout_seconds`` as a deadline.

What is measured: one lean mission through a real container (OpenAI-compatible
provider, metrics on) against an upstream on 127.0.0.1 that answers one byte every
``interval`` seconds, so that no single read ever waits as long as the timeout.
Before the deadline covered the whole attempt, such an upstream held a mission for
as long as it kept trickling (20 s at a setting of 1 s, issue 10). Conditions:

- ``headers``: the status line and headers trickle (plain ``/execute`` path);
- ``body``: the headers come at once, the JSON body trickles;
- ``stream``: the streaming path; an SSE stream whose chunks each arrive in time;
- each with ``llm.max_retries`` 0 and 2 (a timeout is retried, with backoff).

Reading the output: ``held s`` is the wall time of the mission, ``vs timeout``
that time over ``llm.timeout_seconds``, ``attempts`` how many requests the
upstream saw. With 0 retries a mission is held about one timeout; with 2, three
timeouts plus the 0.5 s and 1 s backoff, except a stream that already delivered a
chunk: it is not retried (its text went out already), so it ends at one timeout.
The ``VERDICT`` line checks that no condition without retries holds a mission
longer than 1.5 timeouts. Verdicts are printed, never asserted: the script exits 0.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import _bench

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.trickle_server import COMPLETION_BODY, TrickleServer, sse_body

from taskforce.application.container import build_container
from taskforce.config import Settings
from taskforce.observability import configure_logging

TARGET_RATIO = 1.5

_COMPLETION = COMPLETION_BODY
_SSE = sse_body(200)


async def _hold(
    condition: str, timeout_seconds: float, interval: float, max_retries: int, root: Path
) -> tuple[float, int, str]:
    """Run one mission against the trickling upstream; return seconds held, requests, status."""
    streamed = condition == "stream"
    body = _SSE if streamed else _COMPLETION
    async with TrickleServer(
        body,
        interval=interval / 20 if streamed else interval,
        chunk_size=20 if streamed else 1,
        trickle_headers=condition == "headers",
        content_type="text/event-stream" if streamed else "application/json",
    ) as upstream:
        settings = Settings(
            state_dir=root / f"state-{condition}-{max_retries}",
            workspace_dir=root / "ws",
            llm={
                "provider": "openai",
                "base_url": upstream.base_url,
                "model": "m",
                "timeout_seconds": timeout_seconds,
                "max_retries": max_retries,
            },
        )
        async with build_container(settings) as container:
            started = time.perf_counter()
            if streamed:
                events = [e async for e in container.executor.execute_mission_streaming("hi")]
                result = events[-1].result
                status = result.status if result is not None else "no result"
            else:
                status = (await container.executor.execute_mission("hi")).status
            held = time.perf_counter() - started
        return held, upstream.requests, status


async def main(config: _bench.Config) -> None:
    """Measure every condition and print the table and the verdict."""
    timeout, interval = (0.3, 0.1) if config.quick else (1.0, 0.5)
    print(f"llm.timeout_seconds={timeout:g}, one byte every {interval:g} s")
    root = Path(tempfile.mkdtemp(prefix="taskforce-bench-"))
    rows: list[list[str]] = []
    worst = 0.0
    try:
        for max_retries in (0, 2):
            for condition in ("headers", "body", "stream"):
                held, requests, status = await _hold(
                    condition, timeout, interval, max_retries, root
                )
                if max_retries == 0:
                    worst = max(worst, held / timeout)
                rows.append(
                    [
                        condition,
                        str(max_retries),
                        f"{held:.2f}",
                        _bench.ratio(held, timeout),
                        str(requests),
                        status,
                    ]
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _bench.print_table(
        ["condition", "max_retries", "held s", "vs timeout", "attempts", "mission"], rows
    )
    _bench.verdict(
        "mission held by a trickling upstream",
        worst <= TARGET_RATIO,
        f"at most {worst:.2f}x llm.timeout_seconds without retries, target <= {TARGET_RATIO}x",
    )


if __name__ == "__main__":
    cfg = _bench.parse_args(__doc__.splitlines()[0])
    _bench.print_environment("LLM deadline against a trickling upstream")
    configure_logging(fmt="json", level="critical")
    asyncio.run(main(cfg))
