"""RLOO on the built-in tiny policy: it learns, its KL goes into the reward or the loss, and
a run continued for more iterations ends where an uninterrupted one does."""

from __future__ import annotations

import json

import pytest

from rlhfx.testing import (
    final_weights,
    same_weights,
)
from rlhfx.testing import run_in_process as run
from rlhfx.testing import run_records as records
from rlhfx.testing import write_algorithm_recipe as write_recipe

SMALL = dict(iterations=2, batch_size=4, k=4, learning_rate=1e-3, min_new_tokens=8,
             max_new_tokens=8, torch_threads=1)


def _advantages(out):
    rows = [json.loads(line) for line in (out / "stages" / "align" / "iterations" / "iter-0002"
                                          / "samples.jsonl").read_text().splitlines()]
    return [r for r in rows if r["trained"]]


@pytest.mark.parametrize("kl_in_reward", [True, False])
def test_leave_one_out_advantages(rlhfx_cli, tmp_path, kl_in_reward):
    """Without a KL in the reward, each advantage is the reward minus the mean of the other
    three; with it, the KL of step 2 (policy moved) shifts them."""
    out = run(rlhfx_cli, write_recipe(tmp_path, "rloo", {**SMALL, "kl_in_reward": kl_in_reward,
                                                          "beta": 0.5}), tmp_path / "run")
    recs = records(out)
    assert recs[1]["kl_mean"] > 0
    trained = _advantages(out)
    groups: dict[str, list[dict]] = {}
    for r in trained:
        groups.setdefault(r["prompt"], []).append(r)
    checked = 0
    for rows in groups.values():
        if len(rows) != 4:
            continue
        rewards = [r["reward"] for r in rows]
        plain = [x - (sum(rewards) - x) / 3 for x in rewards]
        got = [r["advantage"] for r in rows]
        assert sum(got) == pytest.approx(0.0, abs=1e-4)  # leave-one-out: sums to 0
        if kl_in_reward:
            assert got != pytest.approx(plain, abs=1e-4)
        else:
            assert got == pytest.approx(plain, abs=1e-4)
        checked += 1
    assert checked


def test_more_iterations_continue_where_the_run_stopped(rlhfx_cli, tmp_path):
    """A finished 2-iteration run given 4 iterations resumes from its checkpoint (optimizer
    state included) and ends with the weights of a 4-iteration run."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    options = {**SMALL, "epochs": 2, "mini_batch_size": 8}
    out = run(rlhfx_cli, write_recipe(tmp_path / "a", "rloo", options), tmp_path / "cont")
    run(rlhfx_cli, write_recipe(tmp_path / "a", "rloo", {**options, "iterations": 4}),
        tmp_path / "cont")
    straight = run(rlhfx_cli, write_recipe(tmp_path / "b", "rloo", {**options, "iterations": 4}),
                   tmp_path / "straight")
    assert [r["step"] for r in records(out)] == [1, 2, 3, 4]
    assert same_weights(final_weights(out), final_weights(straight))
