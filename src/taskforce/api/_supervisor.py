"""``taskforce serve``: bind the sockets, then run the app in this process or in N workers.

The sockets are bound here, before any app code runs, so a port in use stops the
start with one line (exit 2) and ``server.started`` is only logged once they are
bound. With N > 1 workers this process becomes a supervisor: it forks the workers
(each inherits the shared API socket and its own metrics socket, ``metrics.port + i``),
restarts a worker that dies, rewrites the targets file when it does, and passes a
stop signal on. It must stay single-threaded until it forks, and it never builds
an app or a container itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.context import ForkProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from types import FrameType

import structlog

from taskforce.api._listener import WorkerSlot, api_port_clash, bind_socket, metrics_listener
from taskforce.api._serving import (
    STOP_SIGNALS,
    held_signals,
    longest_shutdown_seconds,
    run_worker,
)
from taskforce.api._targets import replace_own_targets, report_failure, service_name
from taskforce.config import Settings, given_in
from taskforce.errors import StartupError

__all__ = ["kill_after_seconds", "resolve_workers", "serve"]

_LOG = structlog.get_logger("taskforce.api")
#: A worker that dies sooner than this after its start is restarted after a pause
#: (``server.max_restart_pause_seconds`` the longest).
_QUICK_DEATH_SECONDS = 1.0
#: The most worker processes ``taskforce serve`` starts (``--workers``, ``WEB_CONCURRENCY``).
MAX_WORKERS = 256
#: Time on top of the longest graceful stop before a worker still alive is killed.
_KILL_MARGIN_SECONDS = 5.0
_POLL_SECONDS = 0.1
_PR_SET_PDEATHSIG = 1  # prctl option, <linux/prctl.h>


def kill_after_seconds(settings: Settings) -> float:
    """How long after the first stop signal a worker still alive is killed.

    The longest its graceful stop may take (``longest_shutdown_seconds``: with the
    PostgreSQL store, closing connections to a database that does not answer too) and
    a margin, so a worker is killed only when it no longer stops of itself.

    Args:
        settings: The workers' settings.

    Returns:
        The time in seconds.
    """
    return longest_shutdown_seconds(settings) + _KILL_MARGIN_SECONDS


def resolve_workers(option: int | None, environ: dict[str, str] | None = None) -> int:
    """Return the worker count: ``--workers``, else ``WEB_CONCURRENCY`` (as uvicorn), else 1.

    Raises:
        StartupError: the count is not a whole number from 1 to :data:`MAX_WORKERS`
            (names its source): a typo must not fork thousands of processes.
    """
    env = os.environ if environ is None else environ
    if option is not None:
        source, raw = "--workers", str(option)
    elif env.get("WEB_CONCURRENCY", "").strip():
        source, raw = "WEB_CONCURRENCY", env["WEB_CONCURRENCY"].strip()
    else:
        return 1
    # ASCII digits only: "²" is a digit to str.isdigit, and no number to int(); and few
    # of them: int() refuses a string of over 4300 digits with a ValueError
    digits = raw.lstrip("0")
    if not (raw.isascii() and raw.isdigit() and len(digits) <= len(str(MAX_WORKERS))):
        count = 0
    else:
        count = int(raw)
    if not 1 <= count <= MAX_WORKERS:
        shown = raw if len(raw) <= 20 else f"{raw[:20]}..."
        raise StartupError(
            f"invalid {source} {shown!r}: must be a whole number from 1 to {MAX_WORKERS}"
        )
    return count


def serve(
    settings: Settings,
    host: str,
    port: int,
    workers: int,
    *,
    has_metrics_port_flag: bool = False,
    config_file: str | None = None,
    received: list[signal.Signals] | None = None,
) -> int:
    """Serve the app on ``host:port`` with ``workers`` processes until stopped.

    The service's entries in ``metrics.targets_file`` are withdrawn when it stops
    on a signal (return 0) and kept when it fails (an exception).

    Args:
        settings: the service's settings.
        host: the API's address (``--host``); the metrics' too, unless ``metrics.host``.
        port: the API's port (``--port``).
        workers: how many worker processes serve.
        has_metrics_port_flag: ``metrics.port`` came from ``--metrics-port``, which a
            bind error then names instead of ``TASKFORCE_METRICS__PORT``.
        config_file: the TOML file the settings were read from (``--config``; by
            default ``TASKFORCE_CONFIG``'s), which a bind error names for the
            ``metrics.port`` and ``metrics.host`` it gave.
        received: the list of :func:`held_signals` the caller holds the stop signals
            in already (``taskforce serve`` does from its start); ``None``: they are
            held here, from when the sockets are bound.

    Returns:
        0, after a stop signal and the drain.

    Raises:
        StartupError: more than one worker with metrics on but no ``metrics.port``,
            a port cannot be bound (the message names host and port), or the app
            failed to start (in the first worker of a slot).
    """
    metrics = settings.metrics
    if workers > 1 and metrics.enabled and metrics.port is None:
        raise StartupError(
            f"{workers} workers need metrics.port (TASKFORCE_METRICS__PORT or --metrics-port): "
            "each worker serves its own metrics on metrics.port + its index"
        )
    metrics_host = metrics.host or host
    # named as the user gave it: a flag, or a setting
    port_from = (
        "--metrics-port"
        if has_metrics_port_flag
        else given_in(settings, "metrics.port", config_file)
    )
    if metrics.enabled and metrics.port is not None:
        clash = api_port_clash(
            (host, port), (metrics_host, metrics.port), workers, named=f"metrics.port ({port_from})"
        )
        if clash is not None:
            raise StartupError(clash)
    api_socket = bind_socket(host, port, what="the API (--host, --port)")
    metrics_sockets: list[socket.socket | None] = [None] * workers
    if metrics.enabled and metrics.port is not None:
        listener = metrics_listener(
            host_from=(
                "--host"
                if metrics.host is None
                else given_in(settings, "metrics.host", config_file)
            ),
            port_from=port_from,
        )
        try:
            last = metrics.port + workers - 1
            if last > 65535:
                raise StartupError(
                    f"metrics.port ({port_from}) {metrics.port} with {workers} workers needs"
                    f" ports {metrics.port}-{last}, past 65535: give a lower port"
                )
            for index in range(workers):
                metrics_sockets[index] = bind_socket(
                    metrics_host, metrics.port + index, what=f"worker {index}'s {listener}"
                )
        except StartupError:
            for sock in (api_socket, *metrics_sockets):
                if sock is not None:
                    sock.close()
            raise
    # With metrics off no worker serves a listener: nothing to list, now or on a restart.
    listed_port = metrics.port if metrics.enabled else None
    # named by the port the API got: two services started with --port 0 are two names
    service = service_name(host, api_socket.getsockname()[1])
    targets = _Targets(
        metrics.targets_file, metrics_host, listed_port, workers, service, metrics.path
    )
    # Only a stop asked for withdraws the entries: a service that failed stays listed,
    # so Prometheus sees its targets down (and TaskforceTargetDown fires) instead of
    # seeing them vanish. A stop signal that comes while the app is being built (before
    # the server or the supervisor handles it) is kept for them: its default action would
    # end the process at once, the entries listed.
    try:
        with contextlib.ExitStack() as holding:
            if received is None:
                received = holding.enter_context(held_signals())
            targets.write(range(workers))
            if workers == 1:
                slot = WorkerSlot(0, metrics_sockets[0])
                if run_worker(settings, api_socket, slot, received=received) != 0:
                    raise StartupError("the service failed to start (see its log above)")
            else:
                _Supervisor(settings, api_socket, metrics_sockets, targets).run(received)
    finally:
        for sock in (api_socket, *metrics_sockets):  # a server may have closed it already
            if sock is not None:
                sock.close()
    targets.write(())
    return 0


@dataclass
class _Targets:
    """The targets file of this service (a no-op without ``metrics.targets_file`` or a port)."""

    path: Path | None
    host: str
    port: int | None
    #: How many workers the service has: the ports it may list, from ``port`` on.
    capacity: int = 1
    #: The service's name (the API's address on this machine): the entries labelled with
    #: it are this service's, whatever ``metrics.port`` listed them.
    service: str | None = None
    #: ``metrics.path``, named in each entry unless it is Prometheus' default.
    metrics_path: str | None = None

    def write(self, workers: range | tuple[()]) -> None:
        """List ``workers`` (none: withdraw this service), keeping other services' entries."""
        if self.path is None or self.port is None:
            return
        port = self.port
        own = [(self.host, port + i) for i in range(self.capacity)]
        try:
            listed = {str(i): (self.host, port + i) for i in workers}
            replace_own_targets(
                self.path,
                own,
                listed,
                first=(self.host, port),
                service=self.service,
                metrics_path=self.metrics_path,
            )
        except OSError as exc:
            report_failure(exc)


@dataclass
class _Slot:
    index: int
    ready: Event
    process: ForkProcess | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    boot_failures: int = 0
    restart_at: float | None = None
    pids: list[int] = field(default_factory=list)
    #: The supervisor's ends of the pipes multiprocessing made for this slot's process.
    pipes: frozenset[int] = frozenset()


class _Supervisor:
    """Runs N forked workers sharing the API socket; restarts the ones that die."""

    def __init__(
        self,
        settings: Settings,
        api_socket: socket.socket,
        metrics_sockets: list[socket.socket | None],
        targets: _Targets,
    ) -> None:
        self._settings = settings
        self._api_socket = api_socket
        self._metrics_sockets = metrics_sockets
        self._targets = targets
        self._context = multiprocessing.get_context("fork")
        self._slots = [_Slot(i, self._context.Event()) for i in range(len(metrics_sockets))]
        self._signals = 0
        self._stop_sent = 0
        self._failed: int | None = None

    def run(self, received: Sequence[signal.Signals] = ()) -> None:
        """Start every worker and supervise them until a stop signal.

        Args:
            received: stop signals that came before the supervisor handled them.

        Raises:
            StartupError: a worker failed its first start, or its replacements kept
                dying before they served.
        """
        originals = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        # Read once the handlers are in: a signal is either in the list or counted there.
        self._signals += len(received)
        try:
            _LOG.info(
                "supervisor.started",
                category="lifecycle",
                workers=len(self._slots),
                pid=os.getpid(),
            )
            for slot in self._slots:
                self._start(slot)
            self._loop()
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)
        _LOG.info("supervisor.stopped", category="lifecycle", pid=os.getpid())
        if self._failed is not None:
            raise StartupError(f"worker {self._failed} failed to start (see its log above)")

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self._signals += 1

    def _start(self, slot: _Slot) -> None:
        slot.ready.clear()
        # The other workers' pipes, which the new one inherits and closes: else worker N
        # would hold 2 * N descriptors it never uses (and a replacement 2 * (N - 1)).
        inherited = sorted(fd for s in self._slots if s is not slot for fd in s.pipes)
        process = self._context.Process(
            target=_worker_main,
            args=(
                self._settings,
                self._api_socket,
                self._metrics_sockets,
                slot.index,
                slot.ready,
                os.getpid(),
                bool(slot.pids),  # a replacement of a worker that served
                inherited,
            ),
            name=f"taskforce-worker-{slot.index}",
        )
        # Blocked across the fork: a stop signal for the new worker waits until it has its
        # own handlers, instead of running the supervisor's inherited one and being lost
        # (the worker would then serve on until killed after the grace).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        before = _open_fds()
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        slot.pipes = _open_fds() - before
        slot.process, slot.started_at, slot.restart_at = process, time.monotonic(), None
        _LOG.info("worker.started", category="lifecycle", worker=slot.index, pid=process.pid)

    def _alive(self) -> list[ForkProcess]:
        return [s.process for s in self._slots if s.process is not None and s.process.is_alive()]

    def _loop(self) -> None:
        stop_deadline: float | None = None
        while True:
            if self._signals > self._stop_sent:
                # First signal: drain (SIGTERM). Second: each worker stops waiting at once
                # (SIGUSR2). A worker only drains on any number of SIGTERMs: under a
                # process-group kill (systemd, tini -g) it gets the operator's one directly
                # as well as this one, and that must not count as a second.
                forwarded = signal.SIGTERM if self._stop_sent == 0 else signal.SIGUSR2
                for process in self._alive():
                    os.kill(process.pid, forwarded)  # type: ignore[arg-type]
                if self._stop_sent == 0:
                    grace = self._settings.server.shutdown_grace_seconds
                    stop_deadline = time.monotonic() + kill_after_seconds(self._settings)
                    _LOG.info("supervisor.stopping", category="lifecycle", grace_seconds=grace)
                self._stop_sent = self._signals
            alive = self._alive()
            if stop_deadline is not None:
                if not alive:
                    # the ones that ended since the last look still get their worker.stopped
                    self._reap(stopping=True)
                    return
                if time.monotonic() > stop_deadline:
                    for process in alive:
                        process.kill()
            sentinels = [p.sentinel for p in alive]
            multiprocessing.connection.wait(sentinels, timeout=_POLL_SECONDS)
            # A stop signal taken during the wait and not passed on yet is a stop too: one
            # sent to the whole process group also ends the workers, a booting one at once
            # (it has no handler yet), and that is no crash nor a failed start.
            self._reap(stopping=stop_deadline is not None or self._signals > self._stop_sent)

    def _reap(self, *, stopping: bool) -> None:
        now = time.monotonic()
        for slot in self._slots:
            process = slot.process
            if process is not None and not process.is_alive():
                process.join()
                code, pid = process.exitcode, process.pid
                process.close()  # its pipes now, not whenever it is collected
                slot.process, slot.pipes = None, frozenset()
                if stopping:
                    _LOG.info(
                        "worker.stopped", category="lifecycle", worker=slot.index, exitcode=code
                    )
                    continue
                _LOG.warning(
                    "worker.exited",
                    category="lifecycle",
                    worker=slot.index,
                    pid=pid,
                    exitcode=code,
                )
                limits = self._settings.server
                slot.boot_failures = 0 if slot.ready.is_set() else slot.boot_failures + 1
                if slot.boot_failures and (
                    not slot.pids or slot.boot_failures >= limits.max_failed_restarts
                ):
                    # The first worker of the slot, or server.max_failed_restarts replacements
                    # in a row, never served: the app cannot start, and restarting it would
                    # loop forever.
                    self._failed = slot.index
                    self._signals = max(self._signals, 1)
                    continue
                slot.pids.append(pid or 0)
                lived = now - slot.started_at
                slot.quick_deaths = slot.quick_deaths + 1 if lived < _QUICK_DEATH_SECONDS else 0
                pause = (
                    min(limits.max_restart_pause_seconds, 0.5 * 2 ** (slot.quick_deaths - 1))
                    if slot.quick_deaths
                    else 0.0
                )
                slot.restart_at = now + pause
            if (
                slot.process is None
                and slot.restart_at is not None
                and not stopping
                and now >= slot.restart_at
            ):
                self._start(slot)
                self._targets.write(range(len(self._slots)))
                _LOG.info(
                    "worker.restarted",
                    category="lifecycle",
                    worker=slot.index,
                    pid=slot.process.pid if slot.process else None,
                )


def _open_fds() -> frozenset[int]:
    """This process's open file descriptors (none where ``/proc`` cannot be read)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return frozenset()
    found = set()
    for name in names:
        try:
            os.fstat(int(name))  # the listing's own descriptor is listed, and closed by now
        except (OSError, ValueError):
            continue
        found.add(int(name))
    return frozenset(found)


def _stop_with_supervisor(supervisor: int) -> None:
    """Have the kernel send SIGTERM when the supervisor dies, even by SIGKILL (Linux).

    Without it an orphaned worker would go on serving the shared ports, and the next
    start would find them in use.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(
    settings: Settings,
    api_socket: socket.socket,
    metrics_sockets: list[socket.socket | None],
    index: int,
    ready: Event,
    supervisor: int,
    restarted: bool,
    inherited: Sequence[int] = (),
) -> None:
    """Body of a forked worker: drain on SIGTERM, stop at once on SIGUSR2 (from the supervisor).

    SIGINT and SIGHUP are the supervisor's to pass on (a terminal's Ctrl-C or hang-up
    reaches the whole group).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal: the supervisor's too
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # blocked by the supervisor across the fork: one that came since is taken now
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    _stop_with_supervisor(supervisor)
    for fd in inherited:  # the other workers' pipes, unused here
        with contextlib.suppress(OSError):
            os.close(fd)
    for other, sock in enumerate(metrics_sockets):
        if other != index and sock is not None:
            sock.close()
    slot = WorkerSlot(index, metrics_sockets[index], restarted=restarted)
    try:
        code = run_worker(
            settings,
            api_socket,
            slot,
            signals=(signal.SIGTERM,),
            force_signals=(signal.SIGUSR2,),
            on_started=ready.set,
        )
    except Exception as exc:  # a bug: multiprocessing would print its traceback as plain text
        sys.excepthook(type(exc), exc, exc.__traceback__)  # the log's line for it
        code = 1
    raise SystemExit(code)
