"""GPT-Neo's self-attention through torch's fused kernel (`scaled_dot_product_attention`).

transformers computes GPT-Neo's attention (GPT-Neo 125M to 2.7B, the built-in tiny policy) in
Python alone: scores cast to float32, the causal or local-window mask applied with `where`, the
padding mask added, softmax, two products; it offers no fused path on a CPU. That was about a
fifth of a tiny GPT-Neo's GRPO update in bf16. The fused kernel computes the same arithmetic
in one call: GPT-Neo's scores (no 1/sqrt(d) scaling) in float32, its causal or local mask,
the padding mask; outputs agree up to rounding, except at query positions that see nothing
but padding (their outputs feed nothing). The kernel runs in float32 under bf16 autocast
too (torch's bf16 kernel is the slower one on a CPU). Attention weights asked for
(`output_attentions`) and dropout while training take transformers' own path. Measured on the
tiny GPT-Neo (128 rows x 84 tokens, one thread): a forward and backward 0.85x the time in
float32, 0.8x under bf16 autocast. A decode step (one query per row) computes float32 scores
and probabilities, as the kernel does, without transformers' Python masking, and not in the
kernel, which is slower at that shape: 128 answers x 64 tokens sampled in 0.9x the time. Under
bf16 autocast the sampling loop keeps its cache in float32 for it (`decode_cache_dtype`), so a
step casts no keys and multiplies no bf16 probabilities, slow products at these shapes on a CPU:
the same 128 x 64 tokens in 0.83x the time of a bf16 cache (medians of 15 alternating rounds,
one thread of an AMX Xeon, load 0.3; 0.55-0.8x while the machine was busier). It reads fewer
bytes a step too: float32 keys once, where a bf16 cache was read, cast and read again.
"""

from __future__ import annotations

import functools
from typing import Any


def use_fused_attention(model: Any) -> Any:
    """`model` (returned) with every GPT-Neo self-attention computing through the fused
    kernel; other models are returned as they are. Nothing saved changes."""
    try:
        from transformers.models.gpt_neo.modeling_gpt_neo import GPTNeoSelfAttention
    except ImportError:  # a transformers without GPT-Neo: nothing to swap
        return model
    for module in model.modules():
        if type(module) is GPTNeoSelfAttention:
            module.__class__ = _fused_class()
    return model


@functools.cache
def _fused_class() -> type:
    import torch
    from transformers.models.gpt_neo.modeling_gpt_neo import GPTNeoSelfAttention

    class FusedGPTNeoSelfAttention(GPTNeoSelfAttention):
        weights_wanted = False
        #: A decode step computes in float32: `rlhfx.sampling` keeps the cache in it, so the
        #: step casts neither the keys nor the probabilities (bf16 keys and values are held
        #: exactly; the product with the values is float32's, as the fused kernel's is).
        decode_cache_dtype = torch.float32

        def forward(self, hidden_states: Any, attention_mask: Any = None, layer_past: Any = None,
                    use_cache: bool = False, output_attentions: bool = False,
                    **kwargs: Any) -> Any:
            self.weights_wanted = output_attentions
            return super().forward(hidden_states, attention_mask, layer_past, use_cache,
                                   output_attentions, **kwargs)

        def _attn(self, query: Any, key: Any, value: Any, attention_mask: Any = None) -> Any:
            if self.weights_wanted or (self.training and self.attn_dropout.p > 0):
                return super()._attn(query, key, value, attention_mask)
            queries, keys = query.size(-2), key.size(-2)
            allowed = self.bias[:, :, keys - queries : keys, :keys]
            if attention_mask is None:
                mask = allowed
            else:
                mask = torch.where(allowed, attention_mask.to(torch.float32), float("-inf"))
            with torch.autocast(query.device.type, enabled=False):
                if queries == 1:  # a decode step: two small products beat the kernel's setup
                    scores = torch.matmul(query.to(torch.float32),
                                          key.to(torch.float32).transpose(-1, -2))
                    scores = (scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool
                              else scores + mask)
                    out = torch.matmul(scores.softmax(dim=-1).to(value.dtype), value)
                    return out.to(query.dtype), None  # the layers' dtype: the cache's may differ
                # float32 under autocast too: torch's bf16 kernel is the slower one on a CPU
                out = torch.nn.functional.scaled_dot_product_attention(
                    query.to(torch.float32), key.to(torch.float32), value.to(torch.float32),
                    attn_mask=mask, scale=1.0)
            return out.to(value.dtype), None

    return FusedGPTNeoSelfAttention
