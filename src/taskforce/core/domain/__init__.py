"""The agent flows: the legacy plan-and-execute ``Agent`` and the tool-calling ``LeanAgent``."""

from __future__ import annotations

from taskforce.core.domain._events import EventCallback
from taskforce.core.domain._mission_run import (
    MISSION_RUNS,
    MissionRun,
    crash_error,
    deadline_outcome,
)
from taskforce.core.domain._outcome import AgentOutcome, AgentStatus
from taskforce.core.domain._tool_runner import run_tool_call
from taskforce.core.domain.agent import Agent
from taskforce.core.domain.lean_agent import LeanAgent

__all__ = [
    "MISSION_RUNS",
    "Agent",
    "AgentOutcome",
    "AgentStatus",
    "EventCallback",
    "LeanAgent",
    "MissionRun",
    "crash_error",
    "deadline_outcome",
    "run_tool_call",
]
