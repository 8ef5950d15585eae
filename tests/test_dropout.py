"""BitsDropout: torch's dropout distribution from a cheaper draw, swapped into models."""

from __future__ import annotations

import pytest
import torch

from rlhfx.dropout import LEVELS, BitsDropout, dropout, use_bits_dropout


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_drops_a_p_share_and_scales_the_rest_so_the_mean_holds(p):
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = dropout(x, p)
    dropped = float((y == 0).float().mean())
    assert abs(dropped - p) < 4 * (p * (1 - p) / x.numel()) ** 0.5 + 1e-4
    drop = round(p * LEVELS)
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, LEVELS / (LEVELS - drop)))
    assert abs(float(y.mean()) - 1.0) < 0.01


def test_each_of_the_four_numbers_in_a_word_is_uniform():
    """A word's four 16-bit numbers must all be fair: torch's default int64 draw leaves the top
    bit 0, which would make every fourth element (nearly) never dropped at p = 0.5."""
    torch.manual_seed(0)
    y = dropout(torch.ones(4 * 100_000), 0.5).view(-1, 4)
    for position in range(4):
        assert abs(float((y[:, position] == 0).float().mean()) - 0.5) < 0.01, position


def test_same_seed_same_mask_other_seed_other_mask_and_the_gradient_follows_it():
    x = torch.randn(64, 32, requires_grad=True)
    torch.manual_seed(3)
    a = dropout(x, 0.2)
    torch.manual_seed(3)
    b = dropout(x, 0.2)
    torch.manual_seed(4)
    c = dropout(x, 0.2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert x.grad is not None
    scale = LEVELS / (LEVELS - round(0.2 * LEVELS))
    assert torch.allclose(x.grad, (a != 0).float() * scale)


def test_in_eval_mode_or_at_p_0_nothing_is_dropped():
    x = torch.randn(100)
    layer = BitsDropout(0.3)
    layer.eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(dropout(x, 0.0), x)
    assert float(dropout(x, 1.0).abs().sum()) == 0.0


def test_models_get_bits_dropout_in_place_lora_adapters_included():
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhfx.lora import LoraSettings

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    model = LoraSettings(r=4, alpha=8, dropout=0.1).wrap(LlamaForCausalLM(config))
    model.train()
    plain = [m for m in model.modules() if type(m) is torch.nn.Dropout]
    assert plain and all(m.p == 0.1 for m in plain)  # one per adapted layer
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert use_bits_dropout(model) is model
    swapped = [m for m in model.modules() if isinstance(m, BitsDropout)]
    assert len(swapped) == len(plain) and all(m.p == 0.1 and m.training for m in swapped)
    assert not [m for m in model.modules() if type(m) is torch.nn.Dropout]
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    ids = torch.randint(0, 64, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()  # trains through the new masks


class _Heads(torch.nn.Module):
    """Stands in for a model's attention module: `attention` reads `training` and, for the
    variants it passes on, this module's `eager_attention_forward`."""


passed_on: list[dict] = []


def eager_attention_forward(module, query, key, value, attention_mask, scaling=None,
                            dropout=0.0, **kwargs):
    passed_on.append({"dropout": dropout, **kwargs})
    return value.transpose(1, 2), None


def _qkv(heads=4, key_heads=4):
    torch.manual_seed(0)
    return (torch.randn(2, heads, 5, 8), torch.randn(2, key_heads, 5, 8),
            torch.randn(2, key_heads, 5, 8))


def test_attention_is_softmax_of_scaled_scores_times_values_with_an_additive_mask():
    from rlhfx.dropout import attention

    query, key, value = _qkv(heads=4, key_heads=2)  # grouped: each key head serves two
    mask = torch.zeros(2, 1, 5, 5)
    mask[1, :, :, :2] = torch.finfo(torch.float32).min  # the second row's first two masked
    output, probabilities = attention(_Heads().eval(), query, key, value, mask, dropout=0.5)
    key, value = key.repeat_interleave(2, dim=1), value.repeat_interleave(2, dim=1)
    expected = torch.softmax(query @ key.transpose(2, 3) / 8 ** 0.5 + mask, dim=-1)
    assert torch.allclose(probabilities, expected, atol=1e-6)  # eval: no dropout
    assert float(probabilities[1, :, :, :2].abs().max()) == 0.0
    assert torch.allclose(output, (expected @ value).transpose(1, 2), atol=1e-6)
    per_head, _ = attention(_Heads().eval(), *_qkv(heads=4, key_heads=2), mask.expand(2, 4, 5, 5))
    assert torch.allclose(per_head, output, atol=1e-6)  # a mask for each head: the same here


def test_attention_drops_probabilities_in_training_in_the_values_dtype():
    from rlhfx.dropout import attention

    query, key, value = (t.repeat(40, 1, 1, 1) for t in _qkv())
    torch.manual_seed(1)
    _, dropped = attention(_Heads().train(), query, key, value, None, dropout=0.25)
    _, whole = attention(_Heads().eval(), query, key, value, None, dropout=0.25)
    assert abs(float((dropped == 0).float().mean()) - 0.25) < 0.02
    kept = dropped != 0
    assert torch.allclose(dropped[kept], whole[kept] / 0.75, rtol=1e-5)
    _, bf16 = attention(_Heads().train(), query, key, value.bfloat16(), None, dropout=0.25)
    assert bf16.dtype == torch.bfloat16  # what bf16 autocast's product would have cast it to


def test_attention_passes_soft_capped_scores_and_sinks_to_the_models_own_eager_attention():
    from rlhfx.dropout import attention

    query, key, value = _qkv()
    for extra in ({"softcap": 50.0}, {"s_aux": torch.zeros(4)}):
        passed_on.clear()
        output, _ = attention(_Heads().train(), query, key, value, None, dropout=0.1, **extra)
        assert passed_on and passed_on[0]["dropout"] == 0.1 and extra.keys() <= passed_on[0].keys()
        assert torch.equal(output, value.transpose(1, 2))


def test_attention_leaves_sequences_past_its_limit_to_the_fused_kernel():
    """Ours keeps every probability for the backward; past LONGEST_KEYS the memory of that
    matters more than its speed, so torch's kernel (which returns no probabilities) computes."""
    from rlhfx.dropout import LONGEST_KEYS, attention

    torch.manual_seed(0)
    heads = _Heads().eval()
    heads.is_causal = False  # as an encoder's attention says (transformers reads it)
    for keys in (LONGEST_KEYS, LONGEST_KEYS + 1):
        query, key, value = (torch.randn(1, 2, keys, 8) for _ in range(3))
        output, probabilities = attention(heads, query, key, value, None)
        fused = torch.nn.functional.scaled_dot_product_attention(query, key, value)
        assert torch.allclose(output, fused.transpose(1, 2), atol=1e-5)
        assert (probabilities is None) == (keys > LONGEST_KEYS)
