"""Tests of the tools' bounded thread pool: busy count, saturation, cancellation, context."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import threading
import weakref
from collections.abc import AsyncIterator, Callable

import pytest

from taskforce.config import ToolSettings
from taskforce.infrastructure.tools import DEFAULT_TOOL_THREADS, ToolThreadPool

_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("test_pool_var", default="unset")


class _Payload:
    """What a call holds, where a test can tell it is let go (by a weak reference)."""


def _held(release: threading.Event, started: threading.Semaphore) -> Callable[[], str]:
    def hold() -> str:
        started.release()
        release.wait()
        return "released"

    return hold


@pytest.fixture(name="pool")
async def fixture_pool() -> AsyncIterator[ToolThreadPool]:
    """A pool of two threads, closed after the test."""
    pool = ToolThreadPool(2)
    yield pool
    pool.close()


async def _wait_started(started: threading.Semaphore, count: int) -> None:
    for _ in range(count):
        await asyncio.to_thread(started.acquire)


class TestToolThreadPool:
    def test_default_size_matches_the_settings_default(self) -> None:
        """The pool's default size is the documented default of ``tools.threads``."""
        assert ToolSettings().threads == DEFAULT_TOOL_THREADS == ToolThreadPool().size

    def test_size_below_one_refused(self) -> None:
        """A pool without threads is refused where it is made."""
        with pytest.raises(ValueError, match="at least 1 thread, got 0"):
            ToolThreadPool(0)

    async def test_returns_and_raises_like_the_function(self, pool: ToolThreadPool) -> None:
        """A call's value comes back; its exception is raised unchanged."""
        error = OSError("boom")

        def fail() -> None:
            raise error

        assert 42 == await pool.run(lambda: 42)
        with pytest.raises(OSError) as caught:
            await pool.run(fail)
        assert error is caught.value

    async def test_runs_under_the_callers_context(self, pool: ToolThreadPool) -> None:
        """The function sees the context variables of the task that called run."""
        token = _VAR.set("mission-context")
        try:
            assert "mission-context" == await pool.run(_VAR.get)
        finally:
            _VAR.reset(token)

    async def test_busy_and_saturated_while_every_thread_is_held(
        self, pool: ToolThreadPool
    ) -> None:
        """busy counts running calls; saturated once all threads run one, clear after."""
        release, started = threading.Event(), threading.Semaphore(0)
        first = asyncio.ensure_future(pool.run(_held(release, started)))
        await _wait_started(started, 1)
        assert (1, False) == (pool.busy, pool.is_saturated)
        second = asyncio.ensure_future(pool.run(_held(release, started)))
        await _wait_started(started, 1)
        assert (2, True) == (pool.busy, pool.is_saturated)
        release.set()
        assert ["released", "released"] == list(await asyncio.gather(first, second))
        assert (0, False) == (pool.busy, pool.is_saturated)

    async def test_cancelled_queued_call_never_runs(self, pool: ToolThreadPool) -> None:
        """A call waiting for a thread whose caller gives up is dropped, not run later."""
        release, started = threading.Event(), threading.Semaphore(0)
        held = [asyncio.ensure_future(pool.run(_held(release, started))) for _ in range(2)]
        await _wait_started(started, 2)
        ran = threading.Event()
        queued = asyncio.ensure_future(pool.run(ran.set))
        await asyncio.sleep(0)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        release.set()
        await asyncio.gather(*held)
        await pool.run(lambda: None)  # the queue is first-in first-out: past the dropped call
        assert not ran.is_set()

    async def test_a_call_given_up_while_it_waits_lets_go_of_what_it_holds(
        self, pool: ToolThreadPool
    ) -> None:
        """A queued call whose caller gives up (a tool timeout) is not kept, nor what it holds.

        Behind threads stuck for good, calls given up on would otherwise pile up, each
        with its arguments (a file_write's content), for the life of the process.
        """
        release, started = threading.Event(), threading.Semaphore(0)
        held = [asyncio.ensure_future(pool.run(_held(release, started))) for _ in range(2)]
        await _wait_started(started, 2)
        payload = _Payload()
        gone = weakref.ref(payload)
        queued = asyncio.ensure_future(pool.run(functools.partial(id, payload)))
        del payload
        await asyncio.sleep(0)
        queued.cancel()
        await asyncio.wait([queued])
        assert queued.cancelled()
        del queued  # its exception's traceback holds the frames that held the call
        gc.collect()
        try:
            assert None is gone()
        finally:
            release.set()
            await asyncio.gather(*held)

    async def test_held_threads_do_not_hold_the_default_executor(
        self, pool: ToolThreadPool
    ) -> None:
        """With every pool thread stuck, work on the loop's default executor still runs."""
        release, started = threading.Event(), threading.Semaphore(0)
        held = [asyncio.ensure_future(pool.run(_held(release, started))) for _ in range(2)]
        await _wait_started(started, 2)
        try:
            assert "free" == await asyncio.to_thread(lambda: "free")
        finally:
            release.set()
            await asyncio.gather(*held)

    async def test_closed_pool_refuses_calls(self) -> None:
        """After close, run raises instead of queueing work that never runs."""
        pool = ToolThreadPool(1)
        pool.close()
        with pytest.raises(RuntimeError):
            await pool.run(lambda: None)
