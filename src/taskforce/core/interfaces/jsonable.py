"""Any value a tool hands back, made writable as JSON: what JSON cannot hold becomes text.

``json.dumps(value, default=str)`` still fails on a tool's output in three ways: a
dict key that is no text, number, bool or ``None`` (a tuple); an int past the digits
Python writes (4300); and a value that contains itself. :func:`jsonable` rewrites
those, so the model, the stream and the mission's record get the rest of the output.
"""

from __future__ import annotations

from typing import Any

__all__ = ["as_text", "jsonable"]

# Keys json.dumps writes as they are (as text); any other key is written as its text.
_PLAIN_KEYS = (str, int, float, bool, type(None))


def as_text(value: object, placeholder: str = "<{} that cannot be written>") -> str:
    """Return ``str(value)``, or ``placeholder`` naming its type when that raises.

    The one place a value or an exception of someone else's is made into text: a
    ``__str__`` that raises (or an int past Python's digits) must not stop what reports
    it. As ``json.dumps(..., default=as_text)``, an object JSON has no form for is
    written as its text, and one that cannot even be printed does not stop the rest.

    Args:
        value: Anything.
        placeholder: What to say instead, ``{}`` standing for the name of its type.

    Returns:
        Its text, or the placeholder (``<X that cannot be written>`` by default).
    """
    try:
        return str(value)
    except Exception:  # a __str__ that raises, an int past Python's digits
        return placeholder.format(type(value).__name__)


def jsonable(value: Any) -> Any:
    """Return ``value`` with what JSON cannot hold made into text, the rest unchanged.

    Dicts (as plain dicts), lists and tuples (as lists) are rewritten all the way down;
    an int past Python's digits and a key JSON cannot take become their text (see
    :func:`as_text`), and a dict or list inside itself becomes ``<a cycle>``.

    Args:
        value: What a tool returned, or part of it.

    Returns:
        A value ``json.dumps(..., default=as_text)`` writes.
    """
    return _plain(value, set())


def _plain(value: Any, holding: set[int]) -> Any:
    if isinstance(value, dict | list | tuple):
        if id(value) in holding:
            return "<a cycle>"
        holding.add(id(value))
        try:
            if isinstance(value, dict):
                return {_key(key): _plain(item, holding) for key, item in value.items()}
            return [_plain(item, holding) for item in value]
        finally:
            holding.discard(id(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return value if _is_writable(value) else as_text(value)
    return value


def _key(key: object) -> object:
    if isinstance(key, int) and not isinstance(key, bool) and not _is_writable(key):
        return as_text(key)
    return key if isinstance(key, _PLAIN_KEYS) else as_text(key)


def _is_writable(number: int) -> bool:
    """Whether Python writes ``number`` in decimal (it refuses past 4300 digits)."""
    try:
        int.__repr__(number)
    except ValueError:
        return False
    return True
