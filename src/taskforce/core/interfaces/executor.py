"""The executor port: where missions start and end, and the records a mission leaves."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncGenerator
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, cast, runtime_checkable

from taskforce.core.interfaces.log import quoted

# Part of the port: what the executor raises for a request it refuses, re-exported for
# the layers that may import only core.interfaces (the observability aspect).
from taskforce.errors import MissionError

__all__ = [
    "AGENT_TYPES",
    "MISSION_STATUSES",
    "SESSION_ID_PATTERN",
    "STREAM_END",
    "AgentType",
    "ExecutionResult",
    "ExecutorProtocol",
    "MissionError",
    "MissionRequest",
    "MissionStatus",
    "ProgressEvent",
    "ProgressKind",
    "StepRecord",
    "StreamEnd",
    "check_mission_request",
    "check_session_id",
    "has_visible_character",
]

AgentType = Literal["lean", "legacy"]
MissionStatus = Literal["completed", "failed", "cancelled"]
ProgressKind = Literal[
    "mission_started",
    "step_started",
    "tool_call",
    "tool_result",
    "token",
    "final_answer",
    "error",
    "result",
]

AGENT_TYPES: tuple[AgentType, ...] = ("lean", "legacy")
# How much of a refused value a MissionError quotes.
_SHOWN_CHARS = 40
MISSION_STATUSES: tuple[MissionStatus, ...] = ("completed", "failed", "cancelled")
#: What a session or mission id may look like: 1 to 128 of ``A-Za-z0-9_.-``, no leading dot
#: (so an id is safe as a file name, a label of nothing, and a log value).
SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
#: Categories that draw nothing: controls (NUL, ...), formats (U+200B, the BOM U+FEFF, ...)
#: and separators (spaces, line and paragraph separators).
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
#: Unicode's default-ignorable code points outside those categories, which draw nothing
#: either: the combining grapheme joiner, Hangul fillers, Khmer inherent vowels,
#: Mongolian and other variation selectors, and tags.
_IGNORABLE_RANGES = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x2065, 0x2065),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0xE0000, 0xE0FFF),
)


def _is_invisible(char: str) -> bool:
    if unicodedata.category(char) in _INVISIBLE_CATEGORIES or char.isspace():
        return True
    code = ord(char)
    return any(low <= code <= high for low, high in _IGNORABLE_RANGES)


def has_visible_character(text: str) -> bool:
    """Tell whether ``text`` has a character that draws something.

    Whitespace, control (``Cc``) and format (``Cf``) characters such as NUL, the
    zero-width space and the BOM, and Unicode's other default-ignorable code points
    draw nothing: a text of only those is blank, however long.

    Args:
        text: the text to look at.

    Returns:
        Whether one of its characters is visible.
    """
    return not all(_is_invisible(char) for char in text)


@dataclass(frozen=True, slots=True)
class MissionRequest:
    """A mission request that passed :func:`check_mission_request`.

    ``session_id`` and ``mission_id`` stay ``None`` when the caller gave none:
    the executor makes them, once, when the mission starts.
    """

    mission: str
    agent_type: AgentType
    session_id: str | None = None
    mission_id: str | None = None


def check_mission_request(
    mission: object,
    agent_type: object = "lean",
    session_id: object = None,
    mission_id: object = None,
    *,
    max_chars: int | None = None,
) -> MissionRequest:
    """Validate a mission request: the one place that decides what is a mission.

    The executor calls it before a mission starts, and only the executor: the
    ``MissionError`` it raises is how the HTTP edge answers 422 and how the
    observability aspect knows a request was not a mission.

    Args:
        mission: must be a string with at least one visible character (see
            :func:`has_visible_character`), and encodable as UTF-8 (no lone surrogate).
        agent_type: must be one of ``AGENT_TYPES``.
        session_id: ``None``, or an id matching :data:`SESSION_ID_PATTERN`.
        mission_id: ``None``, or an id matching :data:`SESSION_ID_PATTERN`.
        max_chars: the most characters ``mission`` may have (``agent.max_mission_chars``);
            ``None``: no limit.

    Returns:
        The checked request.

    Raises:
        MissionError: an argument is invalid; the message names it and shows at most
            a short prefix of its value (``quoted``: none of the value's own code runs,
            so a ``__repr__`` that raises or is huge cannot get in the way).
    """
    try:
        is_agent_type = agent_type in AGENT_TYPES
    except Exception:  # unhashable, or an == that raises: such a value is no agent type
        is_agent_type = False
    if not is_agent_type:
        raise MissionError(
            f"unknown agent_type {quoted(agent_type, _SHOWN_CHARS)}; "
            f"expected one of {', '.join(AGENT_TYPES)}"
        )
    if type(mission) is not str and issubclass(type(mission), str):
        # a plain copy: what is checked is what runs, and the subclass's methods are its own
        mission = str.__str__(cast(str, mission))
    if type(mission) is not str or not has_visible_character(mission):
        raise MissionError(
            "mission must be a non-empty string with a visible character, "
            f"got {quoted(mission, _SHOWN_CHARS)}"
        )
    if not mission.isascii():
        try:
            mission.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate: argv bytes that are not UTF-8
            raise MissionError(
                f"mission must be UTF-8 text; character {exc.start} is an unpaired surrogate"
            ) from None
    if max_chars is not None and len(mission) > max_chars:
        raise MissionError(
            f"mission must be at most {max_chars} characters (agent.max_mission_chars), "
            f"got {len(mission)}"
        )
    check_session_id(session_id, "session_id")
    check_session_id(mission_id, "mission_id")
    return MissionRequest(
        mission,
        cast(AgentType, agent_type),
        cast("str | None", session_id),
        cast("str | None", mission_id),
    )


def check_session_id(value: object, name: str) -> None:
    """Check a session or mission id against :data:`SESSION_ID_PATTERN`.

    Args:
        value: ``None`` (no id given), or the id.
        name: what the caller calls it, for the message (``session_id``, ``--session``).

    Raises:
        MissionError: ``value`` is neither ``None`` nor such an id; the message names
            ``name`` and shows at most a short prefix of the value.
    """
    if value is not None and not (
        issubclass(type(value), str) and SESSION_ID_PATTERN.fullmatch(cast(str, value))
    ):
        raise MissionError(
            f"{name} must be 1 to 128 of A-Z a-z 0-9 _ . - not starting with '.', "
            f"got {quoted(value, _SHOWN_CHARS)}"
        )


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step of a mission: a plan step (legacy) or one LLM turn (lean)."""

    index: int
    description: str
    status: Literal["completed", "failed"]
    tool_calls: tuple[str, ...] = ()
    outcome: str = ""


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """How a mission ended. Identical in shape for both agent flows.

    ``error_type`` is set on every failed mission and ``None`` on a completed one. When a
    failed LLM or tool call ended the mission it is that call's, the value of its
    ``llm.call.failed``/``tool.call.failed`` line and of its failure metric; else one of
    ``outcome.MISSION_ERROR_TYPES`` (the step limits, an unusable answer), or the class
    name of what the agent loop or the state store raised (docs/logging.md, "Mission
    error types"). A cancelled mission has no result.
    """

    session_id: str
    mission_id: str
    agent_type: AgentType
    status: MissionStatus
    final_message: str
    steps: tuple[StepRecord, ...] = ()
    tool_calls: int = 0
    error: str | None = None
    error_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-serialisable dict."""
        data = asdict(self)
        data["steps"] = [asdict(step) for step in self.steps]
        return data


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """A progress event of a running mission, the same for both flows.

    ``kind == "result"`` is always the last event of a stream and carries the
    :class:`ExecutionResult` in ``result``.
    """

    kind: ProgressKind
    data: dict[str, Any] = field(default_factory=dict)
    result: ExecutionResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the event as a JSON-serialisable dict."""
        out: dict[str, Any] = {"kind": self.kind, **self.data}
        if self.result is not None:
            out["result"] = self.result.to_dict()
        return out


class StreamEnd:
    """How a streamed mission ended, for a consumer that stopped reading before its end.

    A consumer who leaves a stream early (``aclose()``, a cancelled task) never reads its
    ``result`` event, yet the mission may have ended anyway, its record saved (it was
    already done, or it finished its record while being cancelled). The executor puts
    that :class:`ExecutionResult` here when its stream closes; ``None`` means it did not
    end (it was cancelled).

    Attributes:
        result: The mission's result, if it ended.
    """

    __slots__ = ("result",)

    def __init__(self) -> None:
        """Start with no result."""
        self.result: ExecutionResult | None = None


#: Set by a consumer of ``execute_mission_streaming`` around its iteration (the
#: observability aspect does), filled in by the executor as its stream closes.
STREAM_END: ContextVar[StreamEnd | None] = ContextVar("taskforce_stream_end", default=None)


@runtime_checkable
class ExecutorProtocol(Protocol):
    """Runs missions; the single place where a mission starts and ends.

    Contract: a mission that fails (LLM error, failing tool, step limit) is
    *returned* as an :class:`ExecutionResult` with ``status="failed"`` and an
    ``error``; a request :func:`check_mission_request` refuses raises
    ``MissionError`` before anything runs. Cancellation propagates as
    ``asyncio.CancelledError``. ``session_id`` and ``mission_id`` are generated
    when not given. While a mission runs, the executor holds its ids and flow
    in the mission context (:mod:`taskforce.core.interfaces.context`), so the
    code it calls can read them. The streaming form yields
    :class:`ProgressEvent` objects, the last one of kind ``result``; a consumer
    that stops early must ``aclose()`` it, which cancels the mission.
    """

    async def execute_mission(
        self,
        mission: str,
        agent_type: AgentType = "lean",
        session_id: str | None = None,
        mission_id: str | None = None,
    ) -> ExecutionResult:
        """Run one mission to its end."""
        ...

    def execute_mission_streaming(
        self,
        mission: str,
        agent_type: AgentType = "lean",
        session_id: str | None = None,
        mission_id: str | None = None,
    ) -> AsyncGenerator[ProgressEvent, None]:
        """Run one mission, yielding progress events; the last is the result."""
        ...
