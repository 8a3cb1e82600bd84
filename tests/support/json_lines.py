"""A stream the JSON log lines of a served app go to, read back by the test."""

from __future__ import annotations

import io
import json
import threading
from typing import Any


class JSONLines:
    """Where the JSON log lines go: written from the server's thread, read by the test."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._text = io.StringIO()

    def write(self, text: str) -> int:
        with self._lock:
            return self._text.write(text)

    def flush(self) -> None:
        """Nothing to flush: every line is kept as written."""

    def read(self) -> list[dict[str, Any]]:
        """Every line so far, decoded (each must be one JSON object)."""
        with self._lock:
            text = self._text.getvalue()
        return [json.loads(line) for line in text.splitlines()]
