"""GPT-Neo's attention through torch's fused kernel: the same logits and gradients as
transformers' Python attention (causal and local-window layers, left padding), the same
greedy answers, and transformers' own path where weights are asked for or dropout draws."""

from __future__ import annotations

import copy

import pytest

from rlhfx.gpt_neo_attention import use_fused_attention
from rlhfx.models import load_causal_lm, load_sequence_classifier
from rlhfx.tiny import tiny_causal_lm

torch = pytest.importorskip("torch")


def windowed_pair():
    """A tiny GPT-Neo whose local layers see 5 tokens back (shorter than the inputs), as
    transformers computes it and with the fused kernel."""
    from transformers import GPTNeoForCausalLM

    config = tiny_causal_lm("builtin:tiny-gpt-neo").config
    config.window_size = 5
    torch.manual_seed(0)
    plain = GPTNeoForCausalLM(config).eval()
    return plain, use_fused_attention(copy.deepcopy(plain))


def fused_layers(model) -> int:
    return sum(type(m).__name__ == "FusedGPTNeoSelfAttention" for m in model.modules())


def padded_batch(vocab: int):
    ids = torch.randint(0, vocab, (3, 14), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding
    mask[2, :9] = 0
    return ids, mask


def test_logits_and_gradients_match_transformers_attention():
    plain, fused = windowed_pair()
    assert fused_layers(fused) == plain.config.num_layers and fused_layers(plain) == 0
    assert {m.attention_type for m in fused.modules() if hasattr(m, "attention_type")} == {
        "global", "local"}
    ids, mask = padded_batch(plain.config.vocab_size)
    outs = []
    for model in (plain, fused):
        model.zero_grad()
        logits = model(ids, attention_mask=mask).logits
        (logits * mask[..., None]).square().mean().backward()
        outs.append((logits, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (a, grads_a), (b, grads_b) = outs
    real = mask.bool()
    assert torch.allclose(a[real], b[real], atol=1e-5)
    for name, grad in grads_a.items():
        assert torch.allclose(grad, grads_b[name], atol=1e-5, rtol=1e-4), name
    # the window matters here: a global-only model computes other logits
    wide = copy.deepcopy(plain)
    for m in wide.modules():
        if hasattr(m, "bias") and getattr(m, "attention_type", None) == "local":
            m.bias = torch.tril(torch.ones_like(m.bias))
    with torch.no_grad():
        assert not torch.allclose(wide(ids, attention_mask=mask).logits[real], a[real],
                                  atol=1e-3)


@pytest.mark.parametrize(("padded", "bf16"), [(True, False), (False, False), (True, True)])
def test_decode_steps_from_the_cache_match_transformers_logits(padded, bf16):
    plain, fused = windowed_pair()
    if bf16:  # a bf16 cache, as the bf16 sampler holds it
        plain, fused = plain.to(torch.bfloat16), fused.to(torch.bfloat16)
    ids, mask = padded_batch(plain.config.vocab_size)
    if not padded:
        mask = torch.ones_like(mask)
    steps = torch.randint(0, plain.config.vocab_size, (3, 8),
                          generator=torch.Generator().manual_seed(2))
    logits = []
    with torch.no_grad():
        for model in (plain, fused):
            out = model(ids, attention_mask=mask, use_cache=True)
            cache, seen, per_step = out.past_key_values, mask, []
            for n in range(steps.shape[1]):  # one query a row, past the 5-token window
                seen = torch.cat([seen, torch.ones_like(seen[:, :1])], dim=1)
                out = model(steps[:, n : n + 1], attention_mask=seen if padded else None,
                            past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                per_step.append(out.logits[:, -1])
            logits.append(torch.stack(per_step).float())
    assert logits[1].dtype == torch.float32
    assert torch.allclose(logits[0], logits[1], atol=0.05 if bf16 else 1e-5)


def test_greedy_answers_and_bf16_weights_match():
    plain, fused = windowed_pair()
    ids, mask = padded_batch(plain.config.vocab_size)
    settings = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        assert torch.equal(plain.generate(ids, attention_mask=mask, **settings),
                           fused.generate(ids, attention_mask=mask, **settings))
        plain16, fused16 = plain.to(torch.bfloat16), fused.to(torch.bfloat16)
        a = plain16(ids, attention_mask=mask).logits
        b = fused16(ids, attention_mask=mask).logits
    assert b.dtype == torch.bfloat16
    assert torch.allclose(a[mask.bool()].float(), b[mask.bool()].float(), atol=0.05)


def test_under_bf16_autocast_the_kernel_computes_in_float32():
    plain, fused = windowed_pair()
    ids, mask = padded_batch(plain.config.vocab_size)
    outs = []
    for model in (plain, fused):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(ids, attention_mask=mask).logits
        logits.float().square().mean().backward()
        outs.append((logits, model.transformer.h[0].attn.attention.q_proj.weight.grad))
    (a, grad_a), (b, grad_b) = outs
    real = mask.bool()
    assert torch.allclose(a[real].float(), b[real].float(), atol=0.05)
    assert torch.allclose(grad_a, grad_b, atol=1e-3, rtol=0.05)


def test_weights_asked_for_and_dropout_take_transformers_path():
    plain, fused = windowed_pair()
    ids, mask = padded_batch(plain.config.vocab_size)
    with torch.no_grad():
        weights = fused(ids, attention_mask=mask, output_attentions=True).attentions
    assert len(weights) == plain.config.num_layers and weights[0].shape[-1] == ids.shape[1]
    for model in (plain, fused):  # dropout on the probabilities: the same draws as transformers
        for m in model.modules():
            if hasattr(m, "attn_dropout"):
                m.attn_dropout.p = 0.5
        model.train()
    results = []
    for model in (plain, fused):
        torch.manual_seed(3)
        results.append(model(ids, attention_mask=mask).logits)
    assert torch.equal(results[0], results[1])


def test_loaders_swap_gpt_neo_attention_only():
    assert fused_layers(load_causal_lm("builtin:tiny-gpt-neo")) == 2
    assert fused_layers(load_sequence_classifier("builtin:tiny-gpt-neo", num_labels=1)) == 2
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2))
    before = [type(m) for m in llama.modules()]
    assert [type(m) for m in use_fused_attention(llama).modules()] == before
