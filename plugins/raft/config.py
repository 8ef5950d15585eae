"""RAFT's own options, with LMFlow's defaults where LMFlow has one; the options every algorithm
shares (iterations, response lengths, sampling, LoRA, eval, guards...) come from
`rlhfx.AlgorithmConfig`, with RAFT's defaults set here.

Imported at every CLI start, so nothing here may import torch or transformers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from rlhfx import AlgorithmConfig, RankerRef


class RaftConfig(AlgorithmConfig):
    # ---- shared options with LMFlow's RAFT defaults
    #: LMFlow num_raft_iteration.
    iterations: int | None = Field(default=20, ge=1)
    #: LMFlow output_min_length 64 / output_max_length 128.
    min_new_tokens: int | None = Field(default=64, ge=1)
    max_new_tokens: int = Field(default=128, ge=1)
    #: LMFlow hard-codes 0.85.
    temperature: float = Field(default=0.85, gt=0)

    # ---- what one iteration collects (LMFlow: raft_batch_size, top_reward_percentage)
    #: b: how many samples are selected and trained on per iteration (LMFlow default 1024).
    batch_size: int = Field(default=1024, ge=1)
    #: k: samples generated per selected one. A ranker that compares the k samples of each
    #: prompt (`local`, the HH example's choice) gets b prompts x k samples; one that ranks
    #: single samples across prompts (`top`) gets b*k prompts x 1 sample and keeps b.
    #: LMFlow's top_reward_percentage is 1/k (default 0.2 -> k = 5; HH: 8).
    k: int = Field(default=5, ge=1)
    #: Alternative to `k` in LMFlow's terms; when set, k = round(1 / top_reward_percentage).
    top_reward_percentage: float | None = Field(default=None, gt=0, le=1)
    #: How samples are chosen: `local`, `top`, or a plugin's ranker.
    ranker: RankerRef = Field(default_factory=lambda: RankerRef(name="local"))

    # ---- fine-tuning on the selected samples (a fresh optimizer each iteration, as LMFlow)
    #: Epochs over the b selected samples per iteration (LMFlow's HH script: 4).
    epochs: float = Field(default=4, gt=0)
    learning_rate: float = Field(default=2e-5, gt=0)
    #: Per-process optimizer micro-batch; effective batch = this x accumulation x processes.
    train_batch_size: int = Field(default=8, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    #: transformers' SchedulerType values (written out: validation never imports transformers).
    lr_scheduler: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
        "constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr",
        "cosine_warmup_with_min_lr", "warmup_stable_decay", "greedy",
    ] = "linear"
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    #: False (default): only response tokens count in the loss; True: prompt tokens too.
    train_on_prompt: bool = False
    #: Put EOS after each selected response that ended (at EOS or a stop string), so the
    #: policy learns where an answer ends; one cut by the length limit gets no EOS.
    append_eos: bool = True
    #: How much the loss at an answer's end-of-turn (EOS) target counts against any other
    #: token's: above 1 the policy learns more firmly to end where the answers kept ended (a
    #: few EOS targets among many words otherwise teach it slowly). 1: the plain loss.
    end_of_turn_weight: float = Field(default=1.0, gt=0)
    #: Text between prompt and cleaned response in the training text. None (default): the
    #: whitespace the policy generated before its answer (which `strip` removed for scoring).
    response_separator: str | None = None
    #: Extra `transformers.TrainingArguments` (e.g. `{ deepspeed = "ds.json" }`), checked when
    #: the stage starts; the options above win over them for the keys RAFT sets itself.
    training_args: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _k_from_percentage(self) -> RaftConfig:
        if self.top_reward_percentage is not None:
            k = round(1 / self.top_reward_percentage)
            if "k" in self.model_fields_set and k != self.k:
                raise ValueError(
                    f"k = {self.k} and top_reward_percentage = {self.top_reward_percentage} "
                    f"disagree (1/k = {1 / self.k:g}); set one of them"
                )
            self.k = max(1, k)
        return self
