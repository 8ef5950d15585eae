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
    """`forward` returns (logits, values); `policy` is the HF (or peft) model.

    Given `positions` ([B, T] row indices), only those rows of the last hidden state go
    through the LM head and the value head: PPO needs logits at response positions only, and
    the LM head over the prompt (and padding) is most of a small model's forward pass.
    """

    def __init__(self, policy: Any, value_dropout: float = 0.1):
        super().__init__()
        self.policy = policy
        self.v_head = ValueHead(hidden_size_of(policy), value_dropout)
        self.v_head.to(next(policy.parameters()).device)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if positions is None:
            out = self.policy(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids_for(attention_mask),
                output_hidden_states=True,
                use_cache=False,
            )
            values = self.v_head(out.hidden_states[-1])
            return out.logits.float(), values.float()
        hidden, logits = selected_logits(self.policy, input_ids, attention_mask, positions)
        return logits, self.v_head(hidden).float()

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


def pick_rows(per_position: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Each row's entries at `positions` of a [B, L, ...] tensor: -> [B, T, ...]."""
    rows = torch.arange(per_position.shape[0], device=positions.device)[:, None]
    return per_position[rows, positions]


def selected_logits(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(last hidden state, float32 logits) at `positions` only ([B, T, H], [B, T, V]).

    The body runs on every position (attention needs them); the LM head, whose output is
    [B, L, vocab], runs on the picked rows. Works for any causal LM whose logits are its
    output embeddings applied to the last hidden state (no scaling or soft-capping after the
    head: `head_is_plain`); others get their full logits, then picked.
    """
    kwargs: dict[str, Any] = dict(
        input_ids=input_ids, attention_mask=attention_mask,
        position_ids=position_ids_for(attention_mask), output_hidden_states=True,
        use_cache=False,
    )
    head = model.get_output_embeddings()
    plain = head is not None and head_is_plain(model)
    if plain and accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = 1  # the full-width LM head is what we skip
    out = model(**kwargs)
    hidden = pick_rows(out.hidden_states[-1], positions)
    if not plain:
        return hidden, pick_rows(out.logits, positions).float()
    return hidden, head(hidden).float()


def head_is_plain(model: Any) -> bool:
    """Whether logits are exactly `get_output_embeddings()(last hidden state)`: no logit
    scaling or soft-capping after the head (Gemma 2's final_logit_softcapping, Cohere's
    logit_scale, ...)."""
    config = getattr(model, "config", None)
    for key in ("final_logit_softcapping", "logit_scale", "output_multiplier_scale",
                "logits_scaling", "mup_width_multiplier"):
        value = getattr(config, key, None)
        if value not in (None, 1, 1.0):
            return False
    return True


def accepts_logits_to_keep(model: Any) -> bool:
    import inspect

    base = getattr(model, "get_base_model", lambda: model)()  # peft forwards **kwargs
    return "logits_to_keep" in inspect.signature(base.forward).parameters
