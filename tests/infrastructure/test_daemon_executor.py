"""Tests of the daemon thread executor: bounded, cancellable, and never in the way of exit."""

from __future__ import annotations

import gc
import os
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future
from pathlib import Path

import pytest

from taskforce.infrastructure._daemon_executor import DaemonThreadExecutor
from tests.support.processes import run_python


@pytest.fixture(name="executor")
def fixture_executor() -> Iterator[DaemonThreadExecutor]:
    """An executor of two threads, shut down after the test."""
    executor = DaemonThreadExecutor(2, thread_name_prefix="test")
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


class _Payload:
    """An argument a test can tell is no longer held (by a weak reference)."""


def _hold(release: threading.Event, started: threading.Semaphore) -> str:
    started.release()
    release.wait()
    return threading.current_thread().name


class TestDaemonThreadExecutor:
    def test_results_and_exceptions(self, executor: DaemonThreadExecutor) -> None:
        """A call's value and its exception reach the future unchanged."""
        error = OSError("boom")

        def fail() -> None:
            raise error

        assert 7 == executor.submit(lambda a, b: a + b, 3, b=4).result()
        assert error is executor.submit(fail).exception()

    def test_at_most_max_workers_run_at_once(self, executor: DaemonThreadExecutor) -> None:
        """With two threads busy, a third call waits until one is free, then reuses it."""
        release, started = threading.Event(), threading.Semaphore(0)
        held = [executor.submit(_hold, release, started) for _ in range(2)]
        for _ in range(2):
            started.acquire()
        third = executor.submit(_hold, release, started)
        assert not started.acquire(timeout=0.1)  # a hang guard, not a timing: it must not run
        release.set()
        names = {future.result() for future in [*held, third]}
        assert {"test_0", "test_1"} == names

    def test_a_thread_keeps_no_result_once_done_with_it(self) -> None:
        """A thread's next call, failing, finds nothing of the last one's result held.

        A result may be a whole file's text: a thread must not hold it while it waits.
        """

        class Output:
            pass

        def fail() -> None:
            raise OSError("next call")

        executor = DaemonThreadExecutor(1, thread_name_prefix="test")
        try:
            output = weakref.ref(executor.submit(Output).result(timeout=10))
            assert isinstance(executor.submit(fail).exception(timeout=10), OSError)
            gc.collect()
            assert output() is None
        finally:
            executor.shutdown(wait=False)

    def test_threads_are_daemons(self, executor: DaemonThreadExecutor) -> None:
        """Every worker is a daemon thread, so the interpreter does not join it at exit."""
        assert executor.submit(lambda: threading.current_thread().daemon).result()

    def test_cancelled_waiting_call_never_runs(self, executor: DaemonThreadExecutor) -> None:
        """A call cancelled while it waits for a thread is skipped."""
        release, started = threading.Event(), threading.Semaphore(0)
        held = [executor.submit(_hold, release, started) for _ in range(2)]
        for _ in range(2):
            started.acquire()
        ran = threading.Event()
        waiting: Future[None] = executor.submit(ran.set)
        assert waiting.cancel()
        release.set()
        for future in held:
            future.result()
        executor.submit(lambda: None).result()  # first in, first out: past the skipped call
        assert not ran.is_set()

    def test_a_cancelled_waiting_call_lets_go_of_its_arguments(self) -> None:
        """A call cancelled while every thread is stuck is dropped at once, arguments and all.

        A thread stuck for good (a hung network filesystem) never takes the next call:
        each call given up while it waited (a tool timeout) would hold what it was
        given, a file's content, for as long as the process lives.
        """
        executor = DaemonThreadExecutor(1)
        release, started = threading.Event(), threading.Semaphore(0)
        stuck = executor.submit(_hold, release, started)
        started.acquire()
        payload = _Payload()
        gone = weakref.ref(payload)
        waiting = executor.submit(id, payload)
        del payload
        assert waiting.cancel()
        gc.collect()
        assert None is gone()
        release.set()
        assert stuck.result()
        executor.shutdown(wait=True)

    def test_shutdown_cancels_waiting_calls_and_refuses_new_ones(self) -> None:
        """shutdown(cancel_futures=True) cancels what waits; a later submit raises."""
        executor = DaemonThreadExecutor(1)
        release, started = threading.Event(), threading.Semaphore(0)
        running = executor.submit(_hold, release, started)
        started.acquire()
        waiting = executor.submit(lambda: None)
        executor.shutdown(wait=False, cancel_futures=True)
        with pytest.raises(CancelledError):
            waiting.result()
        with pytest.raises(RuntimeError, match="after shutdown"):
            executor.submit(lambda: None)
        release.set()
        assert running.result()
        executor.shutdown(wait=True)

    def test_zero_workers_refused(self) -> None:
        """An executor without threads is refused where it is made."""
        with pytest.raises(ValueError, match="at least 1, got 0"):
            DaemonThreadExecutor(0)

    def test_a_stuck_call_does_not_keep_the_process_alive(self, tmp_path: Path) -> None:
        """A process whose call hangs in a FIFO read still exits when its main code ends."""
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        script = (
            "import threading, sys\n"
            "from taskforce.infrastructure._daemon_executor import DaemonThreadExecutor\n"
            "started = threading.Event()\n"
            "def read():\n"
            "    started.set()\n"
            f"    return open({str(fifo)!r}, 'rb').read()\n"
            "executor = DaemonThreadExecutor(1)\n"
            "executor.submit(read)\n"
            "started.wait()\n"
            "executor.shutdown(wait=False, cancel_futures=True)\n"
            "print('main done')\n"
        )
        done = run_python(script)
        assert (0, "main done\n") == (done.returncode, done.stdout), done.stderr
