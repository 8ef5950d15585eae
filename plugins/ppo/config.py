"""PPO's options: TRL's classic PPOConfig (TRL <= 0.11) with its defaults, plus rlhfx's own.

Imported at every CLI start, so nothing here may import torch or transformers.
Where a default differs from TRL's classic one, the field comment says so and why.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field, model_validator

from rlhfx import ComponentConfig
from rlhfx.lora import LoraSettings


class PPOConfig(ComponentConfig):
    # ---- schedule
    #: PPO steps (one step = generate `batch_size` responses, score them, optimise).
    #: None: one pass over the prompt set (len(prompts) // batch_size steps).
    steps: int | None = Field(default=None, ge=1)
    #: Rollouts per PPO step over all processes (TRL: 128 per process; here the total, split
    #: evenly over the processes, so a recipe means the same thing on 1 or 8 processes).
    batch_size: int = Field(default=128, ge=1)
    #: Rollouts per optimiser forward/backward over all processes (TRL: 128).
    mini_batch_size: int = Field(default=128, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
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

    # ---- generation: plain sampling at temperature 1, because the KL estimate assumes the
    # responses were sampled from the policy as it is (no top-k/top-p, no min_length).
    #: Response length drawn per generate call from [output_min_length, output_max_length)
    #: as TRL's LengthSampler (the HH example: 64-128). EOS or a stop string ends earlier.
    output_min_length: int = Field(default=64, ge=1)
    output_max_length: int = Field(default=128, ge=2)
    #: Prompts per generate call on each process (TRL's generate batch_size: 4).
    inference_batch_size: int = Field(default=16, ge=1)
    #: Generation stops at these strings; None takes the markers of the recipe's
    #: `stop_markers` cleaners (the cleaner would cut there anyway).
    stop_strings: list[str] | None = None
    #: Prompts longer than this many policy tokens are skipped at load time.
    max_prompt_tokens: int | None = Field(default=None, ge=1)

    # ---- model
    #: None: full fine-tuning with a frozen copy as reference. A table (`lora = { r = 16 }`)
    #: trains LoRA adapters; the reference is the base with the adapter disabled (no copy).
    lora: LoraSettings | None = None
    #: Dropout before the value head's linear layer (TRL's summary_dropout_prob: 0.1).
    value_head_dropout: float = Field(default=0.1, ge=0, lt=1)
    #: Turn every dropout off: the policy's, LoRA's and the value head's (value_head_dropout is
    #: then ignored), and run the update in the rollout pass's (eval) mode. TRL classic left it
    #: on, so the logprobs of the update and of the rollout differed by dropout noise (ratio != 1
    #: at the first step).
    disable_dropout: bool = True
    #: Compute precision. The trained weights always stay float32 (updates of 1e-5 vanish in
    #: bf16 weights); "bfloat16"/"float16" run the forward passes (generation included) under
    #: autocast in that dtype, and store the frozen reference copy (full fine-tuning) or the
    #: frozen LoRA base in it. float16 needs CUDA (loss scaling by accelerate).
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    # ---- evaluation on the align stage's `eval_prompts`
    #: Evaluate every N steps, the initial policy at step 0 and after the last step; responses
    #: go to eval/step_NNNNNN.jsonl. 0 turns evaluation off.
    eval_every: int = Field(default=0, ge=0)
    eval_temperature: float = Field(default=0.2, gt=0)
    eval_max_prompts: int | None = Field(default=256, ge=1)
    eval_max_new_tokens: int | None = Field(default=None, ge=1)

    # ---- bookkeeping
    #: Warn when the mean KL falls below -neg_kl_tolerance (TRL warned below -1).
    neg_kl_tolerance: float = Field(default=1.0, ge=0)
    #: Save a checkpoint and redraw the curves every N steps (and after the last step);
    #: a killed run resumes from the last checkpoint.
    save_every: int = Field(default=10, ge=1)
    keep_checkpoints: int = Field(default=1, ge=1)
    #: Write every step's responses with their scores to samples/step_NNNNN.jsonl.
    save_samples: bool = True
    #: Seed of prompt order, sampling and training; None takes the run's seed for the stage.
    seed: int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PPOConfig:
        if self.output_min_length >= self.output_max_length:
            raise ValueError(
                f"output_min_length ({self.output_min_length}) must be below output_max_length "
                f"({self.output_max_length}): lengths are drawn from [min, max)"
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

    def fingerprint(self) -> str:
        """Hash of the settings a checkpoint depends on (`steps` may grow on resume)."""
        data = self.model_dump(
            mode="json", exclude={"steps", "keep_checkpoints", "save_every", "eval_every",
                                  "save_samples"}
        )
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
