"""The scripted provider's language: directives in the mission text and progress in a chat.

Everything here is a pure function of its arguments, which is what keeps the
scripted provider stateless and deterministic.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskforce.core.domain.prompts import MISSION_PREFIX, OBSERVATION_PREFIX, PLAN_PROMPT
from taskforce.core.interfaces.jsonable import loads_within
from taskforce.core.interfaces.llm import LLM_ERROR_TYPES, ChatMessage, LLMErrorType
from taskforce.core.interfaces.log import quoted
from taskforce.errors import LLMProviderError

__all__ = [
    "CallFaults",
    "DelayDirective",
    "ErrorDirective",
    "FailDirective",
    "Script",
    "ScriptedDirectiveError",
    "ScriptedLLMError",
    "ToolDirective",
    "estimate_tokens",
    "last_observation",
    "mission_text",
    "observations_of",
    "parse_script",
    "plan_text",
    "render_observation",
]

_TOOL_PREFIX = "tool:"
_ERROR_DIRECTIVE = "llm:error"
_FAIL_PREFIX = "llm:fail"
_DELAY_PREFIX = "llm:delay"
_RESULT_LIMIT = 200
_MAX_FAILURES = 100
_MAX_DELAY_MS = 600_000.0
#: What ends a line of a mission: LF, CRLF or CR. Not the other breaks ``str.splitlines``
#: knows (NEL U+0085, U+2028, U+2029, form feed, ...): JSON takes several of them raw in a
#: string, and an error's line number would not be the one an editor shows.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
#: The byte order mark a text saved by some editors starts with: invisible, and no text.
_BOM = "\ufeff"


class ScriptedLLMError(LLMProviderError):
    """An ``llm:error`` directive made this call fail on purpose (as a ``bad_request``)."""

    def __init__(self, *, attempts: Sequence[Any] = ()) -> None:
        super().__init__(
            "scripted llm:error directive", error_type="bad_request", attempts=attempts
        )


class ScriptedDirectiveError(LLMProviderError):
    """A directive line of the mission text cannot be read (a ``bad_request``).

    The message quotes the line's start only (:func:`~taskforce.core.interfaces.log.quoted`).
    """

    def __init__(self, line: int, text: str, reason: str) -> None:
        self.line = line
        super().__init__(
            f"line {line} of the mission, {quoted(text)}: {reason}", error_type="bad_request"
        )


@dataclass(frozen=True)
class ToolDirective:
    """``tool:NAME {json}``: call NAME with these arguments."""

    line: int
    name: str
    arguments: dict[str, Any]

    def describe(self) -> str:
        """Return the directive as one plan step."""
        return f"Call tool {self.name} with {json.dumps(self.arguments, sort_keys=True)}"


@dataclass(frozen=True)
class ErrorDirective:
    """``llm:error``: the LLM call that reaches this directive fails."""

    line: int


@dataclass(frozen=True)
class FailDirective:
    """``llm:fail TYPE [N]``: the next N attempts of the call at this point fail with TYPE."""

    line: int
    error_type: LLMErrorType
    count: int


@dataclass(frozen=True)
class DelayDirective:
    """``llm:delay MS``: the call at this point waits MS longer (before its first chunk)."""

    line: int
    delay_ms: float


_Directive = ToolDirective | ErrorDirective | FailDirective | DelayDirective


@dataclass(frozen=True)
class CallFaults:
    """What ``llm:fail``/``llm:delay`` lines ask of one call: failing attempts and a delay."""

    failures: tuple[LLMErrorType, ...] = ()
    delay_seconds: float = 0.0


@dataclass(frozen=True)
class Script:
    """The directives of a mission, in order, and its remaining plain text."""

    directives: tuple[_Directive, ...]
    plain_text: str

    @property
    def tool_directives(self) -> tuple[ToolDirective, ...]:
        """The ``tool:`` directives only."""
        return tuple(d for d in self.directives if isinstance(d, ToolDirective))

    def _segment(self, cursor: int) -> list[_Directive]:
        """The directives after the first ``cursor`` tool directives, up to the next action."""
        segment: list[_Directive] = []
        consumed = 0
        for directive in self.directives:
            if consumed == cursor:
                segment.append(directive)
                if isinstance(directive, ToolDirective | ErrorDirective):
                    break
            if isinstance(directive, ToolDirective):
                consumed += 1
        return segment

    def next_directive(self, cursor: int) -> ToolDirective | ErrorDirective | None:
        """Return the action after the first ``cursor`` tool directives, if any.

        ``llm:fail`` and ``llm:delay`` lines are no actions: they shape the call
        (see :meth:`faults`) and are skipped here.

        Args:
            cursor: how many tool results the conversation already holds.

        Returns:
            The next directive to act on, or ``None`` when the script is done.
        """
        segment = self._segment(cursor)
        last = segment[-1] if segment else None
        return last if isinstance(last, ToolDirective | ErrorDirective) else None

    def faults(self, cursor: int, attempts: int) -> CallFaults:
        """Return the failing attempts and the delay asked of the calls at ``cursor``.

        Args:
            cursor: how many tool results the conversation already holds.
            attempts: the most attempts a call makes; failures past them are not listed
                (a mission of many ``llm:fail TYPE 100`` lines would list 100 for each).

        Returns:
            The ``llm:fail`` error types in order (one per failing attempt, at most
            ``attempts``) and the sum of the ``llm:delay`` lines before the next action.
        """
        failures: list[LLMErrorType] = []
        delay_ms = 0.0
        for directive in self._segment(cursor):
            if isinstance(directive, FailDirective):
                room = attempts - len(failures)
                failures.extend([directive.error_type] * min(directive.count, room))
            elif isinstance(directive, DelayDirective):
                delay_ms += directive.delay_ms
        return CallFaults(tuple(failures), delay_ms / 1000)

    def final_answer(self, observations: Sequence[str]) -> str:
        """Return the answer given once every directive is used up.

        Args:
            observations: the tool results of the conversation, oldest first.

        Returns:
            A summary of the last result, or an echo of the mission's plain text.
        """
        if observations:
            return (
                f"Completed {len(observations)} tool call(s). "
                f"Last result: {render_observation(observations[-1])}"
            )
        return f"Scripted answer: {self.plain_text or '(no mission text)'}"


def _parse_tool_line(line_no: int, line: str) -> ToolDirective:
    # any whitespace (a space, a tab) ends the name
    parts = line[len(_TOOL_PREFIX) :].split(maxsplit=1)
    if not parts:
        raise ScriptedDirectiveError(line_no, line, "names no tool")
    name = parts[0]
    raw_args = parts[1].strip() if len(parts) == 2 else ""
    if not raw_args:
        return ToolDirective(line_no, name, {})
    try:
        arguments = loads_within(raw_args)
    except json.JSONDecodeError as exc:
        raise ScriptedDirectiveError(line_no, line, f"arguments are not JSON ({exc.msg})") from exc
    except (ValueError, RecursionError) as exc:
        # JSON, but more than Python reads: a number over its digit limit, or nesting
        # deeper than the JSON writers keep (on every Python, though 3.13's parser reads
        # deeper than 3.11's). The mission's own mistake, as bad JSON is.
        reason = "a number too long" if isinstance(exc, ValueError) else "nested too deeply"
        raise ScriptedDirectiveError(line_no, line, f"arguments cannot be read ({reason})") from exc
    if not isinstance(arguments, dict):
        raise ScriptedDirectiveError(line_no, line, "arguments must be a JSON object")
    return ToolDirective(line_no, name, arguments)


def _parse_fail_line(line_no: int, line: str) -> FailDirective:
    parts = line[len(_FAIL_PREFIX) :].split()
    if not 1 <= len(parts) <= 2 or parts[0] not in LLM_ERROR_TYPES:
        reason = f"needs an error type ({', '.join(LLM_ERROR_TYPES)}) and an optional count"
        raise ScriptedDirectiveError(line_no, line, reason)
    count = parts[1] if len(parts) == 2 else "1"
    # ASCII digits, and few: "²" is a digit to str.isdigit but no number to int(), and
    # int() refuses more than 4300 digits; either raised ValueError out of the provider
    is_number = count.isascii() and count.isdigit() and len(count) <= len(str(_MAX_FAILURES))
    if not is_number or not 1 <= int(count) <= _MAX_FAILURES:
        raise ScriptedDirectiveError(line_no, line, f"count must be 1 to {_MAX_FAILURES}")
    error_type = next(t for t in LLM_ERROR_TYPES if t == parts[0])
    return FailDirective(line_no, error_type, int(count))


def _parse_delay_line(line_no: int, line: str) -> DelayDirective:
    raw = line[len(_DELAY_PREFIX) :].strip()
    try:
        delay_ms = float(raw)
    except ValueError:
        delay_ms = math.nan
    if not (math.isfinite(delay_ms) and 0 <= delay_ms <= _MAX_DELAY_MS):
        reason = f"needs a delay in milliseconds, 0 to {_MAX_DELAY_MS:g}"
        raise ScriptedDirectiveError(line_no, line, reason)
    return DelayDirective(line_no, delay_ms)


def parse_script(text: str) -> Script:
    """Read the directives out of a mission text.

    Args:
        text: the mission, one directive or plain line per line; a line ends at LF,
            CRLF or CR only. A byte order mark it starts with is dropped.

    Returns:
        The parsed script.

    Raises:
        ScriptedDirectiveError: a ``tool:`` line names no tool or its arguments
            are not a JSON object, or an ``llm:fail``/``llm:delay`` line is
            malformed; the message names the line number.
    """
    directives: list[_Directive] = []
    plain: list[str] = []
    for line_no, raw_line in enumerate(_LINE_BREAK.split(text.removeprefix(_BOM)), start=1):
        line = raw_line.strip()
        head = line.split(maxsplit=1)[0] if line else ""
        if line.startswith(_TOOL_PREFIX):
            directives.append(_parse_tool_line(line_no, line))
        elif line == _ERROR_DIRECTIVE:
            directives.append(ErrorDirective(line_no))
        elif head == _FAIL_PREFIX:
            directives.append(_parse_fail_line(line_no, line))
        elif head == _DELAY_PREFIX:
            directives.append(_parse_delay_line(line_no, line))
        elif line:
            plain.append(line)
    return Script(tuple(directives), " ".join(plain))


def mission_text(messages: Sequence[ChatMessage]) -> str:
    """Return the content of the first user message, without the mission prefix."""
    for message in messages:
        if message.get("role") == "user":
            return _strip_prefix(message.get("content") or "", MISSION_PREFIX)
    return ""


def plan_text(prompt: str) -> str:
    """Return a planning prompt without the plan instructions and the mission prefix."""
    text = _strip_prefix(prompt, PLAN_PROMPT)
    return _strip_prefix(text, MISSION_PREFIX)


def _strip_prefix(text: str, prefix: str) -> str:
    return text[len(prefix) :] if text.startswith(prefix) else text


def _is_observation(message: ChatMessage) -> bool:
    role = message.get("role")
    content = message.get("content") or ""
    return role == "tool" or (role == "user" and content.startswith(OBSERVATION_PREFIX))


def observations_of(messages: Sequence[ChatMessage]) -> list[str]:
    """Return the contents of the tool results in a conversation, oldest first."""
    return [m.get("content") or "" for m in messages if _is_observation(m)]


def last_observation(messages: Sequence[ChatMessage]) -> str | None:
    """Return the content of the last message if it is a tool result, else ``None``."""
    if messages and _is_observation(messages[-1]):
        return messages[-1].get("content") or ""
    return None


def render_observation(content: str) -> str:
    """Render a tool result for an answer: its ``output`` or ``error``, at most 200 chars."""
    text = _strip_prefix(content, OBSERVATION_PREFIX)
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError:
        rendered = text
    else:
        if isinstance(decoded, dict) and "output" in decoded:
            output = decoded["output"]
            rendered = output if isinstance(output, str) else json.dumps(output, sort_keys=True)
        elif isinstance(decoded, dict) and "error" in decoded:
            rendered = f"error: {decoded['error']}"
        else:
            rendered = text
    if len(rendered) > _RESULT_LIMIT:
        return rendered[: _RESULT_LIMIT - 3] + "..."
    return rendered


def estimate_tokens(chars: int) -> int:
    """Estimate a token count from a character count (4 chars a token, at least 1)."""
    return max(1, math.ceil(chars / 4))
