"""The scripted provider follows the directive conventions of CONTRACT.md in every mode."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import tracemalloc
from collections.abc import Mapping
from typing import Any

import pytest

from taskforce.core.domain.prompts import (
    FINAL_STEP_DESCRIPTION,
    MISSION_PREFIX,
    OBSERVATION_PREFIX,
    PLAN_PROMPT,
)
from taskforce.core.interfaces import LLMProviderProtocol, StreamingLLMProviderProtocol
from taskforce.core.interfaces.jsonable import MAX_WRITTEN_DEPTH
from taskforce.errors import LLMProviderError
from taskforce.infrastructure.llm import (
    ScriptedDirectiveError,
    ScriptedLLMError,
    ScriptedLLMProvider,
)
from taskforce.infrastructure.llm._directives import parse_script
from tests.support.tracing import traced

_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate arithmetic.",
            "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
        },
    }
]
_TWO_TOOLS = 'Add things\ntool:calculator {"expression": "2+2"}\n  tool:list_dir  \nthen report'


@pytest.fixture(name="provider")
def fixture_provider() -> ScriptedLLMProvider:
    return ScriptedLLMProvider()


def _mission(text: str) -> list[Any]:
    return [
        {"role": "system", "content": "You are a test."},
        {"role": "user", "content": MISSION_PREFIX + text},
    ]


def _tool_result(call_id: str, output: Any) -> Any:
    return {
        "role": "tool",
        "tool_call_id": call_id,
        "content": json.dumps({"success": True, "output": output}),
    }


def _observation(payload: Any) -> Any:
    return {"role": "user", "content": OBSERVATION_PREFIX + json.dumps(payload)}


def _tokens(chars: int) -> int:
    return max(1, math.ceil(chars / 4))


class TestProtocol:
    def test_satisfies_streaming_protocol(self, provider: ScriptedLLMProvider) -> None:
        """The provider is both an LLM provider and a streaming one."""
        assert isinstance(provider, LLMProviderProtocol)
        assert isinstance(provider, StreamingLLMProviderProtocol)

    @pytest.mark.parametrize(("model", "latency"), [("", 0.0), ("m", -1.0), ("m", math.inf)])
    def test_rejects_bad_arguments(self, model: str, latency: float) -> None:
        """An empty model or a negative or infinite latency fails at construction."""
        with pytest.raises(ValueError, match=r"model|latency_ms"):
            ScriptedLLMProvider(model=model, latency_ms=latency)


class TestNativeMode:
    async def test_first_turn_calls_first_tool(self, provider: ScriptedLLMProvider) -> None:
        """With tools, the first directive comes back as a native tool call without content."""
        result = await provider.complete(_mission(_TWO_TOOLS), tools=_TOOLS)

        assert True is result["success"]
        assert None is result["content"]
        expected = [{"id": "call_0", "name": "calculator", "arguments": {"expression": "2+2"}}]
        assert expected == result["tool_calls"]

    async def test_tool_results_advance_the_script(self, provider: ScriptedLLMProvider) -> None:
        """Each tool message moves to the next directive; a bare ``tool:NAME`` has no args."""
        messages = [*_mission(_TWO_TOOLS), _tool_result("call_0", 4)]

        result = await provider.complete(messages, tools=_TOOLS)

        assert [{"id": "call_1", "name": "list_dir", "arguments": {}}] == result["tool_calls"]

    async def test_final_answer_summarises_last_result(self, provider: ScriptedLLMProvider) -> None:
        """Once every tool ran, the answer counts the calls and quotes the last output."""
        messages = [
            *_mission(_TWO_TOOLS),
            _tool_result("call_0", 4),
            _tool_result("call_1", ["a.txt", "b.txt"]),
        ]

        result = await provider.complete(messages, tools=_TOOLS)

        expected = 'Completed 2 tool call(s). Last result: ["a.txt", "b.txt"]'
        assert expected == result["content"]
        assert [] == result["tool_calls"]

    async def test_any_whitespace_separates_name_and_arguments(
        self, provider: ScriptedLLMProvider
    ) -> None:
        """A tab between a tool's name and its JSON arguments separates them like a space."""
        mission = 'tool:calculator\t{"expression": "2+2"}'

        result = await provider.complete(_mission(mission), tools=_TOOLS)

        expected = [{"id": "call_0", "name": "calculator", "arguments": {"expression": "2+2"}}]
        assert expected == result["tool_calls"]

    @pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85"])
    async def test_a_unicode_line_separator_is_text(
        self, provider: ScriptedLLMProvider, char: str
    ) -> None:
        """A Unicode line separator, which JSON takes raw in a string, ends no line."""
        mission = f'tool:file_write {{"path": "a.txt", "content": "one{char}two"}}'

        result = await provider.complete(_mission(mission), tools=_TOOLS)

        assert {"path": "a.txt", "content": f"one{char}two"} == result["tool_calls"][0]["arguments"]

    @pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
    async def test_lines_end_at_lf_crlf_or_cr(
        self, provider: ScriptedLLMProvider, newline: str
    ) -> None:
        """Lines end at LF, CRLF or CR (nothing else), and a bad one is named by that count."""
        mission = newline.join(["say\u2028hi", 'tool:calculator {"expression": "1"}', "llm:fail x"])

        result = await provider.complete(_mission(mission), tools=_TOOLS)

        assert str(result["error"]).startswith("line 3 of the mission, 'llm:fail x'")

    async def test_a_byte_order_mark_before_a_directive_is_dropped(
        self, provider: ScriptedLLMProvider
    ) -> None:
        """A mission from a file saved with a byte order mark still starts with its directive."""
        mission = '\ufefftool:calculator {"expression": "2+2"}\nsay done'

        result = await provider.complete(_mission(mission), tools=_TOOLS)
        planned = await provider.generate(PLAN_PROMPT + MISSION_PREFIX + mission)

        assert ["calculator"] == [call["name"] for call in result["tool_calls"]]
        assert 2 == len(json.loads(str(planned["content"]))["steps"])

    async def test_plain_mission_is_echoed(self, provider: ScriptedLLMProvider) -> None:
        """A mission without directives is answered directly with its text."""
        result = await provider.complete(_mission("  Say hello\n\nto the team "), tools=_TOOLS)

        assert "Scripted answer: Say hello to the team" == result["content"]
        assert [] == result["tool_calls"]

    async def test_empty_mission_has_an_answer(self, provider: ScriptedLLMProvider) -> None:
        """A conversation without a user message still gets a text answer."""
        result = await provider.complete([{"role": "system", "content": "x"}], tools=_TOOLS)

        assert "Scripted answer: (no mission text)" == result["content"]

    async def test_llm_error_first_fails(self, provider: ScriptedLLMProvider) -> None:
        """``llm:error`` as the next directive returns the documented failure result."""
        result = await provider.complete(_mission("llm:error\ntool:calculator {}"), tools=_TOOLS)

        assert {
            "success": False,
            "error": "scripted llm:error directive",
            "error_type": "bad_request",
            "model": "scripted-1",
        } == {k: v for k, v in result.items() if k not in ("usage", "attempts")}
        assert ["bad_request"] == [a.error_type for a in result["attempts"]]

    async def test_llm_error_after_a_tool(self, provider: ScriptedLLMProvider) -> None:
        """The first turn calls the tool; the turn after its result fails."""
        messages = _mission("tool:calculator {}\nllm:error")

        first = await provider.complete(messages, tools=_TOOLS)
        second = await provider.complete([*messages, _tool_result("call_0", 1)], tools=_TOOLS)

        assert True is first["success"]
        assert "bad_request" == second["error_type"]

    async def test_tool_choice_none_forbids_calls(self, provider: ScriptedLLMProvider) -> None:
        """``tool_choice="none"`` gets the final answer even when a tool is next."""
        result = await provider.complete(_mission(_TWO_TOOLS), tools=_TOOLS, tool_choice="none")

        assert [] == result["tool_calls"]
        assert "Scripted answer: Add things then report" == result["content"]

    async def test_error_result_is_quoted(self, provider: ScriptedLLMProvider) -> None:
        """A failed tool result is quoted by its error."""
        failed = {"role": "tool", "tool_call_id": "call_0", "content": '{"error": "boom"}'}
        messages = [*_mission("tool:calculator {}"), failed]

        result = await provider.complete(messages, tools=_TOOLS)

        assert "Completed 1 tool call(s). Last result: error: boom" == result["content"]

    async def test_raw_result_is_truncated(self, provider: ScriptedLLMProvider) -> None:
        """A non-JSON tool result is quoted raw, cut to 200 characters."""
        raw = {"role": "tool", "tool_call_id": "call_0", "content": "x" * 500}
        messages = [*_mission("tool:calculator {}"), raw]

        result = await provider.complete(messages, tools=_TOOLS)

        content = result["content"]
        assert content is not None
        assert "x" * 197 + "..." == content.split("Last result: ", 1)[1]


class TestDirectiveErrors:
    @pytest.mark.parametrize(
        ("line", "reason"),
        [
            ("tool:calculator {not json", "not JSON"),
            ('tool:calculator {"a": ' + "1" * 5000 + "}", "cannot be read (a number too long)"),
            (
                "tool:calculator " + "[" * 50_000 + "]" * 50_000,
                "cannot be read (nested too deeply)",
            ),
            # past what the JSON writers keep, on every Python (3.13 reads 2,000, 3.11 not)
            *(
                (
                    "tool:calculator " + '{"a": ' * levels + "1" + "}" * levels,
                    "cannot be read (nested too deeply)",
                )
                for levels in (MAX_WRITTEN_DEPTH + 1, 2_000)
            ),
            ('tool:calculator ["a"]', "must be a JSON object"),
            ("tool:", "names no tool"),
        ],
    )
    async def test_bad_tool_line_fails_naming_line(
        self, provider: ScriptedLLMProvider, line: str, reason: str
    ) -> None:
        """A malformed ``tool:`` line fails the call with its line number and the reason."""
        result = await provider.complete(_mission(f"first line\n{line}"), tools=_TOOLS)

        assert False is result["success"]
        assert "bad_request" == result["error_type"]
        assert "line 2" in result["error"]
        assert reason in result["error"]

    @pytest.mark.parametrize(
        "line",
        [
            "tool:calculator " + "[" * 50_000 + "]" * 50_000,
            "tool:calculator {" + "x" * 100_000,
            "llm:fail " + "x" * 100_000,
            "llm:delay " + "9" * 100_000,
        ],
        ids=["nested", "not-json", "fail", "delay"],
    )
    async def test_a_long_bad_line_is_quoted_by_its_start(
        self, provider: ScriptedLLMProvider, line: str
    ) -> None:
        """The error quotes a malformed line's first 80 characters and counts the rest."""
        result = await provider.complete(_mission(line), tools=_TOOLS)

        quoted = f"{line[:80]!r}...[+{len(line) - 80} chars]"
        assert str(result["error"]).startswith(f"line 1 of the mission, {quoted}: ")
        assert len(str(result["error"])) < 300

    async def test_bad_tool_line_raises_in_stream(self, provider: ScriptedLLMProvider) -> None:
        """Streaming a malformed script raises, as streams do."""
        with pytest.raises(ScriptedDirectiveError, match="line 1"):
            async for _ in provider.stream(_mission("tool:calculator 42")):
                pass


class TestJsonMode:
    async def test_tool_call_action(self, provider: ScriptedLLMProvider) -> None:
        """Without tools the next tool directive comes back as a JSON tool_call action."""
        result = await provider.complete(_mission(_TWO_TOOLS))

        expected = {"action": "tool_call", "tool": "calculator", "args": {"expression": "2+2"}}
        assert expected == json.loads(result["content"] or "")
        assert [] == result["tool_calls"]

    async def test_observation_finishes_the_step(self, provider: ScriptedLLMProvider) -> None:
        """After an observation the step is finished with a summary of the result."""
        messages = [*_mission(_TWO_TOOLS), _observation({"success": True, "output": 4})]

        result = await provider.complete(messages)

        expected = {"action": "finish", "answer": "Step complete. Result: 4"}
        assert expected == json.loads(result["content"] or "")

    async def test_next_step_calls_next_tool(self, provider: ScriptedLLMProvider) -> None:
        """A new step message after an observation moves on to the next tool."""
        messages = [
            *_mission(_TWO_TOOLS),
            _observation({"success": True, "output": 4}),
            {"role": "assistant", "content": '{"action": "finish", "answer": "ok"}'},
            {"role": "user", "content": "Step 2/3: Call tool list_dir with {}"},
        ]

        result = await provider.complete(messages)

        expected = {"action": "tool_call", "tool": "list_dir", "args": {}}
        assert expected == json.loads(result["content"] or "")

    async def test_final_step_finishes_mission(self, provider: ScriptedLLMProvider) -> None:
        """With every tool used, the last step finishes with the final answer."""
        messages = [
            *_mission("tool:calculator {}"),
            _observation({"success": True, "output": 7}),
            {"role": "user", "content": f"Step 2/2: {FINAL_STEP_DESCRIPTION}"},
        ]

        result = await provider.complete(messages)

        expected = {"action": "finish", "answer": "Completed 1 tool call(s). Last result: 7"}
        assert expected == json.loads(result["content"] or "")

    async def test_llm_error_fails(self, provider: ScriptedLLMProvider) -> None:
        """``llm:error`` fails the JSON flow too."""
        result = await provider.complete(_mission("llm:error"))

        assert "bad_request" == result["error_type"]


class TestGenerate:
    async def test_plan_has_one_step_per_tool(self, provider: ScriptedLLMProvider) -> None:
        """The plan lists each tool directive in order, then the final step."""
        result = await provider.generate(PLAN_PROMPT + MISSION_PREFIX + _TWO_TOOLS)

        expected = [
            'Call tool calculator with {"expression": "2+2"}',
            "Call tool list_dir with {}",
            FINAL_STEP_DESCRIPTION,
        ]
        assert expected == json.loads(result["content"] or "")["steps"]
        assert "tool_calls" not in result

    async def test_plan_without_tools(self, provider: ScriptedLLMProvider) -> None:
        """A mission without tool directives is a one-step plan."""
        result = await provider.generate("Mission:\njust answer")

        assert {"steps": [FINAL_STEP_DESCRIPTION]} == json.loads(result["content"] or "")

    async def test_leading_llm_error_fails(self, provider: ScriptedLLMProvider) -> None:
        """Planning fails when the script starts with ``llm:error``."""
        result = await provider.generate("llm:error\ntool:calculator {}")

        assert "bad_request" == result["error_type"]

    async def test_later_llm_error_still_plans(self, provider: ScriptedLLMProvider) -> None:
        """An ``llm:error`` after a tool does not affect planning."""
        result = await provider.generate("tool:calculator {}\nllm:error")

        assert True is result["success"]

    async def test_bad_directive_fails(self, provider: ScriptedLLMProvider) -> None:
        """A malformed directive fails the plan with its line number."""
        result = await provider.generate("ok\nok\ntool:x [1]")

        assert "bad_request" == result["error_type"]
        assert "line 3" in result["error"]


class TestUsageAndModel:
    async def test_usage_counts_messages_and_tools(self, provider: ScriptedLLMProvider) -> None:
        """Prompt tokens count message text plus tool schemas, completion the tool call JSON."""
        messages = _mission("tool:calculator {}")

        result = await provider.complete(messages, tools=_TOOLS)

        sent = sum(len(m["content"]) for m in messages) + len(json.dumps(_TOOLS))
        answer = len(json.dumps(result["tool_calls"]))
        expected = {
            "prompt_tokens": _tokens(sent),
            "completion_tokens": _tokens(answer),
            "total_tokens": _tokens(sent) + _tokens(answer),
        }
        assert expected == result["usage"]

    async def test_usage_of_text_answer(self, provider: ScriptedLLMProvider) -> None:
        """Completion tokens of a text answer are estimated from its length."""
        result = await provider.complete(_mission("hi"))

        assert _tokens(len(result["content"] or "")) == result["usage"]["completion_tokens"]

    async def test_usage_is_at_least_one(self, provider: ScriptedLLMProvider) -> None:
        """An empty prompt still counts one token each way."""
        result = await provider.complete([], tools=None)

        assert 1 == result["usage"]["prompt_tokens"]

    async def test_model_defaults_and_overrides(self) -> None:
        """``model`` is the call's model when given, else the provider's."""
        provider = ScriptedLLMProvider(model="demo-7")

        default = await provider.complete(_mission("hi"))
        asked = await provider.generate("hi", model="other")

        assert ("demo-7", "other") == (default["model"], asked["model"])


class TestLatency:
    async def test_each_call_waits(self) -> None:
        """With latency_ms every call takes at least that long."""
        provider = ScriptedLLMProvider(latency_ms=20)

        start = time.perf_counter()
        await provider.complete(_mission("hi"))
        await provider.generate("hi")
        elapsed = time.perf_counter() - start

        assert elapsed >= 0.04

    async def test_stream_waits_before_first_chunk(self) -> None:
        """The stream's latency comes before its first chunk."""
        provider = ScriptedLLMProvider(latency_ms=20)
        stream = provider.stream(_mission("hi"))

        start = time.perf_counter()
        async with contextlib.aclosing(stream):
            await anext(stream)
        assert time.perf_counter() - start >= 0.02

    async def test_fifty_concurrent_missions(self) -> None:
        """One instance answers 50 concurrent conversations, each by its own script."""
        provider = ScriptedLLMProvider(latency_ms=50)
        missions = [_mission(f'tool:calculator {{"expression": "{i}+1"}}') for i in range(50)]

        start = time.perf_counter()
        results = await asyncio.gather(*(provider.complete(m, tools=_TOOLS) for m in missions))
        elapsed = time.perf_counter() - start

        expected = [{"expression": f"{i}+1"} for i in range(50)]
        assert expected == [r["tool_calls"][0]["arguments"] for r in results]
        assert elapsed < 1.0  # sequential would take 2.5 s


class TestStream:
    async def test_words_then_done(self, provider: ScriptedLLMProvider) -> None:
        """The answer streams word by word; the last chunk carries usage and model."""
        messages = _mission("Say hello")

        chunks = [chunk async for chunk in provider.stream(messages, model="m-1")]

        assert ["Scripted ", "answer: ", "Say ", "hello"] == [c["content"] for c in chunks[:-1]]
        text = "Scripted answer: Say hello"
        sent = sum(len(m["content"]) for m in messages)
        expected_usage = {
            "prompt_tokens": _tokens(sent),
            "completion_tokens": _tokens(len(text)),
            "total_tokens": _tokens(sent) + _tokens(len(text)),
        }
        done = {k: v for k, v in chunks[-1].items() if k != "attempts"}
        assert {"done": True, "usage": expected_usage, "model": "m-1"} == done
        assert [None] == [a.error_type for a in chunks[-1]["attempts"]]

    @pytest.mark.parametrize("output", ["", "ends with a space ", "two  spaces", " leads"])
    async def test_no_delta_is_empty(self, provider: ScriptedLLMProvider, output: str) -> None:
        """Every text delta holds text (an empty file read ends the answer with a space),
        as the OpenAI-compatible provider's do; together they are ``complete``'s answer."""
        messages = [*_mission("tool:file_read {}"), _tool_result("call_0", output)]

        chunks = [c async for c in provider.stream(messages)]
        answer = await provider.complete(messages, tools=_TOOLS)

        deltas = [c["content"] for c in chunks if "content" in c]
        assert [] == [delta for delta in deltas if not delta]
        assert answer["content"] == "".join(deltas)

    async def test_next_tool_is_announced(self, provider: ScriptedLLMProvider) -> None:
        """When a tool is next, the streamed text names it and its arguments."""
        chunks = [c async for c in provider.stream(_mission('tool:calculator {"a": 1}'))]

        text = "".join(c.get("content", "") for c in chunks)
        assert 'I would call tool calculator with {"a": 1}.' == text

    async def test_llm_error_raises(self, provider: ScriptedLLMProvider) -> None:
        """``llm:error`` raises an LLMProviderError from the iterator."""
        stream = provider.stream(_mission("llm:error"))

        with pytest.raises(LLMProviderError, match="scripted llm:error directive") as info:
            await anext(stream)
        assert isinstance(info.value, ScriptedLLMError)

    async def test_early_close(self, provider: ScriptedLLMProvider) -> None:
        """A caller may close the stream after the first chunk; it then ends."""
        stream = provider.stream(_mission("one two three four"))

        first = await anext(stream)
        await stream.aclose()

        assert {"content": "Scripted "} == first
        with pytest.raises(StopAsyncIteration):
            await anext(stream)


class TestFailDirective:
    """``llm:fail TYPE [N]`` fails attempts, retried as the OpenAI-compatible provider would."""

    async def test_a_call_lists_no_more_failures_than_it_makes_attempts(
        self, provider: ScriptedLLMProvider
    ) -> None:
        """A mission of ``llm:fail TYPE 100`` lines costs a call no more memory than one
        of ``llm:fail TYPE 1`` lines: a call makes at most ``max_retries + 1`` attempts."""
        lines = 4000

        async def peak(count: int) -> tuple[str, int]:
            mission = _mission(f"llm:fail rate_limit {count}\n" * lines)
            with traced():
                tracemalloc.reset_peak()
                before = tracemalloc.get_traced_memory()[0]
                result = await provider.complete(mission)
                return str(result["error_type"]), tracemalloc.get_traced_memory()[1] - before

        (many, many_peak), (one, one_peak) = await peak(100), await peak(1)
        assert ("rate_limit", "rate_limit") == (many, one)
        assert many_peak < 2 * one_peak

    async def test_rate_limit_then_success(self, provider: ScriptedLLMProvider) -> None:
        """One rate-limited attempt, then the answer: like a 429 then a 200."""
        result = await provider.complete(_mission("llm:fail rate_limit\nhello"), tools=_TOOLS)

        assert True is result["success"]
        assert ["rate_limit", None] == [a.error_type for a in result["attempts"]]

    async def test_server_error_three_times_fails(self, provider: ScriptedLLMProvider) -> None:
        """Three server errors with max_retries=2: three attempts, then a server_error failure."""
        result = await provider.complete(_mission("llm:fail server_error 3"), tools=_TOOLS)

        assert (False, "server_error") == (result["success"], result["error_type"])
        assert ["server_error"] * 3 == [a.error_type for a in result["attempts"]]

    async def test_auth_is_not_retried(self, provider: ScriptedLLMProvider) -> None:
        """An auth failure ends the call after one attempt, however many retries are left."""
        result = await provider.complete(_mission("llm:fail auth 5"), tools=_TOOLS)

        assert "auth" == result["error_type"]
        assert ["auth"] == [a.error_type for a in result["attempts"]]

    async def test_a_tab_separates_like_a_space(self, provider: ScriptedLLMProvider) -> None:
        """``llm:fail`` followed by a tab is the directive, not plain text."""
        result = await provider.complete(_mission("llm:fail\tauth"), tools=_TOOLS)

        assert (False, "auth") == (result["success"], result["error_type"])

    async def test_max_retries_is_honoured(self) -> None:
        """With max_retries=0 a single timeout already fails the call."""
        provider = ScriptedLLMProvider(max_retries=0)

        result = await provider.complete(_mission("llm:fail timeout"), tools=_TOOLS)

        assert ["timeout"] == [a.error_type for a in result["attempts"]]

    async def test_mixed_failures_in_order(self, provider: ScriptedLLMProvider) -> None:
        """Several llm:fail lines fail the attempts in the order written."""
        mission = "llm:fail connection\nllm:fail rate_limit\nhi"

        result = await provider.complete(_mission(mission), tools=_TOOLS)

        expected = ["connection", "rate_limit", None]
        assert expected == [a.error_type for a in result["attempts"]]

    async def test_applies_to_the_call_at_its_place(self, provider: ScriptedLLMProvider) -> None:
        """A fail line after a tool shapes the turn after that tool's result, not the first."""
        messages = _mission("tool:calculator {}\nllm:fail auth")

        first = await provider.complete(messages, tools=_TOOLS)
        second = await provider.complete([*messages, _tool_result("call_0", 1)], tools=_TOOLS)

        assert (True, "calculator") == (first["success"], first["tool_calls"][0]["name"])
        assert "auth" == second["error_type"]

    async def test_does_not_hide_the_next_tool(self, provider: ScriptedLLMProvider) -> None:
        """After a retried attempt the call still answers with the tool that comes next."""
        result = await provider.complete(
            _mission("llm:fail rate_limit\ntool:calculator {}"), tools=_TOOLS
        )

        assert "calculator" == result["tool_calls"][0]["name"]

    async def test_generate_reports_attempts(self, provider: ScriptedLLMProvider) -> None:
        """The planner call at the start of the script is shaped the same way."""
        result = await provider.generate("llm:fail server_error\ntool:calculator {}")

        assert ["server_error", None] == [a.error_type for a in result["attempts"]]

    async def test_stream_raises_with_attempts(self, provider: ScriptedLLMProvider) -> None:
        """A stream whose attempts are used up raises with the type and the attempts."""
        with pytest.raises(LLMProviderError) as info:
            async for _ in provider.stream(_mission("llm:fail server_error 3")):
                pass

        assert "server_error" == info.value.error_type
        assert ["server_error"] * 3 == [a.error_type for a in info.value.attempts]

    async def test_stream_retried_before_first_chunk(self, provider: ScriptedLLMProvider) -> None:
        """A stream retried once reports both attempts on its last chunk."""
        chunks = [c async for c in provider.stream(_mission("llm:fail rate_limit\nhi"))]

        assert ["rate_limit", None] == [a.error_type for a in chunks[-1]["attempts"]]

    async def test_llm_error_reports_one_bad_request(self, provider: ScriptedLLMProvider) -> None:
        """llm:error is one bad_request attempt, on results and raised errors alike."""
        result = await provider.complete(_mission("llm:error"), tools=_TOOLS)
        with pytest.raises(ScriptedLLMError) as info:
            async for _ in provider.stream(_mission("llm:error")):
                pass

        assert ["bad_request"] == [a.error_type for a in result["attempts"]]
        assert ["bad_request"] == [a.error_type for a in info.value.attempts]
        assert "bad_request" == info.value.error_type

    @pytest.mark.parametrize(
        "mission", ["llm:error", "llm:fail server_error 3", "hi\nllm:fail nosuch"]
    )
    async def test_a_failed_call_reports_no_usage(
        self, provider: ScriptedLLMProvider, mission: str
    ) -> None:
        """A failed result and a stream's error report no usage, as an endpoint that
        answers an error status reports none (a drill bills nothing the provider would not)."""
        result = await provider.complete(_mission(mission))
        planned = await provider.generate(PLAN_PROMPT + MISSION_PREFIX + mission)
        with pytest.raises(LLMProviderError) as info:
            async for _ in provider.stream(_mission(mission)):
                pass

        assert (False, False) == (result["success"], planned["success"])
        assert (None, None, None) == (result.get("usage"), planned.get("usage"), info.value.usage)

    @pytest.mark.parametrize(
        "line",
        [
            "llm:fail",
            "llm:fail nosuch",
            "llm:fail auth 0",
            "llm:fail auth x",
            "llm:fail a 1 2",
            "llm:fail auth \u00b2",  # a digit to str.isdigit, no number to int()
            "llm:fail auth " + "9" * 5000,  # more digits than int() reads
        ],
        ids=["no-type", "unknown", "zero", "letter", "three-words", "superscript", "5000-digits"],
    )
    async def test_malformed_fail_line(self, provider: ScriptedLLMProvider, line: str) -> None:
        """A malformed llm:fail line fails the call as bad_request, naming the line."""
        result = await provider.complete(_mission(f"hi\n{line}"), tools=_TOOLS)

        assert ("bad_request", True) == (result["error_type"], "line 2" in result["error"])


class TestDelays:
    async def test_delay_directive_holds_the_call(self, provider: ScriptedLLMProvider) -> None:
        """``llm:delay MS`` makes the call at its place wait before answering."""
        start = time.perf_counter()
        result = await provider.complete(_mission("llm:delay 50\nhi"), tools=_TOOLS)

        assert True is result["success"]
        assert time.perf_counter() - start >= 0.05

    @pytest.mark.parametrize("line", ["llm:delay", "llm:delay -1", "llm:delay nan", "llm:delay x"])
    async def test_malformed_delay_line(self, provider: ScriptedLLMProvider, line: str) -> None:
        """A malformed llm:delay line fails the call as bad_request."""
        result = await provider.complete(_mission(line), tools=_TOOLS)

        assert "bad_request" == result["error_type"]

    async def test_first_chunk_delay(self) -> None:
        """first_chunk_delay_ms holds back the first chunk of a stream."""
        provider = ScriptedLLMProvider(first_chunk_delay_ms=50)
        start = time.perf_counter()

        stream = provider.stream(_mission("hi"))
        async with contextlib.aclosing(stream):
            await anext(stream)

        assert time.perf_counter() - start >= 0.05

    async def test_a_retried_stream_reports_its_attempts_before_the_delay(self) -> None:
        """After a retry, the attempt report comes first, before the first-chunk delay."""
        provider = ScriptedLLMProvider(first_chunk_delay_ms=60_000)
        stream = provider.stream(_mission("llm:fail rate_limit\nhi"))
        async with contextlib.aclosing(stream):
            report = await anext(stream)  # would wait a minute if it came after the delay

        assert ["attempts"] == list(report)
        assert ["rate_limit", None] == [attempt.error_type for attempt in report["attempts"]]

    async def test_chunk_delay_between_chunks(self) -> None:
        """chunk_delay_ms separates the chunks after the first."""
        provider = ScriptedLLMProvider(chunk_delay_ms=10)
        start = time.perf_counter()

        chunks = [c async for c in provider.stream(_mission("a b c"))]

        # "Scripted answer: a b c" is five words and a done chunk: five gaps after the first.
        assert 6 == len(chunks)
        assert time.perf_counter() - start >= 5 * 0.01

    @pytest.mark.parametrize("kwargs", [{"first_chunk_delay_ms": -1}, {"chunk_delay_ms": math.inf}])
    def test_rejects_bad_delays(self, kwargs: dict[str, float]) -> None:
        """Negative or infinite delays are refused, naming the argument."""
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            ScriptedLLMProvider(**kwargs)  # type: ignore[arg-type]


class TestDocumentedRules:
    """The rules of the operator guide's "Drills without a provider", one test each."""

    @pytest.mark.parametrize(
        "mission",
        [
            'please tool:calculator {"expression": "1"}',
            "so llm:error",
            "now llm:fail auth",
            "llm:error with words after it",
        ],
    )
    async def test_a_directive_mid_line_is_plain_text(
        self, provider: ScriptedLLMProvider, mission: str
    ) -> None:
        """A directive counts at the start of its line only; mid-line it is plain text, as
        ``llm:error`` with words after it is."""
        result = await provider.complete(_mission(mission), tools=_TOOLS)

        assert (f"Scripted answer: {mission}", []) == (result["content"], result["tool_calls"])

    async def test_spaces_and_tabs_before_a_directive(self, provider: ScriptedLLMProvider) -> None:
        """Spaces and tabs before a directive leave it a directive."""
        result = await provider.complete(_mission(" \t llm:fail auth\nhi"), tools=_TOOLS)

        assert "auth" == result["error_type"]

    @pytest.mark.parametrize(("count", "ok"), [("100", True), ("101", False)])
    async def test_fail_count_is_1_to_100(
        self, provider: ScriptedLLMProvider, count: str, ok: bool
    ) -> None:
        """``llm:fail TYPE N`` takes N up to 100; more is a malformed line."""
        result = await provider.complete(_mission(f"llm:fail auth {count}"), tools=_TOOLS)

        assert ("auth" if ok else "bad_request") == result["error_type"]
        assert ok is ("line 1" not in result["error"])

    @pytest.mark.parametrize(("delay", "ok"), [("600000", True), ("600000.5", False)])
    def test_delay_is_0_to_600000(self, delay: str, ok: bool) -> None:
        """``llm:delay MS`` takes up to 600,000 ms; more is a malformed line."""
        if ok:
            assert 600.0 == parse_script(f"llm:delay {delay}").faults(0, 1).delay_seconds
        else:
            with pytest.raises(ScriptedDirectiveError, match="0 to 600000"):
                parse_script(f"llm:delay {delay}")

    def test_delays_before_one_call_add_up(self) -> None:
        """Several ``llm:delay`` lines before the same call add up; a tool starts a new sum."""
        script = parse_script("llm:delay 100\nllm:delay 250\ntool:a\nllm:delay 40\nhi")

        assert (0.35, 0.04) == (
            script.faults(0, 1).delay_seconds,
            script.faults(1, 1).delay_seconds,
        )

    async def test_arguments_read_as_a_model_s_are(self, provider: ScriptedLLMProvider) -> None:
        """A key given twice keeps its last value; NaN and Infinity are numbers."""
        mission = 'tool:calculator {"a": 1, "a": 2, "n": NaN, "i": -Infinity}'

        result = await provider.complete(_mission(mission), tools=_TOOLS)

        arguments = result["tool_calls"][0]["arguments"]
        assert (2, True, -math.inf) == (arguments["a"], math.isnan(arguments["n"]), arguments["i"])


class TestStreamWithTools:
    async def test_tool_call_on_last_chunk(self, provider: ScriptedLLMProvider) -> None:
        """Streamed with tools, a tool directive comes as a native call on the last chunk."""
        chunks = [
            c async for c in provider.stream(_mission('tool:calculator {"a": 1}'), tools=_TOOLS)
        ]

        assert [] == [c for c in chunks if "content" in c]
        expected = [{"id": "call_0", "name": "calculator", "arguments": {"a": 1}}]
        assert expected == chunks[-1]["tool_calls"]

    async def test_final_answer_streams_text(self, provider: ScriptedLLMProvider) -> None:
        """With tools and nothing left to call, the final answer streams as text."""
        messages = [*_mission("tool:calculator {}"), _tool_result("call_0", 7)]

        chunks = [c async for c in provider.stream(messages, tools=_TOOLS)]

        text = "".join(c.get("content", "") for c in chunks)
        assert ("Completed 1 tool call(s). Last result: 7", []) == (text, chunks[-1]["tool_calls"])

    @pytest.mark.parametrize(
        "mission", ['tool:calculator {"a": 1}', "say hello", "llm:fail server_error 3"]
    )
    async def test_usage_is_the_one_complete_reports(
        self, provider: ScriptedLLMProvider, mission: str
    ) -> None:
        """The same turn streamed or not reports the same usage: the tool schemas sent are
        prompt tokens either way, so spend does not depend on the route."""
        messages = _mission(mission)
        completed = await provider.complete(messages, tools=_TOOLS)
        streamed: Mapping[str, Any] | None
        try:
            chunks = [c async for c in provider.stream(messages, tools=_TOOLS)]
            streamed = chunks[-1]["usage"]
        except LLMProviderError as exc:
            streamed = exc.usage

        assert completed.get("usage") == streamed
