"""Call an ASGI app in the test's own loop, with a hand-made HTTP scope, no server."""

from __future__ import annotations

from typing import Any

from starlette.types import Message, Scope

__all__ = ["call_app", "http_scope"]


async def call_app(app: Any, scope: Scope) -> list[Message]:
    """Run ``app`` on ``scope`` with an empty body; return the messages it sent."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def http_scope(path: str, method: str = "GET") -> Scope:
    """A GET (or ``method``) of ``path`` from 127.0.0.1, without headers."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1234),
    }
