"""`hf`: transformers' `generate` on the policy object itself (`rlhfx.rollouts.generate`)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from rlhfx.components import EngineSetup, RolloutEngine
from rlhfx.rollouts import Rollout, SamplingSettings, generate


class HFEngine(RolloutEngine):
    """transformers' generate on the policy itself: nothing to sync, nothing to free."""

    name = "hf"

    def start(self, model: Any, tokenizer: Any, setup: EngineSetup) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, setup.batch_size

    def generate(self, prompts: Sequence[str], sampling: SamplingSettings, num_samples: int = 1,
                 stop_strings: Sequence[str] = (), rng: random.Random | None = None,
                 progress: Any = None, description: str = "generating",
                 prompt_ids: Sequence[list[int]] | None = None) -> list[Rollout]:
        return generate(
            self.model, self.tokenizer, prompts, sampling, num_samples=num_samples,
            batch_size=self.batch_size, stop_strings=stop_strings, progress=progress,
            description=description, rng=rng, prompt_ids=prompt_ids,
        )

    def sync_weights(self, model: Any) -> None:
        self.model = model
