"""Metric helpers shared by the alignment loops (RAFT, PPO): diversity, reward summaries, rates.

Pure Python, so they are cheap to unit-test against hand-worked numbers and never need torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def words(text: str) -> list[str]:
    """Whitespace tokens: what distinct-n counts unless the caller passes its own tokens."""
    return text.split()


def distinct_n(texts: Iterable[str | Sequence[Any]], n: int) -> float:
    """Corpus-level distinct-n: unique n-grams / all n-grams over every text (Li et al., 2016).

    A text is split on whitespace; a sequence (e.g. token ids) is used as it is. Texts shorter
    than n add nothing. Returns 0.0 when there are no n-grams at all. A falling distinct-2 is the
    classic sign of a policy that repeats itself to please the reward.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    seen: set[tuple[Any, ...]] = set()
    total = 0
    for text in texts:
        tokens = words(text) if isinstance(text, str) else list(text)
        for i in range(len(tokens) - n + 1):
            seen.add(tuple(tokens[i : i + n]))
            total += 1
    return len(seen) / total if total else 0.0


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and population standard deviation of the values that are not None (None if empty)."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None, None
    mean = sum(xs) / len(xs)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))


def rate(flags: Iterable[bool]) -> float:
    """Share of True values (0.0 for no values)."""
    items = list(flags)
    return sum(1 for f in items if f) / len(items) if items else 0.0


def rounded(metrics: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    """Round floats for a readable metrics file; None and other values pass through."""
    return {
        k: (round(v, digits) if isinstance(v, float) and math.isfinite(v) else v)
        for k, v in metrics.items()
    }


def sample_metrics(samples: Sequence[Any], prefix: str = "") -> dict[str, Any]:
    """Reward and cleaner figures of scored `rlhfx.Sample`s, names prefixed by `prefix`.

    The reward mean/std cover the samples that were scored (discarded ones have no reward);
    the discard rate says how many were left out. Distinct-n uses the cleaned text.
    """
    mean, std = mean_std(s.reward for s in samples)
    responses = [s.response for s in samples]
    return {
        f"{prefix}reward_mean": mean,
        f"{prefix}reward_std": std,
        f"{prefix}num_samples": len(samples),
        f"{prefix}changed_rate": rate(s.changed for s in samples),
        f"{prefix}discarded_rate": rate(s.discarded for s in samples),
        f"{prefix}distinct_1": distinct_n(responses, 1),
        f"{prefix}distinct_2": distinct_n(responses, 2),
    }
