"""The built-in `reinforce_pp` algorithm: REINFORCE++ (Hu 2025; OpenRLHF) on rlhfx's shared loop,
and its `-baseline` variant (`baseline = true`).

What is REINFORCE++'s own: the KL to the reference is a per-token penalty in the reward
(-beta * log-ratio on every token, the score added at the last), the return-to-go of those
token rewards is the advantage, and advantages are whitened over the whole batch of every
process (not per prompt). With `baseline = true` each score first has its group's mean
subtracted (then k >= 2). The ratio is clipped as PPO does.
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


class ReinforcePPConfig(CriticFreeConfig):
    #: REINFORCE++-baseline: subtract each prompt's mean score first (needs k >= 2).
    baseline: bool = False
    #: Plain REINFORCE++ samples once per prompt by default.
    k: int = 1
    #: Discount of the token rewards' return-to-go (1: every token gets the sum of the rest).
    gamma: float = 1.0
    #: The per-token KL penalty's coefficient (OpenRLHF's init_kl_coef is 0.01).
    beta: float = 0.01

    def min_k(self) -> int:
        return 2 if self.baseline else 1

    def min_k_reason(self) -> str:
        return "baseline = true subtracts each prompt's mean reward, which needs 2 samples"


class ReinforcePP(CriticFreeAlgorithm):
    """REINFORCE++: token-level KL penalty, returns-to-go, batch-whitened advantages."""

    name = "reinforce_pp"
    trains_episodes = True  # its token loss follows Sample.action_mask
    Config = ReinforcePPConfig
    config: ReinforcePPConfig

    @property
    def needs_groups(self) -> bool:
        return self.config.baseline

    def kl_in_loss(self) -> bool:
        return False

    def advantages(self, inputs: AdvantageInputs) -> Any:
        import torch

        from rlhfx.alignment.policy_update import all_reduce_sum
        from rlhfx.policy_gradient import (
            batch_normalized,
            group_mean,
            kl,
            returns_to_go,
            token_rewards_with_kl,
        )

        if self.config.baseline:
            centred = group_values(inputs.scored, lambda r, g: r - group_mean(r, g))
        else:
            centred = torch.tensor([float(s.reward) for s in inputs.scored], dtype=torch.float64)
        scores = per_row(centred, inputs.scored, inputs.rows).to(inputs.mask.device)
        mask = inputs.mask
        if inputs.rows and inputs.ref_logp is not None:
            assert inputs.logp is not None
            per_token_kl = kl(inputs.logp, inputs.ref_logp)
        else:
            per_token_kl = torch.zeros_like(mask)
        rewards = (token_rewards_with_kl(scores, per_token_kl, mask, inputs.beta)
                   if inputs.rows else torch.zeros_like(mask))
        returns = returns_to_go(rewards, mask, self.config.gamma)
        # every process must join the all-reduce, with or without rows of its own
        stats = all_reduce_sum(torch.stack([
            (returns * mask).sum(), (returns * returns * mask).sum(), mask.sum(),
        ]).double())
        total, squares, count = (float(x) for x in stats)
        if count <= 0:
            return returns
        mean = total / count
        std = max(squares / count - mean * mean, 0.0) ** 0.5
        return batch_normalized(returns, mask, mean=mean, std=std)


@hookimpl
def rlhfx_register_algorithms(register):
    register(ReinforcePP)
