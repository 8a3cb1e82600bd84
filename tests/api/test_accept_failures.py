"""A listener out of descriptors: asyncio's line for each failed ``accept()`` becomes one
``http.accept.failed`` a spell, on a real server."""

from __future__ import annotations

import asyncio
import errno
import socket

import httpx
import pytest
import structlog

from taskforce.config import Settings
from tests.support.taskforce_server import serving

pytestmark = pytest.mark.integration


class TestAcceptFailures:
    """A listener out of descriptors: asyncio's line for each failed accept, up to the
    listen backlog (2,048) a second, becomes one ``http.accept.failed`` a spell."""

    @staticmethod
    def _fail_accepts(port: int, times: int) -> None:
        loop = asyncio.get_running_loop()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # only named in the line: never listened on
            context = {
                "message": "socket.accept() out of system resource",
                "exception": OSError(errno.EMFILE, "Too many open files"),
                "socket": sock,
            }
            for _ in range(times):
                loop.call_exception_handler(context)

    async def test_one_line_a_spell(self, settings: Settings) -> None:
        """Many failures log one line; a connection taken again starts a new spell."""
        async with serving(settings) as (port, _):
            with structlog.testing.capture_logs() as logs:
                self._fail_accepts(0, 2048)
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                    assert 200 == (await client.get("/health")).status_code
                self._fail_accepts(0, 5)
        failed = [log for log in logs if log["event"] == "http.accept.failed"]
        assert 2 == len(failed)
        assert {
            "category": "http",
            "log_level": "error",
            "error_type": "EMFILE",
            "reason": "Too many open files",
            "retry_in_seconds": 1,
        }.items() <= failed[0].items()

    async def test_other_loop_errors_go_to_the_handler_before(self, settings: Settings) -> None:
        """The loop's other errors reach the handler it had, which is back after the server."""
        loop = asyncio.get_running_loop()
        seen: list[str] = []
        loop.set_exception_handler(lambda _, context: seen.append(context["message"]))
        try:
            async with serving(settings):
                loop.call_exception_handler({"message": "something else"})
            handler = loop.get_exception_handler()
        finally:
            loop.set_exception_handler(None)
        assert ["something else"] == seen
        assert handler is not None
        handler(loop, {"message": "after"})
        assert ["something else", "after"] == seen
