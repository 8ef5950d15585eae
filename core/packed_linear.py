"""Linear layers computing from weights pre-packed for oneDNN, while a model samples.

A bf16 product on a CPU through `F.linear` hands oneDNN a plain row-major weight, which it
lays out again for its kernel at every call; sampling calls every layer once a token. Packed
once per sampling call (`torch.ops.mkldnn._reorder_linear_weight`, as inductor's CPU code
does when it freezes a model), the products give the same numbers bit for bit (those
`F.linear` gives for a contiguous input; a probe checks it at first use), 10-30% faster at
a decode step's shapes, the LM head's the most (SmolLM2-135M, 48 rows, 2 threads of an
AVX512-BF16 EPYC: 269 -> 358 GFLOP/s). Only bf16 weights are packed: in float32 the packed
kernel adds in another order (other rounding), and float32 sampling keeps `generate`'s
numbers.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

#: smaller weights gain nothing worth a reorder
_MIN_ELEMENTS = 1 << 16


@contextlib.contextmanager
def packed_linears(model: Any, rows: int) -> Iterator[int]:
    """Within the block, `model`'s bf16 CPU linear layers compute without gradients from
    weights packed for `rows` rows at a time; yields how many layers were packed. Weights,
    gradients and anything saved are untouched; the layers are put back after."""
    import torch

    packed: list[Any] = []
    try:
        for module in model.modules():
            if type(module) is not torch.nn.Linear:
                continue
            weight = pack(module.weight.detach(), rows)
            if weight is not None:
                module.packed_weight = weight
                packed.append(module)
                module.__class__ = _packed_class()
        yield len(packed)
    finally:
        for module in packed:
            module.__class__ = torch.nn.Linear
            del module.packed_weight


def pack(weight: Any, rows: int) -> Any:
    """`weight` (bf16, on the CPU) laid out for oneDNN's product at `rows` rows at a time, or
    None where that gains nothing or would not give `F.linear`'s numbers."""
    import torch

    if (weight.dtype != torch.bfloat16 or weight.device.type != "cpu"
            or weight.numel() < _MIN_ELEMENTS or not packing_works()):
        return None
    return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), max(1, rows))


def packed_product(x: Any, packed: Any, bias: Any = None) -> Any:
    """`F.linear(x, weight, bias)` from `pack(weight, rows)`."""
    import torch

    # the packed kernel reads its input as contiguous: a strided view gives wrong rows
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, bias, "none", [], "")


@functools.cache
def _packed_class() -> type:
    import torch

    class PackedLinear(torch.nn.Linear):
        packed_weight: Any

        def forward(self, x: Any) -> Any:
            if torch.is_grad_enabled() or x.dtype != self.packed_weight.dtype:
                return super().forward(x)
            return packed_product(x, self.packed_weight, self.bias)

    return PackedLinear


@functools.cache
def packing_works() -> bool:
    """Whether this torch packs bf16 weights and its packed products equal `F.linear`'s."""
    import torch

    try:
        if not (torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return False
        generator = torch.Generator().manual_seed(0)
        weight = torch.randn(96, 80, generator=generator).to(torch.bfloat16)
        bias = torch.randn(96, generator=generator).to(torch.bfloat16)
        x = torch.randn(5, 3, 80, generator=generator).to(torch.bfloat16)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, 15)
        got = torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
        return bool(torch.equal(got, torch.nn.functional.linear(x, weight, bias)))
    except (AttributeError, RuntimeError):  # a torch without these ops
        return False
