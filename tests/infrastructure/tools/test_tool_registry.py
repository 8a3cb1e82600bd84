"""Tests of ToolRegistry and build_default_registry."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from taskforce.core.interfaces.tools import ToolProtocol, ToolRegistryProtocol, ToolResult
from taskforce.errors import ToolNotFoundError
from taskforce.infrastructure.tools import (
    CalculatorTool,
    SleepTool,
    ToolRegistry,
    build_default_registry,
)


class _EchoTool:
    """A plain tool that does not inherit from BaseTool."""

    def __init__(self, name: str = "echo") -> None:
        self.name = name
        self.description = "Echo the text back."
        self.parameters_schema: dict[str, Any] = {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
            "additionalProperties": False,
        }

    async def execute(self, **params: Any) -> ToolResult:
        return {"success": True, "output": params["text"]}


class _SyncTool(_EchoTool):
    def execute(self, **params: Any) -> ToolResult:  # type: ignore[override]
        return {"success": True, "output": None}


class TestToolRegistry:
    def test_satisfies_protocol(self) -> None:
        """The registry is a ToolRegistryProtocol at runtime."""
        registry: ToolRegistryProtocol = ToolRegistry()
        assert isinstance(registry, ToolRegistryProtocol)

    def test_get_returns_registered_tool(self) -> None:
        """get hands back the very object registered under the name."""
        tool = _EchoTool()
        registry = ToolRegistry([tool])
        assert tool is registry.get("echo")

    def test_unknown_name_raises(self) -> None:
        """get of an unknown name raises ToolNotFoundError naming the tool."""
        registry = ToolRegistry([_EchoTool()])
        with pytest.raises(ToolNotFoundError) as info:
            registry.get("nope")
        assert "nope" == info.value.tool_name

    def test_duplicate_name_refused(self) -> None:
        """Registering a second tool of the same name raises ValueError and keeps the first."""
        first = _EchoTool()
        registry = ToolRegistry([first])
        with pytest.raises(ValueError, match="'echo' is already registered"):
            registry.register(_EchoTool())
        assert first is registry.get("echo")
        assert 1 == len(registry)

    def test_duplicate_in_constructor_refused(self) -> None:
        """The constructor refuses duplicates like register does."""
        with pytest.raises(ValueError, match="already registered"):
            ToolRegistry([_EchoTool(), _EchoTool()])

    @pytest.mark.parametrize("name", ["", 42, None])
    def test_bad_name_refused(self, name: Any) -> None:
        """A tool whose name is empty or not a string is refused."""
        with pytest.raises(ValueError, match="non-empty string"):
            ToolRegistry().register(_EchoTool(name))

    def test_a_name_is_registered_as_it_was_checked(self) -> None:
        """A tool whose ``name`` gives another value at each read is registered under the
        name that was checked, never under a later one (here no string at all)."""

        class _Shifting(_EchoTool):
            reads = 0

            @property
            def name(self) -> Any:
                _Shifting.reads += 1
                return "echo" if _Shifting.reads <= 2 else 5

            @name.setter
            def name(self, value: str) -> None:
                pass

        tool = _Shifting()
        registry = ToolRegistry([tool])
        assert ("echo" in registry, 5 in registry) == (True, False)
        assert tool is registry.get("echo")

    def test_a_schema_that_cannot_be_copied_is_refused(self) -> None:
        """A schema ``openai_schemas`` could not copy (here holding a lock) is refused at
        registration, naming the tool, rather than failing every lean turn after it."""
        tool = _EchoTool()
        tool.parameters_schema = {"type": "object", "lock": threading.Lock()}
        with pytest.raises(ValueError, match="'echo': parameters_schema cannot be copied"):
            ToolRegistry([tool])

    def test_sync_execute_refused(self) -> None:
        """A tool whose execute is not a coroutine function is refused."""
        with pytest.raises(ValueError, match="coroutine function"):
            ToolRegistry().register(_SyncTool())  # type: ignore[arg-type]

    def test_non_tool_refused(self) -> None:
        """An object lacking the protocol's members is refused."""
        with pytest.raises(ValueError, match="not a tool"):
            ToolRegistry().register(object())  # type: ignore[arg-type]

    def test_list_tools_in_registration_order_and_a_copy(self) -> None:
        """list_tools keeps registration order and returns a copy the caller may change."""
        tools = [_EchoTool("b"), _EchoTool("a"), _EchoTool("c")]
        registry = ToolRegistry(tools)
        listed = registry.list_tools()
        listed.clear()
        assert ["b", "a", "c"] == [tool.name for tool in registry.list_tools()]

    def test_late_registration_visible(self) -> None:
        """A tool registered after a listing was taken shows up in the next lookups only."""
        registry = ToolRegistry([_EchoTool("a")])
        before = registry.list_tools()
        registry.register(_EchoTool("late"))
        assert ["a"] == [tool.name for tool in before]
        assert ["a", "late"] == [tool.name for tool in registry.list_tools()]
        assert "late" == registry.get("late").name
        assert "late" == registry.openai_schemas()[-1]["function"]["name"]

    def test_contains_and_len(self) -> None:
        """`in` tests names and len counts tools."""
        registry = ToolRegistry([_EchoTool("a"), _EchoTool("b")])
        assert "a" in registry
        assert "z" not in registry
        assert 2 == len(registry)

    def test_openai_schemas(self) -> None:
        """openai_schemas gives the OpenAI function schema of every tool, in order."""
        echo = _EchoTool()
        registry = ToolRegistry([echo, CalculatorTool()])
        schemas = registry.openai_schemas()
        assert {
            "type": "function",
            "function": {
                "name": "echo",
                "description": "Echo the text back.",
                "parameters": echo.parameters_schema,
            },
        } == schemas[0]
        assert ["echo", "calculator"] == [schema["function"]["name"] for schema in schemas]

    def test_openai_schemas_are_copies(self) -> None:
        """Changing a returned schema does not change the tool's own schema."""
        registry = ToolRegistry([SleepTool()])
        registry.openai_schemas()[0]["function"]["parameters"]["required"].append("x")
        assert ["seconds"] == SleepTool.parameters_schema["required"]
        assert ["seconds"] == registry.openai_schemas()[0]["function"]["parameters"]["required"]


class TestBuildDefaultRegistry:
    def test_has_the_five_builtin_tools(self, tmp_path: Path) -> None:
        """The default registry holds the five built-in tools, each a ToolProtocol."""
        registry = build_default_registry(tmp_path / "ws")
        names = [tool.name for tool in registry.list_tools()]
        assert ["calculator", "file_read", "file_write", "list_dir", "sleep"] == names
        assert all(isinstance(tool, ToolProtocol) for tool in registry.list_tools())

    def test_schemas_are_closed_objects(self, tmp_path: Path) -> None:
        """Every built-in schema is an object schema listing required keys, without extras."""
        for schema in build_default_registry(tmp_path / "ws").openai_schemas():
            parameters = schema["function"]["parameters"]
            assert "object" == parameters["type"]
            assert False is parameters["additionalProperties"]
            assert set(parameters["required"]) <= set(parameters["properties"])
            assert schema["function"]["description"]

    async def test_file_tools_share_the_workspace(self, tmp_path: Path) -> None:
        """A file written with file_write is read back by file_read of the same registry."""
        registry = build_default_registry(tmp_path / "ws")
        await registry.get("file_write").execute(path="a.txt", content="hi")
        assert {"success": True, "output": "hi"} == await registry.get("file_read").execute(
            path="a.txt"
        )
        assert "hi" == (tmp_path / "ws" / "a.txt").read_text()
