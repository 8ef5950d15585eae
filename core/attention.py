"""Our own plain attention for training on a CPU, registered with transformers.

torch's fused attention kernel draws its dropout mask inside the kernel, one Bernoulli sample
per probability, out of `rlhfx.dropout`'s reach, and its bf16 backward is slower on a CPU than
plain products and softmax. `attention` computes the products itself and draws the dropout
with `rlhfx.dropout.dropout`; `rlhfx.hardware.cpu_training_attention` decides when a model
uses it.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from rlhfx.dropout import dropout as bits_dropout

ATTENTION = "rlhfx_bits_eager"  # the name `attention` is registered under with transformers
#: Longest key sequence `attention` computes itself. It keeps every probability for the
#: backward (heads x queries x keys a sequence and layer; about 5 GB for 32 MiniLM sequences of
#: 512 tokens), where torch's fused kernel keeps one number a row: beyond this, memory wins.
LONGEST_KEYS = 512

def attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, scaling: float | None = None,
              dropout: float = 0.0, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Plain attention (products, softmax, products) whose probabilities' dropout is drawn
    by `rlhfx.dropout.dropout`, for transformers' attention interface. The probabilities are cast to
    the values' dtype before the dropout (under bf16 autocast the product would cast them
    anyway), which halves the mask's traffic. Variants this does not compute (soft-capped
    scores, attention sinks) go to the model's own eager attention, and sequences longer than
    `LONGEST_KEYS` to torch's fused kernel, each with torch's dropout."""
    if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        own = sys.modules[type(module).__module__].eager_attention_forward
        return own(module, query, key, value, attention_mask, scaling=scaling,
                   dropout=dropout, **kwargs)
    if key.shape[-2] > LONGEST_KEYS:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    batch, heads, length, width = query.shape
    key_heads = key.shape[1]
    groups = heads // key_heads
    # grouped-query attention: the query heads that share a key head become more query rows
    # of that head (head i reads key head i // groups), so the cache is never copied
    folded = query.reshape(batch, key_heads, groups * length, width)
    scores = torch.matmul(folded, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        mask = attention_mask[:, :, :, : key.shape[-2]]
        mask = (mask[:, :, None] if mask.shape[1] == 1  # one mask for every head, or a mask each
                else mask.reshape(mask.shape[0], key_heads, groups, *mask.shape[2:]))
        scores = (scores.view(batch, key_heads, groups, length, -1) + mask).view(
            batch, key_heads, groups * length, -1)
    probabilities = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    if module.training and dropout > 0:
        probabilities = bits_dropout(probabilities, dropout)
    output = torch.matmul(probabilities, value).view(batch, heads, length, width)
    output = output.transpose(1, 2).contiguous()
    probabilities = probabilities.view(batch, heads, length, -1)
    return output, probabilities


def register_attention() -> str:
    """`attention` registered with transformers (with the additive masks eager attention
    takes) under `ATTENTION`, the name a model's `set_attn_implementation` then accepts."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, eager_mask)
    return ATTENTION
