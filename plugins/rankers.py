"""Built-in rankers for RAFT: `top` (global top fraction) and `local` (best of k per prompt).

Ties go to the earlier sample, so a fixed seed gives one selection. Discarded samples are never
chosen, and a prompt whose samples were all discarded contributes nothing (as in LMFlow).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import Field

from rlhfx import ComponentConfig, Ranker, Sample, hookimpl


def _eligible(samples: Sequence[Sample], min_reward: float | None = None) -> list[int]:
    """Indices of samples that may be chosen: scored, not discarded, reward not NaN, and at
    least `min_reward` when one is set."""
    return [
        i
        for i, s in enumerate(samples)
        if not s.discarded and s.reward is not None and not math.isnan(s.reward)
        and (min_reward is None or s.reward >= min_reward)
    ]


def _reward(sample: Sample) -> float:
    assert sample.reward is not None  # only called on eligible samples
    return float(sample.reward)


class LocalConfig(ComponentConfig):
    #: Keep only samples scoring at least this (None: the best is kept however low). With an
    #: exact-answer reward, `min_reward = 1` fine-tunes on correct answers only (rejection
    #: sampling), never on the least wrong of k wrong ones.
    min_reward: float | None = None


class TopConfig(LocalConfig):
    #: Share of all samples to keep. None (default): as many as the algorithm asks for
    #: (RAFT's b of its b*k samples, LMFlow's top_reward_percentage), else 20%.
    fraction: float | None = Field(default=None, gt=0, le=1)


class TopRanker(Ranker[TopConfig]):
    """Keep the global top samples by reward (LMFlow's `top` collection strategy)."""

    name = "top"

    def samples_per_prompt(self, k: int) -> int:
        return 1  # one sample each of b*k prompts, ranked across prompts

    def select(self, samples: Sequence[Sample]) -> list[int]:
        if not samples:
            return []
        if self.config.fraction is None and self.keep is not None:
            want = self.keep
        else:
            fraction = self.config.fraction if self.config.fraction is not None else 0.2
            want = max(1, math.ceil(fraction * len(samples) - 1e-9))
        ranked = sorted(_eligible(samples, self.config.min_reward),
                        key=lambda i: (-_reward(samples[i]), i))
        return sorted(ranked[:want])


class LocalRanker(Ranker[LocalConfig]):
    """Keep the best of the k samples of each prompt."""

    name = "local"

    def select(self, samples: Sequence[Sample]) -> list[int]:
        best: dict[int, int] = {}
        for i in _eligible(samples, self.config.min_reward):
            group = samples[i].prompt_id
            j = best.get(group)
            if j is None or _reward(samples[i]) > _reward(samples[j]):
                best[group] = i
        return sorted(best.values())


@hookimpl
def rlhfx_register_rankers(register):
    register(TopRanker)
    register(LocalRanker)
