"""The fused decode step's own kernels (`decode_kernels.cpp`), on CPUs with AVX512-BF16.

At a decode step (one new token a row) torch spends most of a small model's non-product time
on fixed costs: its CPU attention kernel is made for blocks of queries and at one query a row
sets up more than it computes (SmolLM2-135M, 48 rows, ~120 cached positions: about 0.5 ms a
layer), and each small element-wise operation (RMSNorm alone is eight) costs 10-20 us
however little it computes. The kernels here do each job in one pass:

- `decode_attention(query, keys, values, live, scale)`: each (row, key-value head) one task,
  the query heads sharing it scored with AVX512-BF16 dot products, leading padding skipped;
  float32 scores and softmax, bf16 probabilities times bf16 values (as torch's kernel does).
- `add_rms_norm(h, delta, weight, eps)`: the residual addition and Llama's RMSNorm.
- `rotary(qkv, cos, sin, heads, kv_heads)`: the rotary embedding of q and k straight from
  the q/k/v product.
- `silu_mul(gate_up)`: SiLU of the gate times the up projection.

They round to bf16 where transformers' Llama code does; results differ from it only where a
float32 sum is taken in another order (attention, RMSNorm's mean) or exp differs in its last
bits: the same numbers up to rounding, not bit for bit.

The library is compiled from source the first time it is needed, with the system's C++
compiler through torch's extension builder (about 15 s; kept under torch's extension folder,
`TORCH_EXTENSIONS_DIR`, for later runs). Without AVX512-BF16, on another system than Linux, or
where the build fails (no compiler: a warning says so), `kernels()` is None and the decode step
computes with torch's operations.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import re
import shutil
from pathlib import Path
from typing import Any

from rlhfx.hardware import cpu_flags

log = logging.getLogger("rlhfx")
SOURCE = Path(__file__).with_name("decode_kernels.cpp")
_FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512bf16",
          "-mfma", "-fopenmp"]


def fits(head_size: int, group: int, hidden: int, inner: int) -> bool:
    """Whether the kernels compute a model with heads of `head_size`, `group` query heads
    sharing each key-value head, `hidden` features and an MLP `inner` wide."""
    return head_size in (64, 128) and 1 <= group <= 16 and hidden % 16 == 0 and inner % 16 == 0


@functools.cache
def kernels() -> Any:
    """The kernels (`torch.ops.rlhfx`), built on first use, or None where they cannot run here.

    `decode_attention`'s query is [rows, kv_heads, group, head_size] bf16 (contiguous); keys
    and values [rows, kv_heads, >= positions, head_size] bf16, each position's vector
    contiguous (a view of a longer cache buffer is fine); live [rows, positions] bool, False at
    padding. It returns the attended values in the query's shape."""
    if platform.machine().lower() not in ("x86_64", "amd64") or "avx512_bf16" not in cpu_flags():
        return None
    import torch

    try:
        from torch.utils.cpp_extension import load

        _find_ninja()
        log.info("rlhfx: loading the decode step's kernels (compiled the first time, about 15 s)")
        # one build per torch version: a library built against another torch must not load
        version = re.sub(r"\W", "_", torch.__version__)
        load(name=f"rlhfx_decode_kernels_{version}", sources=[str(SOURCE)],
             extra_cflags=_FLAGS, extra_ldflags=["-fopenmp"], is_python_module=False)
    except Exception as error:  # no compiler, no ninja, a failed build: torch's operations
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        log.warning("rlhfx: could not build the decode step's kernels (%s); sampling uses "
                    "torch's operations instead", reason[:200])
        return None
    return torch.ops.rlhfx


def _find_ninja() -> None:
    """Put the `ninja` of the installed Python package on PATH where no other is: torch's
    builder runs it by name, and a virtual environment's scripts are on PATH only when it is
    activated."""
    if shutil.which("ninja") is None:
        import ninja

        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])
