"""bf16 linear layers computing from oneDNN-packed weights while sampling: the same numbers
as `F.linear`, the layers put back after, gradients and float32 weights left alone."""

from __future__ import annotations

import copy

import pytest

from rlhfx import packed_linear
from rlhfx.packed_linear import packed_linears

torch = pytest.importorskip("torch")

needs_packing = pytest.mark.skipif(not packed_linear.packing_works(),
                                   reason="this torch or CPU has no packed bf16 products")


def bf16_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(256, 384), torch.nn.GELU(), torch.nn.Linear(384, 256, bias=False),
        torch.nn.Linear(256, 8),  # too small to pack
    ).to(torch.bfloat16)


@needs_packing
def test_packed_layers_give_the_same_numbers_and_are_put_back():
    model = bf16_model()
    x = torch.randn(48, 1, 256).to(torch.bfloat16)
    strided = torch.randn(48, 2, 256).to(torch.bfloat16)[:, 1:]  # a view, not contiguous
    with torch.no_grad():
        # F.linear itself adds a bias to a strided input apart (other rounding): the packed
        # product gives what it gives for the same rows laid out contiguously
        expected = [model(x), model(strided.contiguous())]
        with packed_linears(model, rows=48) as count:
            assert count == 2
            assert [type(m).__name__ for m in model][:3] == ["PackedLinear", "GELU",
                                                             "PackedLinear"]
            got = [model(x), model(strided)]
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a, b)
    assert all(type(m) in (torch.nn.Linear, torch.nn.GELU) for m in model)
    assert not any(hasattr(m, "packed_weight") for m in model)


@needs_packing
def test_gradients_take_the_plain_product_and_float32_is_never_packed():
    model = bf16_model()
    x = torch.randn(4, 256).to(torch.bfloat16)
    with packed_linears(model, rows=4):
        model(x).float().sum().backward()  # grad enabled: the plain product
    assert model[0].weight.grad is not None
    wide = copy.deepcopy(model).float()
    with packed_linears(wide, rows=4) as count:
        assert count == 0


@needs_packing
def test_a_failure_while_packing_puts_back_what_was_packed(monkeypatch):
    model = bf16_model()
    real = torch.ops.mkldnn._reorder_linear_weight
    calls = []

    def second_fails(weight, rows):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("no memory for the packed weight")
        return real(weight, rows)

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", second_fails)
    with pytest.raises(RuntimeError, match="no memory"), packed_linears(model, rows=4):
        pass
    assert all(type(m) in (torch.nn.Linear, torch.nn.GELU) for m in model)


def test_sampling_in_bf16_packs_and_draws_what_unpacked_layers_draw(monkeypatch):
    from rlhfx.sampling import Decoding, sample_responses
    from rlhfx.tiny import tiny_causal_lm, tiny_tokenizer

    if not packed_linear.packing_works():
        pytest.skip("this torch or CPU has no packed bf16 products")
    model = tiny_causal_lm("builtin:tiny-gpt-neo").to(torch.bfloat16).eval()
    tok = tiny_tokenizer("builtin:tiny-gpt-neo")
    prompts = [tok.encode("the cat sat"), tok.encode("a dog")]
    runs = []
    for smallest in (1 << 30, 1):  # nothing packed, then every linear layer
        monkeypatch.setattr(packed_linear, "_MIN_ELEMENTS", smallest)
        decoding = Decoding(max_new_tokens=10, generate_noise=False)
        torch.manual_seed(5)
        with torch.no_grad():
            runs.append(sample_responses(model, tok, prompts, 3, decoding))
        runs.append(decoding.stats["packed_layers"])
    assert runs[1] == 0 and runs[3] > 0
    assert runs[0] == runs[2]
