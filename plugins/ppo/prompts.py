"""Which prompts each PPO step takes: a pure function of (step, seed), so resuming repeats it."""

from __future__ import annotations

import random

from rlhfx.errors import UserError


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
