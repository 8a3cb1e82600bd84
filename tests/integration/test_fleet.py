"""A fleet on a real Prometheus: two replicas of ``taskforce serve --workers 2``, four endpoints.

Prometheus discovers the four worker endpoints through the replicas' ``file_sd`` targets
files, loads the project's rule files, and scrapes every second. The checks are the
operator's: the fleet-wide sum equals what was sent, every target is up with its
process metrics, and a killed worker is replaced without touching the others' numbers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.processes import Child, clean_env, free_ports, started, wait_until_up
from tests.support.prometheus import api_get, query, run_prometheus
from tests.support.workload import send

pytestmark = pytest.mark.integration

_T = TypeVar("_T")
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
SCRAPE_SECONDS = 1.0
DEADLINE_SECONDS = 60.0
#: Rounds of WORKLOAD sent to replica 0 and replica 1.
ROUNDS = (3, 2)


@dataclass(frozen=True)
class Replica:
    """One `taskforce serve --workers 2` and its endpoints."""

    child: Child
    api: str
    metrics_port: int
    targets: Path
    #: Its metrics.path: Prometheus' job names none, so it finds the path in the file.
    metrics_path: str

    def instances(self) -> list[str]:
        return [f"127.0.0.1:{self.metrics_port + i}" for i in (0, 1)]


def rule_files() -> list[Path]:
    """The project's recording and alert rule files (not the config, not the unit tests)."""
    return sorted(
        p for p in DEPLOY.glob("*.yml") if p.name != "prometheus.yml" and ".test." not in p.name
    )


def eventually(probe: Callable[[], _T], is_done: Callable[[_T], bool], what: str) -> _T:
    """Poll ``probe`` until ``is_done`` holds on its result, for at most DEADLINE_SECONDS."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        value = probe()
        if is_done(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: last seen {value!r}")
        time.sleep(0.1)


def by_labels(result: list[dict[str, Any]], *names: str) -> dict[tuple[str, ...], float]:
    return {tuple(s["metric"][n] for n in names): float(s["value"][1]) for s in result}


def open_pipes(pid: int) -> int:
    """How many of the process's file descriptors are pipes."""
    return sum(os.readlink(fd).startswith("pipe:") for fd in Path(f"/proc/{pid}/fd").iterdir())


@contextlib.contextmanager
def replica(root: Path, metrics_path: str = "/metrics") -> Iterator[Replica]:
    """Start one replica with two workers; its targets file lives in ``root``.

    It is not waited for: the fleet starts both replicas and Prometheus at once, then
    waits for each with :func:`wait_for`.
    """
    root.mkdir(parents=True)
    api_port, metrics_port = free_ports(1), free_ports(2)
    targets = root / "targets.json"
    env = clean_env(
        root, TASKFORCE_METRICS__TARGETS_FILE=str(targets), TASKFORCE_METRICS__PATH=metrics_path
    )
    args = ["serve", "--port", str(api_port), "--workers", "2", "--metrics-port", str(metrics_port)]
    with started(args, env, root) as child:
        api = f"http://127.0.0.1:{api_port}"
        yield Replica(child, api, metrics_port, targets, metrics_path)


def wait_for(started_replica: Replica) -> None:
    """Return once both workers' metrics and the replica's API answer."""
    path = started_replica.metrics_path
    urls = [f"http://{instance}{path}" for instance in started_replica.instances()]
    wait_until_up(started_replica.child, [*urls, f"{started_replica.api}/health"])


@dataclass(frozen=True)
class Fleet:
    replicas: tuple[Replica, Replica]
    prometheus: str
    sent: Counter[tuple[str, str]]
    started_at: float


@pytest.fixture(name="fleet", scope="module")
def fixture_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Two replicas, Prometheus over their targets files, the workload sent and scraped."""
    root = tmp_path_factory.mktemp("fleet")
    try:
        with contextlib.ExitStack() as stack:
            replicas = (
                stack.enter_context(replica(root / "replica-0")),
                # a metrics.path of its own, which the job does not name
                stack.enter_context(replica(root / "replica-1", "/internal/metrics")),
            )
            prom_root = root / "prometheus"
            prom_root.mkdir()
            for path in rule_files():
                shutil.copy(path, prom_root / path.name)
            interval = f"{SCRAPE_SECONDS:g}s"
            config = {
                "global": {
                    "scrape_interval": interval,
                    "scrape_timeout": interval,
                    "evaluation_interval": interval,
                },
                "rule_files": [p.name for p in rule_files()],
                "scrape_configs": [
                    {
                        "job_name": "taskforce",
                        "file_sd_configs": [
                            {"files": [str(r.targets) for r in replicas], "refresh_interval": "1s"}
                        ],
                    }
                ],
            }
            started_at = time.time()
            prometheus = stack.enter_context(run_prometheus(prom_root, config))
            for started_replica in replicas:
                wait_for(started_replica)
            eventually(
                lambda: query(prometheus, 'count(up{job="taskforce"} == 1)'),
                lambda r: bool(r) and 4 == float(r[0]["value"][1]),
                "the four worker endpoints never were all up",
            )
            sent = send(replicas[0].api, ROUNDS[0]) + send(replicas[1].api, ROUNDS[1])
            expr = 'sum by (agent_type, status) (taskforce_missions_total{job="taskforce"})'
            eventually(
                lambda: by_labels(query(prometheus, expr), "agent_type", "status"),
                lambda seen: {k: v for k, v in seen.items() if v} == dict(sent),
                "Prometheus never summed the missions sent",
            )
            yield Fleet(replicas, prometheus, sent, started_at)
    finally:
        shutil.rmtree(root, ignore_errors=True)


class TestFleet:
    def test_sum_in_prometheus_equals_missions_sent(self, fleet: Fleet) -> None:
        """sum by (agent_type, status) over four workers is exactly what was sent, per series."""
        expr = 'sum by (agent_type, status) (taskforce_missions_total{job="taskforce"})'
        summed = by_labels(query(fleet.prometheus, expr), "agent_type", "status")
        print(f"missions sent {sum(fleet.sent.values())}, summed {sum(summed.values()):g}")
        assert dict(fleet.sent) == {k: v for k, v in summed.items() if v}
        # both flows, each completed and failed (a tool failure and an LLM error)
        assert 4 == len(fleet.sent)

    def test_every_target_is_up_with_process_metrics(self, fleet: Fleet) -> None:
        """count(up == 1) is 4 and every target exports process_start_time_seconds."""
        up = query(fleet.prometheus, 'count(up{job="taskforce"} == 1)')
        assert 4.0 == float(up[0]["value"][1])
        starts = by_labels(
            query(fleet.prometheus, 'process_start_time_seconds{job="taskforce"}'), "instance"
        )
        expected = {(i,) for r in fleet.replicas for i in r.instances()}
        assert expected == set(starts)

    def test_targets_carry_the_worker_label(self, fleet: Fleet) -> None:
        """Each replica's file lists its two workers; Prometheus keeps the `worker` label."""
        for r in fleet.replicas:
            groups = json.loads(r.targets.read_text(encoding="utf-8"))
            assert [[i] for i in r.instances()] == [g["targets"] for g in groups]
        workers = by_labels(query(fleet.prometheus, 'up{job="taskforce"}'), "instance", "worker")
        expected = {(i, str(n)) for r in fleet.replicas for n, i in enumerate(r.instances())}
        assert expected == set(workers)

    def test_each_target_is_scraped_at_its_services_metrics_path(self, fleet: Fleet) -> None:
        """The job names no metrics_path: a replica with a metrics.path of its own is still
        scraped there, as its targets file says (`__metrics_path__`), and is up."""
        active = api_get(fleet.prometheus, "targets")["activeTargets"]
        scraped = {t["labels"]["instance"]: (t["scrapeUrl"], t["health"]) for t in active}
        expected = {
            i: (f"http://{i}{r.metrics_path}", "up") for r in fleet.replicas for i in r.instances()
        }
        assert expected == scraped

    def test_a_worker_holds_no_pipes_of_the_workers_forked_before_it(self, fleet: Fleet) -> None:
        """Worker 1 has as many pipes open as worker 0: not also the two multiprocessing made
        for worker 0, which the supervisor held when it forked worker 1."""
        replica = fleet.replicas[1]
        pids = {
            e["worker"]: int(str(e["pid"]))
            for e in map(json.loads, filter(None, replica.child.stderr().splitlines()))
            if e.get("event") == "server.started"
        }

        assert open_pipes(pids[0]) == open_pipes(pids[1])

    def test_rules_are_loaded_and_healthy(self, fleet: Fleet) -> None:
        """Every rule of the project's rule files is loaded and evaluates without error."""
        groups = eventually(
            lambda: api_get(fleet.prometheus, "rules")["groups"],
            lambda gs: all(
                r.get("lastEvaluation", "").startswith("20") for g in gs for r in g["rules"]
            ),
            "rules never evaluated",
        )
        rules = [r for g in groups for r in g["rules"]]
        assert {"alerting", "recording"} == {r["type"] for r in rules}
        assert [] == [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]

    @pytest.mark.parametrize(
        ("metric", "label", "values"),
        [
            ("taskforce_tool_calls_total", "status", {"success", "error"}),
            ("taskforce_llm_requests_total", "status", {"success", "error"}),
            ("taskforce_llm_failures_total", "error_type", {"bad_request"}),
        ],
    )
    def test_increase_over_the_fleet_counts_every_call(
        self, fleet: Fleet, metric: str, label: str, values: set[str]
    ) -> None:
        """increase() summed over the workers sees each worker's first call too.

        A series first scraped above zero is counted only from its second sample, so
        every worker hid its first calculator success and failure, and its first LLM
        request and failure of each flow, until the series of the registered tools and
        of `llm.model` existed at zero. (Runs before the kill test: raw sums here.)
        """
        window = f"[{int(time.time() - fleet.started_at) + 2}s]"
        selected = f'{metric}{{job="taskforce"}}'
        raw = by_labels(query(fleet.prometheus, f"sum by ({label}) ({selected})"), label)
        seen = by_labels(
            query(fleet.prometheus, f"sum by ({label}) (increase({selected}{window}))"), label
        )
        print(f"{metric} {raw}, increase() over the fleet {seen}")
        assert {(v,) for v in values} == {k for k, v in raw.items() if v}
        # every series Prometheus holds was first scraped at zero ...
        first = query(fleet.prometheus, f"min_over_time({selected}{window}) > 0")
        assert [] == [s["metric"] for s in first]
        # ... so increase() misses nothing (it extrapolates to the window's end: >=)
        assert [] == [k for k, total in raw.items() if seen[k] < total - 0.01]

    def test_killed_worker_is_replaced_and_others_unaffected(self, fleet: Fleet) -> None:
        """A killed worker's endpoint is up again within two scrapes; the others keep their sums."""
        victim_replica = fleet.replicas[0]
        victim = victim_replica.instances()[1]
        per_instance = 'sum by (instance) (taskforce_missions_total{job="taskforce"})'
        before = by_labels(query(fleet.prometheus, per_instance), "instance")
        start_expr = f'process_start_time_seconds{{instance="{victim}"}}'
        old_start = float(query(fleet.prometheus, start_expr)[0]["value"][1])
        pid = next(
            int(str(e["pid"]))
            for e in map(json.loads, filter(None, victim_replica.child.stderr().splitlines()))
            if e.get("event") == "server.started" and e.get("worker") == 1
        )
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        eventually(
            lambda: query(fleet.prometheus, f"{start_expr} > {old_start}"),
            bool,
            "the replacement never showed up in Prometheus",
        )
        reappeared = time.monotonic() - killed_at
        window = int(time.time() - fleet.started_at) + 2
        failed = query(
            fleet.prometheus,
            f'count_over_time(up{{instance="{victim}"}}[{window}s])'
            f' - sum_over_time(up{{instance="{victim}"}}[{window}s])',
        )
        failed_scrapes = float(failed[0]["value"][1])
        print(
            f"replaced worker back in Prometheus after {reappeared:.2f} s,"
            f" {failed_scrapes:g} failed scrapes"
        )
        assert failed_scrapes <= 2
        after = by_labels(query(fleet.prometheus, per_instance), "instance")
        others = [(i,) for r in fleet.replicas for i in r.instances() if i != victim]
        assert {k: before[k] for k in others} == {k: after[k] for k in others}
        assert 0.0 == after[(victim,)]
        up = query(fleet.prometheus, 'count(up{job="taskforce"} == 1)')
        assert 4.0 == float(up[0]["value"][1])
