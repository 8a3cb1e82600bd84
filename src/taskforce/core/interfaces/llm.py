"""The LLM provider port: what an agent may ask of a language model, and what it gets back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal, NotRequired, Protocol, TypedDict, runtime_checkable

__all__ = [
    "ChatMessage",
    "FunctionSchema",
    "LLMProviderProtocol",
    "LLMResult",
    "StreamChunk",
    "StreamingLLMProviderProtocol",
    "ToolCall",
    "ToolSchema",
    "Usage",
]


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
    """Token usage as reported (or estimated) by the provider."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class LLMResult(TypedDict, total=False):
    """What ``complete`` and ``generate`` return.

    ``success`` is always present. On success ``content`` and/or ``tool_calls``
    hold the answer; on failure ``error`` says why. ``usage`` and ``model``
    are present whenever the provider knows them.
    """

    success: bool
    content: str | None
    tool_calls: list[ToolCall]
    usage: Usage
    model: str
    error: str
    error_type: str


class StreamChunk(TypedDict, total=False):
    """One chunk of a streamed completion.

    ``content`` is a text delta. The last chunk has ``done: True`` and carries
    ``usage`` and ``model`` when the provider knows them.
    """

    content: str
    done: bool
    usage: Usage
    model: str


@runtime_checkable
class LLMProviderProtocol(Protocol):
    """A language model behind a uniform, async interface.

    Contract every implementation keeps:

    - Safe to call concurrently from many missions on one event loop; no call
      blocks the loop.
    - A failure of the endpoint (HTTP error, timeout, refusal) is *returned* as
      ``{"success": False, "error": ...}``; only programming errors raise.
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
    :class:`taskforce.errors.LLMProviderError` from the iterator. The caller owns
    the iterator and closes it (``aclose``) when it stops early.
    """

    def stream(
        self,
        messages: Sequence[ChatMessage],
        model: str | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[StreamChunk]:
        """Stream the answer to a chat as text deltas."""
        ...
