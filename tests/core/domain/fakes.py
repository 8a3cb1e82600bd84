"""Small fakes of the ports for agent and executor tests: provider, tools, registry, state store."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from taskforce.core.domain.prompts import FINAL_STEP_DESCRIPTION, MISSION_PREFIX
from taskforce.core.interfaces.llm import ChatMessage, LLMResult, ToolSchema
from taskforce.core.interfaces.state import AppendResult
from taskforce.core.interfaces.tools import ToolProtocol, ToolResult
from taskforce.errors import StateCorruptedError, ToolNotFoundError

Answer = LLMResult | BaseException | Callable[[Sequence[ChatMessage]], Awaitable[LLMResult]]


def text(content: str) -> LLMResult:
    """A successful plain-text answer."""
    return {"success": True, "content": content, "tool_calls": [], "model": "fake-1"}


def native_calls(*calls: tuple[str, dict[str, Any]]) -> LLMResult:
    """A successful answer with native tool calls."""
    return {
        "success": True,
        "content": None,
        "tool_calls": [
            {"id": f"call_{i}", "name": name, "arguments": args}
            for i, (name, args) in enumerate(calls)
        ],
        "model": "fake-1",
    }


def tool_action(tool: str, args: dict[str, Any]) -> LLMResult:
    """A legacy JSON tool_call action."""
    return text(json.dumps({"action": "tool_call", "tool": tool, "args": args}))


def finish_action(answer: str) -> LLMResult:
    """A legacy JSON finish action."""
    return text(json.dumps({"action": "finish", "answer": answer}))


def plan(*steps: str) -> LLMResult:
    """A legacy plan."""
    return text(json.dumps({"steps": list(steps)}))


def failure(error: str) -> LLMResult:
    """A failed provider call."""
    return {"success": False, "error": error, "error_type": "FakeError"}


def step_limit_lines(logs: Sequence[Any]) -> list[dict[str, Any]]:
    """The ``agent.step_limit.reached`` lines among captured logs, with their fields."""
    return [dict(log) for log in logs if log["event"] == "agent.step_limit.reached"]


def step_limit_line(max_steps: int) -> dict[str, Any]:
    """The one line a run that used up ``max_steps`` LLM turns logs, in either flow."""
    return {
        "event": "agent.step_limit.reached",
        "log_level": "warning",
        "category": "agent",
        "max_steps": max_steps,
    }


class QueueLLM:
    """Answers ``complete`` and ``generate`` from two queues, recording every call."""

    def __init__(self, complete: Sequence[Answer] = (), generate: Sequence[Answer] = ()) -> None:
        self.complete_answers = list(complete)
        self.generate_answers = list(generate)
        self.complete_calls: list[dict[str, Any]] = []
        self.generate_prompts: list[str] = []

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        model: str | None = None,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        self.complete_calls.append(
            {"messages": copy.deepcopy(list(messages)), "tools": tools, "kwargs": kwargs}
        )
        return await _answer(self.complete_answers.pop(0), messages)

    async def generate(
        self,
        prompt: str,
        context: Any = None,
        model: str | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        self.generate_prompts.append(prompt)
        return await _answer(self.generate_answers.pop(0), [])


async def _answer(answer: Answer, messages: Sequence[ChatMessage]) -> LLMResult:
    if isinstance(answer, BaseException):
        raise answer
    if callable(answer):
        return await answer(messages)
    return answer


class EchoLLM:
    """A stateless provider for any number of concurrent missions.

    Lean: calls tool ``echo`` once with the mission text, then answers
    ``"done: <mission>"``. Legacy: a one-step plan whose step finishes at once.
    Every call sets ``entered``, then awaits ``gate`` (when set) and ``delay`` seconds.
    """

    def __init__(self, delay: float = 0.0, gate: asyncio.Event | None = None) -> None:
        self.delay = delay
        self.gate = gate
        self.entered = asyncio.Event()

    async def _pause(self) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.delay)

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        model: str | None = None,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        await self._pause()
        mission = (messages[1]["content"] or "").removeprefix(MISSION_PREFIX)
        if tools is None:
            return finish_action(f"done: {mission}")
        if any(m["role"] == "tool" for m in messages):
            return text(f"done: {mission}")
        return native_calls(("echo", {"text": mission}))

    async def generate(
        self, prompt: str, context: Any = None, model: str | None = None, **kwargs: Any
    ) -> LLMResult:
        await self._pause()
        return plan(FINAL_STEP_DESCRIPTION)


ToolHandler = Callable[..., Awaitable[Any]]


class FakeTool:
    """A tool whose ``execute`` is ``handler``; records the arguments of every call."""

    def __init__(self, name: str, handler: ToolHandler) -> None:
        self._name = name
        self._handler = handler
        self.calls: list[dict[str, Any]] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def description(self) -> str:
        return f"The fake tool {self._name}."

    @property
    def parameters_schema(self) -> dict[str, Any]:
        return {"type": "object", "properties": {}}

    async def execute(self, **params: Any) -> ToolResult:
        self.calls.append(params)
        result: ToolResult = await self._handler(**params)
        return result


async def ok_handler(**params: Any) -> ToolResult:
    """Succeeds with the arguments as output."""
    return {"success": True, "output": params}


class FakeRegistry:
    """A dict of tools behind ``ToolRegistryProtocol``."""

    def __init__(self, *tools: ToolProtocol) -> None:
        self._tools = {tool.name: tool for tool in tools}

    def register(self, tool: ToolProtocol) -> None:
        if tool.name in self._tools:
            raise ValueError(tool.name)
        self._tools[tool.name] = tool

    def get(self, name: str) -> ToolProtocol:
        try:
            return self._tools[name]
        except KeyError:
            raise ToolNotFoundError(name) from None

    def list_tools(self) -> list[ToolProtocol]:
        return list(self._tools.values())

    def openai_schemas(self) -> list[ToolSchema]:
        return [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters_schema,
                },
            }
            for t in self._tools.values()
        ]


class MemoryStateStore:
    """Keeps each session's state as JSON text; ``delay`` widens read-modify-write races."""

    def __init__(self, delay: float = 0.0) -> None:
        self.data: dict[str, str] = {}
        self.delay = delay
        self.saves = 0

    def corrupt(self, session_id: str) -> None:
        self.data[session_id] = "{not json"

    def missions(self, session_id: str) -> list[dict[str, Any]]:
        return list(json.loads(self.data[session_id])["missions"])

    async def save(self, session_id: str, state: dict[str, Any]) -> None:
        self._check(session_id)
        text_ = json.dumps(state)
        await asyncio.sleep(self.delay)
        self.data[session_id] = text_
        self.saves += 1

    async def load(self, session_id: str) -> dict[str, Any] | None:
        self._check(session_id)
        await asyncio.sleep(self.delay)
        return self._parsed(session_id)

    async def append(self, session_id: str, record: dict[str, Any]) -> AppendResult:
        self._check(session_id)
        await asyncio.sleep(self.delay)
        state = self._parsed(session_id) or {}
        missions = state.get("missions")
        state["missions"] = [*(missions if isinstance(missions, list) else []), record]
        self.data[session_id] = json.dumps(state)
        self.saves += 1
        return AppendResult(len(self.data[session_id]), len(state["missions"]))

    def _parsed(self, session_id: str) -> dict[str, Any] | None:
        raw = self.data.get(session_id)
        if raw is None:
            return None
        try:
            state: dict[str, Any] = json.loads(raw)
        except ValueError as exc:
            raise StateCorruptedError(session_id, f"memory:{session_id}", str(exc)) from exc
        return state

    @staticmethod
    def _check(session_id: str) -> None:
        if "/" in session_id:
            raise ValueError(f"invalid session id {session_id!r}")
