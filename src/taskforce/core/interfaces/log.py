"""What a log line may carry: the closed set of categories, and free text reduced to a digest.

Mission text, prompts, model replies, tool arguments and the error messages that
quote them never appear in a line at ``info`` or above; such a line carries
:func:`text_fields` instead: the text's length and the start of its SHA-256.
"""

from __future__ import annotations

import hashlib
from typing import Literal, get_args

__all__ = ["DIGEST_HEX_CHARS", "LOG_CATEGORIES", "LogCategory", "text_fields"]

DIGEST_HEX_CHARS = 16
"""Hex digits of the SHA-256 a log line keeps: enough to match a text one already has."""

LogCategory = Literal[
    "lifecycle",  # service start-up, shutdown, configuration
    "mission",  # a mission starts or ends
    "agent",  # agent loop decisions: plans, steps, parse failures
    "llm",  # calls to the LLM provider
    "tool",  # tool calls and their outcomes
    "state",  # session state persistence
    "http",  # HTTP requests served
    "performance",  # durations, sizes and other figures worth graphing
    "security",  # refused paths, failed authentication, redacted secrets
    "metrics",  # faults of the observability layer itself
]

LOG_CATEGORIES: tuple[str, ...] = get_args(LogCategory)


def text_fields(name: str, text: object) -> dict[str, int | str | None]:
    """Describe free text for a log line without repeating it.

    Args:
        name: the field the text would have had, e.g. ``"error"``.
        text: the text; anything else is described by its ``str()``, ``None`` as absent.

    Returns:
        ``{"<name>_chars": length, "<name>_sha256": first DIGEST_HEX_CHARS hex digits}``;
        both ``None`` when ``text`` is ``None``.
    """
    if text is None:
        return {f"{name}_chars": None, f"{name}_sha256": None}
    value = text if isinstance(text, str) else str(text)
    # surrogatepass: a lone surrogate (a non-UTF-8 file name) must not break the log line
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return {f"{name}_chars": len(value), f"{name}_sha256": digest[:DIGEST_HEX_CHARS]}
