"""Name the libpq environment variable (``PGSSLMODE``, ...) whose value the driver refused.

The driver (asyncpg) reads these variables for a connection parameter the
connection string leaves out; when it refuses such a value, the variable is
what to fix, not the connection string. This module reads ``os.environ``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import traceback
from collections.abc import Mapping
from typing import Literal
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "Refusal",
    "is_file_error",
    "is_tls_refused",
    "is_user_name_lookup",
    "refused_variable",
]

#: How the driver refused: a parameter's value (its ClientConfigurationError), a
#: value it could not even parse (ValueError, OverflowError), a file it could not read,
#: or the server refused the TLS the connection's sslmode demands.
Refusal = Literal["parameter", "unparsable", "file", "tls"]

#: The variable the driver reads for each parameter the connection string leaves out,
#: in the order it reads them (asyncpg's connect_utils).
_VARIABLES = {
    "port": "PGPORT",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "gsslib": "PGGSSLIB",
}
#: Files the driver reads only when its sslmode verifies the server, or uses TLS at all.
_VERIFYING_FILES = ("sslrootcert", "sslcrl")
_TLS_FILES = ("sslcert", "sslkey")
_VERIFYING_MODES = ("require", "verify-ca", "verify-full")
#: The errors of opening a file that is missing or cannot be read.
_FILE_ERRORS = (errno.ENOENT, errno.EACCES, errno.EISDIR, errno.ENOTDIR)


def refused_variable(
    dsn: str, refusal: Refusal, said: str, environ: Mapping[str, str] = os.environ
) -> str | None:
    """Name the libpq variable whose value the driver refused, if one did.

    Args:
        dsn: The connection string; a parameter it gives itself is not read from
            the environment.
        refusal: How the driver refused (see :data:`Refusal`).
        said: The driver's message; matched, never returned.
        environ: The environment the driver read.

    Returns:
        The variable (``"PGSSLMODE"``), or None when the connection string is to blame.
    """
    given: dict[str, list[str]] = {}
    with contextlib.suppress(ValueError):  # a DSN that cannot be split gives nothing
        given = parse_qs(urlsplit(dsn).query, keep_blank_values=True)
    if refusal == "tls":  # only a demanding sslmode fails so: the DSN's, or PGSSLMODE's
        return "PGSSLMODE" if "sslmode" not in given and environ.get("PGSSLMODE") else None
    mode = (given.get("sslmode") or [environ.get("PGSSLMODE") or "prefer"])[-1]
    mode = mode.replace("_", "-")
    for parameter, variable in _VARIABLES.items():
        value = environ.get(variable)
        if value is None or parameter in given:
            continue
        if refusal == "parameter" and _is_named(said, parameter, value):
            return variable
        if refusal == "unparsable" and parameter == "port" and not _is_port_list(value):
            return variable
        if (
            refusal == "file"
            and (
                (parameter in _VERIFYING_FILES and mode in _VERIFYING_MODES)
                or (parameter in _TLS_FILES and mode != "disable")
            )
            and not _is_readable_file(value)
        ):
            return variable
    return None


def is_file_error(exc: BaseException) -> bool:
    """Tell whether ``exc`` is the error of opening a missing or unreadable file."""
    return isinstance(exc, OSError) and exc.errno in _FILE_ERRORS


def is_tls_refused(exc: BaseException) -> bool:
    """Tell whether ``exc`` is the server refusing TLS (one without it, ``ssl = off``) to
    a connection whose sslmode demands it (``require``, ``verify-ca``, ``verify-full``)."""
    return isinstance(exc, ConnectionError) and "rejected SSL upgrade" in str(exc)


def is_user_name_lookup(exc: BaseException) -> bool:
    """Tell whether ``exc`` comes from the driver's look-up of the process's user name.

    The driver takes that name (``getpass.getuser()``) for a user that neither the
    connection string nor ``PGUSER`` gives; a uid with no entry in ``/etc/passwd`` (a
    container run as an arbitrary uid) has none, and the look-up raises a ``KeyError``
    (an ``OSError`` from Python 3.13).
    """
    return isinstance(exc, (KeyError, OSError)) and any(
        frame.f_code.co_name == "getuser" and frame.f_globals.get("__name__") == "getpass"
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


def _is_named(said: str, parameter: str, value: str) -> bool:
    # The driver's message names the parameter (`sslmode` parameter must be one of)
    # or quotes the value (No such TLS version: TLSv9).
    words = [parameter] + ([value] if value.strip() else [])
    return any(re.search(rf"(?<![\w.-]){re.escape(word)}(?![\w.-])", said) for word in words)


def _is_port_list(value: str) -> bool:
    parts = value.split(",")
    return all(part.strip().isdigit() and 0 < int(part) < 65536 for part in parts)


def _is_readable_file(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.R_OK)
