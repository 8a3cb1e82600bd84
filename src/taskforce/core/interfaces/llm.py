"""The LLM provider port: what an agent may ask of a language model, and what it gets back.

Also the closed set of LLM error types and the per-attempt report every provider
fills in, so a caller can tell a retried call from a clean one without knowing
the provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, Protocol, TypedDict, get_args, runtime_checkable

__all__ = [
    "LLM_ERROR_TYPES",
    "MAX_COUNT",
    "RETRYABLE_LLM_ERROR_TYPES",
    "UNKNOWN_MODEL",
    "ChatMessage",
    "FunctionSchema",
    "LLMAttempt",
    "LLMErrorType",
    "LLMProviderProtocol",
    "LLMResult",
    "StreamChunk",
    "StreamingLLMProviderProtocol",
    "ToolCall",
    "ToolSchema",
    "Usage",
    "as_count",
    "llm_error_type_of_status",
]

#: Why an LLM call (or one attempt of it) failed; a closed set, used as a label value.
LLMErrorType = Literal[
    "timeout",
    "rate_limit",
    "auth",
    "bad_request",
    "server_error",
    "connection",
    "invalid_response",
    "other",
]

LLM_ERROR_TYPES: tuple[LLMErrorType, ...] = get_args(LLMErrorType)

#: The error types another attempt may cure; ``auth`` and ``bad_request`` never are.
RETRYABLE_LLM_ERROR_TYPES: frozenset[LLMErrorType] = frozenset(
    {"timeout", "rate_limit", "server_error", "connection"}
)

#: The model of a call nothing names (not its result or error, not its ``model`` argument,
#: not the provider's ``model``): the ``model`` of its log lines and of its metric labels.
UNKNOWN_MODEL = "unknown"


def llm_error_type_of_status(status_code: int) -> LLMErrorType:
    """Return the error type of an HTTP status an LLM endpoint answered with.

    Args:
        status_code: the HTTP status of a failed response.

    Returns:
        ``rate_limit`` (429), ``auth`` (401, 403), ``timeout`` (408),
        ``bad_request`` (other 4xx), ``server_error`` (5xx), else ``other``.
    """
    if status_code == 429:
        return "rate_limit"
    if status_code in (401, 403):
        return "auth"
    if status_code == 408:
        return "timeout"
    if 400 <= status_code < 500:
        return "bad_request"
    if 500 <= status_code < 600:
        return "server_error"
    return "other"


@dataclass(frozen=True, slots=True)
class LLMAttempt:
    """One attempt of an LLM call: how it ended, how long it took, how long it waited.

    ``error_type`` is ``None`` for the attempt that succeeded. The backoff
    waited between attempts is in no attempt's ``duration_seconds``: it is the
    ``waited_seconds`` of the attempt after it (0 for the first attempt, and for a
    provider that does not say), so the last attempt started the sum of every
    earlier attempt's duration and of every wait after the call did.
    """

    error_type: LLMErrorType | None
    duration_seconds: float
    waited_seconds: float = 0.0


class ChatMessage(TypedDict):
    """One chat message in OpenAI form (``tool_calls`` as the OpenAI wire format)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None
    tool_calls: NotRequired[list[dict[str, Any]]]
    tool_call_id: NotRequired[str]
    name: NotRequired[str]


class FunctionSchema(TypedDict):
    """The ``function`` part of an OpenAI tool schema."""

    name: str
    description: str
    parameters: dict[str, Any]


class ToolSchema(TypedDict):
    """An OpenAI tool schema: ``{"type": "function", "function": {...}}``."""

    type: Literal["function"]
    function: FunctionSchema


class ToolCall(TypedDict):
    """A tool call the model asked for, arguments already decoded from JSON."""

    id: str
    name: str
    arguments: dict[str, Any]


class Usage(TypedDict, total=False):
    """Token usage as reported (or estimated) by the provider: counts (:func:`as_count`)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


#: The largest count a series takes from a report: the largest whole number a sample (a
#: float64) holds exactly. A larger one is no count of anything real, and one past
#: float64's range (or Python's 4300 digits) would make every later scrape fail.
MAX_COUNT = 2**53


def as_count(value: object) -> int | None:
    """Read a reported count (tokens, bytes) as a series may take it.

    Args:
        value: What a provider or a store reported.

    Returns:
        The count as an ``int`` for an ``int`` (never a ``bool``) or a whole ``float``
        from 0 to :data:`MAX_COUNT`; ``None`` for anything else (negative, fractional,
        not finite, too large, not a number).
    """
    if type(value) is int:
        return value if 0 <= value <= MAX_COUNT else None
    if type(value) is float and value.is_integer() and 0 <= value <= MAX_COUNT:
        return int(value)
    return None


class LLMResult(TypedDict, total=False):
    """What ``complete`` and ``generate`` return.

    ``success`` is always present. On success ``content`` and/or ``tool_calls``
    hold the answer; on failure ``error`` says why and ``error_type`` is one of
    :data:`LLM_ERROR_TYPES`. ``usage`` and ``model`` are present whenever the
    provider knows them. ``attempts`` lists every attempt of the call, oldest
    first, when the provider reports them (both built-in providers do).
    """

    success: bool
    content: str | None
    tool_calls: list[ToolCall]
    usage: Usage
    model: str
    error: str
    error_type: str
    attempts: list[LLMAttempt]


class StreamChunk(TypedDict, total=False):
    """One chunk of a streamed completion.

    ``content`` is a text delta. The last chunk has ``done: True`` and carries
    ``usage`` and ``model`` when the provider knows them, the ``tool_calls``
    assembled from the deltas when the stream was asked with ``tools``, and
    ``attempts`` (every attempt of the call, the last one the stream itself).
    When the call was retried, a provider may send ``{"attempts": [...]}`` alone as
    its first chunk, as soon as the attempts before the stream are over (the same
    list, which it completes when the stream is closed): a consumer who stops
    before the last chunk (a client that went away while the model thought) still
    knows the retries made. A chunk without ``content`` is no text: consumers skip it.
    """

    content: str
    done: bool
    usage: Usage
    model: str
    tool_calls: list[ToolCall]
    attempts: list[LLMAttempt]


@runtime_checkable
class LLMProviderProtocol(Protocol):
    """A language model behind a uniform, async interface.

    Contract every implementation keeps:

    - Safe to call concurrently from many missions on one event loop; no call
      blocks the loop.
    - A failure of the endpoint (HTTP error, timeout, refusal) is *returned* as
      ``{"success": False, "error": ..., "error_type": ...}`` with an
      ``error_type`` of :data:`LLM_ERROR_TYPES`; only programming errors raise.
    - ``model`` in the result is the model actually used: the ``model``
      argument when given, else the provider's default.
    """

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        model: str | None = None,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        """Answer a chat; with ``tools`` the model may return native ``tool_calls``."""
        ...

    async def generate(
        self,
        prompt: str,
        context: Mapping[str, Any] | None = None,
        model: str | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        """Answer a single prompt (optionally with a context mapping) as text."""
        ...


@runtime_checkable
class StreamingLLMProviderProtocol(LLMProviderProtocol, Protocol):
    """A provider that can also stream. Callers pick streaming with ``hasattr(p, "stream")``.

    ``stream`` is an async iterator of :class:`StreamChunk`. A failure *raises*
    :class:`taskforce.errors.LLMProviderError` (with ``error_type`` and
    ``attempts``) from the iterator. The caller owns the iterator and closes it
    (``aclose``) when it stops early. Given ``tools``, the model may answer with
    tool calls, which arrive whole on the last chunk.
    """

    def stream(
        self,
        messages: Sequence[ChatMessage],
        model: str | None = None,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[StreamChunk]:
        """Stream the answer to a chat as text deltas (tool calls on the last chunk)."""
        ...
