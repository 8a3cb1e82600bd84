"""Tests of the LeanAgent: the native tool-calling loop."""

from __future__ import annotations

import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from taskforce.core.domain import AgentOutcome, LeanAgent
from taskforce.core.domain.prompts import LEAN_SYSTEM_PROMPT, MISSION_PREFIX
from taskforce.core.interfaces.executor import ProgressEvent, StepRecord
from taskforce.errors import LLMProviderError
from tests.core.domain.fakes import (
    FakeRegistry,
    FakeTool,
    QueueLLM,
    failure,
    native_calls,
    ok_handler,
    step_limit_line,
    step_limit_lines,
    text,
)
from tests.support.odd_values import RaisingGet, Unequal


async def _broken(**_: Any) -> Any:
    return {"success": False, "error": "disk full"}


def _registry() -> FakeRegistry:
    return FakeRegistry(FakeTool("calc", ok_handler), FakeTool("broken", _broken))


class _Events:
    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []

    async def __call__(self, event: ProgressEvent) -> None:
        self.events.append(event)

    @property
    def kinds(self) -> list[str]:
        return [event.kind for event in self.events]


class TestLeanAgentCompletes:
    async def test_tool_calls_then_answer(self) -> None:
        """Tool calls run in order, their results go back, and the text answer ends the run."""
        llm = QueueLLM(
            [native_calls(("calc", {"x": 1})), native_calls(("calc", {"x": 2})), text("3")]
        )
        registry = _registry()

        outcome = await LeanAgent(llm, registry).run("add things")

        assert (
            AgentOutcome(
                "completed",
                "3",
                (
                    StepRecord(1, "LLM turn 1", "completed", ("calc",), "calc: ok"),
                    StepRecord(2, "LLM turn 2", "completed", ("calc",), "calc: ok"),
                    StepRecord(3, "LLM turn 3", "completed", (), "3"),
                ),
                tool_calls=2,
            )
            == outcome
        )

    async def test_conversation_uses_the_openai_tool_format(self) -> None:
        """The conversation holds assistant tool_calls and one tool message per call."""
        llm = QueueLLM([native_calls(("calc", {"x": 1}), ("calc", {"x": 2})), text("done")])
        registry = _registry()

        await LeanAgent(llm, registry).run("m")

        messages = llm.complete_calls[1]["messages"]
        assert [
            {"role": "system", "content": LEAN_SYSTEM_PROMPT},
            {"role": "user", "content": MISSION_PREFIX + "m"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{i}",
                        "type": "function",
                        "function": {"name": "calc", "arguments": json.dumps({"x": i + 1})},
                    }
                    for i in range(2)
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_0",
                "content": json.dumps({"success": True, "output": {"x": 1}}),
            },
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "content": json.dumps({"success": True, "output": {"x": 2}}),
            },
        ] == messages
        assert registry.openai_schemas() == llm.complete_calls[0]["tools"]

    async def test_string_arguments_are_decoded(self) -> None:
        """Arguments a provider left as a JSON string reach the tool decoded."""
        tool = FakeTool("calc", ok_handler)
        call: Any = {
            "success": True,
            "content": None,
            "tool_calls": [{"id": "c", "name": "calc", "arguments": '{"x": 5}'}],
        }
        llm = QueueLLM([call, text("ok")])

        await LeanAgent(llm, FakeRegistry(tool)).run("m")

        assert [{"x": 5}] == tool.calls

    async def test_a_name_and_id_of_the_providers_own_text_class_reach_the_tool(self) -> None:
        """A tool call whose name and id are texts whose ``==`` raises runs the tool named:
        they are read as plain text."""
        tool = FakeTool("calc", ok_handler)
        call: Any = {
            "success": True,
            "content": None,
            "tool_calls": [{"id": Unequal("c"), "name": Unequal("calc"), "arguments": {}}],
        }
        llm = QueueLLM([call, text("ok")])

        outcome = await LeanAgent(llm, FakeRegistry(tool)).run("m")

        assert ("completed", [{}]) == (outcome.status, tool.calls)

    async def test_text_reaches_the_model_as_it_is(self) -> None:
        """A tool's output and the call's arguments are sent as written, not escaped to
        ASCII; a lone surrogate (a file name that is not UTF-8) as a JSON escape."""

        async def listing(**_: Any) -> Any:
            return {"success": True, "output": ["Zürich.txt", "日本.txt", "bad\udcff.txt"]}

        llm = QueueLLM([native_calls(("ls", {"dir": "Genève"})), text("ok")])

        await LeanAgent(llm, FakeRegistry(FakeTool("ls", listing))).run("m")

        call, result = llm.complete_calls[1]["messages"][-2:]
        assert '{"dir": "Genève"}' == call["tool_calls"][0]["function"]["arguments"]
        assert '"output": ["Zürich.txt", "日本.txt", "bad\\udcff.txt"]' in result["content"]
        result["content"].encode("utf-8")  # a provider can send it
        assert "bad\udcff.txt" == json.loads(result["content"])["output"][2]

    async def test_events(self) -> None:
        """A run emits step_started, tool_call, tool_result and final_answer in order."""
        llm = QueueLLM([native_calls(("calc", {"x": 1})), text("answer")])
        events = _Events()

        await LeanAgent(llm, _registry()).run("m", on_event=events)

        assert [
            "step_started",
            "tool_call",
            "tool_result",
            "step_started",
            "final_answer",
        ] == events.kinds
        assert {"step": 1, "call_id": "call_0", "tool": "calc", "args": {"x": 1}} == (
            events.events[1].data
        )
        assert {"content": "answer"} == events.events[-1].data

    async def test_mission_text_never_logged(self) -> None:
        """Logs carry categories and step numbers but never the mission text."""
        llm = QueueLLM([native_calls(("calc", {"x": 1})), text("answer")])

        with capture_logs() as logs:
            await LeanAgent(llm, _registry()).run("TOP-SECRET-MISSION")

        assert "TOP-SECRET-MISSION" not in repr(logs)
        started = [e for e in logs if e["event"] == "agent.step.started"]
        assert [("agent", 1), ("agent", 2)] == [(e["category"], e["step"]) for e in started]


class TestLeanAgentFails:
    async def test_llm_failure_result(self) -> None:
        """A failed provider call fails the mission with the provider's message."""
        events = _Events()

        outcome = await LeanAgent(QueueLLM([failure("quota exceeded")]), _registry()).run(
            "m", on_event=events
        )

        assert ("failed", "") == (outcome.status, outcome.final_message)
        assert outcome.error is not None and "quota exceeded" in outcome.error
        assert ["step_started", "error"] == events.kinds
        assert "failed" == outcome.steps[0].status

    async def test_llm_exception(self) -> None:
        """An exception raised by the provider fails the mission instead of escaping."""
        outcome = await LeanAgent(QueueLLM([RuntimeError("socket closed")]), _registry()).run("m")

        assert "failed" == outcome.status
        assert outcome.error is not None and "socket closed" in outcome.error

    async def test_failing_tool_fails_the_mission(self) -> None:
        """With fail_on_tool_error a failed call ends the run; the model is not asked again."""
        llm = QueueLLM([native_calls(("broken", {})), text("never")])

        outcome = await LeanAgent(llm, _registry()).run("m")

        assert ("failed", "tool 'broken' failed: disk full", 1) == (
            outcome.status,
            outcome.error,
            outcome.tool_calls,
        )
        assert 1 == len(llm.complete_calls)
        assert (
            StepRecord(1, "LLM turn 1", "failed", ("broken",), str(outcome.error))
            == outcome.steps[0]
        )

    async def test_failing_tool_fed_back_when_allowed(self) -> None:
        """Without fail_on_tool_error the error goes back to the model and the loop goes on."""
        llm = QueueLLM([native_calls(("broken", {})), text("recovered")])

        outcome = await LeanAgent(llm, _registry(), fail_on_tool_error=False).run("m")

        assert ("completed", "recovered") == (outcome.status, outcome.final_message)
        fed_back = json.loads(llm.complete_calls[1]["messages"][-1]["content"])
        assert {"success": False, "error": "disk full", "error_type": "tool_error"} == fed_back

    @pytest.mark.parametrize(
        "arguments",
        ['{"x": ', "[" * 100_000, '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}"],
        ids=["undecodable", "past-the-recursion-limit", "an-object-past-it"],
    )
    async def test_arguments_that_do_not_decode_are_refused(self, arguments: str) -> None:
        """A JSON string of arguments that does not decode, also one nested deeper than
        Python decodes, is refused as InvalidArguments before the tool runs."""
        tool = FakeTool("calc", ok_handler)
        call: Any = {
            "success": True,
            "content": None,
            "tool_calls": [{"id": "c", "name": "calc", "arguments": arguments}],
        }

        outcome = await LeanAgent(QueueLLM([call]), FakeRegistry(tool)).run("m")

        assert ("failed", "InvalidArguments", 1, []) == (
            outcome.status,
            outcome.error_type,
            outcome.tool_calls,
            tool.calls,
        )

    async def test_unknown_tool_is_fed_back(self) -> None:
        """A call to an unknown tool is the model's mistake: fed back, the mission goes on."""
        llm = QueueLLM([native_calls(("nope", {})), text("sorry")])

        outcome = await LeanAgent(llm, _registry()).run("m")

        assert ("completed", 1) == (outcome.status, outcome.tool_calls)
        fed_back = json.loads(llm.complete_calls[1]["messages"][-1]["content"])
        assert "unknown_tool" == fed_back["error_type"]

    async def test_step_limit(self) -> None:
        """A model that never answers fails with 'step limit reached' after max_steps turns."""
        llm = QueueLLM([native_calls(("calc", {}))] * 10)

        with capture_logs() as logs:
            outcome = await LeanAgent(llm, _registry(), max_steps=3).run("m")

        assert ("failed", "step limit reached", "step_limit", 3, 3) == (
            outcome.status,
            outcome.error,
            outcome.error_type,
            len(outcome.steps),
            len(llm.complete_calls),
        )
        # logged once, as the legacy flow logs it
        assert [step_limit_line(3)] == step_limit_lines(logs)

    async def test_a_tuple_of_more_tool_calls_than_allowed_fails_before_any_runs(self) -> None:
        """Tool calls given as a tuple are held to max_tool_calls_per_turn as a list is."""
        calc = FakeTool("calc", ok_handler)
        answer: Any = native_calls(*[("calc", {"n": i}) for i in range(3)])
        answer["tool_calls"] = tuple(answer["tool_calls"])
        failed = await LeanAgent(
            QueueLLM([answer]), FakeRegistry(calc), max_tool_calls_per_turn=2
        ).run("m")
        assert ("failed", "tool_call_limit", []) == (failed.status, failed.error_type, calc.calls)

    async def test_a_turn_asking_for_more_tool_calls_than_allowed_fails_before_any_runs(
        self,
    ) -> None:
        """A turn whose model asks for more tool calls than max_tool_calls_per_turn fails
        the mission as tool_call_limit, and none of its calls runs; as many as allowed run."""
        calc = FakeTool("calc", ok_handler)
        too_many = QueueLLM([native_calls(*[("calc", {"n": i}) for i in range(3)])])
        allowed = QueueLLM([native_calls(*[("calc", {"n": i}) for i in range(2)]), text("done")])

        failed = await LeanAgent(too_many, FakeRegistry(calc), max_tool_calls_per_turn=2).run("m")
        assert ("failed", "tool_call_limit", 0, []) == (
            failed.status,
            failed.error_type,
            failed.tool_calls,
            calc.calls,
        )
        assert failed.error is not None
        assert "3 tool calls in one turn" in failed.error
        assert "agent.max_tool_calls_per_turn (2)" in failed.error

        done = await LeanAgent(allowed, FakeRegistry(calc), max_tool_calls_per_turn=2).run("m")
        assert ("completed", 2) == (done.status, len(calc.calls))

    @pytest.mark.parametrize("limit", [0, -1, True, 1.5])
    def test_a_tool_call_limit_that_is_no_positive_int_is_refused(self, limit: Any) -> None:
        """max_tool_calls_per_turn must be a positive int, as the other limits."""
        with pytest.raises(ValueError, match="max_tool_calls_per_turn"):
            LeanAgent(QueueLLM([]), _registry(), max_tool_calls_per_turn=limit)

    async def test_empty_answer(self) -> None:
        """An answer with neither text nor tool calls fails the run."""
        outcome = await LeanAgent(QueueLLM([text("  ")]), _registry()).run("m")

        assert ("failed", "empty_answer") == (outcome.status, outcome.error_type)
        assert outcome.error is not None and "neither text nor tool calls" in outcome.error

    @pytest.mark.parametrize(
        ("kwargs", "name"),
        [
            ({"max_steps": 0}, "max_steps"),
            ({"tool_timeout_seconds": 0}, "tool_timeout_seconds"),
            ({"max_result_depth": 0}, "max_result_depth"),
            # deeper than the JSON writers keep a value whole
            ({"max_result_depth": 251}, "max_result_depth must be at most 250"),
        ],
    )
    def test_bad_limits_are_refused(self, kwargs: dict[str, Any], name: str) -> None:
        """Non-positive limits, and a result depth past MAX_WRITTEN_DEPTH, raise ValueError
        naming the setting."""
        with pytest.raises(ValueError, match=name):
            LeanAgent(QueueLLM(), _registry(), **kwargs)

    @pytest.mark.parametrize(("answer", "kind"), [(None, "NoneType"), ("text", "str")])
    async def test_a_turn_that_returns_no_result(self, answer: Any, kind: str) -> None:
        """A ``complete`` that returns no dict fails the call as invalid_response, saying
        what it returned, as a stream's chunk that is no dict is said."""
        outcome = await LeanAgent(QueueLLM([answer]), _registry()).run("hi")

        error = f"LLM call failed: the provider returned a {kind}, not a result"
        assert ("failed", error, "invalid_response") == (
            outcome.status,
            outcome.error,
            outcome.error_type,
        )


class _StreamingLLM:
    """Streams scripted turns: text deltas, then a done chunk with tool calls; or raises."""

    def __init__(self, turns: list[Any]) -> None:
        self._turns = list(turns)
        self.completes = 0
        self.streams: list[dict[str, Any]] = []
        self.closed = 0

    async def complete(
        self,
        messages: Any,
        model: Any = None,
        tools: Any = None,
        tool_choice: Any = None,
        **kw: Any,
    ) -> Any:
        self.completes += 1
        return {"success": True, "content": "from complete", "tool_calls": []}

    async def generate(
        self, prompt: Any, context: Any = None, model: Any = None, **kwargs: Any
    ) -> Any:
        raise AssertionError("the lean flow never plans")

    async def stream(
        self,
        messages: Any,
        model: Any = None,
        tools: Any = None,
        tool_choice: Any = None,
        **kw: Any,
    ) -> Any:
        self.streams.append({"tools": tools, "tool_choice": tool_choice, **kw})
        turn = self._turns.pop(0)
        try:
            if isinstance(turn, Exception):
                raise turn
            deltas, calls = turn
            for delta in deltas:
                yield {"content": delta}
            yield {"done": True, "tool_calls": calls, "model": "m", "usage": {"prompt_tokens": 1}}
        finally:
            self.closed += 1


class _ChunkStream(_StreamingLLM):
    """Streams the given chunks as they are, whatever they are."""

    def __init__(self, chunks: list[Any]) -> None:
        super().__init__([])
        self._chunks = chunks

    async def stream(self, *args: Any, **kwargs: Any) -> Any:
        try:
            for chunk in self._chunks:
                yield chunk
        finally:
            self.closed += 1


class _Chunk(dict[str, Any]):
    """A chunk of the provider's own dict class."""


class TestLeanAgentStreams:
    async def test_turns_stream_as_token_events(self) -> None:
        """With stream_llm, each turn streams: tokens as events, tool calls from the last chunk."""
        calls = [{"id": "c1", "name": "calc", "arguments": {"x": 1}}]
        llm = _StreamingLLM([(["Let me ", "add."], calls), (["The sum ", "is 1"], [])])
        events = _Events()

        outcome = await LeanAgent(llm, _registry(), stream_llm=True).run("add", on_event=events)

        assert ("completed", "The sum is 1") == (outcome.status, outcome.final_message)
        tokens = [(e.data["step"], e.data["content"]) for e in events.events if e.kind == "token"]
        assert [(1, "Let me "), (1, "add."), (2, "The sum "), (2, "is 1")] == tokens
        assert 0 == llm.completes
        assert ["calc", "broken"] == [t["function"]["name"] for t in llm.streams[0]["tools"]]
        assert 2 == llm.closed

    async def test_without_stream_llm_complete_is_used(self) -> None:
        """By default the lean flow calls complete even when the provider can stream."""
        llm = _StreamingLLM([])

        outcome = await LeanAgent(llm, _registry()).run("hi")

        assert ("from complete", 1, []) == (outcome.final_message, llm.completes, llm.streams)

    async def test_provider_without_stream_falls_back(self) -> None:
        """stream_llm with a provider that cannot stream calls complete."""
        llm = QueueLLM([text("plain")])

        outcome = await LeanAgent(llm, _registry(), stream_llm=True).run("hi")

        assert "plain" == outcome.final_message

    async def test_stream_failure_logs_its_error_type(self) -> None:
        """A stream that raises fails the mission; llm.call.failed carries its error type."""
        llm = _StreamingLLM([LLMProviderError("429", error_type="rate_limit")])

        with capture_logs() as logs:
            outcome = await LeanAgent(llm, _registry(), stream_llm=True).run("hi")

        assert "failed" == outcome.status
        failed = [e for e in logs if e["event"] == "llm.call.failed"]
        assert ["rate_limit"] == [e["error_type"] for e in failed]

    async def test_stream_failure_reads_like_a_returned_one(self) -> None:
        """A provider error raised by a stream is quoted as is, without its class name."""
        llm = _StreamingLLM([LLMProviderError("gave up", provider="p", error_type="auth")])

        outcome = await LeanAgent(llm, _registry(), stream_llm=True).run("hi")

        assert "LLM call failed: p: gave up" == outcome.error

    async def test_only_text_deltas_are_streamed(self) -> None:
        """An attempt report, empty or false content and the last chunk's text are no
        tokens; a dict subclass's text is."""
        report = {"attempts": [{"error_type": "rate_limit", "duration_seconds": 0.1}]}
        done = {"done": True, "content": "late", "tool_calls": []}
        llm = _ChunkStream([report, _Chunk(content="hel"), {"content": ""}, {"content": 0}, done])
        events = _Events()

        outcome = await LeanAgent(llm, _registry(), stream_llm=True).run("hi", on_event=events)

        assert ("completed", "hel") == (outcome.status, outcome.final_message)
        assert ["hel"] == [e.data["content"] for e in events.events if e.kind == "token"]

    @pytest.mark.parametrize(
        ("chunk", "why"),
        [
            ({"content": 5}, "a int as text, not a string"),
            (None, "a NoneType, not a chunk"),
            (RaisingGet(done=True), "a chunk that cannot be read (RuntimeError)"),
        ],
        ids=["text-no-string", "no-dict", "get-raises"],
    )
    async def test_an_unusable_chunk_fails_the_call(self, chunk: Any, why: str) -> None:
        """The call fails at the chunk, as an invalid_response saying why; the stream closes."""
        llm = _ChunkStream([{"content": "hel"}, chunk, {"done": True, "tool_calls": []}])
        events = _Events()

        outcome = await LeanAgent(llm, _registry(), stream_llm=True).run("hi", on_event=events)

        expected = ("failed", f"LLM call failed: the provider streamed {why}", "invalid_response")
        assert expected == (outcome.status, outcome.error, outcome.error_type)
        assert ["hel"] == [e.data["content"] for e in events.events if e.kind == "token"]
        assert 1 == llm.closed


class TestLlmFailureLog:
    @pytest.mark.parametrize(
        ("result", "error_type"),
        [
            ({"success": False, "error": "x", "error_type": "auth"}, "auth"),
            ({"success": False, "error": "x", "error_type": "RateLimitError"}, "other"),
            ({"success": False, "error": "x"}, "other"),
        ],
    )
    async def test_failed_result_logs_error_type(self, result: Any, error_type: str) -> None:
        """llm.call.failed carries the result's error type, or ``other`` if it is not one."""
        with capture_logs() as logs:
            await LeanAgent(QueueLLM([result]), _registry()).run("hi")

        failed = [e for e in logs if e["event"] == "llm.call.failed"]
        assert [error_type] == [e["error_type"] for e in failed]
