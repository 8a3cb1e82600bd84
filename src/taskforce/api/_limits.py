"""Request body limits: a 413 past ``api.max_body_bytes``, a 408 past
``api.read_timeout_seconds``, a 503 for a body still to come once a shutdown began.

A declared ``Content-Length`` over the limit is answered at once, before the app
or any body byte is read; a chunked body is cut off as the limit is crossed. A body
whose last byte has not come ``read_timeout_seconds`` after the request reached the
app (a client that sends it slowly, or never ends it) gets a 408. Under
``taskforce serve``, a body the app would still have to wait for once the server's
shutdown began (see ``ShutdownNotice``) gets a 503: the request has started nothing.
Each answer leaves as an ordinary response through the middleware around
this one (the HTTP metrics count it like any other), and the connection is closed
rather than drained (under ``taskforce serve`` after a bounded lingering read, so a
client still sending reads the answer).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskforce.api._encoding import refusal
from taskforce.core.interfaces.outcome import retrieve_outcome

__all__ = [
    "BodyLimitMiddleware",
    "BodyTimeoutError",
    "BodyTooLargeError",
    "ShutdownNotice",
    "ShuttingDownError",
]

_NOTICE = "taskforce.shutdown_notice"
"""The scope key under which the server hands each request its ``ShutdownNotice``."""


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


class ShuttingDownError(_BodyRefused):
    """The server's shutdown began before the request body was whole (raised from ``receive``)."""

    def __init__(self) -> None:
        """Build the 503 of a request that started nothing."""
        super().__init__(503, "the service is shutting down; the request was not read")


class ShutdownNotice:
    """Tells one server's requests that its shutdown began: a body not whole by then is refused.

    The server owns one, hands it to each HTTP request with ``given_to`` and calls
    ``begin`` as its shutdown starts. ``BodyLimitMiddleware`` then answers 503 to each
    request whose body is not whole: at once to those waiting for it, and to one that
    asks for it later as soon as it would have to wait (what the server holds of the
    body already is read first). A request whose body is whole, read or held by the
    server, is not touched. Not thread-safe: it belongs to the server's event loop.
    """

    def __init__(self, on_refused: Callable[[int], None]) -> None:
        """Create a notice whose shutdown has not begun.

        Args:
            on_refused: told how many requests the shutdown refuses: at ``begin``
                those then waiting for their body (if any), later one by one.
        """
        self._on_refused = on_refused
        self._has_begun = False
        self._waiting: set[asyncio.Future[None]] = set()

    @property
    def has_begun(self) -> bool:
        """Whether ``begin`` was called."""
        return self._has_begun

    def given_to(self, scope: Scope) -> Scope:
        """Put this notice in ``scope`` for the app's ``BodyLimitMiddleware``; return ``scope``."""
        scope[_NOTICE] = self
        return scope

    def begin(self) -> None:
        """Refuse the requests waiting for their body now, and any that asks for it later."""
        if self._has_begun:
            return
        self._has_begun = True
        waiting = list(self._waiting)
        self._waiting.clear()
        for waiter in waiting:
            waiter.set_result(None)
        if waiting:
            self._on_refused(len(waiting))

    @contextlib.contextmanager
    def watch(self) -> Iterator[asyncio.Future[None]]:
        """Yield a future done once the shutdown began (at once if it has), for one body wait.

        A request whose future is done is refused, so it is counted (``on_refused``)
        as its future is done.
        """
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._has_begun:
            waiter.set_result(None)
            self._on_refused(1)
        else:
            self._waiting.add(waiter)
        try:
            yield waiter
        finally:
            self._waiting.discard(waiter)


def _declared_length(headers: Headers) -> int | None:
    try:
        return int(headers.get("content-length", ""))
    except ValueError:
        return None


def _has_body(scope: Scope, headers: Headers, declared: int | None) -> bool:
    """Whether the request sends a body: in HTTP/1, a length over 0 or chunks, nothing else."""
    if scope.get("http_version", "1.1") not in ("1.0", "1.1"):
        return True  # HTTP/2 and later may send a body with neither header
    if declared is not None:
        return declared > 0
    return "transfer-encoding" in headers


def _notice_of(scope: Scope) -> ShutdownNotice | None:
    notice = scope.get(_NOTICE)
    return notice if isinstance(notice, ShutdownNotice) else None


def _forget(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` if it still runs, else mark its outcome taken (whether used or not)."""
    if not task.done():
        task.cancel()
    else:
        retrieve_outcome(task)


class BodyLimitMiddleware:
    """Refuse a request body too long (413), too late (408) or cut by a shutdown (503).

    Add it with ``app.add_middleware(BodyLimitMiddleware, max_bytes=...,
    read_timeout_seconds=...)`` before (so inside) the HTTP metrics middleware.
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
        """Serve the request, or answer its refusal if its body is refused (see the class)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        headers = Headers(raw=scope.get("headers", []))  # read only: the scope is left as it is
        declared = _declared_length(headers)
        if declared is not None and declared > limit:
            await _refuse(BodyTooLargeError(limit), scope, receive, send)
            return
        received = 0
        is_started = False
        # The last body message came (none is to come): later ones (disconnect) may wait.
        is_whole = not _has_body(scope, headers, declared)
        notice = _notice_of(scope)
        deadline = asyncio.get_running_loop().time() + self.read_timeout_seconds

        async def limited_receive() -> Message:
            nonlocal received, is_whole
            message = await (receive() if is_whole else self._body_part(receive, deadline, notice))
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

    async def _body_part(
        self, receive: Receive, deadline: float, notice: ShutdownNotice | None
    ) -> Message:
        """Return the next message of ``receive`` while the body is not whole.

        Raises:
            ShuttingDownError: the shutdown of ``notice`` began before the message came.
            BodyTimeoutError: ``deadline`` passed before the message came.
        """
        if notice is not None and notice.has_begun:
            # The shutdown refuses a wait for the client, not a request the server holds
            # whole already (it came before the signal, its route just had not asked yet).
            held = await _held(receive)
            if held is not None:
                return held
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        watching: contextlib.AbstractContextManager[asyncio.Future[None] | None] = (
            notice.watch() if notice is not None else contextlib.nullcontext()
        )
        with watching as shutdown:
            if shutdown is not None and shutdown.done():
                raise ShuttingDownError
            arriving = asyncio.ensure_future(receive())
            waits: set[asyncio.Future[Any]] = {arriving}
            if shutdown is not None:
                waits.add(shutdown)
            try:
                await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                # The shutdown wins a tie with the message: the notice counted it refused.
                if shutdown is not None and shutdown.done():
                    raise ShuttingDownError
                if not arriving.done():
                    raise BodyTimeoutError(self.read_timeout_seconds)
                return arriving.result()
            finally:
                _forget(arriving)


async def _held(receive: Receive) -> Message | None:
    """The next message of ``receive`` if the server holds it already, else ``None`` (unread).

    ``receive`` gets one step of the loop: the task that runs it is scheduled before this
    coroutine resumes, and a message already received needs no more than that step.
    """
    arriving = asyncio.ensure_future(receive())
    await asyncio.sleep(0)
    if arriving.done():
        return arriving.result()
    _forget(arriving)
    return None


async def _refuse(error: HTTPException, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer ``error`` (its status and reason); the connection is closed after it."""
    await refusal(error.status_code, error.detail, error.headers)(scope, receive, send)
