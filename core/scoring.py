"""The shared middle of every alignment loop: clean the responses, then score the survivors.

RAFT and PPO both call `clean_and_score`, so a cleaner or reward plugin behaves the same under
either algorithm, and the metrics they report (change rate, discard rate) mean the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlhfx import distributed
from rlhfx.components import ResponseCleaner, RewardSource, Sample


def clean(samples: Sequence[Sample], cleaners: Sequence[ResponseCleaner]) -> None:
    """Run the cleaner chain over each sample in place; a discard stops the chain.

    `changed` is what the cleaners report (see `CleanResult`), not any difference in text.
    """
    for sample in samples:
        text = sample.raw_response
        changed = False
        reason = None
        for cleaner in cleaners:
            result = cleaner.clean(sample.prompt, text)
            changed = changed or result.changed
            text = result.text
            if result.discard_reason:
                reason = f"{cleaner.name}: {result.discard_reason}"
                break
        sample.response, sample.changed = text, changed
        sample.discarded, sample.discard_reason = reason is not None, reason


def score(samples: Sequence[Sample], reward: RewardSource) -> None:
    """Score the samples that were not discarded, in one batched call.

    Under `torchrun` every process calls the reward source, even with nothing to score, so a
    source may gather across processes inside `score` (the `weighted` source's running
    statistics do).
    """
    keep = [s for s in samples if not s.discarded]
    if keep or distributed.world_size() > 1:
        values = reward.score([s.prompt for s in keep], [s.response for s in keep])
        if len(values) != len(keep):
            raise RuntimeError(
                f"reward source '{reward.name}' returned {len(values)} scores "
                f"for {len(keep)} responses"
            )
        for sample, value in zip(keep, values, strict=True):
            sample.reward = float(value)
    for sample in samples:
        if sample.discarded:
            sample.reward = None


def clean_and_score(
    samples: Sequence[Sample], cleaners: Sequence[ResponseCleaner], reward: RewardSource
) -> None:
    clean(samples, cleaners)
    score(samples, reward)
