"""Policy-gradient arithmetic against numbers worked out by hand (the comments show the working)."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfx import policy_gradient as pg


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64),
                          torch.as_tensor(b, dtype=torch.float64), atol=tol)


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def ids(values):
    return torch.tensor(values, dtype=torch.long)


# ----------------------------------------------------------------------------- group advantages
def test_group_advantages_with_a_zero_std_group_and_interleaved_ids():
    # group 7: rewards 1, 2, 3 -> mean 2, sample std sqrt((1 + 0 + 1) / 2) = 1 -> -1, 0, 1
    # group 3: rewards 5, 5, 5 -> std 0 -> all zero (no division by zero)
    rewards = t([1.0, 5.0, 2.0, 5.0, 3.0, 5.0])
    groups = ids([7, 3, 7, 3, 7, 3])
    adv = pg.group_advantages(rewards, groups, eps=0.0)
    assert close(adv, [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    assert not torch.isnan(adv).any()
    # eps in the denominator: -1 / (1 + 0.5) = -2/3
    assert close(pg.group_advantages(rewards, groups, eps=0.5)[0], -2 / 3)


def test_group_advantages_divide_by_the_sample_std():
    # 0, 4: mean 2, sample std sqrt((4 + 4) / 1) = 2*sqrt(2) -> -2 / 2.828427 = -0.707107
    adv = pg.group_advantages(t([0.0, 4.0]), ids([0, 0]), eps=0.0)
    assert close(adv, [-1 / math.sqrt(2), 1 / math.sqrt(2)])


def test_dr_grpo_keeps_the_centred_rewards():
    # Dr. GRPO: no division: 0, 4 -> -2, 2; the tied group stays 0
    adv = pg.group_advantages(t([0.0, 4.0, 9.0, 9.0]), ids([0, 0, 1, 1]), scale_by_std=False)
    assert close(adv, [-2.0, 2.0, 0.0, 0.0])


def test_a_tied_group_is_exactly_zero_despite_float_noise():
    # 0.1 * 3 / 3 is 0.10000000000000002 in floats: without care the noise / a noise-sized
    # std would be an advantage of order one
    adv = pg.group_advantages(t([0.1, 0.1, 0.1]), ids([0, 0, 0]), eps=0.0)
    assert torch.equal(adv, torch.zeros(3, dtype=torch.float64))


def test_group_methods_refuse_groups_of_one():
    with pytest.raises(ValueError, match="k >= 2"):
        pg.group_advantages(t([1.0, 2.0, 3.0]), ids([0, 0, 1]))
    with pytest.raises(ValueError, match="k >= 2"):
        pg.leave_one_out_advantages(t([1.0]), ids([0]))
    with pytest.raises(ValueError, match="k >= 2"):
        pg.best_and_worst(t([1.0, 2.0, 3.0]), ids([0, 1, 1]))
    with pytest.raises(ValueError, match="same length"):
        pg.group_advantages(t([1.0, 2.0]), ids([0, 0, 0]))


# ----------------------------------------------------------------------------- leave one out
def test_leave_one_out_baselines():
    # group 0 = 1, 2, 3, 6 (k = 4):
    #   1 - (2 + 3 + 6) / 3 = 1 - 11/3 = -8/3
    #   2 - (1 + 3 + 6) / 3 = 2 - 10/3 = -4/3
    #   3 - (1 + 2 + 6) / 3 = 3 - 3    = 0
    #   6 - (1 + 2 + 3) / 3 = 6 - 2    = 4
    # group 1 = 0, 10 (k = 2): 0 - 10 = -10, 10 - 0 = 10
    rewards = t([1.0, 0.0, 2.0, 3.0, 10.0, 6.0])
    groups = ids([0, 1, 0, 0, 1, 0])
    adv = pg.leave_one_out_advantages(rewards, groups)
    assert close(adv, [-8 / 3, -10.0, -4 / 3, 0.0, 10.0, 4.0])


# ----------------------------------------------------------------------------- REINFORCE++
def test_batch_normalized_over_the_unmasked_values():
    # 1, 2, 3, 4 (100 masked): mean 2.5, population var (2.25 + .25 + .25 + 2.25) / 4 = 1.25,
    # std 1.118034 -> -1.341641, -0.447214, 0.447214, 1.341641; the masked entry -> 0
    values = t([1.0, 2.0, 3.0, 4.0, 100.0])
    mask = t([1, 1, 1, 1, 0])
    out = pg.batch_normalized(values, mask=mask)
    assert close(out, [-1.341641, -0.447214, 0.447214, 1.341641, 0.0])


def test_batch_normalized_over_processes_through_the_all_reduce_hook():
    # another process holds 5 and 6: its [sum, sum of squares, count] = [11, 61, 2].
    # Global 1..6: mean 3.5, population var 17.5 / 6 = 2.916667, std 1.707825;
    # 1 -> -2.5 / 1.707825 = -1.463850, 4 -> 0.5 / 1.707825 = 0.292770
    seen = []

    def all_reduce(stats):
        seen.append(stats.clone())
        return stats + t([11.0, 61.0, 2.0])

    out = pg.batch_normalized(t([1.0, 2.0, 3.0, 4.0]), all_reduce=all_reduce)
    assert close(seen[0], [10.0, 30.0, 4.0])
    assert close(out[[0, 3]], [-1.463850, 0.292770])
    # a precomputed global mean and std: (1 - 2) / 2 = -0.5, (4 - 2) / 2 = 1
    out = pg.batch_normalized(t([1.0, 4.0]), mean=2.0, std=2.0, eps=0.0)
    assert close(out, [-0.5, 1.0])
    with pytest.raises(ValueError, match="both"):
        pg.batch_normalized(t([1.0, 4.0]), mean=2.0)


def test_batch_normalized_per_token_with_a_mask():
    # tokens 1, 3 | 5 (pad 7): mean 3, population var (4 + 0 + 4) / 3, std 1.632993
    values = t([[1.0, 3.0], [5.0, 7.0]])
    mask = t([[1, 1], [1, 0]])
    out = pg.batch_normalized(values, mask=mask, eps=0.0)
    assert close(out, [[-2 / 1.632993, 0.0], [2 / 1.632993, 0.0]])


def _inputs(token_rewards, mask, groups, scores=None, values=None, **kw):
    token_rewards, mask = t(token_rewards), t(mask)
    scores = token_rewards.sum(1) if scores is None else t(scores)
    return pg.EstimatorInputs(token_rewards, mask, scores.double(), ids(groups),
                              t([]).double(), ids([]), values=values, **kw)


def test_reinforce_pp_baseline_subtracts_the_group_mean_then_whitens():
    # one token each, groups 1, 3 | 10, 14 -> centred -1, 1, -2, 2; batch mean 0, population
    # var (1 + 1 + 4 + 4) / 4 = 2.5, std 1.581139 -> -0.632456, 0.632456, -1.264911, 1.264911
    x = _inputs([[1.0], [3.0], [10.0], [14.0]], [[1], [1], [1], [1]], [0, 0, 1, 1])
    adv, returns = pg.ESTIMATORS["reinforce_pp_baseline"](x)
    assert close(adv[:, 0], [-0.632456, 0.632456, -1.264911, 1.264911])
    assert close(returns[:, 0], [-1.0, 1.0, -2.0, 2.0])


def test_group_estimators_count_context_samples_of_the_group():
    # rows 1 and 3 of group 0; a context sample of group 0 scored 5 (not trained on):
    # leave-one-out: 1 - (3 + 5) / 2 = -3, 3 - (1 + 5) / 2 = 0
    x = _inputs([[0.0, 1.0], [3.0, 0.0]], [[1, 1], [1, 0]], [0, 0])._replace(
        context_scores=t([5.0]).double(), context_groups=ids([0]))
    assert close(pg.ESTIMATORS["rloo"](x).advantages, [-3.0, 0.0])
    # GRPO: mean 3, sample std 2 -> (1 - 3) / (2 + 1e-4), 0
    assert close(pg.ESTIMATORS["grpo"](x).advantages, [-2 / 2.0001, 0.0])
    assert close(pg.ESTIMATORS["dr_grpo"](x).advantages, [-2.0, 0.0])


def test_gae_steps_over_environment_tokens():
    # model tokens at 0, 1, 3 (an environment wrote token 2; its value 9 and reward 5 are
    # ignored), gamma 0.9, lambda 0.5 (gamma * lambda 0.45), values 0.5, 0.6, -, 0.7:
    #   t3: delta = 1 - 0.7 = 0.3                      A3 = 0.3
    #   t1: delta = 0.9 * 0.7 - 0.6 = 0.03             A1 = 0.03 + 0.45 * 0.3 = 0.165
    #   t0: delta = 0.9 * 0.6 - 0.5 = 0.04             A0 = 0.04 + 0.45 * 0.165 = 0.11425
    values = t([[0.5, 0.6, 9.0, 0.7]])
    x = _inputs([[0.0, 0.0, 5.0, 1.0]], [[1, 1, 0, 1]], [0], values=values, gamma=0.9,
                lam=0.5)
    adv, returns = pg.ESTIMATORS["gae"](x)
    assert close(adv, [[0.11425, 0.165, 0.0, 0.3]])
    assert close(returns, [[0.61425, 0.765, 0.0, 1.0]])
    # the same without the environment token: the same numbers
    plain = _inputs([[0.0, 0.0, 1.0]], [[1, 1, 1]], [0], values=t([[0.5, 0.6, 0.7]]),
                    gamma=0.9, lam=0.5)
    assert close(pg.ESTIMATORS["gae"](plain).advantages, [[0.11425, 0.165, 0.3]])


def test_returns_to_go_step_over_environment_tokens():
    # gamma 0.5, model tokens 0 and 2: G2 = 1, G0 = 0.25 + 0.5 * 1 = 0.75 (token 1's 7 ignored)
    rewards = t([[0.25, 7.0, 1.0]])
    assert close(pg.returns_to_go(rewards, t([[1, 0, 1]]), gamma=0.5), [[0.75, 0.0, 1.0]])


# ----------------------------------------------------------------------------- ties and pairs
def test_equal_reward_groups_are_found_and_counted():
    rewards = t([0.2, 0.9, 0.5, 1.0, 1.0, 1.0, 3.0, -1.0])
    groups = ids([0, 0, 0, 1, 1, 1, 2, 2])
    found = pg.equal_reward_groups(rewards, groups)
    assert found.samples.tolist() == [False] * 3 + [True] * 3 + [False] * 2
    assert (found.n_equal, found.n_groups) == (1, 3)
    # with a tolerance, group 0 (spread 0.7) counts too
    assert pg.equal_reward_groups(rewards, groups, atol=0.75).n_equal == 2


def test_best_and_worst_skip_and_count_ties():
    # group 0: best 0.9 (index 1), worst 0.2 (index 0); group 1 ties (skipped);
    # group 2: best 3 (index 6), worst -1 (index 7)
    rewards = t([0.2, 0.9, 0.5, 1.0, 1.0, 1.0, 3.0, -1.0])
    groups = ids([0, 0, 0, 1, 1, 1, 2, 2])
    pairs = pg.best_and_worst(rewards, groups)
    assert pairs.chosen.tolist() == [1, 6]
    assert pairs.rejected.tolist() == [0, 7]
    assert pairs.ties == 1


def test_best_and_worst_take_the_first_of_equal_best():
    # 2, 2, 0: the best ties between indices 0 and 1 -> the first (0); worst index 2
    pairs = pg.best_and_worst(t([2.0, 2.0, 0.0]), ids([4, 4, 4]))
    assert (pairs.chosen.tolist(), pairs.rejected.tolist(), pairs.ties) == ([0], [2], 0)


# ----------------------------------------------------------------------------- KL
def test_k3_and_plain_kl_values():
    logp = torch.log(t([0.5, 0.25, 0.3]))
    ref = torch.log(t([0.25, 0.5, 0.3]))
    # d = ref - logp:
    #   log(.25/.5) = -0.693147: e^d = 0.5 -> 0.5 + 0.693147 - 1 = 0.193147
    #   log(.5/.25) =  0.693147: e^d = 2   -> 2 - 0.693147 - 1   = 0.306853
    #   0 -> 1 - 0 - 1 = 0
    assert close(pg.k3_kl(logp, ref), [0.193147, 0.306853, 0.0])
    # plain: logp - ref = 0.693147, -0.693147, 0 (can be negative)
    assert close(pg.kl(logp, ref), [math.log(2), -math.log(2), 0.0])
    assert (pg.k3_kl(torch.randn(100), torch.randn(100)) >= 0).all()


# ----------------------------------------------------------------------------- token rewards
def test_token_rewards_with_kl_put_the_score_on_the_last_token():
    # beta 0.5: row 0 -> -0.05, -0.1, -0.15 + 1 = 0.85; row 1 (2 tokens) -> -0.25, -0.25 + 2
    # = 1.75, padding 0 (its KL 9 ignored)
    scores = t([1.0, 2.0])
    kl = t([[0.1, 0.2, 0.3], [0.5, 0.5, 9.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    rewards = pg.token_rewards_with_kl(scores, kl, mask, beta=0.5)
    assert close(rewards, [[-0.05, -0.1, 0.85], [-0.25, 1.75, 0.0]])
    with pytest.raises(ValueError, match="beta"):
        pg.token_rewards_with_kl(scores, kl, mask, beta=-0.1)
    with pytest.raises(ValueError, match="no tokens"):
        pg.token_rewards_with_kl(scores, kl, t([[1, 1, 1], [0, 0, 0]]), beta=0.5)


def test_returns_to_go():
    rewards = t([[-0.05, -0.1, 0.85], [-0.25, 1.75, 5.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    # gamma 1: row 0 -> 0.7, 0.75, 0.85; row 1 -> 1.5, 1.75, 0 (the padded 5 ignored)
    assert close(pg.returns_to_go(rewards, mask), [[0.7, 0.75, 0.85], [1.5, 1.75, 0.0]])
    # gamma 0.5, row 0: G2 = 0.85; G1 = -0.1 + 0.425 = 0.325; G0 = -0.05 + 0.1625 = 0.1125
    assert close(pg.returns_to_go(rewards, mask, gamma=0.5)[0], [0.1125, 0.325, 0.85])


# ----------------------------------------------------------------------------- clipped loss
def test_clipped_surrogate_with_both_clip_sides_active():
    # clip_low 0.2, clip_high 0.28 -> ratio clipped to [0.8, 1.28]; loss = max(-r A, -clip(r) A)
    #   r 1.5, A +1: max(-1.5, -1.28) = -1.28   (clipped, high side)
    #   r 0.5, A -1: max( 0.5,  0.8 ) =  0.8    (clipped, low side)
    #   r 1.5, A -1: max( 1.5,  1.28) =  1.5    (not clipped: the pessimistic term is r A)
    #   r 0.5, A +1: max(-0.5, -0.8 ) = -0.5    (not clipped)
    #   r 1.1, A +2: inside the range  = -2.2
    #   padding                        =  0
    ratios = t([[1.5, 0.5, 1.5], [0.5, 1.1, 3.0]])
    adv = t([[1.0, -1.0, -1.0], [1.0, 2.0, 1.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    out = pg.clipped_surrogate(torch.log(ratios), torch.zeros_like(ratios), adv, mask,
                               clip_low=0.2, clip_high=0.28)
    assert close(out.loss, [[-1.28, 0.8, 1.5], [-0.5, -2.2, 0.0]])
    # 2 of 5 real tokens clipped, one on each side; mean ratio (1.5+.5+1.5+.5+1.1)/5 = 1.02
    assert out.clip_fraction == pytest.approx(0.4)
    assert out.clip_low_fraction == pytest.approx(0.2)
    assert out.clip_high_fraction == pytest.approx(0.2)
    assert out.ratio_mean == pytest.approx(1.02)


def test_clipped_surrogate_broadcasts_sequence_advantages_and_checks_ranges():
    # A = +1 for row 0, -1 for row 1, ratio 1.2 everywhere, symmetric 0.1 clip ([0.9, 1.1]):
    # row 0 -> max(-1.2, -1.1) = -1.1; row 1 -> max(1.2, 1.1) = 1.2
    logp = torch.log(t([[1.2, 1.2], [1.2, 1.2]]))
    out = pg.clipped_surrogate(logp, torch.zeros_like(logp), t([1.0, -1.0]), torch.ones(2, 2),
                               clip_low=0.1, clip_high=0.1)
    assert close(out.loss, [[-1.1, -1.1], [1.2, 1.2]])
    with pytest.raises(ValueError, match="clip_low"):
        pg.clipped_surrogate(logp, logp, t([1.0, 1.0]), torch.ones(2, 2), clip_low=1.5)
    with pytest.raises(ValueError, match="clip_high"):
        pg.clipped_surrogate(logp, logp, t([1.0, 1.0]), torch.ones(2, 2), clip_high=-0.2)


def test_clipped_surrogate_gradient_is_zero_where_clipped():
    logp = torch.log(t([[1.5, 1.1]])).requires_grad_()
    out = pg.clipped_surrogate(logp, torch.zeros(1, 2, dtype=torch.float64), t([1.0]),
                               torch.ones(1, 2), clip_low=0.2, clip_high=0.2)
    out.loss.sum().backward()
    # token 0 clipped (1.5 > 1.2): no gradient; token 1: d(-r)/d logp = -r = -1.1
    assert close(logp.grad, [[0.0, -1.1]])


# ----------------------------------------------------------------------------- aggregation
def test_per_token_and_per_sequence_aggregation_differ_on_unequal_lengths():
    # row 0: 4 tokens 1, 2, 3, 6 (sum 12); row 1: one token 4 (its padding holds 100s)
    loss = t([[1.0, 2.0, 3.0, 6.0], [4.0, 100.0, 100.0, 100.0]])
    mask = t([[1, 1, 1, 1], [1, 0, 0, 0]])
    # sequence: (12/4 + 4/1) / 2 = (3 + 4) / 2 = 3.5
    assert close(pg.aggregate(loss, mask, "sequence"), 3.5)
    # token: (12 + 4) / 5 tokens = 3.2
    assert close(pg.aggregate(loss, mask, "token"), 3.2)
    # dr_grpo, constant 4 (= T): (12/4 + 4/4) / 2 = 2.0; with max_length 8: (1.5 + .5) / 2 = 1
    assert close(pg.aggregate(loss, mask, "dr_grpo"), 2.0)
    assert close(pg.aggregate(loss, mask, "dr_grpo", max_length=8), 1.0)
    # a global count from elsewhere: token (12 + 4) / 10 = 1.6; sequence (3 + 4) / 4 = 1.75
    assert close(pg.aggregate(loss, mask, "token", denominator=10), 1.6)
    assert close(pg.aggregate(loss, mask, "sequence", denominator=4), 1.75)
    with pytest.raises(ValueError, match="loss_type"):
        pg.aggregate(loss, mask, "mean")


# ----------------------------------------------------------------------------- DPO
def test_dpo_loss_on_two_pairs():
    # beta 0.1
    # pair 1: chosen 0.1 * (-10 - -11) = 0.1, rejected 0.1 * (-12 - -11) = -0.1, margin 0.2
    #   loss = -log sigmoid(0.2) = log(1 + e^-0.2) = log(1.818731) = 0.598139
    # pair 2: chosen 0.1 * (-5 - -5) = 0, rejected 0.1 * (-4 - -6) = 0.2, margin -0.2
    #   loss = log(1 + e^0.2) = log(2.221403) = 0.798139
    # mean 0.698139; accuracy 1 of 2
    out = pg.dpo_loss(t([-10.0, -5.0]), t([-12.0, -4.0]), t([-11.0, -5.0]), t([-11.0, -6.0]),
                      beta=0.1)
    assert close(out.losses, [0.598139, 0.798139])
    assert close(out.loss, 0.698139)
    assert close(out.chosen_rewards, [0.1, 0.0])
    assert close(out.rejected_rewards, [-0.1, 0.2])
    assert out.accuracy == 0.5
    with pytest.raises(ValueError, match="beta"):
        pg.dpo_loss(t([0.0]), t([0.0]), t([0.0]), t([0.0]), beta=-1.0)
