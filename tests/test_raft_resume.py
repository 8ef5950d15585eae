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


@pytest.mark.parametrize("damage", ["loop.json", "algorithm.safetensors", "algorithm.json"])
def test_a_damaged_checkpoint_is_set_aside_and_the_previous_one_used(tmp_path, damage, caplog):
    import logging

    import torch

    from rlhfx.alignment.checkpoints import Checkpoints, LoopState

    log = logging.getLogger("test_damaged")
    root = tmp_path / "checkpoints"
    ckpts = Checkpoints(root, keep=2)
    for it in (1, 2):
        ckpts.save(LoopState(iteration=it), {"policy": {"w": torch.zeros(2)}})
    (root / "iter-0002" / damage).write_bytes(b"[1, 2")  # truncated
    with caplog.at_level(logging.WARNING, logger="test_damaged"):
        path, problem = ckpts.find_intact(log)
    assert path == root / "iter-0001" and problem is None
    assert (tmp_path / "checkpoints-set-aside" / "iter-0002" / damage).exists()  # kept
    assert any("iter-0002" in r.getMessage() and "damaged" in r.getMessage()
               for r in caplog.records)
    # the only one left is damaged too: a clean error with the way out
    (root / "iter-0001" / damage).write_bytes(b"")
    path, problem = ckpts.find_intact(log)
    assert path is None and "no intact checkpoint left" in problem
    assert "run the same command again to start this stage over" in problem
    assert not list(root.glob("iter-*"))


def test_a_garbled_latest_json_falls_back_to_the_newest_checkpoint(tmp_path, caplog):
    import logging

    import torch

    from rlhfx.alignment.checkpoints import Checkpoints, LoopState

    ckpts = Checkpoints(tmp_path, keep=2)
    for it in (1, 2):
        ckpts.save(LoopState(iteration=it), {"policy": {"w": torch.zeros(2)}})
    (tmp_path / "latest.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert ckpts.find_intact(logging.getLogger("t"))[0] == tmp_path / "iter-0002"
    assert "latest.json: not valid JSON" in caplog.text


def test_bfloat16_trains_float32_weights_with_mixed_precision(tmp_path, monkeypatch):
    import torch

    import rlhfx.plugins.raft.train as loop

    seen: dict[str, Any] = {}
    real = loop.finetune

    def watching(model, tokenizer, examples, args, **options):
        seen["dtypes"] = {p.dtype for p in model.parameters() if p.requires_grad}
        seen["bf16"] = args.bf16
        return real(model, tokenizer, examples, args, **options)

    monkeypatch.setattr(loop, "finetune", watching)
    out = tmp_path / "run"
    run(write_recipe(tmp_path / "r.toml", 1, dtype="bfloat16", eval_max_prompts=2), out)
    assert seen == {"dtypes": {torch.float32}, "bf16": True}
    [record] = [r for r in metrics(out) if r["step"] == 1]
    assert record["train_loss"] is not None and record["reward_mean"] is not None
