"""Tools a policy may call in an episode: plain Python functions, stateless.

A tool's type hints and docstring are its schema (transformers' `get_json_schema`, which chat
templates with tool support render for the model). A reply calls a tool by carrying
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (the Hermes/Qwen layout that many
chat templates teach). Whatever a tool does wrong (raises, runs past its time limit, returns
something that is not text or JSON) becomes an error message the model reads: a tool is model
output run as code, and it never stops a run.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
#: Longest tool result shown to the model, in characters (longer ones are cut).
MAX_RESULT_CHARS = 2000


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass
class ToolResult:
    """What the model reads back, and how the call went."""

    text: str
    #: "ok", "malformed" (the call could not be read), "unknown" (no such tool), "error"
    #: (the tool raised or was given wrong arguments), "timeout", "garbage" (the result is
    #: neither text nor JSON)
    status: str = "ok"


class MalformedCall(ValueError):
    """A `<tool_call>` block whose content is not a call."""


def parse_tool_call(reply: str) -> ToolCall | None:
    """The first tool call in `reply`, None when it has none; `MalformedCall` when the block
    is there but is not `{"name": str, "arguments": object}` JSON."""
    match = TOOL_CALL.search(reply)
    if match is None:
        return None
    try:
        data = json.loads(match.group(1).strip())
    except json.JSONDecodeError as exc:
        raise MalformedCall(f"not JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise MalformedCall('expected {"name": "...", "arguments": {...}}')
    arguments = data.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except ValueError:
            raise MalformedCall("arguments are not a JSON object") from None
    if not isinstance(arguments, dict):
        raise MalformedCall("arguments are not a JSON object")
    return ToolCall(data["name"], arguments)


def format_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """A tool call as a reply writes it (demonstrations use this)."""
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def tool_schemas(tools: Sequence[Callable[..., Any]]) -> list[dict[str, Any]]:
    """The JSON schema of each tool, from its type hints and docstring."""
    from transformers.utils import get_json_schema

    return [get_json_schema(fn) for fn in tools]


def call_tool(
    tools: Sequence[Callable[..., Any]], call: ToolCall, timeout: float
) -> ToolResult:
    """Run `call` against `tools` within `timeout` seconds; every fault is a `ToolResult`.

    The tool runs in a daemon thread: one that overruns is left behind (a thread cannot be
    stopped), its answer ignored; tools should bound their own work (the calculator does).
    """
    by_name = {fn.__name__: fn for fn in tools}
    fn = by_name.get(call.name)
    if fn is None:
        known = ", ".join(sorted(by_name)) or "none"
        return ToolResult(f"error: no tool named {call.name!r} (tools: {known})", "unknown")
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(**call.arguments)
        except BaseException as exc:  # the model's call, not our fault: report it to the model
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"tool-{call.name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return ToolResult(f"error: {call.name} took longer than {timeout:g} s", "timeout")
    if "error" in box:
        exc = box["error"]
        detail = str(exc).splitlines()[0] if str(exc) else ""
        return ToolResult(f"error: {type(exc).__name__}: {detail}".rstrip(": "), "error")
    return _as_text(call.name, box.get("value"))


def _as_text(name: str, value: Any) -> ToolResult:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool | int | float | list | dict) or value is None:
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            return ToolResult(f"error: {name} returned a value that is not JSON", "garbage")
    else:
        return ToolResult(f"error: {name} returned {type(value).__name__}, not text", "garbage")
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + " [cut]"
    return ToolResult(text)
