"""The internal exceptions of the OpenAI-compatible provider: an unusable answer, an error
object in a 2xx answer, a cut stream.

They never leave the provider, which turns each into a failure result or an
:class:`~taskforce.errors.LLMProviderError`. The module imports nothing from the
project, so each of the provider's modules can raise them without a cycle.
"""

from __future__ import annotations

from typing import Any

__all__ = ["_ErrorInAnswer", "_InvalidResponse", "_StreamCut"]


class _InvalidResponse(Exception):
    """Internal: the endpoint answered 2xx with something that is not a usable answer."""


class _StreamCut(Exception):
    """Internal: a stream ended, without an error, before the model finished its answer."""


class _ErrorInAnswer(Exception):
    """Internal: a 2xx chat completion whose body is an error object, not an answer.

    A router that fails while the model writes (OpenRouter, say) answers 200 with
    ``{"error": {"code": 429, ...}}``; ``body`` is that error, read as the SDK reads one
    inside a stream. ``headers`` are the answer's headers, whose ``Retry-After``,
    ``retry-after-ms`` and ``x-should-retry`` are read as a real 429's are. ``usage`` is
    what the answer reported (billed), if anything.
    """

    def __init__(self, body: object, headers: Any = None, usage: Any = None) -> None:
        super().__init__("the answer carried an error")
        self.body = body
        self.headers = headers
        self.usage = usage
