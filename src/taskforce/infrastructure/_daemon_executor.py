"""A fixed-size thread executor whose threads never hold up the exit of the process.

``ThreadPoolExecutor`` joins its worker threads when the interpreter exits, so a
single call stuck in the kernel (a read of a hung network filesystem) would keep
a stopped service from ever exiting. These workers are daemon threads instead:
at exit, a call still running is abandoned with the process. Everything else
behaves as ``ThreadPoolExecutor(max_workers)``: threads start on demand up to
the limit, calls beyond it wait in a first-in first-out queue, and a waiting
call whose future is cancelled never runs. Unlike there, such a call leaves the
queue at once, arguments and all: behind threads stuck for good, calls given up
on (a tool timeout) would otherwise pile up for the life of the process.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, NamedTuple, ParamSpec, TypeVar

__all__ = ["DaemonThreadExecutor"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _WorkItem(NamedTuple):
    future: Future[Any]
    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class DaemonThreadExecutor(Executor):
    """Run calls in at most ``max_workers`` daemon threads.

    Args:
        max_workers: How many calls may run at once.
        thread_name_prefix: Prefix of the threads' names.

    Raises:
        ValueError: ``max_workers`` is less than 1.
    """

    def __init__(self, max_workers: int, thread_name_prefix: str = "daemon-executor") -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self._max_workers = max_workers
        self._prefix = thread_name_prefix
        self._waiting: deque[_WorkItem] = deque()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._idle = 0
        self._threads: list[threading.Thread] = []
        self._is_shut_down = False

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Schedule ``fn(*args, **kwargs)``; start a thread if none is idle and the limit allows.

        Raises:
            RuntimeError: The executor was shut down.
        """
        with self._lock:
            if self._is_shut_down:
                raise RuntimeError("cannot schedule new calls after shutdown")
            future: Future[_T] = Future()
            self._waiting.append(_WorkItem(future, fn, args, kwargs))
            self._changed.notify()
            # an idle thread (one waiting, woken or not yet) takes one call each
            if self._idle < len(self._waiting) and len(self._threads) < self._max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self._prefix}_{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        # the future keeps its callbacks: this one must not hold the call's arguments
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future[Any]) -> None:
        """Drop the call of a future done before a thread took it (cancelled) from the queue."""
        if not future.cancelled():  # it ran: a thread took it off the queue
            return
        with self._lock:
            for item in self._waiting:
                if item.future is future:
                    self._waiting.remove(item)
                    return

    def _next(self) -> _WorkItem | None:
        """The next waiting call, or ``None`` once the executor is shut down and none is left."""
        with self._lock:
            while not self._waiting and not self._is_shut_down:
                self._idle += 1
                try:
                    self._changed.wait()
                finally:
                    self._idle -= 1
            return self._waiting.popleft() if self._waiting else None

    def _work(self) -> None:
        while (item := self._next()) is not None:
            if item.future.set_running_or_notify_cancel():
                try:
                    result = item.func(*item.args, **item.kwargs)
                except BaseException as exc:  # handed to the caller, as ThreadPoolExecutor does
                    item.future.set_exception(exc)
                else:
                    item.future.set_result(result)
                    del result  # the caller's now: an idle thread must not keep it alive
            del item  # drop the reference to the call and its future before waiting for more

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls; idle threads end, running calls finish in their threads.

        Args:
            wait: Wait for the threads that are running a call to end.
            cancel_futures: Cancel the calls that are still waiting for a thread.
        """
        with self._lock:
            self._is_shut_down = True
            pending = list(self._waiting) if cancel_futures else []
            if cancel_futures:
                self._waiting.clear()
            self._changed.notify_all()
            threads = list(self._threads)
        for item in pending:
            item.future.cancel()
        if wait:
            for thread in threads:
                thread.join()
