"""The size of what an LLM call sends: messages, and tokens estimated as characters / 4.

An agent sends the same conversation list on every turn, one or two messages
longer each time, so :class:`PackEstimator` counts only what a conversation
gained since it was last counted, and never rescans it:

- the conversation of the previous call is kept (the list itself, so ``is``
  recognises it) with its count: the common case, one agent turn after another,
  costs a check and the new messages;
- a conversation of more than ``SCAN_LIMIT`` messages is also remembered by its
  ``id``, so missions that interleave on one provider do not rescan their long
  conversations; it is recognised by the identity of its first and last counted
  message (kept alive, so their ids cannot be reused);
- anything else (a short conversation after another one, a list that lost
  messages or whose first or last counted message was replaced) is counted from
  the start.

Assumes a conversation grows by appending, as both agents do: a message edited in
place after it was counted keeps its old length in the estimate.

Hazard: holds per-proxy mutable state without locks; use it on the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SCAN_LIMIT", "PackEstimator", "estimate_tokens"]

#: Conversations longer than this are remembered by id as well as when most recent.
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

    __slots__ = ("_counted", "_recent", "_recent_list")

    def __init__(self) -> None:
        """Start with nothing counted."""
        self._counted: dict[int, _Counted] = {}
        # the conversation of the previous call, kept alive so that ``is`` is safe
        self._recent_list: object = None
        self._recent = _Counted(None, None, 0, 0)

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
        if not length:
            return 0, 0
        counted = self._recent
        if (
            sent is not self._recent_list
            or counted.length > length
            or sent[0] is not counted.first
            or sent[counted.length - 1] is not counted.last
        ):
            counted = self._recent = self._find(sent, length)
            self._recent_list = sent
        start = counted.length
        if start < length:  # count what is new, inline: one call less on every LLM call
            chars = counted.chars
            # by index from ``start``: islice would step through the counted ones
            for message in map(sent.__getitem__, range(start, length)) if start else sent:
                content = message.get("content")
                if content:
                    chars += len(content)
            counted.chars, counted.length, counted.last = chars, length, sent[-1]
        return length, (counted.chars + 3) // 4

    def _find(self, sent: Sequence[Mapping[str, Any]], length: int) -> _Counted:
        """The count of a long conversation remembered by id, else a count from zero."""
        if length <= SCAN_LIMIT:
            return _Counted(sent[0], None, 0, 0)
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
