"""JSON that always encodes: HTTP responses and Server-Sent Events whatever text they carry.

Text from tools and files may hold lone surrogates (a file name that is not UTF-8)
and numbers may be NaN or infinite; neither can be sent as they are. Lone
surrogates leave as JSON ``\\uXXXX`` escapes, non-finite numbers as ``null``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from starlette.responses import JSONResponse, Response

from taskforce.core.interfaces.jsonable import json_writer, one_line

__all__ = ["PathRedactor", "SafeJSONResponse", "json_bytes", "refusal", "sse_event"]

Redact = Callable[[str], str]


class PathRedactor:
    """Replace the server's own directories in outgoing JSON text by their setting's name.

    Error messages from the state store and the OS name absolute paths; a client
    has no use for them and should not learn the server's layout. The log keeps them.
    """

    def __init__(self, roots: Mapping[str, Path]) -> None:
        """Redact each directory in ``roots`` (setting name -> directory).

        Args:
            roots: e.g. ``{"state_dir": settings.state_dir}``; relative paths are
                resolved against the current directory, as the store does.
        """
        pairs: dict[str, str] = {}
        for name, root in roots.items():
            for form in {str(root), str(root.resolve()), str(root.absolute())}:
                if Path(form).is_absolute() and form != "/":
                    # compared with JSON text, so in its JSON-escaped form
                    pairs[json.dumps(form, ensure_ascii=False)[1:-1]] = f"<{name}>"
        self._pairs = sorted(pairs.items(), key=lambda pair: -len(pair[0]))

    def __call__(self, text: str) -> str:
        """Return ``text`` with every configured directory replaced by ``<setting>``."""
        for path, name in self._pairs:
            if path in text:
                text = text.replace(path, name)
        return text


# The response's JSON: compact, UTF-8 as it is, strict (no NaN).
_WRITE = json_writer(is_finite=True, ensure_ascii=False, separators=(",", ":"))


def json_bytes(data: Any, redact: Redact | None = None, *, is_one_line: bool = False) -> bytes:
    """Encode ``data`` as compact UTF-8 JSON that any client can decode.

    Args:
        data: JSON-like data; objects json cannot encode are written as ``str(obj)``.
        redact: applied to the JSON text before it is encoded (see :class:`PathRedactor`).
        is_one_line: escape the Unicode line ends JSON leaves raw (after ``redact``), so
            that the document is one line for any line splitter (``one_line``).

    Returns:
        The JSON document; a lone surrogate becomes a ``\\uXXXX`` escape, a NaN or
        infinite float becomes ``null`` (as a key, ``"NaN"`` or ``"Infinity"``), and what
        else JSON cannot hold becomes text (``json_writer``).
    """
    text = _WRITE(data)
    if redact is not None:
        text = redact(text)
    if is_one_line:
        text = one_line(text)
    # Unencodable characters sit inside JSON strings only, where "\udcff" is a valid escape.
    return text.encode("utf-8", "backslashreplace")


def sse_event(event: str, data: dict[str, Any], redact: Redact | None = None) -> bytes:
    """Return one Server-Sent Event whose ``data`` line is ``data`` as JSON (see json_bytes).

    The JSON is one line for any line splitter: CR and LF are escaped by JSON, and so are
    NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR here (they sit inside JSON strings only,
    where the escape decodes to the same text). Many clients split the stream as Python's
    ``str.splitlines`` does (httpx's ``aiter_lines``, httpx-sse before 0.4.3), which would
    cut a ``data`` line in two at a raw one.
    """
    payload = json_bytes(data, redact, is_one_line=True)
    return b"event: " + event.encode("ascii", "replace") + b"\ndata: " + payload + b"\n\n"


class SafeJSONResponse(JSONResponse):
    """A ``JSONResponse`` that never fails to render (see :func:`json_bytes`)."""

    def render(self, content: Any) -> bytes:
        """Encode ``content`` with :func:`json_bytes`."""
        return json_bytes(content)


def refusal(status_code: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    """The answer to a refused request: ``{"detail": reason}`` as JSON, with ``headers``.

    Every refusal written outside a route (a body limit, a full process, a shutdown)
    is built here, so they share one shape and one encoding.
    """
    return SafeJSONResponse(status_code=status_code, content={"detail": detail}, headers=headers)
