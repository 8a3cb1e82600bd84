"""Field validators the settings sections share: choices, blanks, secrets, URLs, paths, prices.

Each raises ``ValueError`` with the reason :func:`~taskforce.config.load_settings`
puts after the setting's name, so its wording is part of the start-up message.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from taskforce.core.interfaces.jsonable import loads_within, unique_keys
from taskforce.core.interfaces.log import LOG_CATEGORIES

_RESERVED_PREFIXES = ("/api", "/health", "/docs", "/redoc", "/openapi.json")

MAX_SETTING_DEPTH = 32
"""Deepest nesting of arrays and objects the JSON of a ``TASKFORCE_*`` variable may have."""


def read_setting_json(text: str) -> Any:
    """Decode a variable's JSON, no key given twice, nested at most ``MAX_SETTING_DEPTH`` deep.

    The same bound on every Python (:func:`~taskforce.core.interfaces.jsonable.loads_within`),
    so a deep value is this start-up error on each, not a validation message on one.

    Raises:
        ValueError: the text is not JSON, or an object in it repeats a key.
        RecursionError: it nests deeper than ``MAX_SETTING_DEPTH`` levels, which
            :func:`~taskforce.config.load_settings` names.
    """
    return loads_within(text, MAX_SETTING_DEPTH, object_pairs_hook=unique_keys)


def check_utf8_secret(text: str) -> str:
    """Return ``text`` if it is text UTF-8 can hold; its bytes were not, in a variable.

    A variable's bytes that are not UTF-8 arrive as lone surrogates, which no HTTP
    header, log line or driver can carry. The message never repeats the secret.

    Raises:
        ValueError: ``text`` holds a lone surrogate.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be UTF-8 text: it holds bytes that are not") from None
    return text


def non_empty_secret(
    unset_means: str, *, ascii_only: bool = False
) -> Callable[[SecretStr | None], SecretStr | None]:
    """A validator refusing a token sent in an ``Authorization`` header that cannot be.

    Refused: a blank one (the message says what unsetting it means), one that is no
    UTF-8 text, one with whitespace at either end (a trailing newline from a secret
    file: HTTP strips it from the header, so the token could never match or be sent)
    or a control character other than a tab (HTTP refuses it in a header); with
    ``ascii_only`` (a token we send ourselves), one with a character past ASCII, which
    the HTTP client cannot put in a header. No message repeats the secret.
    """

    def check(value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        text = value.get_secret_value()
        if not text.strip():
            raise ValueError(f"must not be empty (unset it {unset_means})")
        check_utf8_secret(text)
        if text != text.strip():
            raise ValueError(
                "must not start or end with whitespace (a trailing newline?): "
                "an HTTP header cannot carry it"
            )
        if any(unicodedata.category(c) == "Cc" and c != "\t" for c in text):
            raise ValueError("must not hold control characters: an HTTP header cannot carry them")
        if ascii_only and not text.isascii():
            raise ValueError("must be ASCII: the HTTP client sends its header as ASCII")
        return value

    return check


def lower(value: Any) -> Any:
    """A choice (``JSON``, ``Postgres``) is read in any case, without spaces around it."""
    return value.strip().lower() if isinstance(value, str) else value


def resolve_auto_format(value: str) -> str:
    """Read ``auto`` as the log format stderr gets: ``console`` on a TTY, else ``json``.

    CONTRACT.md gives that rule as ``logging.format``'s default, so the settings hold the
    format in effect, not ``auto``; ``console`` and ``json`` pass unchanged.
    """
    if value != "auto":
        return value
    isatty = getattr(sys.stderr, "isatty", None)
    return "console" if callable(isatty) and isatty() else "json"


def refuse_blank(message: str) -> Callable[[Any], Any]:
    """A before-validator refusing a blank string with ``message`` (an empty path would
    silently mean the working directory, an empty name nothing)."""

    def check(value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError(message)
        return value

    return check


not_blank = refuse_blank("must not be blank")


def check_http_url(value: str) -> str:
    """Return ``value`` if it is an http:// or https:// URL with a host and a usable port.

    Args:
        value: The URL, stripped and not empty.

    Returns:
        ``value`` unchanged.

    Raises:
        ValueError: another scheme, no host, a port out of range or not a number,
            or a space in it; or a URL the HTTP client refuses (a control character,
            a host name IDNA cannot encode), which would otherwise stop the start
            with a traceback instead of naming the setting.
    """
    # the shape first, so a port that is no number is named as such, not as a URL the
    # HTTP client refuses for a reason it does not have
    try:
        parts = urlsplit(value)
        port = parts.port  # out of range or not a number: ValueError
    except ValueError:  # also an unclosed '[' of an IPv6 host
        parts, port = None, -1
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or port in (-1, 0)
        or any(c.isspace() for c in value)
    ):
        raise ValueError(
            "must be an http:// or https:// URL with a host and, if it names one, a port "
            "from 1 to 65535 (http://host:8000/v1)"
        )
    try:
        httpx.URL(value)  # as the LLM client reads it
    except httpx.InvalidURL:
        # its message is not quoted: it may repeat a part of the URL, which can hold a key
        raise ValueError(
            "is not a URL the HTTP client accepts (a control character, or a host name "
            "that cannot be encoded)"
        ) from None
    return value


def has_credentials(url: str) -> bool:
    """Whether ``url`` holds a user or a password (``http://user:password@host/``).

    Args:
        url: An URL ``check_http_url`` accepted.

    Returns:
        True when its authority has user information.
    """
    parts = urlsplit(url)
    return parts.username is not None or parts.password is not None


def decode_prices(value: Any) -> Any:
    """Read the model prices given as JSON text; refuse an empty model name, or one twice.

    A model's name loses the spaces around it, as ``llm.model`` does.

    Decoded here rather than by pydantic-settings, whose error names no setting.

    Args:
        value: The prices as given: JSON text, or already a table.

    Returns:
        The table, for pydantic to validate each price.

    Raises:
        ValueError: the text is not JSON, a model is priced twice (also as two names
            that differ only by the spaces around them), or a model name is empty.
    """
    if isinstance(value, str):
        try:
            # a model priced twice: which price would count? (a TOML table cannot say so)
            value = read_setting_json(value)
        except json.JSONDecodeError as exc:
            raise ValueError(
                'must be a JSON object like {"gpt-4o": {"input": 2.5, "output": 10}}'
                f" ({exc.msg})"
            ) from exc
    if not isinstance(value, dict):
        return value
    if any(not str(name).strip() for name in value):
        raise ValueError("a model name must not be empty")
    # as llm.model's: spaces around a name are a slip, and such a key would price nothing
    prices: dict[str, Any] = {}
    for name, price in value.items():
        model = name.strip() if isinstance(name, str) else name
        if model in prices:
            raise ValueError(
                f"model {model!r} is priced twice (a name is read without the spaces around it)"
            )
        prices[model] = price
    return prices


def check_metrics_path(value: str) -> str:
    """Return ``value`` if it can be the path of ``/metrics``.

    Args:
        value: The path.

    Returns:
        ``value`` unchanged.

    Raises:
        ValueError: it does not start with ``/``, ends with one, holds a character
            a request's path cannot ask for, an empty or dot segment, or collides
            with a built-in route.
    """
    if not value.startswith("/") or value == "/" or value.endswith("/"):
        raise ValueError("must start with '/', name a path and not end with '/'")
    if any(c.isspace() or not c.isprintable() or c in "?#{}%" for c in value):
        # '%': a request's path arrives decoded, so /m%20x could never be asked for
        raise ValueError("must not contain spaces, control characters, '?', '#', '%' or braces")
    if any(segment in ("", ".", "..") for segment in value[1:].split("/")):
        # a scraper's URL library removes dot segments, and some fold '//'
        raise ValueError("must not hold an empty, '.' or '..' segment ('//', '/./', '/../')")
    for prefix in _RESERVED_PREFIXES:
        if value == prefix or value.startswith(prefix + "/"):
            raise ValueError(f"collides with the built-in route {prefix}")
    return value


def split_categories(value: Any) -> Any:
    """Read log categories given as a comma-separated list, in any case.

    Args:
        value: The categories as given: text, a list or a tuple.

    Returns:
        A tuple of known categories, or ``value`` unchanged if it is none of those.

    Raises:
        ValueError: a category is unknown, or none is named.
    """
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        value = [lower(part) for part in value]  # choices, read in any case like the others
        unknown = sorted(set(value) - set(LOG_CATEGORIES))
        if unknown:
            raise ValueError(f"unknown categories {unknown}; known: {', '.join(LOG_CATEGORIES)}")
        if not value:
            raise ValueError("must name at least one category")
        return tuple(value)
    return value
