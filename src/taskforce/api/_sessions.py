"""``GET /api/v1/sessions/{session_id}``: a session's mission records, on any state store
(and ``HEAD``, the same answer without its body).

The route is added to the mission router, so it shares that router's guard
(``api.auth_token``) and its always-encodable JSON. Each read takes a slot of
``api.max_session_reads_in_flight`` (see ``_admission``) after its guard, and holds it
until its answer is sent.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from taskforce.api._admission import admit
from taskforce.api._encoding import Redact, SafeJSONResponse, json_bytes
from taskforce.api._schemas import SESSION_ANSWERS
from taskforce.application.container import Container
from taskforce.application.sessions import read_session
from taskforce.core.interfaces.executor import SESSION_ID_PATTERN
from taskforce.core.interfaces.outcome import class_error_type, exception_message
from taskforce.errors import StateStoreError, StateStoreUnavailableError

__all__ = ["add_session_routes"]

_SessionId = Annotated[
    str,
    Path(
        pattern=f"^{SESSION_ID_PATTERN.pattern}$",
        description="1 to 128 of A-Z a-z 0-9 _ . - not starting with '.'",
    ),
]

# A session's records are private: no proxy or browser cache may keep an answer about one.
_NOT_STORED = {"Cache-Control": "no-store"}

#: The piece of an answer sent at a time: asyncio's default high-water mark of a transport's
#: write buffer, past which the server's next send waits for the client to read.
_PIECE_BYTES = 64 * 1024


class _PacedResponse(Response):
    """A JSON answer sent in pieces, each once the client took the ones before.

    A body sent whole is copied into the connection's write buffer and the app returns at
    once, however slowly the client reads: the read would give its slot back while the
    process still held its answer. Sent in pieces, the last send waits until the rest
    left the process (or the client went away), so the slot is held as long as the memory.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the head, then the body piece by piece, then its end."""
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        body = self.body
        if scope.get("method") != "HEAD":
            for start in range(0, len(body), _PIECE_BYTES):
                piece = body[start : start + _PIECE_BYTES]
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        # an empty last piece: the server sends it only once the pieces before are out
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def add_session_routes(router: APIRouter, container: Container, redact: Redact) -> None:
    """Add the session routes to ``router`` (under its prefix and its dependencies).

    Args:
        router: the ``/api/v1`` router.
        container: whose state store the routes read.
        redact: applied to the JSON text of every answer (no server path leaves).
    """
    store = container.state_store

    # The view is sent as read_session shaped it; SESSION_ANSWERS declares its shape.
    @router.get("/sessions/{session_id}", responses=SESSION_ANSWERS)
    async def get_session(session_id: _SessionId, request: Request) -> Response:
        """A session's mission records in the order written; 404 for an unknown session."""
        refused = admit(request)
        if refused is not None:
            return refused
        answer = await _read(session_id)
        answer.headers.update(_NOT_STORED)
        return answer

    async def _read(session_id: str) -> Response:
        try:
            view = await read_session(store, session_id)
        except ValueError:
            return SafeJSONResponse(status_code=422, content={"detail": "invalid session id"})
        except StateStoreError as exc:
            # The store's message names no path or DSN; the log has the detail.
            status = 503 if isinstance(exc, StateStoreUnavailableError) else 500
            detail = redact(exception_message(exc))
            return SafeJSONResponse(status_code=status, content={"detail": detail})
        except Exception as exc:
            # A store of one's own that raised anything else (a bug in it) fails this read
            # as a store error does. Its message may name a path or a DSN: only its class
            # is said (state.load.failed has the message).
            reason = f"could not read the session state ({class_error_type(exc)})"
            return SafeJSONResponse(status_code=500, content={"detail": reason})
        if view is None:
            return SafeJSONResponse(
                status_code=404, content={"detail": f"unknown session {session_id!r}"}
            )
        return _PacedResponse(json_bytes(view.to_dict(), redact), media_type="application/json")

    # HEAD too, as for every GET route: the same answer without its body.
    router.add_api_route(
        "/sessions/{session_id}", get_session, methods=["HEAD"], include_in_schema=False
    )
