"""The request body limit (``api.max_body_bytes``): a 413 before the rest of the body is read.

A declared ``Content-Length`` over the limit is answered at once, before the app
or any body byte is read; a chunked body is cut off as the limit is crossed.
Either way the 413 leaves as an ordinary response through the middleware
around this one (the HTTP metrics count it like any other), and the connection
is closed rather than drained.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimitMiddleware", "BodyTooLargeError"]


class BodyTooLargeError(HTTPException):
    """The request body is longer than the limit (raised from ``receive``)."""

    def __init__(self, limit: int) -> None:
        """Build the 413 for ``limit`` bytes."""
        super().__init__(
            status_code=413,
            detail=f"request body is larger than {limit} bytes",
            headers={"Connection": "close"},
        )


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    """Refuse request bodies longer than ``max_bytes`` with a 413.

    Add it with ``app.add_middleware(BodyLimitMiddleware, max_bytes=...)`` before
    (so inside) the HTTP metrics middleware.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        """Wrap ``app``.

        Args:
            app: the next ASGI app.
            max_bytes: the longest body let through.
        """
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, or answer 413 if its body is too long."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(send)
            return
        received = 0
        is_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        async def observed_send(message: Message) -> None:
            nonlocal is_started
            is_started = is_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, observed_send)
        except BodyTooLargeError:
            # Raised past a route that does not turn HTTPExceptions into responses.
            if is_started:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        error = BodyTooLargeError(self.max_bytes)
        body = json.dumps({"detail": error.detail}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
