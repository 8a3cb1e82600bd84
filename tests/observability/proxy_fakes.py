"""Fakes for the proxy tests: plain implementations of the protocols the proxies observe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from typing import Any, cast

from taskforce.core.interfaces import (
    AppendResult,
    ChatMessage,
    ExecutionResult,
    LLMResult,
    ProgressEvent,
    StepRecord,
    StreamChunk,
    ToolResult,
    ToolSchema,
    check_mission_request,
)
from taskforce.core.interfaces.context import current_agent_type
from taskforce.errors import ToolNotFoundError


class FakeTool:
    """A tool whose ``execute`` runs ``behaviour(**params)`` (a coroutine function)."""

    def __init__(self, name: str = "fake", behaviour: Callable[..., Any] | None = None) -> None:
        self._name = name
        self.behaviour = behaviour
        self.seen_agent_types: list[str] = []
        self.extra = "plain attribute"

    @property
    def name(self) -> str:
        return self._name

    @property
    def description(self) -> str:
        return "a fake tool"

    @property
    def parameters_schema(self) -> dict[str, Any]:
        return {"type": "object", "properties": {}}

    async def execute(self, /, **params: Any) -> ToolResult:
        self.seen_agent_types.append(current_agent_type())
        if self.behaviour is not None:
            return await self.behaviour(**params)
        return cast(ToolResult, {"success": True, "output": params})


class FakeRegistry:
    """A minimal tool registry keyed by name."""

    def __init__(self, *tools: Any) -> None:
        self._tools: dict[str, Any] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Any) -> None:
        if tool.name in self._tools:
            raise ValueError(f"duplicate tool {tool.name!r}")
        self._tools[tool.name] = tool

    def get(self, name: str) -> Any:
        try:
            return self._tools[name]
        except KeyError:
            raise ToolNotFoundError(name) from None

    def list_tools(self) -> list[Any]:
        return list(self._tools.values())

    def openai_schemas(self) -> list[ToolSchema]:
        return [
            cast(ToolSchema, {"type": "function", "function": {"name": n}}) for n in self._tools
        ]


class FakeProvider:
    """A non-streaming provider answering with ``answer`` (or raising ``error``)."""

    model = "default-model"

    def __init__(self, answer: dict[str, Any] | None = None, error: BaseException | None = None):
        self.answer = answer if answer is not None else _ok_answer()
        self.error = error
        self.delay = 0.0
        # put on a cancellation that ends the delay, as the built-in providers report attempts
        self.cancel_attempts: list[Any] | None = None
        self.waiting = asyncio.Event()  # set once a call waits out its delay
        self.seen_agent_types: list[str] = []

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        model: str | None = None,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        return await self._answer()

    async def generate(
        self,
        prompt: str,
        context: Mapping[str, Any] | None = None,
        model: str | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        return await self._answer()

    async def _answer(self) -> LLMResult:
        self.seen_agent_types.append(current_agent_type())
        if self.delay:
            await self._wait(self.delay)
        if self.error is not None:
            raise self.error
        return cast(LLMResult, self.answer)

    async def _wait(self, seconds: float) -> None:
        self.waiting.set()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError as exc:
            if self.cancel_attempts is not None:
                exc.attempts = self.cancel_attempts  # type: ignore[attr-defined]
            raise


class FakeStreamingProvider(FakeProvider):
    """A provider that also streams ``chunks``; ``stream_error`` is raised at ``fail_after``."""

    def __init__(self, chunks: list[dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.chunks = chunks if chunks is not None else _default_chunks()
        self.stream_error: BaseException | None = None
        self.fail_after = 0
        self.chunk_delay = 0.0
        self.closed = False
        self.finished = False

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        model: str | None = None,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[StreamChunk]:
        self.seen_agent_types.append(current_agent_type())
        try:
            for index, chunk in enumerate(self.chunks):
                if self.stream_error is not None and index == self.fail_after:
                    raise self.stream_error
                if self.chunk_delay:
                    await self._wait(self.chunk_delay)
                yield cast(StreamChunk, chunk)
            self.finished = True
        except GeneratorExit:
            self.closed = True
            raise


class FakeStore:
    """An in-memory state store; ``error`` makes every call raise."""

    def __init__(self) -> None:
        self.saved: dict[str, Any] = {}
        self.error: Exception | None = None

    async def save(self, session_id: str, state: dict[str, Any]) -> int | None:
        if self.error is not None:
            raise self.error
        self.saved[session_id] = state
        return None

    async def load(self, session_id: str) -> dict[str, Any] | None:
        if self.error is not None:
            raise self.error
        return self.saved.get(session_id)

    async def append(self, session_id: str, record: dict[str, Any]) -> AppendResult:
        if self.error is not None:
            raise self.error
        missions = self.saved.setdefault(session_id, {}).setdefault("missions", [])
        missions.append(record)
        return AppendResult(size_bytes=100 * len(missions), records=len(missions))


class FakeExecutor:
    """An executor whose mission runs ``body(ids)`` and whose stream yields ``events``."""

    def __init__(self, body: Callable[..., Any] | None = None) -> None:
        self.body = body
        self.calls: list[dict[str, Any]] = []
        self.events: list[ProgressEvent] | None = None
        self.stream_error: BaseException | None = None
        self.event_delay = 0.0
        self.stream_closed = False
        self.seen_agent_types: list[str] = []

    async def execute_mission(
        self,
        mission: str,
        agent_type: str = "lean",
        session_id: str | None = None,
        mission_id: str | None = None,
    ) -> ExecutionResult:
        self.calls.append(
            {
                "mission": mission,
                "agent_type": agent_type,
                "session_id": session_id,
                "mission_id": mission_id,
            }
        )
        check_mission_request(mission, agent_type, session_id, mission_id)  # as the executor does
        self.seen_agent_types.append(current_agent_type())
        if self.body is not None:
            return await self.body(session_id, mission_id, agent_type)
        return make_result(session_id or "", mission_id or "", agent_type)

    async def execute_mission_streaming(
        self,
        mission: str,
        agent_type: str = "lean",
        session_id: str | None = None,
        mission_id: str | None = None,
    ) -> AsyncGenerator[ProgressEvent, None]:
        self.calls.append({"mission": mission, "agent_type": agent_type, "session_id": session_id})
        check_mission_request(mission, agent_type, session_id, mission_id)  # as the executor does
        events = self.events
        if events is None:
            result = make_result(session_id or "", mission_id or "", agent_type)
            events = [
                ProgressEvent(kind="mission_started"),
                ProgressEvent(kind="step_started"),
                ProgressEvent(kind="result", result=result),
            ]
        try:
            for index, event in enumerate(events):
                self.seen_agent_types.append(current_agent_type())
                if self.stream_error is not None and index == 1:
                    raise self.stream_error
                if self.event_delay:
                    await asyncio.sleep(self.event_delay)
                yield event
        except GeneratorExit:
            self.stream_closed = True
            raise


def make_result(
    session_id: str, mission_id: str, agent_type: str, status: str = "completed"
) -> ExecutionResult:
    """An ExecutionResult with two steps and three tool calls."""
    steps = (
        StepRecord(index=0, description="a", status="completed", tool_calls=("x", "y")),
        StepRecord(index=1, description="b", status="completed", tool_calls=("z",)),
    )
    return ExecutionResult(
        session_id=session_id,
        mission_id=mission_id,
        agent_type=agent_type,  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        final_message="done",
        steps=steps,
        tool_calls=3,
    )


def _ok_answer() -> dict[str, Any]:
    return {
        "success": True,
        "content": "hi",
        "model": "reported-model",
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def _default_chunks() -> list[dict[str, Any]]:
    return [
        {"content": "Hel"},
        {"content": "lo"},
        {
            "content": "",
            "done": True,
            "model": "stream-model",
            "usage": {"prompt_tokens": 5, "completion_tokens": 2},
        },
    ]
