"""``agent.mission_timeout_seconds``: the executor stops a mission's agent run at its deadline.

The mission fails as ``mission_timeout`` (never ``cancelled``), its record is saved, its
session is free for the next mission at once; a caller that cancels is still cancelled.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from taskforce.application.executor import AgentExecutor
from taskforce.config import AgentSettings
from taskforce.core.interfaces.executor import AgentType, ProgressEvent
from taskforce.core.interfaces.tools import ToolResult
from taskforce.infrastructure.llm import ScriptedLLMProvider
from taskforce.infrastructure.state import FileStateStore
from taskforce.infrastructure.tools import build_default_registry
from tests.core.domain.fakes import FakeRegistry, FakeTool

_FLOWS: tuple[AgentType, ...] = ("lean", "legacy")
_DEADLINE = 0.2
_ERROR = "mission timed out after 0.2 s (agent.mission_timeout_seconds)"
#: A first call that finishes, then a tool call far past the deadline.
_SLOW_TOOL = 'tool:calculator {"expression": "1 + 1"}\ntool:sleep {"seconds": 60}\nDone.'


def _executor(tmp_path: Path, llm: Any = None, tools: Any = None, **settings: Any) -> AgentExecutor:
    return AgentExecutor(
        llm or ScriptedLLMProvider(),
        tools or build_default_registry(tmp_path / "workspace"),
        FileStateStore(tmp_path / "state"),
        agent_settings=AgentSettings(**settings),
    )


def _records(tmp_path: Path, session_id: str) -> list[dict[str, Any]]:
    state = json.loads((tmp_path / "state" / f"{session_id}.json").read_text())
    return list(state["missions"])


def _lines(logs: Sequence[Mapping[str, Any]], event: str) -> list[Mapping[str, Any]]:
    return [line for line in logs if line["event"] == event]


@pytest.mark.parametrize("agent_type", _FLOWS)
async def test_a_slow_tool_call_ends_the_mission_at_its_deadline(
    tmp_path: Path, agent_type: AgentType
) -> None:
    """A tool call past the deadline is cut: the mission fails as mission_timeout in its
    result, record and log lines, keeps the step it finished, and the next mission on its
    session runs at once."""
    executor = _executor(tmp_path, mission_timeout_seconds=_DEADLINE)
    with capture_logs() as logs:
        result = await executor.execute_mission(_SLOW_TOOL, agent_type, session_id="s")
        after = await executor.execute_mission("done", agent_type, session_id="s")

    assert ("failed", "mission_timeout", _ERROR) == (
        result.status,
        result.error_type,
        result.error,
    )
    assert 2 == result.tool_calls
    assert ["calculator"] == [name for step in result.steps for name in step.tool_calls]
    first, second = _records(tmp_path, "s")
    assert ("failed", "mission_timeout", _ERROR) == (
        first["status"],
        first["error_type"],
        first["error"],
    )
    assert [step.tool_calls for step in result.steps] == [
        tuple(step["tool_calls"]) for step in first["steps"]
    ]
    assert ("completed", "completed") == (after.status, second["status"])
    [reached] = _lines(logs, "agent.deadline.reached")
    assert ("warning", "agent", _DEADLINE) == (
        reached["log_level"],
        reached["category"],
        reached["mission_timeout_seconds"],
    )
    [failed] = _lines(logs, "mission.failed")
    assert ("mission_timeout", 2) == (failed["error_type"], failed["tool_calls"])
    finished = _lines(logs, "agent.finished")
    assert [("failed", "mission_timeout"), ("completed", None)] == [
        (line["status"], line.get("error_type")) for line in finished
    ]
    assert [] == _lines(logs, "mission.cancelled")


@pytest.mark.parametrize("agent_type", _FLOWS)
async def test_a_slow_llm_call_ends_the_streamed_mission_at_its_deadline(
    tmp_path: Path, agent_type: AgentType
) -> None:
    """An LLM call past the deadline is cut: the stream's last error event and its result
    say mission_timeout, as the record does."""
    llm = ScriptedLLMProvider(latency_ms=60_000)
    executor = _executor(tmp_path, llm, mission_timeout_seconds=_DEADLINE)

    events: list[ProgressEvent] = [
        event
        async for event in executor.execute_mission_streaming("done", agent_type, session_id="s")
    ]

    kinds = [event.kind for event in events]
    assert ("mission_started", "error", "result") == (kinds[0], *kinds[-2:])
    assert 1 == kinds.count("error") and "token" not in kinds
    assert {"error": _ERROR, "error_type": "mission_timeout"} == events[-2].data
    result = events[-1].result
    assert result is not None
    assert ("failed", "mission_timeout", 0) == (result.status, result.error_type, len(result.steps))
    [record] = _records(tmp_path, "s")
    assert ("failed", "mission_timeout") == (record["status"], record["error_type"])


@pytest.mark.parametrize("agent_type", _FLOWS)
async def test_a_caller_that_cancels_before_the_deadline_cancels(
    tmp_path: Path, agent_type: AgentType
) -> None:
    """A client that leaves a mission armed with a deadline cancels it, as without one."""
    started = asyncio.Event()

    async def stall(**_: Any) -> ToolResult:
        started.set()
        await asyncio.sleep(3600)
        return {"success": True, "output": None}

    tools = FakeRegistry(FakeTool("stall", stall))
    executor = _executor(tmp_path, tools=tools, mission_timeout_seconds=600)
    task = asyncio.create_task(
        executor.execute_mission("tool:stall {}", agent_type, session_id="s")
    )
    await started.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert [("cancelled", "cancelled")] == [
        (r["status"], r["error_type"]) for r in _records(tmp_path, "s")
    ]


@pytest.mark.parametrize("agent_type", _FLOWS)
async def test_a_caller_that_cancels_as_the_deadline_comes_cancels(
    tmp_path: Path, agent_type: AgentType
) -> None:
    """The deadline's cancellation and the caller's at once: the caller's wins, so the
    mission is cancelled, not timed out, and the caller's task sees its cancellation."""
    mission: list[asyncio.Task[Any]] = []

    async def stall(**_: Any) -> ToolResult:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:  # the deadline's: the client leaves on its heels
            mission[0].cancel()
            raise
        return {"success": True, "output": None}

    tools = FakeRegistry(FakeTool("stall", stall))
    executor = _executor(tmp_path, tools=tools, mission_timeout_seconds=_DEADLINE)
    task = asyncio.create_task(
        executor.execute_mission("tool:stall {}", agent_type, session_id="s")
    )
    mission.append(task)

    with capture_logs() as logs, pytest.raises(asyncio.CancelledError):
        await task
    assert [("cancelled", "cancelled")] == [
        (r["status"], r["error_type"]) for r in _records(tmp_path, "s")
    ]
    assert [] == _lines(logs, "agent.deadline.reached") + _lines(logs, "mission.failed")
    assert 1 == len(_lines(logs, "mission.cancelled"))


async def test_no_deadline_arms_no_timer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With agent.mission_timeout_seconds 0, the default, a mission of either flow arms no
    deadline: its agent run is awaited as it is."""

    def refused(*_: Any) -> Any:
        raise AssertionError("a deadline was armed")

    monkeypatch.setattr("taskforce.application.executor._within_deadline", refused)
    assert 0 == AgentSettings().mission_timeout_seconds
    executor = _executor(tmp_path)

    for agent_type in _FLOWS:
        result = await executor.execute_mission('tool:sleep {"seconds": 0.01}\ndone', agent_type)
        assert "completed" == result.status
