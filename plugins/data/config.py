"""Options of the `data` stage (and of `rlhfx data prepare`, which builds the same config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhfx import ComponentConfig, DataSource, ModelSource
from rlhfx.config import DataFormatRef


class DataConfig(ComponentConfig):
    #: Preference data: a hub id (`Anthropic/hh-rlhf`, `Dahoas/full-hh-rlhf`) or a local
    #: .jsonl, .jsonl.gz, .json (LMFlow layouts too) or .parquet file.
    source: DataSource
    #: Split to read when `source` is a hub id or a dataset directory.
    split: str = "train"
    #: `anthropic_hh`, `dahoas_hh`, `lmflow_pairs`, `lmflow_text` or a plugin's format;
    #: unset: detected from the first record.
    format: DataFormatRef | None = None
    #: Drop rows that are not JSON, not UTF-8 or lack a required field (counted in the data
    #: report) instead of stopping at the first with its file and line.
    skip_bad_rows: bool = False
    #: Read at most this many rows of `source` (all rows when unset).
    max_rows: int | None = Field(default=None, ge=1)
    #: Where held-out eval prompts come from (e.g. the hub dataset's `test` split). Unset: they
    #: are held out of `source` (those rows then go into no training set).
    eval_source: DataSource | None = None
    eval_split: str = "test"
    #: Alignment prompts from a file of their own instead of the prompts of `source`'s pairs:
    #: rows with a `prompt` dialogue (HH's "\n\nHuman: ...\n\nAssistant:", the markers below,
    #: or a plain question), rendered like every other set.
    prompts_source: DataSource | None = None
    #: The same for the held-out eval prompts (instead of those of the held-out pairs).
    eval_prompts_source: DataSource | None = None
    #: Number of held-out eval prompts, and of held-out pairs in `eval_rm` (the seed used
    #: 2,000 prompts).
    eval_size: int = Field(default=2000, ge=0)
    #: When held out of `source`, at most this fraction of its usable rows become eval rows.
    eval_max_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    #: Share of the training pairs moved out of `rm` into `rm_judge` (a seeded, disjoint
    #: split), to train a second reward model that judges the policy independently of the
    #: one it is optimised against. The other sets (sft, prompts) keep every row. Unset: no
    #: `rm_judge` is written.
    judge_fraction: float | None = Field(default=None, gt=0.0, lt=1.0)
    #: Shuffle usable rows (with the run seed) before holding eval rows out.
    shuffle: bool = True
    #: `markers`: `###Human: ... ###Assistant: ...`; `chat`: the tokenizer's chat template.
    template: Literal["markers", "chat"] = "markers"
    #: With `template = "chat"`: a system message every prompt and pair opens with (e.g. how
    #: long answers should be); unset: the chat template's own default, if it has one.
    system_prompt: str | None = Field(default=None, min_length=1)
    human_marker: str = "###Human:"
    assistant_marker: str = "###Assistant:"
    #: What goes between turns in `markers` mode.
    turn_separator: str = " "
    #: The policy's tokenizer (a model directory or hub id): measures prompt length, and gives
    #: the chat template. Unset: prompt length is counted in whitespace-separated words.
    tokenizer: ModelSource | None = None
    #: Prompts longer than this are left out of the prompt sets (the seed used 256 tokens).
    max_prompt_tokens: int | None = Field(default=256, ge=1)
    #: Also write LMFlow's json layouts under `lmflow/`.
    lmflow_json: bool = False

    @model_validator(mode="after")
    def _system_prompt_needs_chat(self) -> DataConfig:
        if self.system_prompt is not None and self.template != "chat":
            raise ValueError('system_prompt needs template = "chat" (markers have no system turn)')
        return self
