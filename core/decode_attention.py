"""The decode step's attention (one new query a row against the KV cache) from our own kernel,
on CPUs with AVX512-BF16.

torch's CPU attention kernel is made for blocks of queries: at one query a row it spends most
of its time on set-up and on products too small to fill the vector units (SmolLM2-135M, 48
rows, ~120 cached positions: about 0.5 ms a layer, a quarter of the fused decode step).
`decode_attention.cpp` gives each (row, key-value head) to one thread and scores the query heads
sharing it with AVX512-BF16 dot products: about half the time. Its numbers are torch's kernel's
up to rounding (float32 scores and softmax, bf16 probabilities times bf16 values, as there),
not bit for bit.

The kernel is compiled from source the first time it is needed, with the system's C++
compiler through torch's extension builder (about 15 s; kept under torch's extension folder,
`TORCH_EXTENSIONS_DIR`, for later runs). Without AVX512-BF16, on another system than Linux, or
where the build fails (no compiler: a warning says so), `kernel()` is None and the decode step
uses torch's attention.
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
SOURCE = Path(__file__).with_name("decode_attention.cpp")
#: head sizes and query heads per key-value head the kernel computes
HEAD_SIZES = (64, 128)
MAX_GROUP = 16
_FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512bf16",
          "-mfma", "-fopenmp"]


def fits(head_size: int, group: int) -> bool:
    """Whether the kernel computes heads of `head_size` with `group` query heads sharing one
    key-value head."""
    return head_size in HEAD_SIZES and 1 <= group <= MAX_GROUP


@functools.cache
def kernel() -> Any:
    """`torch.ops.rlhfx.decode_attention(query, keys, values, live, scale)`, built on first use,
    or None where it cannot run here.

    query [rows, kv_heads, group, head_size] bf16 (contiguous); keys, values [rows, kv_heads,
    >= positions, head_size] bf16, each position's vector contiguous (a view of a longer cache
    buffer is fine); live [rows, positions] bool, False at padding. Returns the attended values
    in the query's shape."""
    if platform.machine().lower() not in ("x86_64", "amd64") or "avx512_bf16" not in cpu_flags():
        return None
    import torch

    try:
        from torch.utils.cpp_extension import load

        _find_ninja()
        log.info("rlhfx: compiling the decode attention kernel (first use only, about 15 s)")
        # one build per torch version: a library built against another torch must not load
        version = re.sub(r"\W", "_", torch.__version__)
        load(name=f"rlhfx_decode_attention_{version}", sources=[str(SOURCE)],
             extra_cflags=_FLAGS, extra_ldflags=["-fopenmp"], is_python_module=False)
    except Exception as error:  # no compiler, no ninja, a failed build: torch's attention
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        log.warning("rlhfx: could not build the decode attention kernel (%s); sampling uses "
                    "torch's attention instead", reason[:200])
        return None
    return torch.ops.rlhfx.decode_attention


def _find_ninja() -> None:
    """Put the `ninja` of the installed Python package on PATH where no other is: torch's
    builder runs it by name, and a virtual environment's scripts are on PATH only when it is
    activated."""
    if shutil.which("ninja") is None:
        import ninja

        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])
