"""Head-to-head statistics for two models' rewards on the same prompts (pure Python).

A pair of answers to one prompt is a win, a loss or a tie for model A. The win rate counts a
tie as half a win. Its confidence interval comes from a paired bootstrap over prompts (the
prompts are the random sample; both answers to a prompt are drawn together), and the sign
test gives an exact two-sided p-value for "A and B are equally likely to win" with ties left
out (the usual treatment of ties in the sign test, e.g. Conover, Practical Nonparametric
Statistics, section 3.4).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: A discarded answer (no reward) loses to any scored one; two discarded answers tie.
Reward = float | None


def outcome(a: Reward, b: Reward) -> int:
    """+1 when A's answer is better, -1 when B's is, 0 for a tie."""
    if a is None and b is None:
        return 0
    if b is None:
        return 1
    if a is None:
        return -1
    return (a > b) - (a < b)


def win_rate(outcomes: Sequence[int]) -> float:
    """Wins plus half the ties, over all pairs (0.5 when there are none)."""
    if not outcomes:
        return 0.5
    wins = sum(1 for o in outcomes if o > 0)
    ties = sum(1 for o in outcomes if o == 0)
    return (wins + 0.5 * ties) / len(outcomes)


def sign_test_p(wins: int, losses: int) -> float:
    """Exact two-sided sign-test p-value: P(a count as far from n/2 as observed) under p=1/2."""
    n = wins + losses
    if n == 0:
        return 1.0
    low = min(wins, losses)
    tail = sum(math.comb(n, k) for k in range(low + 1)) / 2**n
    return min(1.0, 2 * tail)


def bootstrap_interval(
    outcomes: Sequence[int], level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the win rate over `resamples` resamplings of the prompts."""
    if not outcomes:
        return (0.5, 0.5)
    rng = random.Random(seed)
    n = len(outcomes)
    rates = sorted(win_rate([outcomes[rng.randrange(n)] for _ in range(n)])
                   for _ in range(resamples))
    alpha = (1 - level) / 2
    low = rates[math.floor(alpha * (resamples - 1))]
    high = rates[math.ceil((1 - alpha) * (resamples - 1))]
    return (low, high)



def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (e.g. a reward model's pairwise accuracy on n
    held-out pairs): good coverage at small n and near 0 or 1, unlike the normal
    approximation. (0.0, 1.0) when n is 0."""
    if n <= 0:
        return (0.0, 1.0)
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))

@dataclass
class Comparison:
    """A over B on the same prompts."""

    a: str
    b: str
    n: int
    wins: int
    losses: int
    ties: int
    win_rate: float
    ci_low: float
    ci_high: float
    ci_level: float
    sign_test_p: float
    mean_reward_difference: float | None  # over prompts where both answers were scored

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(
    a: str, b: str, rewards_a: Sequence[Reward], rewards_b: Sequence[Reward],
    level: float = 0.95, resamples: int = 2000, seed: int = 0,
) -> Comparison:
    if len(rewards_a) != len(rewards_b):
        raise ValueError(f"{len(rewards_a)} rewards for {a} but {len(rewards_b)} for {b}")
    outcomes = [outcome(x, y) for x, y in zip(rewards_a, rewards_b, strict=True)]
    wins = outcomes.count(1)
    losses = outcomes.count(-1)
    low, high = bootstrap_interval(outcomes, level, resamples, seed)
    both = [(x, y) for x, y in zip(rewards_a, rewards_b, strict=True)
            if x is not None and y is not None]
    diff = sum(x - y for x, y in both) / len(both) if both else None
    return Comparison(
        a=a, b=b, n=len(outcomes), wins=wins, losses=losses, ties=len(outcomes) - wins - losses,
        win_rate=win_rate(outcomes), ci_low=low, ci_high=high, ci_level=level,
        sign_test_p=sign_test_p(wins, losses), mean_reward_difference=diff,
    )
