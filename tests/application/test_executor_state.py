"""How the executor records missions: one append per mission, its log events, store failures."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from taskforce.application.executor import AgentExecutor
from taskforce.core.interfaces.executor import AgentType
from taskforce.core.interfaces.outcome import exception_message
from taskforce.core.interfaces.state import AppendResult
from taskforce.errors import StateStoreError, StateStoreUnavailableError
from taskforce.infrastructure.llm import ScriptedLLMProvider
from taskforce.infrastructure.state import FileStateStore, StateLimits
from tests.core.domain.fakes import EchoLLM, FakeRegistry, FakeTool, MemoryStateStore, ok_handler
from tests.support.odd_values import Unprintable


def _executor(store: Any) -> AgentExecutor:
    return AgentExecutor(EchoLLM(), FakeRegistry(FakeTool("echo", ok_handler)), store)


class _FailingStore(MemoryStateStore):
    """Appends fail the way a database that went away fails."""

    async def append(self, session_id: str, record: dict[str, Any]) -> AppendResult:
        raise StateStoreUnavailableError(
            f"cannot save state of session {session_id!r}: ConnectionDoesNotExistError",
            detail="ConnectionDoesNotExistError: connection was closed in the middle of operation",
        )


class _UnprintableStoreError(Unprintable, StateStoreError):
    """The protocol's error, from a store of one's own whose message cannot be read."""


class _UnprintableValueError(Unprintable, ValueError):
    """A refused session id, from a store of one's own whose message cannot be read."""


class TestRecording:
    async def test_one_append_per_mission_no_load(self) -> None:
        """A mission appends its record once and never loads the whole session first."""
        store = MemoryStateStore()
        loads = 0
        original = store.load

        async def counting_load(session_id: str) -> Any:
            nonlocal loads
            loads += 1
            return await original(session_id)

        store.load = counting_load  # type: ignore[method-assign]
        executor = _executor(store)
        for i in range(3):
            await executor.execute_mission(f"m{i}", session_id="s", mission_id=f"id{i}")
        assert (0, 3) == (loads, store.saves)
        assert ["id0", "id1", "id2"] == [r["mission_id"] for r in store.missions("s")]

    async def test_saved_event_has_duration(self) -> None:
        """state.saved carries records, size_bytes and a non-negative duration_ms."""
        with capture_logs() as logs:
            await _executor(MemoryStateStore()).execute_mission("m", session_id="s")
        (saved,) = [e for e in logs if e["event"] == "state.saved"]
        assert (1, "state") == (saved["records"], saved["category"])
        assert saved["size_bytes"] > 0 and saved["duration_ms"] >= 0

    async def test_dropped_records_are_logged(self, tmp_path: Path) -> None:
        """With state.max_history=2 the third mission drops the oldest record, and says so."""
        store = FileStateStore(tmp_path, limits=StateLimits(max_history=2))
        executor = _executor(store)
        with capture_logs() as logs:
            for i in range(3):
                await executor.execute_mission(f"m{i}", session_id="s", mission_id=f"id{i}")
        dropped = [e for e in logs if e["event"] == "state.records.dropped"]
        assert [(1, 2, "info")] == [(e["dropped"], e["records"], e["log_level"]) for e in dropped]
        state = await store.load("s") or {}
        assert ["id1", "id2"] == [r["mission_id"] for r in state["missions"]]


class _ReportingOddly(MemoryStateStore):
    """A store of one's own that writes the record but reports it as ``report`` says."""

    def __init__(self, report: Any) -> None:
        super().__init__()
        self.report = report

    async def append(self, session_id: str, record: dict[str, Any]) -> Any:
        await super().append(session_id, record)
        return self.report


class TestOddAppendReports:
    @pytest.mark.parametrize(
        "report",
        [None, {"records": 1, "size_bytes": 2, "dropped": 0}, AppendResult("x", None, "1")],  # type: ignore[arg-type]
        ids=["none", "dict", "odd-counts"],
    )
    async def test_a_written_record_is_saved_whatever_the_store_reports(self, report: Any) -> None:
        """An append that returned wrote the record: a report that is no AppendResult of
        counts leaves the counts out of ``state.saved``, and the mission completes."""
        store = _ReportingOddly(report)
        with capture_logs() as logs:
            result = await _executor(store).execute_mission("m", session_id="s")
        assert ("completed", None) == (result.status, result.error_type)
        (saved,) = [e for e in logs if e["event"] == "state.saved"]
        assert (None, None) == (saved["records"], saved["size_bytes"])
        assert [] == [e for e in logs if e["event"] == "state.records.dropped"]
        assert 1 == len((await store.load("s") or {})["missions"])


class TestStoreFailures:
    async def test_unreachable_store_fails_the_mission_cleanly(self) -> None:
        """A database error fails the mission with the store's short message; the log has more."""
        with capture_logs() as logs:
            result = await _executor(_FailingStore()).execute_mission("m", session_id="s")
        assert "failed" == result.status
        assert result.error == (
            "could not save the session state: "
            "cannot save state of session 's': ConnectionDoesNotExistError"
        )
        (failed,) = [e for e in logs if e["event"] == "state.save.failed"]
        assert "connection was closed" in failed["detail"]
        assert ("error", True) == (failed["log_level"], failed["duration_ms"] >= 0)

    async def test_store_error_subclasses_are_not_raised(self) -> None:
        """Any StateStoreError becomes a failed result, never an exception of execute_mission."""

        class Broken(MemoryStateStore):
            async def append(self, session_id: str, record: dict[str, Any]) -> AppendResult:
                raise StateStoreError("cannot save state of session 's': disk full")

        result = await _executor(Broken()).execute_mission("m", session_id="s")
        assert ("failed", True) == (result.status, "disk full" in (result.error or ""))

    @pytest.mark.parametrize("raised", [RuntimeError, TimeoutError, Unprintable])
    @pytest.mark.parametrize("is_streamed", [False, True])
    async def test_a_store_of_ones_own_that_raises_fails_only_the_mission(
        self, is_streamed: bool, raised: type[Exception]
    ) -> None:
        """A store that raises something else than the protocol's errors (a bug in it) fails
        the mission with its class as error_type (a TimeoutError too: no call timed out), in
        the result, the stream and the log; its message (it may name a path) stays in
        state.save.failed."""

        class Buggy(MemoryStateStore):
            async def append(self, session_id: str, record: dict[str, Any]) -> AppendResult:
                raise raised("/srv/secret/state broke")

        executor = _executor(Buggy())
        with capture_logs() as logs:
            if is_streamed:
                stream = executor.execute_mission_streaming("m", session_id="s")
                events = [event async for event in stream]
                result = events[-1].result
                errors = [e.data for e in events if e.kind == "error"]
            else:
                result = await executor.execute_mission("m", session_id="s")
                errors = [{"error": result.error, "error_type": result.error_type}]
        name = raised.__name__
        error = f"could not save the session state ({name})"
        assert result is not None
        assert ("failed", name, error) == (result.status, result.error_type, result.error)
        assert [{"error": error, "error_type": name}] == errors
        (failed,) = [e for e in logs if e["event"] == "mission.failed"]
        assert (name, len(error)) == (failed["error_type"], failed["error_chars"])
        (unsaved,) = [e for e in logs if e["event"] == "state.save.failed"]
        said = exception_message(raised("/srv/secret/state broke"))
        assert (name, f"{name}: {said}") == (unsaved["error_type"], unsaved["error"])

    @pytest.mark.parametrize(
        ("raised", "error"),
        [
            (Unprintable(), "could not save the session state (Unprintable)"),
            (
                _UnprintableStoreError("x"),
                "could not save the session state: "
                "<the message of this _UnprintableStoreError could not be read>",
            ),
            (
                _UnprintableValueError(),
                "could not save the session state: invalid session_id: "
                "<the message of this _UnprintableValueError could not be read>",
            ),
        ],
    )
    async def test_a_store_error_that_cannot_print_fails_under_its_own_class(
        self, raised: Exception, error: str
    ) -> None:
        """A store's exception whose message cannot be read fails the mission under its own
        class, with a placeholder for the message, in the result and in state.save.failed."""

        class Unreadable(MemoryStateStore):
            async def append(self, session_id: str, record: dict[str, Any]) -> AppendResult:
                raise raised

        with capture_logs() as logs:
            result = await _executor(Unreadable()).execute_mission("m", session_id="s")
        name = type(raised).__name__
        assert ("failed", name, error) == (result.status, result.error_type, result.error)
        (unsaved,) = [e for e in logs if e["event"] == "state.save.failed"]
        assert f"{name}: <the message of this {name} could not be read>" == unsaved["error"]

    @pytest.mark.parametrize(
        ("mission", "first"), [("say hi", None), ("llm:fail auth\nsay hi", "auth")]
    )
    async def test_a_stream_ends_with_the_error_its_result_carries(
        self, mission: str, first: str | None
    ) -> None:
        """The store's failure is the stream's last error event, as it is the result's error.

        After a mission that failed itself (auth), its own error event comes first.
        """
        executor = AgentExecutor(ScriptedLLMProvider(), FakeRegistry(), _FailingStore())
        events = [e async for e in executor.execute_mission_streaming(mission, session_id="s")]
        errors = [(e.data["error_type"], e.data["error"]) for e in events if e.kind == "error"]
        result = events[-1].result
        assert result is not None
        unsaved = "StateStoreUnavailableError"
        assert ("failed", unsaved) == (result.status, result.error_type)
        assert (unsaved, result.error) == errors[-1]
        assert ([first] if first else []) + [unsaved] == [error_type for error_type, _ in errors]


class TestCancelledAfterTheEnd:
    async def test_a_saved_record_is_the_missions_outcome(self) -> None:
        """Cancelled while its record is being saved: the mission ended, as the record says.

        The result comes back, and the log says completed, not cancelled (a client that
        left, or a shutdown, just as the mission finished).
        """
        started, release = asyncio.Event(), asyncio.Event()

        class SlowStore(MemoryStateStore):
            async def append(self, session_id: str, record: dict[str, Any]) -> AppendResult:
                started.set()
                await release.wait()
                return await super().append(session_id, record)

        store = SlowStore()
        with capture_logs() as logs:
            task = asyncio.ensure_future(_executor(store).execute_mission("m", session_id="s"))
            await started.wait()
            task.cancel()
            await asyncio.sleep(0)
            release.set()
            result = await task
        assert ("completed", 0) == (result.status, task.cancelling())
        assert ["completed"] == [r["status"] for r in store.missions("s")]
        events = [e["event"] for e in logs]
        assert "mission.completed" in events and "mission.cancelled" not in events


@pytest.mark.parametrize("agent_type", ["lean", "legacy"])
async def test_both_flows_append(agent_type: AgentType) -> None:
    """Both flows leave exactly one record per mission."""
    store = MemoryStateStore()
    await _executor(store).execute_mission("m", agent_type=agent_type, session_id="s")
    assert [agent_type] == [r["agent_type"] for r in store.missions("s")]
