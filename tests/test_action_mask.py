"""Response tokens an environment wrote (`Sample.action_mask` 0) are context only: no gradient
reaches their logits, and nothing the engine keeps at them (rollout and reference log-probs,
values) changes a loss. A hand-made episode: response tokens 2 and 3 come from a tool."""

from __future__ import annotations

import pytest
import torch
from engine_fakes import on_tiny_policy

from rlhfx.alignment.batch import Batch
from rlhfx.components import Sample

ACTION_MASK = [1, 1, 0, 0, 1, 1]
ENVIRONMENT = [2, 3]  # response positions the tool wrote


class Spy(torch.nn.Module):
    """The policy, keeping its last logits with their gradient."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.logits = None

    def forward(self, **kwargs):
        out = self.model(**kwargs)
        if out.logits.requires_grad:
            out.logits.retain_grad()
        self.logits = out.logits
        return out


def episodes() -> list[Sample]:
    prompt = [5, 6, 7]
    return [
        Sample(0, "p", "a", prompt_ids=prompt, response_ids=[11, 12, 40, 41, 13, 14],
               action_mask=ACTION_MASK, reward=1.0, sample=0),
        Sample(0, "p", "b", prompt_ids=prompt, response_ids=[21, 22, 40, 41, 23, 24],
               action_mask=ACTION_MASK, reward=3.0, sample=1),
    ]


def prepared(algorithm, critic: bool = False, scores=None):
    policy = on_tiny_policy(algorithm, Spy)
    if critic:
        from rlhfx.plugins.ppo.value_head import ValueHead

        algorithm.critic = ValueHead(policy.config.hidden_size, dropout=0.0)
    rows = episodes()
    if scores is not None:  # PPO: the scores of the rows `select` kept
        scores.kept_scores = {id(s): float(s.reward) for s in rows}
        scores.raw_scores = [[float(s.reward) for s in rows]]
    batch = Batch(1, rows, k=2, num_prompts=1, rank=0, world_size=1, seed=0, shared_seed=0)
    with torch.no_grad():
        exp = algorithm.make_experience(rows, batch)
    algorithm.start_epochs(exp)
    return exp


def environment_logit_grads(algorithm, exp) -> tuple[torch.Tensor, torch.Tensor]:
    """|gradient| of the logits predicting environment tokens, and of those predicting the
    policy's tokens (position p predicts token p + 1)."""
    algorithm.loss(exp, [0, 1], 2.0).backward()
    grad = algorithm.policy.logits.grad.abs().sum(-1)  # [B, L]
    start = exp.tokens.prompt_width - 1
    env = [start + j for j in ENVIRONMENT]
    mine = [start + j for j in range(len(ACTION_MASK)) if ACTION_MASK[j]]
    return grad[:, env], grad[:, mine]


def loss_value(algorithm, exp) -> float:
    algorithm.start_epochs(exp)
    with torch.no_grad():
        return float(algorithm.loss(exp, [0, 1], 2.0))


def scramble_environment_positions(exp) -> None:
    for tensor in (exp.old_logp, exp.ref_logp, exp.values):
        if tensor is not None:
            tensor[:, ENVIRONMENT] = torch.randn(tensor.shape[0], len(ENVIRONMENT)) * 5


def critic_free(name: str):
    from rlhfx.plugins.grpo import GRPO
    from rlhfx.plugins.reinforce_pp import ReinforcePP
    from rlhfx.plugins.rloo import RLOO

    cls = {"grpo": GRPO, "rloo": RLOO, "reinforce_pp": ReinforcePP}[name]
    # two epochs: the rollout log-probs are kept, and the ratio is taken against them
    return cls(cls.Config(k=2, batch_size=1, epochs=2, beta=0.1, loss_type="token"))


@pytest.mark.parametrize("name", ["grpo", "rloo", "reinforce_pp"])
def test_critic_free_update_gives_environment_tokens_no_gradient(name):
    algorithm = critic_free(name)
    exp = prepared(algorithm)
    assert exp.mask[0].tolist() == [float(m) for m in ACTION_MASK]
    assert float(exp.token_rewards[:, ENVIRONMENT].abs().sum()) == 0.0
    if exp.advantages.dim() == 2:
        assert float(exp.advantages[:, ENVIRONMENT].abs().sum()) == 0.0
    env, mine = environment_logit_grads(algorithm, exp)
    assert float(env.max()) == 0.0
    assert float(mine.min()) > 0.0  # the control: the policy's own tokens do learn
    before = loss_value(algorithm, exp)
    scramble_environment_positions(exp)
    assert loss_value(algorithm, exp) == pytest.approx(before, abs=1e-7)


def test_ppo_update_gives_environment_tokens_no_gradient_value_or_advantage():
    from rlhfx.plugins.ppo import PPO, PPOConfig
    from rlhfx.policy_gradient import KLController

    algorithm = PPO(PPOConfig(batch_size=2, mini_batch_size=2, ppo_epochs=1))
    algorithm.kl_ctl = KLController(0.2)
    algorithm.moments = None
    exp = prepared_ppo(algorithm)
    assert exp.values is not None
    for tensor in (exp.values, exp.advantages, exp.returns, exp.token_rewards, exp.kl):
        assert float(tensor[:, ENVIRONMENT].abs().sum()) == 0.0
    # the score sits on the last model token
    assert exp.token_rewards[:, -1].tolist() == pytest.approx(
        [1.0 - 0.2 * float(exp.kl[0, -1]), 3.0 - 0.2 * float(exp.kl[1, -1])])
    env, mine = environment_logit_grads(algorithm, exp)
    assert float(env.max()) == 0.0 and float(mine.min()) > 0.0
    before = loss_value(algorithm, exp)
    scramble_environment_positions(exp)
    assert loss_value(algorithm, exp) == pytest.approx(before, abs=1e-7)


def prepared_ppo(algorithm):
    """`prepared` for PPO: its scores are those `select` kept. (GAE's stepping over the
    tool's tokens is checked in tests/test_policy_gradient.py.)"""
    exp = prepared(algorithm, critic=True, scores=algorithm)
    algorithm.experience = exp
    algorithm.value_stats = {}
    algorithm.last_policykl = float("nan")
    return exp
