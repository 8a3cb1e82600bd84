"""The sweep of expired sessions: a task of its own that, every ``state.sweep_interval_seconds``,
has the state store delete the sessions its time to live has expired, and removes the
session folders of this process's workspace idle for longer than that time to live.

Nothing it meets ends the process: a sweep that fails is logged and tried again a
period later. It runs in an empty context, so its log lines name no mission.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import inspect
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from taskforce.application._mission_support import seconds_since, store_failure_fields
from taskforce.core.interfaces.state import ExpiryProgress, SessionExpiry
from taskforce.infrastructure.tools import FolderRemoval, SessionFolders

__all__ = ["SessionSweeper"]

_LOG = structlog.get_logger(__name__)


class SessionSweeper:
    """Runs the store's ``expire_sessions`` at once, then every ``interval_seconds``.

    A store that has no ``expire_sessions`` (one of one's own), or whose
    ``session_ttl_seconds`` is ``None``, has nothing to sweep: :meth:`start` then starts
    no task. Sweeps of several processes sharing a store may overlap; the stores'
    contract makes that safe (``ExpiringStateStoreProtocol``).

    Every session a sweep deletes is counted in one log line: ``state.sessions.expired``
    when it ends or is cancelled (``cancelled``), ``state.sessions.expiry.failed`` when it
    fails after deleting some. The store tells what it deleted so far through an
    :class:`ExpiryProgress`; a store of one's own whose ``expire_sessions`` takes no
    ``progress`` is called without one.

    With ``folders`` (given when ``state.session_ttl_seconds`` is set) each sweep then
    removes the workspace's session folders idle for longer than the TTL, and logs how
    many in ``state.session_folders.removed``; a folder that cannot be removed is counted
    there and tried again next sweep.

    Args:
        store: the state store (plain or observed).
        interval_seconds: the pause between the end of one sweep and the start of the next.
        folders: the workspace's session folders to remove once idle; ``None``, none.

    Raises:
        ValueError: ``interval_seconds`` is not a positive finite number.
    """

    def __init__(
        self, store: object, interval_seconds: float, folders: SessionFolders | None = None
    ) -> None:
        if not 0 < interval_seconds < math.inf:
            raise ValueError(f"interval_seconds must be above 0, got {interval_seconds!r}")
        self._interval = interval_seconds
        self._expire: Callable[..., Awaitable[SessionExpiry]] | None = None
        self._ttl: Any = getattr(store, "session_ttl_seconds", None)
        if self._ttl is not None:
            self._expire = getattr(store, "expire_sessions", None)
        self._takes_progress = self._expire is not None and _takes_progress(self._expire)
        self._backend: Any = getattr(store, "backend", None)
        self._folders = folders
        self._task: asyncio.Task[None] | None = None

    @property
    def is_running(self) -> bool:
        """Whether the sweeping task runs (started, not closed)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start sweeping on the running loop, when there is anything to sweep; idempotent."""
        if (self._expire is None and self._folders is None) or self._task is not None:
            return
        self._task = asyncio.create_task(
            self._sweep_forever(), name="taskforce-session-sweep", context=contextvars.Context()
        )

    async def aclose(self) -> None:
        """Stop sweeping: cancel the task (a batch under way is rolled back) and wait for it."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def sweep(self) -> SessionExpiry | None:
        """Sweep once, the store then the session folders, and log what it did; raises
        nothing but cancellation.

        Returns:
            What the store did; ``None`` when it failed (logged as
            ``state.sessions.expiry.failed``) or there is nothing to sweep.
        """
        done = await self._expire_sessions()
        if self._folders is not None:
            await self._remove_folders(self._folders)
        return done

    async def _remove_folders(self, folders: SessionFolders) -> None:
        started = time.perf_counter()
        try:
            done = await folders.remove_idle()
        except Exception as exc:  # the workspace could not be listed: tried again next sweep
            done = FolderRemoval(0, 1, f"{type(exc).__name__}: {_exception_words(exc)}")
        if done.removed or done.failed:  # removed, failed, error
            fields = {**dataclasses.asdict(done), "ttl_seconds": folders.ttl_seconds}
            log = _LOG.warning if done.failed else _LOG.info
            ms = seconds_since(started) * 1000
            log("state.session_folders.removed", category="state", duration_ms=ms, **fields)

    async def _expire_sessions(self) -> SessionExpiry | None:
        if self._expire is None:
            return None
        started = time.perf_counter()
        progress = ExpiryProgress()
        try:
            done = await (self._expire(progress) if self._takes_progress else self._expire())
        except asyncio.CancelledError:
            if progress.expired:
                self._log_expired(SessionExpiry(progress.expired), started, cancelled=True)
            raise
        except Exception as exc:
            _LOG.warning(
                "state.sessions.expiry.failed",
                category="state",
                backend=self._backend,
                **store_failure_fields(exc),
                expired=progress.expired if self._takes_progress else None,
                duration_ms=seconds_since(started) * 1000,
                retry_in_seconds=self._interval,
            )
            return None
        if done.expired or done.failed:
            self._log_expired(done, started, cancelled=False)
        return done

    def _log_expired(self, done: SessionExpiry, started: float, *, cancelled: bool) -> None:
        log = _LOG.warning if done.failed else _LOG.info
        log(
            "state.sessions.expired",
            category="state",
            backend=self._backend,
            expired=done.expired,
            failed=done.failed,
            error=done.error,
            cancelled=cancelled,
            ttl_seconds=self._ttl,
            duration_ms=seconds_since(started) * 1000,
        )

    async def _sweep_forever(self) -> None:
        while True:
            await self.sweep()
            await asyncio.sleep(self._interval)


def _exception_words(exc: BaseException) -> str:
    """An exception's words without a path: an ``OSError``'s ``strerror``, else its message."""
    if isinstance(exc, OSError):
        return exc.strerror or "failed"
    return str(exc)


def _takes_progress(expire: Callable[..., object]) -> bool:
    """Whether ``expire`` (a store's ``expire_sessions``) takes a ``progress``."""
    try:
        return "progress" in inspect.signature(expire).parameters
    except (TypeError, ValueError):  # no signature to read: called as the old contract
        return False
