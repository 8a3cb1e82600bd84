"""The HTTP connection protocol of taskforce's listeners: a request must arrive in time.

uvicorn only times a connection out while it idles between two requests. A client
that opens one and sends nothing, or half a request line, or headers that never
end, or that drips the body of a request the app answered without reading it,
would hold its socket (and a file descriptor) for good; enough such clients and the
process can accept no more. Here a request's bytes, from the connection's opening or
the request's first byte to its last, must all come within ``api.read_timeout_seconds``.
Headers still unfinished then get a 408 and the connection is closed; a body the app
waits for is timed by ``BodyLimitMiddleware``, which answers its 408 through the app.

The other way round, a client that stops reading its answer (a stream it never
reads) would hold the request, and a mission's slot, for good: once the socket's
send buffer is full, the app waits until it drains. With a write timeout, a full
buffer of which the client read nothing for ``api.write_timeout_seconds`` aborts the
connection, and the app sees a client that went away (a stream's mission is
cancelled). A client that reads, however slowly, is not cut: each byte it takes
starts the timeout again.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any, ClassVar

import h11
import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["read_deadline_protocol"]

try:
    import fcntl
    import termios
except ImportError:  # pragma: no cover - not on POSIX
    _OUTQ: int | None = None
else:
    #: Linux's SIOCOUTQ: the bytes a socket's kernel send queue still holds.
    _OUTQ = getattr(termios, "TIOCOUTQ", None) if sys.platform == "linux" else None

_LOG = structlog.get_logger("taskforce.api")
_BODY = b"request headers were not received in time\n"
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _BODY
)


def _cancel(timer: asyncio.TimerHandle | None) -> None:
    if timer is not None:
        timer.cancel()


class _ReadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline on receiving each request."""

    read_timeout_seconds: ClassVar[float]
    write_timeout_seconds: ClassVar[float | None]
    is_access_logged: ClassVar[bool]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Build uvicorn's protocol; without access lines when the class says so."""
        super().__init__(*args, **kwargs)
        # Per connection, not with uvicorn's access_log=False: that empties the process's
        # "uvicorn.access" logger, so the API server beside this one would log none either.
        self.access_log = self.access_log and self.is_access_logged

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the first request's deadline: an idle new connection counts."""
        self._read_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._unread = 0
        super().connection_made(transport)
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the deadlines with the connection."""
        self._disarm()
        self._resumed()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """Wait as uvicorn does for the client to read; abort if it does not in time."""
        super().pause_writing()
        if self.write_timeout_seconds is not None and self._write_timer is None:
            self._watch_unread(self.write_timeout_seconds)

    def _watch_unread(self, seconds: float) -> None:
        """Note what the client has still to read; check again ``seconds`` later."""
        self._unread = self._unsent()
        self._write_timer = self.loop.call_later(seconds, self._stalled, seconds)

    def _unsent(self) -> int:
        """Bytes of the answer the client has not taken: in the transport, and in the kernel.

        A client that reads drains the kernel's send queue first; the transport's own
        buffer shrinks only once that queue has room enough, which may take long on a
        large one. Where the kernel cannot tell its queue, the transport's buffer it is.
        """
        unsent = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if _OUTQ is None or sock is None:
            return unsent
        with contextlib.suppress(OSError, ValueError):
            queued = fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0")
            unsent += int.from_bytes(queued, sys.byteorder, signed=True)
        return unsent

    def resume_writing(self) -> None:
        """Go on writing as uvicorn does: the client read."""
        self._resumed()
        super().resume_writing()

    def _resumed(self) -> None:
        _cancel(self._write_timer)
        self._write_timer = None

    def _stalled(self, seconds: float) -> None:
        """Abort if the client read nothing since the last check, say why; else wait on."""
        self._resumed()
        if self.transport.is_closing():
            return
        if self._unsent() < self._unread:
            self._watch_unread(seconds)  # slow, but reading: it gets another timeout
        else:
            _LOG.warning("http.response.stalled", category="http", timeout_seconds=seconds)
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        """Read as uvicorn does; start the deadline at a request's first byte."""
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        """Finish as uvicorn does; keep timing a request whose body is still coming."""
        super().on_response_complete()
        self._follow()

    def _follow(self) -> None:
        """Arm the deadline while a request is incomplete, drop it once it is whole."""
        state = self.conn.their_state
        idle = state is h11.IDLE and self.timeout_keep_alive_task is not None
        if state is h11.DONE or idle or self.transport.is_closing():
            self._disarm()  # whole, or idle between requests: uvicorn's keep-alive times that
        elif self._read_timer is None:
            self._read_timer = self.loop.call_later(self.read_timeout_seconds, self._expired)

    def _disarm(self) -> None:
        _cancel(self._read_timer)
        self._read_timer = None

    def _expired(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:
            stage = "headers"
            self.transport.write(_TIMEOUT_RESPONSE)
        elif self.cycle is not None and not self.cycle.response_complete:
            return  # the app is waiting for the body: BodyLimitMiddleware answers the 408
        else:
            stage = "body"  # answered without reading it, and the client still sends it
        _LOG.warning(
            "http.request.timeout",
            category="http",
            stage=stage,
            timeout_seconds=self.read_timeout_seconds,
        )
        self.transport.close()


def read_deadline_protocol(
    seconds: float, *, write_timeout_seconds: float | None = None, is_access_logged: bool = True
) -> type[H11Protocol]:
    """Return a uvicorn HTTP protocol class that gives each request ``seconds`` to arrive.

    Args:
        seconds: ``api.read_timeout_seconds``.
        write_timeout_seconds: ``api.write_timeout_seconds``: how long an answer may
            stay unread before the connection is aborted; ``None``: no limit.
        is_access_logged: whether its requests get access lines.

    Returns:
        A protocol class for ``uvicorn.Config(http=...)``.
    """
    settings = {
        "read_timeout_seconds": seconds,
        "write_timeout_seconds": write_timeout_seconds,
        "is_access_logged": is_access_logged,
    }
    return type("ReadDeadlineProtocol", (_ReadDeadlineProtocol,), settings)
