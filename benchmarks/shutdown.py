"""How long ``taskforce serve`` takes to stop with missions in flight, against an idle stop.

What is measured: the wall time from SIGTERM to the exit of ``taskforce serve``
(one process, and a supervisor with two workers), started as an operator would
start it, with ``server.shutdown_grace_seconds`` set to ``grace``. Conditions:

- ``idle``: nothing running (the baseline: what stopping costs at all);
- ``in flight, grace``: four missions blocked in a 60 s ``sleep`` tool; after the
  grace they are cancelled, recorded ``cancelled``, and the process exits;
- ``in flight, 2nd signal``: the same, with a second SIGTERM as soon as the server
  reports it is draining (no wait for the grace).

Reading the output: ``stop s`` is the measured time, ``over grace`` what is left
after subtracting the grace (the cost of cancelling, recording and closing),
``vs idle`` that figure over the idle stop of the same worker count. Before
``server.shutdown_grace_seconds`` existed, a drain could last ``max_steps`` times
the tool timeout (issue 10). The ``VERDICT`` line checks that a stop with missions
in flight takes at most the grace plus 2 s. Verdicts are printed, never asserted.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import _bench
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.processes import Child, clean_env, free_ports, started, wait_until_up

MISSIONS = 4
SLACK_SECONDS = 2.0
_SLOW = 'tool:sleep {"seconds": 60}\ndone'


def _count(child: Child, event: str) -> int:
    lines = child.stderr().splitlines()
    return sum(1 for line in lines if line.startswith("{") and json.loads(line)["event"] == event)


def _wait_for(child: Child, event: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while _count(child, event) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {event}:\n{child.stderr()}")
        time.sleep(0.02)


def _stop_time(root: Path, workers: int, grace: float, condition: str) -> float:
    """Start a server, put missions in flight unless idle, SIGTERM it; return seconds to exit."""
    root.mkdir(parents=True)
    api_port = free_ports(1)
    env = clean_env(
        root,
        TASKFORCE_SERVER__SHUTDOWN_GRACE_SECONDS=f"{grace:g}",
        TASKFORCE_METRICS__PORT=str(free_ports(workers)),
        TASKFORCE_LOGGING__LEVEL="info",
    )
    args = ["serve", "--port", str(api_port), "--workers", str(workers)]
    api = f"http://127.0.0.1:{api_port}"
    with (
        started(args, env, root) as child,
        concurrent.futures.ThreadPoolExecutor(MISSIONS) as pool,
    ):
        wait_until_up(child, [f"{api}/health"])
        if condition != "idle":
            for i in range(MISSIONS):
                body = {"mission": _SLOW, "session_id": f"s{i}"}
                pool.submit(httpx.post, f"{api}/api/v1/execute", json=body, timeout=120)
            _wait_for(child, "mission.started", MISSIONS)
        began = time.perf_counter()
        child.process.send_signal(signal.SIGTERM)
        if condition == "in flight, 2nd signal":
            _wait_for(child, "server.draining", 1)
            child.process.send_signal(signal.SIGTERM)
        child.process.wait(timeout=grace + 60)
        return time.perf_counter() - began


def main(config: _bench.Config) -> None:
    """Measure every condition for one process and two workers; print table and verdict."""
    grace = 0.5 if config.quick else 2.0
    print(f"server.shutdown_grace_seconds={grace:g}, {MISSIONS} missions in flight")
    root = Path(tempfile.mkdtemp(prefix="taskforce-bench-"))
    rows: list[list[str]] = []
    worst_over = 0.0
    try:
        for workers in (1, 2):
            idle = 0.0
            for n, condition in enumerate(("idle", "in flight, grace", "in flight, 2nd signal")):
                took = _stop_time(root / f"{workers}-{n}", workers, grace, condition)
                waited = grace if condition == "in flight, grace" else 0.0
                over = max(0.0, took - waited)
                if condition == "idle":
                    idle = took
                else:
                    worst_over = max(worst_over, over)
                rows.append(
                    [
                        condition,
                        str(workers),
                        f"{took:.2f}",
                        f"{over:.2f}",
                        _bench.ratio(over, idle),
                    ]
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _bench.print_table(["condition", "workers", "stop s", "over grace", "vs idle"], rows)
    _bench.verdict(
        "shutdown with missions in flight",
        worst_over <= SLACK_SECONDS,
        f"at most the grace + {worst_over:.2f} s, target grace + {SLACK_SECONDS:g} s",
    )


if __name__ == "__main__":
    cfg = _bench.parse_args(__doc__.splitlines()[0])
    _bench.print_environment("taskforce serve: stopping with missions in flight")
    main(cfg)
