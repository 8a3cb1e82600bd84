"""The ``calculator`` tool: arithmetic evaluated by walking the ``ast``, never with ``eval``.

Only numbers, the arithmetic operators, parentheses and a short list of math
functions and constants are understood. Exponents and magnitudes are capped so
an expression like ``9**9**9`` is refused before it can eat the CPU.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from taskforce.core.interfaces.log import quoted
from taskforce.core.interfaces.tools import ToolResult
from taskforce.infrastructure.tools._base import BaseTool, error_result, ok_result

__all__ = ["DEFAULT_MAX_EXPRESSION_CHARS", "CalculatorTool"]

#: The longest expression the tool takes by default (``tools.max_expression_chars``).
DEFAULT_MAX_EXPRESSION_CHARS = 1000
#: Largest magnitude any intermediate value may reach (about the float limit); a float,
#: so the literal ``1e308`` is within it (the float is a little above ``10**308``).
_MAX_MAGNITUDE = 1e308
#: Integral floats below this come back as ints; above it a float stands for a range of
#: integers, and its exact digits would claim a precision the result does not have.
_EXACT_FLOAT_INTEGERS = 2**53
_MAX_ROUND_DIGITS = 100
_TOO_LARGE = "result is too large (limit is 1e308)"

Number = int | float

_BINARY_OPERATORS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}

_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


def _whole(function: Callable[[Number], int]) -> Callable[[Number], Number]:
    """``function`` (floor, ceil, round), but a float from ``2**53`` up, integral already, as is."""

    def apply(value: Number) -> Number:
        if isinstance(value, float) and abs(value) >= _EXACT_FLOAT_INTEGERS:
            return value  # as an int, its every digit would look exact
        return function(value)

    return apply


def _round(value: Number, ndigits: Number | None = None) -> Number:
    if ndigits is None:
        return _whole(round)(value)
    if not isinstance(ndigits, int) or abs(ndigits) > _MAX_ROUND_DIGITS:
        # round(int, -huge) would build 10**huge before answering.
        raise _Refused(
            f"round() digits must be an integer within ±{_MAX_ROUND_DIGITS}", "LimitExceeded"
        )
    return round(value, ndigits)


_FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int]] = {
    # name: (function, min args, max args)
    "sqrt": (math.sqrt, 1, 1),
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "min": (min, 2, 50),
    "max": (max, 2, 50),
    "floor": (_whole(math.floor), 1, 1),
    "ceil": (_whole(math.ceil), 1, 1),
    "log": (math.log, 1, 2),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
}


class _Refused(Exception):
    """An expression the calculator will not evaluate; carries the result's error fields."""

    def __init__(self, message: str, error_type: str) -> None:
        self.error_type = error_type
        super().__init__(message)


def _checked(value: Any) -> Number:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Refused(
            f"value of type {type(value).__name__} is not a real number", "UnsupportedOperation"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise _Refused("result is too large or not a number", "LimitExceeded")
    if abs(value) > _MAX_MAGNITUDE:
        raise _Refused(_TOO_LARGE, "LimitExceeded")
    return value


def _check_power(base: Number, exponent: Number) -> None:
    # Estimate the result's size from logarithms so 9**9**9 is refused unevaluated.
    if base in (0, 1, -1) or exponent <= 0:
        return
    if exponent * math.log10(abs(base)) > 308:
        raise _Refused(f"{base}**{exponent} is too large (limit is 1e308)", "LimitExceeded")


def _binary_operator(node: ast.BinOp) -> Callable[[Any, Any], Any]:
    function = _BINARY_OPERATORS.get(type(node.op))
    if function is None:
        raise _Refused(f"unsupported operator: {type(node.op).__name__}", "UnsupportedOperation")
    return function


def _arity(min_args: int, max_args: int) -> str:
    """``"1 argument"``, ``"2 arguments"`` or ``"1 to 2 arguments"``."""
    if min_args != max_args:
        return f"{min_args} to {max_args} arguments"
    return f"{min_args} argument" if min_args == 1 else f"{min_args} arguments"


class _Evaluator:
    """Walks a parsed expression; each node kind has its own method."""

    def evaluate(self, node: ast.AST) -> Number:
        if isinstance(node, ast.Expression):
            return self.evaluate(node.body)
        if isinstance(node, ast.Constant):
            return _checked(node.value)
        if isinstance(node, ast.Name):
            if node.id in _CONSTANTS:
                return _CONSTANTS[node.id]
            raise _Refused(f"unknown name {quoted(node.id)}", "UnknownName")
        if isinstance(node, ast.UnaryOp):
            return self._unary(node)
        if isinstance(node, ast.BinOp):
            return self._binary(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        raise _Refused(f"unsupported expression: {type(node).__name__}", "UnsupportedOperation")

    def _unary(self, node: ast.UnaryOp) -> Number:
        operand = self.evaluate(node.operand)
        if isinstance(node.op, ast.USub):
            return -operand
        if isinstance(node.op, ast.UAdd):
            return +operand
        raise _Refused(f"unsupported operator: {type(node.op).__name__}", "UnsupportedOperation")

    def _binary(self, node: ast.BinOp) -> Number:
        # A chain on the left (1 + 2 + 3 ..., how Python parses a flat sum) is walked in
        # a loop: a flat expression must not run out of stack however many terms it has.
        chain: list[tuple[ast.BinOp, Callable[[Any, Any], Any]]] = []
        current: ast.expr = node
        while isinstance(current, ast.BinOp):
            chain.append((current, _binary_operator(current)))
            current = current.left
        value = self.evaluate(current)
        for link, function in reversed(chain):
            right = self.evaluate(link.right)
            if isinstance(link.op, ast.Pow):
                _check_power(value, right)
            value = _checked(function(value, right))
        return value

    def _call(self, node: ast.Call) -> Number:
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise _Refused(f"unknown function {quoted(name)}", "UnknownName")
        if node.keywords:
            raise _Refused("keyword arguments are not supported", "UnsupportedOperation")
        name = node.func.id
        function, min_args, max_args = _FUNCTIONS[name]
        if not min_args <= len(node.args) <= max_args:
            raise _Refused(
                f"{name}() takes {_arity(min_args, max_args)}, got {len(node.args)}",
                "InvalidExpression",
            )
        args = [self.evaluate(arg) for arg in node.args]
        try:
            return _checked(function(*args))
        except (ValueError, OverflowError) as exc:
            raise _Refused(f"{name}() cannot be computed: {exc}", "MathDomainError") from exc


def _calculate(expression: str, max_chars: int = DEFAULT_MAX_EXPRESSION_CHARS) -> Number:
    """Evaluate an arithmetic expression safely.

    Args:
        expression: The expression, e.g. ``"2 * (3 + sqrt(16))"``.
        max_chars: The longest expression evaluated; a longer one is refused unparsed.

    Returns:
        The value; an integral float comes back as ``int`` when it is below ``2**53``
        (where every integer is a float of its own).

    Raises:
        _Refused: The expression is invalid, unsupported or over a limit.
    """
    if len(expression) > max_chars:
        raise _Refused(f"expression is longer than {max_chars} characters", "LimitExceeded")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise _Refused(f"invalid syntax: {exc.msg}", "SyntaxError") from exc
    except ValueError as exc:  # Python 3.11 reports a NUL byte as ValueError
        raise _Refused(f"invalid syntax: {exc}", "SyntaxError") from exc
    except (RecursionError, MemoryError) as exc:
        raise _Refused("expression is nested too deeply", "LimitExceeded") from exc
    try:
        value = _Evaluator().evaluate(tree)
    except ZeroDivisionError as exc:
        raise _Refused("division by zero", "DivisionByZero") from exc
    except OverflowError as exc:
        raise _Refused(_TOO_LARGE, "LimitExceeded") from exc
    except RecursionError as exc:
        raise _Refused("expression is nested too deeply", "LimitExceeded") from exc
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_FLOAT_INTEGERS:
        return int(value)
    return value


def _schema(max_chars: int) -> dict[str, Any]:
    """The calculator's parameters schema, with ``max_chars`` as the expression's ``maxLength``."""
    return {
        "type": "object",
        "properties": {
            "expression": {
                "type": "string",
                "description": "The expression to evaluate, e.g. '2 * (3 + sqrt(16))'.",
                "maxLength": max_chars,
            },
        },
        "required": ["expression"],
        "additionalProperties": False,
    }


class CalculatorTool(BaseTool):
    """Evaluates arithmetic expressions without ``eval``.

    Args:
        max_expression_chars: The longest expression it evaluates; its schema's
            ``maxLength``, so a longer one is refused as ``InvalidArguments``.

    Raises:
        ValueError: ``max_expression_chars`` is below 1.
    """

    name = "calculator"
    description = (
        "Evaluate an arithmetic expression: numbers, + - * / // % **, parentheses, "
        "sqrt, abs, round, min, max, floor, ceil, log, sin, cos, pi, e."
    )
    parameters_schema = _schema(DEFAULT_MAX_EXPRESSION_CHARS)

    def __init__(self, *, max_expression_chars: int = DEFAULT_MAX_EXPRESSION_CHARS) -> None:
        if max_expression_chars < 1:
            raise ValueError(f"max_expression_chars must be at least 1, got {max_expression_chars}")
        self.max_expression_chars = max_expression_chars
        self.parameters_schema = _schema(max_expression_chars)

    async def run(self, args: Mapping[str, Any]) -> ToolResult:
        """Evaluate ``args["expression"]``.

        Args:
            args: ``{"expression": str}``.

        Returns:
            The number, or an error result saying why it was refused.
        """
        try:
            return ok_result(_calculate(args["expression"], self.max_expression_chars))
        except _Refused as exc:
            return error_result(str(exc), exc.error_type)
