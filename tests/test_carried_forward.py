"""With one epoch of one mini-batch, the KL-in-reward algorithms (RLOO, REINFORCE++) take their
rollout log-probs from the update's own forward pass: one policy forward per update instead of
two, and the same update as with the separate gradient-free pass."""

from __future__ import annotations

import pytest
import torch
from engine_fakes import on_tiny_policy

from rlhfx.alignment.batch import Batch
from rlhfx.components import Sample
from rlhfx.tiny import tiny_causal_lm


class Counting(torch.nn.Module):
    """The policy, counting its forward passes with and without gradients."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.calls = {"grad": 0, "no_grad": 0}

    def forward(self, **kwargs):
        self.calls["grad" if torch.is_grad_enabled() else "no_grad"] += 1
        return self.model(**kwargs)


def samples() -> list[Sample]:
    rows = []
    for p, prompt in enumerate([[5, 6, 7], [8, 9]]):
        for j, (response, reward) in enumerate([([11, 12, 13], 1.0), ([21, 22], 3.0),
                                                ([31, 32, 33, 34], 0.0)]):
            rows.append(Sample(p, "p", "r", prompt_ids=prompt,
                               response_ids=[t + p for t in response], reward=reward, sample=j))
    return rows


def updated(name: str, carry: bool, **options):
    from rlhfx.plugins.reinforce_pp import ReinforcePP
    from rlhfx.plugins.rloo import RLOO

    cls = {"rloo": RLOO, "reinforce_pp": ReinforcePP}[name]
    algorithm = cls(cls.Config(k=3, batch_size=2, beta=0.1, learning_rate=1e-2, **options))
    policy = on_tiny_policy(algorithm, Counting)
    # plain SGD: Adam's first step is about lr * sign(gradient), which rounding flips where
    # a gradient is near 0
    algorithm.optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)
    if not carry:
        algorithm.carries_forward = lambda rows, chunk: False
    batch = Batch(1, samples(), k=3, num_prompts=2, rank=0, world_size=1, seed=0,
                  shared_seed=0)
    metrics = algorithm.update(batch)
    assert algorithm.carried is None  # used, not kept
    return algorithm.policy, metrics


@pytest.mark.parametrize("name", ["rloo", "reinforce_pp"])
def test_one_forward_gives_the_update_of_two(name):
    one, m1 = updated(name, carry=True)
    two, m2 = updated(name, carry=False)
    assert one.calls == {"grad": 1, "no_grad": 0}
    assert two.calls == {"grad": 1, "no_grad": 1}
    for a, b in zip(one.model.parameters(), two.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    fresh = tiny_causal_lm("builtin:tiny-gpt-neo")
    assert any(not torch.equal(a, b)  # the update moved the policy
               for a, b in zip(one.model.parameters(), fresh.parameters(), strict=True))
    for key in ("train_loss", "kl_mean", "entropy", "advantage_mean", "ratio_mean"):
        assert m1[key] == pytest.approx(m2[key], abs=1e-5), key


def test_more_epochs_keep_the_separate_rollout_pass():
    policy, _ = updated("rloo", carry=True, epochs=2)
    assert policy.calls == {"grad": 2, "no_grad": 1}
