"""Every registered alignment algorithm passes the shared contract (`rlhfx.testing`): the reward
rises on the tiny task, kill -9 then run again ends where an uninterrupted run does, two
processes train in step, and bad options are one-line errors. Each algorithm's own test file
keeps only what is its own."""

from __future__ import annotations

import math

import pytest

from rlhfx.testing import AlgorithmCase, AlgorithmContract

TOKENS = dict(min_new_tokens=8, max_new_tokens=8, torch_threads=1)
#: The tiny task's learning settings: 16 tokens per answer, a large step for a random model.
LEARN = dict(min_new_tokens=16, max_new_tokens=16, inference_batch_size=16)
GROUPS_ON_TWO = dict(batch_size=3, k=2, mini_batch_size=2, iterations=2)


def grpo_learned(records, out):
    for r in records:
        for key in ("train_loss", "kl_mean", "grpo/clip_fraction", "grpo/entropy",
                    "grpo/equal_reward_groups", "grpo/advantage_std"):
            assert key in r and math.isfinite(r[key]), (r["step"], key)
    assert records[0]["kl_mean"] == pytest.approx(0.0, abs=1e-5)  # policy == reference


def reinforce_pp_learned(records, out):
    # whitened over the batch: mean 0, std 1 over the batch's tokens
    assert records[0]["reinforce_pp/advantage_mean"] == pytest.approx(0.0, abs=1e-4)
    assert records[0]["reinforce_pp/advantage_std"] == pytest.approx(1.0, abs=1e-3)


#: TRL's classic statistics under the loop's schema (docs/metrics.md).
PPO_CLASSIC_STATS = (
    "kl_mean", "ppo/kl_coef", "ppo/entropy", "ppo/scores_mean", "ppo/scores_std",
    "ppo/mean_non_score_reward", "ppo/loss/policy", "ppo/loss/value", "ppo/loss/total",
    "ppo/policy/entropy", "ppo/policy/approxkl", "ppo/policy/policykl", "ppo/policy/clipfrac",
    "ppo/val/var_explained", "ppo/returns/mean", "ppo/val/error", "ppo/queries_len_mean",
    "response_tokens_mean", "reward_mean", "seconds_generate", "seconds_score",
    "ppo/time/forward_pass", "ppo/time/optimize_step", "ppo/time/total", "learning_rate",
    "train_loss",
)


def ppo_learned(records, out):
    for r in records:
        missing = [k for k in PPO_CLASSIC_STATS if k not in r]
        assert not missing, missing
    kls = [r["kl_mean"] for r in records]
    assert kls[0] == pytest.approx(0.0, abs=1e-5)  # the policy starts as the reference
    assert all(math.isfinite(k) and -1.0 < k < 25.0 for k in kls), kls
    coefs = [r["ppo/kl_coef"] for r in records]
    assert coefs[1] < coefs[0]  # KL below target: the adaptive controller relaxes first
    assert coefs[-1] > min(coefs)  # ... and tightens once the KL passes the target
    assert (out / "stages" / "align" / "kl_curve.png").stat().st_size > 1000


CASES = [
    AlgorithmCase(
        "grpo", dict(iterations=2, batch_size=4, k=4, mini_batch_size=8, epochs=2,
                     learning_rate=1e-3, **TOKENS),
        learns=dict(iterations=24, learning_rate=5e-3, beta=0.04, **LEARN),
        on_learned=grpo_learned, two_processes=GROUPS_ON_TWO,
        bad_options=[
            ({"k": 1}, "stages.align.algorithm: k = 1: a group baseline needs at least 2"),
            ({"beta": -0.1}, "stages.align.algorithm.beta"),
            ({"clip_low": 0.3, "clip_high": 0.2}, "the clip ranges are inverted"),
            ({"clip_high": -0.1}, "stages.align.algorithm.clip_high"),
            ({"loss_type": "mean"}, "stages.align.algorithm.loss_type"),
        ]),
    AlgorithmCase(
        "rloo", dict(iterations=2, batch_size=4, k=4, learning_rate=1e-3, **TOKENS),
        learns=dict(iterations=24, mini_batch_size=8, epochs=2, learning_rate=3e-3, beta=0.05,
                    **LEARN),
        two_processes=GROUPS_ON_TWO, bad_options=[({"k": 1}, "k = 1")]),
    AlgorithmCase(
        "reinforce_pp", dict(iterations=2, batch_size=8, k=2, learning_rate=1e-3, **TOKENS),
        learns=dict(iterations=24, batch_size=16, k=1, mini_batch_size=8, epochs=2,
                    learning_rate=3e-3, beta=0.01, **LEARN),
        on_learned=reinforce_pp_learned, two_processes=dict(iterations=2, batch_size=3, k=1),
        bad_options=[({"k": 1, "baseline": True},
                      "k = 1: baseline = true subtracts each prompt's mean reward")]),
    AlgorithmCase(
        "online_dpo", dict(iterations=2, batch_size=4, k=4, mini_batch_size=4, epochs=2,
                           learning_rate=1e-3, beta=0.1, **TOKENS),
        learns=dict(iterations=12, batch_size=16, mini_batch_size=8,
                    **{**LEARN, "inference_batch_size": 64}), margin=0.5, window=4,
        two_processes=dict(batch_size=3, k=3, mini_batch_size=2, iterations=2),
        bad_options=[({"k": 1}, "stages.align.algorithm.k"),
                     ({"beta": 0.0}, "stages.align.algorithm.beta"),
                     ({"mini_batch_size": 0}, "stages.align.algorithm.mini_batch_size")]),
    AlgorithmCase(
        "ppo", dict(iterations=2, batch_size=8, mini_batch_size=4, ppo_epochs=2,
                    learning_rate=1e-3, min_new_tokens=8, max_new_tokens=11),
        learns=dict(iterations=24, batch_size=16, mini_batch_size=8, ppo_epochs=4, horizon=100,
                    **LEARN),
        on_learned=ppo_learned,
        # responses of 1-4 tokens with a 3-token minimum: some steps leave one worker with
        # nothing to train on while the other trains
        two_processes=dict(batch_size=4, mini_batch_size=2, min_new_tokens=1,
                           max_new_tokens=4, min_response_tokens=3),
        bad_options=[
            ({"batch_size": 10, "mini_batch_size": 4}, "multiple of mini_batch_size"),
            ({"min_new_tokens": 9, "max_new_tokens": 8}, "min_new_tokens (9) is above"),
            ({"temperature": 0.7}, "temperature 1"),
            ({"kl_penalty": "reverse"}, "kl_penalty"),
            ({"use_score_norm": True}, "use_score_scaling"),
        ]),
    # RAFT learns on its own tiny recipe in tests/test_raft_run.py (a run of 256 samples an
    # iteration; too long to run twice).
    AlgorithmCase(
        "raft", dict(iterations=3, batch_size=8, k=2, epochs=1, learning_rate=1e-3,
                     train_batch_size=2, min_new_tokens=6, max_new_tokens=10, torch_threads=1),
        learns=None, two_processes=dict(iterations=2)),
]


def test_every_registered_algorithm_has_a_case():
    from rlhfx.registry import get_plugins

    assert sorted(get_plugins().names("algorithm")) == sorted(c.name for c in CASES)


for _case in CASES:
    globals()[f"TestContract_{_case.name}"] = type(
        f"TestContract_{_case.name}", (AlgorithmContract,), {"case": _case})
