"""The `align` stage: builds the recipe's cleaners, reward and algorithm, then runs the loop.

Path of data through alignment: the shared loop (`rlhfx.alignment.loop`) samples rollouts
(`rlhfx.rollouts`), cleans and scores them (`rlhfx.scoring` with the cleaners in
`plugins/cleaners.py` and rewards in `plugins/rewards/`), and hands them to the algorithm
(`plugins/raft`, `plugins/ppo`, ...), which ranks or weighs them and trains.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import Field, model_validator

from rlhfx import (
    AlgorithmConfig,
    AlgorithmRef,
    AlignmentSetup,
    CleanerRef,
    ComponentConfig,
    DataSource,
    EnvironmentConfig,
    EnvironmentRef,
    ModelSource,
    ResponseCleaner,
    RewardSourceRef,
    Stage,
    StageContext,
    UserError,
    hookimpl,
)
from rlhfx.data.prompts import read_prompt_rows, split_fields
from rlhfx.rollouts import RolloutSettings


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
    #: Which engine samples rollouts and evals, its options inline: `{ engine = "hf" }`
    #: (rlhfx's decode loop, the default; its `dtype = "auto"` samples in bf16 where the
    #: hardware has it natively), `{ engine = "vllm", ... }` (needs
    #: `pip install 'rlhfx[vllm]'`) or any installed engine (`rlhfx components list`).
    rollouts: RolloutSettings = Field(default_factory=RolloutSettings)
    #: Multi-turn episodes: `{ name = "calculator", max_turns = 4, ... }` (an environment
    #: and its options). Unset: one reply per prompt. The reward sources score the finished
    #: transcript; the environment's own rewards are added.
    environment: EnvironmentRef | None = None

    @model_validator(mode="after")
    def _episodes_need_an_episode_algorithm(self) -> AlignConfig:
        if self.environment is None:
            return self
        from rlhfx.registry import get_plugins

        table = get_plugins().components["algorithm"]
        entry = table.get(self.algorithm.name)
        if entry is not None and not entry.cls.trains_episodes:
            raise ValueError(refused_algorithm(self.algorithm.name))
        if self.algorithm.options.get("overlong_buffer"):
            raise ValueError("algorithm.overlong_buffer applies to single-turn answers only "
                             "(each turn of an episode has its own limit); leave it out")
        return self


def refused_algorithm(name: str) -> str:
    from rlhfx.registry import get_plugins

    table = get_plugins().components["algorithm"]
    able = sorted(n for n, entry in table.items() if entry.cls.trains_episodes)
    return (f"the algorithm '{name}' does not train on multi-turn episodes (its update would "
            f"learn from the environment's tokens); use one that does: {', '.join(able)}")


def prompts_within(prompts: list[str], tokenizer: Any, limit: int | None) -> list[bool]:
    """For each prompt: at most `limit` policy tokens, as generate encodes it (None: all)."""
    if limit is None:
        return [True] * len(prompts)
    from rlhfx.rollouts import encode_prompts

    return [len(ids) <= limit for ids in encode_prompts(tokenizer, prompts)]


class AlignStage(Stage[AlignConfig]):
    """Align a policy with an alignment algorithm (RAFT, PPO, ...) on the recipe's reward."""

    name = "align"
    outputs = ("model",)

    def run(self, ctx: StageContext) -> dict[str, str]:
        from rlhfx.alignment.loop import AlignmentLoop
        from rlhfx.models import load_tokenizer

        c = self.config
        algorithm = c.algorithm.build()  # its class was checked with the recipe
        options = algorithm.config
        assert isinstance(options, AlgorithmConfig)
        where = f"{ctx.recipe_file}: stages.{ctx.stage_id}.algorithm"
        cleaners = [ref.build() for ref in c.cleaners]
        policy = ctx.resolve(c.policy)
        tokenizer = load_tokenizer(policy)
        prompts, fields = split_fields(training_prompt_rows(
            ctx.resolve(c.prompts), tokenizer, options.max_prompt_tokens, ctx.log,
            f"{where}.max_prompt_tokens", c.skip_bad_rows,
        ))
        eval_rows = (read_prompt_rows(ctx.resolve(c.eval_prompts), c.skip_bad_rows)
                     if c.eval_prompts else [])
        if options.eval_max_prompts is not None:
            eval_rows = eval_rows[: options.eval_max_prompts]
        evals, eval_fields = split_fields(eval_rows)
        environment = None
        env_key = f"{ctx.recipe_file}: stages.{ctx.stage_id}.environment"
        if c.environment is not None:
            if not algorithm.trains_episodes:
                raise UserError(f"{env_key}: {refused_algorithm(algorithm.name)}")
            environment = c.environment.build()
            if not isinstance(environment.config, EnvironmentConfig):
                raise UserError(f"{env_key}: '{environment.name}' has a Config that does not "
                                "subclass rlhfx.EnvironmentConfig (its episode limits)")
        setup = AlignmentSetup(
            config=options, policy_source=policy, tokenizer=tokenizer, prompts=prompts,
            eval_prompts=evals, cleaners=cleaners, reward=c.reward.build(),
            stop_strings=stop_strings(options.stop_strings, cleaners), stage_dir=ctx.stage_dir,
            device=_device(ctx.device), where=where, log=ctx.log,
            seed=options.seed if options.seed is not None else ctx.seed, rollouts=c.rollouts,
            parallelism=ctx.parallelism, prompt_fields=fields, eval_prompt_fields=eval_fields,
            environment=environment, environment_key=env_key,
        )
        return AlignmentLoop(ctx, setup, algorithm).run()


def training_prompt_rows(
    source: str, tokenizer: Any, max_tokens: int | None, log: logging.Logger, where: str,
    skip_bad_rows: bool = False,
) -> list[dict[str, Any]]:
    """The training prompts' rows (`read_prompt_rows`) without those over `max_tokens` policy
    tokens (the drop is logged); none left is a UserError at `where`."""
    rows = read_prompt_rows(source, skip_bad_rows)
    fits = prompts_within([row["prompt"] for row in rows], tokenizer, max_tokens)
    kept = [row for row, ok in zip(rows, fits, strict=True) if ok]
    if len(kept) < len(rows):
        log.info("skipped %d prompts over %d tokens", len(rows) - len(kept), max_tokens)
    if not kept:
        raise UserError(f"{where}: no prompt of {source} is at most {max_tokens} tokens")
    return kept


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
