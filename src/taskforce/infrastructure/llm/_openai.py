"""An LLM provider for any OpenAI-compatible chat completions endpoint, on the official SDK.

Retries are ours (exponential backoff on connection errors, timeouts, 429 and 5xx,
``Retry-After`` honoured up to a cap); the SDK's own retries are switched off so
there is one retry policy. ``timeout_seconds`` is the deadline of one whole
attempt, headers and body (for a stream: the whole stream), not only of a read.
The API key never appears in a returned error, a raised error or a log line.
"""

from __future__ import annotations

import asyncio
import enum
import importlib
import json
import math
import re
import zlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from time import perf_counter
from types import ModuleType, TracebackType
from typing import Any, TypeGuard, cast

import httpx
import openai
from openai.types import CompletionUsage
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionToolChoiceOptionParam,
    ChatCompletionToolUnionParam,
)

from taskforce.core.interfaces.llm import (
    RETRYABLE_LLM_ERROR_TYPES,
    ChatMessage,
    LLMAttempt,
    LLMErrorType,
    LLMResult,
    StreamChunk,
    ToolCall,
    ToolSchema,
    Usage,
    llm_error_type_of_status,
)
from taskforce.core.interfaces.log import secret_scrubber
from taskforce.errors import LLMProviderError
from taskforce.infrastructure.llm._retry import RetryPolicy, elapsed_since

__all__ = ["OpenAICompatibleProvider"]

_PROVIDER = "openai"
#: The SDK insists on a key; a keyless local endpoint gets this instead of
#: ``OPENAI_API_KEY``, which must never leak to an arbitrary ``base_url``.
_NO_KEY = "unused"


class _InvalidResponse(Exception):
    """Internal: the endpoint answered 2xx with something that is not a usable answer."""


class _StreamCut(Exception):
    """Internal: a stream ended, without an error, before the model finished its answer."""


#: The most bytes one attempt's answer may have (``llm.max_response_bytes``).
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024


def _sdk_http() -> ModuleType:
    """The HTTP library the installed openai SDK is built on: ``httpx``, or a successor.

    Its client and transports are that library's types, which the SDK checks for.
    """
    client = next(c for c in openai.DefaultAsyncHttpxClient.__mro__ if c.__name__ == "AsyncClient")
    return importlib.import_module(client.__module__.split(".", 1)[0])


_HTTP: Any = _sdk_http()


class _TooLarge(_InvalidResponse):
    """Internal: an answer longer than ``llm.max_response_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the answer is larger than {limit} bytes (llm.max_response_bytes)")


# What an answer may be encoded with: it is asked for uncompressed ("identity"), but a
# server or proxy may compress anyway; these are inflated here, under the limit.
_GZIP_BITS = zlib.MAX_WBITS | 16
_INFLATED = {"gzip": _GZIP_BITS, "x-gzip": _GZIP_BITS, "deflate": 0}
#: The most bytes one inflation step turns out; between two steps other tasks run.
_INFLATED_PIECE_BYTES = 64 * 1024


def _coding(values: list[str]) -> str | None:
    """The one content coding to undo (``""``: none), or ``None`` for one not undone here."""
    codings = [c.strip().lower() for value in values for c in value.split(",")]
    codings = [c for c in codings if c not in ("", "identity")]
    if not codings:
        return ""
    return codings[0] if len(codings) == 1 and codings[0] in _INFLATED else None


def _deflate_bits(head: bytes) -> int:
    """``deflate`` is zlib-wrapped by the standard, raw in practice: tell by the header."""
    is_zlib = len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0
    return zlib.MAX_WBITS if is_zlib else -zlib.MAX_WBITS


class _CappedBody(_HTTP.AsyncByteStream):  # type: ignore[misc]  # the SDK's HTTP library
    """A response body that yields at most ``limit`` bytes, decoded, and reads at most
    about ``limit`` bytes as they come.

    A gzip or deflate body is inflated here, never past the bytes still allowed, so a
    small compressed body cannot unpack into gigabytes; and a bounded piece at a time,
    with a turn for the event loop after each: inflating up to the limit is real work,
    and every other request on the loop waits while it runs. A gzip body may be several
    members one after another (RFC 1952, 2.2: what ``cat a.gz b.gz`` and some proxies
    send): each is inflated in turn, zero bytes between or after them skipped as padding,
    as gzip itself does; anything else after a member, or a body that ends inside one (a
    deflate stream too), is a broken encoding. Past the
    limit, or at a broken encoding, an answer (``strict``) raises :class:`_TooLarge` or
    :class:`_InvalidResponse`; an error body is cut there instead, quietly, so that the
    error is still told by its status. The decoding state lives on the object: the SDK
    reads a stream's rest again after its end, and that must carry on, not start over.
    """

    def __init__(self, body: Any, limit: int, coding: str | None, *, strict: bool) -> None:
        self._body = body
        self._limit = limit
        self._coding = coding
        self._strict = strict
        self._seen = 0
        self._inflater: Any = None
        self._head = b""  # deflate: the first bytes, until its header can be told
        # Input read but not inflated yet, and whether the last step filled its room (output
        # may wait inside zlib): kept here, not in the reading loop, since a reader may stop
        # between two pieces (the SDK at [DONE]) and another read the rest.
        self._pending = b""
        self._is_full = False
        self._done = coding is None  # a coding not undone here: nothing to read
        # A compressed body is counted as it comes too, like a declared length: padding,
        # empty members or garbage inflate to little or nothing, and would otherwise be
        # read (and worked on) without end.
        self._wire = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = aiter(self._body)
        chunk: bytes | None = b""  # first what an earlier reader left undecoded
        while not self._done:  # a coding not undone here, or read up to its cut or end
            for out in self._decoded(chunk or b"", end=chunk is None):
                yield out
                if self._inflater is not None:
                    # Yielding to our reader does not reach the loop (it asks for the next
                    # piece at once): hand the loop a turn before inflating another.
                    await asyncio.sleep(0)
            if chunk is None:
                self._done = True
                return
            chunk = await anext(chunks, None)
            if chunk and self._coding:
                self._wire += len(chunk)
                if self._wire > self._limit:
                    self._stop(_TooLarge(self._limit))
                    return

    def _decoded(self, chunk: bytes, *, end: bool = False) -> Iterator[bytes]:
        """Decode ``chunk`` after the input still pending; ``end``: the body ends after it."""
        if self._done:
            return
        if self._coding and self._inflater is None:
            self._head += chunk
            if len(self._head) < 2 and not (end and self._head):  # an empty body: nothing
                return
            bits = _INFLATED[self._coding] or _deflate_bits(self._head)
            self._inflater = zlib.decompressobj(bits)
            chunk, self._head = self._head, b""
        self._pending += chunk
        # A step that filled its room may leave output inside zlib with its input all
        # read (the rest of a long match): it is asked for again, input or not.
        while self._pending or self._is_full:
            if self._inflater is None:
                out, self._pending = self._pending, b""
            elif self._inflater.eof:
                self._is_full = False
                self._pending = self._next_member(self._pending)
                continue
            else:
                room = min(self._limit - self._seen + 1, _INFLATED_PIECE_BYTES)
                try:
                    out = self._inflater.decompress(self._pending, room)
                except zlib.error:
                    self._stop(self._broken_encoding())
                    return
                self._is_full = len(out) == room
                # what follows a member's end is kept apart from the input not yet inflated
                inflater = self._inflater
                self._pending = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
            self._seen += len(out)
            if self._seen > self._limit:
                self._stop(_TooLarge(self._limit))
                out = out[: len(out) - (self._seen - self._limit)]
            if out:
                yield out
        if end and self._inflater is not None and not self._inflater.eof:
            # The body ends inside a member: one cut short, or bytes after the last
            # member too few for zlib to tell that they begin none (``\n``, ``\x1f``).
            self._stop(self._broken_encoding())

    def _stop(self, error: _InvalidResponse) -> None:
        """Read no further: an answer raises ``error``, an error body is cut here quietly."""
        self._done = True
        self._pending, self._is_full = b"", False
        if self._strict:
            raise error from None

    def _broken_encoding(self) -> _InvalidResponse:
        """What an answer whose encoding is broken fails with."""
        return _InvalidResponse(f"the answer's {self._coding} encoding is broken")

    def _next_member(self, rest: bytes) -> bytes:
        """Start on what follows a finished member; return the part left to inflate."""
        if self._coding == "deflate":  # one stream, no members: what follows it is ignored
            return b""
        rest = rest.lstrip(b"\0")
        if rest:
            self._inflater = zlib.decompressobj(_GZIP_BITS)
        return rest

    async def aclose(self) -> None:
        await self._body.aclose()


def _capping(limit: int) -> Callable[[Any], Awaitable[None]]:
    """The response hook that bounds every answer body to ``limit`` bytes, decoded.

    An answer (2xx) whose declared ``Content-Length`` is over the limit, or whose
    coding is not one undone here, is refused before its body; any other is cut as it
    passes the limit. An error body is only cut, so the error keeps its status. A hook,
    not a transport of our own: the SDK's client keeps its pool, proxies and the rest.
    """

    async def cap(response: Any) -> None:
        values = response.headers.get_list("content-encoding")
        coding = _coding(values)
        strict = response.status_code < 300
        declared = response.headers.get("content-length", "")
        refusal: _InvalidResponse | None = None
        if strict and coding is None:
            refusal = _InvalidResponse(
                f"the answer is encoded with {', '.join(values)!r}; identity, gzip or "
                "deflate expected"
            )
        elif strict and declared.isdigit() and int(declared) > limit:
            refusal = _TooLarge(limit)
        if refusal is not None:
            await response.aclose()
            raise refusal
        if values:  # decoded here (or dropped): the client must not decode it again
            del response.headers["content-encoding"]
            response.headers.pop("content-length", None)
        response.stream = _CappedBody(response.stream, limit, coding, strict=strict)

    return cap


# The HTTP errors of httpx and of the library the SDK is built on (the same, or a successor).
_TIMEOUTS = (TimeoutError, openai.APITimeoutError, httpx.TimeoutException, _HTTP.TimeoutException)
_TRANSPORT = (openai.APIConnectionError, _StreamCut, httpx.TransportError, _HTTP.TransportError)
_UNUSABLE = (
    _InvalidResponse,
    openai.APIResponseValidationError,
    httpx.DecodingError,
    _HTTP.DecodingError,
    ValueError,  # the JSON the SDK cannot decode (a JSONDecodeError)
)
_HTTP_ERRORS = (openai.OpenAIError, httpx.HTTPError, _HTTP.HTTPError)


def _unwrapped(exc: Exception) -> Exception:
    """What the SDK's ``APIConnectionError`` wraps, when it is an unusable answer.

    The SDK wraps whatever its client raised while reading (our limit, a broken
    encoding) as a connection error, which another attempt would not cure.
    """
    cause = exc.__cause__
    if isinstance(exc, openai.APIConnectionError) and isinstance(cause, _UNUSABLE):
        return cause
    return exc


class _End(enum.Enum):
    """The end of a stream, told apart from ``None``: what the SDK makes of ``data: null``."""

    END = enum.auto()


def _json_kind(value: object) -> str:
    """Name the kind of a JSON value that is not an object, for a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "of another kind"


def _carries(chunk: ChatCompletionChunk | _End) -> bool:
    """Whether a streamed chunk is (part of) an answer: text, a tool call, an end, usage.

    The stream's end, an event that is not an object (the SDK passes on whatever JSON
    an event holds) and a chunk too malformed to tell count as carrying: reading stops
    there, and what follows judges them.
    """
    if not isinstance(chunk, ChatCompletionChunk):
        return True
    try:
        return chunk.usage is not None or any(
            c.finish_reason
            or c.delta.content
            or c.delta.tool_calls
            or c.delta.refusal
            # a reasoning model's thinking (an extra field of the delta): output, billed
            or getattr(c.delta, "reasoning_content", None)
            or getattr(c.delta, "reasoning", None)
            for c in chunk.choices or ()
        )
    except AttributeError:  # not a chunk, a choice without a delta: for the caller to refuse
        return True


def _is_in_stream_error(exc: BaseException) -> TypeGuard[openai.APIError]:
    """Whether ``exc`` is the SDK's report of an error object inside a 2xx stream."""
    return isinstance(exc, openai.APIError) and not isinstance(
        exc, openai.APIStatusError | openai.APIConnectionError | openai.APIResponseValidationError
    )


def _in_stream_error_type(body: object) -> LLMErrorType:
    """The error type of an error object a server sent inside a 2xx stream.

    Compatible servers report a rate limit or an overload that way (``{"error": {"code":
    429, ...}}``); read like the HTTP status or type it names, else ``other``.
    """
    if not isinstance(body, Mapping):
        return "other"
    code, kind = body.get("code"), str(body.get("type") or "").lower()
    text = code if isinstance(code, str) else ""
    # isdecimal and short: "²" is a digit but no number, and huge ones cannot be int()ed
    status = code if type(code) is int else int(text) if text.isdecimal() and len(text) <= 3 else 0
    if 400 <= status < 600:
        return llm_error_type_of_status(status)
    named = f"{kind} {text}".lower()
    if "rate_limit" in named or "rate limit" in named:
        return "rate_limit"
    if any(word in named for word in ("server_error", "overloaded", "unavailable")):
        return "server_error"
    return "other"


def _classify(exc: Exception) -> LLMErrorType | None:
    """Name the LLM error type of an SDK, HTTP or deadline failure; ``None`` for anything else."""
    exc = _unwrapped(exc)
    if isinstance(exc, _TIMEOUTS):
        return "timeout"
    if isinstance(exc, openai.APIStatusError):
        return llm_error_type_of_status(exc.status_code)
    if isinstance(exc, _TRANSPORT):
        return "connection"
    if isinstance(exc, _UNUSABLE):
        return "invalid_response"
    if _is_in_stream_error(exc):
        return _in_stream_error_type(exc.body)
    if isinstance(exc, _HTTP_ERRORS):
        return "other"
    return None


def _retry_after(exc: Exception) -> float | None:
    """The wait a failed response asks for in ``Retry-After``: seconds or an HTTP date."""
    if not isinstance(exc, openai.APIStatusError):
        return None
    return _wait_asked(exc.response.headers)


def _wait_asked(headers: Any) -> float | None:
    """The wait in a response's ``Retry-After`` header: seconds or an HTTP date, if any."""
    hint = headers.get("retry-after", "").strip()
    try:
        seconds = float(hint)
    except ValueError:  # absent, or an HTTP date
        try:
            seconds = (parsedate_to_datetime(hint) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError, OverflowError):  # absent or unreadable: our own backoff
            return None
        # a date already past asks for no wait beyond the backoff
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


#: The most characters of a server's own reason that a message quotes.
_REASON_CHARS = 200
#: What a message must not carry from a server's text: control characters (an ANSI
#: escape, NUL), bidi overrides that make a terminal show text reversed, and lone
#: surrogates (``"\ud83d"`` in JSON), which UTF-8 cannot encode (a log line, a session).
_UNPRINTABLE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _plain(text: str) -> str:
    """``text`` on one line, each character that must not be shown replaced by U+FFFD."""
    return _UNPRINTABLE.sub("\ufffd", " ".join(text.split()))


def _said(body: object) -> str:
    """The text an error (the SDK's ``body``: a JSON body's ``error``, or all of it) gives.

    Its ``message``; the error itself when it is text (``{"error": "..."}``); or FastAPI's
    ``detail``, a text or a list of problems, each with its ``msg``.
    """
    if isinstance(body, str):
        return body
    if not isinstance(body, Mapping):
        return ""
    message, detail = body.get("message"), body.get("detail")
    if isinstance(message, str):
        return message
    if isinstance(detail, list):
        said = [item.get("msg") for item in detail if isinstance(item, Mapping)]
        return "; ".join(msg for msg in said if isinstance(msg, str))
    return detail if isinstance(detail, str) else ""


def _reason(body: object, redact: Callable[[str], str]) -> str:
    """The server's own reason in an error body, on one line and short.

    ``redact`` runs on the whole text before it is cut: a secret the cut went through
    would no longer match, and its first part would be quoted.
    """
    text = _plain(redact(_said(body)))
    return text if len(text) <= _REASON_CHARS else f"{text[: _REASON_CHARS - 3]}..."


def _status_text(exc: openai.APIStatusError, redact: Callable[[str], str]) -> str:
    """Say what an error status answered: ``HTTP 429 Too Many Requests: <its reason>``."""
    status = f"HTTP {exc.status_code} {httpx.codes.get_reason_phrase(exc.status_code)}".rstrip()
    body = exc.body
    if isinstance(body, str) and body == exc.response.text.strip():
        body = None  # no JSON: the SDK hands on the text itself (a page), which is not quoted
    reason = _reason(body, redact)
    return f"{status}: {reason}" if reason else status


#: A code an in-stream error may be named by: a status, or a name (``rate_limit_exceeded``).
_ERROR_CODE = re.compile(r"[\w.-]{1,40}", re.ASCII)


def _in_stream_text(exc: openai.APIError, redact: Callable[[str], str]) -> str:
    """Say what an error object inside a 2xx stream reported: its code and its reason."""
    code = exc.body.get("code") if isinstance(exc.body, Mapping) else None
    if isinstance(code, int) and not isinstance(code, bool) and 0 <= code < 1000:
        code = str(code)
    text = "the stream carried an error"
    if isinstance(code, str) and _ERROR_CODE.fullmatch(code):
        text = f"{text} ({code})"
    reason = _reason(exc.body, redact)
    return f"{text}: {reason}" if reason else text


def _decoded_call(call_id: str, name: str, raw_arguments: str | None) -> ToolCall:
    """Return a tool call with its JSON arguments decoded.

    Raises:
        _InvalidResponse: the arguments are not a JSON object.
    """
    try:
        arguments = json.loads(raw_arguments or "{}")
    except json.JSONDecodeError as exc:
        raise _InvalidResponse(
            f"tool call {name!r} has arguments that are not JSON ({exc.msg})"
        ) from exc
    if not isinstance(arguments, dict):
        raise _InvalidResponse(f"tool call {name!r} has arguments that are not a JSON object")
    return {"id": call_id, "name": name, "arguments": arguments}


@dataclass
class _StreamedCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _StreamState:
    """What a stream has told so far, besides its text: model, usage, tool call deltas."""

    model: str
    usage: Usage | None = None
    calls: dict[int, _StreamedCall] = field(default_factory=dict)
    # A finish_reason (or the usage, which comes after it) was read: the answer is whole.
    finished: bool = False

    def add(self, chunk: ChatCompletionChunk) -> list[str]:
        """Take in one chunk; return its text deltas."""
        self.model = chunk.model or self.model
        self.usage = _usage(chunk.usage) or self.usage
        if chunk.usage is not None:
            self.finished = True
        texts: list[str] = []
        # no choices at all: a keep-alive some servers send (``data: {}``), nothing to add
        for choice in chunk.choices or ():
            if choice.finish_reason:
                self.finished = True
            delta = choice.delta
            if delta.content:
                texts.append(delta.content)
            for part in delta.tool_calls or ():
                call = self.calls.setdefault(part.index, _StreamedCall())
                call.id = part.id or call.id
                if part.function is not None:
                    # The name comes whole (once, or repeated by some servers); arguments in pieces.
                    call.name = part.function.name or call.name
                    if part.function.arguments:
                        call.arguments.append(part.function.arguments)
        return texts

    def tool_calls(self) -> list[ToolCall]:
        """Return the assembled tool calls, in index order.

        Raises:
            _InvalidResponse: a call has no name or arguments that are not a JSON object.
        """
        calls: list[ToolCall] = []
        for index in sorted(self.calls):
            call = self.calls[index]
            if not call.name:
                raise _InvalidResponse(f"streamed tool call {index} has no name")
            call_id = call.id or f"call_{index}"
            calls.append(_decoded_call(call_id, call.name, "".join(call.arguments)))
        return calls


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
            retry_after_max_seconds: upper bound of a wait a ``Retry-After`` hint asks for.
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
        # The key never leaves in an error message (a server may quote it back).
        self._redact_key = secret_scrubber([api_key] if api_key else [])
        self._timeout = timeout_seconds
        self._retry = RetryPolicy(
            max_retries, backoff_base_seconds, backoff_max_seconds, retry_after_max_seconds
        )
        if max_response_bytes < 1:
            raise ValueError(f"max_response_bytes must be at least 1, got {max_response_bytes}")
        self._client = openai.AsyncOpenAI(
            api_key=api_key or _NO_KEY,
            base_url=base_url,
            timeout=timeout_seconds,
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(
                event_hooks={"response": [_capping(max_response_bytes)]},
                headers={"accept-encoding": "identity"},
                # a redirect would re-send the conversation wherever Location points
                follow_redirects=False,
            ),
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
            ``tool_calls`` when asked with tools).

        Raises:
            LLMProviderError: the request failed after retries, was answered without
                server-sent events or with an event that is not a JSON object
                (``invalid_response``), the stream broke, ended
                before a ``finish_reason`` (``connection``) or ran past its deadline,
                or its tool calls cannot be decoded; ``error_type`` and ``attempts``
                say which and how often.
        """
        asked = model or self._model
        params = cast("list[ChatCompletionMessageParam]", list(messages))
        extra = _extra(kwargs, tools, tool_choice)
        attempts: list[LLMAttempt] = []
        loop = asyncio.get_running_loop()
        opened = 0.0
        # An error object in a 2xx stream (an in-stream 429) and the wait its response's
        # Retry-After asks for: the SDK's error carries no response to read it from.
        in_stream: tuple[BaseException, float | None] | None = None

        def retry_after(exc: Exception) -> float | None:
            if in_stream is not None and in_stream[0] is exc:
                return in_stream[1]
            return _retry_after(exc)

        async def open_attempt() -> tuple[Any, Any, list[ChatCompletionChunk | _End], float]:
            nonlocal opened, in_stream
            opened = perf_counter()
            deadline = loop.time() + self._timeout
            response = await self._client.chat.completions.create(
                messages=params,
                model=asked,
                stream=True,
                stream_options={"include_usage": True},
                **extra,
            )
            chunks = response.__aiter__()
            # Read up to the first chunk that carries something: the role-only chunk a
            # server sends first, or a keep-alive, is no answer yet, and an error after
            # it (an in-stream 429) is retried like one before any chunk.
            # Of the chunks before it only the last is kept (it names the model): a long
            # run of them (a reasoning phase) must not pile up in memory.
            held: list[ChatCompletionChunk | _End] = []
            try:
                while not held or not _carries(held[-1]):
                    held = [*held[-1:], await anext(chunks, _End.END)]
                if held == [_End.END]:
                    # A JSON body, an error page, nothing: no server-sent event at all.
                    content_type = response.response.headers.get("content-type", "none")
                    content_type = self._redact_key(content_type)[:60]  # redacted, then cut
                    raise _InvalidResponse(
                        f"the stream request was answered without server-sent events "
                        f"(content-type {content_type!r})"
                    )
            except BaseException as exc:
                await response.close()
                if _is_in_stream_error(exc):
                    in_stream = (exc, _wait_asked(response.response.headers))
                raise
            return response, chunks, held, deadline

        try:
            response, chunks, held, deadline = await self._run(open_attempt, attempts, retry_after)
        except asyncio.CancelledError as exc:
            # Its consumer left before the first chunk: the report rides on the
            # cancellation, so the retries already made are still counted.
            exc.attempts = attempts  # type: ignore[attr-defined]
            raise
        except Exception as exc:
            raise self._provider_error(exc, _classify(exc) or "other", attempts) from exc
        state = _StreamState(asked)
        error: LLMProviderError | None = None

        def broke(exc: Exception, error_type: LLMErrorType) -> LLMProviderError:
            """End the attempt that streams as ``error_type``; return the error to raise."""
            nonlocal error
            attempts[-1] = LLMAttempt(error_type, elapsed_since(opened))
            error = self._provider_error(exc, error_type, attempts)
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
                for text in texts:
                    yield {"content": text}
                if held:  # read while the attempt opened
                    chunk = held.pop(0)
                    continue
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(chunks, _End.END)
                except Exception as exc:
                    # Mid-stream faults come from the SDK and its HTTP layer alike
                    # (their classes are not all OpenAIError); all mean "stream broke".
                    raise broke(exc, _classify(exc) or "other") from exc
            if not state.finished:
                # Closed cleanly mid-answer: no finish_reason, no usage. The text so far is
                # a fragment, not the answer; the connection dropped as far as we can tell.
                cut = _StreamCut("the stream ended before the model finished its answer")
                raise broke(cut, "connection") from None
            try:
                tool_calls = state.tool_calls() if tools else []
            except _InvalidResponse as exc:
                raise broke(exc, "invalid_response") from exc
        finally:
            if error is None:
                attempts[-1] = LLMAttempt(None, elapsed_since(opened))
            await response.close()
        done: StreamChunk = {"done": True, "model": state.model, "attempts": attempts}
        if tools:
            done["tool_calls"] = tool_calls
        if state.usage is not None:
            done["usage"] = state.usage
        yield done

    async def _run(
        self,
        attempt_call: Any,
        attempts: list[LLMAttempt],
        retry_after: Callable[[Exception], float | None] = _retry_after,
    ) -> Any:
        return await self._retry.run(
            attempt_call,
            classify=_classify,
            attempts=attempts,
            provider=_PROVIDER,
            deadline_seconds=self._timeout,
            retry_after=retry_after,
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
        try:
            response: ChatCompletion = await self._run(
                lambda: self._client.chat.completions.create(messages=params, model=asked, **extra),
                attempts,
            )
        except Exception as exc:
            error_type = _classify(exc)
            if error_type is None:
                raise
            return self._failure(self._describe(exc, error_type), error_type, asked, attempts)
        if not isinstance(response, ChatCompletion):
            # The SDK hands back the body as text when it is not JSON (an HTML error page).
            attempts[-1] = LLMAttempt("invalid_response", attempts[-1].duration_seconds)
            return self._failure(
                f"the answer is not a chat completion ({type(response).__name__})",
                "invalid_response",
                asked,
                attempts,
            )
        reported = response.model or asked
        try:
            if not response.choices:
                raise _InvalidResponse("the response holds no choices")
            message = response.choices[0].message
            result: LLMResult = {"success": True, "content": message.content, "model": reported}
            if with_tool_calls:
                calls: list[ToolCall] = []
                for raw in message.tool_calls or []:
                    if raw.type != "function":
                        raise _InvalidResponse(f"unsupported tool call type {raw.type!r}")
                    name = raw.function.name
                    calls.append(_decoded_call(raw.id, name, raw.function.arguments))
                result["tool_calls"] = calls
            usage = _usage(response.usage)
        except (_InvalidResponse, AttributeError, TypeError, ValueError) as exc:
            # AttributeError and the like: null fields the SDK does not check (a choice
            # without a message, say), as unusable as no choices at all.
            reason = str(exc) if isinstance(exc, _InvalidResponse) else f"malformed answer ({exc})"
            attempts[-1] = LLMAttempt("invalid_response", attempts[-1].duration_seconds)
            return self._failure(reason, "invalid_response", reported, attempts)
        if usage is not None:
            result["usage"] = usage
        result["attempts"] = attempts
        return result

    def _failure(
        self, error: str, error_type: LLMErrorType, model: str, attempts: list[LLMAttempt]
    ) -> LLMResult:
        return {
            "success": False,
            "error": _plain(self._redact_key(error)),
            "error_type": error_type,
            "model": model,
            "attempts": attempts,
        }

    def _describe(self, exc: Exception, error_type: LLMErrorType) -> str:
        """Say in plain words what failed: the one message of the result, log line and error.

        No SDK or HTTP class name: a status says its number, name and the server's own
        reason; an error object in a stream, its code and reason; anything else its text.
        """
        exc = _unwrapped(exc)
        if isinstance(exc, _InvalidResponse | _StreamCut):
            return str(exc)  # our own words
        if isinstance(exc, openai.APIStatusError):
            return _status_text(exc, self._redact_key)
        if _is_in_stream_error(exc):
            return _in_stream_text(exc, self._redact_key)
        text = " ".join(str(exc).split())
        if isinstance(exc, TimeoutError) and not text:
            # A deadline's TimeoutError has no message: say which limit ran out.
            return f"no complete answer within {self._timeout:g} s (llm.timeout_seconds)"
        if isinstance(exc, _UNUSABLE):  # a decoder's words (a JSON error) need their subject
            return f"the answer cannot be read ({text})" if text else "the answer cannot be read"
        return text or f"the request failed ({error_type})"

    def _provider_error(
        self, exc: Exception, error_type: LLMErrorType, attempts: list[LLMAttempt]
    ) -> LLMProviderError:
        message = _plain(self._redact_key(self._describe(exc, error_type)))
        error = LLMProviderError(
            message,
            retryable=error_type in RETRYABLE_LLM_ERROR_TYPES,
            error_type=error_type,
            attempts=attempts,
        )
        # Named after the message is built, not in it (``openai: ...``): a failed stream
        # says what a failed complete() returns, in the mission's error and log alike.
        error.provider = _PROVIDER
        return error


def _extra(
    kwargs: dict[str, Any], tools: Sequence[ToolSchema] | None, tool_choice: str | None
) -> dict[str, Any]:
    extra: dict[str, Any] = dict(kwargs)
    if tools:
        extra["tools"] = cast("list[ChatCompletionToolUnionParam]", list(tools))
    if tool_choice is not None:
        extra["tool_choice"] = cast("ChatCompletionToolChoiceOptionParam", tool_choice)
    return extra
