"""The mission context: which session, mission and agent flow the running code belongs to.

Three ``ContextVar`` objects hold it. The executor sets them once per mission,
after it has validated the request (:func:`enter_mission`), and resets them by
token when the mission ends (:func:`exit_mission`); anything that runs inside
the mission (agents, tools, providers, and the observability aspect around
them) reads them. Outside a mission ``agent_type`` is ``"none"``.

Hazard: process-wide state, as every ``ContextVar`` is; a value set in one
``contextvars.Context`` is invisible to tasks created before it was set.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import NamedTuple

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

#: ``agent_type`` outside any mission (CONTRACT: the label value ``none``).
NO_AGENT = "none"

_SESSION_ID: ContextVar[str | None] = ContextVar("taskforce_session_id", default=None)
_MISSION_ID: ContextVar[str | None] = ContextVar("taskforce_mission_id", default=None)
_AGENT_TYPE: ContextVar[str] = ContextVar("taskforce_agent_type", default=NO_AGENT)

# A bound method rather than a def: the tool and LLM proxies read it on every
# call, and this saves them a Python frame.
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


class MissionTokens(NamedTuple):
    """The tokens :func:`enter_mission` got from each ``ContextVar.set``."""

    session_id: Token[str | None]
    mission_id: Token[str | None]
    agent_type: Token[str]


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
    return MissionTokens(
        _SESSION_ID.set(session_id), _MISSION_ID.set(mission_id), _AGENT_TYPE.set(agent_type)
    )


def exit_mission(tokens: MissionTokens) -> None:
    """Restore the context that was current before :func:`enter_mission`.

    Args:
        tokens: What the matching :func:`enter_mission` returned.

    Raises:
        ValueError: The tokens were created in another ``contextvars.Context``.
    """
    _AGENT_TYPE.reset(tokens.agent_type)
    _MISSION_ID.reset(tokens.mission_id)
    _SESSION_ID.reset(tokens.session_id)


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
