"""An LLM provider for any OpenAI-compatible chat completions endpoint, on the official SDK.

Retries are ours (exponential backoff on connection errors, timeouts, 408/409/429
and 5xx); the SDK's own retries are switched off so there is one retry policy.
The API key never appears in a returned error, a raised error or a log line.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncGenerator, Mapping, Sequence
from types import TracebackType
from typing import Any, cast

import openai
from openai.types import CompletionUsage
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionMessageParam,
    ChatCompletionToolChoiceOptionParam,
    ChatCompletionToolUnionParam,
)

from taskforce.core.interfaces.llm import (
    ChatMessage,
    LLMResult,
    StreamChunk,
    ToolCall,
    ToolSchema,
    Usage,
)
from taskforce.errors import LLMProviderError
from taskforce.infrastructure.llm._retry import RetryPolicy, is_retryable

__all__ = ["OpenAICompatibleProvider"]

_PROVIDER = "openai"
#: The SDK insists on a key; a keyless local endpoint gets this instead of
#: ``OPENAI_API_KEY``, which must never leak to an arbitrary ``base_url``.
_NO_KEY = "unused"


def _usage(usage: CompletionUsage | None) -> Usage | None:
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


class OpenAICompatibleProvider:
    """A provider for OpenAI's API and compatible servers (vLLM, Ollama, LiteLLM, ...).

    Safe to share between concurrent missions: it holds one ``AsyncOpenAI``
    client and no per-call state. ``complete``/``generate`` return failures as
    ``{"success": False, "error": ..., "error_type": <SDK exception class>}``;
    ``stream`` raises :class:`~taskforce.errors.LLMProviderError`. Close it with
    :meth:`aclose` or ``async with``.
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str | None = None,
        timeout_seconds: float = 60.0,
        max_retries: int = 2,
        *,
        backoff_base_seconds: float = 0.5,
        backoff_max_seconds: float = 8.0,
    ) -> None:
        """Create the provider and its HTTP client.

        Args:
            model: the model used when a call names none.
            base_url: the API root, e.g. ``https://api.openai.com/v1``.
            api_key: sent as ``Authorization: Bearer``; ``None`` for keyless servers.
            timeout_seconds: time limit of one HTTP attempt.
            max_retries: extra attempts after a retryable failure.
            backoff_base_seconds: the first retry waits this long, each next one twice as long.
            backoff_max_seconds: upper bound of one wait (also caps ``Retry-After``).

        Raises:
            ValueError: an argument is empty, negative or not finite.
        """
        if not model:
            raise ValueError("model must be a non-empty string")
        if not base_url:
            raise ValueError("base_url must be a non-empty string")
        if not (math.isfinite(timeout_seconds) and timeout_seconds > 0):
            raise ValueError(f"timeout_seconds must be > 0, got {timeout_seconds!r}")
        self._model = model
        self._api_key = api_key or None
        self._retry = RetryPolicy(max_retries, backoff_base_seconds, backoff_max_seconds)
        self._client = openai.AsyncOpenAI(
            api_key=api_key or _NO_KEY,
            base_url=base_url,
            timeout=timeout_seconds,
            max_retries=0,
        )

    @property
    def model(self) -> str:
        """The default model name."""
        return self._model

    def __repr__(self) -> str:
        # Spelled out so the key held by the client can never show up in a repr.
        base_url = str(self._client.base_url)
        return f"OpenAICompatibleProvider(model={self._model!r}, base_url={base_url!r})"

    async def aclose(self) -> None:
        """Close the HTTP client; the provider cannot be used afterwards."""
        await self._client.close()

    async def __aenter__(self) -> OpenAICompatibleProvider:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        model: str | None = None,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        """Send a chat completion request.

        Args:
            messages: the conversation in OpenAI form.
            model: the model to ask for; defaults to the provider's model.
            tools: tool schemas the model may call.
            tool_choice: ``"auto"``, ``"none"`` or ``"required"``; passed through.
            **kwargs: further ``chat.completions.create`` parameters (``temperature``, ...).

        Returns:
            The answer with decoded ``tool_calls``, or a failure result when the
            endpoint fails after retries or returns tool arguments that are not
            a JSON object.
        """
        asked = model or self._model
        extra: dict[str, Any] = dict(kwargs)
        if tools:
            extra["tools"] = cast("list[ChatCompletionToolUnionParam]", list(tools))
        if tool_choice is not None:
            extra["tool_choice"] = cast("ChatCompletionToolChoiceOptionParam", tool_choice)
        return await self._complete(list(messages), asked, extra, with_tool_calls=True)

    async def generate(
        self,
        prompt: str,
        context: Mapping[str, Any] | None = None,
        model: str | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        """Answer a single prompt; ``context`` goes before it as a JSON system message.

        Args:
            prompt: the user prompt.
            context: extra facts for the model, rendered as JSON.
            model: the model to ask for; defaults to the provider's model.
            **kwargs: further ``chat.completions.create`` parameters.

        Returns:
            The answer as ``content``, or a failure result.
        """
        messages: list[ChatMessage] = []
        if context:
            rendered = json.dumps(dict(context), default=str, sort_keys=True)
            messages.append({"role": "system", "content": f"Context (JSON):\n{rendered}"})
        messages.append({"role": "user", "content": prompt})
        return await self._complete(messages, model or self._model, dict(kwargs), False)

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        model: str | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[StreamChunk, None]:
        """Stream the answer to a chat as text deltas.

        Args:
            messages: the conversation in OpenAI form.
            model: the model to ask for; defaults to the provider's model.
            **kwargs: further ``chat.completions.create`` parameters.

        Yields:
            ``{"content": delta}`` chunks, then ``{"done": True, "usage": ..., "model": ...}``.

        Raises:
            LLMProviderError: the request failed after retries, or the stream broke.
        """
        asked = model or self._model
        params = cast("list[ChatCompletionMessageParam]", list(messages))
        try:
            response = await self._retry.run(
                lambda: self._client.chat.completions.create(
                    messages=params,
                    model=asked,
                    stream=True,
                    stream_options={"include_usage": True},
                    **kwargs,
                ),
                provider=_PROVIDER,
            )
        except openai.OpenAIError as exc:
            raise self._provider_error(exc) from exc
        usage: Usage | None = None
        reported = asked
        try:
            chunks = response.__aiter__()
            while True:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    # Mid-stream faults come from the SDK and its HTTP layer alike
                    # (their classes are not all OpenAIError); all mean "stream broke".
                    raise self._provider_error(exc) from exc
                reported = chunk.model or reported
                usage = _usage(chunk.usage) or usage
                for choice in chunk.choices:
                    if choice.delta.content:
                        yield {"content": choice.delta.content}
        finally:
            await response.close()
        done: StreamChunk = {"done": True, "model": reported}
        if usage is not None:
            done["usage"] = usage
        yield done

    async def _complete(
        self,
        messages: list[ChatMessage],
        asked: str,
        extra: dict[str, Any],
        with_tool_calls: bool,
    ) -> LLMResult:
        params = cast("list[ChatCompletionMessageParam]", messages)
        try:
            response: ChatCompletion = await self._retry.run(
                lambda: self._client.chat.completions.create(messages=params, model=asked, **extra),
                provider=_PROVIDER,
            )
        except openai.OpenAIError as exc:
            return self._failure(str(exc), type(exc).__name__, asked)
        reported = response.model or asked
        if not response.choices:
            return self._failure("the response holds no choices", "LLMProviderError", reported)
        message = response.choices[0].message
        result: LLMResult = {"success": True, "content": message.content, "model": reported}
        if with_tool_calls:
            calls: list[ToolCall] = []
            for raw in message.tool_calls or []:
                if raw.type != "function":
                    error = f"unsupported tool call type {raw.type!r}"
                    return self._failure(error, "LLMProviderError", reported)
                name = raw.function.name
                try:
                    arguments = json.loads(raw.function.arguments or "{}")
                except json.JSONDecodeError as exc:
                    error = f"tool call {name!r} has arguments that are not JSON ({exc.msg})"
                    return self._failure(error, "LLMProviderError", reported)
                if not isinstance(arguments, dict):
                    error = f"tool call {name!r} has arguments that are not a JSON object"
                    return self._failure(error, "LLMProviderError", reported)
                calls.append({"id": raw.id, "name": name, "arguments": arguments})
            result["tool_calls"] = calls
        usage = _usage(response.usage)
        if usage is not None:
            result["usage"] = usage
        return result

    def _redact(self, text: str) -> str:
        if self._api_key:
            return text.replace(self._api_key, "***")
        return text

    def _failure(self, error: str, error_type: str, model: str) -> LLMResult:
        return {
            "success": False,
            "error": self._redact(error),
            "error_type": error_type,
            "model": model,
        }

    def _provider_error(self, exc: Exception) -> LLMProviderError:
        retryable = is_retryable(exc)
        message = self._redact(f"{type(exc).__name__}: {exc}")
        return LLMProviderError(message, provider=_PROVIDER, retryable=retryable)
