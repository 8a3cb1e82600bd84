"""Slash redirects whose ``Location`` is relative: the path and query, never a host.

Starlette answers a request whose path matches a route only with its trailing slash
added or dropped with a 307 to that path, but builds the ``Location`` as an absolute
URL from the client's ``Host`` header: ``Host: evil.example`` got
``Location: http://evil.example/...``, which a shared cache in front could store and
hand to other clients. ``relative_slash_redirects`` keeps which requests are redirected
and with what status, and sends the path and query alone (RFC 9110 allows a relative
``Location``); the client resolves it against the URL it asked for. The path is escaped
here, not left to the Starlette installed (only its newest releases escape it): a leading
``//`` or a backslash would be read as a host, a ``?`` or ``#`` as the query or fragment.
"""

from __future__ import annotations

from starlette.responses import RedirectResponse
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["relative_slash_redirects"]

#: What a decoded path may hold that a client would read as something else than the path.
_PATH_ESCAPES = str.maketrans({"\\": "%5C", "?": "%3F", "#": "%23"})


def _relative_location(path: str, query_string: bytes) -> str:
    """The ``Location`` of ``path`` with ``query_string``: path and query, never a host."""
    path = path.translate(_PATH_ESCAPES)
    if path.startswith("//"):
        path = "/%2F" + path[2:]
    # h11 takes only printable ASCII in a request target, so the query decodes as it came.
    query = query_string.decode("latin-1")
    return f"{path}?{query}" if query else path


class _SlashRedirect:
    """A router's fallback: the slash redirect Starlette's router makes, with a relative URL.

    It runs where the router's own redirect would, once no route matched, so a request
    a route takes meets none of it.
    """

    def __init__(self, router: Router, fallback: ASGIApp) -> None:
        self._router = router
        self._fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Redirect to the path with its trailing slash toggled if a route takes that."""
        path: str = scope["path"]
        root = scope.get("root_path", "")
        route_path = path[len(root) :] if root and path.startswith(root) else path
        if scope["type"] == "http" and route_path != "/":
            toggled = {**scope, "path": path.rstrip("/") if path.endswith("/") else path + "/"}
            if any(route.matches(toggled)[0] is not Match.NONE for route in self._router.routes):
                location = _relative_location(toggled["path"], scope.get("query_string", b""))
                await RedirectResponse(url=location)(scope, receive, send)
                return
        await self._fallback(scope, receive, send)


def relative_slash_redirects(router: Router) -> None:
    """Make ``router``'s slash redirects carry a relative ``Location`` (see the module).

    Args:
        router: a Starlette (or FastAPI) router, its ``redirect_slashes`` as it was built;
            one that does not redirect is left as it is.
    """
    if not router.redirect_slashes:
        return
    router.redirect_slashes = False
    router.default = _SlashRedirect(router, router.default)
