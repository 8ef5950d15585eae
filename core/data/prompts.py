"""Prompt sets for alignment and evaluation: a built-in set, a .txt file (one prompt a line),
or any prompt source the data stage reads, with each row's other fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhfx.data.sets import read_prompt_records
from rlhfx.errors import UserError


def read_prompt_set(source: str, skip_bad_rows: bool = False) -> list[str]:
    """Prompts for any algorithm: a built-in set, a .txt file (one prompt a line), or anything
    the data stage reads (JSONL/JSON/parquet, LMFlow layouts, a hub dataset). A row that is not
    JSON or has no prompt stops with file:line unless `skip_bad_rows` (then counted)."""
    return [row["prompt"] for row in read_prompt_rows(source, skip_bad_rows)]


def read_prompt_rows(source: str, skip_bad_rows: bool = False) -> list[dict[str, Any]]:
    """`read_prompt_set` with each row's other fields: `{"prompt": ..., "answer": ...}` (a
    built-in set or a .txt file has none). The loop hands the fields to reward sources that
    ask for them (a reference answer for `answer_match`)."""
    from rlhfx import tiny

    if tiny.is_builtin(source):
        source = str(tiny.prompt_set_path(source))
    path = Path(source)
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise UserError(f"{source}: prompt file does not exist")
        prompts = [line for line in _read_utf8(path).splitlines() if line.strip()]
        if not prompts:
            raise UserError(f"{source}: no prompts in this file")
        return [{"prompt": p} for p in prompts]
    return read_prompt_records(source, skip_bad_rows=skip_bad_rows)


def split_fields(rows: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """(prompts, the other fields of each row), aligned."""
    return ([row["prompt"] for row in rows],
            [{k: v for k, v in row.items() if k != "prompt"} for row in rows])


def _read_utf8(path: Path) -> str:
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")  # a BOM, as Windows editors write
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{path}: line {line}: not UTF-8 text (byte {data[exc.start]:#04x}); save the "
            "prompt file as UTF-8"
        ) from None
