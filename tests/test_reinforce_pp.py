"""REINFORCE++ and REINFORCE++-baseline on the built-in tiny policy."""

from __future__ import annotations

import math

import pytest

from rlhfx.testing import (
    final_weights,
    rising,
    same_weights,
)
from rlhfx.testing import run_in_process as run
from rlhfx.testing import run_records as records
from rlhfx.testing import write_algorithm_recipe as write_recipe

SMALL = dict(iterations=2, batch_size=8, k=2, learning_rate=1e-3, min_new_tokens=8,
             max_new_tokens=8, torch_threads=1)
#: The test recipe: 16 prompts x 1 answer per iteration, batch-whitened returns, KL in the
#: reward; tiny_ppo.toml's task and sizes.
LEARNS = dict(iterations=24, batch_size=16, k=1, mini_batch_size=8, epochs=2,
              learning_rate=3e-3, beta=0.01, min_new_tokens=16, max_new_tokens=16,
              inference_batch_size=16, torch_threads=1, save_every=24)


@pytest.mark.slow
def test_reinforce_pp_baseline_raises_the_reward(rlhfx_cli, tmp_path):
    """The `-baseline` variant (plain REINFORCE++ learns in tests/test_algorithm_contract.py)."""
    options = dict(LEARNS, baseline=True, k=4, batch_size=4)
    out = run(rlhfx_cli, write_recipe(tmp_path, "reinforce_pp", options), tmp_path / "run")
    recs = records(out)
    assert len(recs) == 24
    for r in recs:
        for key in ("train_loss", "kl_mean", "reinforce_pp/advantage_std"):
            assert key in r and math.isfinite(r[key]), (r["step"], key)
    # whitened over the batch: mean 0, std 1 over the batch's tokens
    assert recs[0]["reinforce_pp/advantage_mean"] == pytest.approx(0.0, abs=1e-4)
    assert recs[0]["reinforce_pp/advantage_std"] == pytest.approx(1.0, abs=1e-3)
    first, last = rising([r["reward_mean"] for r in recs])
    assert last > first + 2.0, (first, last)


def test_baseline_needs_two_samples(rlhfx_cli, tmp_path):
    recipe = write_recipe(tmp_path, "reinforce_pp", {**SMALL, "k": 1, "baseline": True})
    result = rlhfx_cli("validate", str(recipe))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "k = 1: baseline = true subtracts each prompt's mean reward" in result.output
    plain = write_recipe(tmp_path, "reinforce_pp", {**SMALL, "k": 1}, file="plain.toml")
    assert rlhfx_cli("validate", str(plain)).exit_code == 0


def test_more_iterations_continue_where_the_run_stopped(rlhfx_cli, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    options = {**SMALL, "baseline": True, "epochs": 2, "mini_batch_size": 8}
    out = run(rlhfx_cli, write_recipe(tmp_path / "a", "reinforce_pp", options), tmp_path / "c")
    run(rlhfx_cli, write_recipe(tmp_path / "a", "reinforce_pp", {**options, "iterations": 3}),
        tmp_path / "c")
    straight = run(rlhfx_cli, write_recipe(tmp_path / "b", "reinforce_pp",
                                           {**options, "iterations": 3}), tmp_path / "s")
    assert [r["step"] for r in records(out)] == [1, 2, 3]
    assert same_weights(final_weights(out), final_weights(straight))
