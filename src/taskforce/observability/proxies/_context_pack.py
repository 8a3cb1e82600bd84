"""The size of what an LLM call sends: messages, and tokens estimated as characters / 4.

The LLM proxy counts the characters of the messages' ``content`` itself, in
``record_call``: in a running mission a call into a helper costs more than
counting a few messages. A short list (up to ``SCAN_LIMIT`` messages) is counted
whole on every call. An agent sends the same conversation list on every turn, one
or two messages longer each time, so for a longer list :class:`PackEstimator`
remembers how many messages were counted and their characters, and the proxy
counts only the new ones: a long conversation is not rescanned on every call. A
list is recognised by its ``id`` together with the identity of its first and last
counted message (the estimator keeps those two objects alive, so their ids cannot
be reused); anything else, a shorter list or another first message, is counted
from the start.

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
    """Remembers how far each long conversation list was counted (see the module doc)."""

    __slots__ = ("_counted",)

    def __init__(self) -> None:
        """Start with nothing counted."""
        self._counted: dict[int, _Counted] = {}

    def resume(self, sent: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
        """Where counting ``sent`` resumes: the messages already counted and their characters.

        Args:
            sent: The messages of the call, a list longer than ``SCAN_LIMIT``.

        Returns:
            ``(messages, characters)`` remembered for the same list, grown since;
            ``(0, 0)`` for a list not seen before, shortened, or changed.
        """
        counted = self._counted.get(id(sent))
        if (
            counted is None
            or counted.length > len(sent)
            or sent[0] is not counted.first
            or sent[counted.length - 1] is not counted.last
        ):
            return 0, 0
        return counted.length, counted.chars

    def remember(self, sent: Sequence[Mapping[str, Any]], chars: int) -> None:
        """Remember that ``sent``, as it is now, holds ``chars`` characters of content.

        Args:
            sent: The messages of the call, a list longer than ``SCAN_LIMIT``.
            chars: The characters of their ``content``.
        """
        counted = self._counted.get(id(sent))
        if counted is None:
            if len(self._counted) >= _MAX_CONVERSATIONS:
                self._counted.clear()
            self._counted[id(sent)] = _Counted(sent[0], sent[-1], len(sent), chars)
        else:
            counted.first, counted.last, counted.length = sent[0], sent[-1], len(sent)
            counted.chars = chars

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
