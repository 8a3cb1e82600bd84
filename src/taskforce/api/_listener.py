"""The separate metrics listener: ``{metrics.path}`` served on ``metrics.port`` in this process.

It is a second uvicorn server on the running event loop, started and stopped by the
app's lifespan, that never touches signal handlers (the main server owns them). A
worker of ``taskforce serve`` gets its socket already bound from the supervisor; any
other process binds ``metrics.port`` itself, and, under a recognised multi-process
server, falls forward to the next free port and registers it in the targets file.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from dataclasses import dataclass

import structlog
import uvicorn
from starlette.applications import Starlette

from taskforce.api._read_deadline import (
    DEFAULT_MAX_HEADER_BYTES,
    read_deadline_protocol,
)
from taskforce.errors import StartupError

__all__ = [
    "SCRAPE_DRAIN_SECONDS",
    "MetricsListener",
    "WorkerSlot",
    "api_port_clash",
    "bind_first_free",
    "bind_socket",
    "bound_socket",
    "metrics_listener",
    "socket_url",
]

_LOG = structlog.get_logger("taskforce.api")
#: How long the listener waits for an unfinished scrape when the process stops.
SCRAPE_DRAIN_SECONDS = 2
_BACKLOG = 2048


@dataclass(frozen=True)
class WorkerSlot:
    """One worker of ``taskforce serve``: its index and its metrics socket (bound by the parent)."""

    index: int
    metrics_socket: socket.socket | None = None
    #: A replacement for a worker that had served: it starts even while the state
    #: database is unreachable (the service is up; its missions fail until it is back).
    restarted: bool = False
    #: Where the API socket listens, as ``server.started`` tells it (see :func:`socket_url`).
    url: str | None = None


def metrics_listener(
    *, host_from: str = "TASKFORCE_METRICS__HOST", port_from: str = "TASKFORCE_METRICS__PORT"
) -> str:
    """What a metrics listener is for, in a bind error: what chose its address and port.

    Args:
        host_from: where its address came from (a variable, or ``--host``).
        port_from: where its port came from (a variable, or ``--metrics-port``).

    Returns:
        e.g. ``"metrics (TASKFORCE_METRICS__HOST, --metrics-port)"``; one source that
        gave both is named once (``"metrics (in app.toml)"``).
    """
    if host_from == port_from:
        return f"metrics ({host_from})"
    return f"metrics ({host_from}, {port_from})"


#: What a metrics listener is for, in a bind error, when only settings chose its address.
METRICS_LISTENER = metrics_listener()

# Addresses that bind every interface, and so collide with any other address.
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def api_port_clash(
    api: tuple[str, int], metrics: tuple[str, int], workers: int = 1, *, named: str = "metrics.port"
) -> str | None:
    """Say why the API's port cannot also be a metrics port; ``None`` when it is not one.

    Args:
        api: the host and port the API listens on.
        metrics: ``metrics.host`` (or its default) and ``metrics.port``.
        workers: how many metrics ports there are, from ``metrics.port`` on.
        named: the setting as the message names it, with where it was given
            (``"metrics.port (--metrics-port)"``).

    Returns:
        The reason, e.g. ``"the API port 8000 is also metrics.port: ..."``, when the
        API's port is among the metrics ports on an address that overlaps its own.
    """
    (api_host, api_port), (host, port) = api, metrics
    if not (host == api_host or _WILDCARDS & {host, api_host}):
        return None
    if not port <= api_port < port + workers:
        return None
    taken = (
        named
        if workers == 1
        else f"among the workers' metrics ports {port}-{port + workers - 1}, from {named}"
    )
    return f"the API port {api_port} is also {taken}: give metrics a port of their own"


def bind_socket(host: str, port: int, *, what: str) -> socket.socket:
    """Bind and listen on ``host:port``, inheritable so worker processes can share it.

    Args:
        host: address to bind (IPv4, IPv6 or a name); ``::`` is every address of both
            versions (see :func:`bound_socket`).
        port: TCP port; 0 picks a free one.
        what: what the socket is for, named in the error (``"the API (--host, --port)"``,
            ``"metrics"``): the flags or settings that chose the address, where known.

    Returns:
        The listening socket.

    Raises:
        StartupError: the address cannot be bound (in use, not local, not resolvable,
            not a host name at all, an IPv6 address in brackets, an address family the
            kernel lacks); the message is one line naming host and port.
    """
    if host.startswith("[") and host.endswith("]"):
        # A URL's form: no resolver takes it, and a lookup of it may wait on DNS first.
        bare = host[1:-1]
        raise StartupError(
            f"cannot listen on {host}:{port} for {what}: "
            f"write an IPv6 address without brackets ({bare}, not {host})"
        )
    try:
        sock = bound_socket(host, port)
        try:
            sock.listen(_BACKLOG)
        except OSError:
            sock.close()
            raise
    except socket.gaierror as exc:
        raise StartupError(
            f"cannot listen on {_at(host, port)} for {what}: {exc.strerror}"
        ) from exc
    except UnicodeError as exc:  # the IDNA codec: an empty label, one over 63 characters
        named = f"cannot listen on {host!r}:{port} for {what}"
        raise StartupError(f"{named}: not a valid host name") from exc
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        if exc.errno == errno.EAFNOSUPPORT and ":" in host:
            reason = f"{reason} (this kernel has no IPv6: give an IPv4 address, 0.0.0.0 for all)"
        raise StartupError(f"cannot listen on {_at(host, port)} for {what}: {reason}") from exc
    sock.set_inheritable(True)
    return sock


def _at(host: str, port: int) -> str:
    """``host:port`` as a URL writes it: an IPv6 address in brackets (``[::1]:8000``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` as the listeners bind it (address reuse, both
    IP versions on an IPv6 wildcard: ``::`` takes IPv4 connections too, whatever the
    system's ``net.ipv6.bindv6only``); not listening yet.

    Raises:
        socket.gaierror: ``host`` cannot be resolved.
        UnicodeError: ``host`` is no valid host name (the IDNA codec refuses it).
        OSError: the address cannot be bound (in use, not local).
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def socket_url(sock: socket.socket) -> str:
    """Return the ``http://`` URL of a listening socket: the address and port it is bound to.

    The port is the one the socket got (``--port 0`` picks a free one), the address
    the one it was bound to (a host name resolved, an IPv6 address in brackets).
    """
    host, port = sock.getsockname()[:2]
    return f"http://{_at(host, port)}"


def bind_first_free(host: str, port: int, *, what: str = METRICS_LISTENER) -> socket.socket:
    """Bind ``port`` or, when it is taken, the next free port above it.

    ``what``: the listener, named in the error as for :func:`bind_socket`.

    Raises:
        StartupError: no port from ``port`` to 65535 can be bound.
    """
    for candidate in range(port, 65536):
        try:
            return bind_socket(host, candidate, what=what)
        except StartupError as exc:
            if not isinstance(exc.__cause__, OSError) or exc.__cause__.errno != errno.EADDRINUSE:
                raise
    raise StartupError(f"cannot listen on {_at(host, port)} for {what}: no free port above it")


class MetricsListener:
    """Serves a metrics ASGI app on one socket until :meth:`aclose`."""

    def __init__(
        self,
        app: Starlette,
        sock: socket.socket,
        read_timeout_seconds: float,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_connections: int | None = None,
    ) -> None:
        """Prepare (not start) the listener.

        Args:
            app: the ASGI app answering ``{metrics.path}`` (404 for any other path).
            sock: a bound, listening socket; closed by :meth:`aclose`.
            read_timeout_seconds: how long a client may take to send one request.
            max_header_bytes: the longest request head taken (``api.max_header_bytes``).
            max_connections: the most connections held open (``api.max_connections``;
                None: half the open-file limit).
        """
        self.host, self.port = sock.getsockname()[:2]
        self._sock = sock
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            # Scrapes get no access lines; see read_deadline_protocol for why not here.
            access_log=True,
            timeout_graceful_shutdown=SCRAPE_DRAIN_SECONDS,
            workers=1,  # never read WEB_CONCURRENCY (see TaskforceServer)
            http=read_deadline_protocol(
                read_timeout_seconds,
                is_access_logged=False,
                max_header_bytes=max_header_bytes,
                max_connections=max_connections,
            ),
        )
        # Never serve(): that would take over the signal handlers of the main server.
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start serving; return once the listener accepts connections.

        Raises:
            StartupError: the server could not start on the socket.
        """
        server = self._server
        # uvicorn's serve() minus its "Started server process" line, which the main
        # server of this process has logged already.
        server.config.load()
        server.lifespan = server.config.lifespan_class(server.config)
        try:
            await server.startup(sockets=[self._sock])
        except OSError as exc:
            raise StartupError(f"the metrics listener on port {self.port} did not start") from exc
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        await self._server.main_loop()
        await self._server.shutdown(sockets=[self._sock])

    async def aclose(self) -> None:
        """Stop serving, let an unfinished scrape end, close the socket."""
        if self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._task = None

    async def __aenter__(self) -> MetricsListener:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
