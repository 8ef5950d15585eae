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
