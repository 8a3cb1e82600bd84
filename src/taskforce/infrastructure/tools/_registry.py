"""The in-memory tool registry: tools by name, in registration order.

Registering while missions run is safe on the one event loop: every accessor
hands out a copy, so no caller ever iterates a list that ``register`` mutates.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable, Mapping

from taskforce.core.interfaces.llm import ToolSchema
from taskforce.core.interfaces.tools import ToolProtocol
from taskforce.errors import ToolNotFoundError

__all__ = ["ToolRegistry"]


def _check_tool(tool: object) -> str:
    """Refuse what is no tool; return its name, read once (a property may change it)."""
    if not isinstance(tool, ToolProtocol):
        raise ValueError(f"{tool!r} is not a tool: it lacks part of ToolProtocol")
    name = tool.name
    if not isinstance(name, str) or not name:
        raise ValueError(f"tool name must be a non-empty string, got {name!r}")
    if not inspect.iscoroutinefunction(tool.execute):
        raise ValueError(f"tool {name!r}: execute must be a coroutine function")
    if not isinstance(tool.description, str):
        raise ValueError(f"tool {name!r}: description must be a string")
    schema = tool.parameters_schema
    if not isinstance(schema, Mapping):
        raise ValueError(f"tool {name!r}: parameters_schema must be a mapping")
    try:  # what openai_schemas hands out, on every lean turn of every mission
        copy.deepcopy(dict(schema))
    except Exception as exc:
        raise ValueError(
            f"tool {name!r}: parameters_schema cannot be copied ({type(exc).__name__})"
        ) from exc
    return name


class ToolRegistry:
    """Holds the tools agents may call; implements ``ToolRegistryProtocol``.

    Args:
        tools: Tools to register right away, in order.

    Raises:
        ValueError: Two tools share a name, or an object is not a tool.
    """

    def __init__(self, tools: Iterable[ToolProtocol] = ()) -> None:
        self._tools: dict[str, ToolProtocol] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: ToolProtocol) -> None:
        """Add a tool; running missions see it from their next lookup on.

        Args:
            tool: The tool; its ``name`` must not be registered yet.

        Raises:
            ValueError: The name is taken, empty or not a string, or ``tool``
                does not satisfy ``ToolProtocol`` (``execute`` must be a coroutine function,
                ``parameters_schema`` a mapping that can be copied).
        """
        name = _check_tool(tool)
        if name in self._tools:
            raise ValueError(f"a tool named {name!r} is already registered")
        self._tools[name] = tool

    def get(self, name: str) -> ToolProtocol:
        """Return the tool registered under ``name``.

        Args:
            name: The tool's name.

        Returns:
            The tool.

        Raises:
            ToolNotFoundError: No tool has that name.
        """
        try:
            return self._tools[name]
        except KeyError:
            raise ToolNotFoundError(name) from None

    def list_tools(self) -> list[ToolProtocol]:
        """Return every registered tool, in registration order.

        Returns:
            A new list; changing it does not change the registry.
        """
        return list(self._tools.values())

    def openai_schemas(self) -> list[ToolSchema]:
        """Return the OpenAI tool schema of every registered tool, in registration order.

        Returns:
            ``[{"type": "function", "function": {"name", "description", "parameters"}}, ...]``;
            the parameter schemas are copies, safe to change.
        """
        return [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": copy.deepcopy(dict(tool.parameters_schema)),
                },
            }
            for tool in self.list_tools()
        ]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"<ToolRegistry tools={list(self._tools)!r}>"
