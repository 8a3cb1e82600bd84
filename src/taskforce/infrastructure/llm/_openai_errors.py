"""The internal exceptions of the OpenAI-compatible provider: an unusable answer, a cut stream.

They never leave the provider, which turns each into a failure result or an
:class:`~taskforce.errors.LLMProviderError`. The module imports nothing from the
project, so each of the provider's modules can raise them without a cycle.
"""

from __future__ import annotations

__all__ = ["_InvalidResponse", "_StreamCut"]


class _InvalidResponse(Exception):
    """Internal: the endpoint answered 2xx with something that is not a usable answer."""


class _StreamCut(Exception):
    """Internal: a stream ended, without an error, before the model finished its answer."""
