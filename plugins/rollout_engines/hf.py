"""`hf`: rlhfx's decode loop (`rlhfx.rollouts.generate`) on the policy object itself."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Literal, cast

from rlhfx.components import ComponentConfig, EngineSetup, RolloutEngine
from rlhfx.hardware import resolve_dtype
from rlhfx.rollouts import Rollout, SamplingSettings, generate


class HFConfig(ComponentConfig):
    """`rollouts = { engine = "hf", dtype = "float32" }`."""

    #: The dtype the samples are computed in. "float32" (the default) draws exactly
    #: transformers' `generate` samples for a seed, the same on every machine. "bfloat16"
    #: samples with bf16 copies of the weights made for each call (KV cache in bf16, or
    #: float32 for attention computing in float32): on an AVX512-BF16 CPU about twice
    #: float32's speed, emulated (several times slower) on an AVX2-only one. "auto":
    #: bfloat16 where the hardware multiplies it natively (a GPU; a CPU with AVX512-BF16 or
    #: AMX), float32 elsewhere; samples then differ between machines.
    #: The update always recomputes the log-probs with the trained weights.
    dtype: Literal["auto", "float32", "bfloat16"] = "float32"


class HFEngine(RolloutEngine[HFConfig]):
    """Samples from the policy itself: nothing to sync, nothing to free."""

    name = "hf"
    #: "float32" or "bfloat16", resolved from the config's `dtype` in `start`
    dtype: Literal["float32", "bfloat16"] = "float32"

    def start(self, model: Any, tokenizer: Any, setup: EngineSetup) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, setup.batch_size
        self.dtype = cast(Literal["float32", "bfloat16"],
                          resolve_dtype(self.config.dtype, str(setup.device)))

    def generate(self, prompts: Sequence[str], sampling: SamplingSettings, num_samples: int = 1,
                 stop_strings: Sequence[str] = (), rng: random.Random | None = None,
                 progress: Any = None, description: str = "generating",
                 prompt_ids: Sequence[list[int]] | None = None) -> list[Rollout]:
        return generate(
            self.model, self.tokenizer, prompts, sampling, num_samples=num_samples,
            batch_size=self.batch_size, stop_strings=stop_strings, progress=progress,
            description=description, rng=rng, prompt_ids=prompt_ids, dtype=self.dtype,
        )

    def sync_weights(self, model: Any) -> None:
        self.model = model
