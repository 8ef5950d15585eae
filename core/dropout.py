"""Dropout whose random mask costs a sixth of torch's on the CPU.

torch draws a dropout mask one Bernoulli sample per element; on a CPU that draw, not the
arithmetic, dominates: LoRA's dropout (one per adapted layer) was a fifth of an update's time
on SmolLM2-135M under bf16; a MiniLM reward model's dropout another fifth of its step, most of
it on the attention probabilities (`attention` below draws those). `BitsDropout` cuts each
64-bit random word into four 16-bit numbers and keeps an element when its number clears the
threshold: the same keep-or-drop distribution (p in steps of 1/65536, the kept values scaled
so that the expectation is exact), from the same seeded generator, at about 6x the speed.
The masks differ from `nn.Dropout`'s, so a run is reproducible for a seed but not bitwise the
run torch's own dropout would have made.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

LEVELS = 1 << 16
ATTENTION = "rlhfx_bits_eager"  # the name `attention` is registered under with transformers
#: Longest key sequence `attention` computes itself. It keeps every probability for the
#: backward (heads x queries x keys a sequence and layer; about 5 GB for 32 MiniLM sequences of
#: 512 tokens), where torch's fused kernel keeps one number a row: beyond this, memory wins.
LONGEST_KEYS = 512


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """`x` with each element zeroed with probability `p` (to 1/65536), the rest scaled up."""
    drop = round(p * LEVELS)
    if drop == 0:
        return x
    if drop >= LEVELS:
        return x * 0
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device)
    words.random_(-(1 << 63), None)  # all 64 bits uniform (the default leaves the top one 0)
    numbers = words.view(torch.int16)[:n].view(x.shape)  # uniform over [-32768, 32767]
    keep = (numbers >= drop - LEVELS // 2).to(x.dtype).mul_(LEVELS / (LEVELS - drop))
    return x * keep


_bits_dropout = dropout  # for `attention`, whose `dropout` argument (transformers') shadows it


class BitsDropout(torch.nn.Dropout):
    """`nn.Dropout` drawing its mask with `dropout` (an nn.Dropout still: isinstance holds)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.inplace:
            return super().forward(x)
        return dropout(x, self.p)


def use_bits_dropout(model: Any) -> Any:
    """`model` with each plain `nn.Dropout` module (peft's LoRA dropout, a transformer's hidden
    dropout) swapped for a `BitsDropout` of the same p, in place. Dropout applied inside other
    kernels (attention's, in scaled_dot_product_attention) is left as it is."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Dropout and child.p > 0:
                swapped = BitsDropout(child.p)
                swapped.train(child.training)
                setattr(parent, name, swapped)
    return model


def attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, scaling: float | None = None,
              dropout: float = 0.0, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Plain attention (products, softmax, products) whose probabilities' dropout is drawn
    by `dropout` above, for transformers' attention interface. The probabilities are cast to
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
        probabilities = _bits_dropout(probabilities, dropout)
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
