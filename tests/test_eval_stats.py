"""Win-rate statistics of `rlhfx eval`, against numbers worked out by hand."""

from __future__ import annotations

import pytest

from rlhfx.plugins.evaluate import stats


def test_outcome_and_win_rate_count_ties_as_half():
    assert [stats.outcome(2, 1), stats.outcome(1, 2), stats.outcome(1, 1)] == [1, -1, 0]
    # A discarded answer (None) loses to a scored one; two discarded ones tie.
    assert [stats.outcome(None, -5), stats.outcome(-5, None), stats.outcome(None, None)] == [
        -1, 1, 0]
    # 3 wins, 1 loss, 2 ties of 6: (3 + 1) / 6
    assert stats.win_rate([1, 1, 1, -1, 0, 0]) == pytest.approx(4 / 6)
    assert stats.win_rate([]) == 0.5


def test_sign_test_p_values_worked_by_hand():
    # 8 wins, 2 losses: n = 10, P(X <= 2) = (1 + 10 + 45) / 1024, two-sided doubles it.
    assert stats.sign_test_p(8, 2) == pytest.approx(112 / 1024)
    assert stats.sign_test_p(2, 8) == pytest.approx(112 / 1024)
    # 5 wins, 0 losses: 2 / 32.
    assert stats.sign_test_p(5, 0) == pytest.approx(1 / 16)
    # Even split: the tail passes one half, capped at 1.
    assert stats.sign_test_p(3, 3) == 1.0
    assert stats.sign_test_p(0, 0) == 1.0


def test_bootstrap_interval():
    assert stats.bootstrap_interval([1] * 10) == (1.0, 1.0)  # every resample wins everything
    assert stats.bootstrap_interval([0, 0, 0]) == (0.5, 0.5)
    mixed = [1] * 12 + [-1] * 6 + [0] * 2  # win rate 13 / 20 = 0.65
    low, high = stats.bootstrap_interval(mixed, seed=3)
    assert low < 0.65 < high and low > 0.3 and high < 0.95
    assert stats.bootstrap_interval(mixed, seed=3) == (low, high)  # fixed seed, same interval
    # Two prompts, one win and one loss: resamples give 0, 0.5 or 1 with chances 1/4, 1/2,
    # 1/4, so the 95% percentile interval spans all of [0, 1].
    assert stats.bootstrap_interval([1, -1]) == (0.0, 1.0)


def test_compare():
    c = stats.compare("a", "b", [3.0, 2.0, None, 1.0], [1.0, 2.0, 0.5, None])
    assert (c.n, c.wins, c.losses, c.ties) == (4, 2, 1, 1)
    assert c.win_rate == pytest.approx(2.5 / 4)
    assert c.sign_test_p == pytest.approx(1.0)  # 2 vs 1: 2 * (1 + 3) / 8 = 1
    assert c.mean_reward_difference == pytest.approx(1.0)  # only prompts scored for both
    with pytest.raises(ValueError):
        stats.compare("a", "b", [1.0], [1.0, 2.0])


def test_wilson_interval_of_an_accuracy_worked_by_hand():
    # 50 of 100 at 95%: z = 1.95996; centre 0.5, half-width
    # z * sqrt(0.25 / 100 + z^2 / 40000) / (1 + z^2 / 100) = 0.09617
    low, high = stats.wilson_interval(50, 100)
    assert (low, high) == (pytest.approx(0.40383, abs=1e-5), pytest.approx(0.59617, abs=1e-5))
    # 21 of 24 (0.875): not symmetric about the estimate, pulled towards 0.5
    low, high = stats.wilson_interval(21, 24)
    assert (low, high) == (pytest.approx(0.68996, abs=1e-5), pytest.approx(0.95656, abs=1e-5))
    assert 0.875 - low > high - 0.875
    # all right: the upper end is 1, the lower one well inside; no pairs: no information
    low, high = stats.wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(0.72247, abs=1e-5)
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    # a wider level gives a wider interval
    assert stats.wilson_interval(50, 100, 0.99)[0] < 0.40383


def test_length_controlled_win_rate_worked_by_hand():
    # Two kinds of prompt: A's answer longer by 10 characters (A wins 8 of 10) or shorter by
    # 10 (A wins 5 of 10). The two-group logistic fit is saturated, so sigmoid(a + b t) = 0.8
    # and sigmoid(a - b t) = 0.5: a = (logit 0.8 + logit 0.5) / 2 = ln 2, a win rate at equal
    # length of 2/3, whatever the groups' sizes (the plain win rate moves with them).
    outcomes = [1] * 8 + [-1] * 2 + [1] * 5 + [-1] * 5
    lengths = [10] * 10 + [-10] * 10
    rate, coefficient = stats.length_controlled_win_rate(outcomes, lengths)
    assert rate == pytest.approx(2 / 3, abs=1e-3) and coefficient > 0
    skewed = [1] * 24 + [-1] * 6 + [1] * 5 + [-1] * 5  # 30 longer, 10 shorter
    assert stats.win_rate(skewed) == pytest.approx(0.725)
    rate, _ = stats.length_controlled_win_rate(skewed, [10] * 30 + [-10] * 10)
    assert rate == pytest.approx(2 / 3, abs=1e-3)
    # The judge prefers the shorter answer: the coefficient turns negative.
    assert stats.length_controlled_win_rate(outcomes, [-x for x in lengths])[1] < 0


def test_length_controlled_win_rate_without_length_differences_is_the_win_rate():
    outcomes = [1, 1, -1, 0]  # 0.625, ties as half
    rate, coefficient = stats.length_controlled_win_rate(outcomes, [7, 7, 7, 7])
    assert rate == pytest.approx(0.625, abs=1e-3) and coefficient == 0
    # Separable outcomes stay finite (the ridge) and near the plain rate.
    rate, _ = stats.length_controlled_win_rate([1] * 10, list(range(10)))
    assert 0.95 < rate < 1
    assert stats.length_controlled_win_rate([], []) == (0.5, 0.0)
    with pytest.raises(ValueError):
        stats.length_controlled_win_rate([1, -1], [3])


def test_a_length_bought_win_is_taken_back_by_the_length_control():
    # A wins exactly where its answer is longer (the judge rewards length and nothing else):
    # plain win rate 0.75, at equal length about half.
    import random

    rng = random.Random(0)
    differences = [rng.uniform(1, 50) for _ in range(30)] + [-rng.uniform(1, 50) for _ in range(10)]
    outcomes = [1 if d > 0 else -1 for d in differences]
    c = stats.compare("a", "b", [float(o) for o in outcomes], [0.0] * 40,
                      lengths_a=[100 + d for d in differences], lengths_b=[100.0] * 40)
    assert c.win_rate == pytest.approx(0.75)
    assert c.lc_win_rate is not None and c.lc_win_rate < 0.62
    assert c.lc_ci_low is not None and c.lc_ci_high is not None
    assert c.lc_ci_low < c.lc_win_rate < c.lc_ci_high
    assert c.mean_length_b == 100.0 and c.mean_length_a == pytest.approx(
        100 + sum(differences) / 40)
    assert "at equal length" in stats.length_controlled_phrase(c.as_dict())
    # Without lengths, nothing of this.
    plain = stats.compare("a", "b", [1.0, 0.0], [0.0, 1.0])
    assert plain.lc_win_rate is None and stats.length_controlled_phrase(plain.as_dict()) == ""
