"""Type-checked use of the public API (``mypy tests/typing``); never collected by pytest."""

from __future__ import annotations

from typing import Any

from taskforce.api.server import create_app
from taskforce.application.container import Container, build_container
from taskforce.config import Settings, load_settings
from taskforce.core.interfaces import ExecutionResult, ToolResult


class EchoTool:
    """A user's tool: no instrumentation code of its own."""

    name = "echo"
    description = "Echo the text back."
    parameters_schema: dict[str, Any] = {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    }

    async def execute(self, **params: Any) -> ToolResult:
        return {"success": True, "output": params["text"]}


async def use_public_api() -> str:
    settings: Settings = load_settings()
    container: Container = build_container(settings)
    container.tool_registry.register(EchoTool())
    result: ExecutionResult = await container.executor.execute_mission(
        'tool:echo {"text": "hi"}', agent_type="legacy", session_id="s1"
    )
    async for event in container.executor.execute_mission_streaming("hi"):
        _ = event.kind
    create_app(container=container)
    if container.metrics is not None:
        _ = container.metrics.registry
    await container.aclose()
    return result.final_message


async def use_the_attempt_report() -> list[str]:
    """A caller reads the attempts and error type of a failed call or stream."""
    from taskforce.core.interfaces import LLM_ERROR_TYPES, LLMAttempt, LLMErrorType
    from taskforce.errors import LLMProviderError
    from taskforce.infrastructure.llm import ScriptedLLMProvider

    provider = ScriptedLLMProvider(max_retries=1, first_chunk_delay_ms=0.0)
    result = await provider.complete([{"role": "user", "content": "llm:fail rate_limit"}])
    attempts: list[LLMAttempt] = result.get("attempts", [])
    kinds: list[str] = [a.error_type or "ok" for a in attempts]
    try:
        async for chunk in provider.stream([{"role": "user", "content": "hi"}]):
            _ = chunk.get("tool_calls", [])
    except LLMProviderError as exc:
        error_type: str = exc.error_type
        kinds.append(error_type)
    first: LLMErrorType = LLM_ERROR_TYPES[0]
    kinds.append(first)
    return kinds


async def use_a_store_with_a_health_check() -> bool:
    """A user's store with a health check (a HealthCheckingStateStoreProtocol): /health shows it."""
    from taskforce.core.interfaces import (
        AppendResult,
        HealthCheckingStateStoreProtocol,
        MissionRecord,
        SessionState,
        StateStoreHealth,
    )

    class MemoryStore:
        backend = "memory"

        def __init__(self) -> None:
            self.sessions: dict[str, SessionState] = {}

        async def save(self, session_id: str, state: SessionState) -> int | None:
            self.sessions[session_id] = state
            return None

        async def load(self, session_id: str) -> SessionState | None:
            return self.sessions.get(session_id)

        async def append(self, session_id: str, record: MissionRecord) -> AppendResult:
            missions = self.sessions.setdefault(session_id, {}).setdefault("missions", [])
            missions.append(record)
            return AppendResult(size_bytes=0, records=len(missions))

        async def check_health(self) -> StateStoreHealth:
            return StateStoreHealth(is_reachable=True)

    store: HealthCheckingStateStoreProtocol = MemoryStore()
    build_container(state_store=store)
    health = await store.check_health()
    return health.is_reachable and store.backend == "memory"
