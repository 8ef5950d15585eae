"""What the machine computes fast: "auto" dtypes, and our attention for training on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlhfx import hardware


def _llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         attn_implementation="sdpa")
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def _attention(model: torch.nn.Module) -> str:
    network = model.get_base_model() if hasattr(model, "get_base_model") else model
    return network.config._attn_implementation


@pytest.mark.parametrize("native", [True, False])
def test_auto_resolves_by_the_hardware_and_explicit_settings_stand(monkeypatch, native):
    monkeypatch.setattr(hardware, "has_native_bf16", lambda device: native)
    assert hardware.resolve_dtype("auto", "cpu") == ("bfloat16" if native else "float32")
    assert hardware.resolve_dtype("float32", "cpu") == "float32"
    assert hardware.resolve_dtype("bfloat16", "cpu") == "bfloat16"


def test_native_bf16_asks_the_cpu_or_the_gpu_that_is_named(monkeypatch):
    """One answer for every "auto" (hf and vLLM engines, Trainer stages, algorithms): a CPU by
    its oneDNN flags, a GPU by torch's bf16 support (a GPU without it gets float32)."""
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert hardware.has_native_bf16("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for supported in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        assert hardware.has_native_bf16("cuda:1") is supported
        assert hardware.resolve_dtype("auto", "cuda") == ("bfloat16" if supported else "float32")
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert not hardware.has_native_bf16("cpu")
    assert hardware.resolve_dtype("auto", "cpu") == "float32"


def _bert(attention_dropout: float) -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_labels=1, attn_implementation="sdpa",
                        attention_probs_dropout_prob=attention_dropout)
    torch.manual_seed(0)
    return BertForSequenceClassification(config).eval()


def test_training_attention_is_ours_inside_and_the_models_own_after_even_on_error():
    from rlhfx.attention import ATTENTION
    from rlhfx.lora import LoraSettings

    for model in (_llama(), LoraSettings(r=4, alpha=8).wrap(_llama())):
        assert _attention(model) == "sdpa"
        with hardware.cpu_training_attention(model, on_cpu=True, bf16=True):
            assert _attention(model) == ATTENTION
        assert _attention(model) == "sdpa"
        with pytest.raises(RuntimeError), hardware.cpu_training_attention(model, True, True):
            raise RuntimeError("boom")
        assert _attention(model) == "sdpa"
    with hardware.cpu_training_attention(torch.nn.Linear(2, 2), True, True):  # no choice: alone
        pass


@pytest.mark.parametrize("on_cpu", [True, False])
@pytest.mark.parametrize("bf16", [True, False])
@pytest.mark.parametrize("attention_dropout", [0.0, 0.1])
def test_ours_on_a_cpu_in_bf16_or_with_attention_dropout_else_the_models_own(on_cpu, bf16,
                                                                           attention_dropout):
    from rlhfx.attention import ATTENTION

    model = _bert(attention_dropout)
    with hardware.cpu_training_attention(model, on_cpu, bf16):
        ours = _attention(model) == ATTENTION
    assert ours == (on_cpu and (bf16 or attention_dropout > 0))


@pytest.mark.parametrize(("build", "length"), [(_llama, 9), (lambda: _bert(0.1), 9),
                                               (_llama, 600)])
def test_our_attention_and_the_fused_kernel_compute_the_same(build, length):
    """Llama: grouped-query heads, a causal mask, left padding as sampling has it; BERT: a
    bidirectional mask with right padding (in eval mode: no dropout); 600 tokens: past
    LONGEST_KEYS, where ours hands the fused kernel its own (additive) mask."""
    model = build()
    ids = torch.randint(0, 64, (2, length))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    with torch.no_grad():
        fused = model(input_ids=ids, attention_mask=mask).logits
        with hardware.cpu_training_attention(model, on_cpu=True, bf16=True):
            ours = model(input_ids=ids, attention_mask=mask).logits
    if fused.dim() == 3:
        fused, ours = fused[mask.bool()], ours[mask.bool()]
    assert torch.allclose(fused, ours, atol=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_the_loop_tells_the_attention_choice_it_trains_in_bf16_on_the_cpu(tmp_path,
                                                                          monkeypatch, dtype):
    import contextlib

    from test_raft_run import run_in_process, write_recipe

    asked: list[bool] = []

    @contextlib.contextmanager
    def spy(model, on_cpu, bf16):
        asked.append(on_cpu and bf16)
        yield

    monkeypatch.setattr(hardware, "cpu_training_attention", spy)
    recipe = write_recipe(Path(tmp_path) / "r.toml", iterations=1, dtype=dtype)
    run_in_process(recipe, tmp_path / "run")
    assert asked == [dtype == "bfloat16"]


def test_a_wrong_dtype_or_precision_is_a_one_line_error_naming_recipe_and_key(rlhfx_cli):
    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml")
    for key, value, allowed in [
        ("stages.align.algorithm.dtype", "bf16", "'float32', 'bfloat16', 'float16' or 'auto'"),
        ("stages.reward_model.precision", "bf17", "'auto', 'no', 'bf16' or 'fp16'"),
    ]:
        result = rlhfx_cli("validate", recipe, "--set", f'{key}="{value}"')
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1 and "Traceback" not in result.output
        assert errors[0] == (f"error: {recipe}: {key}: Input should be {allowed} "
                             f"(got '{value}')")
