"""The prepared sets on disk: writing them (JSONL, and LMFlow's json layouts) and reading them.

The data stage writes JSONL: `{"text"}` (or `{"prompt", "completion"}`) for SFT,
`{"chosen", "rejected"}` for the reward model, `{"prompt"}` for prompts. The readers here also
take LMFlow's layouts
(`{"type": "text_only", "instances": [{"text"}]}`, `{"instances": [{"positive", "negative"}]}`)
and hub datasets with those columns, so users can bring data prepared elsewhere.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rlhfx import UserError
from rlhfx.data.readers import iter_rows
from rlhfx.files import atomic_write_json

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


#: Row problems that mean the file is not what it should be: they stop reading (with the
#: file and line) unless the caller asks to skip bad rows. Other drops are content filters.
STRUCTURAL = frozenset({"bad_utf8", "bad_json", "missing_field", "wrong_type"})
SKIP_HINT = "set skip_bad_rows = true to drop such rows"


def bad_row(message: str) -> UserError:
    """The error that stops reading at a structurally bad row."""
    return UserError(f"{message} ({SKIP_HINT})")


def _finish(source: str, what: str, n_ok: int, skipped: Counter, examples: list[str]) -> None:
    if skipped:
        log.warning(
            "%s: skipped %d unusable rows (%s); first: %s", source, sum(skipped.values()),
            ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())), examples[0],
        )
    if n_ok == 0:
        detail = f"; first problem: {examples[0]}" if examples else ""
        raise UserError(f"{source}: no usable {what} rows{detail}")


class _Skips:
    """Counts dropped rows; a structural problem raises unless `skip_bad_rows`."""

    def __init__(self, skip_bad_rows: bool):
        self.skip_bad_rows = skip_bad_rows
        self.counts: Counter = Counter()
        self.examples: list[str] = []

    def drop(self, reason: str, message: str) -> None:
        if reason in STRUCTURAL and not self.skip_bad_rows:
            raise bad_row(message)
        self.counts[reason] += 1
        self.examples.append(message)

    def records(self, source: str, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(where, record) of each row that reads as a record; the others are dropped."""
        for row in iter_rows(source, split):
            if row.error is not None:
                self.drop(row.error.reason, f"{source}: {row.where}: {row.error.detail}")
                continue
            assert row.record is not None
            yield row.where, row.record


def read_texts(source: str, split: str = "train", skip_bad_rows: bool = False) -> list[str]:
    """SFT texts: `text` of each row (our sft.jsonl, LMFlow text_only, a hub dataset)."""
    return _read_single(source, split, TEXT_KEYS, "text", skip_bad_rows)


def has_completions(source: str, split: str = "train") -> bool:
    """Whether a set is in TRL's prompt-completion layout (its first row has both fields)."""
    for row in iter_rows(source, split):
        if row.record is not None:
            return "prompt" in row.record and "completion" in row.record
    return False


def read_prompt_completions(source: str, split: str = "train",
                            skip_bad_rows: bool = False) -> list[tuple[str, str]]:
    """(`prompt`, `completion`) of each row: SFT that trains on the completion only."""
    out: list[tuple[str, str]] = []
    skips = _Skips(skip_bad_rows)
    for where, record in skips.records(source, split):
        problem = _missing(record, ("prompt",)) or _missing(record, ("completion",))
        if problem is not None:
            fields = ", ".join(record) or "none"
            skips.drop(problem, f"{source}: {where}: needs prompt and completion strings "
                                f"(fields: {fields})")
        elif not record["completion"].strip():
            skips.drop("empty", f"{source}: {where}: empty completion")
        else:
            out.append((record["prompt"], record["completion"]))
    _finish(source, "prompt-completion", len(out), skips.counts, skips.examples)
    return out


def read_column(source: str, column: str, split: str = "train",
                skip_bad_rows: bool = False) -> list[str]:
    """The string in `column` of each row (an SFT stage's `text_field`)."""
    return _read_single(source, split, (column,), column, skip_bad_rows)


def read_prompts(source: str, split: str = "train", skip_bad_rows: bool = False) -> list[str]:
    """Prompts: `prompt` (or `text`) of each row."""
    return _read_single(source, split, PROMPT_KEYS, "prompt", skip_bad_rows)


def read_prompt_records(
    source: str, split: str = "train", skip_bad_rows: bool = False
) -> list[dict[str, Any]]:
    """Prompts with the other fields of their rows: `{"prompt": ..., "answer": ...}`.

    For reward sources that check a response against something the prompt file carries (a
    reference answer); the prompt is taken as `read_prompts` takes it (`prompt`, else `text`)
    and every other field comes along under its own name.
    """
    return [
        {"prompt": value, **{k: v for k, v in record.items() if k not in (key, "prompt")}}
        for value, key, record in _read_rows(source, split, PROMPT_KEYS, "prompt",
                                             skip_bad_rows)
    ]


def _missing(record: dict[str, Any], keys: Sequence[str]) -> str | None:
    """`missing_field` or `wrong_type` when no key holds a string; None when one does."""
    present = [k for k in keys if k in record]
    if not present:
        return "missing_field"
    if not any(isinstance(record[k], str) for k in present):
        return "wrong_type"
    return None


def _read_single(
    source: str, split: str, keys: Sequence[str], what: str, skip_bad_rows: bool = False
) -> list[str]:
    return [value for value, _, _ in _read_rows(source, split, keys, what, skip_bad_rows)]


def _read_rows(
    source: str, split: str, keys: Sequence[str], what: str, skip_bad_rows: bool = False
) -> list[tuple[str, str, dict[str, Any]]]:
    """(value, the key it came from, the whole row) of each usable row."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    skips = _Skips(skip_bad_rows)
    for where, record in skips.records(source, split):
        value = _first_str(record, keys)
        if value is None:
            fields = ", ".join(record) or "none"
            problem = _missing(record, keys)
            if problem is None:
                skips.drop("empty", f"{source}: {where}: empty {' or '.join(keys)}")
            elif problem == "wrong_type":
                key = next(k for k in keys if k in record)
                kind = type(record[key]).__name__
                skips.drop(problem, f"{source}: {where}: '{key}' is {kind}, not a string")
            else:
                skips.drop(problem, f"{source}: {where}: no {' or '.join(keys)} field "
                                    f"(fields: {fields})")
            continue
        key = next(k for k in keys if _first_str(record, (k,)) is not None)
        out.append((value, key, record))
    _finish(source, what, len(out), skips.counts, skips.examples)
    return out


def read_pairs(
    source: str, split: str = "train", skip_bad_rows: bool = False
) -> list[tuple[str, str]]:
    """Preference pairs: (`chosen`, `rejected`) or LMFlow's (`positive`, `negative`)."""
    out: list[tuple[str, str]] = []
    skips = _Skips(skip_bad_rows)
    for where, record in skips.records(source, split):
        pair = None
        problem: str | None = "missing_field"
        for good, bad in PAIR_KEYS:
            if good not in record and bad not in record:
                continue
            g, b = _first_str(record, (good,)), _first_str(record, (bad,))
            if g is not None and b is not None:
                pair = (g, b)
                break
            problem = _missing(record, (good,)) or _missing(record, (bad,)) or "empty"
        if pair is None:
            fields = ", ".join(record) or "none"
            detail = ("an empty chosen or rejected text" if problem == "empty" else
                      "needs chosen/rejected or positive/negative strings")
            skips.drop(problem or "missing_field",
                       f"{source}: {where}: {detail} (fields: {fields})")
            continue
        if pair[0] == pair[1]:
            skips.drop("identical_pair", f"{source}: {where}: chosen and rejected are the "
                                         "same text")
            continue
        out.append(pair)
    _finish(source, "preference-pair", len(out), skips.counts, skips.examples)
    return out
