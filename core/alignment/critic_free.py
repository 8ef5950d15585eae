"""The critic-free policy-gradient algorithms' shared part (GRPO, RLOO, REINFORCE++): k
samples per prompt, no value model, a reference only when beta > 0, AdamW.

An algorithm built on `CriticFreeAlgorithm` names its advantage estimator and says where its
KL goes; the engine (`rlhfx.alignment.engine`) does the rest.

Which samples count:
- Group statistics (means, std, leave-one-out baselines, equal-reward groups) use the group's
  samples with a reward (`Batch.usable`): a discarded sample, or one whose reward was dropped
  as non-finite, is treated as missing, and its group's statistics come from the others. A
  group left with fewer than 2 such samples has no baseline: it is skipped (`small_groups`)
  by group-based algorithms.
- A sample is trained on when it is usable, its tokens are its own (token_status is not
  "prefix": a cleaner removed text before the response, whose tokens cannot be cut away), it
  has at least one response token, and its group was not dropped. Every other sample notes
  why in `extra["dropped"]` (shown in the samples file).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from rlhfx.alignment.critic_free_config import CriticFreeConfig
from rlhfx.alignment.engine import PolicyGradientAlgorithm, UpdateSettings
from rlhfx.errors import UserError

if TYPE_CHECKING:
    from rlhfx.alignment.setup import AlignmentSetup


CriticFreeConfigT = TypeVar("CriticFreeConfigT", bound=CriticFreeConfig)


class CriticFreeAlgorithm(PolicyGradientAlgorithm[CriticFreeConfigT]):
    """Base of GRPO, RLOO and REINFORCE++: no value model, a clipped ratio, k samples."""

    Config = CriticFreeConfig

    def __init__(self, config: CriticFreeConfigT | None = None):
        super().__init__(config)
        self.drop_equal_groups = self.config.drop_equal_reward_groups

    def kl_in_loss(self) -> bool:
        """Default: beta * k3 KL per token in the loss (GRPO)."""
        return True

    def kl_coef(self) -> float:
        return self.config.beta

    def update_settings(self) -> UpdateSettings:
        c = self.config
        minibatches = (1 if c.mini_batch_size is None
                       else -(-(c.batch_size * c.k) // c.mini_batch_size))
        return UpdateSettings(
            epochs=c.epochs, minibatches=minibatches, clip_low=c.clip_low,
            clip_high=c.clip_high, loss_type=c.loss_type, max_new_tokens=c.max_new_tokens,
            max_grad_norm=c.max_grad_norm, temperature=c.temperature,
        )

    def prompts_per_iteration(self) -> int:
        return self.config.batch_size

    def samples_per_prompt(self) -> int:
        return self.config.k

    def setup(self, setup: AlignmentSetup) -> None:
        from rlhfx.alignment.policy_update import adam

        c = self.config
        self.run = setup
        responses = c.batch_size * c.k
        if c.mini_batch_size is not None and c.mini_batch_size > responses:
            raise UserError(f"{setup.where}.mini_batch_size: {c.mini_batch_size} is more than "
                            f"the {responses} responses of an iteration (batch_size x k)")
        self.policy = setup.load_policy()
        # beta = 0: no reference at all (no copy of the policy in memory, no forward pass)
        self.reference = setup.reference(self.policy) if c.beta > 0 else None
        params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = adam(params, c.learning_rate, c.weight_decay)
