"""What a benchmark's numbers depend on: the CPU's vector and matrix extensions and the load.

    from machine import describe      # from a script in bench/ (its folder is on sys.path)
    print(describe())

Wall times on a CPU move with AVX2 / AVX-512, native bf16 (AVX512-BF16, AMX) and with what else
the machine is doing, so every timing should be printed beside these.
"""

from __future__ import annotations

import os

from rlhfx import hardware

#: The flags worth naming, as /proc/cpuinfo spells them.
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_flags(cpuinfo: str | None = None) -> dict[str, bool]:
    """Which of FLAGS the CPU has (all False where /proc/cpuinfo is missing: not Linux)."""
    found = hardware.cpu_flags(cpuinfo)
    return {flag: flag in found for flag in FLAGS}


def load() -> str:
    """The load average over 1, 5 and 15 minutes."""
    return "{:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg())


def describe(cpuinfo: str | None = None) -> str:
    """One line: CPU count, the flags present and absent, the load average now."""
    flags = cpu_flags(cpuinfo)
    have = ", ".join(f for f, on in flags.items() if on) or "none"
    lack = ", ".join(f for f, on in flags.items() if not on) or "none"
    return (f"{os.cpu_count()} CPUs; flags: {have} (not: {lack}); "
            f"load average (1/5/15 min) {load()}")
