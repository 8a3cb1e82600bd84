"""The record an agent run leaves behind: status, final answer, steps and tool call count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from taskforce.core.interfaces.executor import StepRecord

__all__ = ["AgentOutcome", "AgentStatus"]

#: An agent run either completes or fails; cancellation propagates instead.
AgentStatus = Literal["completed", "failed"]


@dataclass(frozen=True, slots=True)
class AgentOutcome:
    """How one agent run ended, the same shape for the legacy and the lean flow.

    ``final_message`` is the answer of a completed run and empty for a failed
    one; ``error`` says why a failed run failed and is ``None`` otherwise;
    ``error_type`` is that of the LLM or tool call whose failure ended it, else one of
    ``MISSION_ERROR_TYPES`` or the class name of what the run raised (``None`` when it
    completed).
    """

    status: AgentStatus
    final_message: str
    steps: tuple[StepRecord, ...] = ()
    tool_calls: int = 0
    error: str | None = None
    error_type: str | None = None
