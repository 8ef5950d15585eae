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
