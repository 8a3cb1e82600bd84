"""Admission control: at most ``api.max_missions_in_flight`` missions and
``api.max_session_reads_in_flight`` session reads run at once per process.

A request to a route that starts a mission (or reads a session) is refused with a 503
and a ``Retry-After`` when its kind is full: at once, before its body is read, when it
arrives to a full process; otherwise by the route, after its guard and its body, if the
last slot went meanwhile. The slot is taken by the route (so neither an unauthenticated
client nor a body still arriving holds one) and given back by the middleware when the
request ends, however it ends: a stream's answer ends after its mission was closed, a
read's once its answer left the process or its client did. Holds process-wide state: one
``MissionSlots`` and one ``SessionReadSlots`` per app, shared by all of its requests.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from taskforce.api._encoding import refusal

__all__ = [
    "READ_RETRY_AFTER_SECONDS",
    "RETRY_AFTER_SECONDS",
    "AdmissionMiddleware",
    "MissionSlots",
    "SessionReadSlots",
    "Slots",
    "admit",
]

_LOG = structlog.get_logger(__name__)

RETRY_AFTER_SECONDS = 5
"""The ``Retry-After`` of a refused mission: long enough for one to end, short for a client."""

READ_RETRY_AFTER_SECONDS = 1
"""The ``Retry-After`` of a refused session read: a read lasts while one session is loaded
and sent."""

_TICKET = "taskforce.admission_ticket"
"""The scope key under which the middleware hands the route its request's ticket."""


class Slots:
    """How many requests of one kind run in this process, out of ``limit``; one event loop only.

    Each subclass is a kind: it names ``noun`` (in a refusal's reason), ``event`` (the
    refusal's log line) and ``retry_after_seconds`` (its ``Retry-After``).
    """

    noun: ClassVar[str]
    event: ClassVar[str]
    retry_after_seconds: ClassVar[int]

    def __init__(self, limit: int) -> None:
        """Start with every slot free.

        Args:
            limit: the most requests of the kind that may run at once (1 or more).

        Raises:
            ValueError: ``limit`` is below 1.
        """
        if limit < 1:
            raise ValueError(f"limit must be 1 or more, not {limit!r}")
        self.limit = limit
        self.in_flight = 0

    @property
    def is_full(self) -> bool:
        """Whether a new request of this kind would be refused now."""
        return self.in_flight >= self.limit


class MissionSlots(Slots):
    """How many missions run in this process, out of ``api.max_missions_in_flight``."""

    noun = "missions"
    event = "api.mission.refused"
    retry_after_seconds = RETRY_AFTER_SECONDS


class SessionReadSlots(Slots):
    """How many session reads (``GET``/``HEAD``) run in this process, out of
    ``api.max_session_reads_in_flight``: each holds a loaded session and its answer."""

    noun = "session reads"
    event = "api.session_read.refused"
    retry_after_seconds = READ_RETRY_AFTER_SECONDS


class _Ticket:
    """One request's claim on a slot of its route: taken at most once, given back exactly once."""

    __slots__ = ("_has_slot", "route", "slots")

    def __init__(self, slots: Slots, route: str) -> None:
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


def _refusal(slots: Slots, route: str) -> Response:
    """Log the refusal and build its 503; the log line names no mission text or session id."""
    _LOG.warning(
        slots.event,
        category="http",
        route=route,
        limit=slots.limit,
        retry_after_seconds=slots.retry_after_seconds,
    )
    return refusal(
        503,
        f"too many {slots.noun} in flight (limit {slots.limit}); retry later",
        {"Retry-After": str(slots.retry_after_seconds)},
    )


def admit(request: Request) -> Response | None:
    """Take a slot for the mission ``request`` starts (or the session it reads), or build
    its refusal.

    Args:
        request: a request that passed through an ``AdmissionMiddleware`` of its route.

    Returns:
        ``None`` when the request may go on (the middleware gives the slot back when it
        ends), else the 503 to answer.

    Raises:
        RuntimeError: the request did not pass through the middleware.
    """
    ticket = request.scope.get(_TICKET)
    if not isinstance(ticket, _Ticket):
        raise RuntimeError("AdmissionMiddleware is not installed around this route")
    return None if ticket.take() else _refusal(ticket.slots, ticket.route)


class AdmissionMiddleware:
    """Refuse requests to the routes of one kind when its slots are full; free their slots.

    Add it with ``app.add_middleware(AdmissionMiddleware, slots=..., routes=...)`` before
    (so inside) the HTTP metrics middleware, which then counts a refusal as a 503 of its
    route; once per kind of slots.
    """

    def __init__(self, app: ASGIApp, slots: Slots, routes: Sequence[BaseRoute]) -> None:
        """Wrap ``app``.

        Args:
            app: the next ASGI app.
            slots: this process's slots of the kind.
            routes: the routes that take one; each calls ``admit``.
        """
        self.app = app
        self.slots = slots
        # (method, path) -> template: a route without path parameters is known by a dict
        # lookup, not by matching every route again
        self.routes: dict[tuple[str, str], str] = {}
        # a route with parameters: its literal start, its pattern, its methods, its template;
        # only a path with that start pays for the pattern
        self.patterns: list[tuple[str, re.Pattern[str], frozenset[str], str]] = []
        for route in routes:
            path = getattr(route, "path", None)
            methods = frozenset(getattr(route, "methods", None) or ())
            pattern = getattr(route, "path_regex", None)
            if not isinstance(path, str):
                continue
            if "{" in path and isinstance(pattern, re.Pattern):
                self.patterns.append((path[: path.index("{")], pattern, methods, path))
            else:
                self.routes.update(((method, path), path) for method in methods)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request; answer 503 at once for a route of the kind when full."""
        route = self._admitted_route(scope)
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

    def _admitted_route(self, scope: Scope) -> str | None:
        """The template of the route of the kind ``scope`` asks for, else ``None``."""
        if scope["type"] != "http":
            return None
        path = scope["path"]
        root_path = scope.get("root_path", "")
        if root_path and path.startswith(root_path):  # mounted: routes see the rest
            path = path[len(root_path) :]
        method = scope["method"]
        found = self.routes.get((method, path))
        if found is None:
            for start, pattern, methods, template in self.patterns:
                if method in methods and path.startswith(start) and pattern.match(path):
                    return template
        return found
