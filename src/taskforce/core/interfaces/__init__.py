"""The ports of taskforce: Protocols and the typed records that cross layers."""

from __future__ import annotations

from taskforce.core.interfaces.executor import (
    AGENT_TYPES,
    MISSION_STATUSES,
    AgentType,
    ExecutionResult,
    ExecutorProtocol,
    MissionStatus,
    ProgressEvent,
    ProgressKind,
    StepRecord,
)
from taskforce.core.interfaces.llm import (
    ChatMessage,
    FunctionSchema,
    LLMProviderProtocol,
    LLMResult,
    StreamChunk,
    StreamingLLMProviderProtocol,
    ToolCall,
    ToolSchema,
    Usage,
)
from taskforce.core.interfaces.state import SessionState, StateStoreProtocol
from taskforce.core.interfaces.tools import (
    TOOL_TIMEOUT_CANCEL_MESSAGE,
    ToolProtocol,
    ToolRegistryProtocol,
    ToolResult,
)

__all__ = [
    "AGENT_TYPES",
    "MISSION_STATUSES",
    "TOOL_TIMEOUT_CANCEL_MESSAGE",
    "AgentType",
    "ChatMessage",
    "ExecutionResult",
    "ExecutorProtocol",
    "FunctionSchema",
    "LLMProviderProtocol",
    "LLMResult",
    "MissionStatus",
    "ProgressEvent",
    "ProgressKind",
    "SessionState",
    "StateStoreProtocol",
    "StepRecord",
    "StreamChunk",
    "StreamingLLMProviderProtocol",
    "ToolCall",
    "ToolProtocol",
    "ToolRegistryProtocol",
    "ToolResult",
    "ToolSchema",
    "Usage",
]
