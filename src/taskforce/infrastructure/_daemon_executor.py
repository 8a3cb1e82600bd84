"""A fixed-size thread executor whose threads never hold up the exit of the process.

``ThreadPoolExecutor`` joins its worker threads when the interpreter exits, so a
single call stuck in the kernel (a read of a hung network filesystem) would keep
a stopped service from ever exiting. These workers are daemon threads instead:
at exit, a call still running is abandoned with the process. Everything else
behaves as ``ThreadPoolExecutor(max_workers)``: threads start on demand up to
the limit, calls beyond it wait in a first-in first-out queue, and a waiting
call whose future is cancelled never runs.
"""

from __future__ import annotations

import queue
import threading
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
        self._queue: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
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
            self._queue.put(_WorkItem(future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self._prefix}_{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
            return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            if item.future.set_running_or_notify_cancel():
                try:
                    result = item.func(*item.args, **item.kwargs)
                except BaseException as exc:  # handed to the caller, as ThreadPoolExecutor does
                    item.future.set_exception(exc)
                else:
                    item.future.set_result(result)
            del item  # drop the reference to the call's result before waiting for more
            self._idle.release()
        self._queue.put(None)  # wake the next worker, so every one of them ends

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls; idle threads end, running calls finish in their threads.

        Args:
            wait: Wait for the threads that are running a call to end.
            cancel_futures: Cancel the calls that are still waiting for a thread.
        """
        with self._lock:
            self._is_shut_down = True
            if cancel_futures:
                pending: list[_WorkItem] = []
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        pending.append(item)
                for item in pending:
                    item.future.cancel()
            self._queue.put(None)
            threads = list(self._threads)
        if wait:
            for thread in threads:
                thread.join()
