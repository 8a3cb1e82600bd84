"""The legacy plan-and-execute ``Agent``: a JSON plan, then a JSON-action ReAct loop per step.

The whole mission is ONE growing conversation (system prompt, mission, plan,
then per step the step prompt, the model's raw JSON actions and the
observations), because a model (and the scripted provider) reads its progress
from the observations seen so far.
"""

from __future__ import annotations

import structlog

from taskforce.core.domain._events import EventCallback
from taskforce.core.domain._mission_run import (
    MissionAborted,
    MissionRun,
    check_limits,
    dump_json,
    dump_result,
)
from taskforce.core.domain._outcome import AgentOutcome
from taskforce.core.domain._parsing import ActionParseError, FinishAction, parse_action, parse_plan
from taskforce.core.domain.prompts import (
    FINAL_STEP_DESCRIPTION,
    LEGACY_SYSTEM_PROMPT,
    MISSION_PREFIX,
    OBSERVATION_PREFIX,
    PARSE_ERROR_PREFIX,
    PLAN_PROMPT,
    STEP_PREFIX,
)
from taskforce.core.interfaces.jsonable import MAX_RESULT_DEPTH
from taskforce.core.interfaces.llm import ChatMessage, LLMProviderProtocol
from taskforce.core.interfaces.log import text_fields
from taskforce.core.interfaces.outcome import (
    EMPTY_ANSWER,
    INVALID_ACTION,
    INVALID_PLAN,
    STEP_TURN_LIMIT,
)
from taskforce.core.interfaces.tools import ToolRegistryProtocol

__all__ = ["Agent"]

_LOG = structlog.get_logger(__name__)


class Agent:
    """Plans a mission with ``generate``, then runs each plan step as a ReAct loop.

    Each turn the model answers with one JSON action (``tool_call`` or
    ``finish``) through ``complete`` without native tools. A reply that is not
    a valid action is fed back once per step; a second one fails the step. A
    step that does not finish within ``max_turns_per_step`` turns fails, and a
    failed step fails the mission. The answer of the last step is the
    mission's final message; a blank one fails it (``empty_answer``, as in the
    lean flow). An unknown tool is an error result fed back to the model, never
    a crash.
    """

    def __init__(
        self,
        llm: LLMProviderProtocol,
        tools: ToolRegistryProtocol,
        *,
        max_steps: int = 20,
        tool_timeout_seconds: float = 30.0,
        fail_on_tool_error: bool = True,
        max_turns_per_step: int = 8,
        max_result_depth: int = MAX_RESULT_DEPTH,
    ) -> None:
        """Create an agent.

        Args:
            llm: the provider to plan and act with.
            tools: the tools the model may call.
            max_steps: the most LLM turns (``complete`` calls) of a whole mission.
            tool_timeout_seconds: the time limit of one tool call.
            fail_on_tool_error: a failed tool call fails the mission (else the
                error is fed back and the step goes on).
            max_turns_per_step: the most LLM turns of one plan step.
            max_result_depth: the deepest nesting a tool call's arguments and result,
                and a JSON reply of the model, may have (``agent.max_result_depth``),
                1 to ``MAX_WRITTEN_DEPTH``.

        Raises:
            ValueError: a limit is not positive.
        """
        check_limits(
            max_steps, tool_timeout_seconds, max_result_depth, max_turns_per_step=max_turns_per_step
        )
        self._llm = llm
        self._tools = tools
        self._max_steps = max_steps
        self._tool_timeout_seconds = tool_timeout_seconds
        self._fail_on_tool_error = fail_on_tool_error
        self._max_turns_per_step = max_turns_per_step
        self._max_result_depth = max_result_depth

    async def run(self, mission: str, *, on_event: EventCallback | None = None) -> AgentOutcome:
        """Carry out ``mission``.

        Args:
            mission: the mission text.
            on_event: receives the progress events of the run.

        Returns:
            The outcome; LLM, plan, parse, tool and limit failures come back as
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
        )
        try:
            plan = await self._plan(run, mission)
            messages = self._conversation(mission, plan)
            answer = ""
            for index, description in enumerate(plan, start=1):
                answer = await self._run_step(run, messages, index, len(plan), description)
            return await run.finish(answer)
        except BaseException as exc:  # a crash below the agent fails its run, as an abort does
            return await run.fail_on(exc)  # a cancellation goes on up

    async def _plan(self, run: MissionRun, mission: str) -> list[str]:
        result = await run.generate(PLAN_PROMPT + MISSION_PREFIX + mission)
        try:
            plan = parse_plan(result.get("content"), self._max_result_depth)
        except ActionParseError as exc:
            _LOG.warning("agent.plan.failed", category="agent", **text_fields("reason", exc))
            raise MissionAborted(f"could not parse the plan: {exc}", INVALID_PLAN) from exc
        # Every plan ends with the answer step, so the last step's answer is the mission's.
        if plan[-1] != FINAL_STEP_DESCRIPTION:
            plan.append(FINAL_STEP_DESCRIPTION)
        _LOG.info("agent.plan.created", category="agent", steps=len(plan))
        return plan

    def _conversation(self, mission: str, plan: list[str]) -> list[ChatMessage]:
        tool_lines = [
            f"- {tool.name}: {tool.description} Arguments: {dump_json(tool.parameters_schema)}"
            for tool in self._tools.list_tools()
        ]
        plan_lines = [f"{i}. {step}" for i, step in enumerate(plan, start=1)]
        # The plan is a message of its own: the first user message must hold
        # the mission text only, since a model (or the scripted provider) reads it as such.
        return [
            {"role": "system", "content": LEGACY_SYSTEM_PROMPT + "\n".join(tool_lines)},
            {"role": "user", "content": MISSION_PREFIX + mission},
            {"role": "user", "content": "Plan:\n" + "\n".join(plan_lines)},
        ]

    async def _run_step(
        self, run: MissionRun, messages: list[ChatMessage], index: int, total: int, description: str
    ) -> str:
        await run.start_step(index, description)
        messages.append({"role": "user", "content": f"{STEP_PREFIX}{index}/{total}: {description}"})
        tool_names: list[str] = []
        try:
            answer = await self._react(run, messages, index, tool_names)
            if index == total and not answer.strip():
                raise MissionAborted("the model's final answer is empty", EMPTY_ANSWER)
        except BaseException as exc:  # a registry's own SystemExit fails its step too
            run.fail_step(index, description, tool_names, exc)
            raise
        run.record_step(index, description, tool_names, outcome=answer)
        return answer

    async def _react(
        self, run: MissionRun, messages: list[ChatMessage], index: int, tool_names: list[str]
    ) -> str:
        has_fed_back_parse_error = False
        for _ in range(self._max_turns_per_step):
            result = await run.complete(messages)
            reply = result.get("content") or ""
            messages.append({"role": "assistant", "content": reply})
            try:
                action = parse_action(reply, self._max_result_depth)
            except ActionParseError as exc:
                _LOG.warning(
                    "agent.parse.failed", category="agent", step=index, **text_fields("reason", exc)
                )
                if has_fed_back_parse_error:
                    raise MissionAborted(
                        f"step {index}: the model's reply is not a valid JSON action: {exc}",
                        INVALID_ACTION,
                    ) from exc
                has_fed_back_parse_error = True
                messages.append({"role": "user", "content": PARSE_ERROR_PREFIX + str(exc)})
                continue
            if isinstance(action, FinishAction):
                return action.answer
            tool_names.append(action.tool)
            call_id = f"step{index}-call{len(tool_names)}"
            tool_result = await run.call_tool(index, call_id, action.tool, action.args)
            messages.append(
                {"role": "user", "content": OBSERVATION_PREFIX + dump_result(tool_result)}
            )
        raise MissionAborted(
            f"step {index} did not finish within {self._max_turns_per_step} LLM turns",
            STEP_TURN_LIMIT,
        )
