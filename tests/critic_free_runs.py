"""Driving GRPO / RLOO / REINFORCE++ runs on the built-in tiny policy in tests."""

from __future__ import annotations

import json
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
