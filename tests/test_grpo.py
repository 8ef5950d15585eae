"""GRPO on the built-in tiny policy: it learns, resumes exactly after kill -9, runs on two
processes, refuses bad options in one line, and loads no reference with beta = 0."""

from __future__ import annotations

import math

import pytest

from rlhfx.testing import run_in_process as run
from rlhfx.testing import run_records as records
from rlhfx.testing import write_algorithm_recipe as write_recipe

SMALL = dict(iterations=2, batch_size=4, k=4, mini_batch_size=8, epochs=2, learning_rate=1e-3,
             min_new_tokens=8, max_new_tokens=8, torch_threads=1)


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


def test_options_run(rlhfx_cli, tmp_path):
    """Dr. GRPO with DAPO's clip-higher and token loss, equal-reward groups dropped, LoRA."""
    options = {**SMALL, "scale_rewards": False, "loss_type": "dr_grpo", "clip_high": 0.28,
               "drop_equal_reward_groups": True, "lora": {"r": 4, "alpha": 8}}
    out = run(rlhfx_cli, write_recipe(tmp_path, "grpo", options), tmp_path / "run")
    recs = records(out)
    assert [r["step"] for r in recs] == [1, 2]
    assert recs[0]["kl_mean"] == pytest.approx(0.0, abs=1e-6)  # LoRA's B starts at 0
    assert all(math.isfinite(r["train_loss"]) for r in recs)



def test_an_iteration_whose_groups_all_tie_trains_nothing_and_goes_on(rlhfx_cli, tmp_path):
    """With tied groups dropped, an iteration in which every group ties has nothing to train
    (early in a hard task every answer scores 0): the run goes on."""
    options = {**SMALL, "beta": 0.0, "drop_equal_reward_groups": True}
    recipe = write_recipe(tmp_path, "grpo", options, reward='{ name = "length", scale = 0.0 }')
    out = run(rlhfx_cli, recipe, tmp_path / "run")
    recs = records(out)
    assert [r["step"] for r in recs] == [1, 2]
    assert all(r["num_trained"] == 0 and r["grpo/equal_reward_groups"] == 4 for r in recs)
