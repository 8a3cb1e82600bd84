"""Tests of reading the legacy flow's plan and actions out of model replies."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from taskforce.core.domain import _parsing
from taskforce.core.domain._parsing import (
    MAX_JSON_DEPTH,
    MAX_JSON_SCAN,
    MAX_JSON_TRIES,
    MIN_JSON_SCAN_CHARS,
    ActionParseError,
    FinishAction,
    ToolAction,
    _check_depth,
    parse_action,
    parse_plan,
)


class _CountingDecoder(json.JSONDecoder):
    """Counts the values decoding was tried from."""

    def __init__(self) -> None:
        super().__init__()
        self.tries = 0

    def raw_decode(self, s: str, idx: int = 0) -> tuple[Any, int]:
        self.tries += 1
        return super().raw_decode(s, idx)


class TestParsePlan:
    @pytest.mark.parametrize(
        "reply",
        [
            '{"steps": ["a", "b"]}',
            '["a", "b"]',
            '```json\n{"steps": ["a", "b"]}\n```',
            '```\n["a", "b"]\n```',
            'Here is the plan:\n{"steps": ["a", "b"]}\nGood luck.',
            '{"steps": [{"description": "a"}, {"step": "b"}]}',
            # a bracket or brace in the prose that no plan can start with is passed over
            'Two steps [1] and {}:\n{"steps": ["a", "b"]}',
            'Unclosed: [{"steps": ["a", "b"]}',
        ],
    )
    def test_accepted_forms(self, reply: str) -> None:
        """An object with steps, a bare list, fenced or in prose, all give the same plan."""
        assert ["a", "b"] == parse_plan(reply)

    @pytest.mark.parametrize(
        ("reply", "reason"),
        [
            ("", "empty"),
            ("no json here", "no JSON"),
            ('{"steps": []}', "no steps"),
            ('{"plan": ["a"]}', "steps"),
            ('{"steps": ["a", 3]}', "non-empty string"),
        ],
    )
    def test_refused_forms(self, reply: str, reason: str) -> None:
        """Replies without a usable plan raise ActionParseError saying why."""
        with pytest.raises(ActionParseError, match=reason):
            parse_plan(reply)

    def test_a_long_bad_step_is_quoted_by_its_start(self) -> None:
        """A step that is no string, of any length: the start of its repr, and how much more."""
        with pytest.raises(ActionParseError) as info:
            parse_plan('{"steps": [[' + "1, " * 5000 + "1]]}")
        assert str(info.value).startswith("a plan step must be a non-empty string, got [1, 1, ")
        assert len(str(info.value)) < 200


class TestParseAction:
    def test_tool_call(self) -> None:
        """A tool_call action gives the tool and its arguments."""
        reply = '{"action": "tool_call", "tool": "calculator", "args": {"expression": "1+1"}}'

        assert ToolAction("calculator", {"expression": "1+1"}) == parse_action(reply)

    def test_finish(self) -> None:
        """A finish action gives the answer."""
        assert FinishAction("42") == parse_action('{"action": "finish", "answer": "42"}')

    def test_non_text_answer_is_serialised(self) -> None:
        """A finish answer that is not a string is kept as JSON text."""
        assert FinishAction("[1, 2]") == parse_action('{"action": "finish", "answer": [1, 2]}')

    @pytest.mark.parametrize(
        "reply",
        [
            '```json\n{"action": "finish", "answer": "ok"}\n```',
            'Sure! {"action": "finish", "answer": "ok"} Hope that helps {"x": 1}',
            'I think {not json} then {"action": "finish", "answer": "ok"}',
            'An empty {} first, then {"action": "finish", "answer": "ok"}',
        ],
    )
    def test_fences_and_prose(self, reply: str) -> None:
        """The first JSON object is found inside code fences and surrounding prose."""
        assert FinishAction("ok") == parse_action(reply)

    def test_code_in_prose_is_not_decoded_from(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A reply of code: no brace of it can start an action, so none is decoded from
        (each failed try would count the lines before it: time growing with the square
        of the reply's length)."""
        decoder = _CountingDecoder()
        monkeypatch.setattr(_parsing, "_DECODER", decoder)
        code = "function f(a) {\n  if (a) {\n    return [a];\n  }\n}\n" * 1000

        with pytest.raises(ActionParseError, match="no JSON"):
            parse_action(code)
        with pytest.raises(ActionParseError, match="no JSON"):
            parse_plan(code)
        assert 0 == decoder.tries

    @pytest.mark.parametrize(
        "after",
        ["a" * 30_000, " " * 30_000, "python" + " \t" * 15_000],
        ids=["tag", "blanks", "tag-then-blanks"],
    )
    def test_a_fence_never_closed_is_given_up_at_once(self, after: str) -> None:
        """A fence never closed, followed by a long tag or blanks (an answer quoting a
        mission's text, a model's degenerate output), is read in time linear in its
        length. Before, its tag was given back a character at a time, each followed by a
        scan to the end: a reply of 30,000 characters held the event loop for seconds."""
        reply = json.dumps({"action": "finish", "answer": "```" + after})
        plan = json.dumps({"steps": ["```" + after]})
        started = time.perf_counter()
        action = parse_action(reply)
        steps = parse_plan(plan)
        assert time.perf_counter() - started < 1.0
        assert (FinishAction("```" + after), ["```" + after.strip()]) == (action, steps)

    def test_missing_and_string_args(self) -> None:
        """Missing or blank args mean no arguments (as in the lean flow); args given as a
        JSON string are decoded."""
        assert ToolAction("t", {}) == parse_action('{"action": "tool_call", "tool": "t"}')
        assert ToolAction("t", {}) == parse_action(
            '{"action": "tool_call", "tool": "t", "args": " "}'
        )
        assert ToolAction("t", {"a": 1}) == parse_action(
            '{"action": "tool_call", "tool": "t", "args": "{\\"a\\": 1}"}'
        )

    @pytest.mark.parametrize(
        ("reply", "reason"),
        [
            (None, "empty"),
            ("I am done.", "no JSON"),
            ("[1, 2]", "JSON object"),
            ('{"action": "dance"}', "unknown action"),
            ('{"action": "finish"}', "answer"),
            ('{"action": "tool_call", "args": {}}', "tool name"),
            ('{"action": "tool_call", "tool": "t", "args": [1]}', "JSON object"),
            ('{"action": "tool_call", "tool": "t", "args": null}', "JSON object, got NoneType"),
            ('{"action": "tool_call", "tool": "t", "args": "null"}', "JSON object, got NoneType"),
        ],
    )
    def test_refused(self, reply: str | None, reason: str) -> None:
        """Replies without a valid action raise ActionParseError saying why."""
        with pytest.raises(ActionParseError, match=reason):
            parse_action(reply)

    def test_a_fence_inside_an_action_is_part_of_it(self) -> None:
        """A fence in a string of a reply that is JSON is not read as the action."""
        reply = json.dumps({"action": "finish", "answer": "Use ```{}``` for nothing."})
        assert FinishAction("Use ```{}``` for nothing.") == parse_action(reply)

    def test_a_long_unknown_action_is_quoted_by_its_start(self) -> None:
        """An unknown action of any length: its first 80 characters, and how many more."""
        with pytest.raises(ActionParseError) as info:
            parse_action('{"action": "' + "d" * 10_000 + '"}')
        assert str(info.value).startswith(f"unknown action {'d' * 80!r}...[+9920 chars];")


def _hidden(levels: int) -> str:
    """JSON nested ``levels`` deep, each level with a closing bracket inside a string."""
    value = '"x"'
    for _ in range(levels):
        value = '["]", ' + value + "]"
    return value


class TestDeepNesting:
    @pytest.mark.parametrize("parse", [parse_plan, parse_action])
    @pytest.mark.parametrize(
        "reply",
        [
            "[" * 100_000,  # past Python's recursion limit: RecursionError from the decoder
            "Here: " + "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
            # closing brackets inside strings hide the nesting from a count of brackets
            '{"action": "finish", "answer": ' + '["]", ' * 5000,
            '{"steps": ' + _hidden(MAX_JSON_DEPTH + 1) + "}",
            '{"action": "finish", "answer": ' + _hidden(MAX_JSON_DEPTH) + "}",
        ],
    )
    def test_a_reply_nested_too_deeply_is_refused(
        self, parse: Callable[[str], object], reply: str
    ) -> None:
        """A reply that nests deeper than MAX_JSON_DEPTH raises ActionParseError saying
        so, never RecursionError."""
        with pytest.raises(ActionParseError, match=f"deeper than {MAX_JSON_DEPTH} levels"):
            parse(reply)

    @pytest.mark.parametrize(
        "value",
        [
            "{" * (MAX_JSON_DEPTH + 1),
            "]" * 1000 + "[" * 1000,
            'a quote " and a backslash \\ then [[[' * 50,
        ],
        ids=["openers", "closers-then-openers", "escapes"],
    )
    def test_brackets_inside_strings_do_not_count(self, value: str) -> None:
        """Strings, escaped quotes and backslashes in them included, are skipped."""
        reply = json.dumps({"action": "tool_call", "tool": "t", "args": {"code": value}})
        assert ToolAction("t", {"code": value}) == parse_action("Sure:\n" + reply)

    @pytest.mark.parametrize("parse", [parse_plan, parse_action])
    def test_max_depth_sets_how_deep_a_reply_may_nest(
        self, parse: Callable[[str, int], object]
    ) -> None:
        """With max_depth 150 a reply of 120 levels is read; with 119 it is refused,
        naming 119 and the setting."""
        deep = "[" * 119 + '"a"' + "]" * 119
        reply = f'{{"steps": {deep}}}' if parse is parse_plan else f'{{"args": {deep}}}'
        with pytest.raises(ActionParseError) as refused:
            parse(reply, 119)
        assert "deeper than 119 levels (agent.max_result_depth)" in str(refused.value)
        with pytest.raises(ActionParseError) as read:  # read, and found no plan or action
            parse(reply, 150)
        assert "deeper than" not in str(read.value)

    def test_closing_brackets_inside_strings_hide_no_nesting(self) -> None:
        """Closing brackets in strings between the levels leave the nesting counted."""
        reply = '{"steps": ' + '["]]]]", ' * (MAX_JSON_DEPTH + 1)
        with pytest.raises(ActionParseError, match=f"deeper than {MAX_JSON_DEPTH} levels"):
            _check_depth(reply, MAX_JSON_DEPTH)

    def test_a_stray_quote_misleads_the_scan_for_its_line_only(self) -> None:
        """A quote in the prose before the JSON starts no string past the line's end."""
        reply = 'The "best plan:\n' + "[" * (MAX_JSON_DEPTH + 1) + '"a"' + "]" * 101
        with pytest.raises(ActionParseError, match=f"deeper than {MAX_JSON_DEPTH} levels"):
            _check_depth(reply, MAX_JSON_DEPTH)

    @pytest.mark.parametrize("parse", [parse_plan, parse_action])
    def test_nesting_a_stray_quote_hides_is_tried_a_bounded_number_of_times(
        self, parse: Callable[[str], object], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Lines of deep, unfinished objects after a stray quote: the depth scan takes them
        for strings, and decoding is tried from MAX_JSON_TRIES places at most."""
        decoder = _CountingDecoder()
        monkeypatch.setattr(_parsing, "_DECODER", decoder)
        reply = ('He said "x ' + '{"a":' * 500 + "\n") * 10

        with pytest.raises(ActionParseError, match=f"no JSON found in {MAX_JSON_TRIES} places"):
            parse(reply)
        assert MAX_JSON_TRIES == decoder.tries

    @pytest.mark.parametrize("parse", [parse_plan, parse_action])
    def test_tries_inside_one_value_that_never_ends_read_the_reply_a_bounded_number_of_times(
        self, parse: Callable[[str], object], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A reply cut off in a long list inside nested objects: every try starts inside
        that value and reads the rest of the reply. Tries stop once they read it
        MAX_JSON_SCAN times over; before, all MAX_JSON_TRIES were made, and a reply of
        a few megabytes held the event loop for a minute."""
        decoder = _CountingDecoder()
        monkeypatch.setattr(_parsing, "_DECODER", decoder)
        reply = '{"a": ' * 99 + "[" + "1, " * (MIN_JSON_SCAN_CHARS // 4)

        with pytest.raises(ActionParseError, match=f"read the reply {MAX_JSON_SCAN} times over"):
            parse(reply)
        assert MAX_JSON_SCAN + 1 == decoder.tries

    def test_string_args_nested_too_deeply_are_refused(self) -> None:
        """`args` given as a JSON string nested past Python's recursion limit."""
        args = json.dumps("[" * 100_000)
        reply = '{"action": "tool_call", "tool": "t", "args": ' + args + "}"
        with pytest.raises(ActionParseError, match=f"deeper than {MAX_JSON_DEPTH} levels"):
            parse_action(reply)

    @pytest.mark.parametrize(
        ("levels", "error"),
        [(MAX_JSON_DEPTH, "non-empty string"), (MAX_JSON_DEPTH + 1, "deeper than")],
    )
    def test_what_a_stray_quote_hides_is_refused_past_the_limit(
        self, levels: int, error: str
    ) -> None:
        """A stray quote on the line hides the nesting from the depth scan (and a bracket
        in its prose makes it look): the decoded plan is refused past MAX_JSON_DEPTH
        levels, and read (a step no string) at it."""
        steps = "[" * (levels - 1) + "1" + "]" * (levels - 1)
        with pytest.raises(ActionParseError, match=error):
            parse_plan('Plan "x [: {"steps": ' + steps + "}")

    def test_a_plan_at_the_limit_is_read(self) -> None:
        """A plan whose steps sit exactly MAX_JSON_DEPTH levels deep is still a value."""
        inner = "[" * (MAX_JSON_DEPTH - 2) + '"a"' + "]" * (MAX_JSON_DEPTH - 2)
        with pytest.raises(ActionParseError, match="non-empty string"):
            parse_plan('{"steps": [' + inner + "]}")
