"""Loaded GPT-2-style models compute their tanh-GELU with torch's fused kernel: the same
function (up to rounding), and nothing saved changes."""

from __future__ import annotations

import pytest

from rlhfx.models import fused_gelu, load_causal_lm, load_sequence_classifier
from rlhfx.tiny import tiny_causal_lm

torch = pytest.importorskip("torch")


def python_gelus(model) -> int:
    from transformers.activations import NewGELUActivation

    return sum(type(m) is NewGELUActivation for m in model.modules())


def test_loaded_models_use_the_fused_gelu_and_compute_the_same_logits():
    plain = tiny_causal_lm("builtin:tiny-gpt-neo").eval()
    assert python_gelus(plain) == plain.config.num_layers  # what the swap replaces
    loaded = load_causal_lm("builtin:tiny-gpt-neo").eval()
    assert python_gelus(loaded) == 0
    assert python_gelus(load_sequence_classifier("builtin:tiny-gpt-neo", num_labels=1)) == 0
    ids = torch.randint(0, plain.config.vocab_size, (3, 40), generator=torch.Generator()
                        .manual_seed(0))
    with torch.no_grad():
        a, b = plain(ids).logits, loaded(ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.equal(torch.zeros_like(a), a)


def test_the_swap_keeps_gradients_and_the_saved_config(tmp_path):
    model = fused_gelu(tiny_causal_lm("builtin:tiny-gpt-neo"))
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    model(ids, labels=ids).loss.backward()
    assert model.transformer.h[0].mlp.c_fc.weight.grad.abs().sum() > 0
    model.save_pretrained(tmp_path)
    again = load_causal_lm(str(tmp_path))
    assert again.config.activation_function == "gelu_new"
    assert python_gelus(again) == 0
