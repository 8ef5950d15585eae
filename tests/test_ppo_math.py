"""PPO arithmetic against numbers worked out by hand (the comments show the working)."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfx.plugins.ppo import formulas as pm
from rlhfx.plugins.ppo.trainer import build_rollouts, response_slice


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64),
                          torch.as_tensor(b, dtype=torch.float64), atol=tol)


# ----------------------------------------------------------------------------- masked stats
def test_masked_mean_and_var_ignore_masked_values():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert close(pm.masked_mean(x, m), 2.0)
    # unbiased: ((1-2)^2 + 0 + (3-2)^2) / (3 - 1) = 1
    assert close(pm.masked_var(x, m), 1.0)
    assert close(pm.masked_var(x, m, unbiased=False), 2 / 3)


def test_masked_whiten_with_a_mask():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    # mean 2, std 1 over the three unmasked values -> -1, 0, 1
    assert close(pm.masked_whiten(x, m)[0, :3], [-1.0, 0.0, 1.0])
    # shift_mean=False keeps the mean: -1 + 2, 0 + 2, 1 + 2
    assert close(pm.masked_whiten(x, m, shift_mean=False)[0, :3], [1.0, 2.0, 3.0])
    # x4 scaled: std 4 -> the same whitened values
    assert close(pm.masked_whiten(4 * x, m)[0, :3], [-1.0, 0.0, 1.0])


def test_masked_var_needs_two_values():
    with pytest.raises(ValueError):
        pm.masked_var(torch.tensor([[1.0, 5.0]]), torch.tensor([[1.0, 0.0]]))


# ----------------------------------------------------------------------------- KL
def test_kl_estimators_per_token():
    logp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    assert close(pm.kl_penalty(logp, ref, "kl"), [[0.5, -1.0]])
    assert close(pm.kl_penalty(logp, ref, "abs"), [[0.5, 1.0]])
    # 0.5 * 0.5^2 = 0.125, 0.5 * 1^2 = 0.5
    assert close(pm.kl_penalty(logp, ref, "mse"), [[0.125, 0.5]])


def test_full_kl_is_the_exact_divergence():
    p = torch.tensor([[[0.5, 0.5]]]).log()
    q = torch.tensor([[[0.25, 0.75]]]).log()
    # 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln(4/3)
    assert close(pm.kl_penalty(p, q, "full"), [[0.5 * math.log(4 / 3)]])
    assert close(pm.kl_penalty(p, p, "full"), [[0.0]])


def test_unknown_kl_estimator():
    with pytest.raises(ValueError, match="unknown KL"):
        pm.kl_penalty(torch.zeros(1), torch.zeros(1), "nope")


def test_adaptive_kl_controller_update():
    ctl = pm.AdaptiveKLController(0.2, target=6, horizon=10000)
    # KL 9: error = clip(9/6 - 1 = 0.5, +-0.2) = 0.2; coef *= 1 + 0.2 * 128 / 10000
    ctl.update(9.0, 128)
    assert ctl.value == pytest.approx(0.2 * 1.00256)
    ctl = pm.AdaptiveKLController(0.2, target=6, horizon=10000)
    # KL 5.4: error = 5.4/6 - 1 = -0.1; coef *= 1 - 0.1 * 100 / 10000 = 0.999
    ctl.update(5.4, 100)
    assert ctl.value == pytest.approx(0.1998)
    fixed = pm.FixedKLController(0.3)
    fixed.update(100.0, 128)
    assert fixed.value == 0.3
    # state round trip (checkpoints)
    again = pm.AdaptiveKLController(1.0, 6, 10000)
    again.load_state_dict(ctl.state_dict())
    assert again.value == ctl.value


# ----------------------------------------------------------------------------- rewards
def test_rewards_put_the_score_on_the_last_response_token():
    kls = torch.tensor([[0.5, -1.0, 3.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    rewards, non_score = pm.compute_rewards(torch.tensor([2.0]), kls, mask, kl_coef=0.1)
    # -0.1 * [0.5, -1.0] = [-0.05, 0.1]; the score 2 goes on token 2 (the last unmasked one)
    assert close(non_score, [[-0.05, 0.1, 0.0]])
    assert close(rewards, [[-0.05, 2.1, 0.0]])


def test_running_moments_and_score_scaling():
    rm = pm.RunningMoments()
    batch_mean, batch_std = rm.update([1.0, 2.0, 3.0])
    assert (batch_mean, batch_std) == pytest.approx((2.0, 1.0))
    assert rm.mean == pytest.approx(2.0)
    rm.update([5.0])
    # all of [1, 2, 3, 5]: mean 2.75, population var 8.75 / 4, sample std sqrt(8.75 / 3)
    assert rm.mean == pytest.approx(2.75)
    assert rm.var == pytest.approx(2.1875)
    assert rm.std == pytest.approx(math.sqrt(8.75 / 3))
    scores = torch.tensor([2.75, 6.0])
    assert close(pm.scale_scores(scores, rm, norm=True, clip=None),
                 [0.0, 3.25 / math.sqrt(8.75 / 3)])
    assert close(pm.scale_scores(scores, rm, norm=False, clip=1.0), [1.0, 1.0])
    assert close(pm.scale_scores(torch.tensor([-5.0, 0.5]), None, norm=False, clip=2.0),
                 [-2.0, 0.5])


# ----------------------------------------------------------------------------- GAE
def test_gae_on_a_short_sequence():
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 1.0, 9.0]])
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    vals, adv, ret = pm.compute_advantages(values, rewards, mask, gamma=0.9, lam=0.5)
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
    _, _, ret = pm.compute_advantages(values, rewards, mask, gamma=1.0, lam=1.0)
    # returns = reward-to-go: 0.9, 0.8, 1.0, 1.0
    assert close(ret, [[0.9, 0.8, 1.0, 1.0]])


# ----------------------------------------------------------------------------- losses
def _loss_inputs():
    return dict(
        old_logprobs=torch.zeros(1, 2),
        old_values=torch.zeros(1, 2),
        logprobs=torch.tensor([[math.log(1.5), math.log(0.5)]]),
        vpreds=torch.tensor([[0.5, -0.1]]),
        mask=torch.ones(1, 2),
        advantages=torch.tensor([[1.0, -1.0]]),
        returns=torch.ones(1, 2),
        cliprange=0.2,
        cliprange_value=0.2,
        vf_coef=0.1,
    )


def test_clipped_policy_and_value_losses():
    out = pm.ppo_losses(**_loss_inputs())
    # ratios 1.5, 0.5 -> clipped 1.2, 0.8; -A*r = [-1.5, 0.5], -A*clip = [-1.2, 0.8]
    # max -> [-1.2, 0.8], mean -0.2; both tokens clipped
    assert out.policy.item() == pytest.approx(-0.2)
    assert out.stats["policy/clipfrac"] == pytest.approx(1.0)
    # V clipped to [-0.2, 0.2]: [0.2, -0.1]; (V-R)^2 = [0.25, 1.21], clipped [0.64, 1.21]
    # 0.5 * mean(max) = 0.5 * 0.925 = 0.4625; times vf_coef 0.1
    assert out.stats["loss/value"] == pytest.approx(0.4625)
    assert out.value.item() == pytest.approx(0.04625)
    assert out.total.item() == pytest.approx(-0.2 + 0.04625)
    assert out.stats["val/clipfrac"] == pytest.approx(0.5)
    # approx KL 0.5 * mean(log r^2); policy KL mean(old - new) = -ln(0.75) / 2
    assert out.stats["policy/approxkl"] == pytest.approx(
        0.5 * (math.log(1.5) ** 2 + math.log(0.5) ** 2) / 2)
    assert out.stats["policy/policykl"] == pytest.approx(-math.log(0.75) / 2)
    assert not out.skipped


def test_ratio_threshold_skips_the_batch():
    out = pm.ppo_losses(**_loss_inputs(), ratio_threshold=0.9)  # mean ratio 1.0 > 0.9
    assert out.skipped
    assert out.total.item() == 0.0


def test_losses_have_gradients_only_where_unclipped():
    inputs = _loss_inputs()
    inputs["logprobs"] = torch.tensor([[math.log(1.1), math.log(1.5)]], requires_grad=True)
    out = pm.ppo_losses(**inputs)
    out.policy.backward()
    grad = inputs["logprobs"].grad[0]
    # token 1 (ratio 1.1, inside the clip range): d(-A r / 2)/dlogp = -1 * 1.1 / 2
    assert grad[0].item() == pytest.approx(-0.55)
    # token 2 (A = -1, ratio 1.5 > 1.2): the unclipped -A*r = 1.5 is the max, so it has a
    # gradient: d(r / 2)/dlogp = 1.5 / 2
    assert grad[1].item() == pytest.approx(0.75)


# ----------------------------------------------------------------------------- helpers
def test_logprobs_and_entropy_from_logits():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, 0.0, 0.0]]])
    labels = torch.tensor([[2, 0]])
    # uniform over 4: log(1/4); second row p = 3/6 for token 0
    assert close(pm.logprobs_from_logits(logits, labels), [[math.log(0.25), math.log(0.5)]])
    h2 = -(0.5 * math.log(0.5) + 3 * (1 / 6) * math.log(1 / 6))
    assert close(pm.entropy_from_logits(logits), [[math.log(4.0), h2]])


def test_sequence_stats_sum_over_response_tokens():
    logprobs = torch.tensor([[-1.0, -2.0, -9.0]])
    kls = torch.tensor([[0.5, 0.25, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    stats = pm.sequence_stats(logprobs, kls, -0.1 * kls * mask, mask)
    assert stats["kl"] == pytest.approx([0.75])
    assert stats["neg_logprob"] == pytest.approx([3.0])
    assert stats["tokens"] == [2.0]
    assert pm.mean_of([{"a": 1.0}, {"a": 3.0, "b": 2.0}]) == {"a": 2.0, "b": 2.0}


def test_response_positions_line_up_with_the_shifted_logits():
    batch = build_rollouts([[5, 6], [1, 2, 3]], [[7, 8, 9], [4]], pad_id=0, device="cpu")
    # logits at position p predict token p + 1: token 7 (index 2) comes from position 1
    assert batch.positions[0].tolist() == [1, 2, 3]
    assert batch.positions[1, 0].item() == 2
    assert batch.labels.tolist() == [[7, 8, 9], [4, 0, 0]]
    assert batch.mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    per_position = torch.arange(10).reshape(2, 5)
    assert response_slice(per_position, batch.positions)[0].tolist() == [1, 2, 3]
    assert response_slice(per_position, batch.positions)[1, 0].item() == 7


def test_minibatches_shrink_when_responses_were_dropped():
    from types import SimpleNamespace

    from rlhfx.plugins.ppo.config import PPOConfig
    from rlhfx.plugins.ppo.trainer import PPOTrainer

    def count(max_kept: int, **options) -> int:
        trainer = SimpleNamespace(config=PPOConfig(**options))
        return PPOTrainer.minibatch_count(trainer, max_kept)

    assert count(32, batch_size=32, mini_batch_size=4) == 8  # TRL: batch / mini-batch
    assert count(3, batch_size=32, mini_batch_size=4) == 3  # never a mini-batch of nothing
    # with accumulation over 2 mini-batches, whole groups only: 3 -> 4
    assert count(3, batch_size=32, mini_batch_size=4, gradient_accumulation_steps=2) == 4
