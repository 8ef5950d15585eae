"""Tools: the calculator's arithmetic and caps, tool-call parsing, and every way a tool can fail
turning into an error message instead of a crash."""

from __future__ import annotations

import time

import pytest

from rlhfx.plugins.environments.calculator import CalculatorError, calculator
from rlhfx.tools import (
    MalformedCall,
    ToolCall,
    call_tool,
    format_tool_call,
    parse_tool_call,
    tool_schemas,
)


@pytest.mark.parametrize(("expression", "expected"), [
    ("1234 + 5678", "6912"),
    ("(12 + 3) * 4", "60"),
    ("7 / 2", "3.5"),
    ("7 // 2", "3"),
    ("-7 % 3", "2"),
    ("2 ** 10", "1024"),
    ("-(3 - 5)", "2"),
    ("+4", "4"),
    ("1.5 * 4", "6"),
    ("10 / 3", "3.333333333"),
])
def test_calculator_does_arithmetic(expression, expected):
    assert calculator(expression) == expected


@pytest.mark.parametrize(("expression", "message"), [
    ("__import__('os').system('true')", "only numbers"),
    ("x + 1", "only numbers"),
    ("abs(-1)", "only numbers"),
    ("1 if 1 else 2", "only numbers"),
    ("True + 1", "only numbers"),
    ("1 / 0", "division by zero"),
    ("5 % 0", "division by zero"),
    ("2 ** 1000", "exponent"),
    ("10 ** 40", "too large"),
    ("(10 ** 20) * (10 ** 20)", "too large"),
    ("1e308 * 10", "too large"),
    ("(-8) ** 0.5", "not a real number"),
    ("1 +", "not an arithmetic expression"),
    ("1" * 300, "longer than"),
])
def test_calculator_refuses_what_is_not_bounded_arithmetic(expression, message):
    with pytest.raises(CalculatorError, match=message):
        calculator(expression)


def test_a_tower_of_powers_fails_at_once():
    started = time.perf_counter()
    with pytest.raises(CalculatorError):
        calculator("9**9**9")
    with pytest.raises(CalculatorError):
        calculator("99**99")
    assert time.perf_counter() - started < 0.5


def test_the_schema_comes_from_signature_and_docstring():
    (schema,) = tool_schemas([calculator])
    function = schema["function"]
    assert function["name"] == "calculator"
    assert function["parameters"]["required"] == ["expression"]
    assert function["parameters"]["properties"]["expression"]["type"] == "string"
    assert "arithmetic" in function["description"]


def test_tool_calls_are_parsed_from_the_reply():
    reply = 'Let me compute. ' + format_tool_call("calculator", {"expression": "2+2"})
    assert parse_tool_call(reply) == ToolCall("calculator", {"expression": "2+2"})
    assert parse_tool_call("The answer is 4.") is None
    as_string = '<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>'
    assert parse_tool_call(as_string) == ToolCall("f", {"a": 1})
    for bad in ("<tool_call>{name: f}</tool_call>", '<tool_call>["f"]</tool_call>',
                '<tool_call>{"name": "f", "arguments": [1]}</tool_call>'):
        with pytest.raises(MalformedCall):
            parse_tool_call(bad)


def raises(x: int) -> str:
    """Always fails.

    Args:
        x: ignored
    """
    raise RuntimeError("broken tool\nsecond line")


def sleeps(seconds: float) -> str:
    """Sleeps.

    Args:
        seconds: how long
    """
    time.sleep(seconds)
    return "woke"


def garbage() -> object:
    """Returns an object that is not text."""
    return object()


def test_each_tool_fault_is_a_message_with_its_status():
    tools = [calculator, raises, sleeps, garbage]
    ok = call_tool(tools, ToolCall("calculator", {"expression": "6*7"}), timeout=1)
    assert (ok.text, ok.status) == ("42", "ok")
    error = call_tool(tools, ToolCall("raises", {"x": 1}), timeout=1)
    assert error.status == "error" and error.text == "error: RuntimeError: broken tool"
    wrong_args = call_tool(tools, ToolCall("calculator", {"expr": "1"}), timeout=1)
    assert wrong_args.status == "error" and "TypeError" in wrong_args.text
    refused = call_tool(tools, ToolCall("calculator", {"expression": "9**9**9"}), timeout=1)
    assert refused.status == "error" and "CalculatorError" in refused.text
    unknown = call_tool(tools, ToolCall("search", {}), timeout=1)
    assert unknown.status == "unknown" and "calculator" in unknown.text
    started = time.perf_counter()
    slow = call_tool(tools, ToolCall("sleeps", {"seconds": 5}), timeout=0.2)
    assert slow.status == "timeout" and time.perf_counter() - started < 2
    junk = call_tool(tools, ToolCall("garbage", {}), timeout=1)
    assert junk.status == "garbage" and "not text" in junk.text
