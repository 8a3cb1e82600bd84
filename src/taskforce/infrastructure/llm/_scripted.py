"""The embedded scripted LLM provider: offline, deterministic answers driven by mission directives.

The provider holds no per-conversation state: every answer is computed from the
messages of the call, so one instance serves any number of concurrent missions.
Failing attempts (``llm:fail``) go through the same retry policy as the
OpenAI-compatible provider, without its backoff waits, so a test sees the same
attempts and retries offline.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, TypeVar

from taskforce.core.domain.prompts import FINAL_STEP_DESCRIPTION, STEP_PREFIX
from taskforce.core.interfaces.llm import (
    LLM_ERROR_TYPES,
    ChatMessage,
    LLMAttempt,
    LLMErrorType,
    LLMResult,
    StreamChunk,
    ToolCall,
    ToolSchema,
    Usage,
)
from taskforce.errors import LLMProviderError
from taskforce.infrastructure.llm._directives import (
    CallFaults,
    ErrorDirective,
    Script,
    ScriptedLLMError,
    ToolDirective,
    estimate_tokens,
    last_observation,
    mission_text,
    observations_of,
    parse_script,
    plan_text,
    render_observation,
)
from taskforce.infrastructure.llm._retry import RetryPolicy

_T = TypeVar("_T")

__all__ = ["ScriptedLLMProvider"]

_LLM_ERROR_MESSAGE = "scripted llm:error directive"
_PROVIDER = "scripted"


class _InjectedFailure(Exception):
    """Internal: one attempt failed because an ``llm:fail`` line said so."""

    def __init__(self, error_type: LLMErrorType) -> None:
        self.error_type: LLMErrorType = error_type
        super().__init__(f"scripted llm:fail {error_type}")


def _classify(exc: Exception) -> LLMErrorType | None:
    if isinstance(exc, _InjectedFailure):
        return exc.error_type
    if isinstance(exc, LLMProviderError):
        return next((t for t in LLM_ERROR_TYPES if t == exc.error_type), "other")
    return None


def _reported(exc: LLMProviderError, attempts: list[LLMAttempt]) -> list[LLMAttempt]:
    """Put the call's attempts on ``exc``; return the attempts.

    A call that failed before any attempt counts one. It reports no usage, as an
    endpoint that answers an error status reports none: a drill shows its numbers.
    """
    if not attempts:
        attempts.append(LLMAttempt(_classify(exc) or "other", 0.0))
    exc.attempts = tuple(attempts)
    return attempts


class ScriptedLLMProvider:
    """A deterministic stand-in for a language model (see CONTRACT.md, "scripted provider").

    Mission lines ``tool:NAME {json}`` become tool calls, one per turn, in order;
    ``llm:error`` makes the call that reaches it fail; ``llm:fail TYPE [N]``
    makes the next N attempts of that call fail with TYPE (retried like the
    OpenAI-compatible provider would, up to ``max_retries``); ``llm:delay MS``
    holds back that call's last attempt (the one that answers); other lines are
    echoed in the final answer. How far a conversation got is read from its tool
    results (``tool`` messages, or user messages starting with ``OBSERVATION_PREFIX``).

    ``complete`` with ``tools`` answers with native tool calls; without tools it
    answers with the legacy JSON actions; ``generate`` answers with a JSON plan;
    ``stream`` sends the answer word by word. Failures are returned as
    ``{"success": False, ...}``; ``stream`` raises
    :class:`~taskforce.errors.LLMProviderError` instead. Every result, last
    chunk and error carries ``attempts``; a success also ``usage`` (estimated), a
    failure none (an endpoint's error status reports none). Safe to share between concurrent
    missions: it keeps no state between calls.
    """

    def __init__(
        self,
        model: str = "scripted-1",
        latency_ms: float = 0.0,
        *,
        max_retries: int = 2,
        first_chunk_delay_ms: float = 0.0,
        chunk_delay_ms: float = 0.0,
    ) -> None:
        """Create the provider.

        Args:
            model: the model name reported when a call names none.
            latency_ms: how long every call sleeps before answering.
            max_retries: extra attempts after an ``llm:fail`` of a retryable type.
            first_chunk_delay_ms: how long a stream waits before its first chunk.
            chunk_delay_ms: how long a stream waits before each further chunk.

        Raises:
            ValueError: ``model`` is empty, ``max_retries`` negative, or a delay
                negative or not finite.
        """
        if not model:
            raise ValueError("model must be a non-empty string")
        for name, value in (
            ("latency_ms", latency_ms),
            ("first_chunk_delay_ms", first_chunk_delay_ms),
            ("chunk_delay_ms", chunk_delay_ms),
        ):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self._model = model
        self._latency_seconds = latency_ms / 1000
        self._first_chunk_delay_seconds = first_chunk_delay_ms / 1000
        self._chunk_delay_seconds = chunk_delay_ms / 1000
        # No backoff: scripted failures are instant and tests should be too.
        self._retry = RetryPolicy(max_retries, 0.0, 0.0, 0.0)

    @property
    def model(self) -> str:
        """The default model name."""
        return self._model

    @property
    def latency_ms(self) -> float:
        """How long every call sleeps before answering, in milliseconds."""
        return self._latency_seconds * 1000

    def __repr__(self) -> str:
        return f"ScriptedLLMProvider(model={self._model!r})"

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        model: str | None = None,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        """Answer the next turn of a conversation.

        Args:
            messages: the conversation; the first user message holds the mission.
            model: the model to report; defaults to the provider's model.
            tools: when non-empty, answer with native ``tool_calls``; otherwise
                answer with a legacy JSON action as ``content``.
            tool_choice: ``"none"`` forbids tool calls (the final answer is given);
                any other value is accepted and changes nothing.
            **kwargs: accepted for compatibility and ignored.

        Returns:
            The answer, or a failure result for ``llm:error``, attempts that
            ``llm:fail`` used up, or a bad directive.
        """
        used_model = model or self._model
        await self._pause()
        sent_chars = _sent_chars(messages, tools)
        attempts: list[LLMAttempt] = []
        try:
            script = parse_script(mission_text(messages))
            observations = observations_of(messages)
            directive = await self._attempts(
                script,
                len(observations),
                attempts,
                used_model,
                has_faults=bool(tools) or not _starts_a_step(messages),
            )
        except LLMProviderError as exc:
            return _failure(exc, used_model, attempts)
        if tools:
            if isinstance(directive, ToolDirective) and tool_choice != "none":
                call = _tool_call(directive, len(observations))
                return _success(None, [call], used_model, sent_chars, attempts)
            answer = script.final_answer(observations)
            return _success(answer, [], used_model, sent_chars, attempts)
        action = _json_action(script, messages, directive)
        return _success(action, [], used_model, sent_chars, attempts)

    async def generate(
        self,
        prompt: str,
        context: Mapping[str, Any] | None = None,
        model: str | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        """Answer a planning prompt with a JSON plan: one step per tool directive, then the end.

        Args:
            prompt: the planning prompt; every line is scanned for directives.
            context: counted in the usage estimate only.
            model: the model to report; defaults to the provider's model.
            **kwargs: accepted for compatibility and ignored.

        Returns:
            ``content`` is ``{"steps": [...]}`` as JSON, or a failure result when
            the script starts with ``llm:error`` (or ``llm:fail`` lines that use
            up the attempts) or a directive is malformed.
        """
        used_model = model or self._model
        await self._pause()
        sent_chars = len(prompt) + (len(json.dumps(dict(context), default=str)) if context else 0)
        attempts: list[LLMAttempt] = []
        try:
            script = parse_script(plan_text(prompt))
            await self._attempts(script, 0, attempts, used_model)
        except LLMProviderError as exc:
            return _failure(exc, used_model, attempts)
        steps = [d.describe() for d in script.tool_directives] + [FINAL_STEP_DESCRIPTION]
        content = json.dumps({"steps": steps})
        return {
            "success": True,
            "content": content,
            "usage": _usage(sent_chars, len(content)),
            "model": used_model,
            "attempts": attempts,
        }

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        model: str | None = None,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[StreamChunk, None]:
        """Stream the answer to a conversation word by word.

        With ``tools``, a ``tool:`` directive is answered with a tool call on
        the last chunk (no text); without, it is announced in words.

        Args:
            messages: the conversation; the first user message holds the mission.
            model: the model to report; defaults to the provider's model.
            tools: the tool schemas; when non-empty, tool calls come natively.
            tool_choice: ``"none"`` forbids tool calls.
            **kwargs: accepted for compatibility and ignored.

        Yields:
            ``{"attempts": [...]}`` first when the call was retried, ``{"content": ...}``
            deltas, then
            ``{"done": True, "usage": ..., "model": ..., "attempts": [...]}`` (with
            ``tool_calls`` when asked with tools).

        Raises:
            ScriptedLLMError: the next directive is ``llm:error``.
            ScriptedDirectiveError: a directive line is malformed.
            LLMProviderError: ``llm:fail`` lines used up the attempts
                (``error_type`` and ``attempts`` say how). None of these errors
                carries ``usage``, as a failed result has none.
        """
        used_model = model or self._model
        await self._pause()
        attempts: list[LLMAttempt] = []
        try:
            script = parse_script(mission_text(messages))
            observations = observations_of(messages)
            # cancelled: the report rides on the cancellation (RetryPolicy.run)
            directive = await self._attempts(script, len(observations), attempts, used_model)
        except LLMProviderError as exc:
            _reported(exc, attempts)
            if exc.model is None:  # the model the call asked for, as a failed result names
                exc.model = used_model
            raise
        calls: list[ToolCall] = []
        if isinstance(directive, ToolDirective) and tools and tool_choice != "none":
            text = ""
            calls.append(_tool_call(directive, len(observations)))
        elif isinstance(directive, ToolDirective) and not tools:
            text = f"I would call tool {directive.name} with {json.dumps(directive.arguments)}."
        else:
            text = script.final_answer(observations)
        if len(attempts) > 1:
            # Retries were made: their report at once, before the first text (StreamChunk).
            yield {"attempts": attempts}
        delay = self._first_chunk_delay_seconds
        for delta in _deltas(text):
            if delay > 0:
                await asyncio.sleep(delay)
            delay = self._chunk_delay_seconds
            yield {"content": delta}
        if delay > 0:
            await asyncio.sleep(delay)
        answer_chars = len(text) if text else len(json.dumps(calls))
        done: StreamChunk = {
            "done": True,
            "usage": _usage(_sent_chars(messages, tools), answer_chars),
            "model": used_model,
            "attempts": attempts,
        }
        if tools:
            done["tool_calls"] = calls
        yield done

    async def _attempts(
        self,
        script: Script,
        cursor: int,
        attempts: list[LLMAttempt],
        model: str,
        *,
        has_faults: bool = True,
    ) -> ToolDirective | None:
        """Run the attempts of the call at ``cursor``, which asked for ``model``; return the
        directive it answers.

        ``has_faults=False``: another call already reached this point of the script and
        took its ``llm:fail``/``llm:delay`` lines (see :func:`_starts_a_step`).

        Raises:
            LLMProviderError: ``llm:error`` is next, or ``llm:fail`` used up the attempts.
        """
        faults = script.faults(cursor, self._retry.max_retries + 1) if has_faults else CallFaults()
        directive = script.next_directive(cursor)

        async def attempt() -> ToolDirective | None:
            made = len(attempts)
            failure = faults.failures[made] if made < len(faults.failures) else None
            # The delay is the answer's, as a slow model's first chunk is: it holds back
            # the call's last attempt (the one that answers, or whose failure is final),
            # not one that fails and is retried, so a stream's time to first token reads it.
            if faults.delay_seconds > 0 and (
                failure is None or not self._retry.should_retry(failure, made)
            ):
                await asyncio.sleep(faults.delay_seconds)
            if failure is not None:
                raise _InjectedFailure(failure)
            if isinstance(directive, ErrorDirective):
                raise ScriptedLLMError()
            return directive

        try:
            return await self._retry.run(
                attempt, classify=_classify, attempts=attempts, provider=_PROVIDER, model=model
            )
        except _InjectedFailure as exc:
            message = f"llm:fail {exc.error_type} after {len(attempts)} attempt(s)"
            raise LLMProviderError(
                message, provider=_PROVIDER, error_type=exc.error_type, attempts=attempts
            ) from exc

    async def _pause(self) -> None:
        if self._latency_seconds > 0:
            await asyncio.sleep(self._latency_seconds)


def _json_action(
    script: Script, messages: Sequence[ChatMessage], directive: ToolDirective | None
) -> str:
    """The legacy flow's JSON action: finish a step after a tool result, else call or finish."""
    observation = last_observation(messages)
    if observation is not None:
        action: dict[str, Any] = {
            "action": "finish",
            "answer": f"Step complete. Result: {render_observation(observation)}",
        }
    elif directive is not None:
        action = {"action": "tool_call", "tool": directive.name, "args": directive.arguments}
    else:
        action = {"action": "finish", "answer": script.final_answer(observations_of(messages))}
    return json.dumps(action)


def _starts_a_step(messages: Sequence[ChatMessage]) -> bool:
    """Whether this is the legacy flow's first call of a plan step.

    Its point of the script was reached already, by the plan call (before the first
    tool result) or by the previous step's call that answered a tool result: the
    ``llm:fail``/``llm:delay`` lines there belong to that call, so that one line
    fails one call in both flows.
    """
    if not messages:
        return False
    content = messages[-1].get("content") or ""
    return messages[-1].get("role") == "user" and content.startswith(STEP_PREFIX)


def _deltas(text: str) -> list[str]:
    """Cut ``text`` into the deltas of a stream: each word with the space after it.

    None is empty (a text that ends with a space would give an empty last word), as the
    OpenAI-compatible provider streams no empty delta.
    """
    words = text.split(" ")
    return [delta for delta in (*(word + " " for word in words[:-1]), words[-1]) if delta]


def _tool_call(directive: ToolDirective, cursor: int) -> ToolCall:
    return {"id": f"call_{cursor}", "name": directive.name, "arguments": directive.arguments}


def _sent_chars(messages: Sequence[ChatMessage], tools: Sequence[ToolSchema] | None) -> int:
    """The characters a call sends, counted for its usage: message text plus tool schemas."""
    chars = sum(len(m.get("content") or "") for m in messages)
    return chars + (len(json.dumps(list(tools))) if tools else 0)


def _usage(sent_chars: int, answer_chars: int) -> Usage:
    prompt_tokens = estimate_tokens(sent_chars)
    completion_tokens = estimate_tokens(answer_chars)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _success(
    content: str | None,
    tool_calls: list[ToolCall],
    model: str,
    sent_chars: int,
    attempts: list[LLMAttempt],
) -> LLMResult:
    answer_chars = len(content) if content is not None else len(json.dumps(tool_calls))
    return {
        "success": True,
        "content": content,
        "tool_calls": tool_calls,
        "usage": _usage(sent_chars, answer_chars),
        "model": model,
        "attempts": attempts,
    }


def _failure(exc: LLMProviderError, model: str, attempts: list[LLMAttempt]) -> LLMResult:
    reported = _reported(exc, attempts)
    return {
        "success": False,
        "error": str(exc),
        "error_type": reported[-1].error_type or "other",
        "model": model,
        "attempts": reported,
    }
