"""online_dpo: pairs from hand-made samples, learning on the tiny task, exact resume after
kill -9, two processes under torchrun, and bad options refused in one line."""

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

from rlhfx import Sample
from rlhfx.plugins.online_dpo import DROPPED_PREFIX, preference_pairs

SMALL = dict(iterations=2, batch_size=4, k=4, mini_batch_size=4, epochs=2, learning_rate=1e-3,
             beta=0.1, min_new_tokens=8, max_new_tokens=8, torch_threads=1)


def sample(prompt_id: int, n: int, reward: float | None, status: str = "kept",
           tokens: tuple[int, ...] = (5, 6)) -> Sample:
    return Sample(prompt_id=prompt_id, sample=n, prompt=f"p{prompt_id}", raw_response="r",
                  response="r", reward=reward, discarded=reward is None, token_status=status,
                  prompt_ids=[1, 2], response_ids=list(tokens))


def test_pairs_skip_ties_prefix_cuts_discarded_and_lonely_samples():
    samples = [
        sample(0, 0, 1.0), sample(0, 1, 3.0), sample(0, 2, 2.0),    # best 1, worst 0
        sample(1, 0, 2.0), sample(1, 1, 2.0),                        # tie: skipped, counted
        sample(2, 0, None), sample(2, 1, 1.0),                       # one usable: no pair
        sample(3, 0, 4.0, status="prefix"), sample(3, 1, 0.0), sample(3, 2, 1.0),
        sample(4, 0, 3.0), sample(4, 1, 3.0), sample(4, 2, 0.0),     # equal best: the first
        sample(5, 0, 9.0, tokens=()), sample(5, 1, 1.0), sample(5, 2, 0.5),
    ]
    pairs, counts = preference_pairs(samples)
    got = [((c.prompt_id, c.sample), (r.prompt_id, r.sample)) for c, r in pairs]
    assert got == [((0, 1), (0, 0)), ((3, 2), (3, 1)), ((4, 0), (4, 2)), ((5, 1), (5, 2))]
    assert counts["tied_groups"] == 1
    assert counts["short_groups"] == 1
    assert counts["dropped_prefix"] == 1 and counts["dropped_empty"] == 1
    assert counts["dropped_unscored"] == 1
    assert samples[7].extra["dropped"] == DROPPED_PREFIX


def test_no_usable_group_gives_no_pairs():
    pairs, counts = preference_pairs([sample(0, 0, 1.0), sample(0, 1, 1.0), sample(1, 0, None)])
    assert pairs == [] and counts["tied_groups"] == 1 and counts["short_groups"] == 1


@pytest.mark.parametrize("options, message", [
    ({"k": 1}, "stages.align.algorithm.k"),
    ({"beta": 0.0}, "stages.align.algorithm.beta"),
    ({"beta": -0.5}, "stages.align.algorithm.beta"),
    ({"mini_batch_size": 0}, "stages.align.algorithm.mini_batch_size"),
])
def test_bad_options_are_one_line_errors(rlhfx_cli, tmp_path, options, message):
    result = rlhfx_cli("validate", str(write_recipe(tmp_path, "online_dpo",
                                                    {**SMALL, **options})))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert message in result.output, result.output


def test_one_iteration_marks_pairs_and_reports(rlhfx_cli, tmp_path):
    out = run(rlhfx_cli, write_recipe(tmp_path, "online_dpo", {**SMALL, "iterations": 1}),
              tmp_path / "run")
    (rec,) = records(out)
    pairs = rec["online_dpo/pairs"]
    assert pairs + rec["online_dpo/tied_groups"] + rec["online_dpo/short_groups"] == 4
    assert rec["num_trained"] == 2 * pairs
    if pairs:
        assert rec["online_dpo/optimizer_steps"] == 2 * math.ceil(pairs / 4)
        # the first pass of the first step sees the policy as the reference: loss log 2 there
        assert 0 < rec["train_loss"] <= math.log(2) + 1e-6
        assert rec["online_dpo/pair_reward_gap"] > 0
        for key in ("chosen_reward", "rejected_reward", "reward_margin",
                    "preference_accuracy"):
            assert math.isfinite(rec[f"online_dpo/{key}"])
    assert rec["learning_rate"] == pytest.approx(1e-3)


@pytest.mark.slow
def test_tiny_recipe_raises_the_reward(rlhfx_cli, tmp_path):
    out = run(rlhfx_cli, RECIPES / "tiny_online_dpo.toml", tmp_path / "run")
    recs = records(out)
    evals = [r["eval_reward_mean"] for r in recs if "eval_reward_mean" in r]
    assert evals[-1] > evals[0] + 2.0, evals  # words per answer on the held-out prompts
    first, last = rising([r["reward_mean"] for r in recs if r["step"] > 0], n=4)
    assert last > first + 0.5
    assert all(r["online_dpo/pairs"] > 0 for r in recs if r["step"] > 0)


@pytest.mark.slow
def test_resume_after_kill_matches_an_uninterrupted_run(rlhfx_cli, tmp_path):
    recipe = write_recipe(tmp_path, "online_dpo", {**SMALL, "iterations": 6, "save_every": 1},
                          reward=LENGTH)
    killed = tmp_path / "killed"
    assert 3 <= kill_then_resume(recipe, killed) < 6
    assert "resuming after iteration" in (killed / "run.log").read_text()

    reference = run(rlhfx_cli, recipe, tmp_path / "reference")
    got, want = records(killed), records(reference)
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(got, want, strict=True):
        for key in ("reward_mean", "train_loss", "online_dpo/reward_margin"):
            assert a.get(key) == pytest.approx(b.get(key), rel=1e-5, abs=1e-7), (a["step"], key)
    assert same_weights(final_weights(killed), final_weights(reference))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is not installed")
def test_two_processes_under_torchrun(tmp_path):
    """Two CPU workers, 3 prompts: one worker holds two prompts' pairs and the other one, so
    some mini-batches find a worker idle; both must stay in step (the checkpoint compares
    their weights)."""
    recipe = write_recipe(tmp_path, "online_dpo", {**SMALL, "batch_size": 3, "k": 3,
                                                   "mini_batch_size": 2, "iterations": 2},
                          reward=LENGTH)
    out = tmp_path / "run"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    result = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", "29541", "-m", "rlhfx.cli",
         "run", str(recipe), "-o", str(out)],
        env=subprocess_env(), capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "2 process(es)" in (out / "run.log").read_text()
    recs = records(out)
    assert [r["step"] for r in recs] == [1, 2]
    assert all(r["num_samples"] == 9 for r in recs)
    assert any(r["online_dpo/idle_minibatches"] > 0 for r in recs)
    assert (out / "stages" / "align" / "model" / "config.json").exists()
