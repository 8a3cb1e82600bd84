"""The limit on a request's head (request line and header fields), and the answer to a bad one.

h11 refuses a head only while it is still incomplete and its buffered bytes pass
``max_incomplete_event_size``: the same head arriving whole in one read went through,
so the limit depended on how the bytes arrived. ``HeadLimitedConnection`` also
refuses a whole head over the limit, so a head is refused by its size alone, and a
head that frames its body twice (``Content-Length`` and ``Transfer-Encoding``).
"""

from __future__ import annotations

from http import HTTPStatus

import h11

from taskforce.api._encoding import refusal

__all__ = ["INVALID_REQUEST", "HeadLimitedConnection", "head_bytes", "refusal_bytes"]

#: What a client is told about a request h11 cannot parse; its details stay in the log.
INVALID_REQUEST = "invalid HTTP request"


def head_bytes(request: h11.Request) -> int:
    """The bytes of ``request``'s head as a client writes it: ``Name: value`` lines, CRLF ends.

    Args:
        request: the parsed request.

    Returns:
        Its request line, header lines and the blank line that ends them, in bytes.
    """
    line = len(request.method) + len(request.target) + len(b"HTTP/") + len(request.http_version)
    fields = sum(len(name) + len(value) + 4 for name, value in request.headers.raw_items())
    return line + 4 + fields + 2


class HeadLimitedConnection(h11.Connection):
    """h11's server side, refusing a head over ``max_head_bytes`` however its bytes arrived.

    The error h11 raised last (``error``) tells the protocol what status to answer.
    """

    def __init__(self, max_head_bytes: int) -> None:
        """Serve one connection whose request heads may be at most ``max_head_bytes``."""
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self.max_head_bytes = max_head_bytes
        self.error: h11.RemoteProtocolError | None = None

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        """Return h11's next event; raise a 431 ``RemoteProtocolError`` for a head too large."""
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            self.error = exc
            raise
        if isinstance(event, h11.Request):
            if head_bytes(event) > self.max_head_bytes:
                self.error = h11.RemoteProtocolError(
                    "request head too large", error_status_hint=431
                )
                raise self.error
            if _is_framed_twice(event):
                self.error = h11.RemoteProtocolError(
                    "both Content-Length and Transfer-Encoding", error_status_hint=400
                )
                raise self.error
        return event


def _is_framed_twice(request: h11.Request) -> bool:
    """Whether ``request`` gives its body a ``Content-Length`` and a ``Transfer-Encoding``.

    h11 reads the body as chunked and goes on with the connection; a proxy in front
    that read the length instead would pass the rest of that body on as a request of
    its own, which no check of the proxy saw (request smuggling). RFC 9112 says such a
    request ought to be handled as an error: it is a 400.
    """
    names = [name for name, _ in request.headers]
    return b"transfer-encoding" in names and b"content-length" in names


def refusal_bytes(conn: h11.Connection, status_code: int, detail: str) -> bytes:
    """Encode, through ``conn``, the refusal of its request: ``{"detail": ...}``, then close.

    Args:
        conn: the connection, ready to send a response.
        status_code: the status to answer.
        detail: the short reason.

    Returns:
        The response's bytes; ``conn`` has sent it whole.

    Raises:
        h11.LocalProtocolError: ``conn`` has started a response already.
    """
    response = refusal(status_code, detail, {"Connection": "close"})
    phrase = HTTPStatus(status_code).phrase.encode()
    head = h11.Response(status_code=status_code, headers=response.raw_headers, reason=phrase)
    parts = [
        conn.send(head),
        conn.send(h11.Data(data=bytes(response.body))),
        conn.send(h11.EndOfMessage()),
    ]
    return b"".join(part for part in parts if part is not None)
