"""Walk every structlog event the test suite emits and check it against docs/logging.md.

Installed once per session (see ``tests/conftest.py``); every event any logger
passes to its processors is checked as it is made, in whichever thread:

- a documented event is logged at one of its documented levels;
- at ``info`` and above, an event of a category that mission content can reach
  (``mission``, ``agent``, ``llm``, ``tool``, ``security``, ``performance``)
  carries text only in fields that hold identifiers or closed sets, or as a
  ``<field>_sha256`` digest: never a mission text, a tool argument, or an error
  message that may quote one.

Problems are collected and handed to the test that is running when they occur.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from structlog._base import BoundLoggerBase

from taskforce.core.interfaces.log import is_secret_name

__all__ = ["EventAudit", "check_event", "documented_levels"]

_DOC = Path(__file__).resolve().parents[2] / "docs" / "logging.md"

_LEVEL_OF_METHOD = {
    "debug": "debug",
    "info": "info",
    "msg": "info",
    "warning": "warning",
    "warn": "warning",
    "error": "error",
    "exception": "error",
    "critical": "critical",
    "fatal": "critical",
}

CONTENT_CATEGORIES = frozenset({"mission", "agent", "llm", "tool", "security", "performance"})
"""Categories whose events are near mission text and tool arguments."""

SAFE_TEXT_FIELDS = frozenset(
    {
        "event",
        "category",
        "session_id",
        "mission_id",
        "agent_type",
        "tool",
        "tool_name",
        "model",
        "operation",
        "provider",
        "status",
        "error_type",
        "finish_reason",
        "route",
        "method",
        "client",
    }
)
"""Fields whose text is an identifier or comes from a closed set, never from a mission."""

_SECURITY_REASONS = frozenset({"missing", "mismatch", "wrong token"})


def documented_levels(doc: Path = _DOC) -> dict[str, frozenset[str]]:
    """Return each event of the docs' events table with the levels it may be logged at.

    A row naming as many levels as events pairs them in order; a row with one event
    and several levels allows any of them.
    """
    levels: dict[str, frozenset[str]] = {}
    rows = re.findall(r"^\| (`[a-z_.]+`(?:, `[a-z_.]+`)*) \| ([a-z, ]+) \|", doc.read_text(), re.M)
    for events_cell, levels_cell in rows:
        events = re.findall(r"`([a-z_.]+)`", events_cell)
        row_levels = [level.strip() for level in levels_cell.split(",")]
        for index, event in enumerate(events):
            if len(row_levels) == len(events):
                levels[event] = frozenset({row_levels[index]})
            else:
                levels[event] = frozenset(row_levels)
    return levels


def check_event(
    level: str, event_dict: Mapping[str, Any], documented: Mapping[str, frozenset[str]]
) -> list[str]:
    """Return what is wrong with one event (empty when it keeps the docs' promises)."""
    name = event_dict.get("event")
    problems: list[str] = []
    allowed = documented.get(name) if isinstance(name, str) else None
    if allowed is not None and level not in allowed:
        problems.append(f"{name} logged at {level}, documented at {', '.join(sorted(allowed))}")
    if level == "debug":
        return problems
    category = event_dict.get("category")
    if not isinstance(category, str) and isinstance(name, str):
        category = name.split(".")[0]
    if category not in CONTENT_CATEGORIES:
        return problems
    for key, value in event_dict.items():
        if value is None or isinstance(value, bool | int | float):
            continue
        if isinstance(value, str) and _is_safe_text(key, value, category):
            continue
        problems.append(f"{name} at {level} carries free text in {key!r}: {value!r:.60}")
    return problems


def _is_safe_text(key: str, value: str, category: str) -> bool:
    if is_secret_name(key):  # replaced by *** in every rendered line: not content
        return True
    if key.endswith("_sha256"):
        return bool(re.fullmatch(r"[0-9a-f]{1,64}", value))
    if key == "reason":
        return category == "security" and value in _SECURITY_REASONS
    return key in SAFE_TEXT_FIELDS and len(value) <= 200


class EventAudit:
    """Checks every event processed by any structlog bound logger while installed."""

    def __init__(self) -> None:
        """Read the documented levels; nothing is patched until :meth:`install`."""
        self.documented = documented_levels()
        self.seen: Counter[tuple[str, str]] = Counter()
        self._problems: list[str] = []
        self._lock = threading.Lock()
        self._original: Any = None

    def install(self) -> None:
        """Wrap ``BoundLoggerBase._process_event``, which every structlog log call runs."""
        original = self._original = BoundLoggerBase._process_event
        audit = self

        def audited(
            logger: BoundLoggerBase, method_name: str, event: str | None, event_kw: dict[str, Any]
        ) -> Any:
            audit.observe(method_name, {**logger._context, **event_kw, "event": event})
            return original(logger, method_name, event, event_kw)

        BoundLoggerBase._process_event = audited  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        """Put the original method back."""
        if self._original is not None:
            BoundLoggerBase._process_event = self._original  # type: ignore[method-assign]

    def observe(self, method_name: str, event_dict: Mapping[str, Any]) -> None:
        """Check one event and keep what is wrong with it."""
        level = _LEVEL_OF_METHOD.get(method_name, method_name)
        problems = check_event(level, event_dict, self.documented)
        with self._lock:
            self.seen[(str(event_dict.get("event")), level)] += 1
            self._problems.extend(problems)

    def take_problems(self) -> list[str]:
        """Return the problems found since the last call, and forget them."""
        with self._lock:
            problems, self._problems = self._problems, []
        return problems
