"""The prepared sets on disk: writing them (JSONL, and LMFlow's json layouts) and reading them.

The data stage writes JSONL: `{"text"}` for SFT, `{"chosen", "rejected"}` for the reward model,
`{"prompt"}` for prompts. The readers here also take LMFlow's layouts
(`{"type": "text_only", "instances": [{"text"}]}`, `{"instances": [{"positive", "negative"}]}`)
and hub datasets with those columns, so users can bring data prepared elsewhere.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhfx import UserError
from rlhfx.io import atomic_write_json

from .readers import iter_rows

log = logging.getLogger("rlhfx")

TEXT_KEYS = ("text",)
PROMPT_KEYS = ("prompt", "text")
PAIR_KEYS = (("chosen", "rejected"), ("positive", "negative"))


def write_lmflow_text(path: str | Path, texts: Sequence[str]) -> None:
    atomic_write_json(path, {"type": "text_only", "instances": [{"text": t} for t in texts]})


def write_lmflow_pairs(path: str | Path, pairs: Sequence[tuple[str, str]]) -> None:
    atomic_write_json(
        path, {"instances": [{"positive": p, "negative": n} for p, n in pairs]}
    )


def _first_str(record: dict[str, Any], keys: Sequence[str]) -> str | None:
    for key in keys:
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _finish(source: str, what: str, n_ok: int, skipped: Counter, examples: list[str]) -> None:
    if skipped:
        log.warning(
            "%s: skipped %d unusable rows (%s); first: %s", source, sum(skipped.values()),
            ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())), examples[0],
        )
    if n_ok == 0:
        detail = f"; first problem: {examples[0]}" if examples else ""
        raise UserError(f"{source}: no usable {what} rows{detail}")


def read_texts(source: str, split: str = "train") -> list[str]:
    """SFT texts: `text` of each row (our sft.jsonl, LMFlow text_only, a hub dataset)."""
    return _read_single(source, split, TEXT_KEYS, "text")


def read_prompts(source: str, split: str = "train") -> list[str]:
    """Prompts: `prompt` (or `text`) of each row."""
    return _read_single(source, split, PROMPT_KEYS, "prompt")


def read_prompt_records(source: str, split: str = "train") -> list[dict[str, Any]]:
    """Prompts with the other fields of their rows: `{"prompt": ..., "answer": ...}`.

    For reward sources that check a response against something the prompt file carries (a
    reference answer); the prompt is taken as `read_prompts` takes it (`prompt`, else `text`)
    and every other field comes along under its own name.
    """
    out: list[dict[str, Any]] = []
    skipped: Counter = Counter()
    examples: list[str] = []
    for row in iter_rows(source, split):
        if row.error is not None:
            skipped[row.error.reason] += 1
            examples.append(f"{source}: {row.where}: {row.error.detail}")
            continue
        assert row.record is not None
        key = next((k for k in PROMPT_KEYS if _first_str(row.record, (k,)) is not None), None)
        if key is None:
            skipped["missing_field"] += 1
            fields = ", ".join(row.record) or "none"
            examples.append(f"{source}: {row.where}: no non-empty {' or '.join(PROMPT_KEYS)} "
                            f"(fields: {fields})")
            continue
        extra = {k: v for k, v in row.record.items() if k != key and k != "prompt"}
        out.append({"prompt": row.record[key], **extra})
    _finish(source, "prompt", len(out), skipped, examples)
    return out


def _read_single(source: str, split: str, keys: Sequence[str], what: str) -> list[str]:
    out: list[str] = []
    skipped: Counter = Counter()
    examples: list[str] = []
    for row in iter_rows(source, split):
        if row.error is not None:
            skipped[row.error.reason] += 1
            examples.append(f"{source}: {row.where}: {row.error.detail}")
            continue
        assert row.record is not None
        value = _first_str(row.record, keys)
        if value is None:
            skipped["missing_field"] += 1
            fields = ", ".join(row.record) or "none"
            examples.append(f"{source}: {row.where}: no non-empty {' or '.join(keys)} "
                            f"(fields: {fields})")
            continue
        out.append(value)
    _finish(source, what, len(out), skipped, examples)
    return out


def read_pairs(source: str, split: str = "train") -> list[tuple[str, str]]:
    """Preference pairs: (`chosen`, `rejected`) or LMFlow's (`positive`, `negative`)."""
    out: list[tuple[str, str]] = []
    skipped: Counter = Counter()
    examples: list[str] = []
    for row in iter_rows(source, split):
        if row.error is not None:
            skipped[row.error.reason] += 1
            examples.append(f"{source}: {row.where}: {row.error.detail}")
            continue
        assert row.record is not None
        pair = None
        for good, bad in PAIR_KEYS:
            g, b = _first_str(row.record, (good,)), _first_str(row.record, (bad,))
            if g is not None and b is not None:
                pair = (g, b)
                break
        if pair is None:
            skipped["missing_field"] += 1
            fields = ", ".join(row.record) or "none"
            examples.append(f"{source}: {row.where}: needs chosen/rejected or positive/negative "
                            f"strings (fields: {fields})")
            continue
        if pair[0] == pair[1]:
            skipped["identical_pair"] += 1
            examples.append(f"{source}: {row.where}: chosen and rejected are the same text")
            continue
        out.append(pair)
    _finish(source, "preference-pair", len(out), skipped, examples)
    return out
