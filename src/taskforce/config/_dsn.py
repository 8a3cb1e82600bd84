"""The PostgreSQL connection string: the ``sslmode`` and ``connect_timeout`` it may name, and
what of it stays secret.

A DSN holds the database password, so no message made here repeats any of it.
"""

from __future__ import annotations

import contextlib
import re
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

#: The values libpq and the asyncpg driver accept for a DSN's ``sslmode`` (in this case only).
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

#: libpq's query parameter for the time allowed to connect; the driver does not know it.
CONNECT_TIMEOUT = "connect_timeout"

# What libpq reads as a number: an integer of C's int, blanks around it allowed
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")
_INT_MAX = 2**31 - 1


def check_dsn(dsn: str) -> None:
    """Refuse a DSN that is not a ``postgresql://`` URL or names an unknown ``sslmode``.

    Args:
        dsn: The connection string.

    Raises:
        ValueError: the scheme, the ``sslmode`` or the ``connect_timeout`` is wrong;
            the message quotes neither the DSN nor the value.
    """
    if not dsn.startswith(("postgres://", "postgresql://")):
        raise ValueError("must be a postgresql:// connection URL")
    modes: list[str] = []
    with contextlib.suppress(ValueError):  # a URL that cannot be split: the driver says so
        modes = parse_qs(urlsplit(dsn).query).get("sslmode", [])
    # the driver reads verify_full as verify-full too: what it takes is not refused here
    if any(mode.replace("_", "-") not in _SSL_MODES for mode in modes):
        # the mode is not repeated: a password with an unencoded '?' could end up in it
        raise ValueError(f"its sslmode must be one of {', '.join(_SSL_MODES)}")
    split_connect_timeout(dsn)


def split_connect_timeout(dsn: str) -> tuple[str, float | None]:
    """The DSN without its ``connect_timeout``, and the limit on connecting that it sets.

    libpq takes ``?connect_timeout=N``: whole seconds, 0 or less (or none) for no limit,
    1 read as 2, the last one when given twice. The driver does not know the parameter
    and would send it to the server as a setting, which refuses it.

    Args:
        dsn: The connection string.

    Returns:
        The DSN with every ``connect_timeout`` left out (else as given), and the seconds
        allowed to connect, or None for no limit of its own.

    Raises:
        ValueError: the value is not a whole number of seconds; the message does not
            quote it.
    """
    query_at, fragment_at = dsn.find("?"), dsn.find("#")
    if query_at < 0 or 0 <= fragment_at < query_at:
        return dsn, None
    end = fragment_at if fragment_at >= 0 else len(dsn)
    pieces = dsn[query_at + 1 : end].split("&")
    kept = [p for p in pieces if unquote(p.partition("=")[0].replace("+", " ")) != CONNECT_TIMEOUT]
    if len(kept) == len(pieces):
        return dsn, None
    values = [v for k, v in parse_qsl(dsn[query_at + 1 : end], True) if k == CONNECT_TIMEOUT]
    value = values[-1]
    if not _INTEGER.fullmatch(value) or abs(int(value)) > _INT_MAX:
        raise ValueError(f"its {CONNECT_TIMEOUT} must be a whole number of seconds (0: no limit)")
    query = "&".join(kept)
    stripped = dsn[:query_at] + (f"?{query}" if query else "") + dsn[end:]
    seconds = int(value)
    return stripped, (float(max(seconds, 2)) if seconds > 0 else None)


def dsn_secrets(dsn: str) -> list[str]:
    """What of a connection string must never be shown, longest first.

    The DSN whole; its password raw and decoded, from ``user:password@`` or a
    ``password=`` query parameter (as libpq accepts it); and, for a password that
    holds a character a URL reserves (``/``, ``#``, ``?``) without percent-encoding
    it, the password as written and each of its pieces of 4 characters or more,
    since a parser's message may quote a piece of it.

    Args:
        dsn: The connection string.

    Returns:
        The strings to redact.
    """
    values = {dsn}
    passwords: list[str] = []
    with contextlib.suppress(ValueError):
        parts = urlsplit(dsn)
        passwords += [parts.password or ""]
        passwords += parse_qs(parts.query).get("password", [])
    # userinfo as written: everything between the scheme and the last '@' (a host has none)
    rest = dsn.split("://", 1)[-1]
    if "@" in rest:
        userinfo = rest.rsplit("@", 1)[0]
        if ":" in userinfo:
            written = userinfo.split(":", 1)[1]
            passwords.append(written)
            passwords += [piece for piece in re.split(r"[/#?@:]", written) if len(piece) >= 4]
    for password in filter(None, passwords):
        values.update({password, unquote(password)})
    return sorted(values, key=len, reverse=True)
