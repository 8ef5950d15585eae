"""Built-in reward sources that need no model: pattern penalties, length, weighted sums.

A reward source sees the prompt and the cleaned response as text, never token ids, so a reward
model with its own tokenizer plugs in beside these without the policy's tokenizer leaking in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import cached_property
from typing import Any, Literal

from pydantic import Field

from rlhfx import ComponentConfig, Regex, RewardSource, RewardSourceRef, distributed
from rlhfx.components import frozen_statistics


class PatternRule(ComponentConfig):
    pattern: Regex
    #: Subtracted from the reward per match (or once, see `count`). Negative = a bonus.
    penalty: float = 1.0


class PatternPenaltyConfig(ComponentConfig):
    #: Defaults: the hacks PPO found on HH-RLHF (stray `#`, runs of `:)` or `;)`).
    rules: list[PatternRule] = Field(
        default_factory=lambda: [
            PatternRule(pattern="#", penalty=1.0),
            PatternRule(pattern=r"(?:[:;]-?\)\s*){2,}", penalty=1.0),
        ]
    )
    #: `each`: penalty per match; `once`: penalty once when the pattern occurs at all.
    count: Literal["each", "once"] = "each"


class PatternPenalty(RewardSource[PatternPenaltyConfig]):
    """Minus a penalty for each regex match (stray `#`, repeated `:)`, ...)."""

    name = "pattern_penalty"

    @cached_property
    def _rules(self) -> list[tuple[re.Pattern[str], float]]:
        return [(re.compile(r.pattern), r.penalty) for r in self.config.rules]

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        once = self.config.count == "once"
        out = []
        for text in responses:
            total = 0.0
            for pattern, penalty in self._rules:
                n = len(pattern.findall(text))
                total -= penalty * (min(n, 1) if once else n)
            out.append(total)
        return out


class LengthConfig(ComponentConfig):
    unit: Literal["chars", "words"] = "words"
    #: Without a target: reward = scale * length (capped at `cap`).
    #: With a target: reward = -scale * |length - target|.
    target: float | None = Field(default=None, ge=0)
    scale: float = 1.0
    cap: float | None = None


class LengthReward(RewardSource[LengthConfig]):
    """A length term: linear in the response length, or distance from a target length."""

    name = "length"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        c = self.config
        out = []
        for text in responses:
            n = float(len(text) if c.unit == "chars" else len(text.split()))
            if c.target is not None:
                out.append(-c.scale * abs(n - c.target))
            else:
                value = c.scale * n
                out.append(min(value, c.cap) if c.cap is not None else value)
        return out


class RepetitionConfig(ComponentConfig):
    #: Length of the word n-grams compared (1: repeated words; 2: repeated word pairs).
    n: int = Field(default=1, ge=1)
    #: Subtracted per repeated n-gram (an n-gram seen before in the same response).
    penalty: float = Field(default=1.0, ge=0)
    #: Compare words case-insensitively and without surrounding punctuation.
    normalize: bool = True


class RepetitionPenalty(RewardSource[RepetitionConfig]):
    """Minus a penalty per repeated word n-gram: the usual counter to answers that please a
    reward by saying the same thing again (PKU-Alignment/safe-rlhf#71, LMFlow's distinct-2 drop).
    """

    name = "repetition_penalty"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        c = self.config
        out = []
        for text in responses:
            words = text.split()
            if c.normalize:
                words = [w.strip(".,;:!?\"'()[]").lower() for w in words]
                words = [w for w in words if w]
            grams = [tuple(words[i : i + c.n]) for i in range(len(words) - c.n + 1)]
            out.append(-c.penalty * (len(grams) - len(set(grams))))
        return out


class WeightedTerm(ComponentConfig):
    source: RewardSourceRef
    weight: float = 1.0
    #: `batch`: z-score within each scoring call; `running`: z-score with running mean/std
    #: over all calls so far (stable across iterations); `none`: raw values.
    normalize: Literal["none", "batch", "running"] = "none"


class WeightedConfig(ComponentConfig):
    terms: list[WeightedTerm] = Field(min_length=1)


class RunningStats:
    """Welford's running mean and variance (numerically stable; one pass)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: Sequence[float]) -> None:
        for x in values:
            self.n += 1
            delta = x - self.mean
            self.mean += delta / self.n
            self.m2 += delta * (x - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0


def everyones(values: Sequence[float]) -> list[float]:
    """Every process's values in rank order (just `values` in a single process).

    Under torchrun each process scores its own shard of samples; updating running statistics
    with the shard alone would leave each process normalising by different numbers (and the
    checkpoint, written by the main process, holding only its share).
    """
    return [v for part in distributed.gather_objects(list(values)) for v in part]


def _zscore(values: Sequence[float], mean: float, std: float) -> list[float]:
    if std < 1e-8:
        return [v - mean for v in values]
    return [(v - mean) / std for v in values]


class WeightedReward(RewardSource[WeightedConfig]):
    """A weighted sum of other reward sources, each optionally normalised first."""

    name = "weighted"

    def __init__(self, config: WeightedConfig | None = None):
        super().__init__(config)
        # Built now: a wrong sub-source is reported when the stage starts, not at first score.
        self._sources = [t.source.build() for t in self.config.terms]
        self._stats = [RunningStats() for _ in self.config.terms]

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], **fields: Sequence[Any]
    ) -> list[float]:
        from rlhfx.scoring import call_score

        total = [0.0] * len(responses)
        for term, source, stats in zip(self.config.terms, self._sources, self._stats, strict=True):
            if self.statistics_frozen:
                with frozen_statistics(source):
                    values = [float(v) for v in call_score(source, prompts, responses, fields)]
            else:
                values = [float(v) for v in call_score(source, prompts, responses, fields)]
            if term.normalize == "batch" and values:
                values = _zscore(values, *_mean_std(values))
            elif term.normalize == "running":
                if not self.statistics_frozen:
                    stats.update(everyones(values))
                    values = _zscore(values, stats.mean, stats.std)
                elif stats.n:
                    values = _zscore(values, stats.mean, stats.std)
                else:  # frozen before any update (eval of the initial policy): the batch's own,
                    # over every process's share, so the figure does not depend on their number
                    values = _zscore(values, *_mean_std(everyones(values)))
            total = [t + term.weight * v for t, v in zip(total, values, strict=True)]
        return total

    def state_dict(self) -> dict[str, Any]:
        return {
            "running": [[s.n, s.mean, s.m2] for s in self._stats],
            "sources": [source.state_dict() for source in self._sources],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for stats, (n, mean, m2) in zip(self._stats, state.get("running", []), strict=False):
            stats.n, stats.mean, stats.m2 = int(n), float(mean), float(m2)
        for source, sub in zip(self._sources, state.get("sources", []), strict=False):
            source.load_state_dict(sub)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for fewer than two values)."""
    if not values:
        return 0.0, 0.0
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)
    return mean, math.sqrt(var)

