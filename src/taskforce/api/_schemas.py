"""Request bodies of the HTTP API (a body that does not fit is a 422 with a reason), and
the answers its OpenAPI schema declares."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from taskforce.core.interfaces.executor import (
    SESSION_ID_PATTERN,
    AgentType,
    MissionStatus,
    ProgressKind,
)

__all__ = [
    "EXECUTE_ANSWERS",
    "MISSION_ANSWERS",
    "SESSION_ANSWERS",
    "STREAM_ANSWERS",
    "TOOLS_ANSWERS",
    "ErrorAnswer",
    "ExecuteRequest",
    "InvalidField",
    "InvalidRequest",
    "MissionResult",
    "MissionStep",
    "SessionMission",
    "SessionRecords",
    "ToolInfo",
    "ToolList",
    "error_answer",
]


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


class MissionStep(BaseModel):
    """One step of a mission in its result: a plan step (legacy) or one LLM turn (lean)."""

    index: int = Field(description="The step's number, from 1.")
    description: str = Field(description="The plan step, or `LLM turn N`.")
    status: Literal["completed", "failed"]
    tool_calls: list[str] = Field(description="The tools the step called, by name, in order.")
    outcome: str = Field(description="What came of it; for a failed step, its error.")


class MissionResult(BaseModel):
    """How a mission ended (``ExecutionResult.to_dict()``): every field is always sent.

    Documentation only: the route sends the executor's dict as it is, not through this.
    """

    session_id: str
    mission_id: str
    agent_type: AgentType
    status: MissionStatus = Field(description="A failed mission is a 200 too, with `error`.")
    final_message: str = Field(description="The agent's answer; empty when it has none.")
    steps: list[MissionStep]
    tool_calls: int = Field(description="Tool calls made in all.")
    error: str | None = Field(description="Why the mission did not complete, else null.")
    error_type: str | None = Field(
        description="The failure's type when a failed LLM or tool call ended the mission "
        "(`rate_limit`, `timeout`, ...), as in the log and the metrics; else null."
    )


class ToolInfo(BaseModel):
    """One registered tool, as the model is told of it."""

    name: str
    description: str
    parameters: dict[str, Any] = Field(description="The tool's arguments, as a JSON Schema.")


class ToolList(BaseModel):
    """The registered tools (``GET /api/v1/tools``).

    Documentation only: the route sends its dict as it is, not through this.
    """

    tools: list[ToolInfo]


class SessionMission(BaseModel):
    """One mission record of a session, as taskforce writes it: every field is always sent."""

    mission_id: str
    agent_type: AgentType
    status: MissionStatus
    started_at: str = Field(description="When the mission started, ISO 8601 in UTC.")
    finished_at: str = Field(description="When its record was written, ISO 8601 in UTC.")
    final_message: str = Field(description="The agent's answer; empty when it has none.")
    error: str | None = Field(description="Why the mission did not complete, else null.")
    error_type: str | None = Field(description="The result's `error_type`, else null.")
    tool_calls: list[str] = Field(description="The tools its steps called, by name, in order.")
    steps: list[MissionStep]


class SessionRecords(BaseModel):
    """A session's mission records, oldest first (``GET /api/v1/sessions/{session_id}``).

    Documentation only: the route sends ``SessionView.to_dict()`` as it is, not through this.
    """

    session_id: str
    missions: list[SessionMission]


class ErrorAnswer(BaseModel):
    """A refusal or failure answered with a short reason (every non-2xx except most 422s)."""

    detail: str = Field(description="Why the request was refused or failed.")


class InvalidField(BaseModel):
    """One reason a request body or parameter was refused (see ``api._errors``)."""

    type: str = Field(description="What is wrong, e.g. `missing`, `json_invalid`.")
    loc: list[str | int] = Field(description="Where: `body`, then field names or a position.")
    msg: str = Field(description="A short reason.")
    input: Any = Field(default=None, description="A short prefix of the offending input.")


class InvalidRequest(BaseModel):
    """A 422 for a body or parameter that does not fit: at most ten reasons."""

    detail: list[InvalidField]


def _invalid() -> dict[str, Any]:
    return {
        "model": InvalidRequest | ErrorAnswer,
        "description": "The body or a parameter does not fit (a list of reasons), the body "
        "was sent without a `Content-Type` (send `application/json`), or the mission was "
        "refused (a blank mission, one over `agent.max_mission_chars`, ...).",
    }


def error_answer(description: str) -> dict[str, Any]:
    """An OpenAPI ``responses`` entry for a refusal answered as :class:`ErrorAnswer`."""
    return {"model": ErrorAnswer, "description": description}


# The header of a 503 for a full process (missions, or session reads, in flight).
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying (a full process only).",
        "schema": {"type": "integer"},
    }
}

MISSION_ANSWERS: dict[int | str, dict[str, Any]] = {
    408: error_answer("The body did not arrive within `api.read_timeout_seconds`."),
    422: _invalid(),
    413: error_answer("The body is longer than `api.max_body_bytes`."),
    415: error_answer(
        "The body was sent with a `Content-Type` that is not JSON, or with several that "
        "differ: send one, `application/json` (any parameters) or an "
        "`application/*+json` type. Or it was compressed (a `Content-Encoding` other than "
        "`identity`): send it as is."
    ),
    503: {
        **error_answer(
            "Too many missions in flight (`api.max_missions_in_flight`; with `Retry-After`), "
            "or the service is shutting down."
        ),
        "headers": _RETRY_AFTER,
    },
}
"""The refusals of a mission route besides its 422, as the OpenAPI schema lists them."""

EXECUTE_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"model": MissionResult, "description": "The mission's result, however it ended."},
    **MISSION_ANSWERS,
}
"""The answers of the plain execute route: its result, then a mission route's refusals."""

#: One event of the stream as an SSE parser reads it, the way OpenAPI models an event
#: stream: the schema a ``text/event-stream`` answer declares applies to each event (OpenAPI
#: 3.1 has no ``itemSchema``), not to the body as one string.
_STREAM_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": list(get_args(ProgressKind))},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "The event as one line of JSON: its `kind` (the event's name) "
            "and its fields.",
        },
    },
    "required": ["event", "data"],
}

STREAM_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events, one per progress event (`event:` its kind, "
        "`data:` the event as JSON); the last is the `result`, else a final `error` (a "
        "shutdown cancelled the mission, or it stopped unexpectedly). Between events, a "
        "stream idle for `api.stream_keepalive_seconds` gets a comment line, `: keep-alive`.",
        "content": {"text/event-stream": {"schema": _STREAM_EVENT}},
    },
    **MISSION_ANSWERS,
}
"""The answers of the stream route: its events (not JSON), then a mission route's refusals."""

TOOLS_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"model": ToolList, "description": "The registered tools with their JSON schemas."},
}
"""The answers of the tool list route besides its guard's 401."""

SESSION_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"model": SessionRecords, "description": "The session's mission records."},
    404: error_answer("No such session."),
    422: _invalid(),
    503: {
        **error_answer(
            "Too many session reads in flight (`api.max_session_reads_in_flight`; with "
            "`Retry-After`), the state store cannot be reached, or the service is shutting "
            "down."
        ),
        "headers": _RETRY_AFTER,
    },
}
"""The answers of the session route: its records, then its refusals besides its guard's 401."""
