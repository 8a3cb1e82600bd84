"""Where one process serves ``{metrics.path}``: on the API port, on its own listener, or nowhere.

Decided once, when the app is built:

- ``metrics.port`` unset, a single process: mounted on the API app (the default).
- ``metrics.port`` set: a separate listener; the API port answers 404 for the path.
  A worker of ``taskforce serve`` gets its socket from the supervisor; any other
  process binds ``metrics.port`` (falling forward to a free port under a recognised
  multi-process server) and registers itself in ``metrics.targets_file``, checked
  first as ``taskforce serve`` checks it. As there, a ``metrics.port`` whose ports
  (one per worker) hold the server's own API port is refused.
- ``metrics.port`` unset under uvicorn ``--workers`` or gunicorn: not served at all,
  since one worker's numbers are not the service's; a ``lifecycle`` warning names
  ``metrics.port`` as the fix.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import structlog
from fastapi import FastAPI
from starlette.applications import Starlette

from taskforce.api._absolute_form import AbsoluteFormMiddleware
from taskforce.api._foreign import (
    ForeignSupervisor,
    own_uvicorn_host,
    own_uvicorn_port,
)
from taskforce.api._listener import (
    MetricsListener,
    WorkerSlot,
    api_port_clash,
    bind_first_free,
    bind_socket,
    metrics_listener,
)
from taskforce.api._redirects import relative_slash_redirects
from taskforce.api._targets import (
    register_target,
    report_failure,
    service_name,
    unregister_target,
)
from taskforce.config import Settings, check_targets_file, given_as, given_in
from taskforce.errors import ConfigurationError
from taskforce.observability import (
    HTTPMetricsMiddleware,
    MetricSet,
    MetricsMount,
    count_gc_from_here,
    make_metrics_app,
    refuse_as_json,
)

__all__ = ["MetricsServing"]

_LOG = structlog.get_logger("taskforce.api")
_FALLBACK_HOST = "127.0.0.1"


class MetricsServing:
    """The metrics endpoint of one process, wired into the app and run by its lifespan."""

    def __init__(
        self,
        app: FastAPI,
        settings: Settings,
        metrics: MetricSet | None,
        worker: WorkerSlot | None,
        foreign: ForeignSupervisor | None = None,
    ) -> None:
        """Wire the endpoint into ``app`` (mount or not, HTTP middleware).

        Args:
            app: the API app.
            settings: the container's settings.
            metrics: the container's metric set; ``None`` when metrics are disabled.
            worker: this process's slot when run by ``taskforce serve``; ``None`` otherwise.
            foreign: the multi-process server running this process, when ``worker`` is
                ``None`` and one was recognised (:func:`detect_supervisor`, called from
                the code that builds the app).

        Raises:
            ConfigurationError: ``metrics.targets_file``, which a process that is no
                worker of ``taskforce serve`` registers itself in, is a directory, a
                file that is not a targets file, or in a folder that cannot be made;
                or ``metrics.port`` (with the ports above it, one per worker) holds the
                port the server serves the API on.
        """
        self._settings = settings
        self._read_timeout = settings.api.read_timeout_seconds
        self._max_header_bytes = settings.api.max_header_bytes
        self._max_connections = settings.api.max_connections
        self._worker = worker
        self._foreign = foreign
        self._listener_app: Starlette | None = None
        self._listener: MetricsListener | None = None
        self._registered: tuple[Path, str, int] | None = None
        self.is_refused = False
        if metrics is None:
            return
        if self._foreign is not None and self._foreign.name == "gunicorn":
            # Without --preload, taskforce was imported after gunicorn forked this
            # worker: no at-fork hook ran, and the arbiter's collections would count.
            count_gc_from_here()
        token = self._settings.metrics.auth_token
        metrics_app = make_metrics_app(
            metrics, auth_token=token.get_secret_value() if token is not None else None
        )
        relative_slash_redirects(metrics_app.router)
        # MetricsMount serves the bare path too: a scrape of /metrics must not be a 307.
        mount = MetricsMount(self._settings.metrics.path, app=metrics_app)
        if self._settings.metrics.port is not None:
            if worker is None:  # `taskforce serve` checked it before it bound the API
                self._check_api_port(self._settings.metrics.port)
            targets = self._settings.metrics.targets_file
            if worker is None and targets is not None:
                # This process registers itself: checked as `taskforce serve` checks it
                # before it starts, the folder made and a mistyped path naming another
                # file refused rather than written over.
                check_targets_file(targets)
            self._listener_app = Starlette(routes=[mount])
            self._listener_app.add_middleware(AbsoluteFormMiddleware)
            refuse_as_json(self._listener_app)
            relative_slash_redirects(self._listener_app.router)
        elif self._foreign is not None and self._foreign.is_multiprocess:
            self.is_refused = True
        else:
            app.router.routes.append(mount)
        app.add_middleware(HTTPMetricsMiddleware, metrics=metrics)

    @property
    def port(self) -> int | None:
        """The port of the running metrics listener, if any."""
        return self._listener.port if self._listener is not None else None

    async def start(self) -> None:
        """Start the separate listener (if any) and log a refusal (if any).

        Raises:
            StartupError: the metrics port cannot be bound.
        """
        if self.is_refused and self._foreign is not None:
            _LOG.warning(
                "metrics.shared_port.refused",
                category="lifecycle",
                server=self._foreign.name,
                workers=self._foreign.workers,
                path=self._settings.metrics.path,
                fix="set metrics.port (TASKFORCE_METRICS__PORT): each worker then "
                "serves its own metrics on a port of its own",
            )
        if self._listener_app is None:
            return
        port = self._settings.metrics.port
        assert port is not None  # a listener app exists only with a port
        host = self._settings.metrics.host or self._default_host()
        what = metrics_listener(
            host_from=given_in(self._settings, "metrics.host"),
            port_from=given_in(self._settings, "metrics.port"),
        )
        if self._worker is not None and self._worker.metrics_socket is not None:
            sock = self._worker.metrics_socket
        elif self._foreign is not None and self._foreign.is_multiprocess:
            sock = bind_first_free(host, port, what=what)
        else:
            sock = bind_socket(host, port, what=what)
        self._listener = MetricsListener(
            self._listener_app,
            sock,
            self._read_timeout,
            self._max_header_bytes,
            self._max_connections,
        )
        await self._listener.start()
        targets = self._settings.metrics.targets_file
        if self._worker is None and targets is not None:
            # The supervisor of `taskforce serve` writes the file for its workers.
            label = str(self._listener.port - port)
            path = targets.absolute()
            api_host, api_port, _ = self._api_address()
            service = (
                None if api_host is None or api_port is None else service_name(api_host, api_port)
            )
            try:
                register_target(
                    path,
                    host,
                    self._listener.port,
                    label,
                    first=port,
                    service=service,
                    metrics_path=self._settings.metrics.path,
                )
            except OSError as exc:  # the metrics still serve; only discovery is missing
                report_failure(exc)
            else:
                self._registered = (path, host, self._listener.port)

    async def aclose(self) -> None:
        """Stop the listener and withdraw this process's entry from the targets file."""
        if self._registered is not None:
            path, host, port = self._registered
            self._registered = None
            try:
                unregister_target(path, host, port)
            except OSError as exc:
                report_failure(exc, level="warning")
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await listener.aclose()

    def _check_api_port(self, port: int) -> None:
        """Refuse a ``metrics.port`` range that holds the port the server serves the API on.

        uvicorn binds its port before the app starts but listens on it only after: the
        metrics listener would take it, and the API fail to start ("address already in
        use") or, under uvicorn ``--workers``, its workers die in a loop. gunicorn's
        workers would move to the next ports, off the documented range.

        Raises:
            ConfigurationError: the API's port is among the metrics ports on an address
                that overlaps the API's.
        """
        api_host, api_port, workers = self._api_address()
        if api_host is None or api_port is None:
            return
        host = self._settings.metrics.host or self._default_host()
        clash = api_port_clash((api_host, api_port), (host, port), workers)
        if clash is not None:
            raise ConfigurationError(
                "metrics.port", clash, source=given_as(self._settings, "metrics.port")
            )

    def _api_address(self) -> tuple[str | None, int | None, int]:
        """The host and port the server serves the API on (``None``: not known), its workers."""
        foreign = self._foreign
        if foreign is not None:
            workers = (foreign.workers or 1) if foreign.is_multiprocess else 1
            return foreign.host, foreign.port, workers
        # a plain uvicorn, if it is one
        api_host = own_uvicorn_host(sys.argv, os.environ) or _FALLBACK_HOST
        return api_host, own_uvicorn_port(sys.argv, os.environ), 1

    def _default_host(self) -> str:
        if self._foreign is not None and self._foreign.host:
            return self._foreign.host
        if self._worker is None and self._foreign is None:
            # a plain uvicorn: the host it serves the API on (--host or UVICORN_HOST)
            own = own_uvicorn_host(sys.argv, os.environ)
            if own:
                return own
        return _FALLBACK_HOST
