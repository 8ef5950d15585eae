"""A decode step of a Llama-family model (Llama, SmolLM2, Qwen2) in fewer, larger operations.

While the sampling loop decodes one token a row, transformers' forward of a small model is
mostly fixed costs: seven products a layer (q, k, v, o, gate, up, down; with LoRA two more
for each adapted one), Python between them, and per-step set-up (masks, cache bookkeeping).
With bf16 weights on a CPU this step concatenates q/k/v and gate/up into one product each,
merges LoRA adapters into those weights once per sampling call, packs them for oneDNN (as
`rlhfx.packed_linear` does), and computes the attention with the query heads grouped by the
key-value head they share, with `rlhfx.decode_attention`'s kernel on CPUs with AVX512-BF16
(the same numbers up to rounding, in a third of the time at SmolLM2's shapes) and torch's
`sdpa` elsewhere. The rest of the arithmetic is transformers' own, operation for operation
(RMSNorm in float32, the model's rotary embedding): with torch's attention and without LoRA
the logits are the forward's bit for bit; a merged adapter rounds once where the forward adds
two products. Measured on SmolLM2-135M, 48 rows decoding over about 120 positions, 2 threads
of an AMX Xeon, with torch's attention: 64 ms a step against the forward's 80 ms.

Anything else (other architectures, float32 weights, which keep `generate`'s exact samples,
LoRA variants such as DoRA, sharded or GPU models) decodes through the model's forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from rlhfx.decode_attention import fits
from rlhfx.decode_attention import kernel as decode_attention_kernel
from rlhfx.packed_linear import pack, packed_product


@dataclass
class _Layer:
    qkv: Any
    qkv_bias: Any
    o: Any
    o_bias: Any
    gate_up: Any
    down: Any
    norm_in: tuple[Any, float]
    norm_post: tuple[Any, float]
    scaling: float


class FusedDecoder:
    """`step` computes what `model(input_ids=tokens[:, None], attention_mask=mask,
    position_ids=positions[:, None], cache=cache).logits[:, -1].float()` does."""

    def __init__(self, base: Any, layers: list[_Layer], head: Any) -> None:
        config = base.config
        self.embed = base.model.embed_tokens.weight
        self.rotary = base.model.rotary_emb
        self.final_norm = _norm(base.model.norm)
        self.head = head
        self.layers = layers
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = base.model.layers[0].self_attn.head_dim
        group = self.heads // self.kv_heads
        #: rlhfx's decode attention kernel where it runs here, else None (torch's attention)
        self.attention_kernel = (decode_attention_kernel() if fits(self.head_dim, group)
                                 else None)

    def step(self, tokens: Any, positions: Any, mask: Any, cache: Any) -> Any:
        import torch
        from torch.nn.functional import scaled_dot_product_attention, silu

        rows, d = tokens.shape[0], self.head_dim
        group = self.heads // self.kv_heads
        h = self.embed[tokens]  # [rows, hidden]
        cos, sin = self.rotary(h, positions[:, None])  # [rows, 1, head_dim]
        live = mask.bool()
        padding = live[:, None, None, :]
        sizes = [self.heads * d, self.kv_heads * d, self.kv_heads * d]
        for layer, cached in zip(self.layers, cache.layers, strict=True):
            q, k, v = _linear(_rms(h, *layer.norm_in), layer.qkv, layer.qkv_bias).split(sizes, -1)
            q = _rotate(q.view(rows, self.heads, d), cos, sin)
            k = _rotate(k.view(rows, self.kv_heads, d), cos, sin)
            keys, values = cached.update(k[:, :, None], v.view(rows, self.kv_heads, 1, d))
            grouped = q.view(rows, self.kv_heads, group, d)
            if self.attention_kernel is not None:
                attended = self.attention_kernel(grouped, keys, values, live, layer.scaling)
            else:
                attended = scaled_dot_product_attention(grouped, keys, values,
                                                        attn_mask=padding, scale=layer.scaling)
            h = h + _linear(attended.reshape(rows, -1), layer.o, layer.o_bias)
            gate, up = _linear(_rms(h, *layer.norm_post), layer.gate_up).chunk(2, -1)
            h = h + _linear(silu(gate) * up, layer.down)
        return _linear(_rms(h, *self.final_norm), self.head).to(torch.float32)


def fused_decoder(model: Any, rows: int) -> FusedDecoder | None:
    """A fused decode step for `model` (bf16 weights, on the CPU, a Llama or Qwen2 model with
    plain or LoRA-adapted linear layers), or None where the model's forward must decode."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not _architecture_fits(base):
        return None
    if any(p.dtype != torch.bfloat16 or p.device.type != "cpu" or type(p.data) is not torch.Tensor
           for p in base.parameters()):
        return None
    if type(base.model.embed_tokens) is not torch.nn.Embedding:
        return None
    layers = []
    for block in base.model.layers:
        attention, mlp = block.self_attn, block.mlp
        found = [_effective(m) for m in (attention.q_proj, attention.k_proj, attention.v_proj,
                                         attention.o_proj, mlp.gate_proj, mlp.up_proj,
                                         mlp.down_proj)]
        if any(f is None for f in found):
            return None
        (q, qb), (k, kb), (v, vb), (o, ob), (gate, gb), (up, ub), (down, db) = cast(
            "list[tuple[Any, Any]]", found)
        if gb is not None or ub is not None or db is not None:
            return None
        biases = [b for b in (qb, kb, vb) if b is not None]
        if 0 < len(biases) < 3:
            return None
        layers.append(_Layer(
            qkv=_pack(torch.cat([q, k, v]), rows), qkv_bias=torch.cat(biases) if biases else None,
            o=_pack(o, rows), o_bias=ob, gate_up=_pack(torch.cat([gate, up]), rows),
            down=_pack(down, rows), norm_in=_norm(block.input_layernorm),
            norm_post=_norm(block.post_attention_layernorm), scaling=attention.scaling))
    head = _effective(base.lm_head)
    if head is None or head[1] is not None:
        return None
    return FusedDecoder(base, layers, _pack(head[0], rows))


def _architecture_fits(base: Any) -> bool:
    """Exactly a Llama or Qwen2 causal LM whose layers are all full attention, SiLU MLPs and
    RMSNorms: the computation `FusedDecoder.step` writes out."""
    try:
        from transformers.models.llama import modeling_llama as llama
        from transformers.models.qwen2 import modeling_qwen2 as qwen2
    except ImportError:
        return False
    kinds: dict[Any, tuple[Any, Any, Any, Any]] = {
        llama.LlamaForCausalLM: (llama.LlamaDecoderLayer, llama.LlamaAttention,
                                 llama.LlamaMLP, llama.LlamaRMSNorm),
        qwen2.Qwen2ForCausalLM: (qwen2.Qwen2DecoderLayer, qwen2.Qwen2Attention,
                                 qwen2.Qwen2MLP, qwen2.Qwen2RMSNorm),
    }
    parts = kinds.get(type(base))
    if parts is None:
        return False
    config = base.config
    layer_kind, attention_kind, mlp_kind, norm_kind = parts
    if (getattr(config, "hidden_act", None) != "silu"
            or getattr(config, "pretraining_tp", 1) != 1
            or any(t != "full_attention" for t in getattr(config, "layer_types", None) or [])
            or type(base.model.norm) is not norm_kind):
        return False
    return all(
        type(block) is layer_kind and type(block.self_attn) is attention_kind
        and type(block.mlp) is mlp_kind and type(block.input_layernorm) is norm_kind
        and type(block.post_attention_layernorm) is norm_kind
        for block in base.model.layers
    )


def _effective(module: Any) -> tuple[Any, Any] | None:
    """The weight and bias `module` computes with: a plain linear layer's, or a LoRA layer's
    base weight plus its active adapters' products (plain LoRA only); None otherwise."""
    import torch

    if type(module) is torch.nn.Linear:
        return module.weight.detach(), None if module.bias is None else module.bias.detach()
    base = getattr(module, "base_layer", None)
    if type(base) is not torch.nn.Linear or not hasattr(module, "get_delta_weight"):
        return None
    if getattr(module, "merged", False):  # the base weight holds an adapter already
        return None
    weight = base.weight.detach()
    for name in () if getattr(module, "disable_adapters", False) else module.active_adapters:
        if name not in module.lora_A:
            continue
        variants, biased = getattr(module, "lora_variant", {}), getattr(module, "lora_bias", {})
        if name in variants or biased.get(name) or getattr(module, "use_dora", {}).get(name):
            return None  # DoRA and kin, or an adapter with a bias of its own
        weight = weight + module.get_delta_weight(name).to(weight.dtype)
    return weight, None if base.bias is None else base.bias.detach()


def _pack(weight: Any, rows: int) -> Any:
    """`weight` packed for oneDNN where `rlhfx.packed_linear` packs one, else as it is."""
    packed = pack(weight, rows)
    return weight.contiguous() if packed is None else _Packed(packed)


@dataclass
class _Packed:
    weight: Any


def _linear(x: Any, weight: Any, bias: Any = None) -> Any:
    import torch

    if type(weight) is _Packed:
        return packed_product(x, weight.weight, bias)
    return torch.nn.functional.linear(x, weight, bias)


def _norm(module: Any) -> tuple[Any, float]:
    return module.weight.detach(), module.variance_epsilon


def _rms(x: Any, weight: Any, eps: float) -> Any:
    """transformers' Llama RMSNorm, operation for operation (float32 inside, the weight
    applied after rounding back)."""
    import torch

    v = x.to(torch.float32)
    v = v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps)
    return weight * v.to(x.dtype)


def _rotate(x: Any, cos: Any, sin: Any) -> Any:
    """The rotary embedding of `x` [rows, heads, head_dim] as transformers applies it."""
    import torch

    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin
