"""Metric helpers against hand-worked numbers, and the reward-curve PNG."""

from __future__ import annotations

import math

import pytest

from rlhfx import Sample
from rlhfx.metrics import distinct_n, mean_std, rate, rounded, sample_metrics
from rlhfx.plotting import reward_curve


def test_distinct_n_by_hand():
    texts = ["a b a b", "a c"]
    # unigrams: a b a b a c -> 3 unique of 6
    assert distinct_n(texts, 1) == pytest.approx(3 / 6)
    # bigrams: (a b) (b a) (a b) | (a c) -> 3 unique of 4
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    # trigrams: (a b a) (b a b) -> 2 of 2; the 2-word text adds none
    assert distinct_n(texts, 3) == 1.0


def test_distinct_n_repetition_and_edge_cases():
    assert distinct_n(["ha ha ha ha"], 2) == pytest.approx(1 / 3)
    assert distinct_n([], 2) == 0.0
    assert distinct_n(["one"], 2) == 0.0
    assert distinct_n([[1, 2, 1, 2]], 2) == pytest.approx(2 / 3)  # token ids used as they are
    with pytest.raises(ValueError):
        distinct_n(["a"], 0)


def test_mean_std_rate_rounded():
    mean, std = mean_std([1.0, None, 3.0])
    assert mean == 2.0 and std == 1.0  # population std of {1, 3}
    assert mean_std([None]) == (None, None)
    assert rate([True, False, False, True]) == 0.5
    assert rate([]) == 0.0
    assert rounded({"a": 1 / 3, "b": None, "c": "x", "d": math.inf}, 2) == {
        "a": 0.33, "b": None, "c": "x", "d": math.inf,
    }


def test_sample_metrics_counts_discarded_apart():
    samples = [
        Sample(0, "p", "x", response="good day", reward=2.0, changed=True),
        Sample(0, "p", "x", response="good day", reward=4.0),
        Sample(1, "p", "#", response="#", discarded=True, reward=None),
        Sample(1, "p", "y", response="bad", reward=0.0),
    ]
    m = sample_metrics(samples, prefix="t_")
    assert m["t_reward_mean"] == pytest.approx(2.0)
    assert m["t_reward_std"] == pytest.approx(math.sqrt(8 / 3))
    assert m["t_num_samples"] == 4
    assert m["t_changed_rate"] == 0.25
    assert m["t_discarded_rate"] == 0.25
    # words: good day good day # bad -> 4 unique of 6; bigrams (good day) x2 -> 1 of 2
    assert m["t_distinct_1"] == pytest.approx(4 / 6)
    assert m["t_distinct_2"] == pytest.approx(1 / 2)


def test_reward_curve_writes_a_png(tmp_path):
    records = [
        {"step": 0, "eval_reward_mean": 0.5},
        {"step": 1, "reward_mean": 1.0, "selected_reward_mean": 2.0, "eval_reward_mean": 1.5},
        {"step": 2, "reward_mean": 1.5, "selected_reward_mean": None},
    ]
    path = reward_curve(records, tmp_path / "curve.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_background_plotter_draws_the_last_request(tmp_path):
    from rlhfx.plotting import BackgroundPlotter

    plotter = BackgroundPlotter()
    for n in range(1, 4):
        plotter.submit([{"step": i, "reward_mean": float(i)} for i in range(n)],
                       tmp_path / "c.png", title="t")
    plotter.close()
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    # when the helper process cannot be used, close() draws in this process
    fallback = BackgroundPlotter()
    fallback._broken = True
    fallback.submit([{"step": 1, "reward_mean": 1.0}], tmp_path / "d.png")
    fallback.close()
    assert (tmp_path / "d.png").exists()
