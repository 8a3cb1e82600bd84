"""The shapes of errors compatible servers put in a stream, handed to the SDK as it reads them.

The SDK raises an event whose JSON has a truthy ``error`` at its top as that error
alone (``APIError.body``), and drops the rest of the event. Two servers put more
there than the error object the SDK expects, which would be lost:

- OpenRouter's documented mid-stream error is a chunk with the error object at its
  top *and* a choice it ends with ``finish_reason: "error"`` (and the usage billed, if
  any). It is handed on as that chunk, the error on the choice: read as any answer
  ended by an error, its usage kept.
- Hugging Face TGI sends its error as text, its type beside it (``{"error": "...",
  "error_type": "overloaded"}``), the same body its error statuses carry. It is handed
  on as an error object with that ``type``, so that the failure is read by its type as
  the status would be read (``_in_stream_error_type``).

Anything else is handed on as it came.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["_handed_on", "_is_error_object"]


def _handed_on(data: str) -> str:
    """The data of an event as the SDK is to read it: ``data``, or its error reshaped.

    Args:
        data: an event's data, as the stream sent it.

    Returns:
        ``data`` itself, unless it is one of the shapes the module names.
    """
    if '"error"' not in data:  # most events: no JSON read
        return data
    try:
        event = json.loads(data)
    except (ValueError, RecursionError):
        return data
    if not isinstance(event, dict) or not event.get("error"):
        return data
    error, kind = event["error"], event.get("error_type")
    if isinstance(error, str) and isinstance(kind, str):
        return json.dumps({"error": {"message": error, "type": kind}})
    return _error_on_its_choice(event) or data


def _error_on_its_choice(chunk: dict[str, Any]) -> str | None:
    """OpenRouter's error chunk with its error on each choice ended by ``finish_reason:
    "error"`` that has none of its own, and not at its top; ``None`` when no choice of
    ``chunk`` ended so."""
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return None
    ended = [c for c in choices if isinstance(c, dict) and c.get("finish_reason") == "error"]
    if not ended:
        return None
    error = chunk.pop("error")
    for choice in ended:
        choice["error"] = choice.get("error") or error
    return json.dumps(chunk)


def _is_error_object(line: str) -> bool:
    """Whether ``line`` is a JSON object with an ``error`` member that is not empty, as
    the SDK reads an event's error object."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and bool(value.get("error"))
