"""The HTTP connection protocol of taskforce's listeners: a request must arrive in time,
and its head be no longer than ``api.max_header_bytes``.

uvicorn only times a connection out while it idles between two requests. A client
that opens one and sends nothing, or half a request line, or headers that never
end, or that drips the body of a request the app answered without reading it,
would hold its socket (and a file descriptor) for good; enough such clients and the
process can accept no more. Here a request's bytes, from the connection's opening or
the request's first byte to its last, must all come within ``api.read_timeout_seconds``.
Headers still unfinished then get a 408 with a JSON reason, as the refusals below do,
and the connection is closed; a body the app waits for is timed by
``BodyLimitMiddleware``, which answers its 408 through the app.

The other way round, a client that stops reading its answer (a stream it never
reads) would hold the request, and a mission's slot, for good: once the socket's
send buffer is full, the app waits until it drains. With a write timeout, a full
buffer of which the client read nothing for ``api.write_timeout_seconds`` aborts the
connection, and the app sees a client that went away (a stream's mission is
cancelled). A client that reads, however slowly, is not cut: each byte it takes
starts the timeout again.

A connection past ``api.max_connections`` (those the listener holds open, idle ones
included) is answered a 503 with a JSON reason and closed as a refused request is, at
once: a flood of connections that send nothing cannot take every file descriptor of
the process for ``api.read_timeout_seconds``. The first refusal of a spell is logged
(``http.connection.refused``), not each one: a flood would flood the log too.

A request h11 cannot take (a head over ``api.max_header_bytes``: 431; anything else
it cannot parse: 400) gets a JSON reason, then a lingering close: the write side is
shut and what the client still sends is read and dropped, for at most
``LINGER_SECONDS`` and ``LINGER_BYTES``, before the socket closes. uvicorn closed at
once, with the rest of the client's input unread, so the kernel reset the connection
and the client often lost the answer. So does an answer of the app that closes the
connection while the request's body still comes (a 413 for a body over
``api.max_body_bytes``, a 503 at shutdown): a client still uploading read a
connection reset, not the 413 and its reason.

A client that sends its whole request and then shuts its write side
(``shutdown(SHUT_WR)``: ``nc -N``, some HTTP/1.0 clients and scripts) still reads: its
request is answered, then the connection is closed. uvicorn closed the connection at
the end of the input, so the app's answer went nowhere. An incomplete request followed
by the end of the input is closed as before. A server cannot tell such a client from
one that closed its socket (both send the same FIN): an app that waits for the
client's departure (``/api/v1/execute`` and the event stream, which cancel their
mission) is told, once it has the whole body, that the client has left, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import resource
import sys
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

import h11
import structlog
from uvicorn._types import ASGIReceiveEvent
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

from taskforce.api._accept_failures import note_accepted
from taskforce.api._head_limit import INVALID_REQUEST, HeadLimitedConnection, refusal_bytes
from taskforce.config import ApiSettings

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "LINGER_BYTES",
    "LINGER_SECONDS",
    "MAX_LINGERING_REFUSALS",
    "default_max_connections",
    "read_deadline_protocol",
]

#: ``api.max_header_bytes``'s default, for a protocol built without settings.
DEFAULT_MAX_HEADER_BYTES: int = ApiSettings.model_fields["max_header_bytes"].default
#: The largest ``api.max_connections`` (the setting's maximum).
_MOST_CONNECTIONS = 1_000_000
#: After refusing a request, how long and how much of the client's input is read and
#: dropped before the close, so that the client reads the answer rather than a reset.
LINGER_SECONDS = 1.0
LINGER_BYTES = 16 * 1024 * 1024
#: The most connections refused past ``api.max_connections`` that one listener lets
#: linger at once; one more is closed at once, so that a flood of connections holds no
#: more descriptors than the limit and these few.
MAX_LINGERING_REFUSALS = 16

try:
    import fcntl
    import termios
except ImportError:  # pragma: no cover - not on POSIX
    _OUTQ: int | None = None
else:
    #: Linux's SIOCOUTQ: the bytes a socket's kernel send queue still holds.
    _OUTQ = getattr(termios, "TIOCOUTQ", None) if sys.platform == "linux" else None

_LOG = structlog.get_logger("taskforce.api")


def _cancel(timer: asyncio.TimerHandle | None) -> None:
    if timer is not None:
        timer.cancel()


class _AnswerTransport(asyncio.Transport):
    """The transport one request's cycle writes its answer to; its ``close`` is the protocol's.

    uvicorn's cycle closes the connection after an answer that ends it (``Connection:
    close``); the protocol lingers instead while the request's body still comes.
    """

    def __init__(self, transport: asyncio.Transport, close: Callable[[], None]) -> None:
        super().__init__()
        self._transport = transport
        self._close = close

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._close()


class _ReadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline on receiving each request."""

    read_timeout_seconds: ClassVar[float]
    write_timeout_seconds: ClassVar[float | None]
    is_access_logged: ClassVar[bool]
    max_header_bytes: ClassVar[int]
    max_connections: ClassVar[int]
    # True from a refused connection until one is taken again (per listener: the class
    # is made per listener by read_deadline_protocol)
    is_full: ClassVar[bool] = False
    # the connections refused past max_connections that linger now (per listener too)
    lingering_refusals: ClassVar[int] = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Build uvicorn's protocol; without access lines when the class says so."""
        super().__init__(*args, **kwargs)
        self._head = HeadLimitedConnection(self.max_header_bytes)
        self.conn = self._head
        self._discarded: int | None = None  # bytes dropped since the refusal; None: none
        self._linger_timer: asyncio.TimerHandle | None = None
        self._input_ended = False  # the client shut its write side (its FIN came)
        self._is_lingering_refusal = False  # refused past max_connections, lingering
        # Per connection, not with uvicorn's access_log=False: that empties the process's
        # "uvicorn.access" logger, so the API server beside this one would log none either.
        self.access_log = self.access_log and self.is_access_logged

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the first request's deadline: an idle new connection counts."""
        self._read_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._unread = 0
        super().connection_made(transport)
        note_accepted(self.loop)
        cls = type(self)
        if len(self.server_state.connections) > self.max_connections:
            self._refuse_connection(cls)
            return
        cls.is_full = False
        self._follow()

    def _refuse_connection(self, cls: type[_ReadDeadlineProtocol]) -> None:
        """Answer a connection past ``max_connections`` a 503 and close it."""
        detail = f"too many connections: this server holds at most {self.max_connections}"
        if not cls.is_full:
            cls.is_full = True
            _LOG.warning(
                "http.connection.refused",
                category="http",
                status_code=503,
                reason=detail,
                max_connections=self.max_connections,
            )
        self.transport.write(refusal_bytes(self.conn, 503, detail))
        if cls.lingering_refusals >= MAX_LINGERING_REFUSALS:
            # Each lingering refusal holds a descriptor for LINGER_SECONDS: under a flood
            # they, not the connections held, would take every descriptor of the process.
            self.transport.close()
            return
        cls.lingering_refusals += 1
        self._is_lingering_refusal = True
        self._linger()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the deadlines with the connection."""
        if self._is_lingering_refusal:
            self._is_lingering_refusal = False
            type(self).lingering_refusals -= 1
        self._disarm()
        _cancel(self._linger_timer)
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
        """Read as uvicorn does; start the deadline at a request's first byte.

        Once a request was refused, the input is dropped, up to ``LINGER_BYTES``.
        """
        if self._discarded is not None:
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES:
                self.transport.close()
            return
        super().data_received(data)
        self._follow()

    def handle_events(self) -> None:
        """Handle h11's events as uvicorn does; a new request's cycle closes through us."""
        super().handle_events()
        cycle = self.cycle
        if cycle is not None and not isinstance(cycle.transport, _AnswerTransport):
            cycle.transport = _AnswerTransport(
                self.transport, functools.partial(self._close_after, cycle)
            )
            # the cycle's task has not started yet: it looks its receive up when it does
            cycle.receive = self._receiver(cycle)  # type: ignore[method-assign]

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio's says bool | None
        """The client shut its write side: keep writing while a request it sent whole waits.

        Returns:
            Whether the transport stays open (asyncio closes it otherwise): only for a
            request whose bytes all came and whose answer is not sent yet.
        """
        self._input_ended = True
        cycle = self.cycle
        if (
            self._discarded is None
            and cycle is not None
            and not cycle.response_complete
            and self.conn.their_state in (h11.DONE, h11.MUST_CLOSE)
        ):
            cycle.message_event.set()  # an app waiting for the client to leave learns it did
            return True
        return False

    def _receiver(
        self, cycle: RequestResponseCycle
    ) -> Callable[[], Coroutine[Any, Any, ASGIReceiveEvent]]:
        """``cycle``'s ``receive``: once the body is taken, the end of the input is a departure.

        A FIN comes both from a client that shut only its write side and from one that
        closed its socket: an app that goes on to wait for the client's departure
        (``http.disconnect``) is told, at the FIN, that it left, and the connection is
        closed, as uvicorn did; an app that answers without that wait is answered.
        """
        taken = False  # the body's last part was handed out

        async def receive_or_leave() -> ASGIReceiveEvent:
            nonlocal taken
            if taken and self._input_ended:
                return self._left(cycle)
            message = await RequestResponseCycle.receive(cycle)
            if message["type"] == "http.request" and not message.get("more_body", False):
                if taken:  # the FIN woke the wait for the departure
                    return self._left(cycle)
                taken = True
            return message

        return receive_or_leave

    def _left(self, cycle: RequestResponseCycle) -> ASGIReceiveEvent:
        """End ``cycle`` as one whose client left: nothing more is sent; close."""
        if not cycle.response_complete:
            cycle.disconnected = True
        self.transport.close()
        return {"type": "http.disconnect"}

    def _close_after(self, cycle: RequestResponseCycle) -> None:
        """Close as ``cycle`` asks; linger if its answer is whole and its body still comes.

        Closed with the client's input unread, the socket would be reset, and a client
        still sending its body (one over ``api.max_body_bytes``, refused at once) would
        often lose the answer. A cycle that closes on an answer cut short is not
        lingered for: the client is to see it end.
        """
        is_answered = cycle.response_complete and cycle is self.cycle
        if is_answered and self.conn.their_state is h11.SEND_BODY:
            if not self.transport.is_closing() and self._discarded is None:
                self._linger()
            return
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """Refuse the request h11 could not take: 431 for a head too large, else 400.

        Args:
            msg: uvicorn's text for it (it logs that itself); the client gets a JSON reason.
        """
        error = self._head.error
        if error is not None and error.error_status_hint == 431:
            status, detail = 431, f"request headers exceed {self.max_header_bytes} bytes"
        else:
            status, detail = 400, INVALID_REQUEST
        _LOG.warning(
            "http.request.refused",
            category="http",
            status_code=status,
            reason=detail,
            max_header_bytes=self.max_header_bytes,
        )
        if self.cycle is not None and not self.cycle.response_complete:
            # a body that broke the protocol: the app's request ends as if the client left
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            self.transport.close()  # an answer is under way: nothing can follow it
            return
        self.transport.write(refusal_bytes(self.conn, status, detail))
        self._linger()

    def _linger(self) -> None:
        """Shut the write side; drop what the client still sends for a while, then close."""
        self._disarm()
        self._discarded = 0
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def on_response_complete(self) -> None:
        """Finish as uvicorn does; keep timing a request whose body is still coming.

        A client that shut its write side gets the connection closed once no request
        it sent waits for an answer.
        """
        super().on_response_complete()
        cycle = self.cycle
        if self._input_ended and (cycle is None or cycle.response_complete):
            self.transport.close()
        self._follow()

    def _follow(self) -> None:
        """Arm the deadline while a request is incomplete, drop it once it is whole."""
        state = self.conn.their_state
        idle = state is h11.IDLE and self.timeout_keep_alive_task is not None
        if state is h11.DONE or idle or self.transport.is_closing() or self._discarded is not None:
            # whole, idle between requests (uvicorn's keep-alive times that), or refused
            # and lingering (the linger timer closes it)
            self._disarm()
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
            detail = (
                f"request headers were not received within {self.read_timeout_seconds:g} seconds"
            )
            self.transport.write(refusal_bytes(self.conn, 408, detail))
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


def default_max_connections() -> int:
    """``api.max_connections`` when it is not set: half the process's open-file limit.

    The other half is left for what missions open (session files, tool files, database
    connections); a limit the system does not set means no limit of this kind (the
    setting's maximum).
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return _MOST_CONNECTIONS
    return max(1, min(soft // 2, _MOST_CONNECTIONS))


def read_deadline_protocol(
    seconds: float,
    *,
    write_timeout_seconds: float | None = None,
    is_access_logged: bool = True,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    max_connections: int | None = None,
) -> type[H11Protocol]:
    """Return a uvicorn HTTP protocol class that gives each request ``seconds`` to arrive.

    Args:
        seconds: ``api.read_timeout_seconds``.
        write_timeout_seconds: ``api.write_timeout_seconds``: how long an answer may
            stay unread before the connection is aborted; ``None``: no limit.
        is_access_logged: whether its requests get access lines.
        max_header_bytes: ``api.max_header_bytes``: the longest request head (request
            line and header fields) taken; a longer one gets a 431.
        max_connections: ``api.max_connections``: the most connections the listener
            holds open; one more gets a 503 and is closed. None: half the open-file
            limit (:func:`default_max_connections`).

    Returns:
        A protocol class for ``uvicorn.Config(http=...)``.
    """
    settings = {
        "read_timeout_seconds": seconds,
        "write_timeout_seconds": write_timeout_seconds,
        "is_access_logged": is_access_logged,
        "max_header_bytes": max_header_bytes,
        "max_connections": (
            default_max_connections() if max_connections is None else max_connections
        ),
    }
    return type("ReadDeadlineProtocol", (_ReadDeadlineProtocol,), settings)
