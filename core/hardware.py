"""What the machine computes fast: the one place engines and trainers ask before choosing a
dtype, or an attention for training."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags as Linux's /proc/cpuinfo names them ("avx2", "avx512_bf16",
    "amx_tile"...); empty where there is no such file (another system)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())  # every core lists the same flags
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), as oneDNN sees it.
    Without it torch and vLLM emulate bf16, several times slower than float32."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def has_native_bf16(device: str) -> bool:
    """Whether `device` ("cpu", "cuda", "cuda:1") multiplies bfloat16 natively."""
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return device.startswith("cpu") and cpu_has_native_bf16()


def resolve_dtype(setting: str, device: str) -> str:
    """A `dtype` option made concrete: "auto" is "bfloat16" where `device` computes it natively,
    else "float32" (emulated bf16 would be slower); any other setting is itself."""
    if setting != "auto":
        return setting
    return "bfloat16" if has_native_bf16(device) else "float32"


def attention_dropout(config: Any) -> float:
    """The dropout `config` puts on attention probabilities (each family names it its own way)."""
    for name in ("attention_dropout", "attention_probs_dropout_prob", "attn_pdrop"):
        value = getattr(config, name, None)
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return 0.0


@contextlib.contextmanager
def cpu_training_attention(model: Any, on_cpu: bool, bf16: bool) -> Iterator[None]:
    """Plain attention with cheap dropout masks (`rlhfx.attention`) while `model` trains
    on a CPU in bf16 or with dropout on its attention probabilities; the model's own choice put
    back after. In bf16 the backward of torch's fused attention kernel made a step 10-20% slower
    than plain products and softmax (SmolLM2-135M with LoRA on an AVX512-BF16 CPU, 130 to 1024
    tokens); the fused kernel's own dropout draw was a sixth of a MiniLM reward model's step
    (bf16 or float32). In float32 without attention dropout the two were even, and sampling
    (one query per step, a shared prompt cache) ran faster fused, so neither changes. A model
    without a choice of attention is left alone."""
    network = model.get_base_model() if hasattr(model, "get_base_model") else model
    switch = getattr(network, "set_attn_implementation", None)
    config = getattr(network, "config", None)
    before = getattr(config, "_attn_implementation", None)
    wanted = on_cpu and (bf16 or attention_dropout(config) > 0)
    switched = False
    if wanted and switch is not None and isinstance(before, str):
        from rlhfx.attention import register_attention

        plain = register_attention()
        try:
            if before != plain:
                switch(plain)
                switched = True
        except (ValueError, ImportError, NotImplementedError):  # a model without the choice
            pass
    try:
        yield
    finally:
        if switched and switch is not None:
            switch(before)
