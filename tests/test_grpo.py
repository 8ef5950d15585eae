"""GRPO on the built-in tiny policy: it learns, resumes exactly after kill -9, runs on two
processes, refuses bad options in one line, and loads no reference with beta = 0."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from critic_free_runs import (
    LENGTH,
    RECIPES,
    final_weights,
    rising,
    run,
    same_weights,
    write_recipe,
)
from fixtures.runs import kill_then_resume, records, subprocess_env

SMALL = dict(iterations=2, batch_size=4, k=4, mini_batch_size=8, epochs=2, learning_rate=1e-3,
             min_new_tokens=8, max_new_tokens=8, torch_threads=1)


@pytest.mark.slow
def test_tiny_grpo_recipe_raises_the_reward(rlhfx_cli, tmp_path):
    out = run(rlhfx_cli, RECIPES / "tiny_grpo.toml", tmp_path / "run")
    recs = [r for r in records(out) if r["step"] > 0]
    assert [r["step"] for r in recs] == list(range(1, 25))
    for r in recs:
        for key in ("train_loss", "kl_mean", "learning_rate", "grpo/clip_fraction",
                    "grpo/entropy", "grpo/equal_reward_groups", "grpo/advantage_std"):
            assert key in r and math.isfinite(r[key]), (r["step"], key)
    assert recs[0]["kl_mean"] == pytest.approx(0.0, abs=1e-5)  # policy == reference
    first, last = rising([r["reward_mean"] for r in recs])
    assert last > first + 2.0, (first, last)


def test_one_iteration_metrics_and_marks(rlhfx_cli, tmp_path):
    import json

    out = run(rlhfx_cli, write_recipe(tmp_path, "grpo", {**SMALL, "iterations": 1}),
              tmp_path / "run")
    (rec,) = records(out)
    assert rec["grpo/optimizer_steps"] == 4  # 16 answers / 8 per step x 2 epochs
    assert rec["grpo/groups"] == 4
    rows = [json.loads(line) for line in (out / "stages" / "align" / "iterations" / "iter-0001"
                                          / "samples.jsonl").read_text().splitlines()]
    assert rec["num_trained"] == sum(r["trained"] for r in rows)
    trained = [r for r in rows if r["trained"]]
    assert trained and all("advantage" in r for r in trained)
    # advantages of a group sum to 0 (reward minus the group mean, scaled)
    by_prompt: dict[str, list[float]] = {}
    for r in trained:
        by_prompt.setdefault(r["prompt"], []).append(r["advantage"])
    for values in by_prompt.values():
        if len(values) == 4:
            assert sum(values) == pytest.approx(0.0, abs=1e-4)


def test_beta_zero_loads_no_reference(rlhfx_cli, tmp_path, monkeypatch):
    from rlhfx.alignment.setup import AlignmentSetup

    def refuse(self, policy):
        raise AssertionError("a reference was loaded with beta = 0")

    monkeypatch.setattr(AlignmentSetup, "reference", refuse)
    out = run(rlhfx_cli, write_recipe(tmp_path, "grpo", {**SMALL, "beta": 0.0,
                                                          "iterations": 1}), tmp_path / "run")
    (rec,) = records(out)
    assert "kl_mean" not in rec and math.isfinite(rec["train_loss"])


@pytest.mark.parametrize("options, message", [
    ({"k": 1}, "stages.align.algorithm: k = 1: a group baseline needs at least 2"),
    ({"beta": -0.1}, "stages.align.algorithm.beta"),
    ({"clip_low": 0.3, "clip_high": 0.2}, "the clip ranges are inverted"),
    ({"clip_high": -0.1}, "stages.align.algorithm.clip_high"),
    ({"loss_type": "mean"}, "stages.align.algorithm.loss_type"),
])
def test_bad_options_are_one_line_errors(rlhfx_cli, tmp_path, options, message):
    recipe = write_recipe(tmp_path, "grpo", {**SMALL, **options})
    result = rlhfx_cli("validate", str(recipe))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_options_run(rlhfx_cli, tmp_path):
    """Dr. GRPO with DAPO's clip-higher and token loss, equal-reward groups dropped, LoRA."""
    options = {**SMALL, "scale_rewards": False, "loss_type": "dr_grpo", "clip_high": 0.28,
               "drop_equal_reward_groups": True, "lora": {"r": 4, "alpha": 8}}
    out = run(rlhfx_cli, write_recipe(tmp_path, "grpo", options), tmp_path / "run")
    recs = records(out)
    assert [r["step"] for r in recs] == [1, 2]
    assert recs[0]["kl_mean"] == pytest.approx(0.0, abs=1e-6)  # LoRA's B starts at 0
    assert all(math.isfinite(r["train_loss"]) for r in recs)


@pytest.mark.slow
def test_resume_after_kill_matches_an_uninterrupted_run(rlhfx_cli, tmp_path):
    options = {**SMALL, "iterations": 6, "save_every": 1}
    recipe = write_recipe(tmp_path, "grpo", options, reward=LENGTH)
    killed = tmp_path / "killed"
    assert 3 <= kill_then_resume(recipe, killed) < 6
    assert "resuming after iteration" in (killed / "run.log").read_text()

    reference = run(rlhfx_cli, recipe, tmp_path / "reference")
    got, want = records(killed), records(reference)
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(got, want, strict=True):
        for key in ("reward_mean", "kl_mean", "train_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)
    assert same_weights(final_weights(killed), final_weights(reference))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is not installed")
def test_two_processes_under_torchrun(tmp_path):
    """Two CPU workers, 3 prompts x 2 answers in 3 mini-batches: one worker holds 4 answers
    and the other 2, so each epoch's last mini-batch finds one worker idle; both must stay in
    step (the checkpoint compares their weights)."""
    recipe = write_recipe(tmp_path, "grpo", {**SMALL, "batch_size": 3, "k": 2,
                                             "mini_batch_size": 2, "iterations": 2},
                          reward=LENGTH)
    out = tmp_path / "run"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    result = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", "29533", "-m", "rlhfx.cli",
         "run", str(recipe), "-o", str(out)],
        env=subprocess_env(), capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "2 process(es)" in (out / "run.log").read_text()
    recs = records(out)
    assert [r["step"] for r in recs] == [1, 2]
    assert all(r["num_samples"] == 6 and r["grpo/optimizer_steps"] == 6 for r in recs)
    assert any(r["grpo/idle_minibatches"] > 0 for r in recs)
    assert (out / "stages" / "align" / "model" / "config.json").exists()
