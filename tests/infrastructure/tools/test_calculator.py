"""Tests of the calculator tool: results, and every refusal."""

from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from taskforce.application.container import build_container
from taskforce.config import Settings
from taskforce.core.interfaces.tools import ToolResult
from taskforce.infrastructure.tools import CalculatorTool


async def _calc(expression: str) -> ToolResult:
    return await CalculatorTool().execute(expression=expression)


class TestCalculatorResults:
    @pytest.mark.parametrize(
        ("expression", "expected"),
        [
            ("1 + 2 * 3", 7),
            ("(1 + 2) * 3", 9),
            ("2 ** 3 ** 2", 512),
            ("-2 ** 2", -4),
            ("(-2) ** 2", 4),
            ("+5 - -3", 8),
            ("7 / 2", 3.5),
            ("7 // 2", 3),
            ("-7 // 2", -4),
            ("7 % 3", 1),
            ("1.5 * 4", 6),
            ("2 ** -1", 0.5),
            ("0.1 + 0.2", 0.1 + 0.2),
            ("10 - 2 - 3", 5),
            ("100 / 10 / 5", 2),
            ("sqrt(16) + abs(-3)", 7),
            ("round(2.567, 2)", 2.57),
            ("round(2.5)", 2),
            ("min(3, 1, 2) + max(4, 9)", 10),
            ("floor(2.7) + ceil(2.1)", 5),
            ("log(8, 2)", 3),
            ("log(e)", 1),
            ("sin(0) + cos(0)", 1),
            ("pi", math.pi),
            ("2 * pi", 2 * math.pi),
            ("10 ** 308", 10**308),
            ("1e308", 1e308),
            ("-1e308 + 1e307", -1e308 + 1e307),
            ("sin(1e308)", math.sin(1e308)),
            ("  1 +\t1  ", 2),
        ],
    )
    async def test_evaluates(self, expression: str, expected: float) -> None:
        """Arithmetic follows Python's precedence and the listed functions work."""
        assert {"success": True, "output": expected} == await _calc(expression)

    @pytest.mark.parametrize(
        ("expression", "expected"),
        [("+".join(["1"] * 499), 499), ("-".join(["9"] * 499), 9 - 9 * 498), ("2" + "*1" * 499, 2)],
        ids=["sum", "difference", "product"],
    )
    async def test_a_flat_expression_of_any_allowed_length_evaluates(
        self, expression: str, expected: int
    ) -> None:
        """A flat chain of 500 terms (the length limit allows no more) is no nesting to refuse."""
        assert {"success": True, "output": expected} == await _calc(expression)

    async def test_integral_result_is_an_int(self) -> None:
        """A result with no fractional part comes back as an int, not a float."""
        result = await _calc("6 / 2")
        assert int is type(result["output"])

    @pytest.mark.parametrize(
        ("expression", "expected"),
        [
            ("10 ** 308 / 3", 10**308 / 3),
            ("sqrt(10 ** 308)", 1e154),
            ("2.0 ** 53", 2.0**53),
            ("1e20", 1e20),
            ("floor(1e300)", 1e300),
            ("ceil(-1e300)", -1e300),
            ("round(1e300)", 1e300),
        ],
    )
    async def test_a_float_past_2_53_stays_a_float(self, expression: str, expected: float) -> None:
        """An integral float from 2**53 up stands for many integers: no int with made-up digits."""
        result = await _calc(expression)
        assert ({"success": True, "output": expected}, float) == (result, type(result["output"]))

    @pytest.mark.parametrize("expression", ["2.0 ** 53 - 1", "floor(2.0 ** 52 + 0.5)", "1e15"])
    async def test_an_integral_float_below_2_53_is_an_int(self, expression: str) -> None:
        """Below 2**53 every integer is exact as a float: it comes back as that int."""
        result = await _calc(expression)
        assert int is type(result["output"])


class TestCalculatorRefusals:
    @pytest.mark.parametrize(
        ("expression", "error_type", "error"),
        [
            ("1 / 0", "DivisionByZero", "division by zero"),
            ("1 // 0", "DivisionByZero", "division by zero"),
            ("5 % 0", "DivisionByZero", "division by zero"),
            ("1 +", "SyntaxError", "invalid syntax"),
            ("", "SyntaxError", "invalid syntax"),
            ("1 = 2", "SyntaxError", "invalid syntax"),
            ("x + 1", "UnknownName", "unknown name 'x'"),
            ("y" * 100, "UnknownName", f"unknown name {'y' * 80!r}...[+20 chars]"),
            ("__import__('os')", "UnknownName", "unknown function '__import__'"),
            ("exp(1)", "UnknownName", "unknown function 'exp'"),
            ("math.sqrt(4)", "UnknownName", "unknown function 'math.sqrt'"),
            ("(1).real", "UnsupportedOperation", "unsupported expression: Attribute"),
            ("[1, 2]", "UnsupportedOperation", "unsupported expression: List"),
            ("1 if 1 else 2", "UnsupportedOperation", "unsupported expression: IfExp"),
            ("1 < 2", "UnsupportedOperation", "unsupported expression: Compare"),
            ("lambda: 1", "UnsupportedOperation", "unsupported expression: Lambda"),
            ("1 << 2", "UnsupportedOperation", "unsupported operator: LShift"),
            ("~1", "UnsupportedOperation", "unsupported operator: Invert"),
            ("'a' * 3", "UnsupportedOperation", "value of type str is not a real number"),
            ("True + 1", "UnsupportedOperation", "value of type bool is not a real number"),
            ("1j", "UnsupportedOperation", "value of type complex is not a real number"),
            ("(-8) ** 0.5", "UnsupportedOperation", "value of type complex is not a real number"),
            ("round(1.5, ndigits=1)", "UnsupportedOperation", "keyword arguments"),
            ("sqrt(1, 2)", "InvalidExpression", "sqrt() takes 1 argument, got 2"),
            ("min(1)", "InvalidExpression", "min() takes 2 to 50 arguments, got 1"),
            ("sqrt(-1)", "MathDomainError", "sqrt() cannot be computed"),
            ("log(0)", "MathDomainError", "log() cannot be computed"),
            ("9 ** 9 ** 9", "LimitExceeded", "too large"),
            ("10 ** 309", "LimitExceeded", "too large"),
            ("2.0 ** 5000", "LimitExceeded", "too large"),
            ("10 ** 308 * 10", "LimitExceeded", "too large"),
            ("1e308 * 10", "LimitExceeded", "too large"),
            ("0.1 ** -400", "LimitExceeded", "too large"),
            ("0.5 ** -1e300", "LimitExceeded", "result is too large (limit is 1e308)"),
            ("round(5, -10 ** 9)", "LimitExceeded", "round() digits"),
            ("-" * 990 + "1", "LimitExceeded", "nested too deeply"),
        ],
    )
    async def test_refused(self, expression: str, error_type: str, error: str) -> None:
        """Invalid, unsupported or oversized expressions give an error result with a reason."""
        result = await _calc(expression)
        assert False is result["success"]
        assert error_type == result["error_type"]
        assert error in result["error"]

    async def test_too_long_expression_refused(self) -> None:
        """An expression over 1000 characters is refused before parsing."""
        result = await _calc("1+" * 500 + "1")
        assert {
            "success": False,
            "error": "invalid arguments for tool 'calculator': argument 'expression' is longer "
            "than 1000 characters. It takes 'expression' (string, required).",
            "error_type": "InvalidArguments",
        } == result

    async def test_huge_power_refused_quickly(self) -> None:
        """A power tower is refused from an estimate, without computing it."""
        started = time.perf_counter()
        result = await _calc("9 ** 9 ** 9 ** 9")
        assert "LimitExceeded" == result["error_type"]
        assert time.perf_counter() - started < 1.0

    @pytest.mark.parametrize(
        ("params", "problem"),
        [
            ({}, "missing required argument 'expression'"),
            ({"expr": "1+1"}, "missing required argument 'expression'; unexpected argument 'expr'"),
            ({"expression": "1", "x": 1}, "unexpected argument 'x'"),
        ],
    )
    async def test_wrong_arguments_refused(self, params: dict[str, Any], problem: str) -> None:
        """Missing or extra arguments: the error names the tool, each bad argument, and what
        it takes; no Python message."""
        result = await CalculatorTool().execute(**params)
        assert {
            "success": False,
            "error": f"invalid arguments for tool 'calculator': {problem}. "
            "It takes 'expression' (string, required).",
            "error_type": "InvalidArguments",
        } == result

    async def test_non_string_expression_refused(self) -> None:
        """A number instead of an expression string is an argument error."""
        result = await CalculatorTool().execute(expression=42)
        assert "InvalidArguments" == result["error_type"]


class TestCalculatorLengthLimit:
    async def test_a_longer_limit_takes_a_longer_expression(self) -> None:
        """With max_expression_chars 1500 an expression of 1201 characters evaluates, and the
        schema the model reads says 1500."""
        tool = CalculatorTool(max_expression_chars=1500)
        assert 1500 == tool.parameters_schema["properties"]["expression"]["maxLength"]
        assert {"success": True, "output": 601} == await tool.execute(expression="1+" * 600 + "1")

    async def test_a_shorter_limit_refuses_and_says_so(self) -> None:
        """With max_expression_chars 10 an expression of 11 characters is refused, named."""
        result = await CalculatorTool(max_expression_chars=10).execute(expression="1+2+3+4+5+6")
        assert "InvalidArguments" == result["error_type"]
        assert "argument 'expression' is longer than 10 characters" in result["error"]

    async def test_the_limit_holds_without_the_schema_check(self) -> None:
        """run() itself refuses a longer expression, for a caller that skipped execute()."""
        result = await CalculatorTool(max_expression_chars=3).run({"expression": "1+2+3"})
        assert {
            "success": False,
            "error": "expression is longer than 3 characters",
            "error_type": "LimitExceeded",
        } == result

    async def test_the_parsers_bound_on_a_chain_is_the_documented_one(self) -> None:
        """The docs give how long a chain (``1+1+...``) Python's parser takes whatever the
        setting, for each Python version: on the running one, a tenth below it is
        computed, a tenth above it refused."""
        docs = Path(__file__).parents[3] / "docs"
        running = "{}.{}".format(*sys.version_info[:2])
        found = set()
        for page in ("configuration.md", "operator-guide.md"):
            text = (docs / page).read_text()
            sentence = re.search(r"refuses a chain\b(.*?)`LimitExceeded`", text)
            assert sentence is not None, page
            bounds = {
                version: int(count.replace(",", ""))
                for count, versions in re.findall(
                    r"about ([\d,]+)(?: terms)? on (?:Python )?(3\.\d+(?: and 3\.\d+)*)",
                    sentence.group(1),
                )
                for version in versions.split(" and ")
            }
            assert {"3.11", "3.12", "3.13"} <= bounds.keys(), page
            found.add(bounds[running])
        assert 1 == len(found)
        terms = found.pop()
        tool = CalculatorTool(max_expression_chars=100_000)
        below, above = terms * 9 // 10, terms * 11 // 10
        assert {"success": True, "output": below} == await tool.execute(
            expression="+".join(["1"] * below)
        )
        refused = await tool.execute(expression="+".join(["1"] * above))
        assert ("LimitExceeded", "expression is nested too deeply") == (
            refused["error_type"],
            refused["error"],
        )

    def test_a_limit_below_one_is_refused(self) -> None:
        """max_expression_chars must be at least 1."""
        with pytest.raises(ValueError, match="max_expression_chars"):
            CalculatorTool(max_expression_chars=0)

    def test_the_default_is_the_schemas_1000(self) -> None:
        """Unset, the limit is 1000 characters, on the class and on an instance."""
        for schema in (CalculatorTool.parameters_schema, CalculatorTool().parameters_schema):
            assert 1000 == schema["properties"]["expression"]["maxLength"]

    async def test_the_setting_reaches_the_containers_calculator(self, tmp_path: Path) -> None:
        """tools.max_expression_chars sets the limit of the container's calculator."""
        settings = Settings(
            state_dir=tmp_path / "state",
            workspace_dir=tmp_path / "ws",
            tools={"max_expression_chars": 1500},
        )
        expression = "1+" * 600 + "1"
        async with build_container(settings) as container:
            result = await container.executor.execute_mission(
                f"tool:calculator {json.dumps({'expression': expression})}"
            )
        assert ("completed", "Completed 1 tool call(s). Last result: 601") == (
            result.status,
            result.final_message,
        )
