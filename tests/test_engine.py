"""The policy-gradient engine's own rules: a mini-batch whose mean ratio passes the threshold
is skipped, and PPO's mini-batch count follows how many rollouts were kept."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from test_action_mask import critic_free, prepared

from rlhfx.alignment.batch import Batch
from rlhfx.components import Sample


def test_a_minibatch_above_the_ratio_threshold_is_skipped():
    algorithm = critic_free("grpo")
    exp = prepared(algorithm)
    assert exp.old_logp is not None
    exp.old_logp -= exp.mask  # every ratio e = 2.718...
    settings = algorithm.update_settings()
    for threshold, skipped in ((2.0, True), (3.0, False)):
        algorithm.update_settings = lambda t=threshold: replace(settings, ratio_threshold=t)
        algorithm.start_epochs(exp)
        loss = algorithm.loss(exp, [0, 1], 2.0)
        assert (float(loss.detach()) == 0.0) == skipped
        assert algorithm.sums.get("skipped", 0) == int(skipped)


@pytest.mark.parametrize(("kept", "options", "count"), [
    (32, {}, 8),  # TRL: batch / mini-batch
    (3, {}, 3),  # never a mini-batch of nothing
    (3, {"gradient_accumulation_steps": 2}, 4),  # whole accumulation groups: 3 -> 4
    (0, {}, 1),  # nothing kept anywhere: one empty mini-batch, skipped
])
def test_ppo_minibatches_shrink_when_responses_were_dropped(kept, options, count):
    from rlhfx.plugins.ppo import PPO, PPOConfig

    algorithm = PPO(PPOConfig(batch_size=32, mini_batch_size=4, **options))
    algorithm.run = SimpleNamespace(gather=lambda x: [x])
    samples = [Sample(i, "p", "r", prompt_ids=[1], response_ids=[5, 6], reward=1.0)
               for i in range(kept)]
    batch = Batch(1, samples, k=1, num_prompts=kept, rank=0, world_size=1, seed=0,
                  shared_seed=0)
    rows, _ = algorithm.select(batch)
    assert len(rows) == kept and algorithm.minibatch_count == count
    assert algorithm.update_settings().minibatches == count
    assert torch.is_tensor(algorithm.scores(rows))
