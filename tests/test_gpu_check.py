"""bench/gpu_check.sh without a GPU: it lists its checks, and on a CPU-only machine says so and
stops cleanly (the GPU paths themselves run only where a GPU is lent, never in CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"
CHECKS = ["environment", "install", "model", "sft_throughput", "sft_stage", "reward_model",
          "raft", "ppo", "grpo", "fsdp_sharding", "fsdp_sft", "deepspeed_zero3", "vllm"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})


def test_dry_run_lists_every_check_in_order():
    result = run("--dry-run", "--peak-tflops", "312")
    assert result.returncode == 0, result.stderr
    listed = [line.split(":")[0].strip("- ").strip() for line in result.stdout.splitlines()[1:]]
    assert listed == CHECKS
    assert "peak 312 TFLOP/s" in result.stdout


def test_unknown_option_is_refused():
    result = run("--fast")
    assert result.returncode == 2 and "unknown option: --fast" in result.stderr


def test_without_a_gpu_it_stops_cleanly(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the real checks would run")
    result = run("--out", str(tmp_path), PYTHON=sys.executable)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"skip environment no CUDA device (torch {torch.__version__})",
        "no CUDA device here: nothing else to check",
    ]


def test_shellcheck_is_clean_where_installed():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
