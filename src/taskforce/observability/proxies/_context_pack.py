"""The size of what an LLM call sends: messages, and tokens estimated as characters / 4.

An agent sends the same conversation list on every turn, one or two messages
longer each time. A short list (up to ``SCAN_LIMIT`` messages) is simply counted:
counting a few messages again is cheaper than looking a remembered conversation up.
For a longer list :class:`PackEstimator` remembers how many messages it has
counted and their characters, and counts only the new ones, so the estimate does
not rescan a long conversation on every call. A list is recognised by its ``id``
together with the identity of its first and last counted message (the estimator
keeps those two objects alive, so their ids cannot be reused); anything else, a
shorter list or another first message, is counted from the start.

Assumes a conversation grows by appending, as both agents do: a message edited in
place after it was counted keeps its old length in the estimate.

Hazard: holds per-proxy mutable state without locks; use it on the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SCAN_LIMIT", "PackEstimator", "estimate_tokens"]

#: Conversations of up to this many messages are counted whole on every call.
SCAN_LIMIT = 16

# Conversations remembered at once; more and the memory starts over.
_MAX_CONVERSATIONS = 256


def estimate_tokens(chars: int) -> int:
    """Return the token estimate of ``chars`` characters (4 per token, rounded up)."""
    return (chars + 3) // 4


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
        # a long conversation resumes from its remembered count; a short one starts at 0
        counted = self._remembered(sent, length) if length > SCAN_LIMIT else None
        start, chars = (0, 0) if counted is None else (counted.length, counted.chars)
        # by index from ``start``: islice would step through the messages already counted
        for message in map(sent.__getitem__, range(start, length)) if start else sent:
            content = message.get("content")
            if content:
                chars += len(content)
        if counted is not None:
            counted.chars, counted.length, counted.last = chars, length, sent[-1]
        return length, (chars + 3) // 4

    def _remembered(self, sent: Sequence[Mapping[str, Any]], length: int) -> _Counted:
        """The count kept for ``sent``, or a new one at zero if it is not the same list grown."""
        counted = self._counted.get(id(sent))
        if (
            counted is None
            or counted.length > length
            or sent[0] is not counted.first
            or sent[counted.length - 1] is not counted.last
        ):
            if len(self._counted) >= _MAX_CONVERSATIONS:
                self._counted.clear()
            counted = self._counted[id(sent)] = _Counted(sent[0], None, 0, 0)
        return counted

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
