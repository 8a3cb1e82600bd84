"""The supervisor of ``taskforce serve --workers N``: how it reads a worker's end."""

from __future__ import annotations

import io
import json
import logging
import multiprocessing.connection
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from taskforce.api import _listener, _supervisor
from taskforce.api._targets import SERVICE_LABEL, service_name
from taskforce.config import Settings
from taskforce.errors import StartupError
from taskforce.observability import configure_logging
from tests.support.processes import free_ports

DOCS = Path(__file__).resolve().parents[2] / "docs"


class _Worker:
    """A worker process as the supervisor sees it, ended when the test says so."""

    pid = 4242
    sentinel = 0

    def __init__(self) -> None:
        self.exitcode: int | None = None

    def is_alive(self) -> bool:
        return self.exitcode is None

    def join(self) -> None:
        """Nothing to wait for: it has ended."""

    def close(self) -> None:
        """Nothing to release."""


class TestStopSignal:
    def test_a_group_stop_during_a_workers_boot_is_a_clean_stop(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """SIGTERM to the whole process group (systemd, tini -g) while a worker still boots
        kills that worker (it has no handler yet) as it reaches the supervisor: the
        supervisor stops cleanly, it does not report the worker as failed to start."""
        settings = Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "ws")
        targets = _supervisor._Targets(None, "127.0.0.1", None)
        supervisor = _supervisor._Supervisor(settings, None, [None], targets)  # type: ignore[arg-type]
        worker = _Worker()

        def start(slot: Any) -> None:
            slot.process, slot.started_at = worker, 0.0

        def wait(sentinels: list[int], timeout: float) -> list[int]:
            # one signal to the group: the supervisor's handler runs, the booting worker dies
            supervisor._on_signal(signal.SIGTERM, None)
            worker.exitcode = -signal.SIGTERM
            return sentinels

        monkeypatch.setattr(supervisor, "_start", start)
        monkeypatch.setattr(multiprocessing.connection, "wait", wait)
        with capture_logs() as logs:
            supervisor.run()  # raised StartupError: "worker 0 failed to start"
        events = [(log["event"], log.get("exitcode")) for log in logs]
        assert ("worker.stopped", -signal.SIGTERM) in events
        assert "worker.exited" not in [event for event, _ in events]


class TestWorkerCount:
    @pytest.mark.parametrize("value", ["9" * 5000, "1" + "0" * 4300], ids=["5000", "4301"])
    def test_a_number_too_long_for_int_is_refused_in_one_short_line(self, value: str) -> None:
        """WEB_CONCURRENCY with more digits than int() takes is a StartupError naming it."""
        with pytest.raises(StartupError, match="invalid WEB_CONCURRENCY") as caught:
            _supervisor.resolve_workers(None, {"WEB_CONCURRENCY": value})
        message = str(caught.value)
        assert "\n" not in message
        assert len(message) < 200

    @pytest.mark.parametrize(
        ("value", "workers"),
        [(" 2 ", 2), ("02", 2), ("+2", None), ("2_0", None), ("\uff12", None)],
    )
    def test_web_concurrency_is_ascii_digits_as_the_docs_say(
        self, value: str, workers: int | None
    ) -> None:
        """WEB_CONCURRENCY takes ASCII digits (spaces around them too) and refuses what
        only uvicorn's int() reads (``+2``, ``2_0``, a fullwidth digit), as
        docs/configuration.md says, not "as uvicorn reads it"."""
        text = " ".join((DOCS / "configuration.md").read_text(encoding="utf-8").split())
        assert "`WEB_CONCURRENCY` is a whole number in ASCII digits" in text
        assert "as uvicorn reads it" not in text
        if workers is None:
            with pytest.raises(StartupError, match="invalid WEB_CONCURRENCY"):
                _supervisor.resolve_workers(None, {"WEB_CONCURRENCY": value})
        else:
            assert workers == _supervisor.resolve_workers(None, {"WEB_CONCURRENCY": value})

    @pytest.mark.parametrize(
        ("flag", "source"),
        [(False, "TASKFORCE_METRICS__PORT"), (True, "--metrics-port")],
    )
    def test_metrics_ports_past_65535_name_where_the_port_came_from(
        self, tmp_path: Path, flag: bool, source: str
    ) -> None:
        """metrics.port 65535 with 2 workers: the error names the variable (or flag) and the
        range it needs, and binds nothing."""
        settings = Settings(
            state_dir=tmp_path / "state", workspace_dir=tmp_path / "ws", metrics={"port": 65535}
        )
        with pytest.raises(StartupError) as caught:
            _supervisor.serve(settings, "127.0.0.1", 0, 2, has_metrics_port_flag=flag)
        assert (
            f"metrics.port ({source}) 65535 with 2 workers needs ports 65535-65536, past 65535"
            in str(caught.value)
        )

    @pytest.mark.parametrize(
        ("flag", "source", "workers", "api_port"),
        [
            (False, "TASKFORCE_METRICS__PORT", 1, 9464),
            (True, "--metrics-port", 1, 9464),
            (False, "TASKFORCE_METRICS__PORT", 2, 9465),
        ],
    )
    def test_metrics_ports_on_the_api_port_name_where_the_port_came_from(
        self, tmp_path: Path, flag: bool, source: str, workers: int, api_port: int
    ) -> None:
        """Metrics ports that take the API port: the error names metrics.port and the
        variable (or flag) that set it, also when the port is a later worker's; nothing
        is bound."""
        settings = Settings(
            state_dir=tmp_path / "state", workspace_dir=tmp_path / "ws", metrics={"port": 9464}
        )
        with pytest.raises(StartupError) as caught:
            _supervisor.serve(settings, "127.0.0.1", api_port, workers, has_metrics_port_flag=flag)
        assert f"metrics.port ({source})" in str(caught.value)


class TestWorkerCrash:
    def test_a_worker_that_raises_logs_it_and_exits_1(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A worker whose serving raised (a bug) logs ``process.exception.uncaught``, a
        JSON line with its traceback, and exits 1: multiprocessing would print its plain
        ``Process ForkProcess-1:`` traceback on the log stream otherwise."""
        buf = io.StringIO()
        # restored after the test: the root handlers and the hooks configure_logging sets
        monkeypatch.setattr(logging.getLogger(), "handlers", [])
        monkeypatch.setattr(sys, "excepthook", sys.excepthook)
        monkeypatch.setattr(threading, "excepthook", threading.excepthook)
        configure_logging(fmt="json", stream=buf)
        monkeypatch.setattr(signal, "signal", lambda *_: None)
        monkeypatch.setattr(_supervisor, "_stop_with_supervisor", lambda _: None)

        def crash(*_: object, **__: object) -> int:
            raise RuntimeError("a bug while serving")

        monkeypatch.setattr(_supervisor, "run_worker", crash)
        ready = multiprocessing.get_context("fork").Event()
        with pytest.raises(SystemExit) as stopped:
            _supervisor._worker_main(Settings(), None, [None], 0, ready, 0, False)  # type: ignore[arg-type]  # not used
        assert 1 == stopped.value.code
        assert "" == capsys.readouterr().err
        (line,) = [json.loads(text) for text in buf.getvalue().splitlines()]
        assert ("process.exception.uncaught", "RuntimeError") == (line["event"], line["error_type"])
        assert "a bug while serving" in str(line["exception"])


class TestKillDeadline:
    def test_a_worker_gets_its_whole_graceful_stop_before_the_kill(self) -> None:
        """The kill waits for every wait of a graceful stop, PostgreSQL's close included.

        A worker closing its pool to a database that does not answer takes up to
        ``state.timeout_seconds`` after its records were given up; killed sooner, it
        would leave without its ``server.stopped`` line and its clean exit.
        """
        from taskforce.api._serving import longest_shutdown_seconds

        state = {"backend": "postgres", "dsn": "postgresql://db/taskforce"}
        quick = Settings(state={**state, "timeout_seconds": 1})
        slow = Settings(state={**state, "timeout_seconds": 300})
        for settings in (quick, slow):
            assert _supervisor.kill_after_seconds(settings) > longest_shutdown_seconds(settings)
        waited = _supervisor.kill_after_seconds(slow) - _supervisor.kill_after_seconds(quick)
        assert 299 == waited


class TestTargetsOfAPickedPort:
    def test_two_services_on_port_0_keep_each_others_entries(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Two services of one machine started with ``--port 0``, sharing a targets file,
        are named by the port each got: each keeps the other's entry, while it serves and
        once it stops. Before, both were named ``<host>/127.0.0.1:0``: the second took the
        first's entry for its own, withdrawn when it started and again when it stopped."""
        path = tmp_path / "targets.json"
        metrics_port = free_ports(2)
        bind = _listener.bind_socket

        def bind_picked(host: str, port: int, *, what: str) -> Any:
            # the system's pick for port 0, within the ports this test run may use
            return bind(host, port or free_ports(1), what=what)

        listed: list[dict[int, str]] = []

        def read() -> dict[int, str]:
            groups = json.loads(path.read_text(encoding="utf-8"))
            return {
                int(group["targets"][0].rpartition(":")[2]): group["labels"][SERVICE_LABEL]
                for group in groups
            }

        names: list[str] = []

        def serving(settings: Settings, api_socket: Any, slot: Any, **_: Any) -> int:
            names.append(service_name("127.0.0.1", api_socket.getsockname()[1]))
            if len(names) == 1:  # the first serves: the second starts, serves and stops
                second = _settings(tmp_path / "b", path, metrics_port + 1)
                _supervisor.serve(second, "127.0.0.1", 0, 1, received=[])
            listed.append(read())
            return 0

        monkeypatch.setattr(_supervisor, "bind_socket", bind_picked)
        monkeypatch.setattr(_supervisor, "run_worker", serving)
        first = _settings(tmp_path / "a", path, metrics_port)
        assert 0 == _supervisor.serve(first, "127.0.0.1", 0, 1, received=[])
        a, b = names
        assert a != b
        # while the second served; once it stopped, the first still served
        assert [{metrics_port: a, metrics_port + 1: b}, {metrics_port: a}] == listed
        assert [] == json.loads(path.read_text(encoding="utf-8"))


def _settings(root: Path, targets: Path, metrics_port: int) -> Settings:
    return Settings(
        state_dir=root / "state",
        workspace_dir=root / "ws",
        metrics={"port": metrics_port, "targets_file": targets},
    )
