"""PPO's own options: TRL's classic PPOConfig (TRL <= 0.11) with its defaults. The options every
algorithm shares (iterations, response lengths, LoRA, dtype, eval, guards, checkpoints) come
from `rlhfx.AlgorithmConfig`.

Imported at every CLI start, so nothing here may import torch or transformers.
Where a default differs from TRL's classic one, the field comment says so and why.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from rlhfx import AlgorithmConfig

#: Old option -> what replaced it (the shared loop's names, one meaning for every algorithm).
RENAMED = {
    "steps": "'iterations'",
    "output_min_length": "'min_new_tokens' (both length bounds are now included: [min, max])",
    "output_max_length": "'max_new_tokens' (now included: the old value minus 1)",
    "neg_kl_tolerance": "'kl_negative_tolerance'",
}


class PPOConfig(AlgorithmConfig):
    # ---- shared options with TRL's classic defaults
    #: The HH example's response lengths (TRL's LengthSampler 64-128).
    min_new_tokens: int | None = Field(default=64, ge=1)
    max_new_tokens: int = Field(default=127, ge=1)
    #: Prompts per generate call... as rows: PPO samples one response per prompt.
    inference_batch_size: int = Field(default=16, ge=1)

    # ---- schedule
    #: Rollouts per PPO step over all processes (TRL: 128 per process; here the total, split
    #: evenly over the processes, so a recipe means the same thing on 1 or 8 processes).
    batch_size: int = Field(default=128, ge=1)
    #: Rollouts per optimiser forward/backward over all processes (TRL: 128).
    mini_batch_size: int = Field(default=128, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    #: Rows per forward pass without gradients (old log-probs, values, reference log-probs),
    #: on each process. Larger: faster, more memory (TRL's local_rollout_forward_batch_size).
    forward_batch_size: int = Field(default=64, ge=1)
    #: Build each epoch's mini-batches from rows of similar length (less padding; their order
    #: and the ties stay seeded and random). Off: a plain shuffle, as in TRL.
    group_by_length: bool = True
    #: Optimisation epochs over each batch, shuffled into mini-batches every epoch (TRL: 4).
    ppo_epochs: int = Field(default=4, ge=1)
    #: Adam's learning rate (TRL: 1.41e-5).
    learning_rate: float = Field(default=1.41e-5, gt=0)
    #: Clip the gradient norm to this (TRL: None, no clipping).
    max_grad_norm: float | None = Field(default=None, gt=0)

    # ---- KL penalty against the reference policy
    #: Initial KL coefficient (TRL: 0.2; the HH example needed 0.001).
    init_kl_coef: float = Field(default=0.2, ge=0)
    #: True: adaptive controller (coef *= 1 + clip(KL/target - 1, +-0.2) * n / horizon);
    #: False: the coefficient stays at init_kl_coef.
    adap_kl_ctrl: bool = True
    #: KL (summed over a response's tokens) the adaptive controller steers to (TRL: 6).
    target: float = Field(default=6.0, gt=0)
    horizon: float = Field(default=10000.0, gt=0)
    #: Per-token KL estimator: `kl` (logp - ref_logp), `abs` (|.|), `mse` (0.5 * (.)^2),
    #: `full` (the exact KL of the two next-token distributions).
    kl_penalty: Literal["kl", "abs", "mse", "full"] = "kl"

    # ---- advantages and losses
    gamma: float = Field(default=1.0, ge=0, le=1)
    lam: float = Field(default=0.95, ge=0, le=1)
    cliprange: float = Field(default=0.2, gt=0)
    cliprange_value: float = Field(default=0.2, gt=0)
    vf_coef: float = Field(default=0.1, ge=0)
    #: Whiten the per-token rewards before GAE (TRL: False).
    whiten_rewards: bool = False
    #: Stop the PPO epochs of a step once the policy KL of the last mini-batch exceeds
    #: 1.5 * target_kl (TRL: off, target_kl 1).
    early_stopping: bool = False
    target_kl: float = Field(default=1.0, gt=0)
    #: A mini-batch whose mean probability ratio exceeds this is skipped (its loss zeroed).
    ratio_threshold: float = Field(default=10.0, gt=0)

    # ---- scores
    #: Divide scores by their running std (TRL: False); with use_score_norm, also subtract
    #: the running mean.
    use_score_scaling: bool = False
    use_score_norm: bool = False
    #: Clip scores to [-score_clip, score_clip] after scaling (TRL: None).
    score_clip: float | None = Field(default=None, gt=0)
    #: Score given to responses a cleaner discarded; None drops them from the update (counted
    #: in `ppo/discarded`). A number trains on them with that score, teaching the policy away.
    discarded_score: float | None = None
    #: Responses with fewer tokens than this after cleaning are dropped and counted
    #: (`ppo/too_short`), never a crash (TRL raised "Responses are too short").
    min_response_tokens: int = Field(default=2, ge=1)

    # ---- model
    #: Dropout before the value head's linear layer (TRL's summary_dropout_prob: 0.1).
    value_head_dropout: float = Field(default=0.1, ge=0, lt=1)
    #: Turn every dropout off: the policy's, LoRA's and the value head's (value_head_dropout is
    #: then ignored), and run the update in the rollout pass's (eval) mode. TRL classic left it
    #: on, so the logprobs of the update and of the rollout differed by dropout noise (ratio != 1
    #: at the first step).
    disable_dropout: bool = True

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        """Options renamed when PPO moved onto the shared loop: say what they are now."""
        if isinstance(data, dict):
            for old, new in RENAMED.items():
                if old in data:
                    raise ValueError(f"'{old}' is now {new}")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> PPOConfig:
        if (self.temperature, self.top_k, self.top_p) != (1.0, 0, 1.0):
            raise ValueError(
                "PPO samples at temperature 1 with top_k = 0 and top_p = 1: its KL estimate "
                "assumes the responses come from the policy as it is"
            )
        backward = self.mini_batch_size * self.gradient_accumulation_steps
        if self.batch_size % backward:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of mini_batch_size x "
                f"gradient_accumulation_steps ({self.mini_batch_size} x "
                f"{self.gradient_accumulation_steps} = {backward})"
            )
        if self.use_score_norm and not self.use_score_scaling:
            raise ValueError("use_score_norm needs use_score_scaling = true (as in TRL)")
        return self

    @property
    def minibatches_per_epoch(self) -> int:
        return self.batch_size // self.mini_batch_size
