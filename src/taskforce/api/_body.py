"""Strict JSON request bodies: a JSON content type, and no more than JSON itself allows.

A body sent with a content type that is not JSON (a form, ``text/plain``, or several
that differ), or compressed (``Content-Encoding``), is refused with a 415 before it is
read; one sent without any content type with a 422, CONTRACT.md's answer to a
malformed body (and FastAPI's own there), with the same reason. ``json.loads`` takes
``NaN``/``Infinity``, numbers that overflow to infinity, lone surrogate escapes
(``"\\ud800"``), nesting until the interpreter's recursion limit, and an object
that gives a key twice (keeping the last). Each is refused here as a
``json.JSONDecodeError`` with a short reason, which FastAPI answers as a 422
``json_invalid`` before any validation runs.
"""

from __future__ import annotations

import email.message
import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import params
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from taskforce.api._encoding import refusal
from taskforce.core.interfaces.jsonable import unique_keys

__all__ = [
    "CLIENT_CLOSED_REQUEST",
    "ENCODED_REASON",
    "MANY_TYPES_REASON",
    "MAX_JSON_DEPTH",
    "NOT_JSON_REASON",
    "StrictJSONRoute",
    "is_json_media_type",
    "parse_strict_json",
]

CLIENT_CLOSED_REQUEST = 499
"""Status recorded for a request whose client went away before its answer (nginx's code)."""

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects a request body may have."""

NOT_JSON_REASON = "request body must be JSON (content-type: application/json)"
"""The reason of the 415 (422 without a content type) answered to a body that is not JSON."""

MANY_TYPES_REASON = "request has more than one content-type; send one: application/json"
"""The reason of the 415 answered to a request with several ``Content-Type`` headers that differ."""

ENCODED_REASON = "request body must not be compressed (content-encoding); send it as is"
"""The reason of the 415 answered to a body sent with a ``Content-Encoding`` (gzip, ...)."""


def _refuse(reason: str, doc: str, needle: str = "") -> json.JSONDecodeError:
    return json.JSONDecodeError(reason, doc, max(0, doc.find(needle)) if needle else 0)


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a JSON number", name, 0)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise json.JSONDecodeError(f"number {text[:20]} is out of range", text, 0)
    return value


def _unencodable(text: str) -> str | None:
    """Return the ``\\uXXXX`` escape of the first lone surrogate in ``text``, else ``None``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"\\u{ord(text[exc.start]):04x}"
    return None


def _check_tree(value: Any, doc: str) -> None:
    """Refuse nesting deeper than ``MAX_JSON_DEPTH`` and strings with lone surrogates."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            escape = _unencodable(item)
            if escape is not None:
                raise _refuse(f"string holds an unpaired surrogate {escape}", doc, escape)
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise _refuse(f"nested deeper than {MAX_JSON_DEPTH} levels", doc)
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def parse_strict_json(body: bytes) -> Any:
    """Parse a request body as strict JSON.

    Args:
        body: the raw body.

    Returns:
        The parsed document.

    Raises:
        json.JSONDecodeError: the body is not UTF-8, not JSON, uses ``NaN`` or
            ``Infinity``, has a number out of range, nests deeper than
            ``MAX_JSON_DEPTH``, holds a lone surrogate or gives an object a key
            twice; the message says which.
    """
    try:
        doc = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("body is not valid UTF-8", "", exc.start) from None
    try:
        value = json.loads(
            doc,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            object_pairs_hook=unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise json.JSONDecodeError(exc.msg, doc, exc.pos) from None
    except RecursionError:
        raise _refuse(f"nested deeper than {MAX_JSON_DEPTH} levels", doc) from None
    except ValueError as exc:  # e.g. an integer longer than int() accepts
        raise _refuse(str(exc).split(":")[0][:80], doc) from None
    # Only containers or \u escapes can break the rules: the usual small body skips the walk.
    if "\\u" in doc or doc.count("[") + doc.count("{") > MAX_JSON_DEPTH:
        _check_tree(value, doc)
    return value


def is_json_media_type(content_type: str) -> bool:
    """Whether a ``Content-Type`` value names JSON, as FastAPI decides it.

    Args:
        content_type: the header's value, e.g. ``application/json; charset=utf-8``.

    Returns:
        True for ``application/json`` and ``application/<anything>+json``, in any
        case and with any parameters. Read with the same ``email.message`` rule
        FastAPI uses to choose whether it parses a body as JSON, so a type let
        through here is one FastAPI parses.
    """
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _is_encoded(request: Request) -> bool:
    """Whether the body is sent with a content coding (``gzip``, ...), which is not read here.

    Parsed as it is, a gzip body would be a 422 that does not say why, and a plain body
    labelled gzip would run while a proxy in front that inflates it saw garbage.
    """
    given = request.headers.getlist("content-encoding")
    return any(c.strip().lower() not in ("", "identity") for v in given for c in v.split(","))


def _content_type(request: Request) -> str | None:
    """The request's ``Content-Type`` (``""`` without one); ``None`` if it has several that differ.

    HTTP allows one; FastAPI, like this module, reads the first. A proxy before us may
    read another, and check a different request than the one that runs.
    """
    given = request.headers.getlist("content-type")
    if len(set(given)) > 1:
        return None
    return given[0] if given else ""


class _StrictJSONRequest(Request):
    async def body(self) -> bytes:
        try:
            return await super().body()
        except ClientDisconnect:
            # Its client left before the body was whole: a 499 as one that leaves its mission,
            # which nobody receives, not the 400 FastAPI makes of it for a body never finished.
            raise HTTPException(
                CLIENT_CLOSED_REQUEST, "the client went away before its body was whole"
            ) from None

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_strict_json(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An ``APIRoute`` whose JSON body is parsed by :func:`parse_strict_json`.

    A dependency with a true ``runs_before_body`` attribute (an auth guard) is also
    run before the body is read: FastAPI itself reads the body first. After it, a
    route that takes a JSON body answers a request whose ``Content-Type`` is not
    JSON with a 415 (:data:`NOT_JSON_REASON`), unread: FastAPI would read it whole,
    then refuse it as a 422 that does not say why. A request without a ``Content-Type``
    gets the same reason unread, as a 422: FastAPI does not read such a body as JSON
    either (a guard against web pages that make a browser post to a local service
    without a CORS preflight) and answers it with a 422, the status CONTRACT.md gives a
    malformed body. A request with several that differ gets a 415
    (:data:`MANY_TYPES_REASON`), whichever is first; so does a body sent with a
    ``Content-Encoding`` other than ``identity`` (:data:`ENCODED_REASON`): it is not
    decoded here.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Return FastAPI's handler, given a request that parses its body strictly."""
        handler = super().get_route_handler()
        early = [
            dep.dependency
            for dep in self.dependencies
            if dep.dependency is not None and getattr(dep.dependency, "runs_before_body", False)
        ]
        body = self.body_field
        takes_json = body is not None and not isinstance(body.field_info, params.Form)

        async def strict_handler(request: Request) -> Response:
            strict = _StrictJSONRequest(request.scope, request.receive)
            for check in early:
                await check(strict)
            if takes_json:
                content_type = _content_type(strict)
                if content_type is None:
                    return refusal(415, MANY_TYPES_REASON)
                if not content_type:
                    return refusal(422, NOT_JSON_REASON)  # unread, as FastAPI answers it
                if not is_json_media_type(content_type):
                    return refusal(415, NOT_JSON_REASON)
                if "content-encoding" in strict.headers and _is_encoded(strict):
                    return refusal(415, ENCODED_REASON)
            return await handler(strict)

        return strict_handler
