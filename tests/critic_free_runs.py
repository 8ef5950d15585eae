"""Driving GRPO / RLOO / REINFORCE++ runs on the built-in tiny policy in tests."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

WORD_BONUS = '{ name = "pattern_penalty", rules = [{ pattern = "[A-Za-z]{3,}", penalty = -1.0 }] }'
LENGTH = '{ name = "length", unit = "chars" }'
RECIPES = Path(__file__).parent.parent / "recipes"


def toml_value(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def write_recipe(tmp_path: Path, name: str, options: dict, reward: str = WORD_BONUS,
                 seed: int = 3, file: str = "recipe.toml") -> Path:
    fields = ", ".join(f"{k} = {toml_value(v)}" for k, v in {"name": name, **options}.items())
    path = tmp_path / file
    path.write_text(
        f'[run]\nseed = {seed}\n\n[stages.align]\npolicy = "builtin:tiny-gpt-neo"\n'
        f'prompts = "builtin:tiny-prompts"\nreward = {reward}\nalgorithm = {{ {fields} }}\n',
        encoding="utf-8",
    )
    return path


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "stages" / "align" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def run(rlhfx_cli, recipe: Path, out: Path) -> Path:
    result = rlhfx_cli("run", str(recipe), "-o", str(out))
    assert result.exit_code == 0, result.output
    return out


def final_weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "stages" / "align" / "model" / "model.safetensors"))


def same_weights(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def rising(rewards: list[float], n: int = 5) -> tuple[float, float]:
    """Mean reward of the first and the last n iterations."""
    return sum(rewards[:n]) / n, sum(rewards[-n:]) / n


def subprocess_env() -> dict[str, str]:
    import torch

    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rlhfx.cli", *args]


def kill_then_resume(recipe: Path, out: Path, after_records: int = 3) -> int:
    """Run `recipe` in a subprocess, SIGKILL it once `after_records` metrics records are
    written, then run the same command again; returns how many records the killed run had."""
    import signal
    import subprocess
    import time

    metrics = out / "stages" / "align" / "metrics.jsonl"
    proc = subprocess.Popen(cli_command("run", str(recipe), "-o", str(out)),
                            env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= after_records:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = len(records(out))
    resumed = subprocess.run(cli_command("run", str(recipe), "-o", str(out)),
                             env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return done
