"""Proxies for LLM providers: requests, latency, tokens, context pack size, time to first token.

Two classes, so that ``hasattr(proxy, "stream")`` answers like the provider
does (callers pick streaming that way): :func:`observe_llm_provider` picks one.
This module holds the provider proxy and the record every call ends in;
``_llm_stream`` the streaming one, its streams and how a finished stream is read.

What is recorded per call:

- ``complete``/``generate``: an ``error`` when the call raises (re-raised
  unchanged; anything but a cancellation of the mission or a ``KeyboardInterrupt``
  itself, ``is_caller_cancelled``: a provider's own ``CancelledError``, ``SystemExit``
  or ``KeyboardInterrupt`` subclass included) or ``classify_llm_result`` (the
  function the agents use too) calls the result a failure, else ``success``; the latency;
  tokens from ``usage`` (of a failed call too, when the server reported them:
  ``LLMProviderError.usage``); the size of what was sent (messages and estimated
  tokens, chars / 4, see ``_context_pack``; ``generate`` sends one message:
  prompt plus context).
  A cancelled call records no request and no failure: it has no outcome, and the
  mission that was cancelled is counted ``cancelled``. Its retries are counted,
  from the attempt report on the cancellation: they happened, and were logged.
- ``stream``: once, when the stream ends however it ends (or the provider's
  ``stream`` call itself raises): ``error`` if the provider raised (as above) or its
  last chunk is not a dict, cannot be read, or is a text delta that is no string
  (``invalid_response``: the agents fail the call at such a chunk, so it is the last
  one read), else
  ``success`` (exhausted, or abandoned by its consumer through ``aclose()`` or
  cancellation after a chunk: that is the caller's decision, not a provider failure;
  cancelled before any chunk of its answer (none, or the retries' report alone), it is
  recorded as a cancelled ``complete`` is); the latency up to that point; the time to
  the first text delta (a ``content`` chunk with text), if one arrived, from the start
  of the attempt that streamed it (the attempts before it and the waits between them,
  from the provider's attempt report, are left out: they are in the latency and the
  retries); tokens from the last chunk's ``usage``. All use the ``model`` of the last
  chunk, which is where providers report it.
- for every call that ends, from the provider's attempt
  report (``attempts`` on the result, the last chunk or the raised error):
  one retry per attempt after the first, labelled with the error type of the
  attempt before it; one failure with the final error type if the call failed
  (``classify_llm_result`` / ``llm_exception_error_type``, what the agents
  log); and the spend, tokens times ``MetricSet.llm_prices`` (looked up by the
  reported model, then the requested one; a model with neither has no cost
  series and ``llm.price.missing`` is logged once per model).

The ``model`` label is the model the provider reports in its result, or on the error
it raises (``LLMProviderError.model``: a stream that failed after its chunks named
one). A call it
reports none for (a failure, mostly) gets the model the provider last resolved the
requested one to, so a model's failures and successes share their series (the
error ratio of ``gpt-4o-2024-08-06`` counts its failures, which report no model);
the requested model is the ``model`` argument, else the provider's ``model``
attribute, else ``unknown``.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any, TypeVar

from taskforce.core.interfaces.context import current_agent_type
from taskforce.core.interfaces.llm import (
    UNKNOWN_MODEL,
    LLMProviderProtocol,
    LLMResult,
)
from taskforce.core.interfaces.outcome import (
    classify_llm_result,
    is_caller_cancelled,
    llm_exception_error_type,
)
from taskforce.observability.metrics import (
    COUNT_BITS,
    CounterChild,
    CounterPair,
    Family,
    HistogramChild,
    MetricSet,
    as_count,
)
from taskforce.observability.metrics._catalog import (
    CONTEXT_PACK_MESSAGES,
    CONTEXT_PACK_TOKENS,
    LLM_COST,
    LLM_DURATION,
    LLM_FAILURES,
    LLM_REQUESTS,
    LLM_RETRIES,
    LLM_TOKENS,
    LLM_TTFT,
)
from taskforce.observability.proxies._base import ObservingProxy, raise_interrupt, report_fault
from taskforce.observability.proxies._context_pack import SCAN_LIMIT, PackEstimator, mission_packs
from taskforce.observability.proxies._llm_outcome import (
    ATTEMPT_REPORTS,
    record_outcome,
)

__all__ = [
    "LLMProviderProxy",
    "is_report",
    "raised_model",
    "record_call",
    "record_cancelled",
    "reported_text",
    "unreported_model",
]

_ProviderT = TypeVar("_ProviderT", bound=LLMProviderProtocol)

# Positional index of ``model`` in each protocol method (after self).
_MODEL_ARG = {"complete": 1, "generate": 2, "stream": 1}


# Bundles of children kept per proxy; more and the cache starts over.
_MAX_BUNDLES = 1024


class _LLMFamilies:
    """The families an LLM call writes to, and the children of recent label sets."""

    __slots__ = (
        "bundles",
        "cost",
        "duration",
        "failures",
        "pack_messages",
        "pack_tokens",
        "requests",
        "resolved",
        "retries",
        "tokens",
        "ttft",
    )

    def __init__(self, metrics: MetricSet) -> None:
        self.retries: Family[CounterChild] = metrics.counter(LLM_RETRIES)
        self.failures: Family[CounterChild] = metrics.counter(LLM_FAILURES)
        self.cost: Family[CounterChild] = metrics.counter(LLM_COST)
        self.requests: Family[CounterChild] = metrics.counter(LLM_REQUESTS)
        self.duration: Family[HistogramChild] = metrics.histogram(LLM_DURATION)
        self.tokens: Family[CounterChild] = metrics.counter(LLM_TOKENS)
        self.ttft: Family[HistogramChild] = metrics.histogram(LLM_TTFT)
        self.pack_messages: Family[HistogramChild] = metrics.histogram(CONTEXT_PACK_MESSAGES)
        self.pack_tokens: Family[HistogramChild] = metrics.histogram(CONTEXT_PACK_TOKENS)
        self.bundles: dict[tuple[str, str, str, str], _RequestChildren] = {}
        # requested model -> the model the provider last reported for it (bounded)
        self.resolved: dict[str, str] = {}


class _RequestChildren:
    """The children one request of a (model, agent_type, operation, status) writes."""

    __slots__ = (
        "asked",
        "counted_tokens",
        "duration",
        "key",
        "pack_messages",
        "pack_tokens",
        "quiet",
        "requests",
    )

    def __init__(self, families: _LLMFamilies, key: tuple[str, str, str, str]) -> None:
        model, agent_type, operation, _ = key
        self.key = key
        self.requests = families.requests.labels(*key)
        self.duration = families.duration.labels(model, agent_type, operation)
        self.pack_messages = families.pack_messages.labels(agent_type)
        self.pack_tokens = families.pack_tokens.labels(agent_type)
        # (input, output), made on first use: no token series before a provider reports tokens
        self.counted_tokens: CounterPair | None = None
        # True once a success of this bundle with tokens was seen to have no spend to
        # write (no prices, the model already reported unpriced): both only stay so.
        self.quiet = False
        # the model asked for that a success of this bundle reported resolving to ``model``
        self.asked: str | None = None


def _token_children(families: _LLMFamilies, children: _RequestChildren) -> CounterPair:
    """The input and output token children of a bundle, kept unless the model overflowed."""
    model, agent_type, _, _ = children.key
    pair = CounterPair(
        families.tokens.labels(model, agent_type, "input"),
        families.tokens.labels(model, agent_type, "output"),
    )
    if families.tokens.is_cached(model, agent_type, "input"):
        children.counted_tokens = pair
    return pair


def _request_children(families: _LLMFamilies, key: tuple[str, str, str, str]) -> _RequestChildren:
    """Make the children of ``key``, which the caller found missing from ``families.bundles``.

    They are kept there for the next request unless a label overflowed.
    """
    children = _RequestChildren(families, key)
    model, agent_type, operation, _ = key
    # an overflowed label is never kept: it must take the slow path (and count) each time
    if families.requests.is_cached(*key) and families.duration.is_cached(
        model, agent_type, operation
    ):
        if len(families.bundles) >= _MAX_BUNDLES:
            families.bundles.clear()
        families.bundles[key] = children
    return children


class LLMProviderProxy(ObservingProxy[_ProviderT]):
    """An LLM provider whose ``complete`` and ``generate`` calls are observed."""

    def __init__(self, wrapped: _ProviderT, metrics: MetricSet) -> None:
        """Wrap ``wrapped`` so its calls are recorded in ``metrics``.

        Args:
            wrapped: The plain provider; it stays reachable as ``__wrapped__``.
            metrics: The container's metric set.
        """
        super().__init__(wrapped, metrics)
        self._self_families = _LLMFamilies(metrics)

    async def complete(self, /, *args: Any, **kwargs: Any) -> LLMResult:
        """Call the wrapped ``complete`` and record the request.

        Args:
            *args: Passed unchanged (``messages``, ``model``, ``tools``, ...).
            **kwargs: Passed unchanged.

        Returns:
            Exactly what the wrapped provider returned.

        Raises:
            Exception: Exactly what the wrapped provider raised (the same object).
        """
        # Read the proxy's own attributes once each: the hot path runs per LLM call.
        wrapped = self.__wrapped__
        started = perf_counter()
        try:
            result = await wrapped.complete(*args, **kwargs)
        except BaseException as exc:  # always re-raised: only the outcome is read here
            if is_caller_cancelled(exc):
                record_cancelled(self, wrapped, "complete", exc, (args, kwargs))
            else:
                record_call(self, wrapped, "complete", started, exc, args, kwargs)
            raise
        record_call(self, wrapped, "complete", started, result, args, kwargs)
        return result

    async def generate(self, /, *args: Any, **kwargs: Any) -> LLMResult:
        """Call the wrapped ``generate`` and record the request.

        Args:
            *args: Passed unchanged (``prompt``, ``context``, ``model``).
            **kwargs: Passed unchanged.

        Returns:
            Exactly what the wrapped provider returned.

        Raises:
            Exception: Exactly what the wrapped provider raised (the same object).
        """
        wrapped = self.__wrapped__
        started = perf_counter()
        try:
            result = await wrapped.generate(*args, **kwargs)
        except BaseException as exc:  # always re-raised: only the outcome is read here
            if is_caller_cancelled(exc):
                record_cancelled(self, wrapped, "generate", exc, (args, kwargs))
            else:
                record_call(self, wrapped, "generate", started, exc, args, kwargs)
            raise
        record_call(self, wrapped, "generate", started, result, args, kwargs)
        return result


def _model(wrapped: Any, reported: Any, operation: str, args: tuple[Any, ...], kwargs: Any) -> str:
    """``reported``, else the model asked for: the argument, the provider's, ``unknown``."""
    if reported:
        return str(reported)
    index = _MODEL_ARG[operation]
    requested = args[index] if len(args) > index else kwargs.get("model")
    if requested:
        return str(requested)
    default = getattr(wrapped, "model", None)
    return str(default) if default else UNKNOWN_MODEL


def _is_text(result: Any, model: str) -> bool:
    """Whether ``result`` reports ``model`` as plain text (a text of the provider's own
    class may compare as it likes)."""
    reported = result.get("model")
    return type(reported) is str and reported == model


def reported_text(model: Any) -> str | None:
    """A reported ``model`` that is no plain string, as the text of its label.

    ``None`` when it is a false value or cannot be printed (its ``str`` or truth raises):
    the call is counted as one that reported no model, never left uncounted.
    """
    try:
        return str(model) if model else None
    except BaseException as exc:  # SystemExit of its own too; a KeyboardInterrupt itself is not
        raise_interrupt(exc)
        return None


def unreported_model(
    families: _LLMFamilies, wrapped: Any, operation: str, args: tuple[Any, ...], kwargs: Any
) -> str:
    """The label of a call the provider reported no model for (see the module doc)."""
    requested = _model(wrapped, None, operation, args, kwargs)
    return families.resolved.get(requested, requested)


def raised_model(families: _LLMFamilies, error: BaseException) -> str | None:
    """The label of the model a raised error names (``LLMProviderError.model``: what a
    stream named before it failed), ``None`` when it names none.

    A failure may name only the model it asked for, as a failed result does: its series
    is the model that one resolved to.
    """
    try:
        model = getattr(error, "model", None)
    except BaseException as exc:  # an error of one's own whose attribute raises names none
        raise_interrupt(exc)
        return None
    return families.resolved.get(model, model) if type(model) is str and model else None


def _resolve(families: _LLMFamilies, asked: str, model: str) -> None:
    """Remember that ``asked`` now resolves to ``model`` (bounded, see ``_MAX_BUNDLES``)."""
    if len(families.resolved) >= _MAX_BUNDLES:
        families.resolved.clear()
    families.resolved[asked] = model


def record_call(
    proxy: LLMProviderProxy[Any],
    wrapped: Any,
    operation: str,
    started: float,
    result: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """Record a finished call; ``result`` is what it returned or raised (a stream: its last chunk).

    One function on purpose (plus the children's methods): between two LLM calls a
    mission runs enough code to push this path out of the CPU caches, and every further
    function a record enters costs more than its body (``docs/architecture.md``).
    """
    duration = perf_counter() - started
    try:  # what was sent: messages and estimated tokens
        if operation == "generate":
            prompt = args[0] if args else kwargs["prompt"]
            context = args[1] if len(args) > 1 else kwargs.get("context")
            pack: tuple[int, int] | None = PackEstimator.prompt(prompt, context)
        else:
            sent = args[0] if args else kwargs["messages"]
            length = len(sent)
            # the characters of the content; a long list resumes where it was counted last
            packs = mission_packs() if length > SCAN_LIMIT else None
            start, chars = packs.resume(sent) if packs is not None else (0, 0)
            # by index from ``start``: islice would step through the messages already counted
            for message in map(sent.__getitem__, range(start, length)) if start else sent:
                content = message.get("content")
                if content:
                    chars += len(content)
            if packs is not None:
                packs.remember(sent, chars)
            pack = length, (chars + 3) // 4  # estimate_tokens(chars), without the call
    except BaseException as exc:  # what was sent may be a value of its own that raises anything
        report_fault(proxy._self_metrics, type(proxy).__name__, "llm.context_pack", exc)
        pack = None
    try:
        families = proxy._self_families
        if isinstance(result, BaseException):  # the call raised
            error_type: str | None = llm_exception_error_type(result)
            model = raised_model(families, result) or unreported_model(
                families, wrapped, operation, args, kwargs
            )
            # what the server reported before the call failed (LLMProviderError.usage)
            usage = getattr(result, "usage", None)
            if not isinstance(usage, dict):
                usage = None
            attempts = getattr(result, "attempts", ())
        else:
            error_type = classify_llm_result(result)
            if error_type is None or isinstance(result, dict):  # a success is always a dict
                try:
                    usage, model = result.get("usage"), result.get("model")
                    if error_type is not None and type(model) is str:
                        # a failure names the model it asked for, at best: the series is
                        # the model that one resolved to
                        model = families.resolved.get(model, model)
                    if not (type(model) is str and model):
                        model = reported_text(model) or unreported_model(
                            families, wrapped, operation, args, kwargs
                        )
                    attempts = result.get("attempts") or ()
                except BaseException as exc:
                    raise_interrupt(exc)
                    if error_type is None:
                        raise  # a success the proxy cannot read: a fault (below)
                    # A failure is counted however little of it can be read (a mapping
                    # whose get raises is invalid_response, as the agents fail it).
                    usage, attempts = None, ()
                    model = unreported_model(families, wrapped, operation, args, kwargs)
            else:  # not a dict at all (None, a string): invalid_response, with nothing to read
                usage = None
                model = unreported_model(families, wrapped, operation, args, kwargs)
                attempts = ()
        key = (model, current_agent_type(), operation, "success" if error_type is None else "error")
        children = families.bundles.get(key)
        if children is None:
            children = _request_children(families, key)
            if error_type is None and isinstance(result, dict) and _is_text(result, model):
                # a success's report: what the model asked for resolves to, for the calls
                # that report none (a failure's model may be only the one it asked for)
                children.asked = _model(wrapped, None, operation, args, kwargs)
                _resolve(families, children.asked, model)
        elif children.asked is not None and families.resolved.get(children.asked) != model:
            _resolve(families, children.asked, model)  # an alias that moved, and came back
        children.requests.inc()
        children.duration.observe(duration)
        if pack is not None:
            children.pack_messages.observe(pack[0])
            children.pack_tokens.observe(pack[1])
        input_tokens = output_tokens = 0
        try:
            if usage:
                input_tokens = usage.get("prompt_tokens") or 0
                output_tokens = usage.get("completion_tokens") or 0
        except BaseException as exc:  # a report that is no mapping: the call's outcome still counts
            report_fault(proxy._self_metrics, type(proxy).__name__, "llm.usage", exc)
            input_tokens = output_tokens = 0
        if input_tokens or output_tokens:
            # both plain ints from 0 to below 2**COUNT_BITS (a negative one shifts to -1);
            # anything else, MAX_COUNT itself included, is read by as_count
            if not (
                type(input_tokens) is int
                and type(output_tokens) is int
                and not (input_tokens | output_tokens) >> COUNT_BITS
            ):
                input_tokens, output_tokens = _token_counts(proxy, input_tokens, output_tokens)
            if input_tokens or output_tokens:  # no token series until a provider reports some
                counted = children.counted_tokens or _token_children(families, children)
                counted.inc(input_tokens, output_tokens)
        # Most calls succeed at the first attempt, and most have no spend to write.
        if (
            error_type is None
            and (children.quiet or not (input_tokens or output_tokens))
            and type(attempts) in ATTEMPT_REPORTS
            and len(attempts) < 2
        ):
            return
        metrics = proxy._self_metrics
        is_unpriced = record_outcome(
            families,
            metrics,
            (model, key[1]),
            attempts,
            error_type,
            (input_tokens, output_tokens),
            lambda: _model(wrapped, None, operation, args, kwargs),
        )
        # Asked of record_outcome, not of the set of unpriced models: that keeps the model
        # as its label has it (cut, or ``other``), not as the provider reported it.
        if is_unpriced and not metrics.llm_prices:
            children.quiet = True
    except BaseException as exc:  # a value of the provider's own may raise SystemExit too
        report_fault(proxy._self_metrics, type(proxy).__name__, f"llm.{operation}", exc)


def is_report(chunk: Any) -> bool:
    """Whether a stream's ``chunk`` is an attempt report alone (``{"attempts": [...]}``)."""
    return type(chunk) is dict and chunk.keys() == {"attempts"}


def record_cancelled(
    proxy: LLMProviderProxy[Any],
    wrapped: Any,
    operation: str,
    cancelled: BaseException,
    call: tuple[tuple[Any, ...], dict[str, Any]],
    report: Any = None,
) -> None:
    """Record a call whose mission was cancelled: the retries it made, nothing else.

    It has no outcome (no request, no failure), but the retries it made before the
    cancellation happened, and the provider logged them: they are counted from the
    attempt report the provider put on the cancellation, else from the one a stream
    sent as its first chunk (``report``, ``{"attempts": [...]}`` alone).
    """
    args, kwargs = call
    try:
        attempts: Any = getattr(cancelled, "attempts", None)
        if type(attempts) not in ATTEMPT_REPORTS and is_report(report):
            attempts = report["attempts"]
        if type(attempts) in ATTEMPT_REPORTS and len(attempts) > 1:
            families = proxy._self_families
            model = unreported_model(families, wrapped, operation, args, kwargs)
            record_outcome(
                families,
                proxy._self_metrics,
                (model, current_agent_type()),
                attempts,
                None,
                (0, 0),
                lambda: model,
            )
    except BaseException as fault:
        report_fault(proxy._self_metrics, type(proxy).__name__, f"llm.{operation}", fault)


def _token_counts(proxy: LLMProviderProxy[Any], *counts: Any) -> tuple[int, int]:
    """The reported token counts as ints, or ``(0, 0)`` and a fault if one is not a count.

    A whole float (``12.0``) is a count (``as_count``). Anything else (negative,
    fractional, not a number, past ``MAX_COUNT``) is not written: a bad report must
    neither fail the record, and with it the call's retries and failure, nor corrupt
    the token and spend series, nor make the scrape unreadable.
    """
    first, second = as_count(counts[0]), as_count(counts[1])
    if first is not None and second is not None:
        return first, second
    # named by type: the values may be too long to print, and are the provider's to choose
    kinds = ", ".join(type(count).__name__ for count in counts)
    error = ValueError(f"the provider reported token counts that are not counts ({kinds})")
    report_fault(proxy._self_metrics, type(proxy).__name__, "llm.usage", error)
    return 0, 0
