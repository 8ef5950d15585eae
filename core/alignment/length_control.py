"""Taking the reward's length trend out of an iteration's samples.

Reward models tend to pay for length (Singhal et al. 2023, "A Long Way to Go: Investigating
Length Correlations in RLHF"): a policy optimised against one learns to say more rather than
better. With `length_control`, each iteration fits the scored samples' rewards on their answer
lengths (tokens) by least squares and subtracts the fitted trend, keeping the mean:
reward - slope * (length - mean length). Ranking and advantages then compare answers by what the
reward says beyond their length. The fit is over every process's samples, so all of them
change the same rewards the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlhfx.components import Sample


def remove_length_trend(samples: Sequence[Sample]) -> float | None:
    """Subtract the least-squares length trend from the scored samples' rewards; the slope
    (reward per token), or None when fewer than two lengths differ."""
    scored = [s for s in samples if s.reward is not None]
    if len(scored) < 2:
        return None
    lengths = [float(len(s.response_ids)) for s in scored]
    mean_length = sum(lengths) / len(lengths)
    spread = sum((x - mean_length) ** 2 for x in lengths)
    if spread == 0:
        return None
    mean_reward = sum(float(s.reward) for s in scored if s.reward is not None) / len(scored)
    slope = sum((x - mean_length) * (float(s.reward) - mean_reward)
                for x, s in zip(lengths, scored, strict=True) if s.reward is not None) / spread
    for x, s in zip(lengths, scored, strict=True):
        correction = -slope * (x - mean_length)
        s.extra["length_correction"] = correction
        s.reward = float(s.reward) + correction if s.reward is not None else None
    return slope
