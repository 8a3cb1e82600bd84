"""Live fire: each alert of deploy/prometheus fires on a real fault of a served taskforce
and resolves once the fault is gone, and each dashboard panel shows data.

Four ``taskforce serve`` children (the scripted LLM) are scraped every second by a real
Prometheus (the Debian package's) that evaluates, every second, the rules of
deploy/prometheus/alerts.yml rewritten with every time span divided by TIME_SCALE: a
``for: 10m`` waits 10 s, a ``[15m]`` window reads 15 s, ``offset 5m`` looks 5 s back, a
``[5m:30s]`` subquery samples every 0.5 s over 5 s, and the process ages the rules
compare with (``time() - process_start_time_seconds <= 300``) are 5 s. Thresholds,
minima and matchers stay as shipped, but for TaskforceLLMLatencyHigh's 20.48 s p95,
which becomes 0.64 s (a bucket bound as well) so that an ``llm:delay 1000`` reaches it.

The faults, each removed in the second phase:

- ``faulty`` (prices so high that any token costs dollars): missions that fail on an
  LLM error, on a refused key (``auth``), on a tool error, calls retried after 429s
  and calls that take a second;
- ``state``: a session file that is not JSON, which the missions and reads of that
  session fail on, and missions calling tools the model made up, more names than
  ``metrics.max_label_values`` keeps;
- ``logfull``: its standard error is /dev/full, so no log line can be written; the fix
  is a restart with a writable one, which stops the target for a while;
- ``idle``: an open-file limit of 128 taken up by idle connections (its
  ``api.max_connections`` set above that), and one mission whose LLM call hangs.

Then the logfull service is restarted three times in a row (each new process scraped
before the next), and last, every service stops (the metrics are gone) and one starts
again.
TaskforceLLMSpendHigh resolves only when the spend leaves its hour window (60 s here),
so it is only seen firing. Each alert must show pending, then firing, then (but the
spend) inactive, with the instance of its fault where it keeps one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_dashboard import _queries, _substitute
from tests.support import yaml_files
from tests.support.processes import Child, clean_env, free_ports, wait_until_up
from tests.support.prometheus import run_prometheus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
#: Every time span of the rules is divided by this.
TIME_SCALE = 60
#: TaskforceLLMLatencyHigh's threshold (a bucket bound) and the one it is given here.
LATENCY_THRESHOLD, SCALED_LATENCY_THRESHOLD = "20.48", "0.64"
#: Only a guard against a test that would hang: each phase ends long before it.
PHASE_SECONDS = 60.0
#: Where each alert must fire: the service whose `instance` it carries, or None for an
#: alert over the whole fleet.
FIRES_ON: dict[str, str | None] = {
    "TaskforceMissionFailureRatioHigh": "faulty",
    "TaskforceMissionsStuck": "idle",
    "TaskforceLLMErrorRatioHigh": "faulty",
    "TaskforceLLMLatencyHigh": None,
    "TaskforceLLMAuthFailures": "faulty",
    "TaskforceLLMRateLimited": "faulty",
    "TaskforceLLMSpendHigh": None,
    "TaskforceToolFailureRatioHigh": "faulty",
    "TaskforceStateStoreErrors": "state",
    "TaskforceMetricsLabelOverflow": "state",
    "TaskforceInstrumentationFaults": "logfull",
    "TaskforceTargetDown": "logfull",
    "TaskforceMetricsAbsent": None,
    "TaskforceFileDescriptorsNearLimit": "idle",
    "TaskforceRestartingOften": "logfull",
}
#: Seen firing only: its window is an hour (see the module doc).
FIRING_ONLY = frozenset({"TaskforceLLMSpendHigh"})
#: Fired by the last phase, when every service has stopped.
LAST_PHASE = frozenset({"TaskforceMetricsAbsent"})
#: Fired while the fixed logfull service restarts.
RESTART_PHASE = frozenset({"TaskforceTargetDown"})
#: Fired by restarting the logfull service RESTARTS times in a row, once all else resolved.
RESTARTS_PHASE = frozenset({"TaskforceRestartingOften"})
RESTARTS = 3
#: USD per million tokens: any mission costs more than the shipped budget of 10 USD an hour.
PRICES = {"scripted-1": {"input": 1_000_000, "output": 1_000_000}}
#: What Grafana puts in for $__rate_interval with the datasource's default 15 s scrape
#: interval: max(4 x 15 s, $__interval + 15 s) on the dashboard's 6 h range.
RATE_INTERVAL = "1m"
#: One round of the faulty service's missions, sent at once. TaskforceLLMLatencyHigh is a
#: fleet-wide p95: the slow calls must be more than 5% of every service's calls.
FAULTY_ROUND = (
    "llm:error",
    "llm:fail auth\nsay hi",
    "llm:fail rate_limit 2\nsay hi",
    "llm:fail rate_limit 2\nsay hi again",
    'tool:calculator {"expression": "1/0"}',
    'tool:calculator {"expression": "6*7"}\nsay done',
    "llm:delay 1000\nsay slowly",
    "llm:delay 1000\nsay slowly again",
    "llm:delay 1000\nsay slowly once more",
    "say hello",
)
IDLE_CONNECTIONS = 110
FD_LIMIT = 128


def _milliseconds(span: str) -> int:
    amount, unit = int(span[:-1]), span[-1]
    return amount * {"s": 1000, "m": 60_000, "h": 3_600_000}[unit]


def _scaled_span(span: str) -> str:
    return f"{_milliseconds(span) // TIME_SCALE}ms"


def _scaled_expr(expr: str) -> str:
    """``expr`` with its windows, subquery steps, offsets and process ages scaled down."""
    span = r"(\d+[smh])"
    expr = re.sub(rf"\[{span}\]", lambda m: f"[{_scaled_span(m[1])}]", expr)
    expr = re.sub(
        rf"\[{span}:{span}\]", lambda m: f"[{_scaled_span(m[1])}:{_scaled_span(m[2])}]", expr
    )
    expr = re.sub(rf"offset {span}", lambda m: f"offset {_scaled_span(m[1])}", expr)
    expr = re.sub(
        r"(process_start_time_seconds <= )(\d+)", lambda m: f"{m[1]}{int(m[2]) / TIME_SCALE}", expr
    )
    return expr.replace(f"> {LATENCY_THRESHOLD}", f"> {SCALED_LATENCY_THRESHOLD}")


def scaled_rules() -> dict[str, Any]:
    """alerts.yml with every ``for:`` and every span of every expression scaled down."""
    document: dict[str, Any] = yaml_files.load(ALERTS)
    for group in document["groups"]:
        for rule in group["rules"]:
            rule["expr"] = _scaled_expr(str(rule["expr"]))
            if "for" in rule:
                rule["for"] = _scaled_span(rule["for"])
    return document


@dataclass
class Service:
    """One ``taskforce serve`` child on a port of its own, restartable on the same port."""

    name: str
    root: Path
    settings: dict[str, str] = field(default_factory=dict)
    fd_limit: int | None = None
    port: int = 0
    child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, stderr: str | None = None) -> Child:
        """Start the service (its output to ``stderr`` if given, else to a file)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_ports(1)
        log = self.root / f"serve-{len(list(self.root.glob('serve-*')))}.log"
        limit = self.fd_limit

        def limit_files() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        with open(stderr or log, "wb") as out:
            log.touch()
            process = subprocess.Popen(
                [sys.executable, "-m", "taskforce", "serve", "--port", str(self.port)],
                env=clean_env(self.root, **self.settings),
                cwd=self.root,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=limit_files,
            )
        self.child = Child(process, log)
        return self.child

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None


@contextlib.contextmanager
def _services(root: Path) -> Iterator[dict[str, Service]]:
    """The four services, started and up; all stopped however the block ends."""
    services = {
        service.name: service
        for service in (
            Service("faulty", root / "faulty", {"TASKFORCE_LLM__PRICES": json.dumps(PRICES)}),
            Service("state", root / "state", {"TASKFORCE_METRICS__MAX_LABEL_VALUES": "10"}),
            Service("logfull", root / "logfull"),
            Service(
                "idle",
                root / "idle",
                {"TASKFORCE_API__MAX_CONNECTIONS": "1000"},
                fd_limit=FD_LIMIT,
            ),
        )
    }
    try:
        children = [
            service.start(stderr="/dev/full" if name == "logfull" else None)
            for name, service in services.items()
        ]
        for service, child in zip(services.values(), children, strict=True):
            wait_until_up(child, [f"{service.url}/health"])
        yield services
    finally:
        for service in services.values():
            service.stop()


def _prometheus_config(services: dict[str, Service]) -> dict[str, Any]:
    targets = [service.instance for service in services.values()]
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [{"job_name": "taskforce", "static_configs": [{"targets": targets}]}],
    }


class Watch:
    """Polls Prometheus: each alert's states in order, and the panels that showed data."""

    def __init__(self, client: httpx.AsyncClient, prometheus_url: str) -> None:
        self.client = client
        self.url = prometheus_url
        #: (alertname, instance or "") -> the states seen, in order, from "inactive".
        self.history: dict[tuple[str, str], list[str]] = {}
        #: (panel title, refId) of the queries that gave a finite value above 0 at some poll.
        self.shown: set[tuple[str, str]] = set()
        #: The targets up at the last poll.
        self.up = 0

    async def poll(self) -> None:
        answer = await self.client.get(f"{self.url}/api/v1/alerts")
        answer.raise_for_status()
        now = {
            (alert["labels"]["alertname"], alert["labels"].get("instance", "")): alert["state"]
            for alert in answer.json()["data"]["alerts"]
        }
        for key in {*now, *self.history}:
            states = self.history.setdefault(key, ["inactive"])
            state = now.get(key, "inactive")
            if states[-1] != state:
                states.append(state)
        self.up = len(await self._query("up == 1"))
        for title, ref, target in _queries():
            if (title, ref) not in self.shown and await self._positive(target["expr"]):
                self.shown.add((title, ref))

    async def _query(self, expr: str) -> list[dict[str, Any]]:
        answer = await self.client.get(f"{self.url}/api/v1/query", params={"query": expr})
        answer.raise_for_status()
        result: list[dict[str, Any]] = answer.json()["data"]["result"]
        return result

    async def _positive(self, expr: str) -> bool:
        grafana = _substitute(expr.replace("$__rate_interval", RATE_INTERVAL))
        values = [float(sample["value"][1]) for sample in await self._query(grafana)]
        return any(math.isfinite(value) and value > 0 for value in values)

    async def start_time(self, service: Service) -> float | None:
        """The ``process_start_time_seconds`` Prometheus last scraped from ``service``."""
        found = await self._query(f'process_start_time_seconds{{instance="{service.instance}"}}')
        return float(found[0]["value"][1]) if found else None

    def state(self, key: tuple[str, str]) -> str:
        return self.history.get(key, ["inactive"])[-1]

    async def until(self, done: Callable[[], bool], what: str) -> None:
        """Poll until ``done()`` holds (at most PHASE_SECONDS)."""
        deadline = time.monotonic() + PHASE_SECONDS
        while True:
            await self.poll()
            if done():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}; alerts seen: {self.history}")
            await asyncio.sleep(0.25)


async def _restarted(watch: Watch, service: Service) -> None:
    """Stop ``service`` and start it again; return once Prometheus scraped the new process."""
    before = await watch.start_time(service)
    await asyncio.to_thread(service.stop)
    wait_until_up(service.start(), [f"{service.url}/health"])

    async def seen() -> bool:
        return (await watch.start_time(service)) not in (None, before)

    deadline = time.monotonic() + PHASE_SECONDS
    while not await seen():
        if time.monotonic() > deadline:
            raise TimeoutError(f"Prometheus never scraped the restarted {service.name}")
        await asyncio.sleep(0.25)


async def _mission(client: httpx.AsyncClient, service: Service, mission: str, **extra: str) -> int:
    answer = await client.post(
        f"{service.url}/api/v1/execute", json={"mission": mission, "agent_type": "lean", **extra}
    )
    return answer.status_code


async def _streamed(client: httpx.AsyncClient, service: Service, mission: str) -> None:
    body = {"mission": mission, "agent_type": "lean"}
    async with client.stream("POST", f"{service.url}/api/v1/execute/stream", json=body) as answer:
        assert 200 == answer.status_code
        async for _ in answer.aiter_bytes():
            pass


async def _faulty_load(client: httpx.AsyncClient, service: Service, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.gather(
            *(_mission(client, service, mission) for mission in FAULTY_ROUND),
            _streamed(client, service, "say streamed"),
        )


async def _state_load(client: httpx.AsyncClient, service: Service, stop: asyncio.Event) -> None:
    made_up = 0
    while not stop.is_set():
        made_up += 1
        await _mission(client, service, "say hi", session_id="broken")
        await client.get(f"{service.url}/api/v1/sessions/broken")
        await _mission(client, service, f"tool:made_up_{made_up} {{}}\nsay sorry")
        await asyncio.sleep(0.5)


async def _logged_load(client: httpx.AsyncClient, service: Service, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await _mission(client, service, "say hi")
        await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def _running(*loads: Any) -> AsyncIterator[None]:
    """Run the loads (each called with a stop event) until the block ends."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(load(stop)) for load in loads]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def _key(name: str, services: dict[str, Service]) -> tuple[str, str]:
    where = FIRES_ON[name]
    return name, services[where].instance if where else ""


def _went_through(states: list[str], expected: list[str]) -> bool:
    """Whether ``expected`` occurs in ``states`` in this order (others may come between)."""
    seen = iter(states)
    return all(state in seen for state in expected)


async def _live_fire(services: dict[str, Service], prometheus_url: str) -> Watch:
    faulty, state, logfull, idle = (services[n] for n in ("faulty", "state", "logfull", "idle"))
    keys = {name: _key(name, services) for name in FIRES_ON}
    async with httpx.AsyncClient(timeout=30.0) as client:
        watch = Watch(client, prometheus_url)
        await watch.until(
            lambda: len(services) == watch.up, "Prometheus never scraped every service"
        )
        first = set(FIRES_ON) - LAST_PHASE - RESTART_PHASE - RESTARTS_PHASE
        broken = state.root / "state" / "broken.json"
        broken.write_text("{not json", encoding="utf-8")
        with contextlib.ExitStack() as held:
            for _ in range(IDLE_CONNECTIONS):
                held.enter_context(socket.create_connection(("127.0.0.1", idle.port)))
            hung = asyncio.create_task(_mission(client, idle, "llm:delay 16000\nsay at last"))
            async with _running(
                lambda stop: _faulty_load(client, faulty, stop),
                lambda stop: _state_load(client, state, stop),
                lambda stop: _logged_load(client, logfull, stop),
            ):
                await watch.until(
                    lambda: all("firing" in watch.history.get(keys[n], []) for n in first),
                    "not every alert fired",
                )
        # The faults go (the connections went as the block ended).
        broken.unlink()
        await asyncio.to_thread(logfull.stop)
        await watch.until(
            lambda: "firing" == watch.state(keys["TaskforceTargetDown"]), "the target never down"
        )
        wait_until_up(logfull.start(), [f"{logfull.url}/health"])
        assert 200 == await hung
        await watch.until(
            lambda: all(
                "inactive" == watch.state(keys[n]) for n in (first - FIRING_ONLY) | RESTART_PHASE
            ),
            "not every alert resolved",
        )
        # A process that keeps dying and is started again at the same address.
        for _ in range(RESTARTS):
            await _restarted(watch, logfull)
        restarting = keys["TaskforceRestartingOften"]
        await watch.until(lambda: "firing" == watch.state(restarting), "never restarting often")
        # No metrics at all, then one service again.
        for service in services.values():
            await asyncio.to_thread(service.stop)
        absent = keys["TaskforceMetricsAbsent"]
        await watch.until(lambda: "firing" == watch.state(absent), "metrics never absent")
        wait_until_up(faulty.start(), [f"{faulty.url}/health"])
        await watch.until(lambda: "inactive" == watch.state(absent), "metrics never back")
    return watch


@dataclass(frozen=True)
class Fired:
    """Each alert's states, by FIRES_ON's key, and the panels that showed data."""

    states: dict[str, list[str]]
    shown: frozenset[tuple[str, str]]


@pytest.fixture(scope="module", name="fired")
def fixture_fired(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fired]:
    root = tmp_path_factory.mktemp("live-fire")
    prometheus_root = root / "prometheus"
    prometheus_root.mkdir()
    (prometheus_root / "rules.yml").write_text(json.dumps(scaled_rules()), encoding="utf-8")
    with _services(root) as services:
        with run_prometheus(prometheus_root, _prometheus_config(services)) as prometheus_url:
            watch = asyncio.run(_live_fire(services, prometheus_url))
        states = {name: watch.history.get(_key(name, services), []) for name in FIRES_ON}
        yield Fired(states, frozenset(watch.shown))


class TestScaledRules:
    def test_every_span_is_scaled(self) -> None:
        """No span of the shipped rules is left unscaled, and `for:` is scaled too."""
        for group in scaled_rules()["groups"]:
            for rule in group["rules"]:
                unscaled = re.findall(r"\[\d+[smh]\]|\[\d+[smh]:|offset \d+[smh]\b", rule["expr"])
                assert [] == unscaled, rule["expr"]
                assert LATENCY_THRESHOLD not in rule["expr"]
                assert rule.get("for", "ms").endswith("ms")

    def test_every_alert_is_fired(self) -> None:
        """A new alert in alerts.yml must be given a fault here."""
        names = {
            rule["alert"]
            for group in scaled_rules()["groups"]
            for rule in group["rules"]
            if "alert" in rule
        }
        assert names == set(FIRES_ON)


class TestLiveFire:
    @pytest.mark.parametrize("name", sorted(FIRES_ON))
    def test_alert_fires_and_resolves(self, fired: Fired, name: str) -> None:
        """The alert goes pending, then firing on its fault's instance, then inactive."""
        expected = ["pending", "firing"] + ([] if name in FIRING_ONLY else ["inactive"])
        assert _went_through(fired.states[name], expected), fired.states[name]

    def test_every_panel_shows_data(self, fired: Fired) -> None:
        """Each query of each panel, as Grafana sends it, gave a number above 0 at some point."""
        assert set() == {(title, ref) for title, ref, _ in _queries()} - fired.shown
