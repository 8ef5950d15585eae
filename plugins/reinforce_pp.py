"""The built-in `reinforce_pp` algorithm: REINFORCE++ (Hu 2025; OpenRLHF) on rlhfx's shared loop,
and its `-baseline` variant (`baseline = true`).

What is REINFORCE++'s own: the KL to the reference is a per-token penalty in the reward
(-beta * log-ratio on every token, the score added at the last), the return-to-go of those
token rewards is the advantage, and advantages are whitened over the whole batch of every
process (not per prompt). With `baseline = true` each score first has its group's mean
subtracted (then k >= 2). The ratio is clipped as PPO does.
"""

from __future__ import annotations

from rlhfx import hookimpl
from rlhfx.alignment.critic_free import CriticFreeAlgorithm
from rlhfx.alignment.critic_free_config import CriticFreeConfig
from rlhfx.alignment.engine import UpdateSettings


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


class ReinforcePP(CriticFreeAlgorithm[ReinforcePPConfig]):
    """REINFORCE++: token-level KL penalty, returns-to-go, batch-whitened advantages."""

    name = "reinforce_pp"

    def __init__(self, config: ReinforcePPConfig | None = None):
        super().__init__(config)
        self.needs_groups = self.config.baseline
        self.estimator = "reinforce_pp_baseline" if self.config.baseline else "reinforce_pp"

    def kl_in_loss(self) -> bool:
        return False

    def update_settings(self) -> UpdateSettings:
        settings = super().update_settings()
        settings.gamma = self.config.gamma
        return settings


@hookimpl
def rlhfx_register_algorithms(register):
    register(ReinforcePP)
