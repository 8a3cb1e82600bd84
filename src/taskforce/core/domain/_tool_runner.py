"""Runs one tool call for either agent flow and turns every failure into an error result.

The time limit cancels the *current* task with ``TOOL_TIMEOUT_CANCEL_MESSAGE``
rather than running the tool in a child task, so a tool (or an instrumenting
proxy around it) sees the cancellation in the mission's own task and can tell a
timeout from any other cancellation. A real cancellation of the mission always
propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, cast

import structlog

from taskforce.core.interfaces.jsonable import MAX_RESULT_DEPTH, nests_within
from taskforce.core.interfaces.log import quoted, text_fields
from taskforce.core.interfaces.outcome import (
    INVALID_ARGUMENTS,
    INVALID_RESULT,
    TIMEOUT,
    UNKNOWN_TOOL,
    classify_tool_result,
    exception_message,
    is_unknown_tool_error,
    raise_cancellation,
    tool_exception_error_type,
)
from taskforce.core.interfaces.tools import (
    TOOL_TIME_LIMIT,
    TOOL_TIMEOUT_CANCEL_MESSAGE,
    RefusedCallProtocol,
    ToolProtocol,
    ToolRegistryProtocol,
    ToolResult,
    ToolTimeLimit,
)

__all__ = ["UNKNOWN_TOOL_ERROR_TYPE", "error_result", "run_tool_call"]

_LOG = structlog.get_logger(__name__)

#: The setting a refusal for depth names, so the reader can find the knob.
_SETTING = "agent.max_result_depth"

#: ``error_type`` of a call to a tool that is not registered: the model's
#: mistake, always fed back to it rather than failing the mission.
UNKNOWN_TOOL_ERROR_TYPE = UNKNOWN_TOOL


def error_result(error: str, error_type: str) -> ToolResult:
    """Build a failed tool result.

    Args:
        error: what went wrong, fed back to the model.
        error_type: see :mod:`taskforce.core.interfaces.outcome`.

    Returns:
        ``{"success": False, "error": error, "error_type": error_type}``.
    """
    return {"success": False, "error": error, "error_type": error_type}


async def run_tool_call(
    tools: ToolRegistryProtocol,
    name: str,
    arguments: Any,
    *,
    timeout_seconds: float,
    max_depth: int = MAX_RESULT_DEPTH,
) -> ToolResult:
    """Look up tool ``name`` and run it with ``arguments`` under a time limit.

    Args:
        tools: the registry to look the tool up in.
        name: the tool name the model asked for.
        arguments: the decoded arguments; anything but a dict is refused.
        timeout_seconds: the time limit of the call.
        max_depth: the deepest nesting the arguments and the result may have
            (``agent.max_result_depth``).

    Returns:
        The tool's result, or an error result for an unknown tool
        (``unknown_tool``), arguments that are not a JSON object or nest deeper than
        ``max_depth`` levels (``InvalidArguments``, told to the tool's
        ``call_refused`` if it has one, so the metrics count it), an exception raised
        by the tool (its class name), a malformed result (``invalid_result``, also one
        nested too deep for JSON), or a timeout (``timeout``). A failed result always
        carries the ``error_type`` that
        :func:`~taskforce.core.interfaces.outcome.classify_tool_result` gives it, so the
        log line and the metrics agree with it.

    Raises:
        asyncio.CancelledError: the mission itself was cancelled.
    """
    started = time.perf_counter()
    _LOG.debug("tool.call.started", category="tool", tool=name)
    result = await _run(tools, name, arguments, timeout_seconds, max_depth)
    duration = max(0.0, time.perf_counter() - started)
    if result["success"]:
        _LOG.info("tool.call.completed", category="tool", tool=name, duration_seconds=duration)
    else:
        # A name no tool has is the model's free text: described like the error.
        is_unknown = result.get("error_type") == UNKNOWN_TOOL
        _LOG.warning(
            "tool.call.failed",
            category="tool",
            **(text_fields("tool", name) if is_unknown else {"tool": name}),
            error_type=result.get("error_type"),
            duration_seconds=duration,
            # the message may quote the arguments: described, never repeated
            **text_fields("error", result.get("error")),
        )
    return result


async def _run(
    tools: ToolRegistryProtocol, name: str, arguments: Any, timeout_seconds: float, max_depth: int
) -> ToolResult:
    try:
        tool = tools.get(name)
    except Exception as exc:
        if not is_unknown_tool_error(exc):
            raise
        return error_result(f"unknown tool {quoted(name)}", UNKNOWN_TOOL)
    reason = _arguments_refusal(arguments, max_depth)
    if reason is not None:
        refused = error_result(f"arguments of tool {name!r} {reason}", INVALID_ARGUMENTS)
        if isinstance(tool, RefusedCallProtocol):  # e.g. a wrapper that counts the calls
            with contextlib.suppress(Exception):  # the call has failed already, as it says
                tool.call_refused(refused)
        return refused
    try:
        raw = await _execute_with_time_limit(tool, arguments, timeout_seconds)
    except _Failed as failed:  # a faulty tool fails its call, never the agent loop
        if failed.raised is None:
            return error_result(f"timed out after {timeout_seconds:g} s", TIMEOUT)
        raised = failed.raised
        return error_result(
            f"{type(raised).__name__}: {exception_message(raised)}", failed.error_type
        )
    return _checked(name, raw, max_depth)


def _arguments_refusal(arguments: Any, max_depth: int) -> str | None:
    """Why ``arguments`` cannot be a tool's keyword arguments, or ``None`` when they can."""
    if not isinstance(arguments, dict) or not all(isinstance(key, str) for key in arguments):
        return f"must be a JSON object, got {type(arguments).__name__}"
    if not nests_within(arguments, max_depth):
        return f"must not nest deeper than {max_depth} levels ({_SETTING})"
    return None


class _Failed(Exception):
    """Internal: the call failed with ``error_type``; ``raised`` is what the tool raised.

    ``raised`` is ``None`` when the time limit fired, whatever the tool did then.
    """

    def __init__(self, error_type: str, raised: BaseException | None) -> None:
        super().__init__(error_type)
        self.error_type = error_type
        self.raised = raised


async def _execute_with_time_limit(
    tool: ToolProtocol, arguments: dict[str, Any], timeout_seconds: float
) -> object:
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("a tool call must run inside an asyncio task")
    loop = asyncio.get_running_loop()
    limit = ToolTimeLimit(task.cancelling())

    def _on_timeout() -> None:
        limit.expired = True
        task.cancel(TOOL_TIMEOUT_CANCEL_MESSAGE)

    handle = loop.call_later(timeout_seconds, _on_timeout)
    # Whatever awaits the call (an instrumenting proxy) reads the limit, see ToolTimeLimit.
    token = TOOL_TIME_LIMIT.set(limit)
    try:
        result: object = await tool.execute(**arguments)
    except BaseException as exc:  # re-raised below when it is no failure of the tool's
        # Decided as the tool proxy decides it, so the metrics say what the result says:
        # a cancellation of the mission (anyone's request but our limit's, which must
        # then win) or an interrupt propagates; a timeout is one however the tool ended
        # (it may catch our cancellation and raise something else); anything else the
        # tool raised, a CancelledError or SystemExit of its own included, fails the call.
        error_type = tool_exception_error_type(exc, limit)
        if limit.expired:
            task.uncancel()  # our own request: it must not leak into later awaits
        if error_type is None:
            raise_cancellation(exc)
        raise _Failed(error_type, None if limit.expired else exc) from None
    finally:
        handle.cancel()
        TOOL_TIME_LIMIT.reset(token)
    if limit.expired:
        # The tool swallowed our cancellation and returned late: undo the
        # request so it cannot leak into later awaits, and still report the timeout.
        task.uncancel()
        raise _Failed(TIMEOUT, None)
    return result


def _checked(name: str, raw: object, max_depth: int) -> ToolResult:
    error_type = classify_tool_result(raw, max_depth)
    if type(raw) is not dict and isinstance(raw, dict) and error_type != INVALID_RESULT:
        # A mapping of the tool's own: the agent reads a plain copy, which the
        # classification made sure can be made, so none of its methods runs again.
        raw = dict(raw)
    if error_type is None:
        return cast(ToolResult, raw)
    if error_type == INVALID_RESULT:
        return error_result(_invalid_reason(name, raw, max_depth), INVALID_RESULT)
    result = cast(ToolResult, raw)
    error = result.get("error")
    if not isinstance(error, str):
        error = f"tool {name!r} failed without an error message"
    return {**result, "error": error, "error_type": error_type}


def _invalid_reason(name: str, raw: object, max_depth: int) -> str:
    """Say why a result ``classify_tool_result`` called ``invalid_result`` is none.

    ``raw`` is a plain dict when it has a boolean ``success``: what it holds cannot be
    written then (see ``nests_within``).
    """
    if type(raw) is dict and type(raw.get("success")) is bool:
        return (
            f"tool {name!r} returned a result JSON cannot hold: nested deeper than "
            f"{max_depth} levels ({_SETTING}), or holding a container that cannot be read"
        )
    return f"tool {name!r} returned {type(raw).__name__}, not a dict with a boolean 'success'"
