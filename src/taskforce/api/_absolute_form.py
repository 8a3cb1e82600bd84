"""A request target in absolute form (``GET http://host:8000/health HTTP/1.1``), routed as
the origin form (``/health``) it stands for.

RFC 9112 section 3.2.2: a server MUST accept the absolute form, which clients send to a
proxy (and a few to any server). uvicorn's h11 protocol (the one ``taskforce serve``
runs, and uvicorn's or gunicorn's default without httptools) hands it to the app as it
came: ``scope["path"]`` is ``http://host:8000/health``, which no route matches (a 404,
counted under the route ``unmatched``). :class:`AbsoluteFormMiddleware`, outside every
other middleware of the app, takes the scheme and authority off ``path`` and
``raw_path`` first; an empty path is ``/``. Only ``http`` and ``https`` targets are
rewritten: any other is left as it came (no route has it). The ``Host`` header is left
as it came too: nothing of the app reads it.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["AbsoluteFormMiddleware", "origin_form"]

# scheme "://" authority: up to the path's first "/" (uvicorn cut the query off already)
_SCHEME_AND_AUTHORITY = re.compile(rb"https?://[^/]*", re.IGNORECASE)


def origin_form(scope: Scope) -> Scope:
    """Return ``scope`` with an absolute-form target's path as the origin form's.

    Args:
        scope: An HTTP connection's scope; ``path`` and ``raw_path`` hold the
            ``root_path`` first, as uvicorn writes them.

    Returns:
        ``scope`` itself for any other target; else a copy whose ``path`` and
        ``raw_path`` are the target's path (``/`` when it has none) after ``root_path``.
    """
    root = scope.get("root_path", "")
    path = scope["path"]
    if path.startswith("/", len(root)) or not path.startswith(root):
        return scope  # origin form (the usual), or a path of some other making
    raw = scope.get("raw_path")
    if not isinstance(raw, bytes):
        raw = path.encode("utf-8")
    prefix = root.encode("utf-8")
    found = _SCHEME_AND_AUTHORITY.match(raw, len(prefix)) if raw.startswith(prefix) else None
    if found is None:
        return scope  # asterisk form ("*"), or another scheme's URI
    target = raw[found.end() :] or b"/"
    return {
        **scope,
        "path": root + unquote(target.decode("ascii", "replace")),
        "raw_path": prefix + target,
    }


class AbsoluteFormMiddleware:
    """Route a request whose target is in absolute form as its origin form (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = origin_form(scope)
        await self.app(scope, receive, send)
