"""Request bodies of the HTTP API; a body that does not fit is a 422 with a reason."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from taskforce.core.interfaces.executor import SESSION_ID_PATTERN

__all__ = ["ExecuteRequest"]


class ExecuteRequest(BaseModel):
    """Body of ``POST /api/v1/execute`` and ``POST /api/v1/execute/stream``."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    # Its longest length is agent.max_mission_chars, which the executor checks (for the CLI too).
    mission: str = Field(min_length=1, description="What the agent must do.")
    agent_type: Literal["lean", "legacy"] = Field(default="lean", description="Which agent flow.")
    session_id: str | None = Field(
        default=None,
        pattern=f"^{SESSION_ID_PATTERN.pattern}$",  # the same ids as the session route
        description="Continue this session; a new one is created when absent.",
    )
