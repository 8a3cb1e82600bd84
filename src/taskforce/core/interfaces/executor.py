"""The executor port: where missions start and end, and the records a mission leaves."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "AGENT_TYPES",
    "MISSION_STATUSES",
    "AgentType",
    "ExecutionResult",
    "ExecutorProtocol",
    "MissionStatus",
    "ProgressEvent",
    "ProgressKind",
    "StepRecord",
]

AgentType = Literal["lean", "legacy"]
MissionStatus = Literal["completed", "failed", "cancelled"]
ProgressKind = Literal[
    "mission_started",
    "step_started",
    "tool_call",
    "tool_result",
    "final_answer",
    "error",
    "result",
]

AGENT_TYPES: tuple[AgentType, ...] = ("lean", "legacy")
MISSION_STATUSES: tuple[MissionStatus, ...] = ("completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step of a mission: a plan step (legacy) or one LLM turn (lean)."""

    index: int
    description: str
    status: Literal["completed", "failed"]
    tool_calls: tuple[str, ...] = ()
    outcome: str = ""


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """How a mission ended. Identical in shape for both agent flows."""

    session_id: str
    mission_id: str
    agent_type: AgentType
    status: MissionStatus
    final_message: str
    steps: tuple[StepRecord, ...] = ()
    tool_calls: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-serialisable dict."""
        data = asdict(self)
        data["steps"] = [asdict(step) for step in self.steps]
        return data


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """A progress event of a running mission, the same for both flows.

    ``kind == "result"`` is always the last event of a stream and carries the
    :class:`ExecutionResult` in ``result``.
    """

    kind: ProgressKind
    data: dict[str, Any] = field(default_factory=dict)
    result: ExecutionResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the event as a JSON-serialisable dict."""
        out: dict[str, Any] = {"kind": self.kind, **self.data}
        if self.result is not None:
            out["result"] = self.result.to_dict()
        return out


@runtime_checkable
class ExecutorProtocol(Protocol):
    """Runs missions; the single place where a mission starts and ends.

    Contract: a mission that fails (LLM error, failing tool, step limit) is
    *returned* as an :class:`ExecutionResult` with ``status="failed"`` and an
    ``error``; bad arguments (unknown ``agent_type``) raise ``MissionError``.
    Cancellation propagates as ``asyncio.CancelledError``. ``session_id`` and
    ``mission_id`` are generated when not given. The streaming form yields
    :class:`ProgressEvent` objects, the last one of kind ``result``; a consumer
    that stops early must ``aclose()`` it, which cancels the mission.
    """

    async def execute_mission(
        self,
        mission: str,
        agent_type: AgentType = "lean",
        session_id: str | None = None,
        mission_id: str | None = None,
    ) -> ExecutionResult:
        """Run one mission to its end."""
        ...

    def execute_mission_streaming(
        self,
        mission: str,
        agent_type: AgentType = "lean",
        session_id: str | None = None,
        mission_id: str | None = None,
    ) -> AsyncGenerator[ProgressEvent, None]:
        """Run one mission, yielding progress events; the last is the result."""
        ...
