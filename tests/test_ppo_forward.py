"""PPO's forward passes through the shared engine give what full forward passes give: log-probs
and values at response positions only (another architecture, LoRA, a soft-capped head), and
the experience's rollout pass in chunks of any size."""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch

from rlhfx.alignment.engine import PolicyGradientAlgorithm, UpdateSettings
from rlhfx.alignment.policy_update import TokenBatch, response_forward
from rlhfx.alignment.reference import ReferenceModel
from rlhfx.components import Sample
from rlhfx.plugins.ppo.value_head import PolicyWithValueHead

QUERIES = [[5, 6, 7], [1, 2], [3, 4, 5, 6, 7, 8], [9]]
RESPONSES = [[11, 12, 13, 14], [15], [16, 17], [18, 19, 20, 21, 22]]


def tokens() -> TokenBatch:
    samples = [Sample(i, "", "", prompt_ids=q, response_ids=r)
               for i, (q, r) in enumerate(zip(QUERIES, RESPONSES, strict=True))]
    return TokenBatch.from_samples(samples, pad_id=0, device="cpu")


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


def full_forward(model, batch: TokenBatch):
    """Log-probs and values from every position's logits and hidden state, row by row."""
    from rlhfx.alignment.reference import position_ids_for

    out = model.policy(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=position_ids_for(batch.attention_mask),
                       output_hidden_states=True, use_cache=False)
    every = torch.log_softmax(out.logits.float(), -1)
    values = model.v_head(out.hidden_states[-1])
    p, span = batch.prompt_width, batch.response_width
    logp = every[:, p - 1 : p - 1 + span].gather(-1, batch.labels.unsqueeze(-1)).squeeze(-1)
    return logp * batch.mask, values[:, p - 1 : p - 1 + span] * batch.mask


@pytest.mark.parametrize("make", [tiny_gpt_neo, tiny_llama, lambda: with_lora(tiny_gpt_neo())],
                         ids=["gpt-neo", "llama", "gpt-neo+lora"])
def test_response_positions_only_match_the_full_forward(make):
    model = PolicyWithValueHead(make(), value_dropout=0.0).eval()
    batch = tokens()
    with torch.no_grad():
        got = response_forward(model.policy, batch, critic=model.v_head)
        logp, values = full_forward(model, batch)
    assert got.values is not None and got.values.dtype == torch.float32
    assert torch.allclose(got.logp, logp, atol=1e-5)
    assert torch.allclose(got.values, values, atol=1e-5)


def test_a_soft_capped_head_is_left_to_the_model():
    """Gemma 2 style soft-capping after the head: the model trims its own logits, so the cap
    applies as in a full forward."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=64,
                          num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                          head_dim=16, max_position_embeddings=64,
                          final_logit_softcapping=0.5)
    model = PolicyWithValueHead(Gemma2ForCausalLM(config).eval(), value_dropout=0.0).eval()
    batch = tokens()
    with torch.no_grad():
        got = response_forward(model.policy, batch, critic=model.v_head)
        logp, _ = full_forward(model, batch)
    assert torch.allclose(got.logp, logp, atol=1e-5)


def test_rollout_pass_is_the_same_in_chunks_of_any_size():
    model = PolicyWithValueHead(tiny_gpt_neo(), value_dropout=0.0).eval()
    batch = tokens()
    outs = []
    for rows in (1, 3, 64):
        engine = SimpleNamespace(
            policy=model.policy, critic=model.v_head, reference=ReferenceModel(model.policy),
            run=SimpleNamespace(autocast=nullcontext), needs_rollout_logp=lambda: True,
            carries_forward=lambda rows, chunk: False)  # a critic: never carried
        settings = UpdateSettings(epochs=1, minibatches=1, clip_low=0.2, clip_high=0.2,
                                  forward_rows=rows)
        with torch.no_grad():
            outs.append(PolicyGradientAlgorithm._rollout_pass(engine, batch, settings, False))  # type: ignore[arg-type]
    for key in ("logp", "values", "ref"):
        assert outs[0][key].shape == batch.mask.shape
        assert torch.all(outs[0][key][batch.mask == 0] == 0)  # padding left at zero
        for other in outs[1:]:
            assert torch.allclose(outs[0][key], other[key], atol=1e-5), key
    # the policy is the reference: their log-probs agree
    assert torch.allclose(outs[0]["logp"], outs[0]["ref"], atol=1e-6)
