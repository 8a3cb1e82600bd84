"""Slash redirects whose ``Location`` is relative: the path and query, never a host.

Starlette answers a request whose path matches a route only with its trailing slash
added or dropped with a 307 to that path, but builds the ``Location`` as an absolute
URL from the client's ``Host`` header: ``Host: evil.example`` got
``Location: http://evil.example/...``, which a shared cache in front could store and
hand to other clients. ``relative_slash_redirects`` keeps which requests are redirected
and with what status, and sends the path and query alone (RFC 9110 allows a relative
``Location``); the client resolves it against the URL it asked for.
"""

from __future__ import annotations

from starlette.datastructures import URL
from starlette.responses import RedirectResponse
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["relative_slash_redirects"]


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
                # Without a host or server in the scope, Starlette's URL is the path and
                # query alone, a leading "//" escaped so no client reads it as a host.
                location = URL(scope={**toggled, "headers": [], "server": None})
                await RedirectResponse(url=str(location))(scope, receive, send)
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
