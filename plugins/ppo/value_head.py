"""The policy with a value head.

TRL's classic AutoModelForCausalLMWithValueHead is gone from TRL 1.x, so this is a small
module of our own: dropout + Linear(hidden, 1) on the policy's last hidden state, in float32.
(The reference model is the shared `rlhfx.alignment.reference.ReferenceModel`.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rlhfx.alignment.reference import position_ids_for


class ValueHead(nn.Module):
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
    """`forward` returns (logits, values) for every position; `policy` is the HF (or peft) model."""

    def __init__(self, policy: Any, value_dropout: float = 0.1):
        super().__init__()
        self.policy = policy
        self.v_head = ValueHead(hidden_size_of(policy), value_dropout)
        self.v_head.to(next(policy.parameters()).device)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.policy(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_for(attention_mask),
            output_hidden_states=True,
            use_cache=False,
        )
        values = self.v_head(out.hidden_states[-1])
        return out.logits.float(), values.float()

    @property
    def uses_lora(self) -> bool:
        return hasattr(self.policy, "disable_adapter")

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint needs: the parameters that train (all, or adapter + value head)."""
        return {n: p.detach().cpu() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        expected = {n for n, p in self.named_parameters() if p.requires_grad}
        missing = expected - set(state)
        if missing:
            raise RuntimeError(f"checkpoint lacks {len(missing)} parameters, e.g. {min(missing)}")
        self.load_state_dict(state, strict=False)
