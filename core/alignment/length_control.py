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
    scored = [(s, float(len(s.response_ids)), float(s.reward)) for s in samples
              if s.reward is not None]
    if len(scored) < 2:
        return None
    mean_length = sum(x for _, x, _ in scored) / len(scored)
    mean_reward = sum(y for _, _, y in scored) / len(scored)
    spread = sum((x - mean_length) ** 2 for _, x, _ in scored)
    if spread == 0:
        return None
    slope = sum((x - mean_length) * (y - mean_reward) for _, x, y in scored) / spread
    for s, x, y in scored:
        correction = -slope * (x - mean_length)
        s.extra["length_correction"] = correction
        s.reward = y + correction
    return slope
