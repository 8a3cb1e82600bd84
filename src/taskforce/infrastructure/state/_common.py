"""What both state stores share: session id rules, JSON encoding and the history limits."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskforce.core.interfaces.executor import SESSION_ID_PATTERN

__all__ = ["StateLimits", "check_session_id", "dumps", "loads", "records_to_drop"]

# The ids every layer accepts; no leading dot, which would allow "." and ".."
# and hide temp and lock files among the session files.
_SESSION_ID = SESSION_ID_PATTERN


def check_session_id(session_id: object) -> str:
    """Return ``session_id`` if a store can keep it.

    Args:
        session_id: 1 to 128 of ``A-Za-z0-9_.-``, not starting with ``.``.

    Returns:
        The id, unchanged.

    Raises:
        ValueError: the id is not a string of that shape; the message names it.
    """
    if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
        raise ValueError(
            f"invalid session id {session_id!r}: use 1 to 128 of A-Z a-z 0-9 _ . - "
            "and do not start with '.'"
        )
    return session_id


def dumps(value: Any, what: str = "session state") -> bytes:
    """Encode ``value`` as compact-ish UTF-8 JSON with sorted keys.

    Text that UTF-8 cannot carry (a lone surrogate from a tool's output) is
    written as a JSON ``\\u`` escape instead, so it still round-trips.

    Raises:
        TypeError: ``value`` is not JSON (an object, NaN, a cycle, a non-string key).
    """
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=False)
    except ValueError as exc:  # circular reference or NaN/inf: not JSON either
        raise TypeError(f"{what} is not JSON-serialisable: {exc}") from exc
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True, sort_keys=True).encode("ascii")


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(data: bytes | str) -> Any:
    """Parse JSON as the stores write it: ``NaN`` and ``Infinity`` are not JSON.

    Raises:
        ValueError: not JSON (or not UTF-8).
        RecursionError: nested deeper than the parser goes.
    """
    return json.loads(data, parse_constant=_not_a_number)


@dataclass(frozen=True, slots=True)
class StateLimits:
    """How much of its history a session keeps, and how long; ``None`` means no limit.

    Attributes:
        max_history: the most mission records a session keeps.
        max_bytes: the most bytes a session's stored state may take.
        session_ttl_seconds: how long a session lives without a write; then it expires.
    """

    max_history: int | None = None
    max_bytes: int | None = None
    session_ttl_seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_history", "max_bytes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        ttl = self.session_ttl_seconds
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf
        ):
            raise ValueError(f"session_ttl_seconds must be a positive number or None, got {ttl!r}")


def records_to_drop(sizes: Sequence[int], overhead: int, limits: StateLimits) -> int:
    """Return how many of the oldest records to drop so the rest fit ``limits``.

    The newest record is never dropped, even when it alone exceeds ``max_bytes``.

    Args:
        sizes: the size of each record, oldest first.
        overhead: the bytes of the state that are not records.
        limits: the limits to meet.
    """
    max_history = limits.max_history if limits.max_history is not None else len(sizes)
    max_bytes = limits.max_bytes
    kept, total, drop = len(sizes), overhead + sum(sizes), 0
    while kept > 1 and (kept > max_history or (max_bytes is not None and total > max_bytes)):
        total -= sizes[drop]
        kept -= 1
        drop += 1
    return drop
