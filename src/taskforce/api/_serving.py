"""How one ``taskforce serve`` process runs the app: a uvicorn server with a bounded shutdown.

The first SIGTERM or SIGINT stops accepting connections and lets running missions
finish for ``server.shutdown_grace_seconds``; those still running then are
cancelled, which records them as ``cancelled`` (state saved, counted). A second
signal skips the wait. Either way the lifespan's shutdown runs, so the container
is closed (after up to ``RECORD_SECONDS`` more for the record writes still under
way: ``AgentExecutor.drain``) and ``server.stopped`` is logged, and the process exits
0. Unlike plain uvicorn, a signal that stopped the server is not raised again afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from types import FrameType

import structlog
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskforce.api._accept_failures import accept_failures_logged
from taskforce.api._encoding import refusal, sse_event
from taskforce.api._limits import ShutdownNotice
from taskforce.api._listener import SCRAPE_DRAIN_SECONDS, WorkerSlot, socket_url
from taskforce.api._read_deadline import (
    DEFAULT_MAX_HEADER_BYTES,
    read_deadline_protocol,
)
from taskforce.api._stop_signals import STOP_SIGNALS, held_signals
from taskforce.api.server import create_app  # imported before the fork: workers start sooner
from taskforce.application.executor import RECORD_SECONDS
from taskforce.config import Settings

__all__ = [
    "STOP_SIGNALS",
    "TaskforceServer",
    "held_signals",
    "longest_shutdown_seconds",
    "run_worker",
]

_LOG = structlog.get_logger("taskforce.api")
#: How long cancelled missions get to write their ``cancelled`` record.
CANCEL_RECORD_SECONDS = RECORD_SECONDS
#: How long the shutdown waits for the API listener's connections to close.
LISTENER_CLOSE_SECONDS = 1.0
#: The exit code of a server whose app failed to start (uvicorn's own).
_STARTUP_FAILURE = 3


def longest_shutdown_seconds(settings: Settings) -> float:
    """The longest a process's graceful stop may take, by the waits it is made of.

    The grace, the cancelled missions' records, the API's connections, a ``/health``
    check in flight, a scrape under way, the record writes still under way and, with the
    PostgreSQL store, closing its connections to a database that does not answer (the
    operator guide's Stopping). A process manager's stop timeout must exceed it.

    Args:
        settings: The process's settings.

    Returns:
        The sum, in seconds.
    """
    state = settings.state
    return (
        settings.server.shutdown_grace_seconds
        + CANCEL_RECORD_SECONDS
        + LISTENER_CLOSE_SECONDS
        + state.health_timeout_seconds
        + SCRAPE_DRAIN_SECONDS
        + RECORD_SECONDS
        + (state.timeout_seconds if state.backend == "postgres" else 0)
    )


class _AnswerCancelled:
    """ASGI wrapper: a request cancelled by the shutdown gets a 503, not a 500 and a traceback.

    A response already under way is ended where it is instead; a Server-Sent Events
    stream first gets its final ``error`` event, so its client knows how it ended. A
    response that was sent whole (a stream whose mission ended anyway, its ``result``
    its last event) is left as it is. Each request also carries the server's
    ``ShutdownNotice``: the app's ``BodyLimitMiddleware`` answers 503 at once to one
    whose body is not whole when the shutdown begins, instead of letting it wait out
    the grace for a body that would only be refused then.
    """

    def __init__(self, app: ASGIApp, notice: ShutdownNotice) -> None:
        self.app = app
        self.notice = notice
        self.is_cancelling = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope = self.notice.given_to(scope)
        started = False
        is_sse = False
        is_sent = False  # the response is whole: nothing may follow it

        async def tracking_send(message: Message) -> None:
            nonlocal started, is_sse, is_sent
            if message["type"] == "http.response.start":
                started = True
                is_sse = any(
                    name.lower() == b"content-type" and value.startswith(b"text/event-stream")
                    for name, value in message.get("headers", ())
                )
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                is_sent = True

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if not self.is_cancelling:
                raise
            # The cancellation was ours and has done its work (the mission is recorded);
            # what is left is to answer the client instead of failing the connection.
            if is_sent:
                return
            reason = "the service is shutting down; the mission was cancelled"
            if started:
                last = {"kind": "error", "error": reason, "error_type": "cancelled"}
                end = sse_event("error", {**last, "is_final": True}) if is_sse else b""
                await send({"type": "http.response.body", "body": end, "more_body": False})
                return
            await refusal(503, reason, {"Connection": "close"})(scope, receive, send)


class TaskforceServer(uvicorn.Server):
    """A uvicorn server whose shutdown is bounded and always runs the app's lifespan shutdown."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        grace_seconds: float,
        read_timeout_seconds: float = 60.0,
        write_timeout_seconds: float | None = None,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_connections: int | None = None,
        signals: Sequence[signal.Signals] = STOP_SIGNALS,
        force_signals: Sequence[signal.Signals] = (),
        on_started: Callable[[], None] | None = None,
        received: Sequence[signal.Signals] = (),
    ) -> None:
        """Create the server.

        Args:
            app: the ASGI app to serve (with its lifespan).
            grace_seconds: how long running requests may go on after the first signal.
            read_timeout_seconds: how long a client may take to send one request
                (``api.read_timeout_seconds``).
            write_timeout_seconds: how long a client may leave its answer unread
                (``api.write_timeout_seconds``); ``None``: no limit.
            max_header_bytes: the longest request head taken (``api.max_header_bytes``).
            max_connections: the most connections held open (``api.max_connections``;
                None: half the open-file limit).
            signals: the signals that stop it (none in tests that stop it by hand).
            force_signals: when given, only these stop waiting at once, and any number of
                ``signals`` just drain (a worker: it gets the supervisor's forwarded
                signal and, under a process-group kill, the same signal directly).
                Without them, a second signal of any kind stops waiting.
            on_started: called once the app has started and the sockets serve.
            received: stop signals that came before the server took them over (still
                filled in until it does): each is handled as it takes them over.
        """
        self._shutdown_notice = ShutdownNotice(_log_refused)
        self._answer_cancelled = _AnswerCancelled(app, self._shutdown_notice)
        super().__init__(
            # workers=1: uvicorn would read WEB_CONCURRENCY itself (and fail on a blank
            # one); the worker count is taskforce's to resolve (see resolve_workers).
            uvicorn.Config(
                self._answer_cancelled,
                log_config=None,
                access_log=True,
                lifespan="on",
                workers=1,
                http=read_deadline_protocol(
                    read_timeout_seconds,
                    write_timeout_seconds=write_timeout_seconds,
                    max_header_bytes=max_header_bytes,
                    max_connections=max_connections,
                ),
            )
        )
        self.grace_seconds = grace_seconds
        self._force_signals = tuple(force_signals)
        self._signals = tuple(dict.fromkeys((*signals, *self._force_signals)))
        self._on_started = on_started
        self._received = received

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve as uvicorn does; a listener out of descriptors is logged once a spell."""
        with accept_failures_logged(asyncio.get_running_loop()):
            await super().serve(sockets=sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start the app and serve the sockets; then report it (see ``on_started``).

        Raises:
            SystemExit: 3, the app's lifespan start-up failed. uvicorn raises it itself from
                0.50 on; an older one returned as from a stop, and the service exited 0.
        """
        await super().startup(sockets=sockets)
        if self.lifespan.should_exit:
            raise SystemExit(_STARTUP_FAILURE)
        if self.started and self._on_started is not None:
            self._on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Handle the stop signals while serving; restore the old handlers, raise nothing after."""
        if threading.current_thread() is not threading.main_thread() or not self._signals:
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in self._signals}
        # Read once they are installed: a signal is either in the list or handled here.
        for sig in list(self._received):
            self.handle_exit(sig, None)
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: drain within the grace. A later one (a force signal): stop waiting."""
        if sig in self._force_signals or (self.should_exit and not self._force_signals):
            self.force_exit = True
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop accepting, drain within the grace, cancel the rest, run the lifespan shutdown."""
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        tasks = self.server_state.tasks
        grace = self.grace_seconds
        # A request whose body is not whole has started nothing: it is refused at once.
        self._shutdown_notice.begin()
        if tasks:
            _LOG.info(
                "server.draining", category="lifecycle", requests=len(tasks), grace_seconds=grace
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # Short waits, so that a second signal (force_exit) is seen at once.
        while tasks and not self.force_exit and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(list(tasks), timeout=min(0.1, remaining))
        if tasks:
            pending = list(tasks)
            _LOG.warning(
                "server.requests.cancelled",
                category="lifecycle",
                requests=len(pending),
                reason="second signal" if self.force_exit else "shutdown grace expired",
            )
            self._answer_cancelled.is_cancelling = True
            for task in pending:
                task.cancel("taskforce is shutting down")
            await asyncio.wait(pending, timeout=CANCEL_RECORD_SECONDS)
        for server in self.servers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), timeout=LISTENER_CLOSE_SECONDS)
        # Unlike uvicorn on a forced exit, always: it closes the container, logs server.stopped.
        await self.lifespan.shutdown()


def _log_refused(requests: int) -> None:
    """Log requests that the shutdown answered 503 before their body was whole."""
    _LOG.info("server.requests.refused", category="lifecycle", requests=requests)


def run_worker(
    settings: Settings,
    api_socket: socket.socket,
    slot: WorkerSlot,
    *,
    signals: Sequence[signal.Signals] = STOP_SIGNALS,
    force_signals: Sequence[signal.Signals] = (),
    on_started: Callable[[], None] | None = None,
    received: Sequence[signal.Signals] = (),
) -> int:
    """Serve the app on sockets bound by the caller until a stop signal; return the exit code.

    Args:
        settings: the service's settings.
        api_socket: the listening API socket (shared by every worker).
        slot: this worker's index and metrics socket.
        signals: the signals this process stops on.
        force_signals: the signals that stop it waiting at once (see ``TaskforceServer``).
        on_started: called once the worker serves (the supervisor's readiness signal).
        received: stop signals the caller took while the app was being built (see
            :func:`held_signals`): the server stops on them once it runs.

    Returns:
        0 once stopped; 3 when the app failed to start (its lifespan raised).
    """
    app = create_app(settings, worker=replace(slot, url=socket_url(api_socket)))
    server = TaskforceServer(
        app,
        grace_seconds=settings.server.shutdown_grace_seconds,
        read_timeout_seconds=settings.api.read_timeout_seconds,
        write_timeout_seconds=settings.api.write_timeout_seconds,
        max_header_bytes=settings.api.max_header_bytes,
        max_connections=settings.api.max_connections,
        signals=signals,
        force_signals=force_signals,
        on_started=on_started,
        received=received,
    )
    try:
        server.run(sockets=[api_socket])
    except SystemExit as exc:  # 3 when the lifespan start-up failed (TaskforceServer.startup)
        return exc.code if isinstance(exc.code, int) else 1
    return 0
