"""Admission control: at most ``api.max_missions_in_flight`` missions run at once per process.

A request to a route that starts a mission is refused with a 503 and a ``Retry-After``
when the process is full: at once, before its body is read, when it arrives to a full
process; otherwise by the route, after its guard and its body, if the last slot went
meanwhile. The slot is taken by the route (so neither an unauthenticated client nor a
body still arriving holds one) and given back by the middleware when the request ends,
however it ends: a stream's answer ends after its mission was closed. Holds
process-wide state: one ``MissionSlots`` per app, shared by all of its requests.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from taskforce.api._encoding import refusal

__all__ = ["RETRY_AFTER_SECONDS", "MissionAdmissionMiddleware", "MissionSlots", "admit"]

_LOG = structlog.get_logger(__name__)

RETRY_AFTER_SECONDS = 5
"""The ``Retry-After`` of a refusal: long enough for a mission to end, short for a client."""

_TICKET = "taskforce.mission_ticket"
"""The scope key under which the middleware hands the route its request's ticket."""


class MissionSlots:
    """How many missions run in this process, out of ``limit``; one event loop only."""

    def __init__(self, limit: int) -> None:
        """Start with every slot free.

        Args:
            limit: the most missions that may run at once (1 or more).

        Raises:
            ValueError: ``limit`` is below 1.
        """
        if limit < 1:
            raise ValueError(f"limit must be 1 or more, not {limit!r}")
        self.limit = limit
        self.in_flight = 0

    @property
    def is_full(self) -> bool:
        """Whether a new mission would be refused now."""
        return self.in_flight >= self.limit


class _Ticket:
    """One request's claim on a slot of its mission route: taken at most once, given back
    exactly once."""

    __slots__ = ("_has_slot", "route", "slots")

    def __init__(self, slots: MissionSlots, route: str) -> None:
        self.slots = slots
        self.route = route
        self._has_slot = False

    def take(self) -> bool:
        """Take a slot unless the process is full; return whether this request holds one."""
        if not self._has_slot and not self.slots.is_full:
            self.slots.in_flight += 1
            self._has_slot = True
        return self._has_slot

    def release(self) -> None:
        """Give the slot back, if this request holds one; later calls do nothing."""
        if self._has_slot:
            self._has_slot = False
            self.slots.in_flight -= 1


def _refusal(slots: MissionSlots, route: str) -> Response:
    """Log the refusal and build its 503; the log line names no mission text."""
    _LOG.warning(
        "api.mission.refused",
        category="http",
        route=route,
        limit=slots.limit,
        retry_after_seconds=RETRY_AFTER_SECONDS,
    )
    return refusal(
        503,
        f"too many missions in flight (limit {slots.limit}); retry later",
        {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def admit(request: Request) -> Response | None:
    """Take a slot for the mission ``request`` starts, or build its refusal.

    Args:
        request: a request that passed through ``MissionAdmissionMiddleware``.

    Returns:
        ``None`` when the mission may start (the middleware gives the slot back when
        the request ends), else the 503 to answer.

    Raises:
        RuntimeError: the request did not pass through the middleware.
    """
    ticket = request.scope.get(_TICKET)
    if not isinstance(ticket, _Ticket):
        raise RuntimeError("MissionAdmissionMiddleware is not installed around this route")
    return None if ticket.take() else _refusal(ticket.slots, ticket.route)


class MissionAdmissionMiddleware:
    """Refuse requests to mission routes when the process is full; free their slots.

    Add it with ``app.add_middleware(MissionAdmissionMiddleware, slots=..., routes=...)``
    before (so inside) the HTTP metrics middleware, which then counts a refusal as a
    503 of its route.
    """

    def __init__(self, app: ASGIApp, slots: MissionSlots, routes: Sequence[BaseRoute]) -> None:
        """Wrap ``app``.

        Args:
            app: the next ASGI app.
            slots: this process's mission slots.
            routes: the routes that start a mission; each calls ``admit``.
        """
        self.app = app
        self.slots = slots
        # (method, path) -> template: the mission routes have no path parameters, so a
        # request is one of them by a dict lookup, not by matching every route again
        self.routes = {
            (method, path): path
            for route in routes
            if isinstance(path := getattr(route, "path", None), str)
            for method in getattr(route, "methods", None) or ()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request; answer 503 at once for a mission route when full."""
        route = self._mission_route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        if self.slots.is_full:
            await _refusal(self.slots, route)(scope, receive, send)
            return
        ticket = _Ticket(self.slots, route)
        scope[_TICKET] = ticket
        try:
            await self.app(scope, receive, send)
        finally:
            ticket.release()

    def _mission_route(self, scope: Scope) -> str | None:
        """The template of the mission route ``scope`` asks for, else ``None``."""
        if scope["type"] != "http":
            return None
        path = scope["path"]
        root_path = scope.get("root_path", "")
        if root_path and path.startswith(root_path):  # mounted: routes see the rest
            path = path[len(root_path) :]
        return self.routes.get((scope["method"], path))
