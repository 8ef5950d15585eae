"""The built-in `grpo` algorithm: Group Relative Policy Optimization (Shao et al. 2024,
DeepSeekMath) on rlhfx's shared loop, with the later variants as options: Dr. GRPO's
unscaled advantages and length-free loss (`scale_rewards = false`, `loss_type = "dr_grpo"`),
DAPO's clip-higher (`clip_high`), token-level loss (`loss_type = "token"`) and dropping of
groups whose rewards all tie (`drop_equal_reward_groups`).

What is GRPO's own: the advantage (reward minus its group's mean, over the group's std) and
the KL to the reference as a k3 term in the loss (`beta`). Everything else is the shared
critic-free update (`rlhfx.alignment.critic_free`): `batch_size` prompts per iteration, `k`
samples each, `epochs` passes over `mini_batch_size` mini-batches, AdamW.
"""

from __future__ import annotations

from typing import Any

from rlhfx import hookimpl
from rlhfx.alignment.critic_free import (
    AdvantageInputs,
    CriticFreeAlgorithm,
    group_values,
    per_row,
)
from rlhfx.alignment.critic_free_config import CriticFreeConfig


class GRPOConfig(CriticFreeConfig):
    #: Divide each group's centred rewards by the group's std (GRPO); false: Dr. GRPO.
    scale_rewards: bool = True
    #: Leave out groups whose rewards all tie (their advantages are 0; only the KL term would
    #: train on them). They are counted either way (`grpo/equal_reward_groups`).
    drop_equal_reward_groups: bool = False


class GRPO(CriticFreeAlgorithm):
    """GRPO: k samples per prompt, group-normalised advantages, clipped ratio, k3 KL loss."""

    name = "grpo"
    trains_episodes = True  # its token loss follows Sample.action_mask
    Config = GRPOConfig
    config: GRPOConfig

    def advantages(self, inputs: AdvantageInputs) -> Any:
        from functools import partial

        from rlhfx.policy_gradient import group_advantages

        fn = partial(group_advantages, scale_by_std=self.config.scale_rewards)
        return per_row(group_values(inputs.scored, fn), inputs.scored, inputs.rows)


@hookimpl
def rlhfx_register_algorithms(register):
    register(GRPO)
