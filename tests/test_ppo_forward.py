"""PPO's cheaper forward passes give what the full ones gave: logits and values at response
positions only (policy, reference, LoRA, another architecture), rollout passes in chunks of any
size, and length-grouped mini-batches that stay seeded."""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlhfx.alignment.reference import ReferenceModel
from rlhfx.plugins.ppo.config import PPOConfig
from rlhfx.plugins.ppo.trainer import (
    PPOTrainer,
    build_rollouts,
    minibatch_rows,
    reference_logits,
    response_slice,
)
from rlhfx.plugins.ppo.value_head import PolicyWithValueHead

QUERIES = [[5, 6, 7], [1, 2], [3, 4, 5, 6, 7, 8], [9]]
RESPONSES = [[11, 12, 13, 14], [15], [16, 17], [18, 19, 20, 21, 22]]


def tiny_gpt_neo():
    from rlhfx.tiny import tiny_causal_lm

    torch.manual_seed(0)
    return tiny_causal_lm("builtin:tiny-gpt-neo").eval()


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def with_lora(model):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    wrapped = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                               init_lora_weights=False))
    return wrapped.eval()


@pytest.mark.parametrize("make", [tiny_gpt_neo, tiny_llama,
                                  lambda: with_lora(tiny_gpt_neo())],
                         ids=["gpt-neo", "llama", "gpt-neo+lora"])
def test_response_positions_only_match_the_full_forward(make):
    model = PolicyWithValueHead(make(), value_dropout=0.0).eval()
    batch = build_rollouts(QUERIES, RESPONSES, pad_id=0, device="cpu")
    with torch.no_grad():
        full_logits, full_values = model(batch.input_ids, batch.attention_mask)
        logits, values = model(batch.input_ids, batch.attention_mask, batch.positions)
    want = response_slice(full_logits, batch.positions)
    assert logits.shape == want.shape and logits.dtype == torch.float32
    assert torch.allclose(logits, want, atol=1e-5)
    assert torch.allclose(values, response_slice(full_values, batch.positions), atol=1e-5)


def test_a_head_with_scaling_after_it_falls_back_to_full_logits():
    policy = tiny_gpt_neo()
    policy.config.final_logit_softcapping = 30.0  # as Gemma 2's would say (ignored by GPT-Neo)
    model = PolicyWithValueHead(policy, value_dropout=0.0).eval()
    batch = build_rollouts(QUERIES, RESPONSES, pad_id=0, device="cpu")
    with torch.no_grad():
        full, _ = model(batch.input_ids, batch.attention_mask)
        picked, _ = model(batch.input_ids, batch.attention_mask, batch.positions)
    assert torch.allclose(picked, response_slice(full, batch.positions), atol=1e-6)


@pytest.mark.parametrize("lora", [False, True])
def test_reference_logits_at_response_positions(lora):
    policy = with_lora(tiny_gpt_neo()) if lora else tiny_gpt_neo()
    reference = ReferenceModel(policy)
    if not lora:  # the copy must be what is read, not the policy: make them differ
        with torch.no_grad():
            policy.get_output_embeddings().weight.mul_(2.0)
    batch = build_rollouts(QUERIES, RESPONSES, pad_id=0, device="cpu")
    want = response_slice(reference.logits(batch.input_ids, batch.attention_mask),
                          batch.positions)
    assert torch.allclose(reference_logits(reference, batch), want, atol=1e-5)


def test_rollout_pass_is_the_same_in_chunks_of_any_size():
    model = PolicyWithValueHead(tiny_gpt_neo(), value_dropout=0.0)
    batch = build_rollouts(QUERIES, RESPONSES, pad_id=0, device="cpu")
    outs = []
    for rows in (1, 3, 64):
        trainer = SimpleNamespace(config=PPOConfig(forward_batch_size=rows), unwrapped=model,
                                  reference=ReferenceModel(model.policy), autocast=nullcontext)
        outs.append(PPOTrainer.rollout_pass(trainer, batch))  # type: ignore[arg-type]
    for key in ("logprobs", "values", "ref", "kls"):
        assert outs[0][key].shape == batch.mask.shape
        assert torch.all(outs[0][key][batch.mask == 0] == 0)  # padding left at zero
        for other in outs[1:]:
            assert torch.allclose(outs[0][key], other[key], atol=1e-5), key
    assert torch.allclose(outs[0]["kls"], torch.zeros_like(outs[0]["kls"]), atol=1e-6)


def test_length_grouped_minibatches_are_seeded_and_cover_every_row():
    lengths = [9, 3, 7, 3, 12, 5, 8, 3, 11, 6, 4, 10]
    first = minibatch_rows(np.random.default_rng(7), lengths, 4, by_length=True)
    again = minibatch_rows(np.random.default_rng(7), lengths, 4, by_length=True)
    assert [m.tolist() for m in first] == [m.tolist() for m in again]  # exact resume
    assert sorted(i for m in first for i in m) == list(range(len(lengths)))
    # grouped: sorted by their shortest row, each mini-batch's lengths follow the previous
    spans = sorted((min(lengths[i] for i in m), max(lengths[i] for i in m)) for m in first)
    assert spans == [(3, 3), (4, 6), (7, 9), (10, 12)]
    # the order of the mini-batches is drawn too
    orders = {tuple(int(m[0]) for m in minibatch_rows(np.random.default_rng(s), lengths, 4,
                                                       by_length=True)) for s in range(8)}
    assert len(orders) > 1


def test_plain_shuffle_when_grouping_is_off():
    lengths = [4, 2, 8, 6, 1, 3]
    got = minibatch_rows(np.random.default_rng(3), lengths, 3, by_length=False)
    want = np.array_split(np.random.default_rng(3).permutation(6), 3)
    assert [m.tolist() for m in got] == [m.tolist() for m in want]
    # fewer rows than mini-batches (dropped responses): empty ones, every row once
    parts = minibatch_rows(np.random.default_rng(0), [5, 6], 4, by_length=True)
    assert len(parts) == 4 and sorted(int(i) for m in parts for i in m) == [0, 1]
