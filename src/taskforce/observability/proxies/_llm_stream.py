"""The streaming LLM proxy: its streams, which stay the provider's stream objects, observed.

``StreamingLLMProviderProxy.stream`` calls the provider's ``stream`` at once, as a
caller without metrics would (what that call raises is raised there, and recorded as
the call's failure), and hands out an :class:`ObservedStream`: a proxy of the stream
object the provider returned. Everything that object has (``aclose``, a response id,
usage, any method of its own) is reached through it, as on the plain object; iterating
it iterates the generator that observes the chunks and records the call once, however
the stream ends (see ``_llm`` for what is recorded). ``async for`` asks the proxy for
its iterator once and then steps that generator itself: nothing of the proxy runs per
chunk. A plain async generator (what most providers return) has no attribute of its
own to reach: the observing generator itself is handed out, and no proxy is made.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from time import perf_counter
from types import AsyncGeneratorType
from typing import Any, TypeVar, cast

import wrapt

from taskforce.core.interfaces.context import current_agent_type
from taskforce.core.interfaces.llm import (
    LLMProviderProtocol,
    StreamChunk,
    StreamingLLMProviderProtocol,
)
from taskforce.core.interfaces.outcome import (
    UnusableChunk,
    is_caller_cancelled,
    stream_chunk_text,
)
from taskforce.observability.metrics import MetricSet
from taskforce.observability.proxies._base import (
    ObservingProxy,
    aclose_iterator,
    raise_interrupt,
    report_fault,
)
from taskforce.observability.proxies._llm import (
    LLMProviderProxy,
    is_report,
    raised_model,
    record_call,
    record_cancelled,
    reported_text,
    unreported_model,
)
from taskforce.observability.proxies._llm_outcome import before_last_attempt

__all__ = ["ObservedStream", "StreamingLLMProviderProxy", "observe_llm_provider"]

_ProviderT = TypeVar("_ProviderT", bound=LLMProviderProtocol)
_StreamingT = TypeVar("_StreamingT", bound=StreamingLLMProviderProtocol)

# What a stream that yielded nothing has as its last chunk.
_NO_CHUNK: Any = object()
# The outcome of a stream whose last chunk the agents cannot use (see _record_stream).
_UNUSABLE_CHUNK = {"success": False, "error_type": UnusableChunk.error_type}


class StreamingLLMProviderProxy(LLMProviderProxy[_StreamingT]):
    """An LLM provider with ``stream``, whose streams are observed as well."""

    def stream(self, /, *args: Any, **kwargs: Any) -> AsyncIterator[StreamChunk]:
        """Call the wrapped ``stream`` and hand out its stream, observed.

        Args:
            *args: Passed unchanged (``messages``, ``model``).
            **kwargs: Passed unchanged.

        Returns:
            An :class:`ObservedStream` of the stream object the wrapped ``stream``
            returned; for a plain async generator, the async generator observing it.

        Raises:
            BaseException: Exactly what the wrapped ``stream`` call raised (the same
                object); recorded as the call's outcome, as one its stream raises is.
        """
        wrapped = self.__wrapped__
        started = perf_counter()
        try:
            chunks = wrapped.stream(*args, **kwargs)
        except BaseException as exc:  # always re-raised: only the outcome is read here
            if is_caller_cancelled(exc):
                record_cancelled(self, wrapped, "stream", exc, (args, kwargs))
            else:
                _record_stream(
                    self, wrapped, started, None, exc, (_NO_CHUNK, _NO_CHUNK), args, kwargs
                )
            raise
        if type(chunks) is AsyncGeneratorType:
            # A plain async generator has no attribute of its own to reach: the observing
            # generator stands in for it, as an async generator, at no cost per call; it
            # closes the provider's when its consumer closes it.
            return _observed_chunks(self, chunks, (args, kwargs), closes=True)
        # The generator does not hold the stream handed out, so dropping that frees both
        # at once (no cycle); the stream handed out closes the provider's (its aclose).
        observing = _observed_chunks(self, chunks, (args, kwargs), closes=False)
        return cast(AsyncIterator[StreamChunk], ObservedStream(chunks, observing))


class ObservedStream(ObservingProxy[Any]):
    """The stream a :class:`StreamingLLMProviderProxy` hands out: the provider's, observed.

    Always an async iterator with ``aclose``, as the provider's stream must be: closing
    it records a stream its consumer left early, and closes the provider's stream. The
    provider's stream is closed when, and as often as, its consumer closes this one, never
    by the observing on its own (after its last chunk, or what it raised): the calls into
    it are the consumer's, as without the proxy.
    """

    def __init__(self, wrapped: Any, chunks: AsyncGenerator[Any, None]) -> None:
        """Wrap the provider's stream object.

        Args:
            wrapped: What the provider's ``stream`` returned; reachable as ``__wrapped__``.
            chunks: The generator that iterates it, observing (it closes nothing).
        """
        wrapt.BaseObjectProxy.__init__(self, wrapped)  # it records nothing: no metric set
        self._self_state = chunks

    # ``async for`` steps the observing generator itself: no call of the proxy per chunk.
    def __aiter__(self) -> AsyncGenerator[Any, None]:
        return self._self_state

    # ``anext(stream)`` without ``async for``: a step of the same generator.
    def __anext__(self) -> Any:
        return self._self_state.__anext__()

    async def aclose(self) -> None:
        """Close the stream: the observing generator (which records a call left early),
        then the provider's stream.

        Raises:
            Exception: Whatever closing the provider's stream raised.
        """
        await self._self_state.aclose()
        await aclose_iterator(self.__wrapped__)

    def asend(self, value: Any) -> Any:
        """Send ``value`` into the observing generator, as into any async generator."""
        return self._self_state.asend(value)

    def athrow(self, *args: Any) -> Any:
        """Throw into the observing generator, as into any async generator."""
        return self._self_state.athrow(*args)

    # ``async with stream`` (a stream object that is an async context manager) closes
    # the observing generator too on the way out, so the call is recorded there; the
    # provider's stream gets its own ``__aexit__`` alone, as without the proxy.
    async def _self_aexit(self, *exc_info: Any) -> Any:
        await self._self_state.aclose()
        wrapped = self.__wrapped__
        return await type(wrapped).__aexit__(wrapped, *exc_info)

    _self_protocols = {"__aexit__": _self_aexit}


async def _observed_chunks(
    proxy: StreamingLLMProviderProxy[Any],
    chunks: Any,
    call: tuple[tuple[Any, ...], dict[str, Any]],
    *,
    closes: bool,
) -> AsyncGenerator[Any, None]:
    """Iterate the provider's stream, recording the request once however it ends.

    With ``closes`` (it stands in for the provider's async generator), the provider's
    generator is closed when this one is closed or thrown into at a chunk, as
    ``contextlib.aclosing`` would (see :func:`aclose_iterator`); never after it ended by
    itself, when closing it would be a call its consumer did not make.

    Yields:
        Exactly the chunks of the provider's stream.

    Raises:
        Exception: Exactly what the provider's stream raised (the same object).
    """
    args, kwargs = call
    wrapped = proxy.__wrapped__
    started = perf_counter()
    first: Any = _NO_CHUNK
    last: Any = _NO_CHUNK
    first_chunk_at: float | None = None
    error: BaseException | None = None
    cancelled: BaseException | None = None  # the caller's, before the answer's first chunk
    consumer_left = False  # True while a chunk is out: GeneratorExit then means aclose()
    try:
        try:
            async for chunk in chunks:
                # The first text delta, not the last chunk of an answer without text.
                if first_chunk_at is None:
                    first_chunk_at = _text_delta_at(proxy, chunk)
                if first is _NO_CHUNK:
                    first = chunk
                last = chunk
                consumer_left = True
                yield chunk
                consumer_left = False
        finally:
            if closes and consumer_left:
                await aclose_iterator(chunks)
    except BaseException as exc:
        if not (consumer_left or is_caller_cancelled(exc)):
            error = exc  # what the provider raised (its own CancelledError too): a failure
        elif first is _NO_CHUNK or (last is first and is_report(first)):
            # Cancelled before any chunk of its answer (while it retried, or after the
            # retries' report while the model thought): no outcome, as a cancelled
            # complete() has none; its retries are counted from the report.
            cancelled = exc
        raise
    finally:
        if cancelled is not None:
            record_cancelled(proxy, wrapped, "stream", cancelled, (args, kwargs), first)
        else:
            _record_stream(
                proxy, wrapped, started, first_chunk_at, error, (first, last), args, kwargs
            )
        # The error's traceback holds this frame: a local that holds the error would make
        # a reference cycle, which keeps the caller's frames (and what they hold, such as
        # the session's lock) alive until the cyclic collector runs.
        error = cancelled = None


def _text_delta_at(proxy: LLMProviderProxy[Any], chunk: Any) -> float | None:
    """Now, if ``chunk`` is a text delta, as the agents read it (``stream_chunk_text``).

    A delta carries text the agents send on as a ``token`` event: ``content`` that is
    not empty (a provider that passes on a server's role-only chunk as
    ``{"content": ""}`` has sent no token yet), on a chunk that does not end the stream
    (the ``content`` of a ``done`` chunk is no delta). A chunk the agents cannot use is
    no delta either: they fail the call at it, and ``_record_stream`` counts it so. The
    consumer gets the chunk either way; reading it must not end the stream.
    """
    try:
        return perf_counter() if stream_chunk_text(chunk) else None
    except UnusableChunk:
        return None
    except BaseException as exc:  # a chunk of its own whose read raises SystemExit, say
        report_fault(proxy._self_metrics, type(proxy).__name__, "llm.ttft", exc)
        return None


def _record_stream(
    proxy: LLMProviderProxy[Any],
    wrapped: Any,
    started: float,
    first_chunk_at: float | None,
    error: BaseException | None,
    chunks: tuple[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """Record a finished stream as the call it was: the last chunk reports what a result does.

    ``chunks`` is the first and the last chunk read. A stream its consumer left early
    has no report on its last chunk; the first may be the attempt report (``StreamChunk``).
    """
    first, last = chunks
    outcome: Any = error
    readable = True
    is_chunk = False
    if error is None:
        try:
            is_chunk = last is _NO_CHUNK or isinstance(last, dict)
        except BaseException as exc:  # a value whose class cannot be read: the agents stop at it
            raise_interrupt(exc)
            outcome = _UNUSABLE_CHUNK
        else:
            if not is_chunk:
                # Not a chunk at all (None, a string): the agent fails the call as
                # invalid_response, and so does classify_llm_result, reading it as the result.
                outcome = last
    if is_chunk:
        try:
            chunk = {} if last is _NO_CHUNK else last
            try:
                attempts = chunk.get("attempts")
                stream_chunk_text(chunk)  # what the agents read of it: they stop at it if it raises
                is_usable = True
            except BaseException as exc:  # an UnusableChunk, or a report that cannot be read
                raise_interrupt(exc)
                attempts, is_usable = None, False
            if not attempts and first is not last and isinstance(first, dict):
                attempts = first.get("attempts")
            if is_usable:
                outcome = {
                    "success": True,
                    "usage": chunk.get("usage"),
                    "model": chunk.get("model"),
                    "attempts": attempts or (),
                }
            else:  # the agents stop at such a chunk: it is the last one read
                outcome = {**_UNUSABLE_CHUNK, "attempts": attempts or ()}
        except BaseException as exc:
            report_fault(proxy._self_metrics, type(proxy).__name__, "llm.stream", exc)
            readable = False
    if readable:
        record_call(proxy, wrapped, "stream", started, outcome, args, kwargs)
    if first_chunk_at is not None:
        # Recorded at the end, not at the first chunk: the model the provider
        # resolved arrives with the last chunk, and both series share that label.
        try:
            families = proxy._self_families
            if isinstance(outcome, dict):
                named = reported_text(outcome.get("model"))
            else:  # the error the stream raised, as its request is labelled
                named = raised_model(families, outcome)
            model = named or unreported_model(families, wrapped, "stream", args, kwargs)
            attempts = (
                outcome.get("attempts")
                if isinstance(outcome, dict)
                else getattr(outcome, "attempts", None)
            )
            # from the start of the attempt that streamed: the request whose first chunk it is
            opened = started + before_last_attempt(attempts)
            ttft = families.ttft.labels(model, current_agent_type())
            ttft.observe(max(first_chunk_at - opened, 0.0))
        except BaseException as exc:
            report_fault(proxy._self_metrics, type(proxy).__name__, "llm.ttft", exc)


def observe_llm_provider(provider: _ProviderT, metrics: MetricSet) -> LLMProviderProxy[_ProviderT]:
    """Wrap a provider in the proxy class that matches its abilities.

    Args:
        provider: The plain provider.
        metrics: The container's metric set.

    Returns:
        A :class:`StreamingLLMProviderProxy` if the provider has ``stream``,
        else an :class:`LLMProviderProxy` (on which ``hasattr(p, "stream")`` is false).
    """
    if hasattr(provider, "stream"):
        streaming = cast(StreamingLLMProviderProtocol, provider)
        return cast(LLMProviderProxy[_ProviderT], StreamingLLMProviderProxy(streaming, metrics))
    return LLMProviderProxy(provider, metrics)
