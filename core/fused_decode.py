"""A decode step of a Llama-family model (Llama, SmolLM2, Qwen2) in fewer, larger operations.

While the sampling loop decodes one token a row, transformers' forward of a small model is
mostly fixed costs: seven products a layer (q, k, v, o, gate, up, down; with LoRA two more
for each adapted one), Python between them, and per-step set-up (masks, cache bookkeeping).
With bf16 weights on a CPU this step concatenates q/k/v and gate/up into one product each,
merges LoRA adapters into those weights once per sampling call, packs them for oneDNN (as
`rlhfx.packed_linear` does), and computes the attention with the query heads grouped by the
key-value head they share. On CPUs with AVX512-BF16 the attention and the element-wise
operations between the products are those of `rlhfx.decode_kernels` (one pass each; the
same numbers up to rounding); elsewhere they are torch's, operation for operation as
transformers computes them (RMSNorm in float32, the model's rotary embedding, `sdpa`
attention with the padding mask), and without LoRA the logits are then the forward's bit for
bit. A merged adapter rounds once where the forward adds two products. Measured on
SmolLM2-135M, 48 rows decoding over about 120 positions, 2 threads of an AMX Xeon, with
torch's operations: 64 ms a step against the forward's 80 ms.

Anything else (other architectures, float32 weights, which keep `generate`'s exact samples,
LoRA variants such as DoRA, sharded or GPU models) decodes through the model's forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from rlhfx.decode_kernels import fits
from rlhfx.decode_kernels import kernels as decode_kernels
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
        native = (decode_kernels() if fits(self.head_dim, self.heads // self.kv_heads,
                                           config.hidden_size, config.intermediate_size)
                  else None)
        #: rlhfx's kernels where they run here, else torch's operations
        self.ops: Any = native if native is not None else TorchOps
        self.native = native is not None

    def step(self, tokens: Any, positions: Any, mask: Any, cache: Any) -> Any:
        import torch

        ops, rows, d = self.ops, tokens.shape[0], self.head_dim
        h = self.embed[tokens]  # [rows, hidden]
        cos, sin = (t[:, 0] for t in self.rotary(h, positions[:, None]))  # [rows, head_dim]
        live = mask.bool()
        h, normed = ops.add_rms_norm(h, None, *self.layers[0].norm_in)
        after = [layer.norm_in for layer in self.layers[1:]] + [self.final_norm]
        for layer, cached, next_norm in zip(self.layers, cache.layers, after, strict=True):
            qkv = _linear(normed, layer.qkv, layer.qkv_bias)
            q, k = ops.rotary(qkv, cos, sin, self.heads, self.kv_heads)
            v = qkv[:, (self.heads + self.kv_heads) * d :]
            keys, values = cached.update(k[:, :, None], v.view(rows, self.kv_heads, 1, d))
            attended = ops.decode_attention(q.view(rows, self.kv_heads, -1, d), keys, values,
                                            live, layer.scaling)
            h, normed = ops.add_rms_norm(
                h, _linear(attended.reshape(rows, -1), layer.o, layer.o_bias), *layer.norm_post)
            mlp = _linear(ops.silu_mul(_linear(normed, layer.gate_up)), layer.down)
            h, normed = ops.add_rms_norm(h, mlp, *next_norm)
        return _linear(normed, self.head).to(torch.float32)


class TorchOps:
    """The step's element-wise operations and attention in torch, operation for operation as
    transformers' Llama code computes them, with the signatures of `rlhfx.decode_kernels`."""

    @staticmethod
    def add_rms_norm(h: Any, delta: Any, weight: Any, eps: float) -> tuple[Any, Any]:
        if delta is not None:
            h = h + delta
        return h, _rms(h, weight, eps)

    @staticmethod
    def rotary(qkv: Any, cos: Any, sin: Any, heads: int, kv_heads: int) -> tuple[Any, Any]:
        rows, d = qkv.shape[0], cos.shape[-1]
        q, k = qkv[:, : (heads + kv_heads) * d].split([heads * d, kv_heads * d], -1)
        cos, sin = cos[:, None], sin[:, None]
        return (_rotate(q.view(rows, heads, d), cos, sin),
                _rotate(k.view(rows, kv_heads, d), cos, sin))

    @staticmethod
    def silu_mul(gate_up: Any) -> Any:
        from torch.nn.functional import silu

        gate, up = gate_up.chunk(2, -1)
        return silu(gate) * up

    @staticmethod
    def decode_attention(query: Any, keys: Any, values: Any, live: Any, scale: float) -> Any:
        from torch.nn.functional import scaled_dot_product_attention

        return scaled_dot_product_attention(query, keys, values,
                                            attn_mask=live[:, None, None, :], scale=scale)


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
