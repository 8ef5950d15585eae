"""The built-in `rloo` algorithm: REINFORCE Leave-One-Out (Kool et al. 2019; Ahmadian et al.
2024, "Back to Basics") on rlhfx's shared loop.

What is RLOO's own: each response's baseline is the mean reward of the other k - 1 responses
to its prompt, and the KL to the reference is either folded into the reward before the
baseline (`kl_in_reward = true`, the paper's and TRL's way: reward - beta * sum of the
per-token log-ratio) or added to the loss (k3 estimator summed over the response). The update
is REINFORCE on the whole response as one action (as TRL's RLOOTrainer does): the ratio is
that of the response's probability, and with one epoch and one mini-batch (the defaults) it is
1 and the clip never acts; more epochs or mini-batches clip it as PPO does. `loss_type` does
not apply (the loss is a mean over responses).
"""

from __future__ import annotations

from rlhfx import hookimpl
from rlhfx.alignment.critic_free import CriticFreeAlgorithm
from rlhfx.alignment.critic_free_config import CriticFreeConfig


class RLOOConfig(CriticFreeConfig):
    #: true: reward - beta * KL (summed log-ratio over the response) before the baseline;
    #: false: beta * k3 KL per token in the loss.
    kl_in_reward: bool = True


class RLOO(CriticFreeAlgorithm[RLOOConfig]):
    """RLOO: k samples per prompt, leave-one-out baseline, KL in the reward or the loss."""

    name = "rloo"
    sequence_level = True
    estimator = "rloo"

    def kl_in_loss(self) -> bool:
        return not self.config.kl_in_reward


@hookimpl
def rlhfx_register_algorithms(register):
    register(RLOO)
