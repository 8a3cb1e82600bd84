"""The FastAPI application: health, the mission API, the docs and ``/metrics``, put together."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import structlog
from fastapi import FastAPI

from taskforce import __version__
from taskforce.api._absolute_form import AbsoluteFormMiddleware
from taskforce.api._admission import AdmissionMiddleware, MissionSlots, SessionReadSlots
from taskforce.api._encoding import SafeJSONResponse
from taskforce.api._errors import install_error_handlers
from taskforce.api._foreign import detect_supervisor
from taskforce.api._health import StateStoreCheck
from taskforce.api._limits import BodyLimitMiddleware
from taskforce.api._listener import WorkerSlot
from taskforce.api._logs import configure_from_settings
from taskforce.api._metrics_serving import MetricsServing
from taskforce.api._redirects import relative_slash_redirects
from taskforce.api._routes import MISSION_ROUTES, SESSION_READ_ROUTES, mission_router
from taskforce.application.container import Container, build_container
from taskforce.application.sweep import SessionSweeper
from taskforce.config import Settings, given_in, load_settings
from taskforce.errors import StateStoreError, StateStoreUnavailableError
from taskforce.observability import share_log_stream

__all__ = ["create_app"]

_LOG = structlog.get_logger(__name__)


def create_app(
    settings: Settings | None = None,
    container: Container | None = None,
    *,
    worker: WorkerSlot | None = None,
) -> FastAPI:
    """Create the taskforce HTTP service.

    Args:
        settings: the settings to build a container from; defaults to ``load_settings()``,
            and then, unless structlog is configured already, logging is set up from
            them (how a foreign server such as ``uvicorn --factory`` gets it). Ignored
            when ``container`` is given (its own settings are used).
        container: an already built container (for embedding, or to register
            tools before serving). The app does not close a container it was given.
        worker: set by ``taskforce serve`` for each of its workers (index and the
            metrics socket it bound); leave it out otherwise.

    Returns:
        The FastAPI application. With metrics enabled, ``{metrics.path}`` is mounted
        on it, or served by a listener of its own on ``metrics.port`` while the app
        runs, or (under uvicorn ``--workers`` or gunicorn without ``metrics.port``)
        not served at all.

    Raises:
        ConfigurationError: the settings are invalid; nothing is started.
    """
    owns_container = container is None
    if container is None:
        if settings is None:
            settings = load_settings()
            if not structlog.is_configured():
                # Built by a foreign server (uvicorn --factory, gunicorn): nothing set
                # logging up, and the settings' format, level, categories and secret
                # redaction must hold there too.
                configure_from_settings(settings)
        container = build_container(settings)
    ctr = container

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Connects the state store on the server's own loop (a pool belongs to one loop).
        try:
            await ctr.open()
        except StateStoreError as exc:
            # A first start refuses (the service would come up without its sessions); a
            # worker replacing one that served must not, or one database outage plus one
            # crash would take the whole service down. Its store connects on its next call.
            is_unavailable = isinstance(exc, StateStoreUnavailableError)
            if worker is None or not worker.restarted or not is_unavailable:
                # The traceback a server logs (uvicorn --factory, gunicorn) ends with the
                # line taskforce serve prints: the setting to check, never the DSN.
                line = exc.start_up_line(partial(given_in, ctr.settings))
                exc.add_note(f"taskforce: {line}")
                raise
            _LOG.warning("state.unavailable", category="state", error=str(exc))
        await metrics_serving.start()
        _LOG.info(
            "server.started",
            category="lifecycle",
            version=__version__,
            llm_provider=ctr.settings.llm.provider,
            metrics_enabled=ctr.metrics is not None,
            url=worker.url if worker is not None else None,
            metrics_port=metrics_serving.port,
            worker=worker.index if worker is not None else None,
            pid=os.getpid(),
        )
        # expired sessions are swept in the background while the app runs
        sweeper.start()
        try:
            yield
        finally:
            try:
                await sweeper.aclose()  # before the store closes under it
                await store_check.aclose()
                await metrics_serving.aclose()
                if owns_container:
                    await ctr.aclose()
            finally:
                _LOG.info("server.stopped", category="lifecycle")

    api = ctr.settings.api
    docs = api.docs_enabled
    app = FastAPI(
        title="taskforce",
        version=__version__,
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.container = ctr
    install_error_handlers(app)
    # Added before the metrics middleware, so inside it: a 413 or 408 is counted like any answer.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=api.max_body_bytes,
        read_timeout_seconds=api.read_timeout_seconds,
    )
    routes = mission_router(ctr).routes
    slots = MissionSlots(api.max_missions_in_flight)
    read_slots = SessionReadSlots(api.max_session_reads_in_flight)
    # Inside the metrics middleware too: a refusal is counted as a 503 of its route.
    for kind, paths in ((slots, MISSION_ROUTES), (read_slots, SESSION_READ_ROUTES)):
        app.add_middleware(
            AdmissionMiddleware,
            slots=kind,
            routes=[route for route in routes if getattr(route, "path", None) in paths],
        )
    foreign = detect_supervisor() if worker is None else None
    if foreign is not None and foreign.is_multiprocess:
        # Its other workers write the same standard error, and no fork told this one so.
        share_log_stream()
    metrics_serving = MetricsServing(app, ctr.settings, ctr.metrics, worker, foreign)
    # Outside the metrics middleware (added just now): a request for
    # http://host:port/health is routed, and counted, as one for /health.
    app.add_middleware(AbsoluteFormMiddleware)
    store_check = StateStoreCheck(ctr.state_store, ctr.settings.state.health_timeout_seconds)
    sweeper = SessionSweeper(
        ctr.state_store, ctr.settings.state.sweep_interval_seconds, ctr.session_folders
    )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        # "degraded" stays a 200: a probe that failed here would restart or unroute a
        # process whose missions without file tools still run, and a burst that fills
        # the pool for a moment is no reason to. Operators alert on the body instead.
        # An unreachable state store leaves "status" alone too: restarting every replica
        # would not bring its database back, and the process still answers.
        state_store = await store_check.report()
        pool = ctr.tool_pool
        # the file store's own threads (a store without threads has no such attributes)
        store_busy = getattr(ctr.state_store, "threads_busy", None)
        store_size = getattr(ctr.state_store, "thread_count", None)
        saturated = (pool is not None and pool.is_saturated) or (
            type(store_busy) is int and type(store_size) is int and store_busy >= store_size
        )
        body: dict[str, Any] = {
            "status": "degraded" if saturated else "ok",
            "version": __version__,
            "llm_provider": ctr.settings.llm.provider,
            "metrics_enabled": ctr.metrics is not None,
        }
        if pool is not None:
            body["tool_threads"] = {"busy": pool.busy, "size": pool.size}
        if type(store_busy) is int and type(store_size) is int:
            body["state_threads"] = {"busy": store_busy, "size": store_size}
        # this process's missions against api.max_missions_in_flight (a full one refuses more)
        body["missions"] = {"in_flight": slots.in_flight, "limit": slots.limit}
        # and its session reads against api.max_session_reads_in_flight
        body["session_reads"] = {"in_flight": read_slots.in_flight, "limit": read_slots.limit}
        if state_store is not None:
            body["state_store"] = state_store
        return body

    # HEAD too, for load balancers that probe with it (the same answer without its body).
    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)

    # The router's routes join the app's own list (as include_router did before FastAPI
    # kept an included router as one opaque entry): the HTTP metrics label requests
    # with the templates of the app's routes.
    app.router.routes.extend(routes)
    # A slash redirect's Location is the path alone, never the client's Host header.
    relative_slash_redirects(app.router)

    return app
