"""The shared middle of every alignment iteration: clean the responses, then score the survivors.

Every algorithm gets its samples cleaned and scored here (through the alignment loop), so a
cleaner or reward plugin behaves the same under any algorithm, and the metrics built from its
results (change rate, discard rate) mean the same thing.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from rlhfx import distributed
from rlhfx.components import ResponseCleaner, RewardSource, Sample


def clean(
    samples: Sequence[Sample], cleaners: Sequence[ResponseCleaner], where: str = "cleaners"
) -> None:
    """Run the cleaner chain over each sample in place; a discard stops the chain.

    `changed` is what the cleaners report (see `CleanResult`), not any difference in text.
    A cleaner that raises or returns something else than a `CleanResult` is named, with
    `where` (the recipe key of the cleaners).
    """
    from rlhfx.faults import call_plugin, check_cleaned

    for sample in samples:
        text = sample.raw_response
        changed = False
        reason = None
        for cleaner in cleaners:
            result = check_cleaned(call_plugin(cleaner, where, cleaner.clean, sample.prompt, text),
                                   cleaner, where)
            changed = changed or result.changed
            text = result.text
            if result.discard_reason:
                reason = f"{cleaner.name}: {result.discard_reason}"
                break
        sample.response, sample.changed = text, changed
        sample.discarded, sample.discard_reason = reason is not None, reason


def accepted_fields(source: RewardSource, names: Sequence[str]) -> list[str]:
    """Which prompt-file fields `source.score` takes as keyword arguments: those it names, or
    all of them when it has `**kwargs`; none for the plain `score(prompts, responses)`."""
    try:
        params = inspect.signature(source.score).parameters
    except (TypeError, ValueError):
        return []
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return list(names)
    return [n for n in names if n in params and n not in ("prompts", "responses")]


def call_score(
    source: RewardSource,
    prompts: Sequence[str],
    responses: Sequence[str],
    fields: Mapping[str, Sequence[Any]] | None = None,
    where: str = "reward",
) -> Any:
    """`source.score(prompts, responses, **fields it accepts)`: each field a list aligned with
    the responses. Composite sources (`weighted`) call their parts through this too."""
    from rlhfx.faults import call_plugin

    fields = fields or {}
    kwargs = {name: list(fields[name]) for name in accepted_fields(source, list(fields))}
    return call_plugin(source, where, source.score, list(prompts), list(responses), **kwargs)


def score(
    samples: Sequence[Sample], reward: RewardSource, where: str = "reward",
    by_tokens: bool = False,
) -> None:
    """Score the samples that were not discarded, in one batched call.

    Under `torchrun` every process calls the reward source, even with nothing to score, so a
    source may gather across processes inside `score` (the `weighted` source's running
    statistics do). Extra prompt-file fields reach sources that ask for them. The scores
    are checked (count, real numbers); NaN and infinity pass: the caller's policy decides.

    `by_tokens` (the source's `reads_policy_tokens` said yes): the samples go to
    `score_tokens` as the policy's token ids when every one of them still holds the tokens
    that make up its cleaned text; otherwise (a cleaner rewrote a text) all go as text.
    """
    from rlhfx.faults import call_plugin, check_scores

    keep = [s for s in samples if not s.discarded]
    if by_tokens and keep and all(tokens_match_text(s) for s in keep):
        values = call_plugin(reward, where, reward.score_tokens,
                             [list(s.prompt_ids) for s in keep],
                             [list(s.response_ids) for s in keep])
        for sample, value in zip(keep, check_scores(values, len(keep), reward, where),
                                 strict=True):
            sample.reward = value
    elif keep or distributed.world_size() > 1:
        names = sorted({k for s in samples for k in s.fields})
        fields = {n: [s.fields.get(n) for s in keep] for n in names}
        values = call_score(reward, [s.prompt for s in keep], [s.response for s in keep],
                            fields, where)
        checked = check_scores(values, len(keep), reward, where)
        for sample, value in zip(keep, checked, strict=True):
            sample.reward = value
    for sample in samples:
        if sample.discarded:
            sample.reward = None


def tokens_match_text(sample: Sample) -> bool:
    """Whether the sample's prompt and response ids are its text as scored: the sampled
    tokens, whole or cut where the cleaned text ends (at most surrounding whitespace and EOS
    besides), not re-tokenised after a rewrite nor led by text a cleaner removed."""
    return bool(sample.prompt_ids) and sample.token_status in ("kept", "cut")


def clean_and_score(
    samples: Sequence[Sample], cleaners: Sequence[ResponseCleaner], reward: RewardSource,
    where: str = "reward",
) -> None:
    clean(samples, cleaners, where.rsplit(".", 1)[0] + ".cleaners")
    score(samples, reward, where)
