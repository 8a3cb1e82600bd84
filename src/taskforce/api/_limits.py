"""Request body limits: a 413 past ``api.max_body_bytes``, a 408 past ``api.read_timeout_seconds``.

A declared ``Content-Length`` over the limit is answered at once, before the app
or any body byte is read; a chunked body is cut off as the limit is crossed. A body
whose last byte has not come ``read_timeout_seconds`` after the request reached the
app (a client that sends it slowly, or never ends it) gets a 408. Either way the
answer leaves as an ordinary response through the middleware around this one (the
HTTP metrics count it like any other), and the connection is closed rather than
drained.
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskforce.api._encoding import refusal

__all__ = ["BodyLimitMiddleware", "BodyTimeoutError", "BodyTooLargeError"]


class _BodyRefused(HTTPException):
    """A request body refused from ``receive``; its answer closes the connection."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(status_code=status_code, detail=detail, headers={"Connection": "close"})


class BodyTooLargeError(_BodyRefused):
    """The request body is longer than the limit (raised from ``receive``)."""

    def __init__(self, limit: int) -> None:
        """Build the 413 for ``limit`` bytes."""
        super().__init__(413, f"request body is larger than {limit} bytes")


class BodyTimeoutError(_BodyRefused):
    """The request body did not arrive whole in time (raised from ``receive``)."""

    def __init__(self, seconds: float) -> None:
        """Build the 408 for a limit of ``seconds``."""
        super().__init__(408, f"request body was not received within {seconds:g} seconds")


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

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout_seconds: float) -> None:
        """Wrap ``app``.

        Args:
            app: the next ASGI app.
            max_bytes: the longest body let through.
            read_timeout_seconds: how long the whole body may take to arrive.
        """
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_seconds = read_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, or answer 413 if its body is too long."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await _refuse(BodyTooLargeError(limit), scope, receive, send)
            return
        received = 0
        is_started = False
        is_whole = False  # the last body message came: later ones (disconnect) may wait
        deadline = asyncio.get_running_loop().time() + self.read_timeout_seconds

        async def limited_receive() -> Message:
            nonlocal received, is_whole
            message = await (receive() if is_whole else self._before(deadline, receive))
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
                is_whole = not message.get("more_body", False)
            return message

        async def observed_send(message: Message) -> None:
            nonlocal is_started
            is_started = is_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, observed_send)
        except _BodyRefused as exc:
            # Raised past a route that does not turn HTTPExceptions into responses.
            if is_started:
                raise
            await _refuse(exc, scope, receive, send)

    async def _before(self, deadline: float, receive: Receive) -> Message:
        """Return the next message of ``receive``; raise ``BodyTimeoutError`` past ``deadline``."""
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(receive(), max(0.0, remaining))
        except TimeoutError:
            raise BodyTimeoutError(self.read_timeout_seconds) from None


async def _refuse(error: HTTPException, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer ``error`` (its status and reason); the connection is closed after it."""
    await refusal(error.status_code, error.detail, error.headers)(scope, receive, send)
