"""Bookkeeping shared by both agent flows for one run: LLM turns, tool calls, steps, events.

A :class:`MissionRun` lives for one ``run()`` call only, so agents hold no
per-mission state and one agent object could serve several runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any, cast

import structlog

from taskforce.core.domain._events import EventCallback, EventEmitter
from taskforce.core.domain._outcome import AgentOutcome
from taskforce.core.domain._tool_runner import UNKNOWN_TOOL_ERROR_TYPE, run_tool_call
from taskforce.core.interfaces.closing import aclose_iterator
from taskforce.core.interfaces.executor import StepRecord
from taskforce.core.interfaces.jsonable import MAX_RESULT_DEPTH, MAX_WRITTEN_DEPTH, json_writer
from taskforce.core.interfaces.llm import (
    UNKNOWN_MODEL,
    ChatMessage,
    LLMProviderProtocol,
    LLMResult,
    StreamChunk,
    StreamingLLMProviderProtocol,
    ToolSchema,
)
from taskforce.core.interfaces.log import text_fields
from taskforce.core.interfaces.outcome import (
    MISSION_TIMEOUT,
    STEP_LIMIT,
    TOOL_ERROR,
    UnusableChunk,
    class_error_type,
    classify_llm_result,
    exception_message,
    is_caller_cancelled,
    label_safe,
    llm_exception_error_type,
    raise_cancellation,
    stream_chunk_text,
    tool_calls_problem,
)
from taskforce.core.interfaces.tools import ToolRegistryProtocol, ToolResult
from taskforce.errors import LLMProviderError

__all__ = [
    "MISSION_RUNS",
    "STEP_LIMIT_ERROR",
    "MissionAborted",
    "MissionRun",
    "check_limits",
    "crash_error",
    "deadline_outcome",
    "dump_json",
    "dump_result",
]

_LOG = structlog.get_logger(__name__)

#: The error of a run that used up its LLM turns.
STEP_LIMIT_ERROR = "step limit reached"

#: The error of a failed LLM result that gives no reason it can be read as.
_NO_REASON = "the provider reported a failure"

#: The fields of a tool result a ``tool_result`` event carries.
_RESULT_KEYS = ("success", "output", "error", "error_type")


class MissionAborted(Exception):
    """Internal: ends the run as failed with ``error``; never leaves the domain package.

    ``error_type`` is that of the LLM or tool call whose failure ended the run (the value
    its ``llm.call.failed``/``tool.call.failed`` line and the metrics carry), else one of
    ``MISSION_ERROR_TYPES`` (``step_limit``, ...).
    """

    def __init__(self, error: str, error_type: str) -> None:
        self.error = error
        self.error_type = error_type
        super().__init__(error)


def _crash(exc: BaseException) -> tuple[str, str]:
    """The ``error`` and ``error_type`` of a run that raised ``exc`` (see crash_error)."""
    error_type = class_error_type(exc)
    return f"the mission stopped unexpectedly ({error_type})", error_type


def crash_error(exc: BaseException) -> tuple[str, str]:
    """Log ``exc``, which an agent run raised (a bug below it), and say how it fails the run.

    A tool registry, a tool's result or a provider's answer the agent could not handle
    fails the mission only, with the exception's class name as its ``error_type``. Its
    message may quote the mission, so the traceback is logged at debug only.

    Args:
        exc: What the run raised.

    Returns:
        The run's ``error`` (``the mission stopped unexpectedly (<class>)``) and
        ``error_type``.
    """
    error, error_type = _crash(exc)
    _LOG.error(
        "agent.crashed", category="agent", error_type=error_type, **text_fields("error", exc)
    )
    _LOG.debug("agent.crashed.traceback", category="agent", exc_info=exc)
    return error, error_type


def check_limits(
    max_steps: int, tool_timeout_seconds: float, max_result_depth: int, **more_counts: int
) -> None:
    """Refuse limits an agent cannot run with.

    Args:
        max_steps: the most LLM turns of a run.
        tool_timeout_seconds: the time limit of one tool call.
        max_result_depth: the deepest nesting of a tool's result and arguments, and of
            the legacy flow's replies: at most what the JSON writers keep.
        **more_counts: further limits that must be positive ints, by name.

    Raises:
        ValueError: a limit is not positive, or ``max_result_depth`` is past
            ``MAX_WRITTEN_DEPTH``; the message names it.
    """
    counts = {"max_steps": max_steps, "max_result_depth": max_result_depth, **more_counts}
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if max_result_depth > MAX_WRITTEN_DEPTH:  # deeper, a writer would cut a valid result
        raise ValueError(
            f"max_result_depth must be at most {MAX_WRITTEN_DEPTH}, got {max_result_depth!r}"
        )
    if not tool_timeout_seconds > 0:
        raise ValueError(f"tool_timeout_seconds must be > 0, got {tool_timeout_seconds!r}")


#: The runs of the mission in progress, set by the executor for each mission: when it is
#: cancelled, its record keeps the steps the run finished (the agent itself only raises).
MISSION_RUNS: ContextVar[list[MissionRun] | None] = ContextVar("taskforce_runs", default=None)


class MissionRun:
    """The state of one agent run and the calls both flows make the same way."""

    def __init__(
        self,
        llm: LLMProviderProtocol,
        tools: ToolRegistryProtocol,
        *,
        on_event: EventCallback | None,
        max_steps: int,
        tool_timeout_seconds: float,
        fail_on_tool_error: bool,
        max_result_depth: int = MAX_RESULT_DEPTH,
        stream_llm: bool = False,
    ) -> None:
        self.llm = llm
        # Stream LLM turns (``token`` events) only where the provider can.
        self.stream_llm = stream_llm and hasattr(llm, "stream")
        self.tools = tools
        self.events = EventEmitter(on_event)
        self.max_steps = max_steps
        self.tool_timeout_seconds = tool_timeout_seconds
        self.fail_on_tool_error = fail_on_tool_error
        self.max_result_depth = max_result_depth
        self.steps: list[StepRecord] = []
        self.tool_calls = 0
        self.llm_turns = 0
        runs = MISSION_RUNS.get()
        if runs is not None:  # the executor's: a cancelled mission's record keeps its steps
            runs.append(self)

    async def start_step(self, index: int, description: str) -> None:
        """Announce a step in the log and as a ``step_started`` event."""
        _LOG.info("agent.step.started", category="agent", step=index)
        await self.events.emit("step_started", step=index, description=description)

    def record_step(
        self,
        index: int,
        description: str,
        tool_names: Sequence[str],
        *,
        outcome: str,
        error: str | None = None,
    ) -> None:
        """Append the :class:`StepRecord` of a finished step; ``error`` marks it failed."""
        if error is None:
            record = StepRecord(index, description, "completed", tuple(tool_names), outcome)
            _LOG.info("agent.step.completed", category="agent", step=index)
        else:
            record = StepRecord(index, description, "failed", tuple(tool_names), error)
            _LOG.warning(
                "agent.step.failed", category="agent", step=index, **text_fields("error", error)
            )
        self.steps.append(record)

    def fail_step(
        self, index: int, description: str, tool_names: Sequence[str], exc: BaseException
    ) -> None:
        """Record the step that raised ``exc`` as failed, with the error the run ends with
        (see :meth:`fail_on`): the steps before it stay recorded, also after a crash. The
        mission's cancellation (or an interrupt) fails no step."""
        if not isinstance(exc, Exception) and is_caller_cancelled(exc):
            return
        error = exc.error if isinstance(exc, MissionAborted) else _crash(exc)[0]
        self.record_step(index, description, tool_names, outcome="", error=error)

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolSchema] | None = None,
        step: int | None = None,
    ) -> LLMResult:
        """Make one LLM turn, counted against ``max_steps``.

        With ``stream_llm`` and ``tools`` the turn is streamed: its text deltas
        go out as ``token`` events (with ``step``) as they arrive, and the
        result is assembled from the stream.

        Raises:
            MissionAborted: the turn budget is used up, or the call failed or raised.
        """
        if self.llm_turns >= self.max_steps:
            _LOG.warning("agent.step_limit.reached", category="agent", max_steps=self.max_steps)
            raise MissionAborted(STEP_LIMIT_ERROR, STEP_LIMIT)
        self.llm_turns += 1
        try:
            if tools is None:
                result = await self.llm.complete(messages)
            elif self.stream_llm:
                result = await self._streamed(messages, tools, step)
            else:
                result = await self.llm.complete(messages, tools=tools)
        except BaseException as exc:  # a provider bug fails this mission, not the process
            return self._llm_raised(exc)
        return self._checked(result)

    async def _streamed(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSchema], step: int | None
    ) -> LLMResult:
        """Stream one turn, sending its text deltas as ``token`` events; return it as a result."""
        llm = cast(StreamingLLMProviderProtocol, self.llm)
        chunks = llm.stream(messages, tools=tools)
        parts: list[str] = []
        last: StreamChunk = {}
        try:
            async for chunk in chunks:
                # An unusable chunk ends the call here, as classify_llm_result fails such a
                # result: the stream proxy reads the last chunk it handed out the same way.
                try:
                    content = stream_chunk_text(chunk)
                except UnusableChunk as exc:
                    raise LLMProviderError(
                        f"the provider streamed {exc}", error_type=exc.error_type
                    ) from None
                if content is None:  # the last chunk: tool calls, usage, attempts
                    last = chunk
                elif content:
                    parts.append(content)
                    await self.events.emit("token", step=step, content=content)
        finally:
            # Close it on purpose (an abandoned generator stays open until the loop ends).
            await aclose_iterator(chunks)
        result: LLMResult = {
            "success": True,
            "content": "".join(parts) or None,
            "tool_calls": last.get("tool_calls") or [],
        }
        # read with get, as the stream proxy reads them: a chunk's `in` or `[]` may raise
        usage, model, attempts = last.get("usage"), last.get("model"), last.get("attempts")
        if usage is not None:
            result["usage"] = usage
        if model is not None:
            result["model"] = model
        if attempts is not None:
            result["attempts"] = attempts
        return result

    async def generate(self, prompt: str) -> LLMResult:
        """Ask a single prompt (the legacy planner); not counted as a turn.

        Raises:
            MissionAborted: the call failed or raised.
        """
        try:
            result = await self.llm.generate(prompt)
        except BaseException as exc:  # a provider bug fails this mission, not the process
            return self._llm_raised(exc)
        return self._checked(result)

    def _checked(self, result: LLMResult) -> LLMResult:
        error_type = classify_llm_result(result)
        if error_type is not None:
            return self._llm_failed(_reported_error(result), error_type, _result_model(result))
        return result

    def _llm_raised(self, exc: BaseException) -> LLMResult:
        """Fail the call that raised ``exc``, as the LLM proxy counts it.

        A provider's own CancelledError (an inner task of its was cancelled) or SystemExit
        fails its call; a cancellation of the mission or an interrupt goes on up.
        """
        if is_caller_cancelled(exc):
            raise_cancellation(exc)
        return self._llm_failed(_describe(exc), llm_exception_error_type(exc), _error_model(exc))

    def _llm_failed(self, error: str, error_type: str, model: str | None) -> LLMResult:
        _LOG.warning(
            "llm.call.failed",
            category="llm",
            error_type=error_type,
            model=label_safe(model or self._default_model()),
            **text_fields("error", error),
        )
        raise MissionAborted(f"LLM call failed: {error}", error_type)

    def _default_model(self) -> str:
        """The model the agents' calls ask for (they name none): the provider's ``model``."""
        try:
            model = getattr(self.llm, "model", None)
        except Exception:  # a provider of one's own whose attribute raises names none
            model = None
        return model if type(model) is str and model else UNKNOWN_MODEL

    async def call_tool(self, step: int, call_id: str, name: str, arguments: Any) -> ToolResult:
        """Run one tool call with its ``tool_call``/``tool_result`` events.

        Returns:
            The (possibly failed) tool result to feed back to the model.

        Raises:
            MissionAborted: the call failed and ``fail_on_tool_error`` is set;
                a call to an unknown tool is fed back instead, as the model's mistake.
        """
        self.tool_calls += 1
        await self.events.emit("tool_call", step=step, call_id=call_id, tool=name, args=arguments)
        result = await run_tool_call(
            self.tools,
            name,
            arguments,
            timeout_seconds=self.tool_timeout_seconds,
            max_depth=self.max_result_depth,
        )
        data: dict[str, Any] = {"step": step, "call_id": call_id, "tool": name}
        data.update((key, result[key]) for key in _RESULT_KEYS if key in result)  # type: ignore[literal-required]
        await self.events.emit("tool_result", **data)
        is_unknown = result.get("error_type") == UNKNOWN_TOOL_ERROR_TYPE
        if not result["success"] and self.fail_on_tool_error and not is_unknown:
            raise MissionAborted(
                f"tool {name!r} failed: {result.get('error')}",
                result.get("error_type") or TOOL_ERROR,  # always set by the tool runner
            )
        return result

    async def finish(self, final_message: str) -> AgentOutcome:
        """End the run as completed with ``final_message``."""
        await self.events.emit("final_answer", content=final_message)
        _LOG.info(
            "agent.finished",
            category="agent",
            status="completed",
            steps=len(self.steps),
            tool_calls=self.tool_calls,
        )
        return AgentOutcome(
            "completed", final_message, tuple(self.steps), self.tool_calls, error=None
        )

    async def fail_on(self, exc: BaseException) -> AgentOutcome:
        """End the run that raised ``exc`` as failed: as a MissionAborted says, else as a
        crash (see :func:`crash_error`), with the steps recorded so far.

        A ``BaseException`` that is no ``Exception`` is a crash too (a tool registry's own
        ``SystemExit``), unless it is the mission's cancellation or an interrupt of the
        process (:func:`is_caller_cancelled`), which goes on up as it is.
        """
        if not isinstance(exc, Exception) and is_caller_cancelled(exc):
            raise exc
        if isinstance(exc, MissionAborted):
            return await self.fail(exc.error, exc.error_type)
        return await self.fail(*crash_error(exc))

    async def fail(self, error: str, error_type: str) -> AgentOutcome:
        """End the run as failed with ``error`` and ``error_type`` (see ``MissionAborted``)."""
        await self.events.emit("error", error=error, error_type=error_type)
        return _failed_outcome(tuple(self.steps), self.tool_calls, error, error_type)


def _failed_outcome(
    steps: tuple[StepRecord, ...], tool_calls: int, error: str, error_type: str
) -> AgentOutcome:
    """Log ``agent.finished`` of a failed run and return its outcome."""
    _LOG.warning(
        "agent.finished",
        category="agent",
        status="failed",
        steps=len(steps),
        tool_calls=tool_calls,
        error_type=error_type,
        **text_fields("error", error),
    )
    return AgentOutcome("failed", "", steps, tool_calls, error=error, error_type=error_type)


def deadline_outcome(runs: Sequence[MissionRun], seconds: float) -> AgentOutcome:
    """How a run stopped at its mission's deadline ends, logged as such.

    Failed as ``mission_timeout``, with an error naming the limit, the steps the run (the
    last of ``runs``, see ``MISSION_RUNS``) finished before it (the step cut short is not
    recorded, as for a cancelled mission) and the tool calls it made, a call cut short
    among them (a call counts from its start). Logs
    ``agent.deadline.reached`` and ``agent.finished``; the ``error`` event is the
    caller's to send (the run is over: it must not wait for a stream's reader).

    Args:
        runs: the runs of the mission; empty if it was stopped before its run began.
        seconds: the deadline, ``agent.mission_timeout_seconds``.

    Returns:
        The outcome of the run.
    """
    steps = tuple(runs[-1].steps) if runs else ()
    tool_calls = runs[-1].tool_calls if runs else 0
    _LOG.warning("agent.deadline.reached", category="agent", mission_timeout_seconds=seconds)
    error = f"mission timed out after {seconds:g} s (agent.mission_timeout_seconds)"
    return _failed_outcome(steps, tool_calls, error, MISSION_TIMEOUT)


_WRITE_FOR_MODEL = json_writer(ensure_ascii=False)


def dump_json(value: Any) -> str:
    """Write ``value`` as JSON text for the model: a tool result, a tool call's arguments.

    Values JSON cannot hold become strings: a key JSON cannot take, an int past Python's
    digits or a value inside itself is written as text too (``json_writer``), so a tool's
    odd output does not end the mission. Text is kept as it is, not escaped to ASCII
    (which would cost the model several tokens per character of most languages), but a
    lone surrogate (a file name that is not UTF-8) becomes a ``\\uXXXX`` escape: it sits
    in a JSON string, where that escape is valid, and no provider could send it raw.
    """
    return _WRITE_FOR_MODEL(value).encode("utf-8", "backslashreplace").decode("utf-8")


#: Serialise a tool result for the model (see :func:`dump_json`).
dump_result: Callable[[ToolResult], str] = dump_json


def _reported_error(result: object) -> str:
    """The ``error`` of a failed LLM result as text; a stock phrase when it has none to give.

    A success that ``classify_llm_result`` fails has text that is no string, or tool
    calls that cannot be run, and a value that is no dict is no result: said as a
    streamed chunk that holds them, or is no chunk, is (``UnusableChunk``).
    """
    try:
        if isinstance(result, dict) and result.get("success") is True:
            content = result.get("content")
            if not content or isinstance(content, str):
                problem = tool_calls_problem(result.get("tool_calls"))
                return f"the provider answered {problem}"
            return f"the provider answered a {type(content).__name__} as text, not a string"
        if not isinstance(result, dict):  # no result at all: said as a stream's chunk is
            return f"the provider returned a {type(result).__name__}, not a result"
        return str(result.get("error") or _NO_REASON)
    except Exception:  # a mapping or an error of the provider's own that cannot be read
        return _NO_REASON


def _result_model(result: object) -> str | None:
    """The model a failed result names (its ``model``, a string), ``None`` when none."""
    try:
        model = result.get("model") if isinstance(result, dict) else None
    except Exception:  # a mapping of the provider's own that cannot be read names none
        return None
    return model if type(model) is str and model else None


def _error_model(exc: BaseException) -> str | None:
    """The model a raised error names (``LLMProviderError.model``), ``None`` when none."""
    try:
        model = getattr(exc, "model", None)
    except Exception:  # an error of one's own whose attribute raises names none
        return None
    return model if type(model) is str and model else None


def _describe(exc: BaseException) -> str:
    """Say what a raised LLM call failed with, as a returned failure would say it.

    A provider's own error already names what failed (a stream raises it where
    ``complete`` returns it); anything else is a bug and gets its class name.
    """
    message = exception_message(exc)
    return message if isinstance(exc, LLMProviderError) else f"{type(exc).__name__}: {message}"
