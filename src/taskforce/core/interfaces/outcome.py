"""The outcome of one call, decided once: the agents, their logs and the metrics agree.

A tool call or an LLM call is either a success or an error with an
``error_type``. The tool runner, the agents and the observability proxies all
classify a result, a streamed chunk or an exception through these functions, so
the same call has the same outcome and ``error_type`` in the mission's result, in
the log line and in the metrics.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final, NoReturn

from taskforce.core.interfaces.jsonable import (
    MAX_RESULT_DEPTH,
    SCALAR_TYPES,
    as_text,
    nests_within,
)
from taskforce.core.interfaces.llm import LLM_ERROR_TYPES, LLMErrorType
from taskforce.core.interfaces.tools import TOOL_TIMEOUT_CANCEL_MESSAGE, ToolTimeLimit

__all__ = [
    "EMPTY_ANSWER",
    "INVALID_ACTION",
    "INVALID_ARGUMENTS",
    "INVALID_PLAN",
    "INVALID_RESULT",
    "LLM_ERROR_TYPES",
    "LLM_OTHER",
    "MAX_ERROR_TYPE_LENGTH",
    "MISSION_ERROR_TYPES",
    "MISSION_TIMEOUT",
    "STEP_LIMIT",
    "STEP_TURN_LIMIT",
    "TIMEOUT",
    "TOOL_CALL_LIMIT",
    "TOOL_ERROR",
    "UNKNOWN_TOOL",
    "OwnBaseException",
    "UnusableChunk",
    "class_error_type",
    "classify_llm_result",
    "classify_tool_result",
    "exception_error_type",
    "exception_message",
    "is_caller_cancelled",
    "is_unknown_tool_error",
    "label_safe",
    "llm_error_type",
    "llm_exception_error_type",
    "no_answer_within",
    "raise_as_failure",
    "raise_cancellation",
    "retrieve_outcome",
    "stream_chunk_text",
    "tool_calls_problem",
    "tool_exception_error_type",
]

#: A tool returned ``success: false`` without an ``error_type`` of its own.
TOOL_ERROR: Final = "tool_error"
#: A tool returned something that is not a dict with a boolean ``success``.
INVALID_RESULT: Final = "invalid_result"
#: The model asked for a tool that is not registered.
UNKNOWN_TOOL: Final = "unknown_tool"
#: A call ran past its time limit.
TIMEOUT: Final = "timeout"
#: A tool call refused because of its arguments (by the tool, or, when they are not a
#: JSON object, before the tool runs).
INVALID_ARGUMENTS: Final = "InvalidArguments"
#: An LLM result that failed without a usable ``error_type``.
LLM_OTHER: Final = "other"
_LLM_ERROR_TYPES = frozenset(LLM_ERROR_TYPES)

# A mission that fails with no failed call to blame has one of these ``error_type``s.
#: The mission used up ``agent.max_steps`` LLM turns.
STEP_LIMIT: Final = "step_limit"
#: One step of a legacy plan used up its LLM turns without finishing.
STEP_TURN_LIMIT: Final = "step_turn_limit"
#: The model asked for more tool calls in one turn than ``agent.max_tool_calls_per_turn``
#: (lean; a legacy action is one call).
TOOL_CALL_LIMIT: Final = "tool_call_limit"
#: The model's plan (legacy) could not be read.
INVALID_PLAN: Final = "invalid_plan"
#: The model's action (legacy) could not be read, again after being told why.
INVALID_ACTION: Final = "invalid_action"
#: The model answered with neither text nor tool calls (lean), or finished the last step
#: of its plan with a blank answer (legacy).
EMPTY_ANSWER: Final = "empty_answer"
#: The mission's agent run outlasted ``agent.mission_timeout_seconds`` and was stopped
#: (``timeout`` is only ever a failed LLM or tool call's).
MISSION_TIMEOUT: Final = "mission_timeout"
#: Every ``error_type`` of a mission that failed on its own, without a failed call.
MISSION_ERROR_TYPES: Final = (
    STEP_LIMIT,
    STEP_TURN_LIMIT,
    TOOL_CALL_LIMIT,
    INVALID_PLAN,
    INVALID_ACTION,
    EMPTY_ANSWER,
    MISSION_TIMEOUT,
)

# taskforce.errors.ToolTimeoutError is not a TimeoutError subclass; matching it
# by name keeps this module free of imports from outside core.interfaces.
_TIMEOUT_CLASS_NAMES = frozenset({"ToolTimeoutError"})
_UNKNOWN_TOOL_CLASS_NAMES = frozenset({"ToolNotFoundError"})
#: Characters an ``error_type`` keeps; the label guard cuts every label value here too,
#: so the log line and the metric carry the same value however long a type name is.
MAX_ERROR_TYPE_LENGTH = 128
# What an exception whose message cannot be read is reported as ({} is its class).
_UNREADABLE_MESSAGE = "<the message of this {} could not be read>"


def is_caller_cancelled(exc: BaseException, own_requests: int = 0) -> bool:
    """Tell whether ``exc`` ends a call without an outcome of its own.

    That is the case when the task running the call was asked to cancel (its
    ``cancelling()`` count is above ``own_requests``, the requests the call's own
    machinery made, such as a time limit that fired), however the call ended: a tool
    that catches the cancellation and raises something else (``SystemExit``, a
    ``ValueError``) does not turn it into a failure. It is also the case for an
    interrupt of the process: a ``KeyboardInterrupt`` itself, what Python raises for
    Ctrl-C. The mission stops, and the call is neither a success nor a failure. Anything
    else a call raises is its failure, even a ``CancelledError`` that a tool or provider
    raised itself while nobody asked the task to cancel (an inner task of its own was
    cancelled), ``SystemExit``, ``GeneratorExit``, and a subclass of ``KeyboardInterrupt``
    (no signal raises one: it is the tool's or provider's own): a failing call must not
    stop the mission as if it were cancelled, nor the process.

    Args:
        exc: What the call raised.
        own_requests: The task's cancellation requests that are not the caller's.

    Returns:
        ``True`` when the call must end as the cancellation or interruption it is (see
        :func:`raise_cancellation`).
    """
    if type(exc) is KeyboardInterrupt:
        return True
    task = asyncio.current_task()
    if task is None:
        return isinstance(exc, asyncio.CancelledError)
    return task.cancelling() > own_requests


def raise_cancellation(exc: BaseException) -> NoReturn:
    """Raise what a call that :func:`is_caller_cancelled` says was cancelled goes on up as.

    Args:
        exc: What the call raised.

    Raises:
        asyncio.CancelledError: ``exc`` itself, or a new one chained to what the tool or
            provider made of the cancellation (the mission was cancelled all the same).
        KeyboardInterrupt: ``exc`` itself (an interrupt of the process).
    """
    if isinstance(exc, asyncio.CancelledError) or type(exc) is KeyboardInterrupt:
        raise exc
    raise asyncio.CancelledError from exc


class OwnBaseException(Exception):
    """A ``BaseException`` a part raised of its own, carried as the ``Exception`` it fails with.

    ``SystemExit``, ``GeneratorExit`` or another ``BaseException`` that is no
    ``Exception``, raised by a state store of one's own, passes every ``except
    Exception``; out of a task, asyncio hands ``SystemExit`` to the event loop, which
    stops the service. Raised in its place (see :func:`raise_as_failure`), it fails the
    one call as any error does. Its message is the original's; its ``error_type`` (see
    :func:`exception_error_type`) is the original's class name.

    Attributes:
        raised: What the part raised.
    """

    def __init__(self, raised: BaseException) -> None:
        self.raised = raised
        super().__init__(exception_message(raised))


def raise_as_failure(exc: BaseException) -> NoReturn:
    """Raise what a call that raised ``exc`` fails with, once it is no caller's cancellation.

    Args:
        exc: What the call raised.

    Raises:
        BaseException: ``exc`` itself when it is an ``Exception``, the caller's
            cancellation or an interrupt of the process (:func:`is_caller_cancelled`);
            else an :class:`OwnBaseException` carrying it.
    """
    if isinstance(exc, Exception) or is_caller_cancelled(exc):
        raise exc
    raise OwnBaseException(exc) from exc


def retrieve_outcome(task: asyncio.Future[Any]) -> None:
    """Take the outcome of a finished task that nobody awaits (as a done callback).

    asyncio reports an exception nobody retrieved when the task is collected ("Task
    exception was never retrieved"); a task whose outcome is read elsewhere, or not at
    all on purpose (a check given up, a write abandoned), takes it here. A cancelled
    task has none to take.

    Args:
        task: A finished task or future.
    """
    if not task.cancelled():
        task.exception()


def tool_exception_error_type(exc: BaseException, limit: ToolTimeLimit | None) -> str | None:
    """Return the ``error_type`` of a tool call that raised ``exc``, if it has one.

    Args:
        exc: What the call raised (or what it was cancelled with).
        limit: The call's time limit (``TOOL_TIME_LIMIT``), ``None`` outside the tool
            runner.

    Returns:
        ``None`` when the call has no outcome (:func:`is_caller_cancelled`; once the time
        limit fired, its own request and those the task had when the call started do
        not count as the mission's); else ``timeout`` when the limit fired
        (``limit.expired``, or a cancellation with ``TOOL_TIMEOUT_CANCEL_MESSAGE``),
        however the tool ended, else :func:`exception_error_type`.
    """
    expired = (limit is not None and limit.expired) or (
        isinstance(exc, asyncio.CancelledError) and _is_timeout_message(exc.args)
    )
    own_requests = ((0 if limit is None else limit.baseline) + 1) if expired else 0
    if is_caller_cancelled(exc, own_requests):
        return None
    return TIMEOUT if expired else exception_error_type(exc)


def _is_timeout_message(args: tuple[object, ...]) -> bool:
    """Whether a cancellation's ``args`` are the tool time limit's.

    Compared as plain text: an argument of the tool's own whose ``==`` raises is no
    time limit, and must not make reading the outcome raise.
    """
    first = args[0] if args else None
    return type(first) is str and first == TOOL_TIMEOUT_CANCEL_MESSAGE


def is_unknown_tool_error(exc: BaseException) -> bool:
    """Tell whether ``exc`` is what ``ToolRegistryProtocol.get`` raises for an unknown name.

    Args:
        exc: What ``get`` raised.

    Returns:
        ``True`` for ``taskforce.errors.ToolNotFoundError`` (recognised by
        name) and ``KeyError``, which a plain mapping-backed registry raises.
    """
    return isinstance(exc, KeyError) or type(exc).__name__ in _UNKNOWN_TOOL_CLASS_NAMES


def no_answer_within(seconds: float, setting: str, *, what: str = "answer") -> str:
    """Say that a call ran out of time, and which setting's limit it was.

    A deadline's ``TimeoutError`` has no message of its own; every place that reports
    one (a store's call or check, ``/health``, an LLM call) says it in these words.

    Args:
        seconds: The limit, as configured.
        setting: The setting that holds it, e.g. ``state.timeout_seconds``.
        what: What did not come, e.g. ``complete answer`` for a stream cut short.

    Returns:
        ``no answer within N s (setting)``.
    """
    return f"no {what} within {seconds:g} s ({setting})"


def exception_message(exc: BaseException) -> str:
    """Return ``str(exc)``, or a placeholder naming its class when that raises.

    A tool's or provider's own exception may fail to print; what reports it (the failed
    call's error, a log line) must still be made (see :func:`as_text`).

    Args:
        exc: Any exception.

    Returns:
        Its message, or ``<the message of this X could not be read>``.
    """
    return as_text(exc, _UNREADABLE_MESSAGE)


def exception_error_type(exc: BaseException) -> str:
    """Return the ``error_type`` of a call that raised ``exc``.

    Args:
        exc: What the call raised.

    Returns:
        ``timeout`` for ``TimeoutError`` and ``ToolTimeoutError``, else the
        exception's class name (its first :data:`MAX_ERROR_TYPE_LENGTH` characters);
        for an :class:`OwnBaseException`, that of what it carries.
    """
    if isinstance(exc, OwnBaseException):
        exc = exc.raised
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    name = type(exc).__name__
    return TIMEOUT if name in _TIMEOUT_CLASS_NAMES else label_safe(name)


def class_error_type(exc: BaseException) -> str:
    """Return the ``error_type`` of a failure that is no call's: the class name of ``exc``.

    A crash of the agent loop, or a state store's failure, is named by its class whatever
    it is, a ``TimeoutError`` too: ``timeout`` says a tool or LLM call failed, and the
    mission's result would send an operator looking for one.

    Args:
        exc: What was raised.

    Returns:
        The class name, as a label keeps it (:func:`label_safe`); for an
        :class:`OwnBaseException`, that of what it carries.
    """
    if isinstance(exc, OwnBaseException):
        exc = exc.raised
    return label_safe(type(exc).__name__)


def classify_tool_result(result: object, max_depth: int = MAX_RESULT_DEPTH) -> str | None:
    """Classify what a tool's ``execute`` returned.

    Args:
        result: The returned value, whatever it is.
        max_depth: The deepest nesting a result may have (``agent.max_result_depth``),
            at most :data:`~taskforce.core.interfaces.jsonable.MAX_WRITTEN_DEPTH`.

    Returns:
        ``None`` for a success (a dict whose ``success`` is ``True``); else the
        ``error_type``: ``invalid_result`` for a dict of the tool's own class that cannot
        be read or copied (its ``get`` or ``keys`` raise), and for a result, success or
        failure, that no JSON writer can write: nested deeper than ``max_depth`` levels
        of dicts, lists and tuples, or holding a container of its own that cannot be read
        (:func:`~taskforce.core.interfaces.jsonable.nests_within`); the tool's own (a
        non-empty string, cut to
        :data:`MAX_ERROR_TYPE_LENGTH` characters, a character UTF-8 cannot encode
        replaced by ``?``), ``tool_error`` when it gave none or gave
        ``unknown_tool`` (reserved for a name no tool has: a tool that runs is
        not unknown), or ``invalid_result`` when ``result`` is not a dict with a
        boolean ``success``.
    """
    if type(result) is dict and result.get("success") is True:
        # most calls: a plain dict cannot fail to be read, only nest too deep, which one
        # of plain values (most results, and the path every call takes) cannot either
        for value in result.values():
            if type(value) not in SCALAR_TYPES:
                return None if nests_within(result, max_depth) else INVALID_RESULT
        return None
    try:
        if not isinstance(result, dict):  # which reads the class: a value's own may raise
            return INVALID_RESULT
        # what the tool runner hands on is a plain copy: it must be made
        plain = result if type(result) is dict else dict(result)
        success = result.get("success")
        error_type = result.get("error_type") if success is False else None
    except Exception:  # a mapping of the tool's own that cannot be read: no tool result
        return INVALID_RESULT
    if not nests_within(plain, max_depth):
        return INVALID_RESULT
    if success is True:
        return None
    if success is not False:
        return INVALID_RESULT
    text = _plain_text(error_type)
    if text and text != UNKNOWN_TOOL:
        return label_safe(text)
    return TOOL_ERROR


def _plain_text(value: object) -> str | None:
    """``value`` as plain ``str`` if it is text (a subclass of the caller's own may compare or
    print as it likes), else None; never raises (``isinstance`` reads a class that may)."""
    try:
        return str.__str__(value) if isinstance(value, str) else None
    except Exception:
        return None


def label_safe(text: str) -> str:
    """``text`` as a label value keeps it: cut to :data:`MAX_ERROR_TYPE_LENGTH` characters,
    a character UTF-8 cannot encode (a lone surrogate) replaced by ``?``.

    The label guard normalizes every value with it, and the outcome functions their
    ``error_type``: the mission's result and the log line carry the value the metric does.
    """
    text = text[:MAX_ERROR_TYPE_LENGTH]
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return text.encode("utf-8", "replace").decode("utf-8")
    return text


def classify_llm_result(result: object) -> str | None:
    """Classify what a provider's ``complete`` or ``generate`` returned.

    Args:
        result: The returned value, whatever it is.

    Returns:
        ``None`` for a success (a dict whose ``success`` is ``True``); else one
        of :data:`LLM_ERROR_TYPES`: the provider's own ``error_type`` when it
        is one of them, ``invalid_response`` when ``result`` is not a dict
        with a boolean ``success``, or is a success whose ``content`` is a true
        value that is no string (as :func:`stream_chunk_text` fails such a streamed
        text delta: the agents read it as text) or whose ``tool_calls`` cannot be run
        (:func:`tool_calls_problem`), else ``other``.
    """
    if type(result) is dict and result.get("success") is True:
        content = result.get("content")
        calls = result.get("tool_calls")
        if content is None or type(content) is str:
            if calls is None:
                return None  # most calls
            if type(calls) is list:
                # A turn that calls tools. Plain dicts with a plain ``str`` name (what
                # providers give) can be run and cannot fail to be read, so no further
                # look is due. A loop here, not a function: this runs per LLM call.
                for call in calls:
                    if type(call) is not dict or type(call.get("name")) is not str:
                        break
                else:
                    return None
    try:
        if not isinstance(result, dict):  # which reads the class: a value's own may raise
            return "invalid_response"
        success = result.get("success")
        error_type = result.get("error_type") if success is False else None
        if success is True:
            content = result.get("content")
            # a text of the provider's own class is text; a false value holds none
            if content and not isinstance(content, str):
                return "invalid_response"
            if tool_calls_problem(result.get("tool_calls")) is not None:
                return "invalid_response"
            return None
    except Exception:  # a mapping or a content of the provider's own that cannot be read
        return "invalid_response"
    if success is not False:
        return "invalid_response"
    return llm_error_type(error_type)


def tool_calls_problem(calls: object) -> str | None:
    """Say why the ``tool_calls`` of a successful answer (or of a stream's last chunk)
    cannot be run, as the OpenAI-compatible provider fails such an answer.

    Args:
        calls: The ``tool_calls`` the provider gave, whatever they are.

    Returns:
        ``None`` when they can be run: none (a false value, as the OpenAI SDK reads
        one), or a list or tuple of dicts that each have a ``name`` that is a string
        (:class:`~taskforce.core.interfaces.llm.ToolCall`; what the ``arguments`` are is
        the tool runner's to judge); else what is wrong with them, for a message that
        says ``the provider answered ...``.

    Raises:
        Exception: reading them (their truth, an entry's ``get``) raised.
    """
    if not calls:
        return None
    if not isinstance(calls, list | tuple):
        return f"tool calls as a {type(calls).__name__}, not a list"
    for call in calls:
        if not isinstance(call, dict):
            return f"a tool call that is a {type(call).__name__}, not a dict"
        name = call.get("name")
        if not isinstance(name, str):
            what = "no name" if name is None else f"a {type(name).__name__} as its name"
            return f"a tool call with {what} (a tool call is {{id, name, arguments}})"
    return None


class UnusableChunk(Exception):
    """A streamed chunk no result can be made of; the message says why.

    The agents fail the call at such a chunk as an LLM error of type
    :attr:`error_type`; the stream proxy counts a stream that ended at one as that
    error.
    """

    #: The LLM ``error_type`` of a call that streamed an unusable chunk.
    error_type: Final[LLMErrorType] = "invalid_response"


def stream_chunk_text(chunk: object) -> str | None:
    """Read one chunk of a provider's ``stream`` as the agents use it: its text delta.

    Called for every chunk by the agents, and for the last chunk read by the stream
    proxy, so both say the same of a stream: it is unusable, and the call an error
    ``invalid_response``, at the first chunk this raises for.

    Args:
        chunk: What the stream yielded, whatever it is.

    Returns:
        ``None`` for the chunk that ends the stream (a true ``done``): its tool calls,
        usage and attempt report are the result's, and its ``content``, if any, is no
        delta. Else its ``content`` when that is a non-empty string (the same object),
        or ``""`` when it carries no text (``content`` missing, empty or anything else
        that is false, as on an attempt report ``{"attempts": [...]}``).

    Raises:
        UnusableChunk: ``chunk`` is no dict, its ``content`` is a true value that is no
            string, it ends the stream with ``tool_calls`` that cannot be run
            (:func:`tool_calls_problem`), or reading it (``get``, a value's truth, its
            class) raises.
    """
    try:
        if isinstance(chunk, dict):
            if chunk.get("done"):
                why = tool_calls_problem(chunk.get("tool_calls"))
                if why is None:
                    return None
                raise UnusableChunk(why)
            text = chunk.get("content")
            if not text:
                return ""
            if isinstance(text, str):
                return text
            why = f"a {type(text).__name__} as text, not a string"
        else:
            why = f"a {type(chunk).__name__}, not a chunk"
    except UnusableChunk:
        raise
    except Exception as exc:  # a mapping or a value of the provider's own that cannot be read
        why = f"a chunk that cannot be read ({type(exc).__name__})"
    raise UnusableChunk(why)


def llm_error_type(error_type: object) -> str:
    """Read an LLM ``error_type`` of the provider's (a result's, an attempt report's).

    Args:
        error_type: The value the provider gave, whatever it is.

    Returns:
        ``error_type`` as plain text if it is one of :data:`LLM_ERROR_TYPES`, else
        ``other``; anything else (unhashable, a text whose ``==`` raises) is ``other``
        too: reading an outcome never raises.
    """
    text = _plain_text(error_type)
    return text if text in _LLM_ERROR_TYPES else LLM_OTHER


def llm_exception_error_type(exc: BaseException) -> str:
    """Return the ``error_type`` of an LLM call that raised ``exc``.

    Args:
        exc: What the provider raised (a stream raises its failures).

    Returns:
        The exception's own ``error_type`` attribute when it is one of
        :data:`LLM_ERROR_TYPES` (``LLMProviderError`` carries one), ``timeout``
        for a ``TimeoutError``, else ``other``.
    """
    try:
        error_type = getattr(exc, "error_type", None)
    except Exception:  # a property of the provider's own exception that raises
        error_type = None
    if error_type is not None and (found := llm_error_type(error_type)) != LLM_OTHER:
        return found
    return "timeout" if isinstance(exc, TimeoutError) else LLM_OTHER
