"""RAFT's options, with LMFlow's defaults where LMFlow has one (see docs in each field comment).

Imported at every CLI start, so nothing here may import torch or transformers.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, model_validator

from rlhfx import ComponentConfig, RankerRef
from rlhfx.lora import LoraSettings

#: Options that may change when a run is resumed (the runner and the checkpoint fingerprint
#: leave them out): more iterations continue from the last checkpoint; warning thresholds
#: change no result.
RESUME_NEUTRAL = frozenset(
    {"iterations", "torch_threads", "keep_checkpoints", "eval_every", "save_samples",
     "distinct2_warn_fraction", "cleaner_rate_warn_increase"}
)


class RaftConfig(ComponentConfig):
    # ---- what one iteration collects (LMFlow: raft_batch_size, top_reward_percentage)
    #: b: how many samples are selected and trained on per iteration (LMFlow default 1024).
    batch_size: int = Field(default=1024, ge=1)
    #: k: samples generated per selected one. With the `local` ranker: b prompts, k samples
    #: each, the best of each k kept. With the `top` ranker: b*k prompts, one sample each, the
    #: top 1/k kept. LMFlow's top_reward_percentage is 1/k (default 0.2 -> k = 5; HH: 8).
    k: int = Field(default=5, ge=1)
    #: Alternative to `k` in LMFlow's terms; when set, k = round(1 / top_reward_percentage).
    top_reward_percentage: float | None = Field(default=None, gt=0, le=1)
    #: How samples are chosen: `local` (best of k per prompt, the HH example's choice) or `top`
    #: (global top fraction; its `fraction` defaults to 1/k here), or a plugin's ranker.
    ranker: RankerRef = Field(default_factory=lambda: RankerRef(name="local"))
    #: Number of generate -> select -> fine-tune rounds (LMFlow num_raft_iteration: 20).
    iterations: int = Field(default=20, ge=1)

    # ---- generation (LMFlow hard-codes temperature 0.85, top_k 0, top_p 1.0)
    #: Each generate call draws its response length uniformly from [min, max] new tokens
    #: (LMFlow output_min_length 64 / output_max_length 128). EOS or a stop string ends earlier.
    min_new_tokens: int = Field(default=64, ge=1)
    max_new_tokens: int = Field(default=128, ge=1)
    temperature: float = Field(default=0.85, gt=0)
    #: 0 turns top-k filtering off.
    top_k: int = Field(default=0, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    #: Rows (prompt x sample) per generate call on each process (LMFlow: 1 prompt, i.e. k
    #: rows, in local mode; larger is faster while memory allows).
    inference_batch_size: int = Field(default=32, ge=1)
    #: Generation stops at these strings; None takes the markers of the recipe's
    #: `stop_markers` cleaners (so the model stops where the cleaner would cut anyway).
    stop_strings: list[str] | None = None
    #: Prompts longer than this many policy tokens are skipped (LMFlow's HH prompts: 256).
    max_prompt_tokens: int | None = Field(default=None, ge=1)

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
    #: Text between prompt and cleaned response in the training text. None (default): the
    #: whitespace the policy generated before its answer (which `strip` removed for scoring).
    response_separator: str | None = None
    #: None: full fine-tuning. A table (`lora = { r = 16 }`) trains LoRA adapters instead.
    lora: LoraSettings | None = None
    #: Compute dtype for training (Trainer mixed precision over float32 weights) and
    #: generation (autocast). On the CPU, float16 falls back to float32.
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    #: Extra `transformers.TrainingArguments` (e.g. `{ deepspeed = "ds.json" }`), checked when
    #: the stage starts; the options above win over them for the keys RAFT sets itself.
    training_args: dict[str, Any] = Field(default_factory=dict)

    # ---- evaluation on held-out prompts (the align stage's `eval_prompts`)
    #: Evaluate every N iterations (and after the last one); 0 turns evaluation off.
    eval_every: int = Field(default=1, ge=0)
    #: Low temperature for a stable eval estimate; eval answers get up to max_new_tokens.
    eval_temperature: float = Field(default=0.2, gt=0)
    #: At most this many eval prompts are used (the first ones of the file).
    eval_max_prompts: int | None = Field(default=256, ge=1)

    # ---- guards and bookkeeping
    #: Warn when distinct-2 of the responses falls below this fraction of its first value
    #: (LMFlow's HH run without the `#` rule: 0.39 -> 0.22, i.e. 0.56). 0 turns it off.
    distinct2_warn_fraction: float = Field(default=0.6, ge=0, le=1)
    #: Warn when the share of responses the cleaners changed or discarded rises this much
    #: (absolute) above its first-iteration value. 1 turns it off.
    cleaner_rate_warn_increase: float = Field(default=0.2, gt=0, le=1)
    #: CPU threads torch may use in each process; None leaves torch's default (all cores).
    #: Models of a few million parameters run several times faster on 1 thread, and far
    #: faster when other programs share the cores.
    torch_threads: int | None = Field(default=None, ge=1)
    #: Seed of prompt order, sampling and training; None takes the run's seed for this stage.
    seed: int | None = None
    #: Keep this many iteration checkpoints (the newest); resuming needs only the last.
    keep_checkpoints: int = Field(default=1, ge=1)
    #: Write all generated samples of each iteration (the selected ones are always written).
    save_samples: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> RaftConfig:
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(
                f"min_new_tokens ({self.min_new_tokens}) is above max_new_tokens "
                f"({self.max_new_tokens})"
            )
        if self.top_reward_percentage is not None:
            k = round(1 / self.top_reward_percentage)
            if "k" in self.model_fields_set and k != self.k:
                raise ValueError(
                    f"k = {self.k} and top_reward_percentage = {self.top_reward_percentage} "
                    f"disagree (1/k = {1 / self.k:g}); set one of them"
                )
            self.k = max(1, k)
        if self.ranker.name == "top" and "fraction" in self.ranker.options:
            fraction = float(self.ranker.options["fraction"])
            if abs(fraction * self.k - 1) > 1e-6:
                raise ValueError(
                    f"ranker.fraction = {fraction:g} but k = {self.k} (top keeps 1/k of b*k "
                    f"samples); leave ranker.fraction out or set it to {1 / self.k:g}"
                )
        return self

    @property
    def one_sample_per_prompt(self) -> bool:
        """The `top` ranker ranks b*k prompts with one sample each (LMFlow's `top` strategy)."""
        return self.ranker.name == "top"

    def fingerprint(self) -> str:
        """Hash of the settings a checkpoint depends on (`iterations` may grow on resume)."""
        data = self.model_dump(mode="json", exclude=set(RESUME_NEUTRAL))
        data["ranker"] = {"name": self.ranker.name, **self.ranker.options}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
