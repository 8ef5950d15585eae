"""Built-in rankers: global top fraction and local best-of-k, deterministic ties, discarded
samples never chosen, a prompt with only discarded samples contributes nothing."""

from __future__ import annotations

import math
import random

import pytest
from pydantic import ValidationError

from rlhfx import Sample
from rlhfx.plugins.rankers import LocalRanker, TopConfig, TopRanker


def make(rewards, k: int = 1, discarded=()) -> list[Sample]:
    """Samples with the given rewards; prompt_id = index // k; `discarded` indices get None."""
    out = []
    for i, r in enumerate(rewards):
        gone = i in discarded
        out.append(Sample(prompt_id=i // k, prompt=f"p{i // k}", raw_response=f"r{i}",
                          response=f"r{i}", discarded=gone, reward=None if gone else r))
    return out


def top(fraction: float) -> TopRanker:
    return TopRanker(TopConfig(fraction=fraction))


# ------------------------------------------------------------------------------ top


def test_top_keeps_the_global_best_fraction():
    rewards = [0.1, 0.9, 0.3, 0.7, 0.5, 0.2, 0.8, 0.4, 0.6, 0.0]
    assert top(0.2).select(make(rewards)) == [1, 6]  # 0.9 and 0.8, returned in index order
    assert top(0.5).select(make(rewards)) == [1, 3, 4, 6, 8]
    assert top(1.0).select(make(rewards)) == list(range(10))


@pytest.mark.parametrize(
    ("fraction", "n", "want"),
    [(0.125, 8, 1), (0.125, 1024, 128), (0.3, 10, 3), (0.2, 3, 1), (0.01, 5, 1), (0.7, 10, 7)],
)
def test_top_count_is_the_ceiling_of_fraction_times_all_samples(fraction, n, want):
    # 0.3 * 10 is 3.0000000000000004 in floats: still 3, not 4.
    samples = make([float(i) for i in range(n)])
    assert len(top(fraction).select(samples)) == want


def test_top_ties_go_to_the_earlier_sample():
    samples = make([1.0, 2.0, 2.0, 2.0, 0.5])
    assert top(0.4).select(samples) == [1, 2]
    assert top(0.4).select(samples) == [1, 2]  # and again: deterministic


def test_top_never_selects_discarded_samples():
    # The discarded ones had the highest scores before they were ruled out.
    samples = make([9.0, 9.0, 1.0, 2.0, 3.0], discarded={0, 1})
    samples[0].reward = 9.0  # even if a discarded sample still carries a reward
    assert top(0.4).select(samples) == [3, 4]  # want = ceil(0.4 * 5) = 2, from the eligible


def test_top_with_fewer_eligible_than_wanted_returns_all_eligible():
    samples = make([1.0, 2.0, 3.0, 4.0], discarded={0, 1, 2})
    assert top(1.0).select(samples) == [3]
    assert top(0.5).select(make([1.0, 2.0], discarded={0, 1})) == []


def test_top_skips_unscored_and_nan_rewards():
    samples = make([1.0, 2.0, 3.0])
    samples[2].reward = math.nan
    samples[1].reward = None
    assert top(1.0).select(samples) == [0]


def test_top_on_no_samples():
    assert top(0.5).select([]) == []


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5])
def test_top_fraction_must_be_in_0_1(fraction):
    with pytest.raises(ValidationError):
        TopConfig(fraction=fraction)


# ------------------------------------------------------------------------------ local


def test_local_keeps_the_best_of_each_prompt():
    # 3 prompts x 3 samples
    rewards = [0.1, 0.5, 0.3,   2.0, 1.0, 3.0,   -1.0, -0.5, -2.0]
    assert LocalRanker().select(make(rewards, k=3)) == [1, 5, 7]


def test_local_ties_go_to_the_earlier_sample():
    assert LocalRanker().select(make([1.0, 1.0, 0.0, 5.0, 5.0, 5.0], k=3)) == [0, 3]


def test_local_prompt_with_all_samples_discarded_contributes_nothing():
    samples = make([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], k=3, discarded={3, 4, 5})
    assert LocalRanker().select(samples) == [2]
    # A prompt with one survivor gives that survivor, however low its reward.
    samples = make([1.0, 2.0, 3.0, -9.0, 5.0, 6.0], k=3, discarded={4, 5})
    assert LocalRanker().select(samples) == [2, 3]


def test_local_groups_by_prompt_id_not_by_position():
    samples = make([0.0] * 6)
    for s, pid, r in zip(samples, [7, 3, 7, 3, 7, 3], [1, 2, 3, 4, 0, 9], strict=True):
        s.prompt_id, s.reward = pid, float(r)
    assert LocalRanker().select(samples) == [2, 5]


def test_selection_does_not_depend_on_sample_order():
    rng = random.Random(0)
    rewards = [rng.random() for _ in range(40)]
    samples = make(rewards, k=4, discarded={5, 6, 7, 8, 13})
    order = list(range(40))
    rng.shuffle(order)
    shuffled = [samples[i] for i in order]
    for ranker in (top(0.25), LocalRanker()):
        picked = {id(samples[i]) for i in ranker.select(samples)}
        picked_shuffled = {id(shuffled[i]) for i in ranker.select(shuffled)}
        assert picked == picked_shuffled
        assert all(not samples[i].discarded for i in ranker.select(samples))


def test_min_reward_keeps_only_good_enough_samples():
    from rlhfx.plugins.rankers import LocalConfig

    # three prompts of 3 samples (0/1 rewards): the second has no correct answer
    rewards = [0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert LocalRanker().select(make(rewards, k=3)) == [1, 3, 8]  # the least wrong is kept
    strict = LocalRanker(LocalConfig(min_reward=1.0))
    assert strict.select(make(rewards, k=3)) == [1, 8]
    assert TopRanker(TopConfig(fraction=0.5, min_reward=1.0)).select(make(rewards)) == [1, 2, 8]
    assert TopRanker(TopConfig(fraction=0.5)).select(make(rewards)) == [0, 1, 2, 3, 8]
