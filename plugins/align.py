"""The `align` stage: builds the recipe's cleaners and reward, then hands over to an algorithm.

Path of data through alignment: the algorithm (`plugins/raft`, `plugins/ppo`) generates
rollouts (`rlhfx.rollouts`), cleans and scores them (`rlhfx.scoring` with the cleaners in
`plugins/cleaners.py` and rewards in `plugins/rewards.py`), ranks or weighs them, and trains.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class AlignmentSetup:
    """Everything an algorithm needs besides its own config, already built and resolved."""

    config: AlignConfig
    policy: str  # resolved path or hub id
    prompts: str
    eval_prompts: str | None
    cleaners: list[ResponseCleaner]
    reward: RewardSource


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
