"""Held-out evaluation, the same for every alignment algorithm.

The policy answers the eval prompts at a low temperature with the same sampling noise each
time (so before/after differences come from the policy, not the dice); the recipe's cleaners
and reward score the answers with running reward statistics frozen (an eval must not move the
normalisation training uses). Under `torchrun` each process answers its share of the prompts
and everyone's answers are gathered in prompt order; the main process writes them for the
report.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhfx import distributed
from rlhfx.components import ResponseCleaner, RewardSource, Sample, frozen_statistics
from rlhfx.episodes import add_environment_rewards
from rlhfx.files import write_jsonl
from rlhfx.metrics import sample_metrics
from rlhfx.rollouts import SamplingSettings, generate
from rlhfx.scoring import clean_and_score

#: The figures an eval reports, each under the caller's prefix (`eval_`, `eval/`).
EVAL_FIGURES = ("reward_mean", "reward_std", "discarded_rate", "distinct_2")


def evaluate_policy(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    sampling: SamplingSettings,
    *,
    cleaners: Sequence[ResponseCleaner],
    reward: RewardSource,
    seed: int,
    out_file: Path,
    prefix: str,
    batch_size: int = 8,
    stop_strings: Sequence[str] = (),
    autocast: Any = None,
    progress: Any = None,
    where: str = "reward",
    engine: Any = None,
    fields: Sequence[dict[str, Any]] = (),
    environment: Any = None,
    environment_key: str = "environment",
) -> dict[str, Any]:
    """Answer, score and record the eval prompts; returns `{prefix + figure: value}`.

    `seed` is this process's: the caller derives it from the run's seed and its rank.
    `fields`: each prompt's extra prompt-file fields (a reference answer...), aligned with
    `prompts`, for reward sources that ask for them. With an `environment`, each prompt is
    played as one episode (its rewards added to the sources' score; the file holds its turns).
    """
    import torch

    torch.manual_seed(seed)
    world, rank = distributed.world_size(), distributed.rank()
    positions = list(range(rank, len(prompts), world))
    mine = [prompts[i] for i in positions]
    if environment is not None:
        samples = _episodes(model, tokenizer, mine, positions, sampling, fields, seed,
                            batch_size, stop_strings, autocast, progress, engine, environment,
                            environment_key)
        with frozen_statistics(reward):
            clean_and_score(samples, cleaners, reward, where)
        add_environment_rewards(samples)
        return _record(samples, out_file, prefix)
    with autocast if autocast is not None else contextlib.nullcontext():
        if engine is not None and mine:  # the loop's rollout engine (vLLM, say)
            rollouts = engine.generate(mine, sampling, stop_strings=stop_strings,
                                       progress=progress, description="eval: generating",
                                       rng=random.Random(0))
        else:
            rollouts = generate(
                model, tokenizer, mine, sampling, batch_size=batch_size,
                stop_strings=stop_strings, progress=progress, description="eval: generating",
                rng=random.Random(0),
            ) if mine else []
    samples = [Sample(positions[r.prompt_id], r.prompt, r.text,
                      fields=dict(fields[positions[r.prompt_id]]) if fields else {})
               for r in rollouts]
    with frozen_statistics(reward):
        clean_and_score(samples, cleaners, reward, where)
    return _record(samples, out_file, prefix)


def _record(samples: list[Sample], out_file: Path, prefix: str) -> dict[str, Any]:
    """Every process's samples in prompt order, written by the main process; the figures."""
    everyone = sorted((s for part in distributed.gather_objects(samples) for s in part),
                      key=lambda s: s.prompt_id)
    if distributed.is_main():
        write_jsonl(out_file, (
            {"prompt": s.prompt, "response": s.response, "reward": s.reward,
             "discarded": s.discarded,
             **{k: s.extra[k] for k in ("turns", "episode_end") if k in s.extra}}
            for s in everyone
        ))
    found = sample_metrics(everyone, prefix=prefix)
    return {prefix + k: found[prefix + k] for k in EVAL_FIGURES}


def _episodes(model: Any, tokenizer: Any, mine: list[str], positions: list[int],
              sampling: SamplingSettings, fields: Sequence[dict[str, Any]], seed: int,
              batch_size: int, stop_strings: Sequence[str], autocast: Any, progress: Any,
              engine: Any, environment: Any, environment_key: str) -> list[Sample]:
    """This process's eval prompts played as episodes, one each."""
    from rlhfx.episodes import episode_sample, run_episodes
    from rlhfx.rollouts import RolloutSettings, make_engine

    if engine is None:  # the default engine, on the model itself (it writes nothing)
        device = str(next(model.parameters()).device)
        engine = make_engine(RolloutSettings(), model, tokenizer, batch_size=batch_size,
                             device=device, work_dir=Path("."))
    rows = [dict(fields[i]) if fields else {} for i in positions]
    with autocast if autocast is not None else contextlib.nullcontext():
        episodes = run_episodes(engine, tokenizer, environment, mine, rows, sampling,
                                stop_strings=stop_strings, rng=random.Random(0), seed=seed,
                                prompt_keys=positions, where=environment_key,
                                progress=progress, description="eval: episodes")
    return [episode_sample(e, positions[e.prompt_index], rows[e.prompt_index], tokenizer)
            for e in episodes]
