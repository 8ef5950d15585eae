"""The `align` stage: builds the recipe's cleaners, reward and algorithm, then runs the loop.

Path of data through alignment: the shared loop (`rlhfx.alignment.loop`) samples rollouts
(`rlhfx.rollouts`), cleans and scores them (`rlhfx.scoring` with the cleaners in
`plugins/cleaners.py` and rewards in `plugins/rewards.py`), and hands them to the algorithm
(`plugins/raft`, `plugins/ppo`, ...), which ranks or weighs them and trains.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from rlhfx import (
    AlgorithmConfig,
    AlgorithmRef,
    AlignmentSetup,
    CleanerRef,
    ComponentConfig,
    DataSource,
    ModelSource,
    ResponseCleaner,
    RewardSourceRef,
    Stage,
    StageContext,
    UserError,
    hookimpl,
)
from rlhfx.rollouts import RolloutSettings, check_engine


def _default_cleaners() -> list[CleanerRef]:
    # The reward-hacking guard is on by default: cut at the next turn, strip, discard `#`.
    return [
        CleanerRef(name="stop_markers"),
        CleanerRef(name="strip"),
        CleanerRef(name="discard"),
    ]


class AlignConfig(ComponentConfig):
    #: `{ name = "raft", ... }` or `{ name = "ppo", ... }` with the algorithm's options inline.
    algorithm: AlgorithmRef
    #: The policy to align: a directory, a hub id, or an earlier stage's output (`@sft`).
    policy: ModelSource
    #: Training prompts: a file, a hub dataset id, or `@data.prompts`.
    prompts: DataSource
    #: Held-out prompts scored at a low temperature during the run (optional).
    eval_prompts: DataSource | None = None
    #: Rows of the prompt files that are not JSON or have no prompt: an error naming
    #: file:line (default), or dropped and counted (true).
    skip_bad_rows: bool = False
    cleaners: list[CleanerRef] = Field(default_factory=_default_cleaners)
    reward: RewardSourceRef
    #: Which engine samples rollouts and evals: `{ engine = "hf" }` (transformers' generate,
    #: the default) or `{ engine = "vllm", ... }` (needs `pip install 'rlhfx[vllm]'`).
    rollouts: RolloutSettings = Field(default_factory=RolloutSettings)

    @field_validator("rollouts")
    @classmethod
    def _engine_installed(cls, value: RolloutSettings) -> RolloutSettings:
        try:
            check_engine(value)
        except UserError as exc:
            raise ValueError(str(exc)) from None
        return value


def read_prompt_set(source: str, skip_bad_rows: bool = False) -> list[str]:
    """Prompts for any algorithm: a built-in set, a .txt file (one prompt a line), or anything
    the data stage reads (JSONL/JSON/parquet, LMFlow layouts, a hub dataset). A row that is not
    JSON or has no prompt stops with file:line unless `skip_bad_rows` (then counted)."""
    from rlhfx import tiny
    from rlhfx.plugins.data.sets import read_prompts

    if tiny.is_builtin(source):
        source = str(tiny.prompt_set_path(source))
    path = Path(source)
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise UserError(f"{source}: prompt file does not exist")
        prompts = [line for line in _read_utf8(path).splitlines() if line.strip()]
        if not prompts:
            raise UserError(f"{source}: no prompts in this file")
        return prompts
    return read_prompts(source, skip_bad_rows=skip_bad_rows)


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


def drop_long_prompts(
    prompts: list[str], tokenizer: Any, limit: int | None
) -> tuple[list[str], int]:
    """Prompts of at most `limit` policy tokens, and how many were dropped (long prompts ran
    PPO out of memory in the HH example, which kept those of at most 256 tokens)."""
    if limit is None:
        return prompts, 0
    from rlhfx.rollouts import encode_prompts

    lengths = [len(ids) for ids in encode_prompts(tokenizer, prompts)]  # as generate sees them
    kept = [p for p, n in zip(prompts, lengths, strict=True) if n <= limit]
    return kept, len(prompts) - len(kept)


class AlignStage(Stage):
    """Align a policy with an alignment algorithm (RAFT, PPO, ...) on the recipe's reward."""

    name = "align"
    Config = AlignConfig
    config: AlignConfig
    outputs = ("model",)

    def run(self, ctx: StageContext) -> dict[str, str]:
        from rlhfx.alignment.loop import AlignmentLoop
        from rlhfx.models import load_tokenizer

        c = self.config
        algorithm = c.algorithm.build()
        options = algorithm.config
        if not isinstance(options, AlgorithmConfig):
            raise UserError(
                f"{ctx.recipe_file}: stages.{ctx.stage_id}.algorithm: '{algorithm.name}' has a "
                "Config that does not subclass rlhfx.AlgorithmConfig (the alignment loop reads "
                "its shared options from there)"
            )
        where = f"{ctx.recipe_file}: stages.{ctx.stage_id}.algorithm"
        cleaners = [ref.build() for ref in c.cleaners]
        policy = ctx.resolve(c.policy)
        tokenizer = load_tokenizer(policy)
        prompts = training_prompts(ctx.resolve(c.prompts), tokenizer, options.max_prompt_tokens,
                                   ctx.log, f"{where}.max_prompt_tokens", c.skip_bad_rows)
        evals = (read_prompt_set(ctx.resolve(c.eval_prompts), c.skip_bad_rows)
                 if c.eval_prompts else [])
        if options.eval_max_prompts is not None:
            evals = evals[: options.eval_max_prompts]
        setup = AlignmentSetup(
            config=options, policy_source=policy, tokenizer=tokenizer, prompts=prompts,
            eval_prompts=evals, cleaners=cleaners, reward=c.reward.build(),
            stop_strings=stop_strings(options.stop_strings, cleaners), stage_dir=ctx.stage_dir,
            device=_device(ctx.device), where=where, log=ctx.log,
            seed=options.seed if options.seed is not None else ctx.seed, rollouts=c.rollouts,
            parallelism=ctx.parallelism,
        )
        return AlignmentLoop(ctx, setup, algorithm).run()


def training_prompts(
    source: str, tokenizer: Any, max_tokens: int | None, log: logging.Logger, where: str,
    skip_bad_rows: bool = False,
) -> list[str]:
    """The training prompts without those over `max_tokens` policy tokens (the drop is
    logged); none left is a UserError at `where`."""
    prompts, dropped = drop_long_prompts(read_prompt_set(source, skip_bad_rows), tokenizer,
                                         max_tokens)
    if dropped:
        log.info("skipped %d prompts over %d tokens", dropped, max_tokens)
    if not prompts:
        raise UserError(f"{where}: no prompt of {source} is at most {max_tokens} tokens")
    return prompts


def stop_strings(explicit: list[str] | None, cleaners: list[ResponseCleaner]) -> list[str]:
    """The recipe's stop strings, else every cleaner's (no repeats, in recipe order)."""
    if explicit is not None:
        return list(explicit)
    out: list[str] = []
    for cleaner in cleaners:
        out += [m for m in cleaner.stop_strings() if m not in out]
    return out


def _device(device: str) -> str:
    import os

    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if device == "cuda" else device


@hookimpl
def rlhfx_register_stages(register):
    register(AlignStage)
