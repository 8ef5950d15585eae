"""The vLLM rollout engine for real, on a tiny LLaMA (vLLM has no GPT-Neo).

Skipped unless vLLM imports: it lives in its own environment (`bash bench/vllm_env.sh`; CI
builds it and runs this file there). One engine serves the whole module: starting one takes
tens of seconds.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")
torch = pytest.importorskip("torch")

from rlhfx.rollouts import (  # noqa: E402
    RolloutSettings,
    SamplingSettings,
    encode_prompts,
    generate,
    make_engine,
)

PROMPTS = [
    "###Human: Hi ###Assistant:",
    "###Human: How do I bake bread at home without a big oven? ###Assistant:",
    "###Human: Why? ###Assistant:",
]
GREEDY = SamplingSettings(max_new_tokens=12, do_sample=False)


def tiny_llama(vocab_size: int):
    """Head size 64 (what vLLM's CPU attention supports); large initial weights so that greedy
    choices are not near-ties that float noise could flip."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
        initializer_range=0.2, tie_word_embeddings=False,
    )).eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from rlhfx.models import load_tokenizer

    tok = load_tokenizer("builtin:tiny-gpt-neo")
    model = tiny_llama(len(tok))
    settings = RolloutSettings(engine="vllm", dtype="float32", kv_cache_gib=1,
                               max_model_len=256)
    engine = make_engine(settings, model, tok, batch_size=8, device="cpu",
                         work_dir=tmp_path_factory.mktemp("engine"))
    yield engine, model, tok
    engine.close()


def test_k_samples_per_prompt_with_the_policys_ids(setup):
    engine, _, tok = setup
    out = engine.generate(PROMPTS, SamplingSettings(max_new_tokens=8), num_samples=4)
    assert [r.prompt_id for r in out] == [0] * 4 + [1] * 4 + [2] * 4
    ids = encode_prompts(tok, PROMPTS)
    for r in out:
        assert r.prompt == PROMPTS[r.prompt_id] and r.prompt_ids == ids[r.prompt_id]
        assert 1 <= len(r.response_ids) <= 8
        assert r.text == tok.decode(r.response_ids, skip_special_tokens=True)
    assert len({tuple(r.response_ids) for r in out}) > 4  # the k samples differ


def test_greedy_matches_transformers_generate(setup):
    engine, model, tok = setup
    got = engine.generate(PROMPTS, GREEDY)
    want = generate(model, tok, PROMPTS, GREEDY)
    same = sum(a.response_ids == b.response_ids for a, b in zip(got, want, strict=True))
    assert same >= 2, (got, want)  # float32 both; kernels differ, so allow one near-tie


def test_stop_strings_end_responses(setup):
    engine, _, tok = setup
    torch.manual_seed(0)
    free = engine.generate(PROMPTS, SamplingSettings(max_new_tokens=20), num_samples=4)
    # a character the model writes often after its first token: a stop string that will hit
    counts: dict[str, int] = {}
    for r in free:
        for ch in set(r.text[1:]) - {" "}:
            counts[ch] = counts.get(ch, 0) + 1
    stop = max(sorted(counts), key=counts.__getitem__)
    out = engine.generate(PROMPTS, SamplingSettings(max_new_tokens=20), num_samples=4,
                          stop_strings=[stop])
    stopped = 0
    for r in out:
        ids = [t for t in r.response_ids if t != tok.eos_token_id]
        if stop in r.text:
            stopped += 1
            assert stop not in tok.decode(ids[:-1]) and r.text.endswith(
                tok.decode(ids[-1:], skip_special_tokens=True))
    assert stopped >= 4


def test_weight_sync_changes_answers_and_restoring_brings_them_back(setup):
    engine, model, _ = setup
    before = [r.response_ids for r in engine.generate(PROMPTS, GREEDY)]
    original = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    engine.sync_weights(model)
    changed = [r.response_ids for r in engine.generate(PROMPTS, GREEDY)]
    assert changed != before
    model.load_state_dict(original)
    engine.sync_weights(model)
    assert [r.response_ids for r in engine.generate(PROMPTS, GREEDY)] == before


def test_lora_policy_syncs_merged(setup):
    from peft import LoraConfig, get_peft_model

    engine, model, tok = setup
    before = [r.response_ids for r in engine.generate(PROMPTS, GREEDY)]
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8,
                                                  target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1.0)
    try:
        engine.sync_weights(peft_model)
        got = [r.response_ids for r in engine.generate(PROMPTS, GREEDY)]
        want = [r.response_ids for r in generate(peft_model, tok, PROMPTS, GREEDY)]
        assert got != before
        assert sum(a == b for a, b in zip(got, want, strict=True)) >= 2
    finally:
        engine.sync_weights(peft_model.unload())  # the plain model again, for later tests


def test_episodes_through_the_vllm_engine(setup):
    """Multi-turn episodes on vLLM: each later turn is sampled from the episode's own ids
    (the model's sampled ids and the environment's message), and only the model's are
    marked for training."""
    from rlhfx.episodes import run_episodes
    from rlhfx.plugins.environments.guess import GuessConfig, GuessNumber

    engine, _, tok = setup
    env = GuessNumber(GuessConfig(choices=["bike", "book", "cook", "desk"], max_turns=3,
                                  max_episode_tokens=48))
    torch.manual_seed(0)
    out = run_episodes(engine, tok, env, PROMPTS, [{}] * len(PROMPTS),
                       SamplingSettings(max_new_tokens=5), num_samples=2)
    assert [(e.prompt_index, e.sample) for e in out] == [(p, j) for p in range(3)
                                                          for j in range(2)]
    for e in out:
        assert len(e.response_ids) == len(e.action_mask) <= 48
        assert e.model_turns == sum(t["role"] == "assistant" for t in e.turns) >= 1
        assert e.action_mask[0] == 1
    later = [e for e in out if e.model_turns >= 2]
    assert later, "no episode reached a second model turn"
    for e in later:  # the environment's message sits between the model's turns, unmasked
        assert 0 in e.action_mask and e.action_mask[-1] == 1
