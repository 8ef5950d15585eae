"""The `align` stage: builds the recipe's cleaners and reward, then hands over to an algorithm.

Path of data through alignment: the algorithm (`plugins/raft`, `plugins/ppo`) generates
rollouts (`rlhfx.rollouts`), cleans and scores them (`rlhfx.scoring` with the cleaners in
`plugins/cleaners.py` and rewards in `plugins/rewards.py`), ranks or weighs them, and trains.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from rlhfx import (
    AlgorithmRef,
    CleanerRef,
    ComponentConfig,
    DataSource,
    ModelSource,
    ResponseCleaner,
    RewardSource,
    RewardSourceRef,
    Stage,
    StageContext,
    UserError,
    hookimpl,
)


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
    cleaners: list[CleanerRef] = Field(default_factory=_default_cleaners)
    reward: RewardSourceRef


def read_prompt_set(source: str) -> list[str]:
    """Prompts for any algorithm: a built-in set, a .txt file (one prompt a line), or anything
    the data stage reads (JSONL/JSON/parquet, LMFlow layouts, a hub dataset); unusable rows are
    skipped and counted there, and a file with none left is a UserError naming it."""
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
    return read_prompts(source)


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
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


@dataclass
class AlignmentSetup:
    """Everything an algorithm needs besides its own config, already built and resolved."""

    config: AlignConfig
    policy: str  # resolved path or hub id
    prompts: str
    eval_prompts: str | None
    cleaners: list[ResponseCleaner]
    reward: RewardSource

    def default_stop_strings(self) -> list[str]:
        """The markers of the recipe's `stop_markers` cleaners, without repeats, in order:
        generation stops where the cleaner would cut anyway."""
        out: list[str] = []
        for cleaner in self.cleaners:
            if cleaner.name == "stop_markers":
                out += [m for m in getattr(cleaner.config, "markers", []) if m not in out]
        return out

    def training_prompts(
        self, tokenizer: Any, max_tokens: int | None, log: logging.Logger, where: str
    ) -> list[str]:
        """The training prompts without those over `max_tokens` (the drop is logged)."""
        prompts, dropped = drop_long_prompts(read_prompt_set(self.prompts), tokenizer, max_tokens)
        if dropped:
            log.info("skipped %d prompts over %d tokens", dropped, max_tokens)
        if not prompts:
            raise UserError(f"{where}: no prompt of {self.prompts} is at most {max_tokens} tokens")
        return prompts

    def held_out_prompts(self, limit: int | None) -> list[str]:
        """The first `limit` eval prompts (none when the recipe names no eval set)."""
        if not self.eval_prompts:
            return []
        prompts = read_prompt_set(self.eval_prompts)
        return prompts[:limit] if limit is not None else prompts


class AlignStage(Stage):
    """Align a policy with an alignment algorithm (RAFT, PPO, ...) on the recipe's reward."""

    name = "align"
    Config = AlignConfig
    config: AlignConfig
    outputs = ("model",)

    def run(self, ctx: StageContext) -> dict[str, str]:
        c = self.config
        setup = AlignmentSetup(
            config=c,
            policy=ctx.resolve(c.policy),
            prompts=ctx.resolve(c.prompts),
            eval_prompts=ctx.resolve(c.eval_prompts) if c.eval_prompts else None,
            cleaners=[ref.build() for ref in c.cleaners],
            reward=c.reward.build(),
        )
        algorithm = c.algorithm.build()
        return algorithm.run(ctx, setup)


@hookimpl
def rlhfx_register_stages(register):
    register(AlignStage)
