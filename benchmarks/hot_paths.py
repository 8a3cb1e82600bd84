"""Two hot paths of the aspect, against what they replaced: the context pack and the route.

What is measured, per call, in one run:

- the context-pack estimate of an LLM call whose conversation grew by two messages
  since the previous call (what an agent turn does), at 10 and at 200 messages:
  ``full scan`` reads every message's content on every call (the former estimate);
  ``ours`` is the estimate as the LLM proxy's ``record_call`` makes it (copied
  below as ``_ours``, the lines between ``sent = ...`` and ``pack = ...``): a
  conversation of up to ``SCAN_LIMIT`` (16) messages is counted whole, as cheap as
  remembering it here and cheaper in a mission; a longer one resumes from its
  ``PackEstimator`` count and reads only the two new messages;
- the route label of an HTTP request to ``POST /api/v1/execute`` on the real app
  (``create_app``): ``match every route`` runs each route's ``matches`` as the router
  does (the former middleware); ``read from the router`` is what the middleware does
  now: hand the app a scope that remembers the route the router writes to it, and
  read that route's template.

Each figure is the median over rounds of a timed loop, minus the same loop with an
empty body. Reading the output: ``us/call``; ``vs former`` below 1.00x is cheaper.
Figures only, no verdict: the script exits 0.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _bench

from taskforce.api.server import create_app
from taskforce.application.container import build_container
from taskforce.config import Settings
from taskforce.observability.proxies._context_pack import SCAN_LIMIT, PackEstimator
from taskforce.observability.web._http import _match, _routes_of, _RouteScope, _template


def _full_scan(sent: list[dict[str, Any]]) -> tuple[int, int]:
    chars = 0
    for message in sent:
        content = message.get("content")
        if content:
            chars += len(content)
    return len(sent), (chars + 3) // 4


def _ours(packs: PackEstimator, sent: list[dict[str, Any]]) -> tuple[int, int]:
    # the estimate of LLMProviderProxy's record_call, as a function to time it
    length = len(sent)
    start, chars = packs.resume(sent) if length > SCAN_LIMIT else (0, 0)
    for message in map(sent.__getitem__, range(start, length)) if start else sent:
        content = message.get("content")
        if content:
            chars += len(content)
    if length > SCAN_LIMIT:
        packs.remember(sent, chars)
    return length, (chars + 3) // 4


def _conversation(size: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are careful. " * 8}]
    for i in range(size - 1):
        role = ("user", "assistant", "tool")[i % 3]
        messages.append({"role": role, "content": f"message {i} " * 12})
    return messages


def _per_call_ns(body: Callable[[], Any], setup: Callable[[], Any], loops: int) -> float:
    """Median over rounds of the time of ``body`` alone (``setup`` runs untimed before it)."""
    rounds = []
    for _ in range(7):
        total = 0
        for _ in range(loops):
            setup()
            started = time.perf_counter_ns()
            body()
            total += time.perf_counter_ns() - started
        rounds.append(total / loops)
    return statistics.median(rounds)


def pack_rows(loops: int) -> list[list[str]]:
    rows = []
    empty = _per_call_ns(lambda: None, lambda: None, loops)
    for size in (10, 200):
        conversation = _conversation(size)
        new = conversation[-2:]
        estimator = PackEstimator()

        def grow(
            conv: list[dict[str, Any]] = conversation,
            added: Any = new,
            counted: PackEstimator = estimator,
        ) -> None:
            # back to two messages short, counted; then the turn adds them
            del conv[-2:]
            _ours(counted, conv)
            conv.extend(added)

        def incremental(c: Any = conversation, counted: PackEstimator = estimator) -> Any:
            return _ours(counted, c)

        scan = _per_call_ns(lambda c=conversation: _full_scan(c), grow, loops) - empty
        ours = _per_call_ns(incremental, grow, loops) - empty
        rows.append([f"{size} messages", "full scan", f"{scan / 1000:.3f}", "1.00x"])
        rows.append(["", "ours", f"{ours / 1000:.3f}", _bench.ratio(ours, scan)])
    return rows


def route_rows(loops: int, root: Path) -> list[list[str]]:
    settings = Settings(state_dir=root / "state", workspace_dir=root / "workspace")
    app = create_app(container=build_container(settings))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/execute",
        "root_path": "",
        "headers": [],
        "query_string": b"",
    }
    routes = _routes_of(app)
    chosen = next(r for r in routes if getattr(r, "path", "") == "/api/v1/execute")

    def read_from_router() -> str:
        observed = _RouteScope(scope)
        observed["route"] = chosen  # what the router does while it serves the request
        return _template(observed.route)

    empty = _per_call_ns(lambda: None, lambda: None, loops)
    former = _per_call_ns(lambda: _match(routes, scope), lambda: None, loops) - empty
    ours = _per_call_ns(read_from_router, lambda: None, loops) - empty
    return [
        [f"{len(routes)} routes", "match every route", f"{former / 1000:.3f}", "1.00x"],
        ["", "read from the router", f"{ours / 1000:.3f}", _bench.ratio(ours, former)],
    ]


def main() -> None:
    config = _bench.parse_args("context pack and route label per call")
    _bench.print_environment("hot paths: context-pack estimate and HTTP route label")
    loops = config.iterations(20_000)
    print("\n-- context-pack estimate, conversation grown by 2 messages since the last call --")
    _bench.print_table(["size", "estimate", "us/call", "vs former"], pack_rows(loops))
    with tempfile.TemporaryDirectory(prefix="taskforce-bench-") as tmp:
        print("\n-- HTTP route label of POST /api/v1/execute on the real app --")
        _bench.print_table(["app", "route", "us/call", "vs former"], route_rows(loops, Path(tmp)))


if __name__ == "__main__":
    main()
