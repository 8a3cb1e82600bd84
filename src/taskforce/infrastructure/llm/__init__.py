"""LLM providers: the offline scripted provider, an OpenAI-compatible one, and the factory."""

from __future__ import annotations

from taskforce.config import LLMSettings
from taskforce.core.interfaces.llm import LLMProviderProtocol
from taskforce.errors import ConfigurationError
from taskforce.infrastructure.llm._directives import ScriptedDirectiveError, ScriptedLLMError
from taskforce.infrastructure.llm._openai import OpenAICompatibleProvider
from taskforce.infrastructure.llm._scripted import ScriptedLLMProvider

__all__ = [
    "OpenAICompatibleProvider",
    "ScriptedDirectiveError",
    "ScriptedLLMError",
    "ScriptedLLMProvider",
    "make_provider",
]


def make_provider(settings: LLMSettings) -> LLMProviderProtocol:
    """Build the provider the ``llm`` settings ask for.

    Args:
        settings: the ``llm`` section of the settings.

    Returns:
        A :class:`ScriptedLLMProvider` or an :class:`OpenAICompatibleProvider`;
        both also satisfy ``StreamingLLMProviderProtocol``. The caller owns an
        OpenAI provider and closes it with ``aclose()``.

    Raises:
        ConfigurationError: ``provider`` is ``openai`` and ``base_url`` is unset (only
            in settings built with ``model_construct``: validation refuses it).
    """
    if settings.provider == "scripted":
        return ScriptedLLMProvider(
            model=settings.model,
            latency_ms=settings.scripted_latency_ms,
            max_retries=settings.max_retries,
            first_chunk_delay_ms=settings.scripted_first_chunk_delay_ms,
            chunk_delay_ms=settings.scripted_chunk_delay_ms,
        )
    if settings.base_url is None:  # LLMSettings refuses this; a hand-built copy may not
        raise ConfigurationError("llm.base_url", "is required when llm.provider is 'openai'")
    api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    return OpenAICompatibleProvider(
        model=settings.model,
        base_url=settings.base_url,
        api_key=api_key,
        timeout_seconds=settings.timeout_seconds,
        max_retries=settings.max_retries,
        retry_after_max_seconds=settings.retry_after_max_seconds,
        max_response_bytes=settings.max_response_bytes,
    )
