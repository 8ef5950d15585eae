"""An algorithm set up on the tiny GPT-Neo with a one-process run context: the engine's update
tested without an alignment loop around it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any

import torch

from rlhfx.alignment.reference import ReferenceModel
from rlhfx.tiny import tiny_causal_lm


def on_tiny_policy(algorithm: Any, wrap: Callable[[Any], Any] = lambda m: m) -> Any:
    """Give `algorithm` the tiny policy (seed 0, wrapped by `wrap` to watch its calls), its
    frozen copy as reference and a run context; returns the unwrapped policy."""
    torch.manual_seed(0)
    policy = tiny_causal_lm("builtin:tiny-gpt-neo").eval()
    algorithm.run = SimpleNamespace(autocast=nullcontext, device="cpu",
                                    tokenizer=SimpleNamespace(pad_token_id=0, eos_token_id=0),
                                    gather=lambda x: [x])
    algorithm.reference = ReferenceModel(policy)
    algorithm.policy = wrap(policy)
    return policy
