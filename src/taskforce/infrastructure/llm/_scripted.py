"""The embedded scripted LLM provider: offline, deterministic answers driven by mission directives.

The provider holds no per-conversation state: every answer is computed from the
messages of the call, so one instance serves any number of concurrent missions.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from taskforce.core.domain.prompts import FINAL_STEP_DESCRIPTION
from taskforce.core.interfaces.llm import (
    ChatMessage,
    LLMResult,
    StreamChunk,
    ToolCall,
    ToolSchema,
    Usage,
)
from taskforce.infrastructure.llm._directives import (
    ErrorDirective,
    Script,
    ScriptedDirectiveError,
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

__all__ = ["ScriptedLLMProvider"]

_LLM_ERROR_MESSAGE = "scripted llm:error directive"


class ScriptedLLMProvider:
    """A deterministic stand-in for a language model (see CONTRACT.md, "scripted provider").

    Mission lines ``tool:NAME {json}`` become tool calls, one per turn, in order;
    ``llm:error`` makes the call that reaches it fail; other lines are echoed in
    the final answer. How far a conversation got is read from its tool results
    (``tool`` messages, or user messages starting with ``OBSERVATION_PREFIX``).

    ``complete`` with ``tools`` answers with native tool calls; without tools it
    answers with the legacy JSON actions; ``generate`` answers with a JSON plan.
    Failures are returned as ``{"success": False, ...}``; ``stream`` raises
    :class:`~taskforce.errors.LLMProviderError` instead. Safe to share between
    concurrent missions: it keeps no state between calls.
    """

    def __init__(self, model: str = "scripted-1", latency_ms: float = 0.0) -> None:
        """Create the provider.

        Args:
            model: the model name reported when a call names none.
            latency_ms: how long every call sleeps before answering.

        Raises:
            ValueError: ``model`` is empty or ``latency_ms`` is negative or not finite.
        """
        if not model:
            raise ValueError("model must be a non-empty string")
        if not math.isfinite(latency_ms) or latency_ms < 0:
            raise ValueError(f"latency_ms must be a finite number >= 0, got {latency_ms!r}")
        self._model = model
        self._latency_seconds = latency_ms / 1000

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
            The answer, or a failure result for ``llm:error`` or a bad directive.
        """
        used_model = model or self._model
        await self._pause()
        sent_chars = _chars_of(messages) + (len(json.dumps(list(tools))) if tools else 0)
        try:
            script = parse_script(mission_text(messages))
        except ScriptedDirectiveError as exc:
            return _failure(str(exc), type(exc).__name__, used_model, sent_chars)
        observations = observations_of(messages)
        directive = script.next_directive(len(observations))
        if isinstance(directive, ErrorDirective):
            return _failure(_LLM_ERROR_MESSAGE, ScriptedLLMError.__name__, used_model, sent_chars)
        if tools:
            if isinstance(directive, ToolDirective) and tool_choice != "none":
                call: ToolCall = {
                    "id": f"call_{len(observations)}",
                    "name": directive.name,
                    "arguments": directive.arguments,
                }
                return _success(None, [call], used_model, sent_chars)
            return _success(script.final_answer(observations), [], used_model, sent_chars)
        return _success(_json_action(script, messages, directive), [], used_model, sent_chars)

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
            the script starts with ``llm:error`` or a directive is malformed.
        """
        used_model = model or self._model
        await self._pause()
        sent_chars = len(prompt) + (len(json.dumps(dict(context), default=str)) if context else 0)
        try:
            script = parse_script(plan_text(prompt))
        except ScriptedDirectiveError as exc:
            return _failure(str(exc), type(exc).__name__, used_model, sent_chars)
        if isinstance(script.next_directive(0), ErrorDirective):
            return _failure(_LLM_ERROR_MESSAGE, ScriptedLLMError.__name__, used_model, sent_chars)
        steps = [d.describe() for d in script.tool_directives] + [FINAL_STEP_DESCRIPTION]
        content = json.dumps({"steps": steps})
        return {
            "success": True,
            "content": content,
            "usage": _usage(sent_chars, len(content)),
            "model": used_model,
        }

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        model: str | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[StreamChunk, None]:
        """Stream the plain-text answer to a conversation word by word.

        Args:
            messages: the conversation; the first user message holds the mission.
            model: the model to report; defaults to the provider's model.
            **kwargs: accepted for compatibility and ignored.

        Yields:
            ``{"content": ...}`` deltas, then ``{"done": True, "usage": ..., "model": ...}``.

        Raises:
            ScriptedLLMError: the next directive is ``llm:error``.
            ScriptedDirectiveError: a ``tool:`` line is malformed.
        """
        used_model = model or self._model
        await self._pause()
        script = parse_script(mission_text(messages))
        observations = observations_of(messages)
        directive = script.next_directive(len(observations))
        if isinstance(directive, ErrorDirective):
            raise ScriptedLLMError()
        if isinstance(directive, ToolDirective):
            text = f"I would call tool {directive.name} with {json.dumps(directive.arguments)}."
        else:
            text = script.final_answer(observations)
        words = text.split(" ")
        for index, word in enumerate(words):
            yield {"content": word if index == len(words) - 1 else word + " "}
        yield {"done": True, "usage": _usage(_chars_of(messages), len(text)), "model": used_model}

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


def _chars_of(messages: Sequence[ChatMessage]) -> int:
    return sum(len(m.get("content") or "") for m in messages)


def _usage(sent_chars: int, answer_chars: int) -> Usage:
    prompt_tokens = estimate_tokens(sent_chars)
    completion_tokens = estimate_tokens(answer_chars)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _success(
    content: str | None, tool_calls: list[ToolCall], model: str, sent_chars: int
) -> LLMResult:
    answer_chars = len(content) if content is not None else len(json.dumps(tool_calls))
    return {
        "success": True,
        "content": content,
        "tool_calls": tool_calls,
        "usage": _usage(sent_chars, answer_chars),
        "model": model,
    }


def _failure(error: str, error_type: str, model: str, sent_chars: int) -> LLMResult:
    return {
        "success": False,
        "error": error,
        "error_type": error_type,
        "model": model,
        "usage": _usage(sent_chars, 0),
    }
