"""Options every alignment algorithm shares, with one name and one meaning each.

An algorithm's `Config` subclasses `AlgorithmConfig` and adds its own options (it may change a
default, never a meaning). The loop reads these; the algorithm may read them too.
Imported at every CLI start: nothing here may import torch or transformers.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field, model_validator

from rlhfx.components import LOOP_RESUME_NEUTRAL, ComponentConfig
from rlhfx.lora import LoraSettings


class AlgorithmConfig(ComponentConfig):
    """The options every alignment algorithm has, with one meaning: the shared loop reads them.
    An algorithm's Config subclasses it; it may change a default, never a meaning. Those
    marked resume-neutral may change between a run and its resume."""

    # ---- schedule
    #: Iterations (generate -> score -> update rounds). None: one pass over the prompts.
    iterations: int | None = Field(default=None, ge=1)

    # ---- generation
    #: Each generate call draws its response-length limit uniformly from
    #: [min_new_tokens, max_new_tokens], both included (LMFlow's output_min/max_length;
    #: TRL's LengthSampler). None (default): always max_new_tokens. Equal values give a fixed
    #: limit. EOS or a stop string ends a response earlier.
    min_new_tokens: int | None = Field(default=None, ge=1)
    max_new_tokens: int = Field(default=128, ge=1)
    #: Sampling settings of training rollouts (0 turns top-k off).
    temperature: float = Field(default=1.0, gt=0)
    top_k: int = Field(default=0, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    #: Rows (prompt x sample) per generate call on each process; larger is faster while
    #: memory allows.
    inference_batch_size: int = Field(default=32, ge=1)
    #: Generation stops at these strings. None: the stop strings of the recipe's cleaners
    #: (e.g. the `stop_markers` cleaner's markers: it would cut there anyway).
    stop_strings: list[str] | None = None
    #: Prompts longer than this many policy tokens are skipped (LMFlow's HH prompts: 256).
    max_prompt_tokens: int | None = Field(default=None, ge=1)

    # ---- the policy
    #: None: full fine-tuning. A table (`lora = { r = 16 }`) trains LoRA adapters instead.
    lora: LoraSettings | None = None
    #: Compute dtype (autocast over float32 weights, generation included). float16 needs CUDA;
    #: `auto`: bfloat16 where the device computes it natively (a GPU, or a CPU with
    #: AVX512-BF16 or AMX), else float32. The default keeps a seed's run the same everywhere.
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    #: CPU threads torch may use in each process; None leaves torch's default.
    torch_threads: int | None = Field(default=None, ge=1)
    #: Seed of prompt order, sampling and training; None takes the run's seed for this stage.
    seed: int | None = None

    # ---- rewards
    #: A reward source returning NaN or infinity: `error` stops the run naming the source;
    #: `drop` leaves those samples out of the update (counted in `nonfinite_rewards`, warned).
    nonfinite_rewards: Literal["error", "drop"] = "error"
    #: Subtracted from the reward of a response cut at the length limit (one that did not end
    #: with EOS or a stop string), so the policy learns to finish within `max_new_tokens`
    #: (the hard form of DAPO's overlong penalty, Yu et al. 2025). 0: off. Evaluation rewards
    #: are never changed.
    unfinished_penalty: float = Field(default=0.0, ge=0)
    #: Answers that end by themselves within this many tokens of `max_new_tokens` lose a share
    #: of `unfinished_penalty` growing linearly to all of it at the limit (DAPO's soft overlong
    #: punishment), so the answers kept end with room to spare. 0: off. Single-turn answers
    #: only (`rlhfx.alignment.overlong`).
    overlong_buffer: int = Field(default=0, ge=0)
    #: Take the reward's linear trend in answer length (tokens) out of each iteration's
    #: samples before ranking and advantages (after `unfinished_penalty`), so the policy is
    #: not taught to say more because the reward model pays for length
    #: (`rlhfx.alignment.length_control`). The fitted slope is logged as
    #: `reward_length_slope`. Evaluation rewards are never changed.
    length_control: bool = False
    #: A NaN or infinite gradient norm (or loss) in the update: `error` stops the run naming
    #: the stage, iteration and settings to lower (the last checkpoint stays the resume
    #: point); `skip` leaves out that optimizer step and counts it
    #: (`nonfinite_skipped_steps`). A diverged sampling distribution or non-finite weights
    #: always stop the run.
    on_nonfinite: Literal["error", "skip"] = "error"

    # ---- evaluation on the align stage's `eval_prompts`
    #: None (default): the policy is evaluated before the first and after the last
    #: iteration; N: also every N iterations; 0: never.
    eval_every: int | None = Field(default=None, ge=0)
    #: Low temperature for a steady estimate, with the same sampling noise at every eval.
    eval_temperature: float = Field(default=0.2, gt=0)
    #: At most this many eval prompts are used (the first ones of the file).
    eval_max_prompts: int | None = Field(default=256, ge=1)
    #: Length limit of eval answers; None: max_new_tokens.
    eval_max_new_tokens: int | None = Field(default=None, ge=1)

    # ---- reward-hacking guards (warnings; none stops the run)
    #: Warn when distinct-2 of the samples falls below this fraction of iteration 1's
    #: (LMFlow's HH run without the `#` rule: 0.39 -> 0.22). 0 turns it off.
    distinct2_warn_fraction: float = Field(default=0.6, ge=0, le=1)
    #: Warn when the share of samples the cleaners changed or discarded rises this much
    #: (absolute) above iteration 1's. 1 turns it off.
    cleaner_rate_warn_increase: float = Field(default=0.2, gt=0, le=1)
    #: Warn when more than this share of an iteration's samples is discarded. 1: off.
    discard_rate_warn: float = Field(default=0.9, gt=0, le=1)
    #: Algorithms with a KL to a reference: warn when the mean KL per response falls below
    #: -kl_negative_tolerance (an estimate that assumed other sampling) or rises above
    #: kl_warn_above (None: no upper alarm).
    kl_negative_tolerance: float = Field(default=1.0, ge=0)
    kl_warn_above: float | None = Field(default=None, gt=0)

    # ---- bookkeeping
    #: Save a checkpoint every N iterations (and after the last); a killed run resumes
    #: from the last one.
    save_every: int = Field(default=1, ge=1)
    #: Keep this many checkpoints (the newest); resuming needs only the last.
    keep_checkpoints: int = Field(default=1, ge=1)
    #: Write every sample of each iteration (the ones trained on are always written).
    save_samples: bool = True

    @model_validator(mode="after")
    def _length_bounds(self) -> AlgorithmConfig:
        if self.min_new_tokens is not None and self.min_new_tokens > self.max_new_tokens:
            raise ValueError(
                f"min_new_tokens ({self.min_new_tokens}) is above max_new_tokens "
                f"({self.max_new_tokens})"
            )
        if self.overlong_buffer and not self.unfinished_penalty:
            raise ValueError(
                f"overlong_buffer = {self.overlong_buffer} needs unfinished_penalty above 0 "
                "(the buffer's penalty grows to it)"
            )
        if self.overlong_buffer >= self.max_new_tokens:
            raise ValueError(
                f"overlong_buffer ({self.overlong_buffer}) must be below max_new_tokens "
                f"({self.max_new_tokens})"
            )
        return self

    @property
    def length_range(self) -> tuple[int, int]:
        low = self.min_new_tokens if self.min_new_tokens is not None else self.max_new_tokens
        return low, self.max_new_tokens

    def fingerprint(self, neutral: frozenset[str] = LOOP_RESUME_NEUTRAL) -> str:
        """Hash of the settings a checkpoint depends on (resume-neutral ones left out)."""
        data = self.model_dump(mode="json", exclude=set(neutral))
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[
            :16
        ]
