"""The size of what an LLM call sends: messages, and tokens estimated as characters / 4.

An agent sends the same conversation list on every turn, one or two messages
longer each time. :class:`PackEstimator` remembers, per list, how many messages it
has counted and their characters, and counts only the new ones, so the estimate
does not rescan the whole conversation on every call. A list is recognised by its
``id`` together with the identity of its first and last counted message (the
estimator keeps those two objects alive, so their ids cannot be reused); anything
else, a shorter list or another first message, is counted from the start.

Assumes a conversation grows by appending, as both agents do: a message edited in
place after it was counted keeps its old length in the estimate.

Hazard: holds per-proxy mutable state without locks; use it on the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["PackEstimator", "estimate_tokens"]

# Conversations remembered at once; more and the memory starts over.
_MAX_CONVERSATIONS = 256


def estimate_tokens(chars: int) -> int:
    """Return the token estimate of ``chars`` characters (4 per token, rounded up)."""
    return (chars + 3) // 4


def _chars(messages: Sequence[Any], start: int) -> int:
    chars = 0
    for index in range(start, len(messages)):
        content = messages[index].get("content")
        if content:
            chars += len(content)
    return chars


class _Counted:
    __slots__ = ("chars", "first", "last", "length")

    def __init__(self, first: object, last: object, length: int, chars: int) -> None:
        self.first = first
        self.last = last
        self.length = length
        self.chars = chars


class PackEstimator:
    """Estimates the context pack of ``complete``/``stream`` calls, per conversation list."""

    __slots__ = ("_counted",)

    def __init__(self) -> None:
        """Start with nothing counted."""
        self._counted: dict[int, _Counted] = {}

    def messages(self, sent: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
        """Return the number of messages in ``sent`` and their estimated tokens.

        Args:
            sent: The messages of the call (``content`` may be missing or ``None``).

        Returns:
            ``(messages, estimated tokens)``.

        Raises:
            Exception: Whatever reading a message raises (not a mapping, ...).
        """
        length = len(sent)
        if length == 0:
            return 0, 0
        key = id(sent)
        counted = self._counted.get(key)
        if (
            counted is not None
            and counted.length <= length
            and sent[0] is counted.first
            and sent[counted.length - 1] is counted.last
        ):
            chars = counted.chars + _chars(sent, counted.length)
        else:
            chars = _chars(sent, 0)
            if counted is None and len(self._counted) >= _MAX_CONVERSATIONS:
                self._counted.clear()
            counted = self._counted[key] = _Counted(sent[0], sent[-1], length, chars)
        counted.last, counted.length, counted.chars = sent[-1], length, chars
        return length, estimate_tokens(chars)

    @staticmethod
    def prompt(prompt: str, context: object) -> tuple[int, int]:
        """Return the pack of a ``generate`` call: one message, prompt plus context.

        Args:
            prompt: The prompt.
            context: The context mapping, or None; its ``str()`` stands in for however
                the provider renders it.

        Returns:
            ``(1, estimated tokens)``.
        """
        return 1, estimate_tokens(len(prompt) + (len(str(context)) if context else 0))
