"""Our plain attention: its arithmetic, its dropout, and what it hands to other kernels."""

from __future__ import annotations

import torch

from rlhfx.attention import LONGEST_KEYS, attention


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
    query, key, value = _qkv()
    for extra in ({"softcap": 50.0}, {"s_aux": torch.zeros(4)}):
        passed_on.clear()
        output, _ = attention(_Heads().train(), query, key, value, None, dropout=0.1, **extra)
        assert passed_on and passed_on[0]["dropout"] == 0.1 and extra.keys() <= passed_on[0].keys()
        assert torch.equal(output, value.transpose(1, 2))


def test_attention_leaves_sequences_past_its_limit_to_the_fused_kernel():
    """Ours keeps every probability for the backward; past LONGEST_KEYS the memory of that
    matters more than its speed, so torch's kernel (which returns no probabilities) computes."""
    torch.manual_seed(0)
    heads = _Heads().eval()
    heads.is_causal = False  # as an encoder's attention says (transformers reads it)
    for keys in (LONGEST_KEYS, LONGEST_KEYS + 1):
        query, key, value = (torch.randn(1, 2, keys, 8) for _ in range(3))
        output, probabilities = attention(heads, query, key, value, None)
        fused = torch.nn.functional.scaled_dot_product_attention(query, key, value)
        assert torch.allclose(output, fused.transpose(1, 2), atol=1e-5)
        assert (probabilities is None) == (keys > LONGEST_KEYS)
