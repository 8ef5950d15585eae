"""`length_control`: the reward's linear trend in answer length is taken out of an iteration's
samples (hand-worked numbers), and RAFT ranks on what is left."""

from __future__ import annotations

import json

import pytest

from rlhfx.alignment.length_control import remove_length_trend
from rlhfx.components import Sample


def sample(tokens: int, reward: float | None) -> Sample:
    s = Sample(prompt_id=0, prompt="p", raw_response="r", response="r")
    s.response_ids = list(range(tokens))
    s.reward = reward
    return s


def test_the_length_trend_worked_by_hand():
    # lengths 1, 2, 3; rewards 1, 2, 6: means 2 and 3, slope ((-1)(-2) + 0 + (1)(3)) / 2 = 2.5
    samples = [sample(1, 1.0), sample(2, 2.0), sample(3, 6.0), sample(9, None)]
    assert remove_length_trend(samples) == pytest.approx(2.5)
    assert [s.reward for s in samples] == [pytest.approx(3.5), pytest.approx(2.0),
                                           pytest.approx(3.5), None]
    assert samples[0].extra["length_correction"] == pytest.approx(2.5)
    assert "length_correction" not in samples[3].extra  # a discarded sample is left alone


def test_nothing_to_fit():
    same = [sample(4, 1.0), sample(4, 3.0)]
    assert remove_length_trend(same) is None and [s.reward for s in same] == [1.0, 3.0]
    assert remove_length_trend([sample(2, 1.0), sample(5, None)]) is None


def test_raft_ranks_on_the_reward_without_its_length_trend(tmp_path):
    from test_raft_run import assert_best_answers_trained, metrics, run_in_process, write_recipe

    # The pattern reward counts words, so it grows with length; the trend comes out. A stop
    # string at "k" ends about half of the tiny policy's answers early: lengths differ.
    recipe = write_recipe(tmp_path / "r.toml", iterations=1, min_new_tokens=1,
                          max_new_tokens=12, length_control=True, eval_every=0,
                          stop_strings=["k"])
    run_in_process(recipe, tmp_path / "run")
    folder = tmp_path / "run" / "stages" / "align" / "iterations" / "iter-0001"
    rows = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
    scored = [r for r in rows if r["reward"] is not None]
    lengths = [r["response_tokens"] for r in scored]
    rewards = [r["reward"] for r in scored]
    assert len(set(lengths)) > 1
    mean_length = sum(lengths) / len(lengths)
    mean_reward = sum(rewards) / len(rewards)
    # What is left has no linear trend in length, and the mean is kept.
    trend = sum((x - mean_length) * (y - mean_reward)
                for x, y in zip(lengths, rewards, strict=True))
    assert trend == pytest.approx(0, abs=1e-6)
    assert sum(r["length_correction"] for r in scored) == pytest.approx(0, abs=1e-6)
    slope = metrics(tmp_path / "run")[-1]["reward_length_slope"]
    assert slope > 0  # more tokens, more words
    for r in scored:
        assert r["length_correction"] == pytest.approx(-slope * (r["response_tokens"]
                                                                 - mean_length))
    assert_best_answers_trained(scored)  # on the corrected rewards
