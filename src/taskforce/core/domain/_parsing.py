"""Reads the legacy flow's JSON out of model replies: the plan and the per-turn action.

Models wrap JSON in code fences or surround it with prose, so the parsers take
the whole reply when it is JSON, else the first fenced block that is, else the first
JSON value in it that starts as a plan or an action can (``{"``; for a plan also ``["``
or ``[{``). A reply nested deeper than ``max_depth`` levels (``agent.max_result_depth``,
``MAX_JSON_DEPTH`` unless set) is refused before any of that is tried.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from taskforce.core.interfaces.jsonable import MAX_RESULT_DEPTH, nests_within
from taskforce.core.interfaces.log import quoted

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_JSON_SCAN",
    "MAX_JSON_TRIES",
    "MIN_JSON_SCAN_CHARS",
    "ActionParseError",
    "FinishAction",
    "ToolAction",
    "parse_action",
    "parse_plan",
]

MAX_JSON_DEPTH = MAX_RESULT_DEPTH
"""The deepest nesting of brackets a reply may have unless ``agent.max_result_depth`` says
otherwise (whose default it is); a deeper one holds no plan or action.

Python's decoder raises ``RecursionError`` past its recursion limit, and each try from
another position would descend again: the reply is refused once, unread.
"""

MAX_JSON_TRIES = 100
"""The most places in prose a plan or an action is decoded from before the reply is refused.

Each failed try costs a count of the lines before it, and may descend as deep as Python
decodes when a stray quote in the prose hid that nesting from the depth check.
"""

MAX_JSON_SCAN = 2
"""How many times over its length the failed tries may read a reply in all (at least
``MIN_JSON_SCAN_CHARS``), before it is refused.

A failed try reads from where it starts to where the JSON breaks: tries that start
inside one value that never ends (a reply cut off in a long list, inside nested
objects) each read the rest of the reply, and ``MAX_JSON_TRIES`` of them would read it
a hundred times over. With this bound the work on any reply stays linear in its length.
"""

MIN_JSON_SCAN_CHARS = 1_000_000
"""What the failed tries may read in all on a short reply, however short."""

#: What the depth scan stops at: an escape (a backslash and the character after it,
#: skipped whole), a quote, a bracket, or a line end (no JSON string holds one).
_DEPTH_TOKENS = re.compile(r'\\.|["\[\]{}\n]')
#: Where an action may start in prose: an object with a key (JSON whitespace between).
_ACTION_START = re.compile(r'\{(?=[ \t\n\r]*")')
#: Where a plan may start: that, or a list of strings or objects. Braces of code in the
#: prose around it (``{`` then a line end) are never decoded from.
_PLAN_START = re.compile(r'\{(?=[ \t\n\r]*")|\[(?=[ \t\n\r]*["{])')
#: A fenced block: its language tag and the blanks after it are taken whole (possessive),
#: so a fence never closed is given up after one scan, not one per character of its tag.
_FENCE = re.compile(r"```[A-Za-z0-9_-]*+[ \t]*+\n?(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()


class ActionParseError(ValueError):
    """A reply holds no usable plan or action; the message says why."""


@dataclass(frozen=True, slots=True)
class ToolAction:
    """The model asks to call ``tool`` with ``args``."""

    tool: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FinishAction:
    """The model ends the current step with ``answer``."""

    answer: str


def _too_deep(max_depth: int) -> ActionParseError:
    return ActionParseError(
        f"the reply nests deeper than {max_depth} levels (agent.max_result_depth)"
    )


def _may_nest_too_deep(text: str, max_depth: int) -> bool:
    """Whether ``text`` has the opening brackets to nest deeper than ``max_depth``.

    Two counts in C: a reply with fewer cannot, whatever its strings hold, so the
    checks below are skipped for it (every ordinary plan and action).
    """
    return text.count("[") + text.count("{") > max_depth


def _check_depth(text: str, max_depth: int) -> None:
    """Refuse ``text`` when its brackets nest deeper than ``max_depth``, in one pass.

    Brackets inside JSON strings do not count (code or a regex in an argument), so a
    string neither deepens nor hides the nesting. A string ends at its closing quote,
    an escaped one skipped, or at a line end, which no JSON string holds: a stray quote
    in the prose around the JSON misleads the scan for the rest of its line at most.
    :func:`_bounded` checks what is decoded all the same.
    """
    depth = 0
    is_in_string = False
    for match in _DEPTH_TOKENS.finditer(text):
        token = match.group()
        if is_in_string:  # an escape inside a string is skipped whole
            is_in_string = token not in ('"', "\n")
            continue
        token = token[-1]  # outside a string a backslash escapes nothing
        if token == '"':
            is_in_string = True
        elif token in "[{":
            depth += 1
            if depth > max_depth:
                raise _too_deep(max_depth)
        elif token in "]}" and depth:
            depth -= 1


def _bounded(value: Any, max_depth: int) -> Any:
    """Return the decoded ``value``, refused if it nests deeper than ``max_depth``.

    No recursion (:func:`nests_within`): the value may nest as deep as Python decodes.
    """
    if not nests_within(value, max_depth):
        raise _too_deep(max_depth)
    return value


def _first_json(text: str, starts: re.Pattern[str], max_depth: int) -> Any:
    """Return the reply as JSON, else the first JSON value at a match of ``starts``.

    Only where a plan or an action can start is tried, at most ``MAX_JSON_TRIES`` of
    them: every failed try costs the decoder's error a count of the lines before it, so
    trying every bracket of a long reply of code would take time that grows with the
    square of its length. Nor are more tried once the failed ones read the reply
    ``MAX_JSON_SCAN`` times over (:data:`MAX_JSON_SCAN`).

    Raises:
        ActionParseError: none is there, or the reply nests deeper than ``max_depth``.
    """
    may_be_deep = _may_nest_too_deep(text, max_depth)
    if may_be_deep:
        _check_depth(text, max_depth)
    # The whole reply first: a fence inside a reply that is JSON sits in one of its strings.
    candidates = [text] + [match.group(1) for match in _FENCE.finditer(text)]
    try:
        for candidate in candidates:
            stripped = candidate.strip()
            try:
                value = json.loads(stripped)
            except ValueError:
                continue
            return _bounded(value, max_depth) if may_be_deep else value
        unread = max(MAX_JSON_SCAN * len(text), MIN_JSON_SCAN_CHARS)
        for tries, start in enumerate(starts.finditer(text)):
            if tries == MAX_JSON_TRIES:
                raise ActionParseError(f"no JSON found in {MAX_JSON_TRIES} places it could start")
            if unread < 0:
                raise ActionParseError(
                    f"no JSON found in {tries} places it could start, which read the reply "
                    f"{MAX_JSON_SCAN} times over"
                )
            try:
                value, _ = _DECODER.raw_decode(text, start.start())
            except json.JSONDecodeError as exc:
                unread -= exc.pos + 1 - start.start()
                continue
            except ValueError:  # a number past Python's int digits, somewhere in the rest
                unread -= len(text) - start.start()
                continue
            return _bounded(value, max_depth) if may_be_deep else value
    except RecursionError as exc:
        # Deeper than Python decodes, hidden from _check_depth by a stray quote in the
        # prose around it: refused once, not tried again from every later position.
        raise _too_deep(max_depth) from exc
    raise ActionParseError("no JSON found in the reply")


def parse_plan(text: str | None, max_depth: int = MAX_JSON_DEPTH) -> list[str]:
    """Read a plan: ``{"steps": [...]}`` or a bare JSON list of step descriptions.

    Args:
        text: the model's reply to the plan prompt.
        max_depth: the deepest nesting the reply may have (``agent.max_result_depth``).

    Returns:
        The non-empty step descriptions, in order.

    Raises:
        ActionParseError: the reply holds no plan or the plan has no steps.
    """
    if not text or not text.strip():
        raise ActionParseError("the reply is empty")
    value = _first_json(text, _PLAN_START, max_depth)
    if isinstance(value, dict):
        value = value.get("steps")
    if not isinstance(value, list):
        raise ActionParseError('expected {"steps": [...]} or a JSON list of steps')
    steps: list[str] = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("description", item.get("step"))
        if not isinstance(item, str) or not item.strip():
            raise ActionParseError(f"a plan step must be a non-empty string, got {quoted(item)}")
        steps.append(item.strip())
    if not steps:
        raise ActionParseError("the plan has no steps")
    return steps


def parse_action(text: str | None, max_depth: int = MAX_JSON_DEPTH) -> ToolAction | FinishAction:
    """Read one action of the legacy flow.

    Args:
        text: the model's reply, ideally ``{"action": "tool_call", "tool": ..., "args": {...}}``
            or ``{"action": "finish", "answer": ...}``.
        max_depth: the deepest nesting the reply may have (``agent.max_result_depth``),
            and so ``args`` one level less; ``args`` given as a JSON string may nest as
            deep itself.

    Returns:
        The action.

    Raises:
        ActionParseError: the reply holds no valid action; the message says why.
    """
    if not text or not text.strip():
        raise ActionParseError("the reply is empty")
    value = _first_json(text, _ACTION_START, max_depth)
    if not isinstance(value, dict):
        raise ActionParseError(f"expected a JSON object, got {type(value).__name__}")
    action = value.get("action")
    if action == "finish":
        if "answer" not in value:
            raise ActionParseError("a finish action needs an 'answer'")
        answer = value["answer"]
        if answer is None:  # no answer, as an empty one
            return FinishAction("")
        return FinishAction(answer if isinstance(answer, str) else json.dumps(answer))
    if action == "tool_call":
        tool = value.get("tool")
        if not isinstance(tool, str) or not tool:
            raise ActionParseError("a tool_call action needs a tool name in 'tool'")
        args = value.get("args", {})
        if isinstance(args, str) and not args.strip():  # no arguments, as the lean flow reads it
            args = {}
        if isinstance(args, str):
            try:
                decoded = json.loads(args)
            except RecursionError as exc:
                raise _too_deep(max_depth) from exc
            except ValueError as exc:
                raise ActionParseError(f"'args' is not valid JSON: {exc}") from exc
            args = _bounded(decoded, max_depth) if _may_nest_too_deep(args, max_depth) else decoded
        # null is no object either: refused, as the lean flow refuses such arguments
        if not isinstance(args, dict):
            raise ActionParseError(f"'args' must be a JSON object, got {type(args).__name__}")
        return ToolAction(tool, args)
    raise ActionParseError(f"unknown action {quoted(action)}; expected 'tool_call' or 'finish'")
