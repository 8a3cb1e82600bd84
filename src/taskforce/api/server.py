"""The FastAPI application: health, missions (plain and SSE), tools, and ``/metrics``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from taskforce import __version__
from taskforce.api._schemas import ExecuteRequest
from taskforce.application.container import Container, build_container
from taskforce.config import Settings, load_settings
from taskforce.errors import MissionError

__all__ = ["create_app"]

_LOG = structlog.get_logger(__name__)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


def create_app(settings: Settings | None = None, container: Container | None = None) -> FastAPI:
    """Create the taskforce HTTP service.

    Args:
        settings: the settings to build a container from; defaults to ``load_settings()``.
            Ignored when ``container`` is given (its own settings are used).
        container: an already built container (for embedding, or to register
            tools before serving). The app does not close a container it was given.

    Returns:
        The FastAPI application, with ``/metrics`` mounted when metrics are enabled.

    Raises:
        ConfigurationError: the settings are invalid; nothing is started.
    """
    owns_container = container is None
    if container is None:
        container = build_container(settings if settings is not None else load_settings())
    ctr = container

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        _LOG.info(
            "server.started",
            category="lifecycle",
            version=__version__,
            llm_provider=ctr.settings.llm.provider,
            metrics_enabled=ctr.metrics is not None,
        )
        try:
            yield
        finally:
            if owns_container:
                await ctr.aclose()
            _LOG.info("server.stopped", category="lifecycle")

    app = FastAPI(title="taskforce", version=__version__, lifespan=lifespan)
    app.state.container = ctr

    @app.exception_handler(MissionError)
    async def mission_error(_: Request, exc: MissionError) -> JSONResponse:
        # A request the executor cannot run as asked is the client's error, like a bad body.
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "llm_provider": ctr.settings.llm.provider,
            "metrics_enabled": ctr.metrics is not None,
        }

    @app.post("/api/v1/execute")
    async def execute(body: ExecuteRequest) -> dict[str, Any]:
        result = await ctr.executor.execute_mission(
            body.mission, agent_type=body.agent_type, session_id=body.session_id
        )
        return result.to_dict()

    @app.post("/api/v1/execute/stream")
    async def execute_stream(body: ExecuteRequest, request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            # aclosing: a client that disconnects cancels this generator, and the
            # mission behind it must be closed (and counted as cancelled) right away.
            stream = ctr.executor.execute_mission_streaming(
                body.mission, agent_type=body.agent_type, session_id=body.session_id
            )
            async with aclosing(stream) as progress:
                async for event in progress:
                    yield _sse(event.kind, event.to_dict())

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/api/v1/tools")
    async def tools() -> dict[str, Any]:
        return {
            "tools": [
                {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters_schema,
                }
                for tool in ctr.tool_registry.list_tools()
            ]
        }

    if ctr.metrics is not None:
        from taskforce.observability import HTTPMetricsMiddleware, MetricsMount, make_metrics_app

        token = ctr.settings.metrics.auth_token
        metrics_app = make_metrics_app(
            ctr.metrics, auth_token=token.get_secret_value() if token is not None else None
        )
        # MetricsMount serves the bare path too: a scrape of /metrics must not be a 307.
        app.router.routes.append(MetricsMount(ctr.settings.metrics.path, app=metrics_app))
        app.add_middleware(HTTPMetricsMiddleware, metrics=ctr.metrics)

    return app
