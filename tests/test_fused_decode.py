"""The fused decode step of Llama-family models (rlhfx.fused_decode) against the model's own
forward inside the sampling loop: the same logits bit for bit with torch's attention, up to
rounding with rlhfx's decode kernels, LoRA merged, fallbacks."""

from __future__ import annotations

import pytest

from rlhfx.fused_decode import FusedDecoder, fused_decoder
from rlhfx.rollouts import bf16_weights, encode_prompts
from rlhfx.sampling import Decoding, sample_responses

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

PROMPTS = [
    "###Human: Hi ###Assistant:",
    "###Human: How do I bake bread at home without a big oven? ###Assistant:",
    "###Human: Why? ###Assistant:",
]


@pytest.fixture(scope="module")
def tok():
    from rlhfx.models import load_tokenizer

    return load_tokenizer("builtin:tiny-gpt-neo")


@pytest.fixture
def torch_ops(monkeypatch):
    """The fused step with torch's operations, as on CPUs where rlhfx's kernels do not run."""
    monkeypatch.setattr("rlhfx.fused_decode.decode_kernels", lambda: None)


def decoder_model(kind: str, vocab: int, **options):
    """A small Llama or Qwen2 with weights large enough for sharp distributions; hidden 256
    so that the bigger products go through oneDNN's packed weights and the small ones not."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_class, model_class = ((LlamaConfig, LlamaForCausalLM) if kind == "llama"
                                 else (Qwen2Config, Qwen2ForCausalLM))
    torch.manual_seed(0)
    model = model_class(config_class(
        vocab_size=vocab, hidden_size=256, intermediate_size=384, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        **options))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4)
    return model.eval()


def run(model, tok, fused: bool, k: int = 2, **settings):
    """Each step's logits and the tokens sampled, decoding with bf16 weights."""
    seen = []

    def watch(_, logits):
        seen.append(logits.clone())
        return logits

    decoding = Decoding(max_new_tokens=settings.pop("max_new_tokens", 12), watch=watch,
                        fused_step=fused, generate_noise=False, **settings)
    torch.manual_seed(0)
    with torch.no_grad(), bf16_weights(model):
        out = sample_responses(model, tok, encode_prompts(tok, PROMPTS), k, decoding)
    return seen, out, decoding.stats


@pytest.mark.parametrize("kind, options", [
    ("llama", {}), ("llama", {"attention_bias": True}), ("qwen2", {}),
])
def test_each_steps_logits_are_the_forwards_bit_for_bit(tok, torch_ops, kind, options):
    model = decoder_model(kind, len(tok), **options)
    fused_logits, fused_out, stats = run(model, tok, fused=True)
    forward_logits, forward_out, _ = run(model, tok, fused=False)
    assert stats["fused_step"] and not stats["decode_kernels"]
    assert len(fused_logits) == len(forward_logits) == 12
    assert all(torch.equal(a, b) for a, b in zip(fused_logits, forward_logits, strict=True))
    assert fused_out == forward_out


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_with_rlhfxs_kernels_the_logits_are_the_forwards_up_to_rounding(tok, kind):
    from rlhfx.decode_kernels import kernels

    if kernels() is None:
        pytest.skip("the decode kernels do not run here")
    model = decoder_model(kind, len(tok))
    fused, _, stats = run(model, tok, fused=True, do_sample=False)
    forward, _, _ = run(model, tok, fused=False, do_sample=False)
    assert stats["fused_step"] and stats["decode_kernels"]
    assert torch.equal(fused[0], forward[0])  # the pre-fill: the model's forward in both
    # the first decode step, from the same tokens: bf16 rounding of logits spread over ~30
    spread = (forward[1].amax(-1) - forward[1].amin(-1)).min().item()
    assert (fused[1] - forward[1]).abs().max().item() < 0.02 * spread


def test_rows_that_end_leave_the_batch_as_with_the_forward(tok, torch_ops):
    """Rows ending at different steps are dropped from the fused step's batch and cache."""
    model = decoder_model("llama", len(tok))
    ends = list(range(0, len(tok), 9))
    fused = run(model, tok, fused=True, k=4, max_new_tokens=24, eos_ids=ends)[1]
    forward = run(model, tok, fused=False, k=4, max_new_tokens=24, eos_ids=ends)[1]
    assert fused == forward
    lengths = {len(answer) for answer in fused}
    assert len(lengths) > 2 and max(lengths) > min(lengths) + 4


def lora(model, **options):
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj"],
                             init_lora_weights=False, **options)
    torch.manual_seed(1)
    return peft.get_peft_model(model, config).eval()


def test_lora_adapters_are_merged_into_the_fused_weights(tok, torch_ops):
    model = lora(decoder_model("llama", len(tok)))
    fused, _, stats = run(model, tok, fused=True, do_sample=False)
    forward, _, _ = run(model, tok, fused=False, do_sample=False)
    with model.disable_adapter():
        base, _, _ = run(model, tok, fused=False, do_sample=False)
    assert stats["fused_step"]
    # the adapter moves the pre-fill's logits (the model's forward in both runs); the first
    # decode step's, from the same tokens, differ only by the merge's rounding
    adapter_effect = (forward[0] - base[0]).abs().max().item()
    merging_error = (fused[1] - forward[1]).abs().max().item()
    assert torch.equal(fused[0], forward[0])
    assert merging_error < 0.15 * adapter_effect  # unmerged: 1.4 times the effect
    with model.disable_adapter():  # adapters off: the base weights alone, bit for bit
        off, _, _ = run(model, tok, fused=True, do_sample=False)
    assert all(torch.equal(a, b) for a, b in zip(off, base, strict=True))


def test_what_it_cannot_write_out_decodes_through_the_forward(tok):
    from rlhfx.models import load_causal_lm

    def fused_for(model):
        with torch.no_grad(), bf16_weights(model):
            return fused_decoder(model, 4)

    llama = decoder_model("llama", len(tok))
    assert isinstance(fused_for(llama), FusedDecoder)
    assert fused_decoder(llama, 4) is None  # float32 weights: generate's exact samples
    assert fused_for(decoder_model("llama", len(tok), mlp_bias=True)) is None
    assert fused_for(load_causal_lm("builtin:tiny-gpt-neo")) is None
    assert fused_for(lora(decoder_model("llama", len(tok)), use_dora=True)) is None
    merged = lora(decoder_model("llama", len(tok)))
    merged.merge_adapter()
    assert fused_for(merged) is None
    # and the loop then samples through the forward
    _, _, stats = run(decoder_model("llama", len(tok), mlp_bias=True), tok, fused=True)
    assert not stats["fused_step"] and stats["steps"] == 12
