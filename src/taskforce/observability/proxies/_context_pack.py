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

The estimator belongs to the mission the call is made in, in the calling task's context
(see :func:`mission_packs`), not to the proxy: the messages it keeps alive are those of
that mission's conversations. They go with the task, or when the task's next mission
calls, so a finished mission's messages (a tool's whole output, say) are not held on
for later ones.

Assumes a conversation grows by appending, as both agents do: a message edited in
place after it was counted keeps its old length in the estimate.

Hazard: an estimator holds mutable state without locks; use it on the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from taskforce.core.interfaces.context import current_mission_id

__all__ = ["SCAN_LIMIT", "PackEstimator", "estimate_tokens", "mission_packs"]

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


# (mission id, its estimator) in the context of the task that made the mission's calls
_MISSION_PACKS: ContextVar[tuple[str | None, PackEstimator] | None] = ContextVar(
    "taskforce_mission_packs", default=None
)


def mission_packs() -> PackEstimator:
    """Return the estimator of the running mission, made on its first long call.

    It is kept in the calling task's context: a call in a task of its own (or under
    ``Context.run``) gets an estimator of its own, and counts the whole list, as for a
    list not seen before. Calls outside any mission share one per task.
    """
    mission_id = current_mission_id()
    held = _MISSION_PACKS.get()
    if held is None or held[0] != mission_id:
        held = (mission_id, PackEstimator())
        _MISSION_PACKS.set(held)
    return held[1]


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
