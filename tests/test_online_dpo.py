"""online_dpo: pairs from hand-made samples, learning on the tiny task, exact resume after
kill -9, two processes under torchrun, and bad options refused in one line."""

from __future__ import annotations

import math

import pytest

from rlhfx import Sample
from rlhfx.plugins.online_dpo import DROPPED_PREFIX, preference_pairs
from rlhfx.testing import run_in_process as run
from rlhfx.testing import run_records as records
from rlhfx.testing import write_algorithm_recipe as write_recipe

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

