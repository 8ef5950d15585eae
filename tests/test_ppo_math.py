"""PPO arithmetic against numbers worked out by hand (the comments show the working)."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfx import policy_gradient as pg


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64),
                          torch.as_tensor(b, dtype=torch.float64), atol=tol)


# ----------------------------------------------------------------------------- whitening
def test_masked_mean_and_sample_whitening_ignore_masked_values():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert close(pg.masked_mean(x, m), 2.0)
    # mean 2, sample std 1 over the three unmasked values -> -1, 0, 1 (the masked one 0)
    assert close(pg.batch_normalized(x, m, unbiased=True), [[-1.0, 0.0, 1.0, 0.0]])
    # shift_mean=False keeps the mean: -1 + 2, 0 + 2, 1 + 2
    assert close(pg.batch_normalized(x, m, unbiased=True, shift_mean=False)[0, :3],
                 [1.0, 2.0, 3.0])
    # x4 scaled: std 4 -> the same whitened values
    assert close(pg.batch_normalized(4 * x, m, unbiased=True)[0, :3], [-1.0, 0.0, 1.0])


def test_sample_whitening_needs_two_values():
    with pytest.raises(ValueError):
        pg.batch_normalized(torch.tensor([[1.0, 5.0]]), torch.tensor([[1.0, 0.0]]),
                            unbiased=True)


# ----------------------------------------------------------------------------- KL
def test_kl_estimators_per_token():
    logp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    assert close(pg.KL_ESTIMATORS["kl"](logp, ref), [[0.5, -1.0]])
    assert close(pg.KL_ESTIMATORS["abs"](logp, ref), [[0.5, 1.0]])
    # 0.5 * 0.5^2 = 0.125, 0.5 * 1^2 = 0.5
    assert close(pg.KL_ESTIMATORS["mse"](logp, ref), [[0.125, 0.5]])


def test_full_kl_is_the_exact_divergence():
    p = torch.tensor([[[0.5, 0.5]]]).log()
    q = torch.tensor([[[0.25, 0.75]]]).log()
    # 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln(4/3)
    assert close(pg.full_kl(p, q), [[0.5 * math.log(4 / 3)]])
    assert close(pg.full_kl(p, p), [[0.0]])


def test_adaptive_kl_controller_update():
    ctl = pg.KLController(0.2, target=6, horizon=10000)
    # KL 9: error = clip(9/6 - 1 = 0.5, +-0.2) = 0.2; coef *= 1 + 0.2 * 128 / 10000
    ctl.update(9.0, 128)
    assert ctl.value == pytest.approx(0.2 * 1.00256)
    ctl = pg.KLController(0.2, target=6, horizon=10000)
    # KL 5.4: error = 5.4/6 - 1 = -0.1; coef *= 1 - 0.1 * 100 / 10000 = 0.999
    ctl.update(5.4, 100)
    assert ctl.value == pytest.approx(0.1998)
    fixed = pg.KLController(0.3)
    fixed.update(100.0, 128)
    assert fixed.value == 0.3
    # state round trip (checkpoints)
    again = pg.KLController(1.0, 6, 10000)
    again.load_state_dict(ctl.state_dict())
    assert again.value == ctl.value


# ----------------------------------------------------------------------------- rewards
def test_rewards_put_the_score_on_the_last_response_token():
    kls = torch.tensor([[0.5, -1.0, 3.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    rewards = pg.token_rewards_with_kl(torch.tensor([2.0]), kls, mask, beta=0.1)
    # -0.1 * [0.5, -1.0] = [-0.05, 0.1]; the score 2 goes on token 2 (the last unmasked one)
    assert close(rewards, [[-0.05, 2.1, 0.0]])


def test_running_moments_and_score_scaling():
    rm = pg.RunningMoments()
    rm.update([1.0, 2.0, 3.0])
    assert rm.mean == pytest.approx(2.0)
    rm.update([5.0])
    # all of [1, 2, 3, 5]: mean 2.75, population var 8.75 / 4, sample std sqrt(8.75 / 3)
    assert rm.mean == pytest.approx(2.75)
    assert rm.var == pytest.approx(2.1875)
    assert rm.std == pytest.approx(math.sqrt(8.75 / 3))
    scores = torch.tensor([2.75, 6.0])
    assert close(pg.scale_scores(scores, rm, norm=True, clip=None),
                 [0.0, 3.25 / math.sqrt(8.75 / 3)])
    assert close(pg.scale_scores(scores, rm, norm=False, clip=1.0), [1.0, 1.0])
    assert close(pg.scale_scores(torch.tensor([-5.0, 0.5]), None, norm=False, clip=2.0),
                 [-2.0, 0.5])


# ----------------------------------------------------------------------------- GAE
def test_gae_on_a_short_sequence():
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 1.0, 9.0]])
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    raw_adv, ret = pg.gae(values, rewards, mask, gamma=0.9, lam=0.5)
    vals = values * mask
    adv = pg.batch_normalized(raw_adv, mask, unbiased=True)
    # row 1, gamma * lam = 0.45:
    #   t2: delta = 1 - 0.7 = 0.3                      A2 = 0.3
    #   t1: delta = 0.9 * 0.7 - 0.6 = 0.03             A1 = 0.03 + 0.45 * 0.3 = 0.165
    #   t0: delta = 0.9 * 0.6 - 0.5 = 0.04             A0 = 0.04 + 0.45 * 0.165 = 0.11425
    # row 2, the masked token (V 9, r 5) counts as zero:
    #   t1: delta = 2 - 1 = 1                          A1 = 1
    #   t0: delta = 0.9 * 1 - 1 = -0.1                 A0 = -0.1 + 0.45 * 1 = 0.35
    raw = torch.tensor([[0.11425, 0.165, 0.3], [0.35, 1.0, 0.0]])
    assert close(ret, raw + vals)
    assert close(ret[0], [0.61425, 0.765, 1.0])
    assert close(ret[1, :2], [1.35, 2.0])
    # advantages are whitened over the five unmasked values
    flat = [0.11425, 0.165, 0.3, 0.35, 1.0]
    mean = sum(flat) / 5
    std = math.sqrt(sum((a - mean) ** 2 for a in flat) / 4)
    assert close(adv[0], [(a - mean) / std for a in flat[:3]])
    assert close(adv[1, :2], [(a - mean) / std for a in flat[3:]])


def test_gae_with_gamma_one_and_lambda_one_is_reward_to_go_minus_value():
    values = torch.tensor([[0.2, 0.4, 0.1, 0.3]])
    rewards = torch.tensor([[0.1, -0.2, 0.0, 1.0]])
    mask = torch.ones(1, 4)
    _, ret = pg.gae(values, rewards, mask, gamma=1.0, lam=1.0)
    # returns = reward-to-go: 0.9, 0.8, 1.0, 1.0
    assert close(ret, [[0.9, 0.8, 1.0, 1.0]])


# ----------------------------------------------------------------------------- losses
def test_clipped_policy_and_value_losses():
    mask = torch.ones(1, 2)
    logp = torch.tensor([[math.log(1.5), math.log(0.5)]])
    out = pg.clipped_surrogate(logp, torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]), mask)
    # ratios 1.5, 0.5 -> clipped 1.2, 0.8; -A*r = [-1.5, 0.5], -A*clip = [-1.2, 0.8]
    # max -> [-1.2, 0.8], mean -0.2; both tokens clipped
    assert pg.aggregate(out.loss, mask, "token").item() == pytest.approx(-0.2)
    assert out.clip_fraction == pytest.approx(1.0)
    # V clipped to [-0.2, 0.2]: [0.2, -0.1]; (V-R)^2 = [0.25, 1.21], clipped [0.64, 1.21]
    # 0.5 * mean(max) = 0.5 * 0.925 = 0.4625
    value, clipped = pg.clipped_value_loss(torch.tensor([[0.5, -0.1]]), torch.zeros(1, 2),
                                           torch.ones(1, 2), clip=0.2)
    assert pg.aggregate(value, mask, "token").item() == pytest.approx(0.4625)
    assert clipped.tolist() == [[True, False]]


def test_value_loss_has_no_gradient_where_clipped():
    values = torch.tensor([[0.5, 0.1]], requires_grad=True)
    loss, _ = pg.clipped_value_loss(values, torch.zeros(1, 2), torch.ones(1, 2), clip=0.2)
    loss.sum().backward()
    # token 0: the clipped term (0.2 - 1)^2 is the larger: no gradient; token 1 (0.1, inside
    # the range): d 0.5 (V - 1)^2 / dV = 0.1 - 1
    assert values.grad[0].tolist() == pytest.approx([0.0, -0.9])
