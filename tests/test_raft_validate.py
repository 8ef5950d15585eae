"""RAFT options that `rlhfx validate` catches (lr_scheduler, built-in names) and those checked
when the run starts, before the model loads (training_args keys, which need transformers)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from rlhfx import UserError
from rlhfx.recipe import load_recipe

RECIPE = """\
[stages.align]
policy = "{policy}"
prompts = "{prompts}"
reward = "length"

[stages.align.algorithm]
name = "raft"
iterations = 1
{extra}
"""


def write(tmp_path: Path, policy: str = "builtin:tiny-gpt-neo",
          prompts: str = "builtin:tiny-prompts", extra: str = "") -> Path:
    path = tmp_path / "r.toml"
    path.write_text(RECIPE.format(policy=policy, prompts=prompts, extra=extra), encoding="utf-8")
    return path


def lines_of(path: Path) -> list[str]:
    with pytest.raises(UserError) as caught:
        load_recipe(path)
    return str(caught.value).splitlines()


def test_unknown_lr_scheduler_fails_validation(tmp_path):
    [line] = lines_of(write(tmp_path, extra='lr_scheduler = "cosine_restarts"'))
    assert line.startswith(f"{tmp_path / 'r.toml'}: stages.align.algorithm.lr_scheduler:"), line
    assert "cosine_with_restarts" in line
    load_recipe(write(tmp_path, extra='lr_scheduler = "cosine_with_min_lr"'))


def test_unknown_builtin_model_and_prompt_set_fail_validation(tmp_path):
    lines = lines_of(write(tmp_path, policy="builtin:tiny-gpt-neox", prompts="builtin:nope"))
    assert lines == [
        f"{tmp_path / 'r.toml'}: stages.align.policy: unknown built-in model "
        "'builtin:tiny-gpt-neox' (known: builtin:tiny-gpt-neo)",
        f"{tmp_path / 'r.toml'}: stages.align.prompts: unknown built-in prompt set "
        "'builtin:nope' (known: builtin:tiny-prompts, builtin:tiny-eval-prompts)",
    ]
    # a prompt set is no model
    [line] = lines_of(write(tmp_path, policy="builtin:tiny-prompts"))
    assert "unknown built-in model 'builtin:tiny-prompts'" in line


def test_validation_does_not_import_transformers(tmp_path):
    import subprocess
    import sys

    path = write(tmp_path, extra='training_args = { bogus_option = 1 }')
    code = (
        "import sys; from rlhfx.recipe import load_recipe; load_recipe(sys.argv[1]); "
        "print('transformers' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_unknown_training_args_key_fails_before_the_model_loads(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import rlhfx.models as loop
    from rlhfx.runner import run_recipe

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before training_args were checked")

    monkeypatch.setattr(loop, "load_causal_lm", no_loading)
    path = write(tmp_path, extra='training_args = { gradient_checkpointing = true, bogus = 1 }')
    with pytest.raises(UserError) as caught:
        run_recipe(load_recipe(path), console=Console(file=io.StringIO()),
                   output_dir=tmp_path / "run")
    assert str(caught.value) == (
        f"{path}: stages.align.algorithm.training_args.bogus: not an option of "
        "transformers.TrainingArguments"
    )
