"""The ``LeanAgent``: one native tool-calling loop until the model answers in plain text."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import structlog

from taskforce.core.domain._events import EventCallback
from taskforce.core.domain._mission_run import (
    STEP_LIMIT_ERROR,
    MissionAborted,
    MissionRun,
    check_limits,
    dump_json,
    dump_result,
)
from taskforce.core.domain._outcome import AgentOutcome
from taskforce.core.domain.prompts import LEAN_SYSTEM_PROMPT, MISSION_PREFIX
from taskforce.core.interfaces.jsonable import MAX_RESULT_DEPTH
from taskforce.core.interfaces.llm import ChatMessage, LLMProviderProtocol
from taskforce.core.interfaces.outcome import EMPTY_ANSWER, STEP_LIMIT, TOOL_CALL_LIMIT
from taskforce.core.interfaces.tools import ToolRegistryProtocol

__all__ = ["LeanAgent"]

_LOG = structlog.get_logger(__name__)

#: The most tool calls one turn may ask for, unless ``agent.max_tool_calls_per_turn`` says.
DEFAULT_MAX_TOOL_CALLS_PER_TURN = 32


class LeanAgent:
    """Calls ``complete(messages, tools=...)`` in a loop, running the tool calls it returns.

    With ``stream_llm`` each turn is a ``stream(messages, tools=...)`` instead
    (when the provider has ``stream``), its text deltas sent as ``token`` events.

    Each LLM turn is one step. The run completes when the model answers with
    text and no tool calls, and fails when ``max_steps`` turns pass without an
    answer, the provider fails, or (with ``fail_on_tool_error``) a tool call
    fails. An unknown tool is an error result fed back to the model.
    """

    def __init__(
        self,
        llm: LLMProviderProtocol,
        tools: ToolRegistryProtocol,
        *,
        max_steps: int = 20,
        tool_timeout_seconds: float = 30.0,
        fail_on_tool_error: bool = True,
        stream_llm: bool = False,
        max_result_depth: int = MAX_RESULT_DEPTH,
        max_tool_calls_per_turn: int = DEFAULT_MAX_TOOL_CALLS_PER_TURN,
    ) -> None:
        """Create an agent.

        Args:
            llm: the provider, asked with native tool schemas.
            tools: the tools the model may call.
            max_steps: the most LLM turns of a mission.
            tool_timeout_seconds: the time limit of one tool call.
            fail_on_tool_error: a failed tool call fails the mission (else the
                error is fed back and the loop goes on).
            stream_llm: stream each LLM turn when the provider can (``token``
                events carry its text deltas); else ``complete`` is called.
            max_result_depth: the deepest nesting a tool call's arguments and result
                may have (``agent.max_result_depth``), 1 to ``MAX_WRITTEN_DEPTH``.
            max_tool_calls_per_turn: the most tool calls one turn may ask for
                (``agent.max_tool_calls_per_turn``); a turn that asks for more fails
                the mission (``tool_call_limit``) before any of them runs.

        Raises:
            ValueError: a limit is not positive.
        """
        check_limits(
            max_steps,
            tool_timeout_seconds,
            max_result_depth,
            max_tool_calls_per_turn=max_tool_calls_per_turn,
        )
        self._llm = llm
        self._tools = tools
        self._max_steps = max_steps
        self._tool_timeout_seconds = tool_timeout_seconds
        self._fail_on_tool_error = fail_on_tool_error
        self._stream_llm = stream_llm
        self._max_result_depth = max_result_depth
        self._max_tool_calls_per_turn = max_tool_calls_per_turn

    async def run(self, mission: str, *, on_event: EventCallback | None = None) -> AgentOutcome:
        """Carry out ``mission``.

        Args:
            mission: the mission text.
            on_event: receives the progress events of the run.

        Returns:
            The outcome; LLM, tool and limit failures come back as
            ``status="failed"`` with an ``error``.

        Raises:
            asyncio.CancelledError: the run was cancelled.
        """
        run = MissionRun(
            self._llm,
            self._tools,
            on_event=on_event,
            max_steps=self._max_steps,
            tool_timeout_seconds=self._tool_timeout_seconds,
            fail_on_tool_error=self._fail_on_tool_error,
            max_result_depth=self._max_result_depth,
            stream_llm=self._stream_llm,
        )
        messages: list[ChatMessage] = [
            {"role": "system", "content": LEAN_SYSTEM_PROMPT},
            {"role": "user", "content": MISSION_PREFIX + mission},
        ]
        try:
            for index in range(1, self._max_steps + 1):
                answer = await self._turn(run, messages, index)
                if answer is not None:
                    return await run.finish(answer)
            # Every turn was used: the same line the legacy flow's next turn would log.
            _LOG.warning("agent.step_limit.reached", category="agent", max_steps=self._max_steps)
            raise MissionAborted(STEP_LIMIT_ERROR, STEP_LIMIT)
        except BaseException as exc:  # a crash below the agent fails its run, as an abort does
            return await run.fail_on(exc)  # a cancellation goes on up

    async def _turn(self, run: MissionRun, messages: list[ChatMessage], index: int) -> str | None:
        """Make one LLM turn; return the final answer, or ``None`` after running tool calls."""
        description = f"LLM turn {index}"
        await run.start_step(index, description)
        tool_names: list[str] = []
        try:
            result = await run.complete(messages, tools=self._tools.openai_schemas(), step=index)
            # a list or a tuple: classify_llm_result failed the call for anything else
            asked = result.get("tool_calls") or []
            if len(asked) > self._max_tool_calls_per_turn:
                # none runs: a model that asks for thousands at once is broken or hostile
                raise MissionAborted(
                    f"the model asked for {len(asked)} tool calls in one turn, more than "
                    f"agent.max_tool_calls_per_turn ({self._max_tool_calls_per_turn})",
                    TOOL_CALL_LIMIT,
                )
            calls = [_decode_call(call, index, n) for n, call in enumerate(asked, 1)]
            content = result.get("content")
            if not calls:
                if not content or not content.strip():
                    raise MissionAborted(
                        "the model answered with neither text nor tool calls", EMPTY_ANSWER
                    )
                run.record_step(index, description, (), outcome=content)
                return content
            messages.append(
                {
                    "role": "assistant",
                    "content": content,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": dump_json(args)},
                        }
                        for call_id, name, args in calls
                    ],
                }
            )
            outcomes: list[str] = []
            for call_id, name, args in calls:
                tool_names.append(name)
                tool_result = await run.call_tool(index, call_id, name, args)
                messages.append(
                    {"role": "tool", "tool_call_id": call_id, "content": dump_result(tool_result)}
                )
                outcomes.append(f"{name}: {'ok' if tool_result['success'] else 'error'}")
        except BaseException as exc:  # a registry's own SystemExit fails its step too
            run.fail_step(index, description, tool_names, exc)
            raise
        run.record_step(index, description, tool_names, outcome="; ".join(outcomes))
        return None


def _decode_call(call: Any, turn: int, number: int) -> tuple[str, str, Any]:
    """Return ``(id, name, arguments)`` of a provider tool call, tolerating loose shapes.

    The id and the name are plain text (a text of the provider's own class is copied).

    Arguments that arrive as a JSON string are decoded; anything undecodable (also
    JSON nested deeper than Python decodes) is passed on as is, so the tool runner
    turns it into an error result.
    """
    if not isinstance(call, dict):
        return f"call_{turn}_{number}", "", call
    call_id = call.get("id")
    name = call.get("name")
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError, RecursionError):
            arguments = json.loads(arguments) if arguments.strip() else {}
    return (
        _plain(call_id) or f"call_{turn}_{number}",
        _plain(name) or "",
        arguments,
    )


def _plain(value: object) -> str | None:
    """``value`` as a plain ``str`` if it is text, else ``None``.

    A text of the provider's own class may compare, hash or print as it likes (an ``==``
    that raises would fail the registry's lookup): the name and id go on as plain text.
    """
    return str.__str__(value) if isinstance(value, str) else None
