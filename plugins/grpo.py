"""The built-in `grpo` algorithm: Group Relative Policy Optimization (Shao et al. 2024,
DeepSeekMath) on rlhfx's shared loop, with the later variants as options: Dr. GRPO's
unscaled advantages and length-free loss (`scale_rewards = false`, `loss_type = "dr_grpo"`),
DAPO's clip-higher (`clip_high`), token-level loss (`loss_type = "token"`) and dropping of
groups whose rewards all tie (`drop_equal_reward_groups`).

What is GRPO's own: the advantage (reward minus its group's mean, over the group's std) and
the KL to the reference as a k3 term in the loss (`beta`). Everything else is the shared
policy-gradient engine (`rlhfx.alignment.engine`): `batch_size` prompts per iteration, `k`
samples each, `epochs` passes over `mini_batch_size` mini-batches, AdamW.
"""

from __future__ import annotations

from rlhfx import hookimpl
from rlhfx.alignment.critic_free import CriticFreeAlgorithm
from rlhfx.alignment.critic_free_config import CriticFreeConfig


class GRPOConfig(CriticFreeConfig):
    #: Divide each group's centred rewards by the group's std (GRPO); false: Dr. GRPO.
    scale_rewards: bool = True


class GRPO(CriticFreeAlgorithm[GRPOConfig]):
    """GRPO: k samples per prompt, group-normalised advantages, clipped ratio, k3 KL loss."""

    name = "grpo"

    def __init__(self, config: GRPOConfig | None = None):
        super().__init__(config)
        self.estimator = "grpo" if self.config.scale_rewards else "dr_grpo"


@hookimpl
def rlhfx_register_algorithms(register):
    register(GRPO)
