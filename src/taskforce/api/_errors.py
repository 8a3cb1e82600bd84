"""How the API answers a request it refuses: short JSON reasons that never echo much input."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from taskforce.api._encoding import SafeJSONResponse
from taskforce.errors import MissionError

__all__ = ["ECHO_CHARS", "MAX_ERRORS", "install_error_handlers", "short_echo"]

ECHO_CHARS = 64
"""Longest prefix of the offending input a validation error repeats."""

MAX_ERRORS = 10
"""Most validation errors one response lists; a body with thousands of bad keys gets ten."""


def short_echo(value: Any) -> Any:
    """Return ``value`` if it is a small scalar, else a prefix of its text of ``ECHO_CHARS``."""
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        digits = str(value)
        return value if len(digits) <= ECHO_CHARS else digits[:ECHO_CHARS] + "…"
    if isinstance(value, bytes | bytearray):
        value = bytes(value[: ECHO_CHARS * 4]).decode("utf-8", "replace")
    elif not isinstance(value, str):
        value = repr(value) if not isinstance(value, Mapping | Sequence) else _container(value)
    return value if len(value) <= ECHO_CHARS else value[:ECHO_CHARS] + "…"


def _container(value: Mapping[Any, Any] | Sequence[Any]) -> str:
    kind = "object" if isinstance(value, Mapping) else "array"
    return f"<{kind} of {len(value)} items>"


def _short_error(error: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": error.get("type", "value_error"),
        "loc": [part if isinstance(part, int) else short_echo(part) for part in error["loc"]],
        "msg": error.get("msg", ""),
    }
    reason = (error.get("ctx") or {}).get("error")
    if isinstance(reason, str):  # json_invalid: the decoder's reason is the useful part
        out["msg"] = f"{out['msg']}: {reason}"
    if "input" in error and error["type"] != "json_invalid":
        out["input"] = short_echo(error["input"])
    return out


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    detail = [_short_error(error) for error in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        detail.append({"type": "too_many_errors", "loc": [], "msg": f"{len(errors)} errors"})
    return SafeJSONResponse(status_code=422, content={"detail": detail})


async def _mission_error(_: Request, exc: Exception) -> Response:
    # A request the executor cannot run as asked is the client's error, like a bad body.
    return SafeJSONResponse(status_code=422, content={"detail": str(exc)})


def install_error_handlers(app: FastAPI) -> None:
    """Answer invalid bodies and refused missions with a 422 and a short reason."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(MissionError, _mission_error)
