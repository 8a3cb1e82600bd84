"""A listener that cannot accept connections (the process is out of descriptors): one line.

When ``accept()`` fails for want of a resource (``EMFILE``, ``ENFILE``, ``ENOBUFS``,
``ENOMEM``), asyncio logs it at error level with a traceback and tries again a second
later, but Python 3.11's accept loop goes on calling ``accept()`` first, logging each
failure, up to the listen backlog (2,048) times: thousands of tracebacks a second while
the process has no descriptor left, which buried every other line. While
``taskforce serve`` runs, the loop's exception handler logs the first failure of a
spell as ``http.accept.failed`` and drops the others, until a listener takes a
connection again; everything else goes to the handler it had. The connections wait in
the listen backlog meanwhile, and asyncio still tries again a second later.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from asyncio import constants
from collections.abc import Callable, Iterator
from typing import Any

import structlog

__all__ = ["accept_failures_logged", "note_accepted"]

_LOG = structlog.get_logger("taskforce.api")
#: asyncio's message for an ``accept()`` that failed for want of a resource.
_OUT_OF_RESOURCES = "socket.accept() out of system resource"

_Handler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None


class _AcceptFailureLog:
    """The loop's exception handler: one ``http.accept.failed`` a spell; the rest to ``previous``.

    ``previous`` gets every other error of the loop (``None``: asyncio's default handler).
    """

    def __init__(self, previous: _Handler) -> None:
        self.previous = previous
        self.is_failing = False

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if context.get("message") != _OUT_OF_RESOURCES or not isinstance(exc, OSError):
            if self.previous is None:
                loop.default_exception_handler(context)
            else:
                self.previous(loop, context)
            return
        if self.is_failing:
            return
        self.is_failing = True
        port = None
        with contextlib.suppress(AttributeError, OSError, IndexError, TypeError):
            port = context["socket"].getsockname()[1]
        _LOG.error(
            "http.accept.failed",
            category="http",
            error_type=errno.errorcode.get(exc.errno or 0, type(exc).__name__),
            reason=exc.strerror or str(exc),
            port=port,
            retry_in_seconds=constants.ACCEPT_RETRY_DELAY,
        )


@contextlib.contextmanager
def accept_failures_logged(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Log ``loop``'s failed accepts once a spell (see the module) while the block runs.

    Args:
        loop: the event loop the listeners serve on; its exception handler is put back
            on exit.
    """
    previous = loop.get_exception_handler()
    loop.set_exception_handler(_AcceptFailureLog(previous))
    try:
        yield
    finally:
        loop.set_exception_handler(previous)


def note_accepted(loop: asyncio.AbstractEventLoop) -> None:
    """A listener of ``loop`` took a connection: a failed accept starts a new spell.

    Args:
        loop: the event loop the listener serves on (nothing happens outside
            :func:`accept_failures_logged`).
    """
    handler = loop.get_exception_handler()
    if isinstance(handler, _AcceptFailureLog):
        handler.is_failing = False
