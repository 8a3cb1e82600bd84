"""The mission context: which session, mission and agent flow the running code belongs to.

Three ``ContextVar`` objects hold it; the mission scope of ``ExecutorProxy``
sets them (and binds the same keys into structlog's contextvars, so every log
line inside a mission carries them) and every other proxy reads them for its
``agent_type`` label. Outside a mission ``agent_type`` is ``"none"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

import structlog

__all__ = [
    "NO_AGENT",
    "MissionTokens",
    "current_agent_type",
    "current_mission_id",
    "current_session_id",
    "enter_mission",
    "exit_mission",
    "mission_scope",
]

#: ``agent_type`` label value outside any mission (CONTRACT: ``none``).
NO_AGENT = "none"

_SESSION_ID: ContextVar[str | None] = ContextVar("taskforce_session_id", default=None)
_MISSION_ID: ContextVar[str | None] = ContextVar("taskforce_mission_id", default=None)
_AGENT_TYPE: ContextVar[str] = ContextVar("taskforce_agent_type", default=NO_AGENT)

# A bound method, not a def: the tool and LLM proxies read it on every call
# and this saves them a Python frame.
current_agent_type = _AGENT_TYPE.get
"""Return the ``agent_type`` of the running mission, ``"none"`` outside one."""


def current_session_id() -> str | None:
    """Return the session id of the running mission.

    Returns:
        The id, or ``None`` outside a mission.
    """
    return _SESSION_ID.get()


def current_mission_id() -> str | None:
    """Return the mission id of the running mission.

    Returns:
        The id, or ``None`` outside a mission.
    """
    return _MISSION_ID.get()


def _structlog_vars() -> tuple[ContextVar[Any], ContextVar[Any], ContextVar[Any]]:
    # structlog keeps one ContextVar per key for the life of the process (clearing
    # sets them to ``...``, nothing replaces them). Setting those directly is what
    # bind_contextvars does, minus its per-key f-string, dict lookups and loop.
    tokens = structlog.contextvars.bind_contextvars(
        session_id=None, mission_id=None, agent_type=None
    )
    structlog.contextvars.reset_contextvars(**tokens)
    return tokens["session_id"].var, tokens["mission_id"].var, tokens["agent_type"].var


_LOG_SESSION_ID, _LOG_MISSION_ID, _LOG_AGENT_TYPE = _structlog_vars()

#: The tokens :func:`enter_mission` got from every ``set`` (ours for session,
#: mission and agent type, then structlog's); :func:`exit_mission` resets them.
#: A plain tuple: this is on the path of every mission.
MissionTokens = tuple[
    Token[str | None], Token[str | None], Token[str], Token[Any], Token[Any], Token[Any]
]


def enter_mission(session_id: str, mission_id: str, agent_type: str) -> MissionTokens:
    """Set the mission context in the current ``contextvars.Context``.

    Pair every call with :func:`exit_mission` in a ``finally`` of the same
    context (the same task, and within one step of an async generator).

    Args:
        session_id: The session the mission belongs to.
        mission_id: The mission's own id.
        agent_type: ``"lean"`` or ``"legacy"``.

    Returns:
        The tokens that undo exactly these settings.
    """
    return (
        _SESSION_ID.set(session_id),
        _MISSION_ID.set(mission_id),
        _AGENT_TYPE.set(agent_type),
        _LOG_SESSION_ID.set(session_id),
        _LOG_MISSION_ID.set(mission_id),
        _LOG_AGENT_TYPE.set(agent_type),
    )


def exit_mission(tokens: MissionTokens) -> None:
    """Restore the context that was current before :func:`enter_mission`.

    Args:
        tokens: What the matching :func:`enter_mission` returned.

    Raises:
        ValueError: The tokens were created in another ``contextvars.Context``.
    """
    session, mission, agent_type, log_session, log_mission, log_agent_type = tokens
    _LOG_AGENT_TYPE.reset(log_agent_type)
    _LOG_MISSION_ID.reset(log_mission)
    _LOG_SESSION_ID.reset(log_session)
    _AGENT_TYPE.reset(agent_type)
    _MISSION_ID.reset(mission)
    _SESSION_ID.reset(session)


@contextmanager
def mission_scope(session_id: str, mission_id: str, agent_type: str) -> Iterator[None]:
    """Run the body of a ``with`` block inside a mission's context.

    The scope never swallows an exception; it restores the previous context
    however the block ends.

    Args:
        session_id: The session the mission belongs to.
        mission_id: The mission's own id.
        agent_type: ``"lean"`` or ``"legacy"``.

    Yields:
        Nothing; the context variables are the effect.
    """
    tokens = enter_mission(session_id, mission_id, agent_type)
    try:
        yield
    finally:
        exit_mission(tokens)
