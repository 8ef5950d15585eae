"""Growing a finished RAFT run's `iterations` continues it from its checkpoint, and a `weighted`
reward's running statistics travel in the checkpoint, so the continued run scores exactly as an
uninterrupted one."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from rich.console import Console

from rlhfx.recipe import load_recipe
from rlhfx.runner import run_recipe

SMALL = {
    "batch_size": 4, "k": 2, "min_new_tokens": 4, "max_new_tokens": 6, "epochs": 1,
    "learning_rate": 1e-3, "train_batch_size": 2, "eval_max_prompts": 4, "torch_threads": 1,
}


def write_recipe(path: Path, iterations: int, **extra: Any) -> Path:
    settings = {**SMALL, "iterations": iterations, **extra}
    lines = [
        "[run]", "seed = 5", "",
        "[stages.align]",
        'policy = "builtin:tiny-gpt-neo"',
        'prompts = "builtin:tiny-prompts"',
        'eval_prompts = "builtin:tiny-eval-prompts"',
        "",
        "[stages.align.algorithm]",
        'name = "raft"',
        *(f"{k} = {json.dumps(v)}" for k, v in settings.items()),
        "",
        "[stages.align.reward]",
        'name = "weighted"',
        'terms = [{ source = { name = "length", scale = 0.1 }, normalize = "running" },',
        '         { source = { name = "pattern_penalty", rules = [{ pattern = "#", '
        'penalty = -1.0 }] } }]',
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(recipe: Path, out: Path) -> str:
    console = Console(file=io.StringIO(), width=200)
    run_recipe(load_recipe(recipe), console=console, output_dir=out)
    return console.file.getvalue()  # type: ignore[attr-defined]


def metrics(out: Path) -> list[dict[str, Any]]:
    path = out / "stages" / "align" / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_grown_iterations_continue_from_the_checkpoint_and_score_the_same(tmp_path):
    whole = tmp_path / "whole"
    run(write_recipe(tmp_path / "two.toml", 2), whole)

    parts = tmp_path / "parts"
    run(write_recipe(tmp_path / "grow.toml", 1), parts)
    first = parts / "stages" / "align" / "iterations" / "iter-0001" / "trained.jsonl"
    before = first.stat().st_mtime_ns
    write_recipe(tmp_path / "grow.toml", 2, save_samples=False)  # also resume-neutral
    run(tmp_path / "grow.toml", parts)

    assert first.stat().st_mtime_ns == before  # iteration 1 was not done again
    assert "resuming after iteration 1" in (parts / "run.log").read_text(encoding="utf-8")
    grown, straight = metrics(parts), metrics(whole)
    assert [r["step"] for r in grown] == [0, 1, 2]
    # iteration 2 normalises with the statistics of iteration 1, restored from the checkpoint
    # (and untouched by the evals); without them its rewards would differ.
    for key in ("reward_mean", "reward_std", "trained_reward_mean", "eval_reward_mean"):
        assert grown[2][key] == straight[2][key], key
    state = json.loads((parts / "run_state.json").read_text())["stages"]["align"]
    assert state["status"] == "completed"
    assert json.loads((parts / "stages/align/alignment.json").read_text())["iterations"] == 2

    run(tmp_path / "grow.toml", parts)  # nothing changed now: skipped
    assert [r["step"] for r in metrics(parts)] == [0, 1, 2]


@pytest.mark.parametrize(("changes", "same"), [
    ({"iterations": 9}, True),
    ({"torch_threads": 2, "keep_checkpoints": 3, "eval_every": 2, "save_samples": False,
      "distinct2_warn_fraction": 0.9, "cleaner_rate_warn_increase": 0.5}, True),
    ({"learning_rate": 0.5}, False),
    ({"k": 3}, False),
])
def test_fingerprint_leaves_out_only_resume_neutral_keys(tmp_path, changes, same):
    base = load_recipe(write_recipe(tmp_path / "a.toml", 1))
    other = load_recipe(write_recipe(tmp_path / "b.toml", changes.pop("iterations", 1), **changes))
    assert (base.stage_fingerprint("align") == other.stage_fingerprint("align")) is same
    # the exact print sees every change: a completed stage is re-entered, not skipped
    assert base.stage_fingerprint("align", exact=True) != other.stage_fingerprint(
        "align", exact=True
    )


@pytest.mark.parametrize(("latest", "state", "message"), [
    ("{not json", None, r"latest\.json: not valid JSON"),
    ('{"dir": "iter-0009"}', None, r"latest\.json: names no checkpoint directory"),
    ('{"dir": "iter-0001"}', "[1, 2", r"loop\.json: not valid JSON"),
    ('{"dir": "iter-0001"}', '{"bogus": 1, "iteration": "x", "extra": 2}', None),
    ('{"dir": "iter-0001"}', "[]", r"loop\.json: expected a JSON object"),
])
def test_damaged_checkpoint_files_are_user_errors(tmp_path, latest, state, message):
    from rlhfx import UserError
    from rlhfx.alignment.checkpoints import Checkpoints

    (tmp_path / "iter-0001").mkdir()
    (tmp_path / "latest.json").write_text(latest, encoding="utf-8")
    if state is not None:
        (tmp_path / "iter-0001" / "loop.json").write_text(state, encoding="utf-8")
    if message is None:  # unknown keys are ignored (older/newer writers)
        assert Checkpoints(tmp_path).latest() is not None
        return
    with pytest.raises(UserError, match=message) as info:
        Checkpoints(tmp_path).latest()
    assert "--restart-from" in str(info.value)


def test_bfloat16_trains_float32_weights_with_mixed_precision(tmp_path, monkeypatch):
    import torch

    import rlhfx.plugins.raft.train as loop

    seen: dict[str, Any] = {}
    real = loop.finetune

    def watching(model, tokenizer, examples, args, progress=None):
        seen["dtypes"] = {p.dtype for p in model.parameters() if p.requires_grad}
        seen["bf16"] = args.bf16
        return real(model, tokenizer, examples, args, progress)

    monkeypatch.setattr(loop, "finetune", watching)
    out = tmp_path / "run"
    run(write_recipe(tmp_path / "r.toml", 1, dtype="bfloat16", eval_max_prompts=2), out)
    assert seen == {"dtypes": {torch.float32}, "bf16": True}
    [record] = [r for r in metrics(out) if r["step"] == 1]
    assert record["train_loss"] is not None and record["reward_mean"] is not None
