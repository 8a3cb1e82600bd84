"""Tests of AgentExecutor with fakes: validation, ids, state records, concurrency, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from taskforce.application.executor import AgentExecutor
from taskforce.config import AgentSettings
from taskforce.core.interfaces.executor import (
    AgentType,
    ExecutionResult,
    ExecutorProtocol,
    ProgressEvent,
)
from taskforce.core.interfaces.log import text_fields
from taskforce.errors import MissionError
from taskforce.infrastructure.llm import ScriptedLLMProvider
from taskforce.infrastructure.state import FileStateStore
from taskforce.infrastructure.tools import build_default_registry
from tests.core.domain.fakes import (
    EchoLLM,
    FakeRegistry,
    FakeTool,
    MemoryStateStore,
    QueueLLM,
    finish_action,
    ok_handler,
    plan,
    step_limit_line,
    step_limit_lines,
    tool_action,
)
from tests.support.odd_values import Unequal, UnequalArgument, Unprintable

_HEX32 = re.compile(r"[0-9a-f]{32}")
_RECORD_KEYS = {
    "mission_id",
    "agent_type",
    "status",
    "final_message",
    "error",
    "error_type",
    "steps",
    "started_at",
    "finished_at",
}


def _executor(
    store: MemoryStateStore | None = None,
    llm: EchoLLM | None = None,
    *tools: FakeTool,
    settings: AgentSettings | None = None,
) -> AgentExecutor:
    registry = FakeRegistry(*(tools or (FakeTool("echo", ok_handler),)))
    return AgentExecutor(
        llm or EchoLLM(), registry, store or MemoryStateStore(), agent_settings=settings
    )


def _mission_tasks(mission_id: str) -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == f"taskforce-mission-{mission_id}"]


class TestValidation:
    def test_is_an_executor(self) -> None:
        """AgentExecutor satisfies ExecutorProtocol."""
        assert isinstance(_executor(), ExecutorProtocol)

    @pytest.mark.parametrize("agent_type", ["heavy", "", None, "LEAN"])
    async def test_unknown_agent_type(self, agent_type: Any) -> None:
        """An unknown agent_type raises MissionError naming the value, before anything runs."""
        store = MemoryStateStore()

        with pytest.raises(MissionError, match=re.escape(repr(agent_type))):
            await _executor(store).execute_mission("m", agent_type=agent_type, session_id="s")

        assert {} == store.data

    @pytest.mark.parametrize("agent_type", [UnequalArgument(), Unequal("lean")])
    async def test_an_agent_type_that_cannot_be_compared(self, agent_type: Any) -> None:
        """An agent_type whose == raises is refused with MissionError, as an unknown one is,
        by both forms, before anything runs; its own exception does not get out."""
        store = MemoryStateStore()
        executor = _executor(store)
        with pytest.raises(MissionError, match="unknown agent_type"):
            await executor.execute_mission("m", agent_type=agent_type, session_id="s")
        with pytest.raises(MissionError, match="unknown agent_type"):
            await anext(executor.execute_mission_streaming("m", agent_type=agent_type))
        assert {} == store.data

    @pytest.mark.parametrize("mission", ["", "   ", None, 42, "\u200b", " \ufeff\x00\t"])
    async def test_bad_mission(self, mission: Any) -> None:
        """A mission that is not a string with a visible character raises MissionError."""
        store = MemoryStateStore()
        with pytest.raises(MissionError, match="mission must be"):
            await _executor(store).execute_mission(mission)
        with pytest.raises(MissionError, match="mission must be"):
            await anext(_executor(store).execute_mission_streaming(mission))
        assert {} == store.data

    async def test_invisible_characters_of_a_visible_mission_are_kept(self) -> None:
        """A mission with visible text runs as sent: its invisible characters are not stripped."""
        mission = "\ufeff\u200bhi\x00 "
        result = await _executor().execute_mission(mission, agent_type="lean")
        assert ("completed", f"done: {mission}") == (result.status, result.final_message)

    async def test_mission_length_is_agent_max_mission_chars(self) -> None:
        """A mission longer than agent.max_mission_chars is refused, by both forms; at it, runs."""
        store = MemoryStateStore()
        executor = _executor(store, settings=AgentSettings(max_mission_chars=10))
        with pytest.raises(MissionError, match=r"at most 10 characters .* got 11"):
            await executor.execute_mission("x" * 11, session_id="s")
        with pytest.raises(MissionError, match=r"agent\.max_mission_chars"):
            await anext(executor.execute_mission_streaming("x" * 11, session_id="s"))
        assert {} == store.data
        assert "completed" == (await executor.execute_mission("x" * 10)).status

    async def test_streaming_validates_too(self) -> None:
        """The streaming form raises MissionError for an unknown agent_type on first iteration."""
        stream = _executor().execute_mission_streaming("m", agent_type="nope")  # type: ignore[arg-type]

        with pytest.raises(MissionError, match="'nope'"):
            await anext(stream)

    async def test_unsafe_session_id(self) -> None:
        """A session id the store refuses raises MissionError naming it."""
        with pytest.raises(MissionError, match="a/b"):
            await _executor().execute_mission("m", session_id="a/b")


class TestExecuteMission:
    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_result_and_generated_ids(self, agent_type: Any) -> None:
        """Both flows return a completed result; missing ids are uuid4 hex strings."""
        result = await _executor().execute_mission("hello", agent_type=agent_type)

        assert ("completed", "done: hello", agent_type) == (
            result.status,
            result.final_message,
            result.agent_type,
        )
        assert _HEX32.fullmatch(result.session_id) and _HEX32.fullmatch(result.mission_id)
        assert result.session_id != result.mission_id

    async def test_given_ids_are_kept(self) -> None:
        """Given session and mission ids are used as they are."""
        result = await _executor().execute_mission("m", session_id="s1", mission_id="m1")

        assert ("s1", "m1") == (result.session_id, result.mission_id)

    async def test_state_record(self) -> None:
        """Each mission appends a full record to its session's state['missions']."""
        store = MemoryStateStore()
        executor = _executor(store)

        first = await executor.execute_mission("one", session_id="s", mission_id="m1")
        await executor.execute_mission("two", agent_type="legacy", session_id="s", mission_id="m2")

        records = store.missions("s")
        assert [("m1", "lean", "completed"), ("m2", "legacy", "completed")] == [
            (r["mission_id"], r["agent_type"], r["status"]) for r in records
        ]
        assert _RECORD_KEYS == set(records[0])
        assert [
            {
                "index": s.index,
                "description": s.description,
                "status": s.status,
                "tool_calls": list(s.tool_calls),
                "outcome": s.outcome,
            }
            for s in first.steps
        ] == records[0]["steps"]
        assert records[0]["started_at"] <= records[0]["finished_at"]

    async def test_failed_mission_is_recorded(self) -> None:
        """A mission failing on the step limit is returned failed and recorded failed."""
        store = MemoryStateStore()
        executor = _executor(store, settings=AgentSettings(max_steps=1))

        result = await executor.execute_mission("m", session_id="s")

        assert ("failed", "step limit reached", "step_limit") == (
            result.status,
            result.error,
            result.error_type,  # no call failed: the limit ended it
        )
        assert [("failed", "step limit reached", "step_limit")] == [
            (r["status"], r["error"], r["error_type"]) for r in store.missions("s")
        ]

    @pytest.mark.parametrize(
        ("turns", "expected"),
        [(10, ("completed", None, 9)), (2, ("failed", "step_turn_limit", 2))],
    )
    async def test_max_turns_per_step_bounds_a_legacy_step(
        self, turns: int, expected: tuple[str, str | None, int]
    ) -> None:
        """agent.max_turns_per_step is the legacy step's turn limit, 8 no longer fixed."""
        llm = QueueLLM(
            complete=[tool_action("echo", {"n": n}) for n in range(9)] + [finish_action("a")] * 2,
            generate=[plan("echo nine times")],
        )
        settings = AgentSettings(max_turns_per_step=turns)
        executor = AgentExecutor(
            llm,
            FakeRegistry(FakeTool("echo", ok_handler)),
            MemoryStateStore(),
            agent_settings=settings,
        )

        result = await executor.execute_mission("m", agent_type="legacy")

        assert expected == (result.status, result.error_type, result.tool_calls)

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_an_agent_that_raises_fails_the_mission(self, agent_type: AgentType) -> None:
        """A bug below the agent (a registry that raises) fails the mission with a result
        and a record, not an exception; its message and traceback are logged at debug only."""

        class BrokenRegistry(FakeRegistry):
            def get(self, name: str) -> Any:
                raise RuntimeError("secret mission detail")

        store = MemoryStateStore()
        registry = BrokenRegistry(FakeTool("x", ok_handler))
        executor = AgentExecutor(ScriptedLLMProvider(), registry, store)
        with capture_logs() as logs:
            result = await executor.execute_mission("tool:x {}", agent_type, "s")
        assert ("failed", "RuntimeError", "the mission stopped unexpectedly (RuntimeError)") == (
            result.status,
            result.error_type,
            result.error,
        )
        assert [("failed", "RuntimeError")] == [
            (r["status"], r["error_type"]) for r in store.missions("s")
        ]
        (crashed,) = [e for e in logs if e["event"] == "agent.crashed"]
        assert ("error", "agent", "RuntimeError") == (
            crashed["log_level"],
            crashed["category"],
            crashed["error_type"],
        )
        (traceback,) = [e for e in logs if e["event"] == "agent.crashed.traceback"]
        assert ("debug", RuntimeError) == (traceback["log_level"], type(traceback["exc_info"]))
        assert "secret" not in repr([e for e in logs if e["log_level"] != "debug"])

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_a_crash_that_cannot_print_fails_under_its_own_class(
        self, agent_type: AgentType
    ) -> None:
        """A registry that raises an exception whose message cannot be read fails the
        mission under that exception's class, its steps kept, as any other crash below the
        agent: describing the message for the log line must not raise in its place."""

        class BrokenRegistry(FakeRegistry):
            def get(self, name: str) -> Any:
                raise Unprintable()

        store = MemoryStateStore()
        registry = BrokenRegistry(FakeTool("x", ok_handler))
        executor = AgentExecutor(ScriptedLLMProvider(), registry, store)
        with capture_logs() as logs:
            result = await executor.execute_mission("tool:x {}", agent_type, "s")
        crashed = "the mission stopped unexpectedly (Unprintable)"
        assert ("failed", "Unprintable", crashed) == (
            result.status,
            result.error_type,
            result.error,
        )
        assert [(1, "failed", ("x",))] == [
            (step.index, step.status, step.tool_calls) for step in result.steps
        ]
        assert ["Unprintable"] == [e["error_type"] for e in logs if e["event"] == "agent.crashed"]
        assert ["Unprintable"] == [r["error_type"] for r in store.missions("s")]

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    @pytest.mark.parametrize("is_streamed", [False, True])
    @pytest.mark.parametrize(
        "raised",
        # a registry's own BaseException too: SystemExit out of the mission's task would
        # stop the event loop, and none of these passes an ``except Exception``
        [RuntimeError, SystemExit, GeneratorExit, type("Halt", (BaseException,), {})],
    )
    async def test_an_agent_that_raises_keeps_its_steps(
        self, agent_type: AgentType, is_streamed: bool, raised: type[BaseException]
    ) -> None:
        """A crash in the second step keeps the first step, and records the second as failed,
        in the result, the stream's result and the session record."""

        class BrokenRegistry(FakeRegistry):
            def get(self, name: str) -> Any:
                if name == "boom":
                    raise raised("secret mission detail")
                return super().get(name)

        store = MemoryStateStore()
        registry = BrokenRegistry(FakeTool("x", ok_handler))
        executor = AgentExecutor(ScriptedLLMProvider(), registry, store)
        mission = "tool:x {}\ntool:boom {}"
        if is_streamed:
            events = [e async for e in executor.execute_mission_streaming(mission, agent_type, "s")]
            result = events[-1].result
            assert result is not None
        else:
            result = await executor.execute_mission(mission, agent_type, "s")
        crashed = f"the mission stopped unexpectedly ({raised.__name__})"
        assert ("failed", raised.__name__, 2) == (
            result.status,
            result.error_type,
            result.tool_calls,
        )
        steps = [(step.index, step.status, step.tool_calls) for step in result.steps]
        assert [(1, "completed", ("x",)), (2, "failed", ("boom",))] == steps
        assert crashed == result.steps[-1].outcome
        (record,) = store.missions("s")
        assert [(1, "completed"), (2, "failed")] == [
            (step["index"], step["status"]) for step in record["steps"]
        ]

    @pytest.mark.parametrize("is_streamed", [False, True])
    async def test_an_agent_whose_run_raises_still_fails_only_its_mission(
        self, monkeypatch: pytest.MonkeyPatch, is_streamed: bool
    ) -> None:
        """The executor's last resort: an agent that raises itself (not below its run) still
        gives a failed result, error event and record, logged as agent.crashed."""

        class RaisingAgent:
            async def run(self, mission: str, *, on_event: Any = None) -> Any:
                raise RuntimeError("secret mission detail")

        store = MemoryStateStore()
        executor = AgentExecutor(EchoLLM(), FakeRegistry(), store)
        monkeypatch.setattr(executor, "_agent", lambda *_, **__: RaisingAgent())
        crashed = "the mission stopped unexpectedly (RuntimeError)"
        with capture_logs() as logs:
            if is_streamed:
                events = [e async for e in executor.execute_mission_streaming("m", "lean", "s")]
                assert [crashed] == [e.data["error"] for e in events if e.kind == "error"]
                result = events[-1].result
                assert result is not None
            else:
                result = await executor.execute_mission("m", "lean", "s")
        assert ("failed", "RuntimeError", crashed) == (
            result.status,
            result.error_type,
            result.error,
        )
        assert ["RuntimeError"] == [r["error_type"] for r in store.missions("s")]
        assert ["RuntimeError"] == [e["error_type"] for e in logs if e["event"] == "agent.crashed"]

    async def test_corrupt_state_fails_and_is_kept(self) -> None:
        """A corrupt session state fails the mission with that error and is never overwritten."""
        store = MemoryStateStore()
        store.corrupt("s")

        result = await _executor(store).execute_mission("m", session_id="s")

        assert "failed" == result.status
        assert result.error is not None and "corrupt" in result.error
        assert ("{not json", 0) == (store.data["s"], store.saves)

    async def test_contextvars_bound_during_the_mission(self) -> None:
        """session_id, mission_id and agent_type are in structlog's contextvars during a mission."""
        seen: list[dict[str, Any]] = []

        async def spy(**_: Any) -> Any:
            seen.append(structlog.contextvars.get_contextvars())
            return {"success": True, "output": None}

        executor = _executor(None, None, FakeTool("echo", spy))
        await executor.execute_mission("m", session_id="s", mission_id="m1")

        assert [{"session_id": "s", "mission_id": "m1", "agent_type": "lean"}] == seen
        assert {} == structlog.contextvars.get_contextvars()

    async def test_outer_log_context_restored_however_the_mission_ends(self) -> None:
        """Keys a caller bound before the mission get their values back, after a failure too."""
        outer = structlog.contextvars.bind_contextvars(session_id="outer", request_id="r-1")
        try:
            await _executor().execute_mission("m", session_id="s", mission_id="m1")
            after_success = structlog.contextvars.get_contextvars()
            with pytest.raises(MissionError, match="session_id must be"):
                await _executor().execute_mission("m", session_id="../escape")
            after_failure = structlog.contextvars.get_contextvars()
        finally:
            structlog.contextvars.reset_contextvars(**outer)

        assert {"session_id": "outer", "request_id": "r-1"} == after_success
        assert {"session_id": "outer", "request_id": "r-1"} == after_failure

    async def test_mission_logs(self) -> None:
        """mission.started and mission.completed are logged in category mission, without text."""
        with capture_logs() as logs:
            await _executor().execute_mission("SECRET-TEXT", session_id="s")

        mission_events = [(e["event"], e["category"]) for e in logs if e["category"] == "mission"]
        assert [("mission.started", "mission"), ("mission.completed", "mission")] == mission_events
        assert "SECRET-TEXT" not in repr(logs)
        completed = next(e for e in logs if e["event"] == "mission.completed")
        assert not {"error_chars", "error_sha256"} & set(completed)  # no error, no null fields
        measured = [e for e in logs if e["event"] == "mission.duration.measured"]
        assert [("performance", "completed", 2, 1)] == [
            (e["category"], e["status"], e["steps"], e["tool_calls"]) for e in measured
        ]

    async def test_failed_mission_logs(self) -> None:
        """A failed mission logs mission.failed at error with its error's length and digest."""
        with capture_logs() as logs:
            await _executor(settings=AgentSettings(max_steps=1)).execute_mission("m")

        failed = [e for e in logs if e["event"] == "mission.failed"]
        assert [("error", text_fields("error", "step limit reached"))] == [
            (e["log_level"], {k: e[k] for k in ("error_chars", "error_sha256")}) for e in failed
        ]
        assert "error" not in failed[0]


class TestConcurrency:
    async def test_fifty_sessions_concurrently(self) -> None:
        """50 concurrent missions on 50 sessions each leave exactly their own record."""
        store = MemoryStateStore(delay=0.001)
        executor = _executor(store, EchoLLM(delay=0.001))

        results = await asyncio.gather(
            *(
                executor.execute_mission(
                    f"mission {i}", agent_type=("lean", "legacy")[i % 2], session_id=f"s{i}"
                )
                for i in range(50)
            )
        )

        assert [f"done: mission {i}" for i in range(50)] == [r.final_message for r in results]
        for i, result in enumerate(results):
            assert [result.mission_id] == [r["mission_id"] for r in store.missions(f"s{i}")]

    async def test_one_session_records_every_mission(self) -> None:
        """Concurrent missions of one session are serialised: no record is lost."""
        store = MemoryStateStore(delay=0.001)
        executor = _executor(store, EchoLLM(delay=0.001))

        results = await asyncio.gather(
            *(executor.execute_mission(f"m{i}", session_id="shared") for i in range(20))
        )

        assert sorted(r.mission_id for r in results) == sorted(
            r["mission_id"] for r in store.missions("shared")
        )
        assert 20 == len(store.missions("shared"))

    async def test_sessions_do_not_wait_for_each_other(self) -> None:
        """A mission blocked in one session does not hold up a mission of another session."""
        gate = asyncio.Event()
        slow_llm = EchoLLM(gate=gate)
        blocked = asyncio.create_task(
            _executor(llm=slow_llm).execute_mission("slow", session_id="a")
        )
        await slow_llm.entered.wait()

        result = await asyncio.wait_for(_executor().execute_mission("fast", session_id="b"), 5)

        assert "completed" == result.status
        assert not blocked.done()
        gate.set()
        await blocked


class TestCancellation:
    async def test_cancelled_mission_is_recorded_and_reraised(self) -> None:
        """Cancelling a running mission re-raises CancelledError and records it as cancelled."""
        store = MemoryStateStore()
        started = asyncio.Event()

        async def hang(**_: Any) -> Any:
            started.set()
            await asyncio.sleep(3600)

        executor = _executor(store, None, FakeTool("echo", hang))
        task = asyncio.create_task(executor.execute_mission("m", session_id="s", mission_id="m1"))
        await started.wait()

        with capture_logs() as logs:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        assert [("m1", "cancelled")] == [
            (r["mission_id"], r["status"]) for r in store.missions("s")
        ]
        assert [("mission.cancelled", "mission"), ("mission.duration.measured", "performance")] == [
            (e["event"], e["category"]) for e in logs if e["event"].startswith("mission.")
        ]

    async def test_cancelled_while_waiting_for_the_session(self) -> None:
        """A mission cancelled while queued behind another of its session is recorded too."""
        store = MemoryStateStore()
        gate = asyncio.Event()
        llm = EchoLLM(gate=gate)
        executor = _executor(store, llm)
        first = asyncio.create_task(executor.execute_mission("a", session_id="s", mission_id="m1"))
        await llm.entered.wait()  # the first mission holds the session's lock
        queued = asyncio.create_task(executor.execute_mission("b", session_id="s", mission_id="m2"))
        for _ in range(5):
            await asyncio.sleep(0)

        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        gate.set()
        await first
        for _ in range(10):  # the record of the queued mission is written once the lock frees
            await asyncio.sleep(0)

        assert [("m1", "completed"), ("m2", "cancelled")] == [
            (r["mission_id"], r["status"]) for r in store.missions("s")
        ]


class TestStreaming:
    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_events_first_to_last(self, agent_type: Any) -> None:
        """The stream starts with mission_started and ends with the result."""
        executor = _executor()

        events = [
            e
            async for e in executor.execute_mission_streaming(
                "hi", agent_type=agent_type, session_id="s", mission_id="m1"
            )
        ]

        assert "mission_started" == events[0].kind
        assert {"session_id": "s", "mission_id": "m1", "agent_type": agent_type} == events[0].data
        assert "result" == events[-1].kind
        result = events[-1].result
        assert isinstance(result, ExecutionResult)
        assert ("completed", "done: hi") == (result.status, result.final_message)
        assert "final_answer" == events[-2].kind

    async def test_mission_error_reaches_the_consumer(self) -> None:
        """An exception that ends the mission task is raised to the stream's consumer."""
        stream = _executor().execute_mission_streaming("m", session_id="a/b")

        with pytest.raises(MissionError, match="a/b"):
            async for _ in stream:
                pass

    async def test_early_close_cancels_the_mission(self) -> None:
        """Stopping early under aclosing cancels the mission task, awaits it and records it."""
        store = MemoryStateStore()
        cancelled = asyncio.Event()

        async def hang(**_: Any) -> Any:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        executor = _executor(store, None, FakeTool("echo", hang))
        seen: list[ProgressEvent] = []
        async with contextlib.aclosing(
            executor.execute_mission_streaming("m", session_id="s", mission_id="m1")
        ) as stream:
            async for event in stream:
                seen.append(event)
                if event.kind == "tool_call":
                    tasks = _mission_tasks("m1")
                    break

        assert ["mission_started", "step_started", "tool_call"] == [e.kind for e in seen]
        assert 1 == len(tasks) and tasks[0].done() and tasks[0].cancelled()
        assert cancelled.is_set()
        assert [("m1", "cancelled")] == [
            (r["mission_id"], r["status"]) for r in store.missions("s")
        ]

    async def test_cancelled_consumer_cancels_the_mission(self) -> None:
        """Cancelling the task consuming the stream cancels the mission task too."""
        store = MemoryStateStore()
        llm = EchoLLM(gate=asyncio.Event())
        executor = _executor(store, llm)

        async def consume() -> None:
            async with contextlib.aclosing(
                executor.execute_mission_streaming("m", session_id="s", mission_id="m1")
            ) as stream:
                async for _ in stream:
                    pass

        consumer = asyncio.create_task(consume())
        await llm.entered.wait()
        tasks = _mission_tasks("m1")

        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer

        assert 1 == len(tasks) and tasks[0].cancelled()
        assert ["cancelled"] == [r["status"] for r in store.missions("s")]


_MISSION = (
    'tool:calculator {"expression": "6*7"}\n'
    'tool:file_write {"path": "out.txt", "content": "42"}\n'
    "Report what you did."
)


@pytest.fixture(name="real_executor")
def fixture_real_executor(tmp_path: Path) -> Callable[..., AgentExecutor]:
    """Builds executors on the scripted provider, the built-in tools and the file store."""

    def build(**settings: Any) -> AgentExecutor:
        return AgentExecutor(
            ScriptedLLMProvider(),
            build_default_registry(tmp_path / "workspace"),
            FileStateStore(tmp_path / "state"),
            agent_settings=AgentSettings(**settings),
        )

    return build


def _stored_missions(tmp_path: Path, session_id: str) -> list[dict[str, Any]]:
    state = json.loads((tmp_path / "state" / f"{session_id}.json").read_text())
    return list(state["missions"])


class TestWithRealAdapters:
    async def test_both_flows_same_shape(
        self, real_executor: Callable[..., AgentExecutor], tmp_path: Path
    ) -> None:
        """Lean and legacy run the same mission to the same answer, events and result shape.

        Only the lean flow streams its LLM turns, so only it adds ``token`` events.
        """
        executor = real_executor()
        runs: dict[str, list[ProgressEvent]] = {}
        agent_types: tuple[AgentType, ...] = ("lean", "legacy")
        for agent_type in agent_types:
            runs[agent_type] = [
                e
                async for e in executor.execute_mission_streaming(
                    _MISSION, agent_type=agent_type, session_id="s"
                )
            ]

        lean, legacy = runs["lean"][-1].result, runs["legacy"][-1].result
        assert lean is not None and legacy is not None
        lean_kinds = [e.kind for e in runs["lean"] if e.kind != "token"]
        assert lean_kinds == [e.kind for e in runs["legacy"]]
        assert "token" not in [e.kind for e in runs["legacy"]]
        tokens = "".join(e.data["content"] for e in runs["lean"] if e.kind == "token")
        assert lean.final_message == tokens
        assert ("completed", "completed") == (lean.status, legacy.status)
        assert lean.final_message == legacy.final_message
        assert (2, 2) == (lean.tool_calls, legacy.tool_calls)
        assert set(lean.to_dict()) == set(legacy.to_dict())
        assert [("calculator",), ("file_write",), ()] == [s.tool_calls for s in legacy.steps]
        assert [("calculator",), ("file_write",), ()] == [s.tool_calls for s in lean.steps]
        results = [e.data for e in runs["lean"] if e.kind == "tool_result"]
        assert 42 == results[0]["output"]
        assert "42" == (tmp_path / "workspace" / "s" / "out.txt").read_text()
        assert [("lean", "completed"), ("legacy", "completed")] == [
            (r["agent_type"], r["status"]) for r in _stored_missions(tmp_path, "s")
        ]

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_a_file_of_code_is_written_in_both_flows(
        self, real_executor: Callable[..., AgentExecutor], tmp_path: Path, agent_type: AgentType
    ) -> None:
        """Code with more braces than MAX_JSON_DEPTH, in a directive's argument, is written:
        the legacy plan and action hold it in strings, which nest nothing."""
        code = "int main() {\n" * 120
        mission = "tool:file_write " + json.dumps({"path": "main.c", "content": code})

        result = await real_executor().execute_mission(mission, agent_type, session_id="s")

        assert ("completed", 1) == (result.status, result.tool_calls)
        assert code == (tmp_path / "workspace" / "s" / "main.c").read_text()

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_step_limit_is_logged_once(
        self, real_executor: Callable[..., AgentExecutor], agent_type: Any
    ) -> None:
        """Three tool directives and two turns: both flows fail and log the limit once."""
        mission = "\n".join(f'tool:calculator {{"expression": "{n}+1"}}' for n in range(3))

        with capture_logs() as logs:
            result = await real_executor(max_steps=2).execute_mission(
                mission, agent_type=agent_type
            )

        assert ("failed", "step limit reached") == (result.status, result.error)
        assert [step_limit_line(2)] == [
            {key: line[key] for key in step_limit_line(2)} for line in step_limit_lines(logs)
        ]

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_llm_error(
        self, real_executor: Callable[..., AgentExecutor], agent_type: Any
    ) -> None:
        """An llm:error directive fails the mission with the provider's error."""
        result = await real_executor().execute_mission(
            'tool:calculator {"expression": "1+1"}\nllm:error', agent_type=agent_type
        )

        assert ("failed", 1) == (result.status, result.tool_calls)
        assert result.error is not None and "llm:error" in result.error

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_failing_tool(
        self, real_executor: Callable[..., AgentExecutor], agent_type: Any
    ) -> None:
        """A failing tool fails the mission; without fail_on_tool_error the mission goes on."""
        mission = 'tool:calculator {"expression": "1/0"}\ntool:calculator {"expression": "2+2"}'

        strict = await real_executor().execute_mission(mission, agent_type=agent_type)
        lenient = await real_executor(fail_on_tool_error=False).execute_mission(
            mission, agent_type=agent_type
        )

        assert ("failed", 1) == (strict.status, strict.tool_calls)
        assert strict.error is not None and strict.error.startswith("tool 'calculator' failed:")
        assert ("completed", 2) == (lenient.status, lenient.tool_calls)
        assert lenient.final_message.endswith("4")

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_tool_timeout(
        self, real_executor: Callable[..., AgentExecutor], agent_type: Any
    ) -> None:
        """A tool past its time limit gives a timeout result; the mission fails on it."""
        executor = real_executor(tool_timeout_seconds=0.05)
        events = [
            e
            async for e in executor.execute_mission_streaming(
                'tool:sleep {"seconds": 30}', agent_type=agent_type
            )
        ]

        results = [e.data for e in events if e.kind == "tool_result"]
        assert [("timeout", False)] == [(r["error_type"], r["success"]) for r in results]
        final = events[-1].result
        assert final is not None and "failed" == final.status
        assert final.error is not None and "timed out" in final.error

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_outer_cancellation_during_a_tool(
        self, real_executor: Callable[..., AgentExecutor], tmp_path: Path, agent_type: Any
    ) -> None:
        """Cancelling a mission inside a tool call propagates and is recorded as cancelled."""
        executor = real_executor()
        task = asyncio.create_task(
            executor.execute_mission(
                'tool:sleep {"seconds": 30}', agent_type=agent_type, session_id="c"
            )
        )
        await asyncio.sleep(0.05)

        task.cancel()

        with pytest.raises(asyncio.CancelledError):
            await task
        assert ["cancelled"] == [r["status"] for r in _stored_missions(tmp_path, "c")]

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_a_cancelled_mission_keeps_the_steps_it_finished(
        self, real_executor: Callable[..., AgentExecutor], tmp_path: Path, agent_type: Any
    ) -> None:
        """Cancelled inside its second tool call, a mission's record keeps the first
        call's finished step, and its log lines count the steps and tool calls it made."""
        executor = real_executor()
        mission = 'tool:calculator {"expression": "1 + 1"}\ntool:sleep {"seconds": 30}\nDone.'
        with capture_logs() as logs:
            task = asyncio.create_task(
                executor.execute_mission(mission, agent_type=agent_type, session_id="k")
            )
            async with asyncio.timeout(10):  # the first call done, the second under way
                while True:
                    if ("tool.call.started", "sleep") in {
                        (e["event"], e.get("tool")) for e in logs
                    }:
                        break
                    await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        [record] = _stored_missions(tmp_path, "k")
        assert "cancelled" == record["status"]
        assert record["steps"], "the finished step was lost"
        assert ["calculator"] == record["steps"][0]["tool_calls"]
        assert "completed" == record["steps"][0]["status"]
        [measured] = [e for e in logs if e["event"] == "mission.duration.measured"]
        assert ("cancelled", len(record["steps"])) == (measured["status"], measured["steps"])
        assert measured["tool_calls"] >= 1

    async def test_fifty_concurrent_missions(
        self, real_executor: Callable[..., AgentExecutor], tmp_path: Path
    ) -> None:
        """50 concurrent missions, 40 on own sessions and 10 on one, are all recorded right."""
        executor = real_executor()

        def mission(i: int) -> str:
            return f'tool:calculator {{"expression": "{i}*2"}}\ndone'

        results = await asyncio.gather(
            *(
                executor.execute_mission(
                    mission(i),
                    agent_type=("lean", "legacy")[i % 2],
                    session_id=f"own{i}" if i < 40 else "shared",
                )
                for i in range(50)
            )
        )

        assert [f"Completed 1 tool call(s). Last result: {i * 2}" for i in range(50)] == [
            r.final_message for r in results
        ]
        for i in range(40):
            assert [results[i].mission_id] == [
                r["mission_id"] for r in _stored_missions(tmp_path, f"own{i}")
            ]
        assert sorted(r.mission_id for r in results[40:]) == sorted(
            r["mission_id"] for r in _stored_missions(tmp_path, "shared")
        )

    async def test_streaming_early_close(
        self, real_executor: Callable[..., AgentExecutor], tmp_path: Path
    ) -> None:
        """Closing the stream during a slow tool cancels the mission task and records it."""
        executor = real_executor()
        async with contextlib.aclosing(
            executor.execute_mission_streaming(
                'tool:sleep {"seconds": 30}', session_id="e", mission_id="m-early"
            )
        ) as stream:
            async for event in stream:
                if event.kind == "tool_call":
                    tasks = _mission_tasks("m-early")
                    break

        assert 1 == len(tasks) and tasks[0].done()
        assert [("m-early", "cancelled")] == [
            (r["mission_id"], r["status"]) for r in _stored_missions(tmp_path, "e")
        ]


class _CountingScripted(ScriptedLLMProvider):
    """The scripted provider, counting which entry point each LLM turn used."""

    def __init__(self) -> None:
        super().__init__()
        self.used: list[str] = []

    async def complete(self, *args: Any, **kwargs: Any) -> Any:
        self.used.append("complete")
        return await super().complete(*args, **kwargs)

    async def stream(self, *args: Any, **kwargs: Any) -> Any:
        self.used.append("stream")
        async for chunk in super().stream(*args, **kwargs):
            yield chunk


class TestWhichPathStreams:
    async def test_only_the_streaming_lean_path_streams(self, tmp_path: Path) -> None:
        """execute_mission calls complete; execute_mission_streaming streams lean turns."""
        llm = _CountingScripted()
        executor = AgentExecutor(
            llm, build_default_registry(tmp_path / "ws"), FileStateStore(tmp_path / "state")
        )
        mission = 'tool:calculator {"expression": "1+1"}\nanswer'

        await executor.execute_mission(mission, agent_type="lean")
        plain, llm.used = llm.used, []
        _ = [e async for e in executor.execute_mission_streaming(mission, agent_type="lean")]
        streamed, llm.used = llm.used, []
        _ = [e async for e in executor.execute_mission_streaming(mission, agent_type="legacy")]

        assert (["complete"] * 2, ["stream"] * 2) == (plain, streamed)
        assert {"complete"} == set(llm.used)

    async def test_failed_stream_fails_the_mission(self, tmp_path: Path) -> None:
        """A streamed turn whose attempts run out fails the mission with the provider's error."""
        executor = AgentExecutor(
            ScriptedLLMProvider(),
            build_default_registry(tmp_path / "ws"),
            FileStateStore(tmp_path / "state"),
        )

        with capture_logs() as logs:
            events = [e async for e in executor.execute_mission_streaming("llm:fail auth")]

        result = events[-1].result
        assert result is not None and "failed" == result.status
        assert ["auth"] == [e["error_type"] for e in logs if e["event"] == "llm.call.failed"]


class _ChunkCounting(ScriptedLLMProvider):
    """The scripted provider, counting the text chunks its streams handed out and its turns."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks = 0
        self.turns = 0
        self.streamed = asyncio.Event()  # set when a stream handed out its last chunk

    async def stream(self, *args: Any, **kwargs: Any) -> Any:
        self.turns += 1
        async for chunk in super().stream(*args, **kwargs):
            self.chunks += "content" in chunk
            yield chunk
        self.streamed.set()


#: A mission whose streamed answer is 202 tokens ("Scripted answer: " and 200 words).
_WORDY = " ".join(["word"] * 200)


def _chunk_counting_executor(tmp_path: Path, limit: int) -> tuple[AgentExecutor, _ChunkCounting]:
    llm = _ChunkCounting()
    executor = AgentExecutor(
        llm,
        build_default_registry(tmp_path / "ws"),
        MemoryStateStore(),
        agent_settings=AgentSettings(max_queued_events=limit),
    )
    return executor, llm


#: A mission of ten tool calls, one per turn: 3 events each (step_started, tool_call,
#: tool_result), then the answer's step.
_TEN_CALLS = "Add.\n" + "\n".join(f'tool:calculator {{"expression": "{i} + 1"}}' for i in range(10))


class TestBackpressure:
    """``agent.max_queued_events``: a stream's mission waits for a reader that lags."""

    async def test_a_mission_waits_for_its_reader_between_its_calls(self, tmp_path: Path) -> None:
        """While the consumer holds its first event, the mission makes no more turns than
        the events that fit allow; once read, every event arrives, in order."""
        executor, llm = _chunk_counting_executor(tmp_path, 4)
        async with contextlib.aclosing(
            executor.execute_mission_streaming(_TEN_CALLS, mission_id="held")
        ) as stream:
            first = await anext(stream)
            await asyncio.sleep(0.05)  # the whole mission, were nothing holding it back
            held = llm.turns
            (task,) = _mission_tasks("held")
            is_done = task.done()
            rest = [event async for event in stream]

        assert "mission_started" == first.kind
        # turn 1's three events and turn 2's step_started fill the 4 places
        assert (2, False) == (held, is_done)
        assert 10 == len([e for e in rest if e.kind == "tool_result"])
        result = rest[-1].result
        assert result is not None and "completed" == result.status
        assert 11 == llm.turns

    async def test_a_reader_that_lags_never_holds_back_an_answer(self, tmp_path: Path) -> None:
        """Text deltas come from inside an LLM call, whose deadline covers its stream: they
        never wait. Past the limit they join the newest queued ``token`` event, so the
        whole answer is read from the provider while its consumer reads nothing (the
        mission then waits to send ``final_answer``), and the consumer gets the same
        text, in order, in fewer events."""
        executor, llm = _chunk_counting_executor(tmp_path, 4)
        async with contextlib.aclosing(
            executor.execute_mission_streaming(_WORDY, mission_id="lagging")
        ) as stream:
            first = await anext(stream)
            async with asyncio.timeout(5):  # a guard: the answer streams at once
                await llm.streamed.wait()
            rest = [event async for event in stream]

        assert "mission_started" == first.kind
        assert 202 == llm.chunks
        tokens = [e.data["content"] for e in rest if e.kind == "token"]
        # step_started and 3 deltas took the 4 places; the other 199 joined the third
        assert 3 == len(tokens)
        assert [{"step": 1, "content": c} for c in tokens] == [
            e.data for e in rest if e.kind == "token"
        ]
        result = rest[-1].result
        assert result is not None and "completed" == result.status
        assert result.final_message == "".join(tokens)

    async def test_the_result_and_the_end_pass_a_full_backlog(self, tmp_path: Path) -> None:
        """A backlog full of the agent's events holds back neither the result nor the end:
        the mission ends, its record saved, before the consumer reads on."""
        events = [e async for e in _executor().execute_mission_streaming("hi")]
        agents = len(events) - 2  # all but mission_started and the result
        store = MemoryStateStore()
        executor = _executor(store, settings=AgentSettings(max_queued_events=agents))
        async with contextlib.aclosing(
            executor.execute_mission_streaming("hi", session_id="s", mission_id="full")
        ) as stream:
            await anext(stream)
            (task,) = _mission_tasks("full")
            async with asyncio.timeout(5):  # a guard: it ends at once
                result = await asyncio.shield(task)
            rest = [event async for event in stream]

        assert [e.kind for e in events[1:]] == [e.kind for e in rest]
        assert result == rest[-1].result and "completed" == result.status
        assert ["completed"] == [r["status"] for r in store.missions("s")]

    @pytest.mark.parametrize("stop", ["consumer leaves", "drain"])
    async def test_a_mission_held_back_is_cancelled_and_recorded(
        self, tmp_path: Path, stop: str
    ) -> None:
        """A mission waiting for room is cancelled like any other: by a consumer that
        leaves, or by ``drain`` at a shutdown; it is recorded and logged as such."""
        store = MemoryStateStore()
        executor = AgentExecutor(
            ScriptedLLMProvider(),
            build_default_registry(tmp_path / "ws"),
            store,
            agent_settings=AgentSettings(max_queued_events=2),
        )
        stream = executor.execute_mission_streaming(_TEN_CALLS, session_id="s", mission_id="held")
        await anext(stream)
        await asyncio.sleep(0.01)
        (task,) = _mission_tasks("held")
        assert not task.done()
        with capture_logs() as logs:
            if stop == "drain":
                await executor.drain()
            await stream.aclose()

        assert task.cancelled()
        records = store.missions("s")
        assert [("cancelled", "cancelled")] == [(r["status"], r["error_type"]) for r in records]
        assert ["mission.cancelled"] == [e["event"] for e in logs if "mission.c" in e["event"]]
