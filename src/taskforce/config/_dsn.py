"""The PostgreSQL connection string: the ``sslmode`` it may name, and what of it stays secret.

A DSN holds the database password, so no message made here repeats any of it.
"""

from __future__ import annotations

import contextlib
import re
from urllib.parse import parse_qs, unquote, urlsplit

#: The values libpq and the asyncpg driver accept for a DSN's ``sslmode`` (in this case only).
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def check_dsn(dsn: str) -> None:
    """Refuse a DSN that is not a ``postgresql://`` URL or names an unknown ``sslmode``.

    Args:
        dsn: The connection string.

    Raises:
        ValueError: the scheme or the ``sslmode`` is wrong; the message quotes
            neither the DSN nor the mode.
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
