"""What the machine computes fast: the one place rollout engines ask before choosing a dtype."""

from __future__ import annotations


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
