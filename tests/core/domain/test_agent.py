"""Tests of the legacy plan-and-execute Agent and its JSON-action ReAct loop."""

from __future__ import annotations

import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from taskforce.core.domain import Agent, AgentOutcome
from taskforce.core.domain.prompts import (
    FINAL_STEP_DESCRIPTION,
    MISSION_PREFIX,
    OBSERVATION_PREFIX,
    PARSE_ERROR_PREFIX,
    PLAN_PROMPT,
    STEP_PREFIX,
)
from taskforce.core.interfaces.executor import ProgressEvent, StepRecord
from tests.core.domain.fakes import (
    FakeRegistry,
    FakeTool,
    QueueLLM,
    failure,
    finish_action,
    ok_handler,
    plan,
    step_limit_line,
    step_limit_lines,
    text,
    tool_action,
)


async def _broken(**_: Any) -> Any:
    return {"success": False, "error": "disk full"}


def _registry() -> FakeRegistry:
    return FakeRegistry(FakeTool("calc", ok_handler), FakeTool("broken", _broken))


def _contents(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


class TestAgentCompletes:
    async def test_plan_then_steps(self) -> None:
        """Each plan step runs its own loop; the last step's answer is the final message."""
        llm = QueueLLM(
            complete=[
                tool_action("calc", {"x": 1}),
                finish_action("step one done"),
                finish_action("the answer"),
            ],
            generate=[plan("compute", FINAL_STEP_DESCRIPTION)],
        )

        outcome = await Agent(llm, _registry()).run("do it")

        assert (
            AgentOutcome(
                "completed",
                "the answer",
                (
                    StepRecord(1, "compute", "completed", ("calc",), "step one done"),
                    StepRecord(2, FINAL_STEP_DESCRIPTION, "completed", (), "the answer"),
                ),
                tool_calls=1,
            )
            == outcome
        )
        assert [PLAN_PROMPT + MISSION_PREFIX + "do it"] == llm.generate_prompts

    async def test_one_growing_conversation(self) -> None:
        """The whole mission is one conversation: mission, plan, steps, actions, observations."""
        llm = QueueLLM(
            complete=[tool_action("calc", {"x": 1}), finish_action("s1"), finish_action("end")],
            generate=[plan("compute")],
        )

        await Agent(llm, _registry()).run("do it")

        last = llm.complete_calls[-1]["messages"]
        assert "system" == last[0]["role"]
        assert "- calc: The fake tool calc." in last[0]["content"]
        assert [
            ("user", MISSION_PREFIX + "do it"),
            ("user", f"Plan:\n1. compute\n2. {FINAL_STEP_DESCRIPTION}"),
            ("user", f"{STEP_PREFIX}1/2: compute"),
            ("assistant", tool_action("calc", {"x": 1})["content"]),
            ("user", OBSERVATION_PREFIX + json.dumps({"success": True, "output": {"x": 1}})),
            ("assistant", finish_action("s1")["content"]),
            ("user", f"{STEP_PREFIX}2/2: {FINAL_STEP_DESCRIPTION}"),
        ] == _contents(last[1:])
        assert all(call["tools"] is None for call in llm.complete_calls)
        assert all(call["messages"] == last[: len(call["messages"])] for call in llm.complete_calls)

    async def test_final_step_appended(self) -> None:
        """A plan that does not end with the answer step gets it appended."""
        llm = QueueLLM(complete=[finish_action("a"), finish_action("b")], generate=[plan("x")])

        outcome = await Agent(llm, _registry()).run("m")

        assert ["x", FINAL_STEP_DESCRIPTION] == [s.description for s in outcome.steps]

    async def test_fenced_bare_list_plan(self) -> None:
        """A plan given as a fenced bare JSON list is accepted."""
        llm = QueueLLM(
            complete=[finish_action("done")],
            generate=[text(f'```json\n["{FINAL_STEP_DESCRIPTION}"]\n```')],
        )

        outcome = await Agent(llm, _registry()).run("m")

        assert ("completed", "done", 1) == (
            outcome.status,
            outcome.final_message,
            len(outcome.steps),
        )

    async def test_action_inside_prose(self) -> None:
        """An action surrounded by prose is still found and carried out."""
        llm = QueueLLM(
            complete=[text('Sure, here: {"action": "finish", "answer": "ok"} - bye')],
            generate=[plan(FINAL_STEP_DESCRIPTION)],
        )

        outcome = await Agent(llm, _registry()).run("m")

        assert ("completed", "ok") == (outcome.status, outcome.final_message)

    async def test_a_fence_inside_a_json_reply_is_part_of_it(self) -> None:
        """A plan step quoting code in a fence is a step: the whole reply is the JSON."""
        step = "Save ```[1, 2]``` as data.json"
        llm = QueueLLM(
            complete=[finish_action("saved"), finish_action("done")], generate=[plan(step)]
        )

        outcome = await Agent(llm, _registry()).run("m")

        assert ("completed", "done") == (outcome.status, outcome.final_message)
        assert step == outcome.steps[0].description

    async def test_a_bracket_in_the_prose_before_the_plan(self) -> None:
        """A bracket that no plan starts with, in the prose before the plan, is passed over."""
        reply = text(
            'Two steps, [1] and [2]:\n{"steps": ["look", "' + FINAL_STEP_DESCRIPTION + '"]}'
        )
        llm = QueueLLM(complete=[finish_action("seen"), finish_action("done")], generate=[reply])

        outcome = await Agent(llm, _registry()).run("m")

        assert ("completed", "done") == (outcome.status, outcome.final_message)
        assert ["look", FINAL_STEP_DESCRIPTION] == [step.description for step in outcome.steps]

    async def test_an_observation_keeps_its_text(self) -> None:
        """A tool's output reaches the model as written, not escaped to ASCII."""

        async def read(**_: Any) -> Any:
            return {"success": True, "output": "Grüße aus Zürich, 日本"}

        llm = QueueLLM(
            complete=[tool_action("read", {}), finish_action("read"), finish_action("done")],
            generate=[plan("read")],
        )

        await Agent(llm, FakeRegistry(FakeTool("read", read))).run("m")

        observation = llm.complete_calls[1]["messages"][-1]["content"]
        assert '"output": "Grüße aus Zürich, 日本"' in observation

    async def test_the_tool_list_keeps_its_text(self) -> None:
        """A tool's argument schema is listed to the model as written, not escaped."""

        class _Sized(FakeTool):
            @property
            def parameters_schema(self) -> dict[str, Any]:
                return {"type": "object", "properties": {"Größe": {"type": "number"}}}

        llm = QueueLLM(complete=[finish_action("done")], generate=[plan(FINAL_STEP_DESCRIPTION)])

        await Agent(llm, FakeRegistry(_Sized("size", ok_handler))).run("m")

        assert '"Größe"' in (llm.complete_calls[0]["messages"][0]["content"] or "")

    async def test_events(self) -> None:
        """The legacy flow emits the same event kinds as the lean flow."""
        events: list[ProgressEvent] = []

        async def collect(event: ProgressEvent) -> None:
            events.append(event)

        llm = QueueLLM(
            complete=[tool_action("calc", {}), finish_action("s"), finish_action("end")],
            generate=[plan("compute")],
        )

        await Agent(llm, _registry()).run("m", on_event=collect)

        assert [
            "step_started",
            "tool_call",
            "tool_result",
            "step_started",
            "final_answer",
        ] == [e.kind for e in events]
        assert {"step": 1, "description": "compute"} == events[0].data


class TestAgentParseErrors:
    async def test_bad_json_fed_back_once(self) -> None:
        """A reply that is no JSON action is fed back once; a good one then goes on."""
        llm = QueueLLM(
            complete=[text("thinking..."), finish_action("ok")],
            generate=[plan(FINAL_STEP_DESCRIPTION)],
        )

        with capture_logs() as logs:
            outcome = await Agent(llm, _registry()).run("m")

        assert ("completed", "ok") == (outcome.status, outcome.final_message)
        feedback = llm.complete_calls[1]["messages"][-1]
        assert "user" == feedback["role"]
        assert feedback["content"].startswith(PARSE_ERROR_PREFIX)
        assert ["agent"] == [e["category"] for e in logs if e["event"] == "agent.parse.failed"]

    async def test_second_bad_reply_fails_the_step(self) -> None:
        """A second reply that is no JSON action fails the step and the mission."""
        llm = QueueLLM(
            complete=[text("nope"), text("still nope"), finish_action("never")],
            generate=[plan(FINAL_STEP_DESCRIPTION)],
        )

        outcome = await Agent(llm, _registry()).run("m")

        assert ("failed", 2) == (outcome.status, len(llm.complete_calls))
        assert outcome.error is not None and "not a valid JSON action" in outcome.error
        assert "invalid_action" == outcome.error_type
        assert ["failed"] == [s.status for s in outcome.steps]

    async def test_bad_plan_fails_the_mission(self) -> None:
        """A plan that is not JSON fails the mission with a clear error; no step runs."""
        llm = QueueLLM(generate=[text("first I will think hard")])

        outcome = await Agent(llm, _registry()).run("m")

        assert ("failed", (), []) == (outcome.status, outcome.steps, llm.complete_calls)
        assert outcome.error is not None and outcome.error.startswith("could not parse the plan")
        assert "invalid_plan" == outcome.error_type

    async def test_a_plan_nested_too_deeply_is_invalid_plan(self) -> None:
        """A plan reply of 100,000 nested brackets fails as invalid_plan, not as a crash."""
        llm = QueueLLM(generate=[text("[" * 100_000)])

        outcome = await Agent(llm, _registry()).run("m")

        assert ("failed", "invalid_plan") == (outcome.status, outcome.error_type)

    async def test_actions_nested_too_deeply_are_invalid_action(self) -> None:
        """Two action replies of 100,000 nested brackets fail as invalid_action."""
        deep = text("[" * 100_000)
        llm = QueueLLM(complete=[deep, deep], generate=[plan(FINAL_STEP_DESCRIPTION)])

        outcome = await Agent(llm, _registry()).run("m")

        assert ("failed", "invalid_action") == (outcome.status, outcome.error_type)

    async def test_brackets_inside_string_arguments_are_no_nesting(self) -> None:
        """A file write of code, a regex: brackets inside its strings nest nothing, so the
        action runs with those arguments, and a plan step's text may hold them too."""
        tool = FakeTool("calc", ok_handler)
        args = {"content": "int main() {" * 150, "pattern": r"[\[\]{}\"]" * 60}
        llm = QueueLLM(
            complete=[tool_action("calc", args), finish_action("written"), finish_action("end")],
            generate=[plan("write " + "{[" * 80)],
        )

        outcome = await Agent(llm, FakeRegistry(tool)).run("m")

        assert ("completed", "end", 1) == (
            outcome.status,
            outcome.final_message,
            outcome.tool_calls,
        )
        assert [args] == tool.calls


class TestAgentFails:
    @pytest.mark.parametrize("answer", ["", " \n", None])
    async def test_a_blank_final_answer_is_empty_answer(self, answer: str | None) -> None:
        """A last step that finishes with a blank answer fails the mission as the lean
        flow fails a turn with no text: empty_answer, that step recorded failed."""
        blank = text(json.dumps({"action": "finish", "answer": answer}))
        llm = QueueLLM(complete=[blank, blank], generate=[plan("look")])

        outcome = await Agent(llm, _registry()).run("m")

        assert ("failed", "empty_answer") == (outcome.status, outcome.error_type)
        assert [("completed", answer or ""), ("failed", "the model's final answer is empty")] == [
            (step.status, step.outcome) for step in outcome.steps
        ]

    async def test_planner_failure(self) -> None:
        """A failed plan call fails the mission with the provider's message."""
        outcome = await Agent(QueueLLM(generate=[failure("overloaded")]), _registry()).run("m")

        assert "failed" == outcome.status
        assert outcome.error is not None and "overloaded" in outcome.error

    @pytest.mark.parametrize(("answer", "kind"), [(None, "NoneType"), ("text", "str")])
    async def test_a_plan_call_that_returns_no_result(self, answer: Any, kind: str) -> None:
        """A planner that returns no dict fails the mission as invalid_response, saying
        what it returned (as the lean flow's turn and a stream's chunk say it)."""
        outcome = await Agent(QueueLLM(generate=[answer]), _registry()).run("m")

        error = f"LLM call failed: the provider returned a {kind}, not a result"
        assert ("failed", error, "invalid_response") == (
            outcome.status,
            outcome.error,
            outcome.error_type,
        )

    async def test_llm_exception_during_step(self) -> None:
        """A provider exception during a step fails the step and the mission."""
        llm = QueueLLM(complete=[ConnectionError("reset")], generate=[plan("x")])

        outcome = await Agent(llm, _registry()).run("m")

        assert ("failed", ["failed"]) == (outcome.status, [s.status for s in outcome.steps])
        assert outcome.error is not None and "reset" in outcome.error

    async def test_failing_tool_fails_the_mission(self) -> None:
        """With fail_on_tool_error a failed call ends the mission with the tool's error."""
        llm = QueueLLM(complete=[tool_action("broken", {})], generate=[plan("x")])

        outcome = await Agent(llm, _registry()).run("m")

        assert ("failed", "tool 'broken' failed: disk full") == (outcome.status, outcome.error)
        assert StepRecord(1, "x", "failed", ("broken",), str(outcome.error)) == outcome.steps[0]

    async def test_failing_tool_fed_back_when_allowed(self) -> None:
        """Without fail_on_tool_error the error is observed and the step goes on."""
        llm = QueueLLM(
            complete=[tool_action("broken", {}), finish_action("coped"), finish_action("end")],
            generate=[plan("x")],
        )

        outcome = await Agent(llm, _registry(), fail_on_tool_error=False).run("m")

        assert ("completed", "end") == (outcome.status, outcome.final_message)
        observation = llm.complete_calls[1]["messages"][-1]["content"]
        fed_back = {"success": False, "error": "disk full", "error_type": "tool_error"}
        assert OBSERVATION_PREFIX + json.dumps(fed_back) == observation

    async def test_step_turn_limit(self) -> None:
        """A step that keeps calling tools fails once it passes its own turn limit."""
        llm = QueueLLM(complete=[tool_action("calc", {})] * 5, generate=[plan("x")])

        outcome = await Agent(llm, _registry(), max_turns_per_step=3).run("m")

        assert ("failed", 3) == (outcome.status, len(llm.complete_calls))
        assert outcome.error is not None and "step 1 did not finish within 3" in outcome.error
        assert "step_turn_limit" == outcome.error_type

    async def test_max_steps_bounds_all_turns(self) -> None:
        """max_steps bounds the LLM turns of the whole mission, across plan steps."""
        llm = QueueLLM(
            complete=[tool_action("calc", {}), finish_action("a"), tool_action("calc", {})] * 3,
            generate=[plan("x", "y", "z")],
        )

        with capture_logs() as logs:
            outcome = await Agent(llm, _registry(), max_steps=4).run("m")

        assert ("failed", "step limit reached", "step_limit", 4) == (
            outcome.status,
            outcome.error,
            outcome.error_type,
            len(llm.complete_calls),
        )
        assert ["completed", "failed"] == [s.status for s in outcome.steps]
        assert [step_limit_line(4)] == step_limit_lines(logs)
