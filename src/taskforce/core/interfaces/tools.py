"""The tool port: a named capability with a JSON schema, and the registry that hands tools out."""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any, Protocol, TypedDict, runtime_checkable

from taskforce.core.interfaces.llm import ToolSchema

__all__ = [
    "TOOL_TIMEOUT_CANCEL_MESSAGE",
    "TOOL_TIME_LIMIT",
    "RefusedCallProtocol",
    "ToolProtocol",
    "ToolRegistryProtocol",
    "ToolResult",
    "ToolTimeLimit",
]

#: A tool call that runs past its time limit is cancelled with this message
#: (``task.cancel(TOOL_TIMEOUT_CANCEL_MESSAGE)``), so anything awaiting the call
#: can tell a timeout from any other cancellation by ``CancelledError.args``.
TOOL_TIMEOUT_CANCEL_MESSAGE = "taskforce.tool_timeout"


class ToolTimeLimit:
    """The time limit of the one tool call running in a task.

    Attributes:
        expired: ``True`` once the limit fired. A tool can catch the cancellation
            and return (or raise something else) anyway; the call still timed out,
            and whatever awaits it reads this to say so.
        baseline: The running task's ``cancelling()`` count when the call started:
            once the limit fired, a count above it and the limit's own request is a
            cancellation of the mission too (``tool_exception_error_type``).
    """

    __slots__ = ("baseline", "expired")

    def __init__(self, baseline: int = 0) -> None:
        """Start unexpired.

        Args:
            baseline: The task's ``cancelling()`` count as the call starts.
        """
        self.expired = False
        self.baseline = baseline


#: The time limit of the tool call the current task is running, set by the tool
#: runner around each call (``None`` outside one).
TOOL_TIME_LIMIT: ContextVar[ToolTimeLimit | None] = ContextVar(
    "taskforce_tool_time_limit", default=None
)


class ToolResult(TypedDict, total=False):
    """What ``ToolProtocol.execute`` returns.

    ``success`` is always present. On success ``output`` holds the result (any
    JSON-serialisable value; what JSON has no form for is written as its text, but a
    result nested deeper than ``MAX_RESULT_DEPTH`` levels fails the call as
    ``invalid_result``); on failure ``error`` says why and ``error_type`` may
    classify it.
    """

    success: bool
    output: Any
    error: str
    error_type: str


@runtime_checkable
class ToolProtocol(Protocol):
    """A tool an agent can call.

    Contract: ``execute`` is a coroutine, safe to run concurrently, that
    *returns* ``{"success": False, "error": ...}`` for bad arguments or a
    refused action. It may raise for unexpected faults; the agent turns that
    into an error result for that one call.
    """

    @property
    def name(self) -> str:
        """Unique name the model uses to call the tool."""
        ...

    @property
    def description(self) -> str:
        """One sentence the model reads to decide when to call the tool."""
        ...

    @property
    def parameters_schema(self) -> dict[str, Any]:
        """JSON schema (``type: object``) of the keyword arguments of ``execute``."""
        ...

    async def execute(self, /, **params: Any) -> ToolResult:
        """Run the tool with the given arguments."""
        ...


@runtime_checkable
class RefusedCallProtocol(Protocol):
    """Optional: a tool (in practice, a wrapper that counts its calls) told of a refused call.

    The tool runner refuses a call whose arguments are no JSON object without
    calling ``execute``; it hands the failed result it made to ``call_refused``
    of a tool that has the method, so whatever counts the calls that reach
    ``execute`` counts this one too, with the same ``error_type``. What the
    method raises is ignored: the call has failed already.
    """

    def call_refused(self, result: ToolResult) -> None:
        """Take note of a call refused before ``execute`` ran; ``result`` is what it returned."""
        ...


@runtime_checkable
class ToolRegistryProtocol(Protocol):
    """The set of tools available to agents.

    Contract: ``get`` raises :class:`taskforce.errors.ToolNotFoundError` for an
    unknown name; ``register`` raises ``ValueError`` for a duplicate name.
    Registering while missions run is allowed; running missions see the new
    tool from their next ``get``/``list_tools`` on.
    """

    def register(self, tool: ToolProtocol) -> None:
        """Add a tool; its ``name`` must be unique."""
        ...

    def get(self, name: str) -> ToolProtocol:
        """Return the tool registered under ``name``."""
        ...

    def list_tools(self) -> Sequence[ToolProtocol]:
        """Return every registered tool, in registration order."""
        ...

    def openai_schemas(self) -> list[ToolSchema]:
        """Return the OpenAI tool schemas of every registered tool."""
        ...
