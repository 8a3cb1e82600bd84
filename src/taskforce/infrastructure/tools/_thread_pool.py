"""The bounded thread pool the built-in tools run their blocking calls in.

Holds worker threads (process-wide resources) for the life of a container. A
call that hangs in the kernel (a stuck network filesystem, say) keeps its thread
even after the caller's timeout gave up on it; keeping tools off the event
loop's default executor means such a call can only exhaust this pool, never the
threads the state store and the rest of the service rely on. The threads are
daemons (see ``_daemon_executor``), so a stuck one never keeps the process from
exiting.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import TypeVar

from taskforce.infrastructure._daemon_executor import DaemonThreadExecutor

__all__ = ["DEFAULT_TOOL_THREADS", "ToolThreadPool"]

#: Size of the pool when the settings name none (``tools.threads``).
DEFAULT_TOOL_THREADS = 8

_T = TypeVar("_T")


class ToolThreadPool:
    """A fixed number of threads for the tools' blocking work, with a count of busy ones.

    Safe to share between concurrent missions and event loops. Calls beyond the
    pool's size wait in a queue; a waiting call whose caller is cancelled (a tool
    timeout) is dropped from the queue and never runs.

    Args:
        threads: How many calls may run at once.

    Raises:
        ValueError: ``threads`` is less than 1.
    """

    def __init__(self, threads: int = DEFAULT_TOOL_THREADS) -> None:
        if threads < 1:
            raise ValueError(f"a tool thread pool needs at least 1 thread, got {threads}")
        self.size = threads
        self._executor = DaemonThreadExecutor(threads, thread_name_prefix="taskforce-tool")
        self._lock = threading.Lock()
        self._busy = 0

    @property
    def busy(self) -> int:
        """How many threads are running a call right now (queued calls not counted)."""
        return self._busy

    @property
    def is_saturated(self) -> bool:
        """Whether every thread is running a call, so the next call has to wait."""
        return self._busy >= self.size

    async def run(self, func: Callable[[], _T]) -> _T:
        """Run ``func`` in one of the pool's threads, under a copy of the caller's context.

        Args:
            func: A blocking callable without arguments.

        Returns:
            What ``func`` returned.

        Raises:
            Exception: Whatever ``func`` raised.
            RuntimeError: The pool was closed.
            asyncio.CancelledError: The caller was cancelled; a call already
                running goes on in its thread until it returns.
        """
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._counted, context, func)

    def _counted(self, context: contextvars.Context, func: Callable[[], _T]) -> _T:
        with self._lock:
            self._busy += 1
        try:
            return context.run(func)
        finally:
            with self._lock:
                self._busy -= 1

    def close(self) -> None:
        """Stop taking calls and drop the queued ones; running calls finish in their threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        return f"<ToolThreadPool busy={self._busy}/{self.size}>"
