"""HTTP server metrics: a pure ASGI middleware counting requests per route *template*.

The route label is the template of the route that matches (``/api/v1/items/{item_id}``;
for a mount, its path, e.g. ``/metrics``), never the raw path, and every request that
matches no route shares the value ``unmatched``; so a scanner walking random URLs adds
no series. The match is computed on the scope as it arrives, before the router (or a
mounted sub-app) rewrites it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskforce.observability.metrics import MetricSet
from taskforce.observability.metrics._catalog import UNMATCHED_ROUTE

__all__ = ["HTTPMetricsMiddleware", "route_template"]


def _routes_of(app: Any) -> Sequence[BaseRoute]:
    router = getattr(app, "router", app)
    routes = getattr(router, "routes", None)
    return routes if isinstance(routes, Sequence) else ()


def _template(route: BaseRoute) -> str:
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path or "/"
    return UNMATCHED_ROUTE


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """Return the template of the route Starlette's router would pick for ``scope``.

    The first full match wins; else the first partial one (a known path with another
    method, served as 405); else ``unmatched``.

    Args:
        routes: The app's routes, in order.
        scope: An ``http`` scope as it reaches the app.

    Returns:
        The route template, the mount path, or ``unmatched``.
    """
    partial: BaseRoute | None = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return _template(route)
        if match is Match.PARTIAL and partial is None:
            partial = route
    return _template(partial) if partial is not None else UNMATCHED_ROUTE


class HTTPMetricsMiddleware:
    """Count every request and time it, by method, route template and status code.

    Add it with ``app.add_middleware(HTTPMetricsMiddleware, metrics=metric_set)`` or wrap
    an app directly. Non-HTTP scopes pass through untouched. The status comes from the
    ``http.response.start`` message; the duration runs to the end of the response body
    (so a server-sent-event stream is timed until it closes). An exception from the app
    is counted as status 500 and re-raised unchanged; a cancelled request keeps the
    status already sent, else 500. A fault while recording is counted (stage ``http``)
    and never reaches the client.
    """

    def __init__(self, app: ASGIApp, metrics: MetricSet) -> None:
        """Wrap ``app``.

        Args:
            app: The next ASGI app (the router, or a whole Starlette/FastAPI app).
            metrics: Where the request metrics go.
        """
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request through the wrapped app and record it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            # scope["app"] is the outermost Starlette app when we sit in its middleware stack
            route = route_template(_routes_of(scope.get("app", self.app)), scope)
        except Exception:
            self.metrics.record_fault("http")
            route = UNMATCHED_ROUTE
        method = scope.get("method", "GET")
        status: int | None = None

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        failed = False
        try:
            await self.app(scope, receive, send_observed)
        except Exception:
            failed = True
            raise
        finally:
            duration = max(0.0, time.perf_counter() - started)
            code = 500 if failed or status is None else status
            try:
                self.metrics.record_http_request(method, route, code, duration)
            except Exception:  # observing must not change the response
                self.metrics.record_fault("http")
