"""One PPO step's experience: generate, clean, cut the tokens to the cleaned text, score.

The reward source only ever sees text (prompt, cleaned response), so a reward model may use
another tokenizer than the policy. The policy trains on its own sampled tokens, cut where the
cleaned text ends: tokens a cleaner removed (the next `###Human` turn, say) are never trained on,
and the tokens kept are exactly the ones sampled, so the KL estimate stays unbiased.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from rlhfx import ResponseCleaner, RewardSource, Sample
from rlhfx.rollouts import Rollout, SamplingSettings, generate
from rlhfx.scoring import clean, score

TOO_SHORT = "ppo: too short"
#: A cleaner removed text before the kept response (a leading `## `, say). Those tokens cannot be
#: cut away (the response must continue the prompt token for token), and training on them with
#: the cleaned text's score would reward exactly what the cleaner exists to hide: dropped.
DROPPED_PREFIX = "ppo: cleaner removed text before the response"
#: The reward source returned NaN or infinity: one such score would make every weight NaN in GAE.
NONFINITE = "ppo: non-finite score"


@dataclass
class Experience:
    """This process's samples of one step; `kept` index the ones trained on."""

    samples: list[Sample]
    queries: list[list[int]] = field(default_factory=list)
    responses: list[list[int]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # raw scores of the kept samples
    kept: list[int] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)


def policy_sampling(max_new_tokens: int, length_range: tuple[int, int] | None) -> SamplingSettings:
    """Plain sampling at temperature 1: what the KL estimate assumes (no top-k, top-p)."""
    return SamplingSettings(
        max_new_tokens=max_new_tokens, temperature=1.0, top_k=0, top_p=1.0, do_sample=True,
        length_range=length_range,
    )


def neutral_generation_config(model: Any, tokenizer: Any) -> list[str]:
    """Replace the model's generation defaults with neutral ones; returns what was reset.

    A checkpoint's generation_config.json may carry min_length, repetition_penalty, top_k and
    the like; `generate` would apply them silently and the sampled tokens would no longer come
    from the policy's distribution (the HH example's negative KL came from min_length).
    """
    from transformers import GenerationConfig

    old = model.generation_config
    fresh = GenerationConfig(
        bos_token_id=getattr(old, "bos_token_id", None),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    changed = []
    for key in ("min_length", "min_new_tokens", "repetition_penalty", "no_repeat_ngram_size",
                "bad_words_ids", "typical_p", "epsilon_cutoff", "eta_cutoff", "min_p",
                "encoder_repetition_penalty", "suppress_tokens", "begin_suppress_tokens",
                "forced_bos_token_id", "forced_eos_token_id", "temperature", "top_p"):
        if getattr(old, key, None) != getattr(fresh, key, None):
            changed.append(f"{key}={getattr(old, key, None)!r}")
    model.generation_config = fresh
    return changed


def cut_to_clean_text(
    tokenizer: Any, ids: list[int], raw: str, cleaned: str
) -> tuple[list[int], str]:
    """The sampled tokens that make up `cleaned`, and how they were found.

    `cleaned` normally lies inside `raw` (cleaners cut and strip). Then the response keeps the
    shortest prefix of its tokens that decodes past the end of the cleaned text; when only
    whitespace follows, all tokens (EOS included) are kept. A cleaner that rewrote the text
    leaves no such prefix: the cleaned text is tokenized afresh ("retokenized"). When anything
    but whitespace precedes the cleaned text, the tokens are returned uncut with "prefix": the
    caller must drop the sample (its leading tokens cannot be removed, see DROPPED_PREFIX).
    """
    start = raw.find(cleaned) if cleaned else 0
    if start < 0:
        return tokenizer(cleaned, add_special_tokens=False)["input_ids"], "retokenized"
    if raw[:start].strip():
        return list(ids), "prefix"
    end = start + len(cleaned)
    if not raw[end:].strip():
        return list(ids), "kept"
    lo, hi = 0, len(ids)
    while lo < hi:  # smallest k whose decoded prefix reaches `end` (length grows with k)
        mid = (lo + hi) // 2
        if len(tokenizer.decode(ids[:mid], skip_special_tokens=True)) >= end:
            hi = mid
        else:
            lo = mid + 1
    return list(ids[:lo]), "cut"


def collect(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    cleaners: Sequence[ResponseCleaner],
    reward: RewardSource,
    sampling: SamplingSettings,
    *,
    batch_size: int,
    stop_strings: Sequence[str],
    min_response_tokens: int,
    discarded_score: float | None,
    rng: random.Random,
    progress: Any = None,
    timings: dict[str, float] | None = None,
    precision: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> Experience:
    """Generate one response per prompt, clean, cut, drop the too-short ones, and score.

    `precision` wraps generation only (the policy's autocast), never the reward source."""
    import time

    t = time.perf_counter()
    with precision():
        rollouts: list[Rollout] = generate(
            model, tokenizer, prompts, sampling, num_samples=1, batch_size=batch_size,
            stop_strings=stop_strings, progress=progress, description="generating", rng=rng,
        )
    t_gen = time.perf_counter() - t
    t = time.perf_counter()
    samples = [
        Sample(prompt_id=r.prompt_id, prompt=r.prompt, raw_response=r.text) for r in rollouts
    ]
    clean(samples, cleaners)
    exp = Experience(samples)
    tokens: list[list[int]] = []
    for sample, rollout in zip(samples, rollouts, strict=True):
        ids, how = cut_to_clean_text(tokenizer, rollout.response_ids, rollout.text, sample.response)
        exp.counts[how] += 1
        tokens.append(ids)
        sample.extra["response_tokens"] = len(ids)
        if sample.discarded:
            exp.counts["discarded"] += 1
        if how == "prefix":
            sample.extra["dropped"] = DROPPED_PREFIX
        elif len(ids) < min_response_tokens:
            exp.counts["too_short"] += 1
            sample.extra["cleaner_discarded"] = sample.discarded
            sample.discarded, sample.discard_reason = True, sample.discard_reason or TOO_SHORT
            sample.extra["dropped"] = TOO_SHORT
    score(samples, reward)
    for i, sample in enumerate(samples):
        if sample.extra.get("dropped"):
            continue
        if sample.discarded:
            if discarded_score is None:
                sample.extra["dropped"] = "discarded"
                continue
            sample.reward = discarded_score
        if sample.reward is None or not math.isfinite(sample.reward):
            exp.counts["nonfinite"] += 1
            sample.extra["dropped"] = NONFINITE
            continue
        exp.kept.append(i)
        exp.queries.append(rollouts[i].prompt_ids)
        exp.responses.append(tokens[i])
        exp.scores.append(float(sample.reward))
    if timings is not None:
        timings["generation"] = t_gen
        timings["scoring"] = time.perf_counter() - t
    return exp
