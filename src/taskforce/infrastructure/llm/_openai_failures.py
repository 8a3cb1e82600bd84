"""What a failed call of the OpenAI-compatible provider is, and how it is reported.

Its LLM error type (``_classify``), what its server said about a retry (the wait its
``retry-after-ms`` or ``Retry-After`` asks for, whether its ``x-should-retry`` allows
one: ``_server_hint``), and the
failed result or raised error that reports it (``_Failures``), whose message says in
plain words on one line what failed: a status with the server's own reason, cut short
after the API key is masked, and no character a terminal or UTF-8 cannot show.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeGuard

import httpx
import openai

from taskforce.core.interfaces.llm import (
    LLMAttempt,
    LLMErrorType,
    LLMResult,
    Usage,
    llm_error_type_of_status,
)
from taskforce.core.interfaces.outcome import no_answer_within
from taskforce.errors import LLMProviderError
from taskforce.infrastructure.llm._openai_errors import (
    _ErrorInAnswer,
    _InvalidResponse,
    _StreamCut,
)
from taskforce.infrastructure.llm._openai_http import _HTTP
from taskforce.infrastructure.llm._retry import RetryHint, is_retryable

__all__ = [
    "_Failures",
    "_classify",
    "_hint_in",
    "_is_in_stream_error",
    "_retry_said",
    "_server_hint",
    "_wait_asked",
]


# The HTTP errors of httpx and of the library the SDK is built on (the same, or a successor).
_TIMEOUTS = (TimeoutError, openai.APITimeoutError, httpx.TimeoutException, _HTTP.TimeoutException)
_TRANSPORT = (openai.APIConnectionError, _StreamCut, httpx.TransportError, _HTTP.TransportError)
_UNUSABLE = (
    _InvalidResponse,
    openai.APIResponseValidationError,
    httpx.DecodingError,
    _HTTP.DecodingError,
    ValueError,  # the JSON the SDK cannot decode (a JSONDecodeError)
    RecursionError,  # JSON nested deeper than Python decodes
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


def _is_in_stream_error(exc: BaseException) -> TypeGuard[openai.APIError]:
    """Whether ``exc`` is the SDK's report of an error object inside a 2xx stream."""
    return isinstance(exc, openai.APIError) and not isinstance(
        exc, openai.APIStatusError | openai.APIConnectionError | openai.APIResponseValidationError
    )


#: The error types of an error object's ``type`` that names no status: OpenAI's and
#: Anthropic's error types, which compatible servers copy (Groq's ``invalid_request_error``
#: of a tool call the model wrote badly mid-stream; Ollama's ``api_error`` of its own
#: failure), and Hugging Face TGI's (its ``error_type``: ``validation``, ``template_error``
#: and ``tool_error`` a 422 when not streamed, ``generation`` a 424, ``overloaded`` a 429,
#: ``incomplete_generation`` a 500), each read as the status it stands for, so that the
#: same failure has the same error type streamed (an error object) or not (that status).
_ERROR_OF_TYPE: Mapping[str, LLMErrorType] = {
    "invalid_request_error": "bad_request",
    "not_found_error": "bad_request",
    "authentication_error": "auth",
    "permission_error": "auth",
    "api_error": "server_error",
    "validation": "bad_request",
    "template_error": "bad_request",
    "tool_error": "bad_request",
    "generation": "bad_request",
    "overloaded": "rate_limit",
    "incomplete_generation": "server_error",
}


def _in_stream_error_type(body: object) -> LLMErrorType:
    """The error type of an error object a server sent inside a 2xx stream or answer.

    Compatible servers report a rate limit or an overload that way (``{"error": {"code":
    429, ...}}``); read like the HTTP status it names, else a rate limit its type or code
    names, else the type that stands for a status (:data:`_ERROR_OF_TYPE`), else a
    server's failure its type or code names (``overloaded_error``), else ``other``.
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
    if kind in _ERROR_OF_TYPE:  # before the words: TGI's ``overloaded`` is a 429
        return _ERROR_OF_TYPE[kind]
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
    if _is_in_stream_error(exc) or isinstance(exc, _ErrorInAnswer):
        return _in_stream_error_type(exc.body)
    if isinstance(exc, _HTTP_ERRORS):
        return "other"
    return None


def _server_hint(exc: Exception) -> RetryHint:
    """What the response a failure came with said about a retry: its wait, its say.

    A 2xx answer that holds an error object is read like an error status: its headers
    came with it (:class:`_ErrorInAnswer`). A failure without a response (a timeout, a
    dropped connection) said nothing.
    """
    if isinstance(exc, _ErrorInAnswer):
        return _hint_in(exc.headers)
    if not isinstance(exc, openai.APIStatusError):
        return RetryHint()
    return _hint_in(exc.response.headers)


def _hint_in(headers: Any) -> RetryHint:
    """What a response's headers say about a retry (:class:`RetryHint`); no headers, nothing."""
    if headers is None:
        return RetryHint()
    return RetryHint(_wait_asked(headers), _retry_said(headers))


def _retry_said(headers: Any) -> bool | None:
    """Whether a response's ``x-should-retry`` says to retry; ``None`` if it says neither.

    Only ``true`` and ``false`` are read, as the official openai client reads them;
    anything else (``yes``, ``True``, two values) is no say, and the error type decides.
    """
    said = headers.get("x-should-retry", "").strip()
    return True if said == "true" else False if said == "false" else None


def _wait_asked(headers: Any) -> float | None:
    """The wait a response asks for before a retry, in seconds, if it asks for one.

    ``retry-after-ms`` (milliseconds, which OpenAI's API sends and its official client
    prefers) when it is a readable number; else ``Retry-After``: seconds or an HTTP date.
    A value that cannot be read is no hint (the other header, or our own backoff, applies).

    An HTTP date is measured from the response's own ``Date`` (the server's clock, which
    wrote both), so a clock here that is minutes off the server's neither skips the wait
    nor stretches it; only without a readable ``Date`` from this host's clock.
    """
    millis = _delay(headers.get("retry-after-ms", ""))
    if millis is not None:
        return millis / 1000.0
    hint = headers.get("retry-after", "").strip()
    if _DELAY_SECONDS.fullmatch(hint):
        return _delay(hint)
    when = _http_date(hint)
    if when is None:  # absent or unreadable: our own backoff
        return None
    sent = _http_date(headers.get("date", "").strip())
    try:
        seconds = (when - (datetime.now(UTC) if sent is None else sent)).total_seconds()
    except OverflowError:
        return None
    # a date already past asks for no wait beyond the backoff
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _http_date(value: str) -> datetime | None:
    """The moment an HTTP date names, aware, if ``value`` is one."""
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    # An HTTP date is in GMT, also where it does not say so: the asctime form RFC
    # 9110 has recipients accept, and ``-0000`` (what ``formatdate()`` writes).
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _delay(value: str) -> float | None:
    """A delay written as ASCII digits (a fraction tolerated), if ``value`` is one."""
    value = value.strip()
    if not _DELAY_SECONDS.fullmatch(value):
        return None
    delay = float(value)
    return delay if math.isfinite(delay) else None  # too many digits for a float


#: ``Retry-After`` seconds (and ``retry-after-ms``): ASCII digits (RFC 9110), a fraction
#: tolerated. Not what else ``float()`` reads: other scripts' digits, ``1_0``, ``1e3``,
#: ``inf``, a sign.
_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


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


def _error_object_text(text: str, body: object, redact: Callable[[str], str]) -> str:
    """Say what an error object inside a 2xx stream or answer reported: its code and reason.

    ``text`` says where it came (``the stream carried an error``).
    """
    code = body.get("code") if isinstance(body, Mapping) else None
    if isinstance(code, int) and not isinstance(code, bool) and 0 <= code < 1000:
        code = str(code)
    if isinstance(code, str) and _ERROR_CODE.fullmatch(code):
        text = f"{text} ({code})"
    reason = _reason(body, redact)
    return f"{text}: {reason}" if reason else text


@dataclass(frozen=True)
class _Failures:
    """How one provider reports a failure: as a failed result, or as an error to raise.

    Both say the words of :meth:`describe`, the API key masked, on one line.
    """

    #: The provider's name, set on each error it raises.
    provider: str
    #: Masks the provider's API key in a text (a server may quote it back); out of the
    #: repr, which must never come near the key.
    redact: Callable[[str], str] = field(repr=False)
    #: The deadline of one attempt (``llm.timeout_seconds``), named when it ran out.
    timeout: float

    def describe(self, exc: Exception, error_type: LLMErrorType) -> str:
        """Say in plain words what failed: the one message of the result, log line and error.

        No SDK or HTTP class name: a status says its number, name and the server's own
        reason; an error object in a stream, its code and reason; anything else its text.
        """
        exc = _unwrapped(exc)
        if isinstance(exc, _InvalidResponse | _StreamCut):
            return str(exc)  # our own words
        if isinstance(exc, openai.APIStatusError):
            return _status_text(exc, self.redact)
        if _is_in_stream_error(exc):
            return _error_object_text("the stream carried an error", exc.body, self.redact)
        if isinstance(exc, _ErrorInAnswer):
            return _error_object_text(str(exc), exc.body, self.redact)
        text = " ".join(str(exc).split())
        if isinstance(exc, TimeoutError) and not text:
            # A deadline's TimeoutError has no message: say which limit ran out.
            return no_answer_within(self.timeout, "llm.timeout_seconds", what="complete answer")
        if isinstance(exc, _UNUSABLE):  # a decoder's words (a JSON error) need their subject
            return f"the answer cannot be read ({text})" if text else "the answer cannot be read"
        return text or f"the request failed ({error_type})"

    def result(
        self,
        error: str,
        error_type: LLMErrorType,
        model: str,
        attempts: list[LLMAttempt],
        usage: Usage | None = None,
    ) -> LLMResult:
        """Return the failed result of a call.

        Args:
            error: what failed, in words; masked and put on one line here.
            error_type: the LLM error type of the failure.
            model: the model the result names.
            attempts: the report of every attempt made.
            usage: the usage the server reported before the call failed (a 200 whose
                tool arguments are not JSON was billed), if any.

        Returns:
            ``{"success": False, "error": ..., "error_type": ..., "model": ...,
            "attempts": ...}``, with ``usage`` unless ``None``.
        """
        failed: LLMResult = {
            "success": False,
            "error": _plain(self.redact(error)),
            "error_type": error_type,
            "model": model,
            "attempts": attempts,
        }
        if usage is not None:
            failed["usage"] = usage
        return failed

    def error(
        self,
        exc: Exception,
        error_type: LLMErrorType,
        attempts: list[LLMAttempt],
        usage: Usage | None = None,
        said: bool | None = None,
        model: str | None = None,
    ) -> LLMProviderError:
        """Return the error to raise for a failed stream, which ``exc`` ended.

        Args:
            exc: the failure, described by :meth:`describe`.
            error_type: the LLM error type of the failure.
            attempts: the report of every attempt made.
            usage: the usage the stream reported before it failed, if any.
            said: whether the failure's server said to retry (``x-should-retry``);
                ``None``: it did not say.
            model: the model the call is reported as (what the stream named before it
                failed, else what the model asked for resolved to).

        Returns:
            An :class:`~taskforce.errors.LLMProviderError`, retryable when its server
            said so (never an ``auth`` or ``bad_request`` one), else when its type is;
            its ``provider`` set, its ``usage`` and ``model`` the ones given.
        """
        message = _plain(self.redact(self.describe(exc, error_type)))
        error = LLMProviderError(
            message,
            retryable=is_retryable(error_type, said),
            error_type=error_type,
            attempts=attempts,
            usage=usage,
            model=model,
        )
        # Named after the message is built, not in it (``openai: ...``): a failed stream
        # says what a failed complete() returns, in the mission's error and log alike.
        error.provider = self.provider
        return error
