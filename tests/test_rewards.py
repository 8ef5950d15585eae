"""Rule reward sources against hand-worked numbers: pattern penalties, length terms, and the
weighted combination with batch and running normalisation."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from rlhfx import UserError
from rlhfx.components import frozen_statistics
from rlhfx.plugins.rewards.rules import (
    LengthConfig,
    LengthReward,
    PatternPenalty,
    PatternPenaltyConfig,
    RunningStats,
    WeightedConfig,
    WeightedReward,
)


def score(source, *responses: str) -> list[float]:
    return source.score(["prompt"] * len(responses), list(responses))


# ------------------------------------------------------------------------------ pattern penalty


def test_pattern_penalty_defaults_count_hashes_and_emoticon_runs():
    source = PatternPenalty()
    assert score(source, "A clean answer.", "Hi # there ##", ":) :) :)", "Just one :)",
                 "Wink ;) ;-) ok") == [0.0, -3.0, -1.0, 0.0, -1.0]


def test_pattern_penalty_rules_add_up_with_their_own_weights():
    source = PatternPenalty(PatternPenaltyConfig(rules=[
        {"pattern": "#", "penalty": 0.5},
        {"pattern": r"\bthanks\b", "penalty": 2.0},
        {"pattern": "please", "penalty": -1.0},  # a negative penalty is a bonus
    ]))
    # 2 x # (-1.0), 2 x thanks (-4.0), 1 x please (+1.0)
    assert score(source, "thanks # thanks # please") == [-4.0]


def test_pattern_penalty_once_counts_each_rule_at_most_once():
    config = PatternPenaltyConfig(rules=[{"pattern": "#", "penalty": 0.5},
                                         {"pattern": "!", "penalty": 1.0}], count="once")
    assert score(PatternPenalty(config), "### wow!!!", "plain") == [-1.5, 0.0]


def test_pattern_penalty_rejects_bad_regex_and_unknown_keys():
    with pytest.raises(ValidationError, match="bad regex"):
        PatternPenaltyConfig(rules=[{"pattern": "[", "penalty": 1}])
    with pytest.raises(ValidationError, match="extra"):
        PatternPenaltyConfig(rules=[{"pattern": "#", "weight": 1}])


# ------------------------------------------------------------------------------ length


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, [0.0, 1.0, 4.0]),  # words
        ({"unit": "chars"}, [0.0, 5.0, 19.0]),
        ({"scale": 0.5}, [0.0, 0.5, 2.0]),
        ({"cap": 3}, [0.0, 1.0, 3.0]),
        ({"target": 2}, [-2.0, -1.0, -2.0]),
        ({"target": 2, "scale": 0.25}, [-0.5, -0.25, -0.5]),
        ({"target": 10, "unit": "chars"}, [-10.0, -5.0, -9.0]),
    ],
)
def test_length_modes(config, expected):
    assert score(LengthReward(LengthConfig(**config)), "", "hello", "one two  three four") \
        == expected


def test_length_target_must_not_be_negative():
    with pytest.raises(ValidationError):
        LengthConfig(target=-1)


# ------------------------------------------------------------------------------ weighted


def weighted(*terms: dict) -> WeightedReward:
    """Built from refs in code, not a recipe: the refs resolve against the installed plugins."""
    return WeightedReward(WeightedConfig(terms=list(terms)))


def test_weighted_sum_without_normalisation():
    source = weighted(
        {"source": "length", "weight": 1.0},
        {"source": {"name": "pattern_penalty"}, "weight": 2.0},
    )
    # "a # b": 3 words, one `#` -> 3 + 2 * (-1) = 1;  "x y": 2 + 0
    assert score(source, "a # b", "x y") == [1.0, 2.0]


def test_weighted_batch_normalisation_hand_worked():
    source = weighted({"source": "length", "weight": 0.5, "normalize": "batch"})
    # lengths 1, 2, 3: mean 2, sample std 1 -> z = -1, 0, 1; times 0.5
    assert score(source, "a", "a b", "a b c") == [-0.5, 0.0, 0.5]
    # Each call is normalised on its own: 2 and 4 words -> mean 3, std sqrt(2)
    z = 1 / math.sqrt(2)
    assert score(source, "a b", "a b c d") == pytest.approx([-0.5 * z, 0.5 * z])


def test_weighted_batch_normalisation_of_constant_values_is_zero_not_nan():
    source = weighted({"source": "length", "normalize": "batch"})
    assert score(source, "a b", "c d") == [0.0, 0.0]
    assert score(source, "a b c") == [0.0]  # a batch of one


def test_weighted_running_normalisation_hand_worked():
    source = weighted({"source": "length", "normalize": "running"})
    # Call 1: values 1, 3 -> running mean 2, sample std sqrt(2)
    assert score(source, "a", "a b c") == pytest.approx([-1 / math.sqrt(2), 1 / math.sqrt(2)])
    # Call 2: value 5 -> all seen: 1, 3, 5 -> mean 3, std 2 -> (5 - 3) / 2
    assert score(source, "a b c d e") == pytest.approx([1.0])
    # Call 3: value 3 -> seen 1, 3, 5, 3 -> mean 3, std sqrt(8/3)
    assert score(source, "a b c") == pytest.approx([0.0])


def test_weighted_mixes_normalisations_per_term():
    source = weighted(
        {"source": "length", "weight": 1.0, "normalize": "batch"},
        {"source": {"name": "length", "unit": "chars"}, "weight": 0.1},
    )
    # words 1, 3 -> z -0.7071, 0.7071;  chars 2, 10 -> 0.2, 1.0
    z = 1 / math.sqrt(2)
    assert score(source, "ab", "abc de fgh") == pytest.approx([-z + 0.2, z + 1.0])


def test_weighted_can_nest():
    inner = {"name": "weighted", "terms": [{"source": "length", "weight": 2.0}]}
    source = weighted({"source": inner, "weight": 3.0})
    assert score(source, "a b") == [12.0]


def test_running_stats_match_the_textbook_formula():
    stats = RunningStats()
    values = [3.0, -1.0, 4.5, 10.0, 0.25]
    stats.update(values[:2])
    stats.update(values[2:])
    mean = sum(values) / 5
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    assert (stats.n, stats.mean, stats.std) == (5, pytest.approx(mean), pytest.approx(std))


def test_weighted_needs_a_term_and_known_names():
    with pytest.raises(ValidationError):
        WeightedConfig(terms=[])
    with pytest.raises(ValidationError):
        WeightedConfig(terms=[{"source": "length", "normalize": "zscore"}])
    with pytest.raises(UserError, match="unknown reward source 'lenth' \\(did you mean 'length'"):
        weighted({"source": "lenth"})
    with pytest.raises(UserError, match="reward_source 'length': unit: "):
        weighted({"source": {"name": "length", "unit": "lines"}})


# ------------------------------------------------------------------------------ repetition
def test_repetition_penalty_counts_repeated_ngrams_by_hand():
    from rlhfx.plugins.rewards.rules import RepetitionConfig, RepetitionPenalty

    words = RepetitionPenalty()
    texts = ["way guitar way, Way guitar", "all different words", "", "a a"]
    # unigrams: way guitar way way guitar -> 5 words, 2 distinct -> 3 repeats
    assert words.score(["p"] * 4, texts) == [-3.0, 0.0, 0.0, -1.0]
    pairs = RepetitionPenalty(RepetitionConfig(n=2, penalty=0.5))
    # bigrams: (way guitar) (guitar way) (way way) (way guitar) -> 1 repeat
    assert pairs.score(["p"], [texts[0]]) == [-0.5]
    raw = RepetitionPenalty(RepetitionConfig(normalize=False))
    assert raw.score(["p"], ["Way way way"]) == [-1.0]  # "Way" differs from "way"


def test_running_statistics_round_trip_through_state_dict_even_nested():
    inner = {"name": "weighted", "terms": [{"source": "length", "normalize": "running"}]}
    source = weighted({"source": inner}, {"source": "length", "normalize": "running"})
    score(source, "a", "a b c")
    state = json.loads(json.dumps(source.state_dict()))  # JSON data, as checkpoints store it
    fresh = weighted({"source": inner}, {"source": "length", "normalize": "running"})
    fresh.load_state_dict(state)
    assert score(fresh, "a b c d e") == score(source, "a b c d e") == pytest.approx([2.0])
    assert PatternPenalty(PatternPenaltyConfig()).state_dict() == {}


def test_frozen_statistics_leave_running_stats_alone_also_in_nested_sources():
    inner = {"name": "weighted", "terms": [{"source": "length", "normalize": "running"}]}
    source = weighted({"source": inner})
    score(source, "a", "a b c")  # mean 2, std sqrt(2)
    before = source.state_dict()
    with frozen_statistics(source):
        assert source.statistics_frozen
        assert score(source, "a b c d e") == pytest.approx([3 / math.sqrt(2)])
    assert not source.statistics_frozen and source.state_dict() == before


def test_frozen_before_any_update_normalises_by_the_batch_itself():
    source = weighted({"source": "length", "normalize": "running"})
    with frozen_statistics(source):
        assert score(source, "a", "a b c") == pytest.approx([-1 / math.sqrt(2), 1 / math.sqrt(2)])
    assert source.state_dict()["running"] == [[0, 0.0, 0.0]]
