"""Any value a tool hands back, made writable as JSON: what JSON cannot hold becomes text.

Also :func:`unique_keys`, which JSON read from a client or a setting is decoded with.

``json.dumps(value, default=str)`` still fails on a tool's output in three ways: a
dict key that is no text, number, bool or ``None`` (a tuple); an int past the digits
Python writes (4300); and a value that contains itself. :func:`jsonable` rewrites
those, so the model, the stream and the mission's record get the rest of the output;
:func:`json_writer` makes the one function each of them writes it with. Both read a
value by its type, as the json encoder does: a proxy that claims to be a dict (its
``__class__``) is a value, written as its text.

Past Python's recursion limit ``json.dumps`` raises ``RecursionError``; :func:`jsonable`
writes a container deeper than :data:`MAX_WRITTEN_DEPTH` levels as ``<nested too deep>``,
so no writer raises. A tool result is not cut so: one that does not
:func:`nests_within` ``agent.max_result_depth`` levels (:data:`MAX_RESULT_DEPTH` unless
set, at most :data:`MAX_WRITTEN_DEPTH`) is the tool's ``invalid_result``
(``classify_tool_result``), and neither the model nor the stream gets it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = [
    "MAX_RESULT_DEPTH",
    "MAX_WRITTEN_DEPTH",
    "SCALAR_TYPES",
    "UNICODE_LINE_ENDS",
    "as_text",
    "json_writer",
    "jsonable",
    "loads_within",
    "nests_within",
    "one_line",
    "unique_keys",
]

#: The deepest nesting of dicts, lists and tuples a tool result or a tool call's arguments
#: may have, themselves the first level, unless ``agent.max_result_depth`` says otherwise.
MAX_RESULT_DEPTH = 100

#: Where :func:`jsonable` cuts any value, and so the most ``agent.max_result_depth`` may be:
#: well within what the JSON writers reach under Python's recursion limit (the fallback
#: writer takes two frames a level on Python 3.11).
MAX_WRITTEN_DEPTH = 250

# What a writer writes item by item; anything else is a value (or its text).
_CONTAINERS = (dict, list, tuple)
#: The types (exactly these, no subclass) of a value that is no container: a dict that
#: holds only such values nests one level, which a caller may tell without a walk.
SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})
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


#: Line ends in Unicode that neither JSON nor the SSE spec escape or split at: NEL, LINE
#: SEPARATOR and PARAGRAPH SEPARATOR. JSON may hold them raw, but ``str.splitlines`` (and
#: the readers built on it, httpx's ``aiter_lines``) cuts a line at each.
UNICODE_LINE_ENDS = "\x85\u2028\u2029"
_LINE_END_ESCAPES = str.maketrans({char: f"\\u{ord(char):04x}" for char in UNICODE_LINE_ENDS})


def json_writer(
    *, is_finite: bool = False, is_one_line: bool = False, **options: Any
) -> Callable[[Any], str]:
    """Make a function that writes any value as JSON text, as ``json.dumps`` would.

    An object JSON has no form for is written as its text (:func:`as_text`). A value
    ``json.dumps`` refuses (a key JSON cannot take, an int past Python's digits, a
    cycle, nesting past Python's recursion limit, with ``is_finite`` a NaN or infinite
    float) is written again through :func:`jsonable`, so the rest of it is kept. A NaN
    or infinite key is written as ``json.dumps`` writes it (``"NaN"``, ``"Infinity"``),
    with ``is_finite`` too.

    Args:
        is_finite: Write a NaN or infinite float as ``null``, for a strict JSON reader
            (``NaN`` and ``Infinity`` otherwise, which JSON has no literal for).
        is_one_line: Write :data:`UNICODE_LINE_ENDS` as ``\\uXXXX`` escapes, so that the
            text is one line for any line splitter (without ``indent``); they can only
            stand inside JSON strings, where the escape reads back as the same text.
        **options: Further options of ``json.JSONEncoder`` (``ensure_ascii``,
            ``separators``).

    Returns:
        The function of one value; the encoder is made once, here.
    """
    encoder = json.JSONEncoder(default=as_text, allow_nan=not is_finite, **options)

    def write(value: Any) -> str:
        try:
            return encoder.encode(value)
        except (TypeError, ValueError, RecursionError):
            return encoder.encode(_plain(value, set(), is_finite))

    if not is_one_line:
        return write

    def write_one_line(value: Any) -> str:
        return one_line(write(value))

    return write_one_line


def one_line(text: str) -> str:
    """``text`` with :data:`UNICODE_LINE_ENDS` written as ``\\uXXXX`` escapes.

    For JSON text, where they can only stand inside strings and the escape reads back as
    the same text: the text is then one line for any line splitter.
    """
    return text.translate(_LINE_END_ESCAPES)


def jsonable(value: Any) -> Any:
    """Return ``value`` with what JSON cannot hold made into text, the rest unchanged.

    Dicts (as plain dicts), lists and tuples (as lists) are rewritten all the way down;
    an int past Python's digits and a key JSON cannot take become their text (see
    :func:`as_text`), a dict or list inside itself becomes ``<a cycle>``, and one
    deeper than :data:`MAX_WRITTEN_DEPTH` levels ``<nested too deep>``.

    Args:
        value: What a tool returned, or part of it.

    Returns:
        A value ``json.dumps(..., default=as_text)`` writes.
    """
    return _plain(value, set(), False)


def nests_within(value: object, levels: int) -> bool:
    """Tell whether ``value`` nests dicts, lists and tuples at most ``levels`` deep.

    ``value`` itself, if it is one, is the first level. The walk reads the containers as
    :func:`jsonable` does (a dict's ``items``, a list's or tuple's items), with no
    recursion; a container inside itself, which :func:`jsonable` writes as ``<a cycle>``,
    adds no level. Keys are not walked: one JSON cannot take is written as its text.

    Args:
        value: What a tool returned, or anything else to be written as JSON.
        levels: The deepest nesting allowed, at least 1.

    Returns:
        ``False`` when it nests deeper, or a container of its own cannot be read through
        (its ``items`` or iteration raises); never raises.
    """
    try:
        return _nests_within(value, levels)
    except Exception:  # a container of the tool's own that cannot be read: no writer can
        return False


def _nests_within(value: object, levels: int) -> bool:
    if not issubclass(type(value), _CONTAINERS) or _holds_no_container(value):
        return True  # no container, or one level (a tool call's arguments, mostly)
    path = {id(value)}  # the containers the walk is inside, as _plain's holding
    stack = [(value, _items(value))]
    while stack:
        container, items = stack[-1]
        for item in items:
            # its type, as the json encoder reads it: a __class__ of the value's own may raise
            if issubclass(type(item), _CONTAINERS) and id(item) not in path:
                if len(stack) >= levels:
                    return False
                if _holds_no_container(item):  # most are (a listing's entries): one level
                    continue
                path.add(id(item))
                stack.append((item, _items(item)))
                break
        else:
            stack.pop()
            path.discard(id(container))
    return True


def _holds_no_container(container: Any) -> bool:
    """Whether every item of ``container`` is of a :data:`SCALAR_TYPES` type, told in C."""
    kind = type(container)
    if kind is dict:
        items: Iterable[Any] = container.values()
    elif issubclass(kind, dict):  # one of its own: read through its items, as a writer does
        items = _items(container)
    else:
        items = container
    return SCALAR_TYPES.issuperset(map(type, items))


def _items(container: Any) -> Iterator[Any]:
    """The items a writer writes of ``container``: a dict's values, a sequence's items."""
    if issubclass(type(container), dict):
        return (item for _, item in container.items())
    return iter(container)


def _plain(value: Any, holding: set[int], is_finite: bool) -> Any:
    # Read by its type, as the json encoder reads it: a proxy that claims another
    # __class__ is a value (written as its text), and a __class__ that raises is not read.
    kind = type(value)
    if issubclass(kind, _CONTAINERS):
        if id(value) in holding:
            return "<a cycle>"
        if len(holding) >= MAX_WRITTEN_DEPTH:  # holding: the containers it is inside
            return "<nested too deep>"
        holding.add(id(value))
        try:
            if issubclass(kind, dict):
                return {_key(key): _plain(item, holding, is_finite) for key, item in value.items()}
            return [_plain(item, holding, is_finite) for item in value]
        finally:
            holding.discard(id(value))
    if issubclass(kind, int) and not issubclass(kind, bool):
        return value if _is_writable(value) else as_text(value)
    if is_finite and issubclass(kind, float) and not math.isfinite(value):
        return None
    return value


def _key(key: Any) -> Any:
    kind = type(key)  # as in _plain
    if issubclass(kind, int) and not issubclass(kind, bool) and not _is_writable(key):
        return as_text(key)
    if issubclass(kind, float) and not math.isfinite(key):
        return json.dumps(key)  # as json.dumps writes such a key: "NaN", "Infinity"
    return key if issubclass(kind, _PLAIN_KEYS) else as_text(key)


def _is_writable(number: int) -> bool:
    """Whether Python writes ``number`` in decimal (it refuses past 4300 digits)."""
    try:
        int.__repr__(number)
    except ValueError:
        return False
    return True


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's members as a dict; a key given twice is refused (which one would count?).

    For ``json.loads(..., object_pairs_hook=unique_keys)``: ``json.loads`` keeps the
    last, another reader (a proxy, a log pipeline) may keep the first, so the request or
    setting one of them checked would not be the one that ran.

    Raises:
        json.JSONDecodeError: a key is given twice (named, its first 40 characters).
    """
    value = dict(pairs)
    if len(value) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise json.JSONDecodeError(f"duplicate key {key[:40]!r}", "", 0)
            seen.add(key)
    return value


def loads_within(text: str, levels: int = MAX_WRITTEN_DEPTH, **options: Any) -> Any:
    """``json.loads(text, **options)``, refusing nesting deeper than ``levels``.

    How deep ``json`` itself reads depends on the Python (about 1,000 levels on 3.11,
    1,500 on 3.12, 10,000 on 3.13, fewer the deeper the caller's stack): a bound well
    within all of them makes a value nested between the two the same refusal on each.

    Args:
        text: The JSON text.
        levels: The deepest nesting allowed (:func:`nests_within`), at least 1.
        **options: What ``json.loads`` takes (``object_pairs_hook``, ...).

    Returns:
        The decoded value.

    Raises:
        ValueError: the text is not JSON (a ``json.JSONDecodeError``), or holds a number
            past Python's int digits.
        RecursionError: it nests deeper than ``levels``, or than ``json`` reads.
    """
    value = json.loads(text, **options)
    if not nests_within(value, levels):
        raise RecursionError(f"nested deeper than {levels} levels")
    return value
