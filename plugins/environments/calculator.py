"""The `calculator` tool and environment: arithmetic the model hands off instead of guessing.

The tool parses the expression and walks its syntax tree (numbers, + - * / // % **, unary
signs, parentheses): no `eval`, no names, no calls. Sizes are capped before any work, so
`9**9**9` is an error at once instead of a hung run.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from rlhfx.components import Environment, EnvironmentConfig, EnvStep

MAX_CHARS = 200
#: Largest magnitude of any intermediate result (integers and floats alike).
MAX_MAGNITUDE = 10**30
MAX_EXPONENT = 100

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


class CalculatorError(ValueError):
    """The expression is not plain arithmetic or its result is out of bounds."""


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression and return the result.

    Args:
        expression: numbers with + - * / // % ** and parentheses, e.g. "(1234 + 5678) * 3"
    """
    if not isinstance(expression, str):
        raise CalculatorError("the expression must be text")
    if len(expression) > MAX_CHARS:
        raise CalculatorError(f"expression longer than {MAX_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise CalculatorError(f"not an arithmetic expression: {expression!r}") from None
    return _format(_value(tree.body))


def _value(node: ast.AST) -> int | float:
    if (isinstance(node, ast.Constant) and isinstance(node.value, int | float)
            and not isinstance(node.value, bool)):
        return _bounded(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _value(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        if isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod) and right == 0:
            raise CalculatorError("division by zero")
        try:
            result = _BINARY[type(node.op)](left, right)
        except (OverflowError, ZeroDivisionError) as exc:
            raise CalculatorError(str(exc)) from None
        if isinstance(result, complex):
            raise CalculatorError("the result is not a real number")
        return _bounded(result)
    raise CalculatorError(f"only numbers and + - * / // % ** ( ) are allowed, not "
                          f"{type(node).__name__}")


def _check_power(base: float, exponent: float) -> None:
    if abs(exponent) > MAX_EXPONENT:
        raise CalculatorError(f"exponent {exponent} is above {MAX_EXPONENT}")
    if base not in (0, 1, -1) and exponent > 0 and (
            exponent * math.log10(abs(base)) > math.log10(MAX_MAGNITUDE)):
        raise CalculatorError("the result is too large")


def _bounded(value: int | float) -> int | float:
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("the result is not a finite number")
    if abs(value) > MAX_MAGNITUDE:
        raise CalculatorError("the result is too large")
    return value


def _format(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


class CalculatorEnvironment(Environment[EnvironmentConfig]):
    """Questions answered with the calculator tool: a reply with a tool call gets its result,
    a reply without one is the final answer (the recipe's reward scores it)."""

    name = "calculator"

    def tools(self) -> list[Callable[..., Any]]:
        return [calculator]

    def step(self, state: Any, reply: str) -> EnvStep:
        return EnvStep(done=True)
