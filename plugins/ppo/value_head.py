"""PPO's critic: a value head on the policy's last hidden state, and the module that holds both
(what PPO's optimizer trains and its checkpoints name: `policy.*`, `v_head.*`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ValueHead(nn.Module):
    """dropout + Linear(hidden, 1), in float32: hidden states [B, T, H] -> values [B, T]."""

    def __init__(self, hidden_size: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.summary = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.to(self.summary.weight.dtype)
        return self.summary(self.dropout(hidden)).squeeze(-1)


def hidden_size_of(model: Any) -> int:
    config = model.config
    for key in ("hidden_size", "n_embd", "d_model", "word_embed_proj_dim"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot find the hidden size in {type(config).__name__}")


class PolicyWithValueHead(nn.Module):
    """The policy (an HF or peft model) and its value head, side by side; the engine runs them
    in one pass (`rlhfx.alignment.policy_update.response_forward` with `critic`)."""

    def __init__(self, policy: Any, value_dropout: float = 0.1):
        super().__init__()
        self.policy = policy
        self.v_head = ValueHead(hidden_size_of(policy), value_dropout)
        self.v_head.to(next(policy.parameters()).device)
