"""What a log line may carry: the closed set of categories, and free text reduced to a digest.

Mission text, prompts, model replies, tool arguments and the error messages that
quote them never appear in a line at ``info`` or above; such a line carries
:func:`text_fields` instead: the text's length and the start of its SHA-256. Text a
client chose that a line does quote (a request's path) is cut by :func:`cut_text`, and
so is such text an error message quotes (:func:`quoted`).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal, cast, get_args
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from taskforce.core.interfaces.jsonable import as_text

__all__ = [
    "DIGEST_HEX_CHARS",
    "LOG_CATEGORIES",
    "MAX_PATH_CHARS",
    "MAX_QUOTED_CHARS",
    "REDACTED",
    "SECRET_NAME_WORDS",
    "SHORT_SECRET_CHARS",
    "LogCategory",
    "cut_text",
    "is_secret_name",
    "quoted",
    "redact_secret_parameters",
    "secret_scrubber",
    "text_fields",
]

REDACTED = "***"
"""What a secret is replaced with."""

SHORT_SECRET_CHARS = 8
"""A secret shorter than this is redacted only where it stands alone (see secret_scrubber)."""

DIGEST_HEX_CHARS = 16
"""Hex digits of the SHA-256 a log line keeps: enough to match a text one already has."""

MAX_PATH_CHARS = 1024
"""The default of ``logging.max_path_chars``: the longest request path (query included)
an access log line keeps."""

MAX_QUOTED_CHARS = 80
"""How much of a text an error message quotes: a mission's directive line, a tool's
argument or name (the rest is counted, not repeated; the message reaches the model, the
client and the session record)."""

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
        text: the text; anything else is described by its ``str()`` (see ``as_text``: a
            placeholder when that raises), ``None`` as absent.

    Returns:
        ``{"<name>_chars": length, "<name>_sha256": first DIGEST_HEX_CHARS hex digits}``;
        both ``None`` when ``text`` is ``None``.
    """
    if text is None:
        return {f"{name}_chars": None, f"{name}_sha256": None}
    value = text if isinstance(text, str) else as_text(text)
    # surrogatepass: a lone surrogate (a non-UTF-8 file name) must not break the log line
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return {f"{name}_chars": len(value), f"{name}_sha256": digest[:DIGEST_HEX_CHARS]}


def cut_text(text: str, max_chars: int) -> str:
    """Cut ``text`` at ``max_chars`` characters, with a marker saying how many were left out.

    Args:
        text: The text, e.g. a request's path and query.
        max_chars: How many of its characters to keep; at least 1.

    Returns:
        ``text`` itself when it is no longer than ``max_chars``, else its first
        ``max_chars`` characters followed by ``...[+N chars]``.

    Raises:
        ValueError: ``max_chars`` is less than 1.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}...[+{len(text) - max_chars} chars]"


def quoted(text: object, max_chars: int = MAX_QUOTED_CHARS) -> str:
    """Quote ``text`` in an error message: its ``repr``, cut as :func:`cut_text` cuts.

    Runs none of the value's own code (a ``__repr__``, a ``str`` subclass's methods), so
    it neither raises nor takes longer than the value's size allows: a string is read
    through ``str``'s own methods; a value of plain data (``None``, ``bool``, ``int``,
    ``float``, ``str``, ``list``, ``tuple``, ``dict``, nested) of at most
    ``_MAX_PLAIN_SIZE`` characters of ``repr`` is quoted as its ``repr``, cut; anything
    else is named by its type (``<Widget object>``, ``<list of 5000 items>``, ``<int of
    20000 bits>``).

    Args:
        text: The text, e.g. a directive line or a path a tool was given; anything else
            (a JSON value where a string was due) is quoted as described above.
        max_chars: How many of its characters to quote; at least 1.

    Returns:
        ``repr(text)`` when it is no longer than ``max_chars``, else the ``repr`` of its
        first ``max_chars`` characters followed by ``...[+N chars]``.

    Raises:
        ValueError: ``max_chars`` is less than 1.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    string = cast(str, text)
    if type(text) is not str:
        if not issubclass(type(text), str):  # not isinstance: that may read its own __class__
            return cut_text(_plain_repr(text), max_chars)
        string = str.__str__(string)  # a plain copy: the subclass's methods are its own code
    if len(string) <= max_chars:
        return repr(string)
    return f"{string[:max_chars]!r}...[+{len(string) - max_chars} chars]"


#: The longest ``repr`` of plain data :func:`quoted` builds; a larger value is named by type.
_MAX_PLAIN_SIZE = 100_000
#: The deepest nesting :func:`quoted` reads (``repr`` itself stops at the recursion limit).
_MAX_PLAIN_DEPTH = 100
#: The longest int :func:`quoted` writes out: under 640 digits, the lowest limit
#: ``sys.set_int_max_str_digits`` takes, past which ``repr`` raises.
_MAX_PLAIN_INT_BITS = 2000
_SCALARS = (type(None), bool, float)


def _plain_repr(value: object) -> str:
    """``repr(value)`` for plain data of bounded size, else ``<type ...>`` (see :func:`quoted`)."""
    size = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending and size <= _MAX_PLAIN_SIZE:
        item, depth = pending.pop()
        kind = type(item)
        if kind in _SCALARS:
            size += 24  # the longest repr of a float, about
        elif kind is str:
            size += 2 + 4 * len(item)  # quotes, and a \xNN escape per character at worst
        elif kind is int and item.bit_length() <= _MAX_PLAIN_INT_BITS:
            size += 1 + item.bit_length() // 3  # a decimal digit per 3.3 bits
        elif kind in (list, tuple) and depth < _MAX_PLAIN_DEPTH:
            size += 2 + 2 * len(item)  # brackets and ", "
            if size <= _MAX_PLAIN_SIZE:
                pending.extend((member, depth + 1) for member in item)
        elif kind is dict and depth < _MAX_PLAIN_DEPTH:
            size += 2 + 4 * len(item)  # braces, ": " and ", "
            if size <= _MAX_PLAIN_SIZE:
                for key, member in item.items():
                    pending += ((key, depth + 1), (member, depth + 1))
        else:
            return _named(value)  # a value of a type of its own: its repr is its own code
    return repr(value) if size <= _MAX_PLAIN_SIZE else _named(value)


def _named(value: Any) -> str:
    """``<list of 5000 items>``, ``<int of 20000 bits>``, ``<Widget object>``."""
    kind = type(value)
    if kind in (list, tuple, dict):
        return f"<{kind.__name__} of {len(value)} items>"
    if kind is int:
        return f"<int of {value.bit_length()} bits>"
    # the type's own name, read past any __qualname__ its metaclass defines
    return f"<{type.__dict__['__qualname__'].__get__(kind)} object>"


#: The last word of a name that makes what it names a secret: a log field (``api_key``,
#: ``Authorization``), a header (``x-api-key``), a query parameter (``access_token``).
SECRET_NAME_WORDS = frozenset(
    {
        "apikey",
        "auth",
        "authorization",
        "bearer",
        "credential",
        "credentials",
        "key",
        "passwd",
        "password",
        "pwd",
        "secret",
        "signature",
        "token",
    }
)
#: Where a camelCase name starts a word: a capital after a small letter or digit.
_CAMEL_HUMP = re.compile(r"([a-z0-9])([A-Z])")
#: A ``name=value`` pair of a query: after ``?``, ``&`` or ``;``, up to the next or a space.
#: A name with no ``=`` after it is matched whole without a value (group 1 ``None``), so
#: that no later start inside it is tried: each would scan to the same end and fail, and
#: a query of many ``?`` would take time that grows with the square of its length.
_PARAMETER = re.compile(r"(?<=[?&;])(?:([^=&;#\s]*+)=([^&;#\s]*+)|[^=&;#\s]++)")


#: The longest name whose answer is remembered: field names are short, while a client's
#: query parameter names (an access line's) may be as long as its request line, and
#: remembering those would keep up to the cache's size of them in memory.
_REMEMBERED_NAME_CHARS = 64


def is_secret_name(name: str) -> bool:
    """Whether ``name`` names a secret: a log field's, a header's or a query parameter's.

    It does when its last word (words split at anything not a letter or digit and
    before a camelCase capital, ``%XX`` escapes decoded, any case) is one of
    :data:`SECRET_NAME_WORDS`, or ends in ``token`` or ``password`` (``accessToken``):
    ``api_key``, ``X-Api-Key``, ``xApiKey``, ``auth_token``, ``client_secret``; not
    ``tokens``, ``token_type`` or ``monkey``.

    Args:
        name: The name, as written.

    Returns:
        True for the name of a secret.
    """
    if len(name) > _REMEMBERED_NAME_CHARS:
        return _names_a_secret(name)
    return _remembered_names_a_secret(name)


def _names_a_secret(name: str) -> bool:
    """:func:`is_secret_name`, worked out."""
    # camelCase parts are words too (xApiKey)
    spaced = _CAMEL_HUMP.sub(r"\1 \2", unquote_plus(name))
    words = re.findall(r"[a-z0-9]+", spaced.lower())
    last = words[-1] if words else ""
    return last in SECRET_NAME_WORDS or last.endswith(("token", "password"))


#: Each log line asks for each of its field names.
_remembered_names_a_secret = functools.lru_cache(maxsize=4096)(_names_a_secret)


def redact_secret_parameters(target: str) -> str:
    """Replace the value of each query parameter that names a secret with :data:`REDACTED`.

    A client may send a credential in the URL (``?token=...``, ``?api_key=...``) that is
    not one of the configured secrets :func:`secret_scrubber` knows: an access log line
    must not keep it either. Which names are a secret's, :func:`is_secret_name` says.

    Args:
        target: A request's path and query, as a client sent it.

    Returns:
        ``target`` with those values replaced; the path and every other parameter as given.
    """
    path, mark, query = target.partition("?")
    if not mark:
        return target

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None or not is_secret_name(name):  # no parameter, or not a secret's
            return match.group(0)
        return f"{name}={REDACTED}"

    return path + mark + _PARAMETER.sub(value, mark + query)[1:]


def secret_scrubber(secrets: Iterable[str]) -> Callable[[str], str]:
    """Build the function that replaces every known secret in a text with :data:`REDACTED`.

    A secret of :data:`SHORT_SECRET_CHARS` or more is replaced wherever it occurs. A
    shorter one (a placeholder API key such as ``EMPTY``, a one-letter token) only
    where no letter or digit touches it (a ``%XX`` escape before it counts as a
    boundary): replaced everywhere, it would rewrite the event names of every line
    (``mission.started`` with a token ``e``). Each secret is also looked for
    percent-encoded, as a URL's query carries it, and in a text whose ``%XX`` escapes
    are decoded: a text that holds a secret only once decoded is given decoded, redacted.

    Args:
        secrets: The secret values; empty ones are ignored.

    Returns:
        A function from a text to the text with the secrets replaced.
    """
    given = {s for s in secrets if s}
    # as written, and as a URL carries it (an access log line quotes the raw query)
    values = sorted(
        given | {quote(s, safe="") for s in given} | {quote_plus(s) for s in given},
        key=len,
        reverse=True,
    )
    whole = tuple(s for s in values if len(s) >= SHORT_SECRET_CHARS)
    short = [s for s in values if len(s) < SHORT_SECRET_CHARS]
    # standing alone: not preceded by a letter or digit, unless that ends a %-escape
    # (Bearer%20abc), and not followed by one
    before = r"(?:(?<=%[0-9A-Fa-f]{2})|(?<![^\W_]))"
    alone = (
        re.compile("|".join(rf"{before}{re.escape(s)}(?![^\W_])" for s in short)) if short else None
    )

    def scrub_plain(text: str) -> str:
        for secret in whole:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return alone.sub(REDACTED, text) if alone is not None else text

    def scrub(text: str) -> str:
        text = scrub_plain(text)
        if "%" in text and given:
            # A client may encode a secret as it likes (``%2f``, ``%61`` for ``a``): one
            # found only once the escapes are decoded is redacted in the decoded text.
            for decoded in {unquote(text), unquote_plus(text)} - {text}:
                scrubbed = scrub_plain(decoded)
                if scrubbed != decoded:
                    return scrubbed
        return text

    return scrub
