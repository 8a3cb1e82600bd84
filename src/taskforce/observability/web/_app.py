"""The ``/metrics`` ASGI sub-app: serves a ``MetricSet``'s registry in the text format.

aioprometheus' own Starlette handler reads ``request.app.state.registry`` and silently
falls back to its global ``REGISTRY``; in a mounted app ``request.app`` is the sub-app,
so the registry goes on the sub-app's ``state`` (and our endpoint uses the MetricSet it
was built with anyway). Rendering runs on the event loop, because the children have no
locks, in slices that yield to the loop in between (``MetricSet.render_async``); only
gzip of a large body moves to a worker thread (it touches bytes, not metrics).
"""

from __future__ import annotations

import asyncio
import gzip
import hmac
from collections.abc import Mapping

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Mount, Route
from starlette.types import Scope

from taskforce.core.interfaces.log import MAX_QUOTED_CHARS, cut_text
from taskforce.observability._faults import report_fault
from taskforce.observability.metrics import CONTENT_TYPE, MetricSet

__all__ = [
    "CONTENT_TYPE",
    "MetricsMount",
    "bearer_token",
    "is_authorization_sent",
    "make_metrics_app",
    "refuse_as_json",
]

_LOG = structlog.get_logger("taskforce.observability.metrics")
_GZIP_INLINE_LIMIT = 64 * 1024  # below this, compressing is faster than a thread hop
_GZIP_LEVEL = 6


def _accepts_gzip(header: str) -> bool:
    # RFC 9110 12.5.3: gzip's own entry (x-gzip is the same coding) decides wherever it
    # stands; "*" speaks only for codings the header does not name.
    named: float | None = None
    wildcard: float | None = None
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        coding = coding.strip().lower()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if coding == "*":
            wildcard = quality if wildcard is None else max(wildcard, quality)
        else:
            named = quality if named is None else max(named, quality)
    chosen = named if named is not None else wildcard
    return chosen is not None and chosen > 0.0


def _client(request: Request) -> str | None:
    """The client's address as a log line keeps it: cut to ``MAX_QUOTED_CHARS`` characters.

    It is what the server says: behind a proxy on loopback, the ``X-Forwarded-For`` a peer
    sent (uvicorn's ``forwarded_allow_ips``), which may be any text a request head holds.
    """
    client = request.client
    return cut_text(client.host, MAX_QUOTED_CHARS) if client is not None else None


def _refusal(status_code: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


async def _http_exception(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _refusal(exc.status_code, exc.detail, exc.headers)


def refuse_as_json(app: Starlette) -> None:
    """Make ``app`` answer its own refusals (404, 405 with ``Allow``) as the API does.

    Starlette's default handler writes them as plain text (``Method Not Allowed``);
    every other path of the service answers ``{"detail": reason}`` as JSON, and so
    must the metrics path and the ``metrics.port`` listener.
    """
    app.add_exception_handler(HTTPException, _http_exception)


def bearer_token(request: Request) -> bytes | None:
    """The token of ``Authorization: Bearer <token>``, as the bytes the client sent.

    Starlette decodes a header's bytes as Latin-1; encoding them back gives the bytes
    sent, which a client writes as UTF-8 (Prometheus does): a token is compared as
    those, not as the text. The scheme is case-insensitive (RFC 9110). The mission
    API's guard reads its token with this too.

    Returns:
        The token, or ``None`` for no header, another scheme, an empty token, or several
        ``Authorization`` headers that differ: HTTP allows one, and a proxy in front that
        read another than the first would have let through another request than this.
    """
    given = request.headers.getlist("authorization")
    if len(given) > 1 and len(set(given)) > 1:
        return None
    raw = (given[0] if given else "").encode("latin-1")
    scheme, _, token = raw.partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip()


def is_authorization_sent(request: Request) -> bool:
    """Whether ``request`` carries a non-empty ``Authorization`` header, of any form.

    A refused request without one has its token ``missing``; one with a header that
    :func:`bearer_token` cannot take (another scheme, a tab after ``Bearer``) or a token
    that does not match has a wrong one. The metrics and mission API guards say so alike.
    """
    return any(request.headers.getlist("authorization"))


def make_metrics_app(metrics: MetricSet, *, auth_token: str | None) -> Starlette:
    """Build the Starlette app serving ``metrics`` at its root (``GET``/``HEAD /``).

    Args:
        metrics: The container's metric set; rendered on every scrape.
        auth_token: When set, requests need ``Authorization: Bearer <auth_token>``;
            others get 401 with ``WWW-Authenticate: Bearer`` and a ``metrics.auth.failed``
            security log line (never containing the token).

    Returns:
        The sub-app; mount it with :class:`MetricsMount` (or ``app.mount``) at the
        configured path. Its ``state.registry`` is ``metrics.registry``.
    """
    expected = auth_token.encode("utf-8") if auth_token is not None else None

    async def serve_metrics(request: Request) -> Response:
        if expected is not None:
            token = bearer_token(request)
            # compare_digest: the time taken must not tell how much of a guess was right
            if token is None or not hmac.compare_digest(token, expected):
                _LOG.warning(
                    "metrics.auth.failed",
                    category="security",
                    reason="mismatch" if is_authorization_sent(request) else "missing",
                    client=_client(request),
                )
                return _refusal(
                    401,
                    "missing or wrong bearer token",
                    {"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        try:
            body = await metrics.render_async()
        except Exception as exc:  # a broken collector must not take the service down
            report_fault(metrics, "MetricSet", "render", exc)
            _LOG.error("metrics.render.failed", category="metrics", error_type=type(exc).__name__)
            return _refusal(500, "metrics rendering failed")
        # no-store: a cache in front must not answer a scrape with an older one
        headers = {"Vary": "Accept-Encoding", "Cache-Control": "no-store"}
        if _accepts_gzip(request.headers.get("accept-encoding", "")):
            if len(body) < _GZIP_INLINE_LIMIT:
                body = gzip.compress(body, _GZIP_LEVEL)
            else:
                body = await asyncio.to_thread(gzip.compress, body, _GZIP_LEVEL)
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type=CONTENT_TYPE, headers=headers)

    app = Starlette(routes=[_RootRoute("/", serve_metrics, methods=["GET", "HEAD"])])
    refuse_as_json(app)
    app.state.registry = metrics.registry
    app.state.metrics = metrics
    return app


class _RootRoute(Route):
    """The sub-app's root route, which also takes the bare mount path (``/metrics``).

    Mounted, the bare path reaches the sub-app with nothing left after its mount
    (``path`` equal to ``root_path``), which a ``Route("/")`` does not match.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Match like ``Route``; the bare mount path matches as its root."""
        if scope["type"] == "http" and scope["path"] == scope.get("root_path"):
            # matched on a copy: the request's own path stays what the client sent
            scope = {**scope, "path": scope["path"] + "/"}
        return super().matches(scope)


class MetricsMount(Mount):
    """A ``Mount`` that also serves its bare path: ``GET /metrics`` as well as ``/metrics/``.

    Starlette's ``Mount("/metrics")`` matches only ``/metrics/{path}``, so a scrape of
    ``/metrics`` would get a 307 redirect (and an httpx client, which does not follow
    redirects by default, a 307 instead of the exposition). This mount matches the bare
    path as ``/metrics/`` without rewriting it, so the access log and any middleware see
    the path the scraper asked for. It is not part of the OpenAPI schema, like any
    ``Mount``.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Match like ``Mount``; match a bare-path HTTP request as ``{path}/``."""
        match, child_scope = super().matches(scope)
        if match is Match.NONE and scope["type"] == "http" and not scope["path"].endswith("/"):
            # only the bare mount path matches here ("/metrics/..." matched above); the
            # child scope's root_path is the mount path, so the sub-app sees no rest
            match, child_scope = super().matches({**scope, "path": scope["path"] + "/"})
        if match is Match.FULL:
            # FastAPI's router merges the child scope without a "route" for a mount: name
            # the mount here, or the sub-app's own Route("/") is the first route written
            # and the HTTP metrics label a scrape route="/" instead of its path.
            child_scope["route"] = self
        return match, child_scope
