"""The mission API under ``/api/v1``: execute (plain and SSE), the tool list, sessions.

Every route of the router shares its dependencies (the optional bearer guard),
its strict JSON body parsing and its always-encodable JSON responses, so a
route added to the router later is protected and hardened the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from contextlib import aclosing
from typing import Any, TypeVar

import structlog
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from taskforce.api._admission import admit
from taskforce.api._auth import BearerGuard
from taskforce.api._body import CLIENT_CLOSED_REQUEST, StrictJSONRoute
from taskforce.api._encoding import PathRedactor, Redact, SafeJSONResponse, json_bytes, sse_event
from taskforce.api._event_stream import EventStreamResponse
from taskforce.api._schemas import (
    EXECUTE_ANSWERS,
    STREAM_ANSWERS,
    TOOLS_ANSWERS,
    ExecuteRequest,
    error_answer,
)
from taskforce.api._sessions import add_session_routes
from taskforce.application._mission_support import to_the_end
from taskforce.application.container import Container
from taskforce.core.interfaces.executor import ProgressEvent
from taskforce.core.interfaces.outcome import class_error_type, is_caller_cancelled
from taskforce.errors import MissionError

__all__ = ["CLIENT_CLOSED_REQUEST", "MISSION_ROUTES", "SESSION_READ_ROUTES", "mission_router"]

_LOG = structlog.get_logger(__name__)
_T = TypeVar("_T")

MISSION_ROUTES = ("/api/v1/execute", "/api/v1/execute/stream")
"""The routes that start a mission: each takes a slot of ``api.max_missions_in_flight``."""

SESSION_READ_ROUTES = ("/api/v1/sessions/{session_id}",)
"""The routes that read a session (``GET`` and ``HEAD``): each takes a slot of
``api.max_session_reads_in_flight``."""


class _ClientGone(Exception):
    """The client disconnected before the answer was ready."""


async def _disconnected(request: Request) -> None:
    # The body is read already: the next message is http.disconnect, whenever it comes.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, aw: Awaitable[_T]) -> _T:
    """Await ``aw``; cancel it and raise ``_ClientGone`` if the client disconnects first.

    When the client leaves or the request itself is cancelled (a shutdown), ``aw`` is
    cancelled and waited for, however often the request is cancelled meanwhile: the
    executor waits for a cancelled mission's record at most ``RECORD_SECONDS``, so this
    wait is bounded too, and the mission has ended (its log line written, its record
    saved or left to the executor) before the request ends. The answer is then how the
    mission ended, as its log line and metrics say: a 499 for a client that left first;
    cancelled (the cancellation goes on: a 503); or, when its record was saved before
    the cancellation could stop it, its result.
    """
    work = asyncio.ensure_future(aw)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        try:
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not work.done():
                work.cancel()
                # A cancellation meanwhile (a shutdown) is raised once the mission ended.
                await to_the_end(asyncio.wait([work]))
    except asyncio.CancelledError:
        if work.cancelled() and not _has_left(watch):
            raise
        # It ended after all, or its client had left before: answer as it is counted and
        # logged (its result, a 499), not with a 503.
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
    if work.cancelled() and _has_left(watch):
        raise _ClientGone
    return work.result()


def _has_left(watch: asyncio.Future[None]) -> bool:
    """Whether the client disconnected (``watch`` saw it, rather than being cancelled)."""
    return watch.done() and not watch.cancelled()


def _stream_error(exc: BaseException) -> dict[str, Any]:
    reason = str(exc) if isinstance(exc, MissionError) else "the mission stopped unexpectedly"
    return {"kind": "error", "error": reason, "error_type": type(exc).__name__, "is_final": True}


async def _sse(
    first: ProgressEvent | None, stream: AsyncGenerator[ProgressEvent, None], redact: Redact
) -> AsyncIterator[bytes]:
    # aclosing: a client that disconnects cancels this generator, and the mission
    # behind it must be closed (and counted as cancelled) right away.
    async with aclosing(stream) as progress:
        last = first
        try:
            if first is not None:
                yield sse_event(first.kind, first.to_dict(), redact)
            async for event in progress:
                last = event
                yield sse_event(event.kind, event.to_dict(), redact)
        except Exception as exc:
            # The 200 is sent already: the stream's last word must still say how it ended.
            _LOG.error("api.stream.failed", category="http", error_type=type(exc).__name__)
            yield sse_event("error", _stream_error(exc))
            return
        if last is None or last.kind != "result":
            yield sse_event("error", _stream_error(RuntimeError("no result")))


def mission_router(container: Container) -> APIRouter:
    """Build the ``/api/v1`` router of the mission API.

    Args:
        container: the container whose executor and tools the routes serve.

    Returns:
        The router; guarded by ``api.auth_token`` when that is set.
    """
    token = container.settings.api.auth_token
    guards = [] if token is None else [Depends(BearerGuard(token.get_secret_value()))]
    unauthorized = error_answer("`api.auth_token` is set and the bearer token is missing or wrong.")
    router = APIRouter(
        prefix="/api/v1",
        responses={} if token is None else {401: unauthorized},
        route_class=StrictJSONRoute,
        default_response_class=SafeJSONResponse,
        dependencies=guards,
    )
    executor = container.executor
    dirs = container.settings
    redact = PathRedactor({"state_dir": dirs.state_dir, "workspace_dir": dirs.workspace_dir})
    keepalive = container.settings.api.stream_keepalive_seconds

    # The result is sent as the executor made it; EXECUTE_ANSWERS declares its shape.
    @router.post("/execute", responses=EXECUTE_ANSWERS)
    async def execute(body: ExecuteRequest, request: Request) -> Response:
        """Run one mission; a client that disconnects cancels it."""
        refusal = admit(request)
        if refusal is not None:
            return refusal
        mission = executor.execute_mission(
            body.mission, agent_type=body.agent_type, session_id=body.session_id
        )
        try:
            result = await _unless_disconnected(request, mission)
        except _ClientGone:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        return Response(json_bytes(result.to_dict(), redact), media_type="application/json")

    # StreamingResponse has no media type of its own: FastAPI then declares no JSON 200,
    # only STREAM_ANSWERS' event stream, and the refusals stay JSON.
    @router.post("/execute/stream", responses=STREAM_ANSWERS, response_class=StreamingResponse)
    async def execute_stream(body: ExecuteRequest, request: Request) -> Response:
        """Run one mission and stream its progress as Server-Sent Events."""
        refusal = admit(request)
        if refusal is not None:
            return refusal
        stream = executor.execute_mission_streaming(
            body.mission, agent_type=body.agent_type, session_id=body.session_id
        )
        try:
            # The first event comes after the request is validated: a refused request
            # is a 422 here, before any 200 is sent.
            first: ProgressEvent | None = await anext(stream)
        except StopAsyncIteration:
            first = None
        except BaseException:
            await stream.aclose()
            raise
        return EventStreamResponse(
            _sse(first, stream, redact), keepalive_seconds=keepalive, source=stream
        )

    # The list is sent as built here; TOOLS_ANSWERS declares its shape.
    @router.get("/tools", responses=TOOLS_ANSWERS)
    async def tools() -> Response:
        """List the registered tools with their JSON schemas."""
        try:
            listed = [
                {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters_schema,
                }
                for tool in container.tool_registry.list_tools()
            ]
        except BaseException as exc:
            # A registry of one's own that raises (a bug in it; its own SystemExit too)
            # fails this request only, as a JSON 500 naming the class, never the message.
            if not isinstance(exc, Exception) and is_caller_cancelled(exc):
                raise
            error_type = class_error_type(exc)
            _LOG.error("tool.list.failed", category="tool", error_type=error_type)
            reason = f"could not list the tools ({error_type})"
            return SafeJSONResponse(status_code=500, content={"detail": reason})
        return SafeJSONResponse({"tools": listed})

    # HEAD wherever GET answers (HTTP requires it): the same answer without its body.
    router.add_api_route("/tools", tools, methods=["HEAD"], include_in_schema=False)

    add_session_routes(router, container, redact)
    return router
