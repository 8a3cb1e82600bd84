"""Tests of BaseTool's argument validation against the tool's own schema."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from taskforce.core.interfaces.tools import ToolResult
from taskforce.infrastructure.tools import BaseTool, ok_result
from taskforce.infrastructure.tools._base import describe_arguments, validate_arguments


class _RecordingTool(BaseTool):
    """Returns its validated arguments, so a test sees whether run was reached."""

    name = "record"
    description = "Record the arguments."
    parameters_schema = {
        "type": "object",
        "properties": {
            "text": {"type": "string", "maxLength": 5},
            "count": {"type": "integer", "minimum": 1, "maximum": 3},
            "ratio": {"type": "number"},
            "flag": {"type": "boolean"},
        },
        "required": ["text"],
        "additionalProperties": False,
    }

    async def run(self, args: Mapping[str, Any]) -> ToolResult:
        return ok_result(dict(args))


_TAKES = "'text' (string, required), 'count' (integer), 'ratio' (number), 'flag' (boolean)"


class TestBaseTool:
    def test_repr_names_the_tool(self) -> None:
        """A tool's repr names it, for readable logs and assertion output."""
        assert "<_RecordingTool name='record'>" == repr(_RecordingTool())

    async def test_valid_arguments_reach_run(self) -> None:
        """Arguments that fit the schema are passed to run unchanged."""
        params = {"text": "abc", "count": 2, "ratio": 0.5, "flag": True}
        assert {"success": True, "output": params} == await _RecordingTool().execute(**params)

    async def test_optional_arguments_may_be_left_out(self) -> None:
        """Only required arguments must be given."""
        assert {"success": True, "output": {"text": "a"}} == await _RecordingTool().execute(
            text="a"
        )

    async def test_integer_accepted_as_number(self) -> None:
        """An int is a valid JSON number."""
        result = await _RecordingTool().execute(text="a", ratio=2)
        assert True is result["success"]

    async def test_a_long_unexpected_name_is_quoted_by_its_start(self) -> None:
        """An argument name of any length: its first 80 characters, and how many more."""
        result = await _RecordingTool().execute(text="a", **{"k" * 10_000: 1})
        assert f"unexpected argument {'k' * 80!r}...[+9920 chars]" in str(result["error"])
        assert len(str(result["error"])) < 400

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({}, "missing required argument 'text'"),
            ({"text": "a", "extra": 1}, "unexpected argument 'extra'"),
            ({"text": 1}, "argument 'text' must be of type string, got int"),
            ({"text": "a", "count": 1.5}, "argument 'count' must be of type integer, got float"),
            ({"text": "a", "count": True}, "argument 'count' must be of type integer, got bool"),
            ({"text": "a", "ratio": "1"}, "argument 'ratio' must be of type number, got str"),
            ({"text": "a", "ratio": False}, "argument 'ratio' must be of type number, got bool"),
            ({"text": "a", "ratio": float("nan")}, "argument 'ratio' must be a finite number"),
            ({"text": "a", "flag": 1}, "argument 'flag' must be of type boolean, got int"),
            ({"text": "a", "count": 0}, "argument 'count' must be at least 1, got 0"),
            ({"text": "a", "count": 4}, "argument 'count' must be at most 3, got 4"),
            ({"text": "abcdef"}, "argument 'text' is longer than 5 characters"),
        ],
    )
    async def test_bad_arguments_give_error_result(
        self, params: dict[str, Any], message: str
    ) -> None:
        """Missing, extra, wrong-typed or out-of-range arguments give an error result naming it."""
        error = f"invalid arguments for tool 'record': {message}. It takes {_TAKES}."
        expected = {"success": False, "error": error, "error_type": "InvalidArguments"}
        assert expected == await _RecordingTool().execute(**params)

    async def test_every_bad_argument_is_named(self) -> None:
        """Several bad arguments are all named, missing ones first, not only the first."""
        result = await _RecordingTool().execute(txt="a", count=0)
        assert (
            "invalid arguments for tool 'record': missing required argument 'text'; "
            "unexpected argument 'txt'; argument 'count' must be at least 1, got 0. "
            f"It takes {_TAKES}."
        ) == result["error"]

    async def test_thousands_of_bad_arguments_give_a_short_error(self) -> None:
        """Past ten bad arguments the error counts the rest: it goes to the model and the record."""
        params = {f"k{index}": 0 for index in range(5000)}
        result = await _RecordingTool().execute(text="ok", **params)
        named = "; ".join(f"unexpected argument 'k{index}'" for index in range(10))
        assert (
            f"invalid arguments for tool 'record': {named}; and 4990 more. It takes {_TAKES}."
        ) == result["error"]


class TestValidateArguments:
    @pytest.mark.parametrize(
        ("schema", "described"),
        [
            ({"type": "object", "properties": {}}, "no arguments"),
            ({"properties": {"path": {"type": "string"}}}, "'path' (string)"),
            ({"properties": {"x": {}}, "required": ["x"]}, "'x' (required)"),
            ({"properties": {"x": {}}}, "'x'"),
        ],
    )
    def test_describe_arguments(self, schema: dict[str, Any], described: str) -> None:
        """The arguments a schema takes, as a caller that got them wrong is told."""
        assert described == describe_arguments(schema)

    def test_open_schema_allows_extra_arguments(self) -> None:
        """Without additionalProperties: false, unknown arguments pass."""
        schema = {"type": "object", "properties": {}}
        assert None is validate_arguments(schema, {"anything": 1})
