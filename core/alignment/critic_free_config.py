"""Options shared by the critic-free policy-gradient algorithms (GRPO, RLOO, REINFORCE++).

Imported at every CLI start: nothing here may import torch or transformers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhfx.alignment.config import AlgorithmConfig


class CriticFreeConfig(AlgorithmConfig):
    """Options of the shared critic-free update (GRPO, RLOO, REINFORCE++ and algorithms built
    on `CriticFreeAlgorithm`), beside the shared loop's."""

    # ---- schedule
    #: Prompts per iteration over all processes (each sampled k times: batch_size x k
    #: responses per update).
    batch_size: int = Field(default=16, ge=1)
    #: Responses sampled per prompt.
    k: int = Field(default=8, ge=1)
    #: Responses per optimiser step over all processes; None: the whole batch (one step per
    #: epoch). A mini-batch of a process with fewer responses gets zero gradients from it.
    mini_batch_size: int | None = Field(default=None, ge=1)
    #: Optimisation epochs over each batch (shuffled into mini-batches every epoch). With one
    #: epoch and one mini-batch the update is on-policy and the probability ratio is 1.
    epochs: int = Field(default=1, ge=1)

    # ---- optimiser (AdamW)
    learning_rate: float = Field(default=1e-6, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    #: Clip the gradient norm to this; None: no clipping.
    max_grad_norm: float | None = Field(default=1.0, gt=0)

    # ---- KL to the reference policy
    #: KL coefficient; 0 loads no reference model at all.
    beta: float = Field(default=0.04, ge=0)

    # ---- the clipped ratio
    #: The probability ratio is clipped to [1 - clip_low, 1 + clip_high]; a larger clip_high
    #: is DAPO's "clip-higher" (0.2 / 0.28).
    clip_low: float = Field(default=0.2, ge=0, lt=1)
    clip_high: float = Field(default=0.2, ge=0)

    #: How per-token losses become one number: `sequence` (mean over each response, then
    #: over responses), `token` (mean over all tokens, DAPO), `dr_grpo` (sum over each
    #: response / max_new_tokens, then mean; Dr. GRPO).
    loss_type: Literal["sequence", "token", "dr_grpo"] = "sequence"
    #: Leave out groups whose rewards all tie (their advantages are 0; only a KL term would
    #: train on them). They are counted either way (`<algorithm>/equal_reward_groups`).
    drop_equal_reward_groups: bool = False

    @model_validator(mode="after")
    def _critic_free_checks(self) -> CriticFreeConfig:
        if self.k < self.min_k():
            raise ValueError(f"k = {self.k}: {self.min_k_reason()} (k >= {self.min_k()})")
        if self.drop_equal_reward_groups and self.k < 2:
            raise ValueError("drop_equal_reward_groups needs k >= 2 (a group of one always "
                             "ties)")
        if self.clip_high < self.clip_low:
            raise ValueError(f"clip_high ({self.clip_high}) is below clip_low "
                             f"({self.clip_low}): the clip ranges are inverted (DAPO's "
                             "clip-higher widens the upper side)")
        return self

    def min_k(self) -> int:
        """The smallest k the algorithm can learn from (a subclass may lower it)."""
        return 2

    def min_k_reason(self) -> str:
        return "a group baseline needs at least 2 samples per prompt"
