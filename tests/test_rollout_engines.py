"""Rollout engines: prefill-once sampling in `generate`, the engine choice, LoRA merging."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from rlhfx.plugins.rollout_engines.hf import HFEngine
from rlhfx.rollouts import (
    RolloutSettings,
    SamplingSettings,
    check_engine,
    generate,
    make_engine,
)

torch = pytest.importorskip("torch")

PROMPTS = [
    "###Human: Hi ###Assistant:",
    "###Human: How do I bake bread at home without a big oven? ###Assistant:",
    "###Human: Why? ###Assistant:",
]


@pytest.fixture(scope="module")
def policy():
    from rlhfx.models import load_causal_lm, load_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_causal_lm("builtin:tiny-gpt-neo"), load_tokenizer("builtin:tiny-gpt-neo")
    torch.set_num_threads(threads)


def tiny_llama(vocab_size: int):
    """A LLaMA (RoPE positions, the quickstart model's architecture) in miniature."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )).eval()


@pytest.mark.parametrize("arch", ["gpt-neo", "llama", "llama-lora"])
def test_prefill_once_gives_the_old_paths_greedy_tokens(policy, arch):
    model, tok = policy
    if arch.startswith("llama"):
        model = tiny_llama(len(tok))
    if arch.endswith("lora"):  # a peft model passes the cache on to the model it wraps
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    greedy = SamplingSettings(max_new_tokens=8, do_sample=False)
    once = generate(model, tok, PROMPTS, greedy, num_samples=3, batch_size=9, decoder="generate")
    # transformers refuses greedy num_return_sequences > 1: the old path's answer, once each
    old = generate(model, tok, PROMPTS, greedy, batch_size=3, prefill_once=False,
                   decoder="generate")
    loop = generate(model, tok, PROMPTS, greedy, num_samples=3, batch_size=9)  # rlhfx.sampling
    assert [r.response_ids for r in loop] == [r.response_ids for r in once]
    assert [r.prompt_id for r in once] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [r.response_ids for r in once] == [r.response_ids for r in old for _ in range(3)]
    assert [r.prompt_ids for r in once] == [r.prompt_ids for r in old for _ in range(3)]
    assert len({tuple(r.response_ids) for r in old}) == 3  # the prompts' answers differ


def test_prefill_once_samples_like_the_old_path(policy):
    """Same seed, same rows in the same order: the samples match the old path's; over many
    draws the first tokens are distributed alike."""
    model, tok = policy
    sampling = SamplingSettings(max_new_tokens=6)
    torch.manual_seed(7)
    once = generate(model, tok, PROMPTS, sampling, num_samples=4, batch_size=12,
                    decoder="generate")
    torch.manual_seed(7)
    old = generate(model, tok, PROMPTS, sampling, num_samples=4, batch_size=12,
                   prefill_once=False, decoder="generate")
    same = sum(a.response_ids == b.response_ids for a, b in zip(once, old, strict=True))
    assert same >= 10  # of 12: float noise may flip a rare borderline draw
    assert len({tuple(r.response_ids) for r in once}) > 3  # k copies really are sampled apart
    firsts: dict[bool, Counter] = {}
    for flag in (True, False):
        torch.manual_seed(11 if flag else 12)  # different seeds: compare distributions
        rows = generate(model, tok, PROMPTS[:1], SamplingSettings(max_new_tokens=1),
                        num_samples=400, batch_size=400, prefill_once=flag,
                        decoder="generate")
        firsts[flag] = Counter(r.response_ids[0] for r in rows)
    top = [t for t, _ in firsts[False].most_common(5)]
    for t in top:  # the commonest first tokens have matching frequencies (binomial noise)
        assert abs(firsts[True][t] - firsts[False][t]) <= 4 * (firsts[False][t] ** 0.5) + 4


def test_prefill_once_keeps_stop_strings_and_lengths(policy):
    model, tok = policy
    torch.manual_seed(1)
    out = generate(model, tok, PROMPTS, SamplingSettings(length_range=(3, 5)), num_samples=4,
                   stop_strings=["e"], batch_size=4)
    for r in out:
        assert 1 <= len(r.response_ids) <= 5
        ids = [t for t in r.response_ids if t != tok.eos_token_id]
        if "e" in r.text:
            assert "e" not in tok.decode(ids[:-1])
        assert r.text == tok.decode(r.response_ids, skip_special_tokens=True)


def test_hf_engine_is_generate_on_the_policy(policy, tmp_path):
    model, tok = policy
    engine = make_engine(RolloutSettings(), model, tok, batch_size=8, device="cpu",
                         work_dir=tmp_path)
    assert isinstance(engine, HFEngine)
    greedy = SamplingSettings(max_new_tokens=5, do_sample=False)
    got = engine.generate(PROMPTS, greedy, num_samples=2)
    want = generate(model, tok, PROMPTS, greedy, num_samples=2)
    assert [r.response_ids for r in got] == [r.response_ids for r in want]
    engine.sync_weights(model)
    engine.close()
    assert list(tmp_path.iterdir()) == []  # the hf engine writes nothing


def test_hf_engine_dtype_auto_follows_the_hardware(policy, tmp_path, monkeypatch):
    """float32 by default on any hardware; "auto": bf16 where the device multiplies it
    natively, else float32; an explicit dtype is kept whatever the hardware."""
    from rlhfx import hardware

    model, tok = policy
    for native, setting, want in [(True, None, "float32"), (True, "auto", "bfloat16"),
                                  (False, "auto", "float32"), (True, "float32", "float32"),
                                  (False, "bfloat16", "bfloat16")]:
        seen: list[str] = []

        def answer(device: str, native: bool = native, seen: list[str] = seen) -> bool:
            seen.append(device)
            return native

        monkeypatch.setattr(hardware, "has_native_bf16", answer)
        table = {"engine": "hf"} if setting is None else {"engine": "hf", "dtype": setting}
        engine = make_engine(RolloutSettings.model_validate(table), model, tok, batch_size=8,
                             device="cpu", work_dir=tmp_path)
        assert engine.dtype == want, (native, setting)
        assert seen == (["cpu"] if setting == "auto" else [])


def test_bf16_sampling_computes_in_bf16_and_repeats_for_a_seed(policy):
    """dtype = "bfloat16": the forward passes run in bf16 (the linear layers' outputs), the
    draw is the one-uniform one (generate's samples cannot be had anyway), the same seed
    gives the same samples, and the answers are the policy's (close to float32's)."""
    import rlhfx.sampling

    model, tok = policy
    dtypes: set = set()
    hook = model.lm_head.register_forward_hook(lambda m, i, o: dtypes.add(o.dtype))
    draws: list[bool] = []
    real = rlhfx.sampling.sample_responses

    def spy(*args, **kwargs):
        draws.append(args[4].generate_noise)
        return real(*args, **kwargs)

    sampling = SamplingSettings(max_new_tokens=6)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(rlhfx.sampling, "sample_responses", spy)
            runs = []
            for _ in range(2):
                torch.manual_seed(3)
                runs.append(generate(model, tok, PROMPTS, sampling, num_samples=4,
                                     batch_size=12, dtype="bfloat16"))
            assert dtypes == {torch.bfloat16} and draws == [False, False]
            dtypes.clear()
            torch.manual_seed(3)
            generate(model, tok, PROMPTS, sampling, num_samples=4, batch_size=12)
            assert dtypes == {torch.float32} and draws[-1] is True
    finally:
        hook.remove()
    assert [r.response_ids for r in runs[0]] == [r.response_ids for r in runs[1]]
    assert len({tuple(r.response_ids) for r in runs[0]}) > 3
    greedy = SamplingSettings(max_new_tokens=5, do_sample=False)
    half = generate(model, tok, PROMPTS, greedy, batch_size=1, dtype="bfloat16")  # 3 calls
    full = generate(model, tok, PROMPTS, greedy, batch_size=3)
    # bf16 rounding may flip a near-tie late in an answer, not the answers' starts
    assert [r.response_ids[:2] for r in half] == [r.response_ids[:2] for r in full]


def test_bf16_sampling_leaves_a_lora_policys_weights_as_they_were(policy):
    """The weights are bf16 copies during the call only: afterwards every weight, LoRA's
    trainable ones and the frozen base, is the same float32 tensor with the same values, also
    when the sampling fails half-way."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(len(policy[1])), LoraConfig(r=2, target_modules="all-linear"))
    tok = policy[1]
    before = {n: (p.data_ptr(), p.detach().clone()) for n, p in model.named_parameters()}
    generate(model, tok, PROMPTS, SamplingSettings(max_new_tokens=4), batch_size=3,
             dtype="bfloat16")

    def unchanged():
        return all(p.data_ptr() == before[n][0] and p.dtype == torch.float32
                   and torch.equal(p, before[n][1]) for n, p in model.named_parameters())

    assert unchanged()
    dtypes: set = set()
    hook = model.base_model.model.lm_head.register_forward_hook(
        lambda m, i, o: (dtypes.update({o.dtype, m.weight.dtype}),
                         (_ for _ in ()).throw(RuntimeError("broken"))))
    with pytest.raises(RuntimeError, match="broken"):
        generate(model, tok, PROMPTS, SamplingSettings(max_new_tokens=4), batch_size=3,
                 dtype="bfloat16")
    hook.remove()
    # the frozen weight itself was bf16 in the pass (autocast would recast it every pass)
    assert dtypes == {torch.bfloat16} and unchanged()


def test_each_engine_checks_its_own_options():
    """The options sit beside `engine` and are checked by that engine's `Config`: vLLM's
    knobs are unknown keys to the `hf` engine."""
    from rlhfx.errors import UserError
    from rlhfx.plugins.rollout_engines.vllm import VLLMConfig

    assert RolloutSettings().engine == "hf"
    settings = RolloutSettings.model_validate({"engine": "vllm", "kv_cache_gib": 2,
                                               "threads": "0-1", "dtype": "float32"})
    assert settings.options == {"kv_cache_gib": 2, "threads": "0-1", "dtype": "float32"}
    config = VLLMConfig.model_construct(**settings.options)  # vLLM need not be installed
    assert config.kv_cache_gib == 2 and config.weight_sync == "reload"
    bad_cases = {
        "sglang": ({"engine": "sglang"}, "unknown rollout engine 'sglang'; valid: hf, vllm"),
        "hf+kv": ({"kv_cache_gib": 2}, "rollout_engine 'hf': kv_cache_gib: Extra inputs"),
        "hf+dtype": ({"dtype": "fp8"}, "rollout_engine 'hf': dtype: Input should be 'auto', "
                     "'float32' or 'bfloat16'"),
    }
    for table, message in bad_cases.values():
        with pytest.raises(UserError, match=f"^rollouts: {message}"):
            check_engine(RolloutSettings.model_validate(table))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_vllm_engine_without_vllm_is_a_one_line_user_error(policy, tmp_path):
    from rlhfx.errors import UserError

    check_engine(RolloutSettings())  # hf: always there
    with pytest.raises(UserError, match=r"^rollouts: rollout_engine 'vllm': vLLM is not "
                       r"installed: pip install 'rlhfx\[vllm\]'$"):
        check_engine(RolloutSettings(engine="vllm"))
    model, tok = policy
    with pytest.raises(UserError, match="vLLM is not installed"):
        make_engine(RolloutSettings(engine="vllm"), model, tok, batch_size=8, device="cpu",
                    work_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing written before the error


def test_lora_policy_is_saved_merged_and_left_untouched(policy, tmp_path: Path):
    """What the vLLM engine loads: the adapters merged into plain weights, the trained model
    itself unchanged (no merge in place)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rlhfx.plugins.rollout_engines.vllm import merged_state_dict, save_policy

    base, tok = policy
    model = tiny_llama(len(tok))
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8,
                                                  target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # B starts at zero; give the adapters something to merge
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    before = {k: v.clone() for k, v in peft_model.state_dict().items()}
    _, state = merged_state_dict(peft_model)
    assert not any("lora" in k or "base_layer" in k for k in state)
    after = peft_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    save_policy(peft_model, tok, tmp_path / "weights")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "weights").eval()
    ids = torch.tensor([tok("###Human: Hi ###Assistant:")["input_ids"]])
    with torch.no_grad():
        want = peft_model(input_ids=ids).logits
        got = loaded(input_ids=ids).logits
        plain = model.get_base_model() if hasattr(model, "get_base_model") else None
    assert plain is None
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with torch.no_grad(), peft_model.disable_adapter():
        assert not torch.allclose(peft_model(input_ids=ids).logits, want, atol=1e-3)
    _, full = merged_state_dict(base)  # a plain model: its own state dict
    assert full.keys() == base.state_dict().keys()


def test_vllm_on_the_cpu_runs_in_process_unless_told_otherwise(monkeypatch):
    import os

    import torch

    from rlhfx.plugins.rollout_engines import vllm as vllm_engine

    # set, then removed: monkeypatch restores both variables afterwards
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # the user's choice stays
    vllm_engine.cpu_process_settings()
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert os.environ["OMP_NUM_THREADS"] == "7"
    monkeypatch.delenv("OMP_NUM_THREADS")
    vllm_engine.cpu_process_settings()
    assert os.environ["OMP_NUM_THREADS"] == str(torch.get_num_threads())


def test_architecture_ignores_paths_and_dtype_but_not_shapes(policy, tmp_path):
    from transformers import AutoModelForCausalLM

    from rlhfx.models import architecture_of

    model, _ = policy
    model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved", dtype=torch.bfloat16)
    assert architecture_of(reloaded) == architecture_of(model)
    llama = tiny_llama(500)
    assert architecture_of(llama) != architecture_of(model)
    config = type(llama.config)(**{**llama.config.to_dict(), "intermediate_size": 96})
    assert architecture_of(type(llama)(config)) != architecture_of(llama)


def test_same_tokenization_tells_vocabularies_apart(policy, tmp_path):
    from transformers import AutoTokenizer

    from rlhfx.models import same_tokenization

    _, tok = policy
    tok.save_pretrained(tmp_path / "tok")
    assert same_tokenization(tok, AutoTokenizer.from_pretrained(tmp_path / "tok"))
    other = AutoTokenizer.from_pretrained(tmp_path / "tok")
    other.add_tokens(["<extra>"])
    assert not same_tokenization(tok, other)
    assert not same_tokenization(tok, object())


def test_the_vllm_engine_drives_vllm_as_the_contract_says(policy, tmp_path, monkeypatch):
    """The engine's side of vLLM without vLLM (its real tests run in vLLM's environment): the
    weights it saves and loads, the requests and sampling settings it sends, how answers
    come back as rollouts, the reload after an update, and close."""
    import importlib.machinery
    import sys
    import types

    from rlhfx.rollouts import encode_prompts

    model, tok = policy
    eos = tok.eos_token_id
    calls: list[tuple] = []

    class FakeLLM:
        def __init__(self, **kwargs):
            calls.append(("start", kwargs))

        def generate(self, requests, params, use_tqdm):
            calls.append(("generate", requests, params))
            return [types.SimpleNamespace(outputs=[
                types.SimpleNamespace(index=j, token_ids=[10 + j, 11, eos, 12])
                for j in reversed(range(p.n))]) for p in params]

        def collective_rpc(self, method, kwargs):
            calls.append((method, kwargs))

        def reset_prefix_cache(self):
            calls.append(("reset",))

    fake = types.ModuleType("vllm")
    fake.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    fake.LLM = FakeLLM
    fake.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what the engine sets on the CPU, restored
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

    settings = RolloutSettings(engine="vllm", dtype="float32", kv_cache_gib=1)
    engine = make_engine(settings, model, tok, batch_size=8, device="cpu", work_dir=tmp_path)
    assert engine.owns_weights
    (_, started), = calls
    assert started["dtype"] == "float32" and started["kv_cache_memory_bytes"] == 2**30
    assert (Path(started["model"]) / "config.json").is_file()

    torch.manual_seed(0)
    out = engine.generate(PROMPTS[:2], SamplingSettings(max_new_tokens=4, temperature=0.5),
                          num_samples=2, stop_strings=["###"])
    _, requests, params = calls[1]
    assert [r["prompt_token_ids"] for r in requests] == encode_prompts(tok, PROMPTS[:2])
    assert [(p.n, p.max_tokens, p.temperature, p.stop) for p in params] == [
        (2, 4, 0.5, ["###"])] * 2
    assert [r.prompt_id for r in out] == [0, 0, 1, 1]
    assert [r.response_ids for r in out] == [[10, 11, eos], [11, 11, eos]] * 2  # cut after EOS
    assert out[0].text == tok.decode([10, 11], skip_special_tokens=True)

    engine.sync_weights(model)
    assert calls[2] == ("reload_weights", {"weights_path": started["model"]})
    assert calls[3] == ("reset",)
    engine.close()
    assert engine.llm is None


def test_grpo_learns_from_bf16_samples(rlhfx_cli, tmp_path):
    """The tiny GRPO recipe with its samples drawn in bf16 (the update recomputes the
    log-probs in float32): the reward still rises as it does from float32 samples."""
    import json

    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "tiny_grpo.toml")
    result = rlhfx_cli("run", recipe, "-o", str(tmp_path / "run"),
                       "--set", 'stages.align.rollouts.dtype="bfloat16"',
                       "--set", "stages.align.algorithm.eval_every=0")
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "run/stages/align/metrics.jsonl").read_text().splitlines()
    rewards = [r["reward_mean"] for r in map(json.loads, lines) if "reward_mean" in r]
    assert len(rewards) == 24
    assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 1.5


def test_a_wrong_engine_dtype_is_a_one_line_error_naming_recipe_and_key(rlhfx_cli):
    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "tiny_grpo.toml")
    result = rlhfx_cli("validate", recipe, "--set", 'stages.align.rollouts.dtype="fp8"')
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "Traceback" not in result.output
    assert errors[0] == ("error: " + recipe + ": stages.align.rollouts.dtype: Input should be "
                         "'auto', 'float32' or 'bfloat16' (got 'fp8')")
