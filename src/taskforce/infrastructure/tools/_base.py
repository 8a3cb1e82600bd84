"""Shared base of the built-in tools: argument checking against the tool's own schema.

The validator understands the small subset of JSON schema the built-in tools
use (``required``, ``additionalProperties: false``, the scalar ``type`` s and
``minimum``/``maximum``/``maxLength``), so no jsonschema dependency is needed.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from taskforce.core.interfaces.log import quoted
from taskforce.core.interfaces.outcome import INVALID_ARGUMENTS
from taskforce.core.interfaces.tools import ToolResult

__all__ = [
    "INVALID_ARGUMENTS",
    "MAX_PROBLEMS_NAMED",
    "BaseTool",
    "describe_arguments",
    "error_result",
    "ok_result",
    "validate_arguments",
]

#: The most bad arguments one ``InvalidArguments`` error names; the rest it counts.
MAX_PROBLEMS_NAMED = 10


def ok_result(output: Any) -> ToolResult:
    """Build a successful tool result.

    Args:
        output: The JSON-serialisable value the tool produced.

    Returns:
        ``{"success": True, "output": output}``.
    """
    return {"success": True, "output": output}


def error_result(error: str, error_type: str) -> ToolResult:
    """Build a failed tool result.

    Args:
        error: Why the call failed, in words the model can act on.
        error_type: A short CamelCase classification of the failure.

    Returns:
        ``{"success": False, "error": error, "error_type": error_type}``.
    """
    return {"success": False, "error": error, "error_type": error_type}


def _type_matches(expected: str, value: Any) -> bool:
    # bool is an int subclass, but JSON keeps booleans and numbers apart.
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


def _check_value(name: str, spec: Mapping[str, Any], value: Any) -> str | None:
    expected = spec.get("type")
    if isinstance(expected, str) and not _type_matches(expected, value):
        return f"argument {name!r} must be of type {expected}, got {type(value).__name__}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"argument {name!r} must be a finite number"
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if is_number and "minimum" in spec and value < spec["minimum"]:
        return f"argument {name!r} must be at least {spec['minimum']}, got {value}"
    if is_number and "maximum" in spec and value > spec["maximum"]:
        return f"argument {name!r} must be at most {spec['maximum']}, got {value}"
    if isinstance(value, str) and "maxLength" in spec and len(value) > spec["maxLength"]:
        return f"argument {name!r} is longer than {spec['maxLength']} characters"
    return None


def validate_arguments(schema: Mapping[str, Any], params: Mapping[str, Any]) -> str | None:
    """Check call arguments against an object schema.

    Args:
        schema: A JSON schema of ``type: object``.
        params: The keyword arguments of the call.

    Returns:
        ``None`` when the arguments fit, else a message naming the bad arguments
        (missing, unexpected, then wrong values), separated by ``"; "``: the first
        ``MAX_PROBLEMS_NAMED`` of them, then ``"and N more"``.
    """
    properties: Mapping[str, Any] = schema.get("properties", {})
    problems = [
        f"missing required argument {name!r}"
        for name in schema.get("required", ())
        if name not in params
    ]
    if schema.get("additionalProperties") is False:
        # the names are the caller's, of any length: quoted, cut
        problems += [
            f"unexpected argument {quoted(name)}" for name in params if name not in properties
        ]
    for name, value in params.items():
        spec = properties.get(name)
        if isinstance(spec, Mapping):
            problem = _check_value(name, spec, value)
            if problem is not None:
                problems.append(problem)
    if len(problems) > MAX_PROBLEMS_NAMED:  # a call may hold thousands: the error stays short
        more = len(problems) - MAX_PROBLEMS_NAMED
        problems = [*problems[:MAX_PROBLEMS_NAMED], f"and {more} more"]
    return "; ".join(problems) or None


def describe_arguments(schema: Mapping[str, Any]) -> str:
    """Say which arguments an object schema takes, for a caller that got them wrong.

    Args:
        schema: A JSON schema of ``type: object``.

    Returns:
        E.g. ``"'path' (string, required), 'append' (boolean)"``, or ``"no arguments"``.
    """
    properties: Mapping[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    described = []
    for name, spec in properties.items():
        kind = spec.get("type") if isinstance(spec, Mapping) else None
        notes = [note for note in (kind, "required" if name in required else None) if note]
        described.append(f"{name!r} ({', '.join(notes)})" if notes else repr(name))
    return ", ".join(described) or "no arguments"


class BaseTool(ABC):
    """A tool whose arguments are checked against its schema before it runs.

    Subclasses set ``name``, ``description`` and ``parameters_schema`` as class
    attributes and implement :meth:`run`, which gets the validated arguments as
    one mapping. ``execute`` never raises for bad arguments: it returns an
    ``InvalidArguments`` error result naming the tool and the arguments.
    """

    name: str
    description: str
    parameters_schema: dict[str, Any]

    async def execute(self, /, **params: Any) -> ToolResult:
        """Validate the arguments, then run the tool.

        Args:
            **params: The tool's arguments, as described by ``parameters_schema``.

        Returns:
            The tool's result, or an ``InvalidArguments`` error result that names the
            tool, every bad or missing argument, and the arguments the tool takes.
        """
        problem = validate_arguments(self.parameters_schema, params)
        if problem is not None:
            takes = describe_arguments(self.parameters_schema)
            error = f"invalid arguments for tool {self.name!r}: {problem}. It takes {takes}."
            return error_result(error, INVALID_ARGUMENTS)
        return await self.run(params)

    @abstractmethod
    async def run(self, args: Mapping[str, Any]) -> ToolResult:
        """Do the tool's work with arguments that already passed validation.

        Args:
            args: The validated arguments; optional ones may be absent.

        Returns:
            The tool result.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"
