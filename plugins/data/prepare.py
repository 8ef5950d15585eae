"""Preference data -> the SFT, reward-model, prompt and eval-prompt sets, with counts.

Shared by the `data` stage and `rlhfx data prepare`. A row that is not JSON, not UTF-8 or
lacks a required field stops the stage with its file and line, unless `skip_bad_rows`; then,
like the content filters (empty answer, identical pair, ...), it is counted by reason and the
first few are kept with their file and row. A source with no usable row is a `UserError`.
Prompts over the length limit leave the prompt sets only (the SFT and RM sets keep the row,
as in the seed pipeline, where long prompts were dropped to keep PPO in memory).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfx import UserError
from rlhfx.data.preference import BadRow, Example, PreferenceFormat, Turn
from rlhfx.data.readers import iter_rows
from rlhfx.data.sets import STRUCTURAL, bad_row, write_lmflow_pairs, write_lmflow_text
from rlhfx.faults import call_plugin
from rlhfx.files import atomic_write_json, write_jsonl

from .config import DataConfig
from .dialogue import (
    HH_ASSISTANT,
    HH_HUMAN,
    ChatTemplateStyle,
    MarkerStyle,
    prompt_turns,
    require_str,
)
from .formats import BUILTIN_FORMATS

log = logging.getLogger("rlhfx")

#: eval_rm: the held-out pairs (rows in no training set), for a reward model's validation.
OUTPUTS = ("sft", "rm", "prompts", "eval_prompts", "eval_rm")
#: rm_judge: pairs kept out of `rm` for an independent judge (written with `judge_fraction`).
JUDGE_OUTPUT = "rm_judge"
EXAMPLES_PER_REASON = 3


@dataclass
class SourceCounts:
    """What reading one source gave: rows read, kept, and dropped by reason (with examples)."""

    source: str
    format: str = ""
    rows: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    #: count structural problems (not JSON, missing field, ...) instead of stopping
    skip_bad_rows: bool = False

    def drop(self, reason: str, message: str) -> None:
        if reason in STRUCTURAL and not self.skip_bad_rows:
            raise bad_row(message)
        self.dropped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < EXAMPLES_PER_REASON:
            shown.append(message)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "format": self.format, "rows": self.rows, "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())), "examples": self.examples,
        }


@dataclass
class PrepareReport:
    train: SourceCounts
    eval: SourceCounts | None
    prompt_length_unit: str  # "tokens" or "words"
    max_prompt_length: int | None = None
    written: dict[str, int] = field(default_factory=dict)
    #: prompts left out of `prompts` / `eval_prompts` for being over the length limit
    prompt_too_long: dict[str, int] = field(default_factory=dict)
    #: rows held out of `source` for eval prompts (0 when an eval source is given)
    held_out: int = 0
    #: what reading `prompts_source` / `eval_prompts_source` gave
    prompt_files: list[SourceCounts] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "train": self.train.as_dict(),
            "eval": self.eval.as_dict() if self.eval else None,
            "held_out_rows": self.held_out,
            "prompt_length_unit": self.prompt_length_unit,
            "max_prompt_length": self.max_prompt_length,
            "prompt_too_long": self.prompt_too_long,
            "written": self.written,
            "prompt_files": [c.as_dict() for c in self.prompt_files],
        }

    def lines(self) -> list[str]:
        """A short human summary: rows kept and dropped by reason, and the sets written."""
        out = []
        for counts in (self.train, self.eval, *self.prompt_files):
            if counts is None:
                continue
            dropped = ", ".join(f"{k} {v}" for k, v in sorted(counts.dropped.items()))
            out.append(
                f"{counts.source} ({counts.format}): {counts.rows} rows read, {counts.kept} kept"
                + (f", dropped: {dropped}" if dropped else "")
            )
            for reason, shown in sorted(counts.examples.items()):
                out.extend(f"  {reason}: {m}" for m in shown[:1])
        if any(self.prompt_too_long.values()):
            out.append(
                f"prompt sets: dropped prompt_too_long "
                f"{self.prompt_too_long.get('prompts', 0)} (train), "
                f"{self.prompt_too_long.get('eval_prompts', 0)} (eval): over "
                f"{self.max_prompt_length} {self.prompt_length_unit}"
            )
        out.append(
            "written: " + ", ".join(f"{k} {v}" for k, v in self.written.items())
            + (f" (eval rows held out of the source: {self.held_out})" if self.held_out else "")
        )
        return out


# ------------------------------------------------------------------------------ reading


def build_format(config: DataConfig, plugins: Any, where: str = "") -> PreferenceFormat | None:
    """The recipe's format, or None for detection from the first record."""
    ref = config.format
    if ref is None:
        return None
    if not ref.resolved:  # built outside a recipe (the CLI): bind it here
        entry = plugins.get("data_format", ref.name)
        ref.bind(entry, entry.cls.Config.model_validate(ref.options))
    fmt = call_plugin(ref.component_class, f"{where}.format" if where else "", ref.build)
    if not isinstance(fmt, PreferenceFormat):
        raise UserError(f"data format '{ref.name}' cannot be read by the data stage (no parse)")
    return fmt


def _candidates(plugins: Any, where: str = "") -> list[PreferenceFormat]:
    """Formats to sniff with: the built-ins first (in a fixed order), then plugins' ones."""
    builtin = [cls() for cls in BUILTIN_FORMATS]
    names = {f.name for f in builtin}
    others = []
    if plugins is not None:
        for name in plugins.names("data_format"):
            cls = plugins.get("data_format", name).cls
            if name not in names and issubclass(cls, PreferenceFormat):
                others.append(call_plugin(cls, _format_key(where), cls))
    return builtin + others


def _format_key(where: str) -> str:
    return f"{where}.format" if where else ""


def _parse(fmt: PreferenceFormat, record: dict[str, Any]) -> Example | BadRow:
    """`fmt.parse(record)`, a BadRow returned (it is the format's verdict, not a fault)."""
    try:
        return fmt.parse(record)
    except BadRow as bad:
        return bad


def read_examples(
    source: str,
    split: str,
    fmt: PreferenceFormat | None,
    plugins: Any,
    max_rows: int | None = None,
    tick: Callable[[], None] | None = None,
    skip_bad_rows: bool = False,
    where: str = "",
) -> tuple[list[Example], SourceCounts]:
    """Parse every row of a source; count the dropped ones (or stop at a broken one).

    `where` is the recipe key of the data stage (`recipe.toml: stages.data`), for faults of a
    plugin's format."""
    counts = SourceCounts(source=source, skip_bad_rows=skip_bad_rows)
    examples: list[Example] = []
    candidates = _candidates(plugins, where) if fmt is None else []
    for row in _readable_rows(source, _limited(iter_rows(source, split), max_rows), counts, tick):
        assert row.record is not None
        if fmt is None:
            fmt = _sniff(source, row.where, row.record, candidates, where)
        parsed = call_plugin(fmt, _format_key(where), _parse, fmt, row.record)
        if isinstance(parsed, BadRow):
            counts.drop(parsed.reason, f"{source}: {row.where}: {parsed.detail}")
        elif isinstance(parsed, Example):
            examples.append(parsed)
        else:
            raise UserError(
                f"{_format_key(where) + ': ' if where else ''}data format '{fmt.name}' returned "
                f"{type(parsed).__name__} for {source}: {row.where}, not an Example"
            )
    counts.format = fmt.name if fmt is not None else "?"
    _check_kept(counts, len(examples), "rows")
    return examples, counts


def read_prompt_rows(
    source: str, split: str, config: DataConfig, tick: Callable[[], None] | None = None
) -> tuple[list[list[Turn]], SourceCounts]:
    """The dialogues of a prompt-only file (`prompts_source`): each row's `prompt`."""
    counts = SourceCounts(source=source, format="prompts", skip_bad_rows=config.skip_bad_rows)
    markers = [(config.human_marker, config.assistant_marker), (HH_HUMAN, HH_ASSISTANT)]
    found: list[list[Turn]] = []
    for row in _readable_rows(source, iter_rows(source, split), counts, tick):
        assert row.record is not None
        try:
            text = require_str(row.record, "prompt")
            if not text.strip():
                raise BadRow("empty_prompt", "'prompt' is empty")
            found.append(prompt_turns(text, markers))
        except BadRow as bad:
            counts.drop(bad.reason, f"{source}: {row.where}: {bad.detail}")
    _check_kept(counts, len(found), "prompt rows")
    return found, counts


def _readable_rows(
    source: str, rows: Iterator[Any], counts: SourceCounts, tick: Callable[[], None] | None
) -> Iterator[Any]:
    """The rows that are records (JSON objects); the others are counted as dropped."""
    for row in rows:
        counts.rows += 1
        if tick is not None:
            tick()
        if row.error is not None:
            counts.drop(row.error.reason, f"{source}: {row.where}: {row.error.detail}")
            continue
        yield row


def _check_kept(counts: SourceCounts, kept: int, what: str) -> None:
    """Record how many rows were kept; none is an error that says why rows were dropped."""
    counts.kept = kept
    if kept:
        return
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(counts.dropped.items())) or "no rows"
    first = next(iter(counts.examples.values()), [""])[0]
    raise UserError(
        f"{counts.source}: no usable {what} ({counts.rows} read; dropped: {reasons})"
        + (f"\nfirst problem: {first}" if first else "")
    )


def _limited(rows: Iterator[Any], limit: int | None) -> Iterator[Any]:
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            return
        yield row


def _sniff(
    source: str, row_where: str, record: dict[str, Any], candidates: list[PreferenceFormat],
    where: str = "",
):
    for candidate in candidates:
        if call_plugin(candidate, _format_key(where), candidate.sniff, record):
            return candidate
    names = ", ".join(c.name for c in candidates)
    fields = ", ".join(list(record)[:8]) or "none"
    raise UserError(
        f"{source}: {row_where}: matches no known data format (fields: {fields}); "
        f"set format = one of: {names}"
    )


# ------------------------------------------------------------------------------ preparing


def _style(config: DataConfig, tokenizer: Any) -> Any:
    if config.template == "chat":
        if tokenizer is None:
            raise UserError("data: template = 'chat' needs `tokenizer` (the policy's)")
        return ChatTemplateStyle(tokenizer, config.system_prompt)
    return MarkerStyle(config.human_marker, config.assistant_marker, config.turn_separator)


def _pairs(style: Any, examples: list[Example]) -> list[dict[str, str]]:
    return [
        {"chosen": style.scored(ex.chosen), "rejected": style.scored(ex.rejected)}
        for ex in examples
        if ex.rejected is not None
    ]


def _lengths(texts: list[str], tokenizer: Any) -> list[int]:
    if tokenizer is None:
        return [len(t.split()) for t in texts]
    lengths: list[int] = []
    for start in range(0, len(texts), 1024):
        enc = tokenizer(texts[start : start + 1024], add_special_tokens=False)
        lengths.extend(len(ids) for ids in enc["input_ids"])
    return lengths


def _short_prompts(
    prompts: list[str], tokenizer: Any, limit: int | None
) -> tuple[list[str], int]:
    if limit is None:
        return prompts, 0
    kept = [p for p, n in zip(prompts, _lengths(prompts, tokenizer), strict=True) if n <= limit]
    return kept, len(prompts) - len(kept)


def split_for_judge(
    pairs: list[dict[str, str]], fraction: float, seed: int, where: str = ""
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(pairs for the training reward model, pairs for the judge), order kept.

    A seeded draw of `round(fraction * n)` of the n distinct pairs goes to the judge; a pair
    that occurs more than once goes wholly to one side, so no pair text is in both."""
    keys = list(dict.fromkeys((p["chosen"], p["rejected"]) for p in pairs))
    n = len(keys)
    count = round(fraction * n)
    if count < 1 or count > n - 1:
        raise UserError(
            f"{where + '.' if where else ''}judge_fraction = {fraction}: of {n} distinct "
            f"training pairs that leaves {n - count} for the reward model and {count} for the "
            "judge; each needs at least one"
        )
    judged = set(random.Random(seed).sample(keys, count))
    return ([p for p in pairs if (p["chosen"], p["rejected"]) not in judged],
            [p for p in pairs if (p["chosen"], p["rejected"]) in judged])


def prepare(
    config: DataConfig,
    out_dir: str | Path,
    seed: int,
    plugins: Any = None,
    tokenizer: Any = None,
    source: str | None = None,
    eval_source: str | None = None,
    progress: Any = None,
    prompts_source: str | None = None,
    eval_prompts_source: str | None = None,
    where: str = "",
) -> tuple[dict[str, str], PrepareReport]:
    """Read, filter, render and write the sets; returns their paths and the counts.

    `source`, `eval_source` and the prompt sources override the config's (the stage passes
    them resolved).
    """
    out_dir = Path(out_dir)
    source = source or config.source
    eval_source = eval_source or config.eval_source
    prompts_source = prompts_source or config.prompts_source
    eval_prompts_source = eval_prompts_source or config.eval_prompts_source
    fmt = build_format(config, plugins, where)

    task = progress.add_task("reading rows", total=config.max_rows) if progress else None
    tick = (lambda: progress.advance(task)) if progress else None
    examples, train_counts = read_examples(
        source, config.split, fmt, plugins, config.max_rows, tick, config.skip_bad_rows, where
    )
    if config.shuffle:
        random.Random(seed).shuffle(examples)

    eval_examples: list[Example] = []
    eval_counts = None
    held_out = 0
    if eval_source:
        if config.eval_size:
            eval_examples, eval_counts = read_examples(
                eval_source, config.eval_split, fmt, plugins, None, tick, config.skip_bad_rows,
                where,
            )
            if config.shuffle:
                random.Random(seed + 1).shuffle(eval_examples)
    else:
        held_out = min(config.eval_size, int(len(examples) * config.eval_max_fraction))
        if held_out:
            examples, eval_examples = examples[:-held_out], examples[-held_out:]

    prompt_files: list[SourceCounts] = []
    train_dialogues = [ex.prompt for ex in examples]
    eval_dialogues = [ex.prompt for ex in eval_examples]
    if prompts_source:
        train_dialogues, counts = read_prompt_rows(prompts_source, config.split, config, tick)
        prompt_files.append(counts)
    if eval_prompts_source:
        eval_dialogues, counts = read_prompt_rows(
            eval_prompts_source, config.eval_split, config, tick
        )
        if config.shuffle:
            random.Random(seed + 2).shuffle(eval_dialogues)
        prompt_files.append(counts)

    style = _style(config, tokenizer)
    sft = [{"text": style.dialogue(ex.chosen)} for ex in examples]
    # Reward-model pairs are written as the reward sources will read them in alignment.
    rm = _pairs(style, examples)
    rm_judge: list[dict[str, str]] | None = None
    if config.judge_fraction is not None:
        rm, rm_judge = split_for_judge(rm, config.judge_fraction, seed + 3, where)
    eval_rm = _pairs(style, eval_examples[: config.eval_size])
    prompts, long_train = _short_prompts(
        [style.prompt(turns) for turns in train_dialogues], tokenizer, config.max_prompt_tokens
    )
    eval_prompts, long_eval = _short_prompts(
        [style.prompt(turns) for turns in eval_dialogues], tokenizer, config.max_prompt_tokens
    )
    eval_prompts = eval_prompts[: config.eval_size]
    unit = "words" if tokenizer is None else "tokens"

    out_dir.mkdir(parents=True, exist_ok=True)
    sets: dict[str, list[dict[str, str]]] = {
        "sft": sft,
        "rm": rm,
        "prompts": [{"prompt": p} for p in prompts],
        "eval_prompts": [{"prompt": p} for p in eval_prompts],
        "eval_rm": eval_rm,
    }
    paths: dict[str, str] = {}
    written: dict[str, int] = {}
    if rm_judge is not None:
        sets[JUDGE_OUTPUT] = rm_judge
    for name in sets:
        path = out_dir / f"{name}.jsonl"
        written[name] = write_jsonl(path, sets[name])
        paths[name] = str(path)
    if config.lmflow_json:
        lm = out_dir / "lmflow"
        write_lmflow_text(lm / "sft.json", [r["text"] for r in sft])
        write_lmflow_pairs(lm / "rm.json", [(r["chosen"], r["rejected"]) for r in rm])
        write_lmflow_text(lm / "prompts.json", prompts)
        write_lmflow_text(lm / "eval_prompts.json", eval_prompts)
        write_lmflow_pairs(lm / "eval_rm.json", [(r["chosen"], r["rejected"]) for r in eval_rm])
        if rm_judge is not None:
            write_lmflow_pairs(lm / "rm_judge.json",
                               [(r["chosen"], r["rejected"]) for r in rm_judge])

    report = PrepareReport(
        train_counts, eval_counts, unit, config.max_prompt_tokens, written,
        {"prompts": long_train, "eval_prompts": long_eval}, held_out, prompt_files,
    )
    atomic_write_json(out_dir / "data_report.json", report.as_dict())
    if not prompts:
        log.warning("data: every prompt is over %s %s: the prompt set is empty",
                    config.max_prompt_tokens, unit)
    return paths, report
