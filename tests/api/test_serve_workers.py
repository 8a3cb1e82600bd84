"""``taskforce serve`` as operators run it: workers, a metrics port, start-up failures, shutdown.

Each test starts the real console script (``python -m taskforce serve``) on 127.0.0.1
and talks to it over HTTP, as Prometheus and clients would.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskforce.api._targets import SERVICE_LABEL, service_name
from tests.support.processes import Child, clean_env, free_ports, started, wait_until_up
from tests.support.workload import send

pytestmark = pytest.mark.integration


def missions(text: str) -> Counter[tuple[str, str]]:
    """``taskforce_missions_total`` of one exposition, by (agent_type, status)."""
    counts: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "taskforce_missions_total":
                counts[(sample.labels["agent_type"], sample.labels["status"])] += int(sample.value)
    return counts


def scrape(port: int) -> Counter[tuple[str, str]]:
    answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert 200 == answer.status_code
    return missions(answer.text)


def nonzero(counts: Counter[tuple[str, str]]) -> dict[tuple[str, str], int]:
    return {key: value for key, value in counts.items() if value}


def events(child: Child) -> list[dict[str, object]]:
    """The JSON lines ``child`` wrote so far; whole ones only: the last may be half written."""
    lines = child.stderr().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]


def _is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _with_targets(root: Path, metrics_port: int) -> tuple[dict[str, str], Path]:
    """The environment of a service with metrics on ``metrics_port`` and a targets file."""
    targets = root / "targets.json"
    env = clean_env(
        root,
        TASKFORCE_METRICS__PORT=str(metrics_port),
        TASKFORCE_METRICS__TARGETS_FILE=str(targets),
    )
    return env, targets


@pytest.fixture(name="ports")
def fixture_ports() -> tuple[int, int]:
    """A free API port and the first of two free consecutive metrics ports above it (one
    run of three: two runs picked apart could overlap)."""
    api_port = free_ports(3)
    return api_port, api_port + 1


class TestWorkers:
    def test_two_workers_add_up_exactly(self, tmp_path: Path, ports: tuple[int, int]) -> None:
        """Metrics at P and P+1 sum to what was sent, grow monotonically; API port has none.

        The targets file lists the two workers, and only them: the entry a run of this
        service killed on another metrics.port left goes, another service's (the same
        file, another API port) stays, also once this one has stopped. Before, the killed
        run's entry stayed listed, down for good, after the stop too.
        """
        api_port, metrics_port = ports
        targets = tmp_path / "targets.json"
        service = service_name("127.0.0.1", api_port)
        other = {"targets": ["127.0.0.1:1"], "labels": {"worker": "0", SERVICE_LABEL: "b/h:1"}}
        killed = {"targets": ["127.0.0.1:2"], "labels": {"worker": "0", SERVICE_LABEL: service}}
        targets.write_text(json.dumps([other, killed]), encoding="utf-8")
        env = clean_env(tmp_path, TASKFORCE_METRICS__TARGETS_FILE=str(targets))
        args = ["serve", "--port", str(api_port), "--workers", "2"]
        with started([*args, "--metrics-port", str(metrics_port)], env, tmp_path) as child:
            api = f"http://127.0.0.1:{api_port}"
            wait_until_up(
                child, [f"http://127.0.0.1:{metrics_port + i}/metrics" for i in (0, 1)] + [api]
            )
            sent: Counter[tuple[str, str]] = Counter()
            previous = [Counter[tuple[str, str]](), Counter[tuple[str, str]]()]
            for _ in range(3):
                sent += send(api, 2)
                scraped = [scrape(metrics_port + i) for i in (0, 1)]
                for before, now in zip(previous, scraped, strict=True):
                    assert all(now[key] >= value for key, value in before.items())
                previous = scraped
                assert nonzero(sent) == nonzero(scraped[0] + scraped[1])
            assert 404 == httpx.get(f"{api}/metrics", timeout=5).status_code
            groups = json.loads(targets.read_text(encoding="utf-8"))
            assert [
                other,
                *(
                    {
                        "targets": [f"127.0.0.1:{metrics_port + i}"],
                        "labels": {"worker": str(i), SERVICE_LABEL: service},
                    }
                    for i in (0, 1)
                ),
            ] == groups
            assert 0 == child.stop()
        assert [other] == json.loads(targets.read_text(encoding="utf-8"))

    @pytest.mark.parametrize("workers", ["1", "2"])
    def test_a_stopped_service_leaves_no_socket_open(
        self, tmp_path: Path, ports: tuple[int, int], workers: str
    ) -> None:
        """Under ``-X dev`` (PYTHONDEVMODE), a stop leaves no ResourceWarning for a socket
        the supervisor bound and never closed: its API and metrics sockets are closed."""
        api_port, metrics_port = ports
        env = clean_env(tmp_path, PYTHONDEVMODE="1")
        args = ["serve", "--port", str(api_port), "--workers", workers]
        with started([*args, "--metrics-port", str(metrics_port)], env, tmp_path) as child:
            urls = [f"http://127.0.0.1:{metrics_port + i}/metrics" for i in range(int(workers))]
            wait_until_up(child, [f"http://127.0.0.1:{api_port}/health", *urls])
            assert 0 == child.stop()
        unclosed = [line for line in child.stderr().splitlines() if "unclosed <socket" in line]
        assert [] == unclosed

    @pytest.mark.parametrize("workers", ["1", "2"])
    def test_sighup_stops_gracefully(
        self, tmp_path: Path, ports: tuple[int, int], workers: str
    ) -> None:
        """SIGHUP (a closed terminal) stops like SIGTERM: exit 0, targets emptied, all logged."""
        api_port, metrics_port = ports
        env, targets = _with_targets(tmp_path, metrics_port)
        args = ["serve", "--port", str(api_port), "--workers", workers]
        with started(args, env, tmp_path) as child:
            # every worker serving (its metrics listener up), not only the first
            urls = [f"http://127.0.0.1:{metrics_port + i}/metrics" for i in range(int(workers))]
            wait_until_up(child, [f"http://127.0.0.1:{api_port}/health", *urls])
            assert 0 == child.stop(signal.SIGHUP)
        assert [] == json.loads(targets.read_text(encoding="utf-8"))
        logged = [e["event"] for e in events(child)]
        assert int(workers) == logged.count("server.stopped")
        assert (int(workers) if workers == "2" else 0) == logged.count("worker.stopped")

    @pytest.mark.parametrize("workers", ["1", "2"])
    def test_a_stop_signal_while_the_app_is_built_stops_gracefully(
        self, tmp_path: Path, ports: tuple[int, int], workers: str
    ) -> None:
        """SIGTERM as soon as the targets are listed, the app not built yet: exit 0, withdrawn.

        The service lists its targets once its sockets are bound, before it builds the
        app and serves: a stop then is a stop asked for like any other, not a crash.
        """
        api_port, metrics_port = ports
        env, targets = _with_targets(tmp_path, metrics_port)
        args = ["serve", "--port", str(api_port), "--workers", workers]
        with started(args, env, tmp_path) as child:
            listed: list[object] = []
            while len(listed) < int(workers) and child.process.poll() is None:
                with contextlib.suppress(OSError, ValueError):
                    listed = json.loads(targets.read_text(encoding="utf-8"))
            assert 0 == child.stop(signal.SIGTERM), child.stderr()
        assert [] == json.loads(targets.read_text(encoding="utf-8"))
        # a worker still booting ends at once: then the supervisor's stop is the record
        said = "server.stopped" if workers == "1" else "supervisor.stopped"
        assert said in [e["event"] for e in events(child)]

    def test_dead_worker_is_replaced_and_the_other_keeps_its_numbers(
        self, tmp_path: Path, ports: tuple[int, int]
    ) -> None:
        """A killed worker comes back on its port from zero; the other worker is untouched."""
        api_port, metrics_port = ports
        env = clean_env(tmp_path, TASKFORCE_METRICS__PORT=str(metrics_port))
        with started(["serve", "--port", str(api_port), "--workers", "2"], env, tmp_path) as child:
            api = f"http://127.0.0.1:{api_port}"
            urls = [f"http://127.0.0.1:{metrics_port + i}/metrics" for i in (0, 1)]
            wait_until_up(child, [*urls, api])
            send(api, 2)
            before = scrape(metrics_port + 1)
            victim = next(
                e["pid"]
                for e in events(child)
                if e["event"] == "server.started" and e["worker"] == 0
            )
            os.kill(int(str(victim)), signal.SIGKILL)
            deadline = time.monotonic() + 30
            while True:
                started_events = [e for e in events(child) if e["event"] == "server.started"]
                if [e for e in started_events if e["worker"] == 0 and e["pid"] != victim]:
                    break
                assert time.monotonic() < deadline, child.stderr()
                time.sleep(0.05)
            assert {} == nonzero(scrape(metrics_port))
            assert before == scrape(metrics_port + 1)
            exited = [e for e in events(child) if e["event"] == "worker.exited"]
            assert [(0, -signal.SIGKILL)] == [(e["worker"], e["exitcode"]) for e in exited]

    def test_workers_stop_when_the_supervisor_is_killed(
        self, tmp_path: Path, ports: tuple[int, int]
    ) -> None:
        """A SIGKILLed supervisor leaves no orphan workers holding the ports."""
        api_port, metrics_port = ports
        env = clean_env(tmp_path, TASKFORCE_METRICS__PORT=str(metrics_port))
        with started(["serve", "--port", str(api_port), "--workers", "2"], env, tmp_path) as child:
            urls = [f"http://127.0.0.1:{metrics_port + i}/metrics" for i in (0, 1)]
            wait_until_up(child, [*urls, f"http://127.0.0.1:{api_port}/health"])
            pids = [int(str(e["pid"])) for e in events(child) if e["event"] == "server.started"]
            assert 2 == len(pids)
            child.process.kill()
            child.process.wait(timeout=10)
            deadline = time.monotonic() + 20
            try:
                while any(_is_running(pid) for pid in pids):
                    assert time.monotonic() < deadline, "workers outlived their supervisor"
                    time.sleep(0.05)
            finally:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", api_port))  # the port is free again

    @pytest.mark.slow
    def test_a_killed_supervisors_workers_drain_holding_their_metrics_ports(
        self, tmp_path: Path, ports: tuple[int, int]
    ) -> None:
        """The workers of a SIGKILLed supervisor drain as on SIGTERM: the API port is free at
        once, the running mission completes and is recorded, and the metrics port of its
        worker stays held until that worker exits, so a service started again meanwhile
        stops with exit 2 naming that port; started once the workers are gone, it serves."""
        api_port, metrics_port = ports
        env = clean_env(tmp_path, TASKFORCE_METRICS__PORT=str(metrics_port))
        args = ["serve", "--port", str(api_port), "--workers", "2"]
        api = f"http://127.0.0.1:{api_port}"
        with started(args, env, tmp_path) as child:
            wait_until_up(child, [f"{api}/health"])
            pids = [int(str(e["pid"])) for e in events(child) if e["event"] == "server.started"]
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                body = {"mission": 'tool:sleep {"seconds": 6}\ndone', "session_id": "kept"}
                answer = pool.submit(httpx.post, f"{api}/api/v1/execute", json=body, timeout=60)
                _wait_for(child, "mission.started", 1)
                child.process.kill()
                child.process.wait(timeout=10)
                again = subprocess.run(
                    [sys.executable, "-m", "taskforce", *args],
                    env=env,
                    cwd=tmp_path,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert 200 == answer.result().status_code
        assert 2 == again.returncode
        (line,) = [x for x in again.stderr.splitlines() if not x.startswith("{")]
        assert re.fullmatch(
            r"taskforce: cannot listen on 127\.0\.0\.1:\d+ for worker [01]'s metrics "
            r"\(--host, TASKFORCE_METRICS__PORT\): address already in use",
            line,
        ), line
        assert ["completed"] == _statuses(tmp_path, "kept")
        deadline = time.monotonic() + 30
        while any(_is_running(pid) for pid in pids):
            assert time.monotonic() < deadline, "workers outlived their drain"
            time.sleep(0.05)
        with started(args, env, tmp_path) as child:
            wait_until_up(child, [f"{api}/health", f"http://127.0.0.1:{metrics_port}/metrics"])

    def test_crash_loop_stops_the_service(self, tmp_path: Path, ports: tuple[int, int]) -> None:
        """``server.max_failed_restarts`` replacements in a row that die before they serve
        stop the service with exit 2.

        The service stays in its targets file, so Prometheus sees its targets down. The
        restart pauses are kept short (``server.max_restart_pause_seconds``): with the
        defaults, doubling from 0.5 s, they took most of the test's time.
        """
        api_port, metrics_port = ports
        base = tmp_path / "base"
        env, targets = _with_targets(tmp_path, metrics_port)
        env["TASKFORCE_STATE_DIR"] = str(base / "state")
        env["TASKFORCE_SERVER__MAX_FAILED_RESTARTS"] = "2"
        env["TASKFORCE_SERVER__MAX_RESTART_PAUSE_SECONDS"] = "0.05"
        with started(["serve", "--port", str(api_port), "--workers", "2"], env, tmp_path) as child:
            wait_until_up(child, [f"http://127.0.0.1:{metrics_port + i}/metrics" for i in (0, 1)])
            shutil.rmtree(base, ignore_errors=True)
            base.write_text("no longer a folder: every new worker fails", encoding="utf-8")
            victim = next(
                e["pid"]
                for e in events(child)
                if e["event"] == "server.started" and e["worker"] == 0
            )
            os.kill(int(str(victim)), signal.SIGKILL)
            assert 2 == child.process.wait(timeout=120)
        exited = [e for e in events(child) if e["event"] == "worker.exited"]
        assert 3 == len(exited)  # the killed worker, then two replacements that never served
        last = child.stderr().strip().splitlines()[-1]
        assert last.startswith("taskforce: worker 0 failed to start")
        listed = sorted(g["targets"][0] for g in json.loads(targets.read_text("utf-8")))
        assert [f"127.0.0.1:{metrics_port + i}" for i in (0, 1)] == listed

    def test_workers_without_metrics_port_exit_2(self, tmp_path: Path) -> None:
        """`--workers 2` with metrics on and no metrics.port stops at once, naming it."""
        with started(
            ["serve", "--port", "1", "--workers", "2"], clean_env(tmp_path), tmp_path
        ) as child:
            assert 2 == child.process.wait(timeout=60)
        lines = child.stderr().strip().splitlines()
        assert 1 == len(lines)
        assert "metrics.port" in lines[0]

    def test_workers_without_metrics_need_no_port(
        self, tmp_path: Path, ports: tuple[int, int]
    ) -> None:
        """With metrics disabled, two workers serve the API with no metrics port."""
        env = clean_env(tmp_path, TASKFORCE_METRICS__ENABLED="false")
        api = f"http://127.0.0.1:{ports[0]}"
        with started(["serve", "--port", str(ports[0]), "--workers", "2"], env, tmp_path) as child:
            wait_until_up(child, [api])
            assert 5 == sum(send(api, 1).values())
            assert 404 == httpx.get(f"{api}/metrics", timeout=5).status_code

    def test_metrics_off_lists_no_targets_when_a_worker_is_replaced(
        self, tmp_path: Path, ports: tuple[int, int]
    ) -> None:
        """With metrics disabled, metrics.port and the targets file set, nothing is listed.

        No worker serves metrics, so an entry would be a target that is always down.
        """
        api_port, metrics_port = ports
        env, targets = _with_targets(tmp_path, metrics_port)
        env["TASKFORCE_METRICS__ENABLED"] = "false"
        with started(["serve", "--port", str(api_port), "--workers", "2"], env, tmp_path) as child:
            deadline = time.monotonic() + 60  # a guard: two workers start in seconds
            while 2 > [e["event"] for e in events(child)].count("server.started"):
                assert time.monotonic() < deadline, child.stderr()
                time.sleep(0.05)
            victim = next(
                e["pid"]
                for e in events(child)
                if e["event"] == "server.started" and e["worker"] == 0
            )
            os.kill(int(str(victim)), signal.SIGKILL)
            deadline = time.monotonic() + 60  # a death this quick waits out a short backoff
            while not [e for e in events(child) if e["event"] == "worker.restarted"]:
                assert time.monotonic() < deadline, child.stderr()
                time.sleep(0.05)
            assert not targets.exists()
            assert 0 == child.stop()
        assert not targets.exists()

    def test_web_concurrency_is_workers(self, tmp_path: Path, ports: tuple[int, int]) -> None:
        """WEB_CONCURRENCY=2 runs two workers, each with its own metrics port."""
        api_port, metrics_port = ports
        env = clean_env(tmp_path, WEB_CONCURRENCY="2", TASKFORCE_METRICS__PORT=str(metrics_port))
        with started(["serve", "--port", str(api_port)], env, tmp_path) as child:
            urls = [f"http://127.0.0.1:{metrics_port + i}/metrics" for i in (0, 1)]
            wait_until_up(child, [*urls, f"http://127.0.0.1:{api_port}/health"])
            workers = {e["worker"] for e in events(child) if e["event"] == "server.started"}
            assert {0, 1} == workers

    @pytest.mark.parametrize("value", ["2", "zero", "257", "100000", "\u00b2", "\u0663"])
    def test_web_concurrency_errors_exit_2(self, tmp_path: Path, value: str) -> None:
        """WEB_CONCURRENCY=2 without metrics.port, a non-number or over 256: one line, exit 2."""
        env = clean_env(tmp_path, WEB_CONCURRENCY=value)
        with started(["serve", "--port", "1"], env, tmp_path) as child:
            assert 2 == child.process.wait(timeout=60)
        lines = child.stderr().strip().splitlines()
        assert 1 == len(lines)
        assert ("metrics.port" if value == "2" else "WEB_CONCURRENCY") in lines[0]

    @pytest.mark.parametrize(
        ("value", "flags"),
        [("", []), ("  ", []), ("abc", ["--workers", "2"]), ("0", ["--workers", "1"])],
    )
    def test_blank_web_concurrency_or_one_the_flag_overrides_is_not_read(
        self, tmp_path: Path, ports: tuple[int, int], value: str, flags: list[str]
    ) -> None:
        """A blank WEB_CONCURRENCY is unset; with --workers it is not read at all (uvicorn too)."""
        api_port, metrics_port = ports
        env = clean_env(tmp_path, WEB_CONCURRENCY=value, TASKFORCE_METRICS__PORT=str(metrics_port))
        args = ["serve", "--port", str(api_port), *flags]
        count = int(flags[1]) if flags else 1
        with started(args, env, tmp_path) as child:
            urls = [f"http://127.0.0.1:{metrics_port + i}/metrics" for i in range(count)]
            wait_until_up(child, [*urls, f"http://127.0.0.1:{api_port}/health"])
            assert 0 == child.stop(signal.SIGTERM)
        assert count == [e["event"] for e in events(child)].count("server.started")
        assert "Traceback" not in child.stderr()


class TestStartup:
    @pytest.mark.parametrize("workers", ["1", "2"])
    def test_port_in_use_exits_2_naming_host_and_port(self, tmp_path: Path, workers: str) -> None:
        """A taken API port stops the start with exit 2, one line, and no server.started."""
        env = clean_env(tmp_path, TASKFORCE_METRICS__PORT=str(free_ports(2)))
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            args = ["serve", "--port", str(port), "--workers", workers]
            with started(args, env, tmp_path) as child:
                assert 2 == child.process.wait(timeout=60)
        lines = child.stderr().strip().splitlines()
        assert 1 == len(lines), lines
        assert f"127.0.0.1:{port}" in lines[0]
        assert "in use" in lines[0]

    @pytest.mark.parametrize("workers", ["1", "2"])
    def test_app_that_cannot_start_exits_2(self, tmp_path: Path, workers: str) -> None:
        """A worker whose app fails to start stops the service: exit 2, last line says so.

        The settings pass every check; the environment breaks the app's start-up itself
        (a ``sitecustomize`` makes the container's ``open``, which the app's start runs,
        raise in every process; the start-up check of the state store before it passes).
        """
        boot = tmp_path / "boot"
        boot.mkdir()
        (boot / "sitecustomize.py").write_text(
            "from taskforce.application.container import Container\n"
            "async def _broken(self):\n"
            "    raise RuntimeError('the environment broke')\n"
            "Container.open = _broken\n",
            encoding="utf-8",
        )
        api_port = free_ports(3)  # one run: two picked apart could overlap
        metrics_port = api_port + 1
        env, targets = _with_targets(tmp_path, metrics_port)
        env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(boot)])
        args = ["serve", "--port", str(api_port), "--workers", workers]
        with started(args, env, tmp_path) as child:
            assert 2 == child.process.wait(timeout=60)
        last = child.stderr().strip().splitlines()[-1]
        assert last.startswith("taskforce: ") and "failed to start" in last
        # still listed: a service that failed shows as down, it does not vanish
        listed = sorted(g["targets"][0] for g in json.loads(targets.read_text("utf-8")))
        assert [f"127.0.0.1:{metrics_port + i}" for i in range(int(workers))] == listed

    def test_metrics_port_in_use_exits_2(self, tmp_path: Path, ports: tuple[int, int]) -> None:
        """A taken metrics port is a start-up failure too, naming that port."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            args = ["serve", "--port", str(ports[0]), "--metrics-port", str(port)]
            with started(args, clean_env(tmp_path), tmp_path) as child:
                assert 2 == child.process.wait(timeout=60)
        assert f"127.0.0.1:{port}" in child.stderr()

    def test_metrics_port_moves_metrics_off_the_api_port(
        self, tmp_path: Path, ports: tuple[int, int]
    ) -> None:
        """One process with --metrics-port: metrics (with auth and gzip) only on that port."""
        api_port, metrics_port = ports
        env = clean_env(tmp_path, TASKFORCE_METRICS__AUTH_TOKEN="tok-123")
        args = ["serve", "--port", str(api_port), "--metrics-port", str(metrics_port)]
        with started(args, env, tmp_path) as child:
            api, metrics = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{metrics_port}"
            wait_until_up(child, [f"{api}/health", f"{metrics}/metrics"])
            send(api, 1)
            assert 404 == httpx.get(f"{api}/metrics", timeout=5).status_code
            assert 401 == httpx.get(f"{metrics}/metrics", timeout=5).status_code
            auth = {"Authorization": "Bearer tok-123", "Accept-Encoding": "gzip"}
            answer = httpx.get(f"{metrics}/metrics", headers=auth, timeout=5)
            assert (200, "gzip") == (answer.status_code, answer.headers["content-encoding"])
            assert 5 == sum(missions(answer.text).values())
            assert 404 == httpx.get(f"{metrics}/health", timeout=5).status_code


class TestShutdown:
    @pytest.mark.parametrize(
        ("workers", "second_signal"), [("1", False), ("2", False), ("1", True), ("2", True)]
    )
    def test_missions_in_flight_are_cancelled_and_recorded(
        self, tmp_path: Path, ports: tuple[int, int], workers: str, second_signal: bool
    ) -> None:
        """SIGTERM with missions running: cancelled after the grace (or at a second SIGTERM)."""
        api_port, metrics_port = ports
        env = clean_env(
            tmp_path,
            TASKFORCE_SERVER__SHUTDOWN_GRACE_SECONDS="3600" if second_signal else "1",
            TASKFORCE_METRICS__PORT=str(metrics_port),
        )
        args = ["serve", "--port", str(api_port), "--workers", workers]
        with started(args, env, tmp_path) as child:
            api = f"http://127.0.0.1:{api_port}"
            wait_until_up(child, [f"{api}/health"])
            done = httpx.post(f"{api}/api/v1/execute", json={"mission": "hi", "session_id": "kept"})
            mission = 'tool:sleep {"seconds": 60}\ndone'
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                futures = _post_missions(pool, api, mission, "s")
                _wait_for(child, "mission.started", 5)
                began = time.monotonic()
                child.process.send_signal(signal.SIGTERM)
                if second_signal:
                    _wait_for(child, "server.draining", 1)
                    child.process.send_signal(signal.SIGTERM)
                code = child.process.wait(timeout=60)
                took = time.monotonic() - began
                answers = [f.result() for f in futures]
        how = "a second SIGTERM" if second_signal else "grace 1 s"
        print(f"shutdown with 4 missions in flight, {how}, {workers} worker(s): {took:.2f} s")
        assert 0 == code
        assert 200 == done.status_code
        assert [503] * 4 == [a.status_code for a in answers]
        for i in range(4):
            assert ["cancelled"] == _statuses(tmp_path, f"s{i}")
        assert ["completed"] == _statuses(tmp_path, "kept")
        stopped = [e for e in events(child) if e["event"] == "server.stopped"]
        assert int(workers) == len(stopped)
        # a supervisor says of each of its workers that it stopped, and how
        reaped = [int(str(e["worker"])) for e in events(child) if e["event"] == "worker.stopped"]
        assert ([0, 1] if workers == "2" else []) == sorted(reaped)

    def test_one_signal_to_the_whole_group_only_drains(
        self, tmp_path: Path, ports: tuple[int, int]
    ) -> None:
        """SIGTERM to the process group (systemd, tini -g) is one signal: missions finish.

        Each worker gets it directly and again from the supervisor; the two together must
        not count as the second signal that cancels at once.
        """
        api_port, metrics_port = ports
        env = clean_env(
            tmp_path,
            TASKFORCE_SERVER__SHUTDOWN_GRACE_SECONDS="60",
            TASKFORCE_METRICS__PORT=str(metrics_port),
        )
        args = ["serve", "--port", str(api_port), "--workers", "2"]
        with started(args, env, tmp_path) as child:
            api = f"http://127.0.0.1:{api_port}"
            wait_until_up(child, [f"{api}/health"])
            mission = 'tool:sleep {"seconds": 2}\ndone'
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                futures = _post_missions(pool, api, mission, "g")
                _wait_for(child, "mission.started", 4)
                os.killpg(child.process.pid, signal.SIGTERM)
                code = child.process.wait(timeout=60)
                answers = [f.result() for f in futures]
        assert 0 == code
        assert [200] * 4 == [a.status_code for a in answers]
        assert ["completed"] * 4 == [a.json()["status"] for a in answers]
        assert not [e for e in events(child) if e["event"] == "server.requests.cancelled"]


def _post_missions(
    pool: concurrent.futures.ThreadPoolExecutor, api: str, mission: str, prefix: str
) -> list[concurrent.futures.Future[httpx.Response]]:
    """Send four missions at once, in sessions ``prefix0`` to ``prefix3``."""
    return [
        pool.submit(
            httpx.post,
            f"{api}/api/v1/execute",
            json={"mission": mission, "session_id": f"{prefix}{i}"},
            timeout=60,
        )
        for i in range(4)
    ]


def _wait_for(child: Child, event: str, count: int) -> None:
    """Wait until ``child`` has logged ``event`` at least ``count`` times."""
    deadline = time.monotonic() + 30
    while sum(1 for e in events(child) if e["event"] == event) < count:
        assert time.monotonic() < deadline, child.stderr()
        time.sleep(0.05)


class TestUvicornReload:
    def test_reload_with_web_concurrency_serves_metrics_on_its_port(
        self, tmp_path: Path, ports: tuple[int, int]
    ) -> None:
        """uvicorn --reload runs one process even with WEB_CONCURRENCY=2: /metrics is served."""
        api_port = ports[0]
        watched = tmp_path / "watched"
        watched.mkdir()
        env = clean_env(tmp_path, WEB_CONCURRENCY="2")
        args = ["--factory", "--reload", "--reload-dir", str(watched), "--port", str(api_port)]
        with started(
            [*args, "taskforce.api.server:create_app"], env, tmp_path, module="uvicorn"
        ) as child:
            api = f"http://127.0.0.1:{api_port}"
            wait_until_up(child, [f"{api}/health"])
            sent = send(api, 1)
            assert nonzero(sent) == nonzero(scrape(api_port))
        assert "metrics.shared_port.refused" not in child.stderr()


def _statuses(root: Path, session_id: str) -> list[str]:
    state = json.loads((root / "state" / f"{session_id}.json").read_text(encoding="utf-8"))
    return [m["status"] for m in state["missions"]]


def _foreign_command(server: str, port: int) -> tuple[str, list[str]]:
    """The module and arguments that run create_app with two workers under ``server``."""
    if server == "uvicorn":
        args = ["--factory", "--workers", "2", "--host", "127.0.0.1", "--port", str(port)]
        return "uvicorn", [*args, "taskforce.api.server:create_app"]
    args = ["-k", "uvicorn.workers.UvicornWorker", "-w", "2", "-b", f"127.0.0.1:{port}"]
    return "gunicorn", [*args, "taskforce.api.server:create_app()"]


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
class TestForeignSupervisor:
    """Two workers of uvicorn or gunicorn (which we do not control) running create_app."""

    def test_shared_port_never_serves_one_workers_numbers(
        self, tmp_path: Path, ports: tuple[int, int], server: str
    ) -> None:
        """Without metrics.port every scrape of the shared port is 404, and the log says why."""
        api_port = ports[0]
        module, args = _foreign_command(server, api_port)
        with started(args, clean_env(tmp_path), tmp_path, module=module) as child:
            api = f"http://127.0.0.1:{api_port}"
            wait_until_up(child, [f"{api}/health"])
            send(api, 2)
            codes = {httpx.get(f"{api}/metrics", timeout=5).status_code for _ in range(20)}
            assert {404} == codes
            deadline = time.monotonic() + 30
            while child.stderr().count("metrics.shared_port.refused") < 2:
                assert time.monotonic() < deadline, child.stderr()
                time.sleep(0.05)
        refusal = next(
            line for line in child.stderr().splitlines() if "metrics.shared_port.refused" in line
        )
        # create_app() set logging up from the settings: one JSON object per line
        event = json.loads(refusal)
        assert "metrics.port" in event["fix"]
        assert ("lifecycle", server) == (event["category"], event["server"])

    def test_metrics_port_gives_each_worker_a_listener(
        self, tmp_path: Path, ports: tuple[int, int], server: str
    ) -> None:
        """With metrics.port, the workers take P and P+1, register both, and add up exactly."""
        api_port, metrics_port = ports
        env, targets = _with_targets(tmp_path, metrics_port)
        module, args = _foreign_command(server, api_port)
        with started(args, env, tmp_path, module=module) as child:
            api = f"http://127.0.0.1:{api_port}"
            urls = [f"http://127.0.0.1:{metrics_port + i}/metrics" for i in (0, 1)]
            wait_until_up(child, [*urls, f"{api}/health"])
            sent = send(api, 2)
            scraped = scrape(metrics_port) + scrape(metrics_port + 1)
            assert nonzero(sent) == nonzero(scraped)
            assert 404 == httpx.get(f"{api}/metrics", timeout=5).status_code
            listed = sorted(g["targets"][0] for g in json.loads(targets.read_text("utf-8")))
            assert [f"127.0.0.1:{metrics_port + i}" for i in (0, 1)] == listed


def test_gunicorn_bind_in_tcp_form_gives_each_worker_a_listener(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    """gunicorn -b tcp://HOST:PORT: every worker's listener binds HOST and serves its numbers."""
    api_port, metrics_port = ports
    env, targets = _with_targets(tmp_path, metrics_port)
    _, args = _foreign_command("gunicorn", api_port)
    args = [f"tcp://127.0.0.1:{api_port}" if a.endswith(f":{api_port}") else a for a in args]
    with started(args, env, tmp_path, module="gunicorn") as child:
        api = f"http://127.0.0.1:{api_port}"
        urls = [f"http://127.0.0.1:{metrics_port + i}/metrics" for i in (0, 1)]
        wait_until_up(child, [*urls, f"{api}/health"])
        sent = send(api, 2)
        assert nonzero(sent) == nonzero(scrape(metrics_port) + scrape(metrics_port + 1))
        listed = sorted(g["targets"][0] for g in json.loads(targets.read_text("utf-8")))
        assert [f"127.0.0.1:{metrics_port + i}" for i in (0, 1)] == listed


def test_gunicorn_started_with_fewer_workers_withdraws_the_killed_ones(tmp_path: Path) -> None:
    """A gunicorn of four workers was killed outright (its four entries kept); started again
    with two, its workers withdraw the entries of workers 2 and 3, on which nothing listens,
    and that of a run of the same server on another metrics.port (its label names the
    service); another service's stays. Before, those stayed listed, down for good."""
    api_port = free_ports(5)  # one run: two picked apart could overlap
    metrics_port = api_port + 1
    env, targets = _with_targets(tmp_path, metrics_port)
    killed = [
        {"targets": [f"127.0.0.1:{metrics_port + i}"], "labels": {"worker": str(i)}}
        for i in range(4)
    ]
    service = service_name("127.0.0.1", api_port)
    elsewhere = free_ports(1)  # nothing listens on it
    earlier = {"targets": [f"127.0.0.1:{elsewhere}"], "labels": {SERVICE_LABEL: service}}
    other = {"targets": ["127.0.0.1:1"], "labels": {SERVICE_LABEL: "b/h:1"}}  # not listening
    targets.write_text(json.dumps([*killed, earlier, other]), encoding="utf-8")
    _, args = _foreign_command("gunicorn", api_port)
    with started(args, env, tmp_path, module="gunicorn") as child:
        urls = [f"http://127.0.0.1:{metrics_port + i}/metrics" for i in (0, 1)]
        wait_until_up(child, [*urls, f"http://127.0.0.1:{api_port}/health"])
        deadline = time.monotonic() + 30
        while len(json.loads(targets.read_text("utf-8"))) != 3:  # both workers registered
            assert time.monotonic() < deadline, targets.read_text("utf-8")
            time.sleep(0.05)
        groups = json.loads(targets.read_text("utf-8"))
    assert other in groups
    listed = sorted(g["targets"][0] for g in groups if g != other)
    assert [f"127.0.0.1:{metrics_port + i}" for i in (0, 1)] == listed


def _started_metrics_ports(child: Child) -> list[int]:
    """The metrics ports the ``server.started`` lines of ``child`` name, once one has."""
    deadline = time.monotonic() + 60
    while True:
        ports = [
            int(str(e["metrics_port"])) for e in events(child) if e["event"] == "server.started"
        ]
        if ports:
            return ports
        if child.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"no worker started:\n{child.stderr()}")
        time.sleep(0.1)


def test_a_gunicorn_worker_without_preload_counts_gc_from_its_start(tmp_path: Path) -> None:
    """gunicorn without --preload imports taskforce only after its fork: the worker's
    python_gc_* leave out the 300 full collections its arbiter made before (its config
    file makes them). Before, the worker exported them as its own (301 of generation 2),
    in every worker's sum again and counted anew by increase() on each replacement."""
    api_port = free_ports(3)  # one run: two picked apart could overlap
    metrics_port = api_port + 1
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("import gc\nfor _ in range(300):\n    gc.collect()\n", encoding="utf-8")
    env = clean_env(tmp_path, TASKFORCE_METRICS__PORT=str(metrics_port))
    _, args = _foreign_command("gunicorn", api_port)
    with started(["-c", str(config), *args], env, tmp_path, module="gunicorn") as child:
        # a worker's: metrics_port, or a port above it when another process took that one
        # between free_ports and the worker's start
        url = f"http://127.0.0.1:{_started_metrics_ports(child)[0]}/metrics"
        wait_until_up(child, [url])
        text = httpx.get(url, timeout=10).text
    full = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "python_gc_collections_total" and sample.labels["generation"] == "2"
    ]
    assert len(full) == 1 and full[0] < 300, full


@pytest.mark.parametrize("server", ["uvicorn", "uvicorn --workers 2", "gunicorn -w 2"])
def test_metrics_port_on_the_servers_own_port_stops_the_start_naming_it(
    tmp_path: Path, server: str
) -> None:
    """metrics.port = the port uvicorn or gunicorn serves the API on: refused, naming metrics.port.

    Before, the metrics listener took the port uvicorn had bound but not yet listened on:
    uvicorn failed "address already in use" (its --workers in a loop), and gunicorn's
    workers moved to the ports above, off the range to scrape.
    """
    port = free_ports(2)
    module, args = _foreign_command(server.split()[0], port)
    if server == "uvicorn":
        args = [a for a in args if a not in ("--workers", "2")]
    env = clean_env(tmp_path, TASKFORCE_METRICS__PORT=str(port))
    with started(args, env, tmp_path, module=module) as child:
        deadline = time.monotonic() + 60
        while "invalid setting 'metrics.port'" not in child.stderr():
            assert time.monotonic() < deadline, child.stderr()
            time.sleep(0.05)
        if server != "uvicorn --workers 2":  # which starts its workers again and again
            assert 0 != child.process.wait(timeout=60)
    assert f"the API port {port} is also" in child.stderr()


def test_under_uvicorn_the_metrics_port_errors_name_where_it_was_given(tmp_path: Path) -> None:
    """metrics.port (and metrics.host) from TASKFORCE_CONFIG's file or TASKFORCE_METRICS's
    JSON under uvicorn --factory: the refusal of the API's own port and the bind error
    name that source. Before, both named TASKFORCE_METRICS__PORT (and __HOST), which
    nobody set."""
    port = free_ports(2)
    config = tmp_path / "app.toml"
    config.write_text(f"[metrics]\nport = {port}\n", encoding="utf-8")
    command = [sys.executable, "-m", "uvicorn", "--factory", "--host", "127.0.0.1"]
    command += ["--port", str(port), "taskforce.api.server:create_app"]
    env = clean_env(tmp_path, TASKFORCE_CONFIG=str(config))
    proc = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, timeout=60)
    assert 0 != proc.returncode
    refusal = f"invalid setting 'metrics.port' (in {config}: '{port}'): the API port {port} is"
    assert refusal in proc.stderr.decode()
    env = clean_env(tmp_path, TASKFORCE_METRICS=json.dumps({"port": port + 1, "host": "127.0.0.1"}))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + 1))
        taken.listen()
        proc = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, timeout=60)
    assert 0 != proc.returncode
    reason = f"cannot listen on 127.0.0.1:{port + 1} for metrics (TASKFORCE_METRICS): address"
    assert reason in proc.stderr.decode().replace('\\"', '"')
    assert "TASKFORCE_METRICS__" not in proc.stderr.decode()
