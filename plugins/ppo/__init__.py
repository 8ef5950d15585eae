"""The built-in `ppo` alignment algorithm: TRL's classic PPOTrainer (TRL <= 0.11), rebuilt on
rlhfx's reward sources and cleaners, so the reward model may use another tokenizer.

This module is imported at every CLI start: torch and friends load only when a run starts.
"""

from __future__ import annotations

from typing import Any

from rlhfx import AlignmentAlgorithm, StageContext, hookimpl

from .config import PPOConfig

__all__ = ["PPO", "PPOConfig"]


class PPO(AlignmentAlgorithm):
    """PPO with a value head, KL penalty to a reference policy, GAE and clipped losses."""

    name = "ppo"
    Config = PPOConfig
    config: PPOConfig
    #: May change on resume (the runner leaves them out of the stage fingerprint).
    resume_neutral = frozenset(
        {"steps", "keep_checkpoints", "save_every", "eval_every", "save_samples"}
    )

    def run(self, ctx: StageContext, setup: Any) -> dict[str, str]:
        from .loop import run_ppo

        return run_ppo(ctx, setup, self.config)


@hookimpl
def rlhfx_register_algorithms(register):
    register(PPO)
