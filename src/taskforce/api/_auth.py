"""Optional bearer-token protection of the mission API (``api.auth_token``)."""

from __future__ import annotations

import hmac

import structlog
from fastapi import HTTPException, Request

__all__ = ["BearerGuard"]

_LOG = structlog.get_logger(__name__)


class BearerGuard:
    """A FastAPI dependency that lets through only ``Authorization: Bearer <token>``.

    A missing or wrong token raises ``HTTPException(401)`` and logs
    ``api.auth.failed`` (category ``security``) with the route and why, never a token.
    """

    runs_before_body = True
    """Checked before the body is read, so an anonymous client cannot make us parse one."""

    def __init__(self, token: str) -> None:
        """Guard with ``token`` (never logged)."""
        self._expected = token.encode()

    async def __call__(self, request: Request) -> None:
        """Return if the request carries the token.

        Raises:
            HTTPException: 401, with ``WWW-Authenticate: Bearer``.
        """
        given = request.headers.get("authorization", "")
        # Starlette reads a header's bytes as Latin-1, so encoding it back gives the bytes
        # the client sent: a token outside ASCII is compared as the UTF-8 it wrote. The
        # scheme is case-insensitive (RFC 9110), as on the metrics path.
        scheme, _, credentials = given.encode("latin-1").partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self._expected):
            return
        route = getattr(request.scope.get("route"), "path", "unmatched")
        _LOG.warning(
            "api.auth.failed",
            category="security",
            route=route,
            reason="missing" if not given else "wrong token",
        )
        raise HTTPException(
            status_code=401,
            detail="missing or wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
