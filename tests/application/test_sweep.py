"""SessionSweeper: the background sweep of expired sessions, its logs, failures and stop."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from taskforce.api.server import create_app
from taskforce.application.sweep import SessionSweeper
from taskforce.config import Settings
from taskforce.core.interfaces.state import ExpiryProgress, SessionExpiry
from taskforce.errors import StateStoreError

_SWEEP_TASK = "taskforce-session-sweep"


class _Store:
    """A store whose sweeps answer what the test says, in turn, and are counted."""

    backend = "fake"

    def __init__(self, *answers: SessionExpiry | Exception, ttl: float | None = 60) -> None:
        self.session_ttl_seconds = ttl
        self._answers = list(answers)
        self.calls = 0
        self.called = asyncio.Event()

    async def expire_sessions(self) -> SessionExpiry:
        self.calls += 1
        self.called.set()
        answer = self._answers.pop(0) if self._answers else SessionExpiry(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def _until(condition: Callable[[], bool], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.005)


def _sweep_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == _SWEEP_TASK]


class TestSessionSweeper:
    async def test_sweeps_at_once_then_every_interval_and_logs_what_went(self) -> None:
        """The first sweep runs at start, the next after each interval; a sweep that
        deleted sessions logs state.sessions.expired with the count, one that deleted
        none logs nothing."""
        store = _Store(SessionExpiry(3), SessionExpiry(0), SessionExpiry(2))
        sweeper = SessionSweeper(store, interval_seconds=0.01)
        with capture_logs() as logs:
            sweeper.start()
            await _until(lambda: store.calls >= 3)
            await sweeper.aclose()
        expired = [log for log in logs if log["event"] == "state.sessions.expired"]
        fields = (
            "expired",
            "log_level",
            "category",
            "backend",
            "ttl_seconds",
            "failed",
            "cancelled",
        )
        assert [
            (3, "info", "state", "fake", 60, 0, False),
            (2, "info", "state", "fake", 60, 0, False),
        ] == [tuple(e[field] for field in fields) for e in expired]
        assert all(e["duration_ms"] >= 0 for e in expired)

    async def test_a_failed_sweep_is_logged_and_tried_again_next_period(self) -> None:
        """A sweep that raises ends nothing: it is logged with the store's error, and the
        next period's sweep runs."""
        failure = StateStoreError("cannot expire sessions: TimeoutError", detail="waited 10 s")
        store = _Store(failure, SessionExpiry(1))
        sweeper = SessionSweeper(store, interval_seconds=0.01)
        with capture_logs() as logs:
            sweeper.start()
            await _until(lambda: store.calls >= 2)
            assert sweeper.is_running
            await sweeper.aclose()
        events = [log["event"] for log in logs]
        assert ["state.sessions.expiry.failed", "state.sessions.expired"] == events[:2]
        failed = logs[0]
        assert (
            "warning",
            "state",
            "StateStoreError",
            "StateStoreError: cannot expire sessions: TimeoutError",
            "waited 10 s",
            0.01,
        ) == (
            failed["log_level"],
            failed["category"],
            failed["error_type"],
            failed["error"],
            failed["detail"],
            failed["retry_in_seconds"],
        )

    async def test_sessions_it_could_not_delete_are_a_warning(self) -> None:
        """A sweep that passed over sessions it could not delete says how many and why."""
        store = _Store(SessionExpiry(2, 1, "PermissionError: Operation not permitted"))
        sweeper = SessionSweeper(store, interval_seconds=60)
        with capture_logs() as logs:
            assert SessionExpiry(2, 1, "PermissionError: Operation not permitted") == (
                await sweeper.sweep()
            )
        assert [("warning", 2, 1, "PermissionError: Operation not permitted")] == [
            (log["log_level"], log["expired"], log["failed"], log["error"]) for log in logs
        ]

    async def test_a_sweep_that_fails_part_way_counts_what_it_deleted(self) -> None:
        """The sessions a store deleted before it failed are in the failure line's
        `expired` (in no other line); a store of one's own without `progress` is still
        called, and its failure line says it cannot tell (`expired` null)."""

        class _Partial(_Store):
            async def expire_sessions(
                self, progress: ExpiryProgress | None = None
            ) -> SessionExpiry:
                assert progress is not None
                progress.expired += 3
                raise StateStoreError("cannot expire sessions: InsufficientPrivilegeError")

        with capture_logs() as logs:
            assert None is await SessionSweeper(_Partial(), interval_seconds=60).sweep()
            failure = StateStoreError("cannot expire sessions: TimeoutError")
            assert None is await SessionSweeper(_Store(failure), interval_seconds=60).sweep()
        assert [("state.sessions.expiry.failed", 3), ("state.sessions.expiry.failed", None)] == [
            (log["event"], log["expired"]) for log in logs
        ]

    async def test_a_sweep_stopped_part_way_logs_what_it_deleted(self) -> None:
        """aclose() during a sweep that has deleted sessions logs them, as
        state.sessions.expired marked cancelled; one that deleted none logs nothing."""

        class _Stalling(_Store):
            def __init__(self, deleted: int) -> None:
                super().__init__()
                self.deleted = deleted

            async def expire_sessions(
                self, progress: ExpiryProgress | None = None
            ) -> SessionExpiry:
                assert progress is not None
                progress.expired += self.deleted
                self.called.set()
                await asyncio.Event().wait()
                raise AssertionError("not reached")

        with capture_logs() as logs:
            for deleted in (2, 0):
                store = _Stalling(deleted)
                sweeper = SessionSweeper(store, interval_seconds=60)
                sweeper.start()
                await asyncio.wait_for(store.called.wait(), 5)
                await asyncio.wait_for(sweeper.aclose(), 5)
        assert [("state.sessions.expired", "info", 2, 0, True)] == [
            (log["event"], log["log_level"], log["expired"], log["failed"], log["cancelled"])
            for log in logs
        ]

    async def test_stopping_cancels_a_sweep_under_way(self) -> None:
        """aclose() cancels the task, even inside a sweep that would never end, and waits
        for it: nothing keeps sweeping after the app stopped."""
        entered, cancelled = asyncio.Event(), asyncio.Event()

        class _Hanging(_Store):
            async def expire_sessions(self) -> SessionExpiry:
                entered.set()
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    cancelled.set()
                    raise
                raise AssertionError("not reached")

        sweeper = SessionSweeper(_Hanging(), interval_seconds=60)
        sweeper.start()
        await asyncio.wait_for(entered.wait(), 5)
        await asyncio.wait_for(sweeper.aclose(), 5)
        assert (True, False, []) == (cancelled.is_set(), sweeper.is_running, _sweep_tasks())

    async def test_stopping_in_the_pause_between_sweeps(self) -> None:
        """aclose() during the wait for the next sweep ends the task at once."""
        store = _Store()
        sweeper = SessionSweeper(store, interval_seconds=3600)
        sweeper.start()
        await asyncio.wait_for(store.called.wait(), 5)
        await asyncio.sleep(0)  # into the pause
        await asyncio.wait_for(sweeper.aclose(), 5)
        assert (1, [], False) == (store.calls, _sweep_tasks(), sweeper.is_running)

    @pytest.mark.parametrize("store", [_Store(ttl=None), object()], ids=["no-ttl", "no-sweep"])
    async def test_nothing_to_sweep_starts_no_task(self, store: object) -> None:
        """A store without a TTL, or one of one's own without expire_sessions: no task."""
        sweeper = SessionSweeper(store, interval_seconds=0.01)
        sweeper.start()
        assert (False, [], None) == (sweeper.is_running, _sweep_tasks(), await sweeper.sweep())
        await sweeper.aclose()

    @pytest.mark.parametrize("interval", [0, -1, float("nan"), float("inf")])
    def test_an_interval_that_is_no_positive_number_is_refused(self, interval: float) -> None:
        """The pause must be above 0 and finite; the message names the value."""
        with pytest.raises(ValueError, match="interval_seconds must be above 0"):
            SessionSweeper(_Store(), interval_seconds=interval)


class TestInTheApp:
    def _settings(self, tmp_path: Path, **state: object) -> Settings:
        return Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "ws", state=state)

    async def test_the_sweep_runs_with_the_app_and_stops_with_it(self, tmp_path: Path) -> None:
        """With state.session_ttl_seconds, the app's lifespan sweeps expired sessions (here
        the file store behind the metrics proxy) and its end stops the sweeping task."""
        settings = self._settings(tmp_path, session_ttl_seconds=60, sweep_interval_seconds=0.01)
        expired = settings.state_dir / "old.json"
        settings.state_dir.mkdir()
        expired.write_text('{"missions": []}', encoding="utf-8")
        os.utime(expired, (time.time() - 120, time.time() - 120))
        app = create_app(settings)
        with capture_logs() as logs:
            async with app.router.lifespan_context(app):
                await _until(lambda: not expired.exists())
                assert 1 == len(_sweep_tasks())
            assert [] == _sweep_tasks()
        (line,) = [log for log in logs if log["event"] == "state.sessions.expired"]
        assert (1, "file", 60) == (line["expired"], line["backend"], line["ttl_seconds"])

    async def test_without_a_ttl_the_app_sweeps_nothing(self, tmp_path: Path) -> None:
        """The default keeps sessions for good: no sweeping task, an old file stays."""
        settings = self._settings(tmp_path)
        old = settings.state_dir / "old.json"
        settings.state_dir.mkdir()
        old.write_text('{"missions": []}', encoding="utf-8")
        os.utime(old, (0, 0))
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            assert [] == _sweep_tasks()
        assert old.exists()
