"""HTTP server metrics: a pure ASGI middleware counting requests per route *template*.

The route label is the template of the route that matched (``/api/v1/items/{item_id}``;
for a mount, its path, e.g. ``/metrics``), never the raw path, and every request that
matched no route shares the value ``unmatched``; so a scanner walking random URLs adds
no series. The route is the one the router picked and wrote to ``scope["route"]``: the
middleware hands the app a scope that remembers the first route written to it (the
outermost router's; a mounted sub-app's router writes its own later), instead of
matching every route a second time. Only a request answered before any router saw it
(refused by a middleware) is matched here, on the scope as it arrived.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskforce.observability._faults import report_fault
from taskforce.observability.metrics import MetricSet
from taskforce.observability.metrics._catalog import (
    HTTP_DURATION,
    HTTP_METHODS,
    HTTP_REQUESTS,
    OTHER,
    UNMATCHED_ROUTE,
)

__all__ = ["HTTPMetricsMiddleware"]

_METHODS = frozenset(HTTP_METHODS)


class _RouteScope(dict[str, Any]):
    """An ASGI scope that keeps the first ``route`` a router writes to it.

    Every write is made to the scope it was copied from too: a middleware around this
    one (a user's, added after ``create_app``) reads what the app wrote (``route``,
    ``endpoint``, ``path_params``) as it would without metrics.
    """

    __slots__ = ("origin", "route")

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope)
        self.origin = scope
        self.route: Any = None

    # Starlette's Router sets scope["route"] item by item ...
    def __setitem__(self, key: str, value: Any) -> None:
        if key == "route" and self.route is None:
            self.route = value
        super().__setitem__(key, value)
        self.origin[key] = value

    # ... FastAPI's router merges it in with the rest of the route's child scope.
    def update(self, *args: Any, **kwargs: Any) -> None:
        """Update like ``dict.update``; remember the first ``route`` it brings."""
        changes = dict(*args, **kwargs)
        super().update(changes)
        self.origin.update(changes)
        if self.route is None:
            self.route = super().get("route")

    # The other ways to write a dict, written through as well (dict's own skip __setitem__).
    def setdefault(self, key: str, default: Any = None) -> Any:
        """Like ``dict.setdefault``, written through to the original scope."""
        if key not in self:
            self[key] = default
        return self[key]

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.origin.pop(key, None)

    def pop(self, key: str, *default: Any) -> Any:
        """Like ``dict.pop``, written through to the original scope."""
        self.origin.pop(key, None)
        return super().pop(key, *default)


def _template(route: Any) -> str:
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path or "/"
    return UNMATCHED_ROUTE


def _routes_of(app: Any) -> Sequence[Any]:
    router = getattr(app, "router", app)
    routes = getattr(router, "routes", None)
    return routes if isinstance(routes, Sequence) else ()


def _match(routes: Sequence[Any], scope: Scope) -> str:
    # The router's own rule: the first full match, else the first partial one (405).
    partial = None
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
    status already sent, else counts as 503 (the server gave it up: a shutdown, which
    ``taskforce serve`` answers with a 503). A fault while recording is counted (stage
    ``http``), logged once as ``metrics.fault``, and never reaches the client.
    """

    def __init__(self, app: ASGIApp, metrics: MetricSet) -> None:
        """Wrap ``app``.

        Args:
            app: The next ASGI app (the router, or a whole Starlette/FastAPI app).
            metrics: Where the request metrics go.
        """
        self.app = app
        self.metrics = metrics
        self._requests = metrics.counter(HTTP_REQUESTS)
        self._duration = metrics.histogram(HTTP_DURATION)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request through the wrapped app and record it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        observed = _RouteScope(scope)
        status: int | None = None

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        unanswered = 500
        try:
            await self.app(observed, receive, send_observed)
        except asyncio.CancelledError:
            # Cancelled before an answer: the server gave the request up (a shutdown;
            # taskforce serve then answers 503, and a client that left /execute gets
            # its 499 from the route). Counted as what the client is told, not as a 500.
            unanswered = 503
            raise
        except Exception:
            status = None  # the app failed: a 500, whatever it had started to send
            raise
        finally:
            duration = time.perf_counter() - started
            code = unanswered if status is None else status
            try:
                self._record(scope, observed.route, code, duration)
            except Exception as exc:  # observing must not change the response
                report_fault(self.metrics, "HTTPMetricsMiddleware", "http", exc)

    def _record(self, scope: Scope, matched: Any, status_code: int, duration: float) -> None:
        method = scope.get("method", "GET")
        method = method if isinstance(method, str) and method in _METHODS else OTHER
        if matched is not None:
            route = _template(matched)
        else:
            # Answered before routing (a middleware refused it, the app failed early):
            # match the scope as it arrived, as the router would have.
            # scope["app"] is the outermost Starlette app when we sit in its middleware stack.
            route = _match(_routes_of(scope.get("app", self.app)), scope)
        code = str(int(status_code))
        self._requests.labels(method, route, code).inc()
        self._duration.labels(method, route).observe(duration)
