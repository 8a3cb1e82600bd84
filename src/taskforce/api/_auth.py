"""Optional bearer-token protection of the mission API (``api.auth_token``)."""

from __future__ import annotations

import hmac

import structlog
from fastapi import HTTPException, Request
from fastapi.openapi.models import HTTPBearer
from fastapi.security.base import SecurityBase

from taskforce.observability.web import bearer_token, is_authorization_sent

__all__ = ["BearerGuard"]

_LOG = structlog.get_logger(__name__)


class BearerGuard(SecurityBase):
    """A FastAPI dependency that lets through only ``Authorization: Bearer <token>``.

    A missing or wrong token raises ``HTTPException(401)`` and logs
    ``api.auth.failed`` (category ``security``) with the route and why, never a token.
    A ``SecurityBase``, so the OpenAPI schema declares the bearer scheme on every
    guarded route, and ``/docs`` can send the token ("Authorize").
    """

    runs_before_body = True
    """Checked before the body is read, so an anonymous client cannot make us parse one."""

    def __init__(self, token: str) -> None:
        """Guard with ``token`` (never logged)."""
        self._expected = token.encode()
        self.model = HTTPBearer(description="the token of `api.auth_token`")
        self.scheme_name = "bearer"

    async def __call__(self, request: Request) -> None:
        """Return if the request carries the token.

        Raises:
            HTTPException: 401, with ``WWW-Authenticate: Bearer``.
        """
        # read as on the metrics path: the bytes the client sent, any case of the scheme
        token = bearer_token(request)
        if token is not None and hmac.compare_digest(token, self._expected):
            return
        route = getattr(request.scope.get("route"), "path", "unmatched")
        _LOG.warning(
            "api.auth.failed",
            category="security",
            route=route,
            reason="wrong token" if is_authorization_sent(request) else "missing",
        )
        raise HTTPException(
            status_code=401,
            detail="missing or wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
