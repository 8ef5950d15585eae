"""Reading prompt sets: JSONL / JSON files, plain text, or a built-in set (`builtin:...`).

Accepted records: `{"prompt": ...}` (what the data stage writes), `{"text": ...}`, or LMFlow's
`{"type": "text_only", "instances": [{"text": ...}]}`. A bad row names the file and row number.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlhfx.errors import UserError
from rlhfx.tiny import is_builtin, prompt_set_path

FIELDS = ("prompt", "text")


def load_prompts(source: str) -> list[str]:
    """All prompts of a file (or built-in set), in file order."""
    path = prompt_set_path(source) if is_builtin(source) else Path(source)
    if not path.exists():
        raise UserError(f"{source}: prompt file does not exist")
    if path.is_dir():
        raise UserError(f"{source}: is a directory; expected a .jsonl, .json or .txt prompt file")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        prompts = [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines()]
        prompts = [p for p in prompts if p.strip()]
    elif suffix == ".json":
        prompts = _from_json(path)
    else:
        prompts = _from_jsonl(path)
    if not prompts:
        raise UserError(f"{path}: no prompts in this file")
    return prompts


def _prompt_of(record: Any, where: str) -> str:
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        for key in FIELDS:
            value = record.get(key)
            if isinstance(value, str) and value.strip():
                return value
    raise UserError(f"{where}: expected an object with a non-empty 'prompt' or 'text' string")


def _from_jsonl(path: Path) -> list[str]:
    out = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}: row {number}: invalid JSON ({exc.msg})") from None
            out.append(_prompt_of(record, f"{path}: row {number}"))
    return out


def _from_json(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict) and isinstance(data.get("instances"), list):
        data = data["instances"]  # LMFlow's dataset layout
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a list of prompts or LMFlow's {{'instances': [...]}}")
    return [_prompt_of(r, f"{path}: instances[{i}]") for i, r in enumerate(data)]
