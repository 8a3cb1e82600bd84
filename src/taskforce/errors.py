"""Every exception taskforce raises; this module imports nothing of the project,
so any layer can raise or catch these without creating an import cycle.

The hierarchy::

    TaskforceError
     ├── ConfigurationError        a setting is invalid (names the setting)
     │    └── UnknownSettingError  a TASKFORCE_* variable names no setting
     ├── StartupError              the service cannot start (e.g. its port is in use)
     ├── LLMProviderError          the LLM endpoint failed or answered nonsense
     ├── ToolError
     │    ├── ToolNotFoundError    no tool of that name is registered
     │    ├── ToolExecutionError   a tool could not do what it was asked
     │    └── ToolTimeoutError     a tool call ran past its time limit
     ├── StateStoreError             (messages name no server path or connection string)
     │    ├── StateCorruptedError  a session's stored state cannot be parsed
     │    └── StateStoreUnavailableError  the state database cannot be reached
     │         └── StateStorePermissionError  its user lacks a privilege the store needs,
     │                                        or may not write at all
     └── MissionError              a mission was asked for in a way that cannot run
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "ConfigurationError",
    "LLMProviderError",
    "MissionError",
    "StartupError",
    "StateCorruptedError",
    "StateStoreError",
    "StateStorePermissionError",
    "StateStoreUnavailableError",
    "TaskforceError",
    "ToolError",
    "ToolExecutionError",
    "ToolNotFoundError",
    "ToolTimeoutError",
    "UnknownSettingError",
    "setting_variable",
]


def setting_variable(name: str) -> str:
    """The environment variable of setting ``name``: ``state.dsn`` is ``TASKFORCE_STATE__DSN``."""
    return f"TASKFORCE_{name.replace('.', '__')}".upper()


class TaskforceError(Exception):
    """Root of every error taskforce raises on purpose."""


class ConfigurationError(TaskforceError):
    """A setting has a value taskforce cannot start with."""

    def __init__(self, setting: str, reason: str, *, source: str | None = None) -> None:
        self.setting = setting
        self.reason = reason
        # where the value came from, e.g. "TASKFORCE_METRICS__ENABLED='maybe'"
        self.source = source
        super().__init__(self._message())

    def _message(self) -> str:
        where = f" ({self.source})" if self.source else ""
        return f"invalid setting {self.setting!r}{where}: {self.reason}"


class UnknownSettingError(ConfigurationError):
    """An environment variable with the ``TASKFORCE_`` prefix names no setting."""

    def __init__(self, variable: str, closest: str | None) -> None:
        self.variable = variable
        # "VARIABLE (setting)" of a setting whose name is close, None when none is
        self.closest = closest
        super().__init__(variable, "names no setting", source=None)

    def _message(self) -> str:
        if self.closest is None:
            return f"unknown variable {self.variable}: it names no setting"
        return f"unknown variable {self.variable}; the closest setting is {self.closest}"


class StartupError(TaskforceError):
    """The service cannot start as configured; the message is one line naming the cause."""


class LLMProviderError(TaskforceError):
    """The LLM provider failed to answer a call.

    ``error_type`` is one of the LLM error types of ``core.interfaces.llm``
    (``other`` when the raiser did not say); ``attempts`` holds the call's
    ``LLMAttempt`` records, oldest first, when the provider reported them;
    ``usage`` holds the token usage the server reported before the call failed (a
    stream whose tool arguments are not JSON was billed all the same), shaped like
    the ``Usage`` of ``core.interfaces.llm`` (``prompt_tokens``, ``completion_tokens``,
    ...); ``None`` when it reported none. ``model`` is the model the call is reported as
    (the one a stream named before it failed, else the one the provider resolved the
    requested one to), ``None`` when the raiser did not say.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        retryable: bool = False,
        error_type: str = "other",
        attempts: Sequence[Any] = (),
        usage: Mapping[str, Any] | None = None,
        model: str | None = None,
    ) -> None:
        self.provider = provider
        self.retryable = retryable
        self.error_type = error_type
        # Typed loosely: this module imports nothing of the project (see its docstring).
        self.attempts: tuple[Any, ...] = tuple(attempts)
        self.usage: Mapping[str, Any] | None = None if usage is None else dict(usage)
        self.model = model
        prefix = f"{provider}: " if provider else ""
        super().__init__(f"{prefix}{message}")


class ToolError(TaskforceError):
    """Base of every tool failure."""

    def __init__(self, tool_name: str, message: str) -> None:
        self.tool_name = tool_name
        super().__init__(f"tool {tool_name!r}: {message}")


class ToolNotFoundError(ToolError):
    """No tool with that name is registered."""

    def __init__(self, tool_name: str) -> None:
        super().__init__(tool_name, "no such tool is registered")


class ToolExecutionError(ToolError):
    """A tool could not carry out the call (bad arguments, refused path, ...)."""


class ToolTimeoutError(ToolError):
    """A tool call did not finish within its time limit."""

    def __init__(self, tool_name: str, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        super().__init__(tool_name, f"timed out after {timeout_seconds:g} s")


class StateStoreError(TaskforceError):
    """The state store could not save or load a session.

    The message is safe to show a client; ``detail`` (for the log only) may
    name the file or the database error.
    """

    def __init__(self, message: str, *, detail: str = "") -> None:
        self.detail = detail
        super().__init__(message)

    def start_up_line(self, given_in: Callable[[str], str] = setting_variable) -> str:
        """The line of a start-up this error stops, after ``taskforce: ``: where, then why.

        ``given_in`` names where a setting was given (its variable, its section's JSON
        variable, or ``in FILE``), for a line that names the setting to check.
        """
        return f"state: {self}"


class StateCorruptedError(StateStoreError):
    """A session's stored state exists but cannot be read back."""

    def __init__(self, session_id: str, path: str, reason: str) -> None:
        self.session_id = session_id
        self.path = path
        super().__init__(
            f"state of session {session_id!r} is corrupt: {reason}", detail=f"at {path}"
        )


class StateStoreUnavailableError(StateStoreError):
    """The state store's database cannot be reached (at start-up or during a mission), or
    the file store's lock files cannot be used (at start-up).

    ``setting`` is the setting to check: ``state.dsn`` (the connection string, or the
    database), or ``state_dir`` for the file store. ``variable`` names the environment
    variable to check instead: one the driver read a refused value from (a libpq one,
    e.g. ``PGSSLMODE``); the message then names it.
    """

    def __init__(
        self,
        message: str,
        *,
        detail: str = "",
        variable: str | None = None,
        setting: str = "state.dsn",
    ) -> None:
        self.variable = variable
        self.setting = setting
        super().__init__(message, detail=detail)

    def start_up_line(self, given_in: Callable[[str], str] = setting_variable) -> str:
        """The line of a start-up this error stops, after ``taskforce: ``: the setting to
        check and where it was given (``state.dsn (TASKFORCE_STATE__DSN)``, ``state_dir
        (in app.toml)``), unless the message names ``variable``, such as the libpq
        variable the driver refused; then why; never the connection string."""
        where = "" if self.variable else f"{self.setting} ({given_in(self.setting)}): "
        return f"{where}{self}"


class StateStorePermissionError(StateStoreUnavailableError):
    """The state database refuses its user a privilege the store needs, or any write (a
    standby, read-only transactions by default); found at start-up.

    The message names the user (``user``, never its password), what it lacks and what
    to do; the connection string (``state.dsn``), the database's grants or its settings
    are what to fix.
    """

    def __init__(self, user: str, refusal: str, remedy: str) -> None:
        self.user = user
        reason = f"the database user {user!r} {refusal}: {remedy}"
        super().__init__(f"cannot use the state database: {reason}", detail=reason)


class MissionError(TaskforceError):
    """A mission request cannot be run as asked (e.g. unknown agent type)."""
