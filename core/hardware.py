"""What the machine computes fast: the one place engines and trainers ask before choosing a
dtype, or an attention kernel for training."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


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


@contextlib.contextmanager
def bf16_cpu_attention(model: Any, active: bool = True) -> Iterator[None]:
    """Plain (eager) attention while `model` trains in bf16 on a CPU (`active`), the model's own
    choice put back after. There the backward of torch's fused attention kernel made a step
    10-20% slower than eager's products and softmax (SmolLM2-135M with LoRA on an AVX512-BF16
    CPU, 130 to 1024 tokens); in float32 the two were even, and sampling (one query per step,
    a shared prompt cache) ran faster fused, so neither changes. A model without a choice is
    left alone."""
    network = model.get_base_model() if hasattr(model, "get_base_model") else model
    switch = getattr(network, "set_attn_implementation", None)
    before = getattr(getattr(network, "config", None), "_attn_implementation", None)
    switched = False
    if active and switch is not None and isinstance(before, str) and before != "eager":
        try:
            switch("eager")
            switched = True
        except (ValueError, ImportError, NotImplementedError):  # a model without eager
            pass
    try:
        yield
    finally:
        if switched and switch is not None:
            switch(before)
