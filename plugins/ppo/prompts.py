"""Prompts for PPO: a file, a hub dataset, `builtin:tiny-prompts`, or an earlier stage's output."""

from __future__ import annotations

import random
from typing import Any

from rlhfx.errors import UserError


def load_prompts(source: str) -> list[str]:
    from rlhfx import tiny

    if tiny.is_builtin(source):
        source = str(tiny.prompt_set_path(source))
    from rlhfx.plugins.data.sets import read_prompts

    return read_prompts(source)


def drop_long(prompts: list[str], tokenizer: Any, limit: int | None) -> tuple[list[str], int]:
    """Prompts of at most `limit` policy tokens, and how many were dropped."""
    if limit is None:
        return prompts, 0
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    kept = [p for p, n in zip(prompts, lengths, strict=True) if n <= limit]
    return kept, len(prompts) - len(kept)


def step_prompts(n_prompts: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Prompt indices of a step (0-based): a fresh shuffle for every pass over the prompts.

    A pure function of (step, seed), so a resumed run takes exactly the prompts it would have.
    """
    if n_prompts == 0:
        raise UserError("no prompts to train on")
    out = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, n_prompts)
        out.append(_order(n_prompts, seed, epoch)[offset])
    return out


_cache: dict[tuple[int, int, int], list[int]] = {}


def _order(n: int, seed: int, epoch: int) -> list[int]:
    key = (n, seed, epoch)
    if key not in _cache:
        order = list(range(n))
        random.Random(f"ppo-prompts-{seed}-{epoch}").shuffle(order)
        _cache.clear()
        _cache[key] = order
    return _cache[key]
