"""An LLM provider for any OpenAI-compatible chat completions endpoint, on the official SDK.

Retries are ours (exponential backoff on connection errors, timeouts, 429 and 5xx,
``retry-after-ms`` or ``Retry-After`` honoured up to a cap, ``x-should-retry`` obeyed
within the attempt budget, except that ``auth`` and ``bad_request`` are never retried);
the SDK's own retries are switched off so there is one
retry policy. ``timeout_seconds`` is the deadline of one whole
attempt, headers and body (for a stream: the whole stream), not only of a read.
The API key never appears in a returned error, a raised error or a log line.
The HTTP client and its capped bodies, the reading of server-sent events, the SDK's chat
types, stream reading, and the classifying and reporting of failures live in the sibling
``_openai_*`` modules.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import replace
from time import perf_counter
from types import TracebackType
from typing import Any, cast

import structlog
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam

from taskforce.core.interfaces.llm import (
    ChatMessage,
    LLMAttempt,
    LLMErrorType,
    LLMResult,
    StreamChunk,
    ToolSchema,
    Usage,
)
from taskforce.core.interfaces.log import secret_scrubber
from taskforce.core.interfaces.outcome import label_safe
from taskforce.errors import LLMProviderError
from taskforce.infrastructure.llm._openai_chat import (
    _added,
    _answer,
    _ended_by_error,
    _extra,
    _usage,
)
from taskforce.infrastructure.llm._openai_errors import (
    _ErrorInAnswer,
    _InvalidResponse,
    _StreamCut,
)
from taskforce.infrastructure.llm._openai_failures import (
    _classify,
    _Failures,
    _hint_in,
    _is_in_stream_error,
    _server_hint,
)
from taskforce.infrastructure.llm._openai_http import DEFAULT_MAX_RESPONSE_BYTES, _http_client
from taskforce.infrastructure.llm._openai_sse import _EventStreamClient
from taskforce.infrastructure.llm._openai_stream import (
    _completion_of_events,
    _End,
    _is_events,
    _json_kind,
    _opening,
    _StreamState,
    _usage_after_error,
)
from taskforce.infrastructure.llm._retry import RetryHint, RetryPolicy, elapsed_since

__all__ = ["OpenAICompatibleProvider"]

_PROVIDER = "openai"
_LOG = structlog.get_logger(__name__)
#: The finish reasons of an answer the model did not finish: cut at the token limit
#: (``max_tokens``), or left out by the server's content filter.
_INCOMPLETE = frozenset({"length", "content_filter"})
#: Requested models whose resolution the provider remembers; more and it starts over.
_MAX_RESOLVED = 1024
#: What ends a stream after its finish_reason as the answer it delivered, not as a failure:
#: the connection dropped, or stayed open past the deadline, before the usage or [DONE].
_AFTER_THE_ANSWER: frozenset[LLMErrorType] = frozenset({"connection", "timeout"})
#: The SDK insists on a key; a keyless local endpoint gets this instead of
#: ``OPENAI_API_KEY``, which must never leak to an arbitrary ``base_url``.
_NO_KEY = "unused"


class OpenAICompatibleProvider:
    """A provider for OpenAI's API and compatible servers (vLLM, Ollama, LiteLLM, ...).

    Safe to share between concurrent missions: it holds one ``AsyncOpenAI``
    client and no per-call state. ``complete``/``generate`` return failures as
    ``{"success": False, "error": ..., "error_type": ...}`` (an LLM error type);
    ``stream`` raises :class:`~taskforce.errors.LLMProviderError`. Every result,
    last stream chunk and raised error carries ``attempts``. Close it with
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
        retry_after_max_seconds: float = 30.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        """Create the provider and its HTTP client.

        Args:
            model: the model used when a call names none.
            base_url: the API root, e.g. ``https://api.openai.com/v1``.
            api_key: sent as ``Authorization: Bearer``; ``None`` for keyless servers.
            timeout_seconds: deadline of one whole attempt (headers and body; for a
                stream, the whole stream).
            max_retries: extra attempts after a retryable failure.
            backoff_base_seconds: the first retry waits this long, each next one twice as long.
            backoff_max_seconds: upper bound of one backoff wait.
            retry_after_max_seconds: upper bound of a wait a server asks for
                (``retry-after-ms`` or ``Retry-After``).
            max_response_bytes: the most bytes one attempt's answer may have (a stream's
                whole body); a longer one fails the attempt as ``invalid_response``.

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
        # model asked for -> the model the server last answered it with (bounded): what a
        # failed call, which the server names no model for, is reported as
        self._resolved: dict[str, str] = {}
        # The key never leaves in an error message (a server may quote it back).
        self._redact_key = secret_scrubber([api_key] if api_key else [])
        self._timeout = timeout_seconds
        self._failures = _Failures(_PROVIDER, self._redact_key, timeout_seconds)
        self._retry = RetryPolicy(
            max_retries, backoff_base_seconds, backoff_max_seconds, retry_after_max_seconds
        )
        if max_response_bytes < 1:
            raise ValueError(f"max_response_bytes must be at least 1, got {max_response_bytes}")
        self._client = _EventStreamClient(
            api_key=api_key or _NO_KEY,
            base_url=base_url,
            timeout=timeout_seconds,
            max_retries=0,
            http_client=_http_client(max_response_bytes),
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
            a JSON object (``error_type="invalid_response"``).
        """
        asked = model or self._model
        extra = _extra(kwargs, tools, tool_choice)
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
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[StreamChunk, None]:
        """Stream the answer to a chat as text deltas, usage asked for on the last chunk.

        A failure before the first chunk that carries something (text, a tool call,
        reasoning, a refusal, the end, usage) is retried like any call: the role-only
        chunk servers send first, and keep-alives, do not count. After it the stream is
        not retried. The deadline covers the whole stream.

        Args:
            messages: the conversation in OpenAI form.
            model: the model to ask for; defaults to the provider's model.
            tools: tool schemas the model may call; the calls, assembled from
                their deltas, arrive on the last chunk.
            tool_choice: passed through.
            **kwargs: further ``chat.completions.create`` parameters.

        Yields:
            ``{"attempts": [...]}`` first when the call was retried, ``{"content": delta}``
            chunks, then
            ``{"done": True, "usage": ..., "model": ..., "attempts": [...]}`` (and
            ``tool_calls`` when asked with tools); ``usage`` adds what the attempts
            retried after an error that ended their answers reported.

        Raises:
            LLMProviderError: the request failed after retries, was answered without
                server-sent events or with an event that is not a JSON object
                (``invalid_response``), the stream broke or ended
                before a ``finish_reason`` (``connection``) or ran past its deadline,
                or its tool calls cannot be decoded; ``error_type`` and ``attempts``
                say which and how often, ``model`` the model its chunks named (else
                the one the model asked for resolved to), ``usage`` what the stream
                reported before it failed, if anything (also after a ``finish_reason: "error"``: a
                router bills the answer its error ended), with what the attempts
                retried after such an error reported. A connection that drops after the
                ``finish_reason`` (before the usage or ``[DONE]``), or stays open past
                the deadline, ends the stream as the answer it delivered, not as an error.
                With the ``finish_reason`` and the usage read, the stream is not read on
                (a server that holds it open before ``[DONE]`` does not hold the call up).
        """
        asked = model or self._model
        params = cast("list[ChatCompletionMessageParam]", list(messages))
        extra = _extra(kwargs, tools, tool_choice)
        attempts: list[LLMAttempt] = []
        loop = asyncio.get_running_loop()
        opened = 0.0
        # An error object in a 2xx stream (an in-stream 429) and what its response's
        # headers say about a retry: the SDK's error carries no response to read them from.
        in_stream: tuple[BaseException, RetryHint] | None = None
        # The usage the attempts that failed reported: billed, also when retried.
        billed: Usage | None = None

        def server_hint(exc: Exception) -> RetryHint:
            if in_stream is not None and in_stream[0] is exc:
                return in_stream[1]
            return _server_hint(exc)

        async def open_attempt() -> tuple[Any, Any, list[ChatCompletionChunk | _End], float]:
            # The attempt keeps its own deadline (not the retry policy's), so that the
            # usage read after an error that ended the answer stops at it, and the
            # attempt fails as that error, not as a timeout.
            nonlocal opened, in_stream, billed
            opened = perf_counter()
            deadline = loop.time() + self._timeout
            async with asyncio.timeout_at(deadline):
                response = await self._client.chat.completions.create(
                    messages=params,
                    model=asked,
                    stream=True,
                    stream_options={"include_usage": True},
                    **extra,
                )
            chunks = response.__aiter__()
            # Read up to the first chunk that carries something: an error after a role-only
            # chunk or a keep-alive (an in-stream 429) is retried like one before any chunk.
            try:
                try:
                    async with asyncio.timeout_at(deadline):
                        held = await _opening(chunks, response.response.headers, self._redact_key)
                except _ErrorInAnswer as exc:
                    # The answer ended by an error: what the server billed may follow it.
                    exc.usage = await _usage_after_error(chunks, exc.usage, deadline)
                    billed = _added(billed, exc.usage)
                    raise
            except BaseException as exc:
                await response.close()
                if _is_in_stream_error(exc):
                    in_stream = (exc, _hint_in(response.response.headers))
                raise
            return response, chunks, held, deadline

        try:
            # Cancelled before the first chunk (its consumer left): the report rides on the
            # cancellation (RetryPolicy.run), so the retries already made are still counted.
            response, chunks, held, deadline = await self._run(
                open_attempt, attempts, asked, server_hint, is_timed=False
            )
        except Exception as exc:
            error_type = _classify(exc) or "other"
            said = server_hint(exc).retry
            # What the attempts reported with the errors that ended their answers: billed.
            raise self._failures.error(
                exc, error_type, attempts, billed, said, self._as(asked)
            ) from exc
        finally:
            # An error raised here holds this frame in its traceback: a cell of the frame
            # that held the error would make a reference cycle, which keeps the caller's
            # frames (a mission's, its session lock) until the cyclic collector runs.
            in_stream = None
        state = _StreamState(self._as(asked))
        error: LLMProviderError | None = None

        def broke(exc: Exception, error_type: LLMErrorType) -> LLMProviderError:
            """End the attempt that streams as ``error_type``; return the error to raise.

            The error carries the usage the stream reported before it failed: billed.
            """
            nonlocal error
            attempts[-1] = replace(
                attempts[-1], error_type=error_type, duration_seconds=elapsed_since(opened)
            )
            usage = _added(billed, state.usage)
            error = self._failures.error(exc, error_type, attempts, usage, model=state.model)
            return error

        try:
            if len(attempts) > 1:
                # Retries were made: their report at once (the same list, final once the
                # stream is closed), for a consumer that stops before the last chunk.
                yield {"attempts": attempts}
            chunk = held.pop(0)
            while chunk is not _End.END:
                if not isinstance(chunk, ChatCompletionChunk):
                    # The SDK hands on whatever JSON an event holds (``data: null``).
                    odd = _InvalidResponse(
                        f"a streamed event is {_json_kind(chunk)}, not a JSON object"
                    )
                    raise broke(odd, "invalid_response") from None
                try:
                    texts = state.add(chunk)
                except (AttributeError, TypeError, ValueError) as exc:
                    # Null fields the SDK does not check (a choice without a delta, say).
                    malformed = _InvalidResponse(f"a streamed chunk is malformed ({exc})")
                    raise broke(malformed, "invalid_response") from exc
                except _ErrorInAnswer as exc:
                    # The answer ended with an error (a router's upstream failed mid-answer);
                    # what the server billed may follow it.
                    state.usage = await _usage_after_error(chunks, state.usage, deadline)
                    raise broke(exc, _classify(exc) or "other") from exc
                for text in texts:
                    yield {"content": text}
                if state.is_complete:
                    # Its finish_reason and its usage read: the answer is whole. A server
                    # that holds the stream open before [DONE] does not hold the call up;
                    # the response is closed below.
                    break
                if held:  # read while the attempt opened
                    chunk = held.pop(0)
                    continue
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(chunks, _End.END)
                except Exception as exc:
                    # Mid-stream faults come from the SDK and its HTTP layer alike
                    # (their classes are not all OpenAIError); all mean "stream broke".
                    error_type = _classify(exc) or "other"
                    if error_type in _AFTER_THE_ANSWER and state.finish_read:
                        # The answer is whole (its finish_reason was read): a connection
                        # dropped before [DONE] (reset, a body cut short), or a server that
                        # holds it open past the deadline, takes nothing from it. It ends
                        # as delivered, with the usage read, if any.
                        break
                    raise broke(exc, error_type) from exc
            if not state.finish_read:
                # Closed cleanly mid-answer: no finish_reason (a usage alone does not say
                # the answer is whole: some servers send one on every chunk). The text so
                # far is a fragment, not the answer; the connection dropped as far as we
                # can tell.
                cut = _StreamCut("the stream ended before the model finished its answer")
                raise broke(cut, "connection") from None
            try:
                tool_calls = state.tool_calls() if tools else None
            except _InvalidResponse as exc:
                raise broke(exc, "invalid_response") from exc
        finally:
            if error is None:
                attempts[-1] = replace(attempts[-1], duration_seconds=elapsed_since(opened))
            error = None  # raised by now, if at all: no cycle (see ``in_stream`` above)
            await response.close()
        self._answered(asked, state.model)
        _report_incomplete(state.finish_reason, state.model, state.usage)
        state.usage = _added(billed, state.usage)
        yield state.last_chunk(attempts, tool_calls)

    async def _run(
        self,
        attempt_call: Any,
        attempts: list[LLMAttempt],
        asked: str,
        server_hint: Callable[[Exception], RetryHint] = _server_hint,
        *,
        is_timed: bool = True,
    ) -> Any:
        """Run ``attempt_call`` for a call that asked for the model ``asked`` under the retry
        policy, each attempt cut at ``timeout_seconds`` (``is_timed``), or keeping a deadline
        of its own."""
        return await self._retry.run(
            attempt_call,
            classify=_classify,
            attempts=attempts,
            provider=_PROVIDER,
            model=self._as(asked),
            deadline_seconds=self._timeout if is_timed else None,
            server_hint=server_hint,
        )

    async def _complete(
        self,
        messages: list[ChatMessage],
        asked: str,
        extra: dict[str, Any],
        with_tool_calls: bool,
    ) -> LLMResult:
        params = cast("list[ChatCompletionMessageParam]", messages)
        attempts: list[LLMAttempt] = []
        # The usage the attempts that failed reported: billed, also when retried.
        billed: Usage | None = None

        async def attempt() -> Any:
            nonlocal billed
            # Raw, for the headers: an error object in a 2xx may come with a Retry-After
            # (or retry-after-ms, x-should-retry).
            raw = await self._client.chat.completions.with_raw_response.create(
                messages=params, model=asked, **extra
            )
            response = raw.parse()
            try:
                if _is_events(response, raw.headers):
                    # A server that streams whatever it is asked: its events are the answer.
                    response = _completion_of_events(raw.http_response.content, raw.headers)
                if isinstance(response, ChatCompletion):
                    _raise_carried_error(response, raw.headers)
            except _ErrorInAnswer as exc:
                billed = _added(billed, exc.usage)
                raise
            return response

        try:
            response: ChatCompletion = await self._run(attempt, attempts, asked)
        except Exception as exc:
            error_type = _classify(exc)
            if error_type is None:
                raise
            # What the attempts reported with the errors that ended their answers: billed.
            return self._failures.result(
                self._failures.describe(exc, error_type),
                error_type,
                self._as(asked),
                attempts,
                billed,
            )
        if not isinstance(response, ChatCompletion):
            # The SDK hands back the body as text when it is not JSON (an HTML error page).
            attempts[-1] = replace(attempts[-1], error_type="invalid_response")
            return self._failures.result(
                f"the answer is not a chat completion ({type(response).__name__})",
                "invalid_response",
                self._as(asked),
                attempts,
                billed,
            )
        reported = response.model or self._as(asked)
        # Read first: a server bills the answer it sent, even one that cannot be used.
        own = _usage(response.usage)
        usage = _added(billed, own)
        try:
            result = _answer(response, reported, usage, with_tool_calls=with_tool_calls)
        except (_InvalidResponse, AttributeError, TypeError, ValueError) as exc:
            # AttributeError and the like: null fields the SDK does not check (a choice
            # without a message, say), as unusable as no choices at all.
            reason = str(exc) if isinstance(exc, _InvalidResponse) else f"malformed answer ({exc})"
            attempts[-1] = replace(attempts[-1], error_type="invalid_response")
            return self._failures.result(reason, "invalid_response", reported, attempts, usage)
        result["attempts"] = attempts
        self._answered(asked, response.model)
        _report_incomplete(response.choices[0].finish_reason, reported, own)
        return result

    def _as(self, asked: str) -> str:
        """The model a call that asked for ``asked`` is reported as when the server names none."""
        return self._resolved.get(asked, asked)

    def _answered(self, asked: str, model: str | None) -> None:
        """Remember that the server answered ``asked`` as ``model`` (a success's report)."""
        if model and self._resolved.get(asked) != model:
            if len(self._resolved) >= _MAX_RESOLVED:
                self._resolved.clear()
            self._resolved[asked] = model


def _raise_carried_error(response: ChatCompletion, headers: Any) -> None:
    """Raise the error a 2xx completion carries where the answer should be, if it does.

    An error object at its top, or a first choice ended by an error (its own error object,
    :func:`~._openai_chat._ended_by_error`): a router that failed while the model wrote.
    The failure it names is retried as in a stream, as ``headers`` say (the wait they ask
    for, ``x-should-retry``), as a real 429's; the error carries the usage reported.

    Raises:
        _ErrorInAnswer: the completion carries an error.
    """
    error = (response.model_extra or {}).get("error")
    if error:
        raise _ErrorInAnswer(error, headers, _usage(response.usage))
    choices = response.choices
    if isinstance(choices, list) and choices:
        _ended_by_error(choices[0], headers, _usage(response.usage))


def _report_incomplete(finish_reason: object, model: str, usage: Usage | None) -> None:
    """Log an answer the model did not finish (``llm.answer.incomplete``); it is still the
    call's answer, as the server sent it: a text cut at the token limit, or one the
    content filter shortened, is all there is to hand on. ``model`` is the server's text: it
    is logged as its label has it (``label_safe``), so a line stays short whatever it says.
    """
    if finish_reason in _INCOMPLETE:
        _LOG.warning(
            "llm.answer.incomplete",
            category="llm",
            provider=_PROVIDER,
            model=label_safe(str(model)),
            finish_reason=finish_reason,
            output_tokens=(usage or {}).get("completion_tokens"),
        )
