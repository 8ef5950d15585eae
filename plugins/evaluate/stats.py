"""Head-to-head statistics for two models' rewards on the same prompts (pure Python).

A pair of answers to one prompt is a win, a loss or a tie for model A. The win rate counts a
tie as half a win. Its confidence interval comes from a paired bootstrap over prompts (the
prompts are the random sample; both answers to a prompt are drawn together), and the sign
test gives an exact two-sided p-value for "A and B are equally likely to win" with ties left
out (the usual treatment of ties in the sign test, e.g. Conover, Practical Nonparametric
Statistics, section 3.4).

Judges that are reward models tend to prefer longer answers, so a policy that learned to say
more wins without saying better. The length-controlled win rate (Dubois et al. 2024,
"Length-Controlled AlpacaEval") fits the outcome with a logistic model in the normalised length
difference, P(A wins) = sigmoid(a + b * tanh(d / sd(d))) with d = len(A) - len(B) in
characters, and reports sigmoid(a): the win rate the fit predicts when both answers are
equally long. It is a model-based estimate, so it is shown beside the plain win rate, not
instead of it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
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
    return _percentile_interval(
        lambda picks: win_rate([outcomes[i] for i in picks]), len(outcomes), level, resamples,
        seed)


def _percentile_interval(
    statistic: Callable[[list[int]], float], n: int, level: float, resamples: int, seed: int,
) -> tuple[float, float]:
    """Percentile interval of `statistic` over `resamples` draws of n prompt indices with
    replacement (a paired bootstrap: a prompt's answers are drawn together)."""
    rng = random.Random(seed)
    values = sorted(statistic([rng.randrange(n) for _ in range(n)]) for _ in range(resamples))
    alpha = (1 - level) / 2
    return (values[math.floor(alpha * (resamples - 1))],
            values[math.ceil((1 - alpha) * (resamples - 1))])


def length_controlled_win_rate(
    outcomes: Sequence[int], length_differences: Sequence[float], ridge: float = 1e-3,
) -> tuple[float, float]:
    """(win rate at equal length, length coefficient b) of the logistic fit above.

    Ties count as half a win (a label of 0.5 in the likelihood). The small ridge penalty
    keeps the fit finite when the outcomes are separable (e.g. A wins everything); with
    every length the same the length term vanishes and the result is the plain win rate's
    logit, shrunk by the ridge only."""
    n = len(outcomes)
    if n == 0:
        return 0.5, 0.0
    if len(length_differences) != n:
        raise ValueError(f"{n} outcomes but {len(length_differences)} length differences")
    mean = sum(length_differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in length_differences) / n)
    xs = [math.tanh(d / sd) if sd > 0 else 0.0 for d in length_differences]
    ys = [(o + 1) / 2 for o in outcomes]
    a = b = 0.0
    for _ in range(100):  # Newton's method on the penalised log-likelihood (2 parameters)
        ga, gb = -ridge * a, -ridge * b
        haa, hab, hbb = ridge, 0.0, ridge
        for x, y in zip(xs, ys, strict=True):
            p = _sigmoid(a + b * x)
            r, w = y - p, p * (1 - p)
            ga += r
            gb += r * x
            haa += w
            hab += w * x
            hbb += w * x * x
        det = haa * hbb - hab * hab
        step_a = (hbb * ga - hab * gb) / det
        step_b = (haa * gb - hab * ga) / det
        size = abs(step_a) + abs(step_b)
        if size > 4:  # damped: a near-separable start cannot overshoot far
            step_a, step_b = 4 * step_a / size, 4 * step_b / size
        a, b = a + step_a, b + step_b
        if size < 1e-10:
            break
    return _sigmoid(a), b


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1 / (1 + math.exp(-z))
    e = math.exp(z)
    return e / (1 + e)


def length_controlled_interval(
    outcomes: Sequence[int], length_differences: Sequence[float], level: float = 0.95,
    resamples: int = 2000, seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of the length-controlled win rate, prompts resampled in pairs
    (the fit, length normalisation included, is redone on every resample)."""
    if not outcomes:
        return (0.5, 0.5)
    return _percentile_interval(
        lambda picks: length_controlled_win_rate(
            [outcomes[i] for i in picks], [length_differences[i] for i in picks])[0],
        len(outcomes), level, resamples, seed)


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
    # Given the answers' lengths (characters): each side's mean, the win rate at equal length
    # with its interval, and the fit's length coefficient (> 0: the judge prefers longer).
    mean_length_a: float | None = None
    mean_length_b: float | None = None
    lc_win_rate: float | None = None
    lc_ci_low: float | None = None
    lc_ci_high: float | None = None
    length_coefficient: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def length_controlled_phrase(c: dict[str, Any]) -> str:
    """"at equal length 0.61 (95% interval 0.52-0.70); answers 212 vs 180 characters", or ""
    for a comparison made without lengths."""
    if c.get("lc_win_rate") is None:
        return ""
    return (f"at equal length {c['lc_win_rate']:.3f} ({round(100 * c['ci_level'])}% interval "
            f"{c['lc_ci_low']:.3f}-{c['lc_ci_high']:.3f}); answers {c['mean_length_a']:.0f} vs "
            f"{c['mean_length_b']:.0f} characters")


def compare(
    a: str, b: str, rewards_a: Sequence[Reward], rewards_b: Sequence[Reward],
    level: float = 0.95, resamples: int = 2000, seed: int = 0,
    lengths_a: Sequence[float] | None = None, lengths_b: Sequence[float] | None = None,
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
    result = Comparison(
        a=a, b=b, n=len(outcomes), wins=wins, losses=losses, ties=len(outcomes) - wins - losses,
        win_rate=win_rate(outcomes), ci_low=low, ci_high=high, ci_level=level,
        sign_test_p=sign_test_p(wins, losses), mean_reward_difference=diff,
    )
    if lengths_a is not None and lengths_b is not None and outcomes:
        if not len(lengths_a) == len(lengths_b) == len(outcomes):
            raise ValueError(f"{len(lengths_a)} and {len(lengths_b)} lengths for "
                             f"{len(outcomes)} pairs of answers")
        differences = [x - y for x, y in zip(lengths_a, lengths_b, strict=True)]
        result.mean_length_a = sum(lengths_a) / len(lengths_a)
        result.mean_length_b = sum(lengths_b) / len(lengths_b)
        result.lc_win_rate, result.length_coefficient = length_controlled_win_rate(
            outcomes, differences)
        result.lc_ci_low, result.lc_ci_high = length_controlled_interval(
            outcomes, differences, level, resamples, seed)
    return result
