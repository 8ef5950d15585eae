"""The sequence-classification reward source on a tiny GPTNeoForSequenceClassification.

The policy here has its own, different tokenizer: the reward model only ever sees text.
"""

from __future__ import annotations

import json

import pytest
from fixtures.synthetic import corpus, make_rows
from fixtures.tiny import save_tiny_lm, save_tiny_rm

from rlhfx import UserError
from rlhfx.plugins.rewards.reward_model import REWARD_INFO, GptNeoRM, SequenceReward

torch = pytest.importorskip("torch")

ROWS = make_rows(60, seed=3)
PROMPTS = [
    "###Human: How can I bake bread? ###Assistant:",
    "###Human: Tell me about tea. ###Assistant: It is a drink. ###Human: More? ###Assistant:",
    "###Human: Hi ###Assistant:",
]
RESPONSES = ["Knead the dough and let it rise.", "Green tea is lighter.", "Hello there, friend!"]


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    return save_tiny_rm(tmp_path_factory.mktemp("rm") / "rm", corpus(ROWS), seed=1, vocab_size=420)


def reference_scores(rm_dir, texts):
    """One text at a time, no padding: what batching and sorting must reproduce."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    with torch.no_grad():
        return [float(model(**tok(t, return_tensors="pt")).logits[0, 0]) for t in texts]


def build(cls=SequenceReward, **options):
    return cls(cls.Config.model_validate(options))


def test_scores_are_the_raw_logit_in_input_order(rm_dir):
    source = build(model=str(rm_dir), batch_size=2)  # 3 texts of different lengths: 2 batches
    scores = source.score(PROMPTS, RESPONSES)
    texts = [p + " " + r for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    assert scores == pytest.approx(reference_scores(rm_dir, texts), abs=1e-5)
    assert len(set(scores)) == 3
    assert all(not p.requires_grad for p in source._model.parameters())
    assert torch.is_grad_enabled()  # scoring does not leave gradients switched off


def test_separator_is_not_doubled():
    source = build(model="unused")
    assert source.texts(["Q: ###Assistant:", "A "], [" x", "y"]) == ["Q: ###Assistant: x", "A y"]
    assert source.texts(["###Assistant:"], ["y"]) == ["###Assistant: y"]


def test_long_texts_are_truncated_from_the_left(rm_dir):
    source = build(model=str(rm_dir), max_length=16)
    long_response = "word " * 200 + "the end"
    [score] = source.score(["###Human: hi ###Assistant:"], [long_response])
    tok = source._tokenizer
    ids = tok("###Human: hi ###Assistant: " + long_response)["input_ids"]
    tail = tok.decode(ids[-16:])
    assert score == pytest.approx(reference_scores(rm_dir, [tail])[0], abs=1e-4)


def test_policy_with_another_tokenizer(rm_dir, tmp_path):
    """Rollouts of a policy whose tokenizer differs from the RM's are scored as text."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfx.rollouts import SamplingSettings, generate

    policy_dir = save_tiny_lm(tmp_path / "policy", ["completely different words"] * 50,
                              seed=2, vocab_size=300)
    policy_tok = AutoTokenizer.from_pretrained(policy_dir)
    policy = AutoModelForCausalLM.from_pretrained(policy_dir)
    source = build(GptNeoRM, model=str(rm_dir), batch_size=4)
    source.score(["x"], ["y"])  # loads the RM and its tokenizer
    assert len(policy_tok) != len(source._tokenizer)  # two different vocabularies
    torch.manual_seed(0)
    rollouts = generate(policy, policy_tok, PROMPTS, SamplingSettings(max_new_tokens=8),
                        num_samples=2, batch_size=6)
    scores = source.score([r.prompt for r in rollouts], [r.text for r in rollouts])
    assert len(scores) == 6 and all(s == s for s in scores)  # finite, one per rollout
    texts = source.texts([r.prompt for r in rollouts], [r.text for r in rollouts])
    assert scores == pytest.approx(reference_scores(rm_dir, texts), abs=1e-5)


def test_token_ids_are_read_only_from_a_policy_with_the_same_tokenizer(rm_dir, tmp_path):
    from transformers import AutoTokenizer

    same = AutoTokenizer.from_pretrained(rm_dir)  # another instance of the RM's tokenizer
    other = AutoTokenizer.from_pretrained(save_tiny_lm(tmp_path / "p", corpus(ROWS), seed=2,
                                                       vocab_size=300))
    assert build(model=str(rm_dir)).reads_policy_tokens(same)
    assert not build(model=str(rm_dir)).reads_policy_tokens(other)
    assert not build(model=str(rm_dir), token_ids=False).reads_policy_tokens(same)


def test_token_ids_score_as_the_text_they_spell(rm_dir):
    """prompt + response ids give the logit of exactly those ids; a trailing EOS is dropped
    unless the source appends one (as the text path, which decodes without it, does)."""
    source = build(model=str(rm_dir), batch_size=2)
    source.score(["a"], ["b"])  # loads the model
    tok = source._tokenizer
    prompt_ids = [tok(p)["input_ids"] for p in PROMPTS]
    response_ids = [tok(" " + r)["input_ids"] for r in RESPONSES]
    eos = tok.eos_token_id
    ended = [[*r, eos] for r in response_ids]  # as sampled: up to and including EOS
    scores = source.score_tokens(prompt_ids, ended)
    texts = [tok.decode(p + r) for p, r in zip(prompt_ids, response_ids, strict=True)]
    assert scores == pytest.approx(reference_scores(rm_dir, texts), abs=1e-5)
    assert len(set(scores)) == 3
    source._append_eos = True
    with_eos = source.score_tokens(prompt_ids, response_ids)
    assert with_eos == pytest.approx(
        reference_scores(rm_dir, [t + tok.eos_token for t in texts]), abs=1e-5)


def test_long_token_ids_are_cut_from_the_left(rm_dir):
    source = build(model=str(rm_dir), max_length=16)
    source.score(["a"], ["b"])
    tok = source._tokenizer
    prompt = tok("###Human: hi ###Assistant:")["input_ids"]
    response = tok(" " + "word " * 50 + "the end")["input_ids"]
    [score] = source.score_tokens([prompt], [response])
    assert score == pytest.approx(reference_scores(rm_dir, [tok.decode(response[-16:])])[0],
                                  abs=1e-4)


def test_dtype_is_configurable(rm_dir):
    full = build(model=str(rm_dir)).score(PROMPTS, RESPONSES)
    half = build(model=str(rm_dir), dtype="bfloat16")
    scores = half.score(PROMPTS, RESPONSES)
    assert next(half._model.parameters()).dtype == torch.bfloat16
    assert scores == pytest.approx(full, abs=0.1)


def test_append_eos_follows_the_reward_info_file(rm_dir, tmp_path):
    import shutil

    copy = tmp_path / "rm_copy"
    shutil.copytree(rm_dir, copy)
    (copy / REWARD_INFO).write_text(json.dumps({"append_eos": True}))
    source = build(model=str(copy))
    source.score(["a"], ["b"])
    assert source._append_eos is True
    explicit = build(model=str(copy), append_eos=False)
    explicit.score(["a"], ["b"])
    assert explicit._append_eos is False


def test_default_model_is_the_seed_reward_model():
    assert GptNeoRM.Config().model == "weqweasdas/hh_rlhf_rm"
    with pytest.raises(Exception, match="model"):
        SequenceReward.Config()  # the generic source names its model


def test_missing_model_is_a_user_error(tmp_path):
    source = build(model=str(tmp_path / "nothing-here"))
    with pytest.raises(UserError, match="nothing-here"):
        source.score(["a"], ["b"])


def test_recipe_names_both_sources(rlhfx_cli, tmp_path):
    recipe = tmp_path / "r.toml"
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "###Human: hi ###Assistant:"}\n')
    recipe.write_text(f"""
[stages.align]
policy = "builtin:tiny-gpt-neo"
prompts = "{prompts}"
algorithm = {{ name = "raft" }}
reward = {{ name = "weighted", terms = [
  {{ source = {{ name = "gpt-neo-rm", dtype = "bfloat16" }} }},
  {{ source = {{ name = "reward_model", model = "org/some-reward-model", batch_size = 4 }} }},
] }}
""")
    result = rlhfx_cli("validate", str(recipe))
    assert result.exit_code == 0, result.output
