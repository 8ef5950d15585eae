"""`--set a.b.c=VALUE` on the command line: recipe settings without editing the file.

Values are TOML (`32`, `1e-5`, `true`, `"text"`, `[1, 2]`, `{ name = "raft" }`); a bare word
such as `cpu` or `@sft.model` is taken as a string. The settings are applied to the parsed
recipe before it is validated, so a typo gives the same error as one in the file.
"""

from __future__ import annotations

import copy
import re
import tomllib
from typing import Any

from rlhfx.errors import UserError

#: A value that is not TOML but plainly a word: taken as a string (`run.device=cpu`).
_BARE_WORD = re.compile(r"^[A-Za-z_@./~][\w.:/@+~-]*$")
_KEY_PART = re.compile(r"^[A-Za-z0-9_-]+$")


def parse_setting(text: str) -> tuple[str, Any]:
    """`a.b.c=VALUE` -> ("a.b.c", value); a malformed one is a UserError naming it."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set {text}: expected KEY=VALUE, e.g. run.seed=3")
    if not all(_KEY_PART.match(part) for part in key.split(".")):
        raise UserError(f"--set {text}: '{key}' is not a dotted key such as stages.sft.epochs")
    raw = raw.strip()
    try:
        return key, tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError as exc:
        if _BARE_WORD.match(raw):
            return key, raw
        reason = str(exc).split(" (at line")[0]
        raise UserError(f"--set {text}: the value is not TOML ({reason}); quote text: "
                        f"{key}='\"...\"'") from None


def parse_settings(texts: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Every `--set`, in order; a key given twice keeps its last value."""
    settings: dict[str, Any] = {}
    for text in texts:
        key, value = parse_setting(text)
        settings.pop(key, None)
        settings[key] = value
    return settings


def apply_settings(data: dict[str, Any], settings: dict[str, Any], file: str) -> dict[str, Any]:
    """A copy of the recipe's tables with each setting put at its key (tables made as needed)."""
    out = copy.deepcopy(data)
    for key, value in settings.items():
        parts = key.split(".")
        table = out
        for depth, part in enumerate(parts[:-1]):
            nxt = table.setdefault(part, {})
            if not isinstance(nxt, dict):
                where = ".".join(parts[: depth + 1])
                raise UserError(f"{file}: {where}: is {nxt!r}, not a table, so --set {key} "
                                "cannot go inside it")
            table = nxt
        table[parts[-1]] = value
    return out


def render(value: Any) -> str:
    """A setting's value as the TOML one would write after `=`."""
    import tomli_w

    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def changed_settings(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two sets of `--set` values, one line per key."""
    lines = []
    for key in dict.fromkeys([*before, *now]):
        if key not in now:
            lines.append(f"{key} = {render(before[key])} before, not set now")
        elif key not in before:
            lines.append(f"{key} = {render(now[key])} now, not set before")
        elif before[key] != now[key]:
            lines.append(f"{key}: {render(before[key])} before, {render(now[key])} now")
    return lines


def with_settings_text(file: str, data: dict[str, Any], settings: dict[str, Any]) -> str:
    """The recipe as TOML with the settings in it, headed by a comment naming them."""
    import tomli_w

    head = [f"# {file} with these settings from the command line:"]
    head += [f"#   --set {key}={render(value)}" for key, value in settings.items()]
    return "\n".join(head) + "\n\n" + tomli_w.dumps(data)
