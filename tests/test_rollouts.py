"""Batched generation on the built-in tiny policy: order, padding, stop strings, lengths."""

from __future__ import annotations

import random

import pytest

from rlhfx.rollouts import SamplingSettings, _rows_per_call, cut_at_eos, generate

torch = pytest.importorskip("torch")

POLICY = "builtin:tiny-gpt-neo"
PROMPTS = [
    "###Human: Hi ###Assistant:",
    "###Human: How do I bake bread at home without a big oven? ###Assistant:",
    "###Human: Why? ###Assistant:",
]


@pytest.fixture(scope="module")
def policy():
    from rlhfx.models import load_causal_lm, load_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 150k-parameter model only loses time to more threads
    yield load_causal_lm(POLICY), load_tokenizer(POLICY)
    torch.set_num_threads(threads)


def test_k_samples_per_prompt_in_prompt_order(policy):
    model, tok = policy
    torch.manual_seed(0)
    out = generate(model, tok, PROMPTS, SamplingSettings(max_new_tokens=6), num_samples=4,
                   batch_size=8)
    assert [r.prompt_id for r in out] == [0] * 4 + [1] * 4 + [2] * 4
    for r in out:
        assert r.prompt == PROMPTS[r.prompt_id]
        # left padding is stripped: the ids are the prompt's own tokens
        assert r.prompt_ids == tok(r.prompt, add_special_tokens=False)["input_ids"]
        assert 1 <= len(r.response_ids) <= 6
        assert r.text == tok.decode(r.response_ids, skip_special_tokens=True)
    assert tok.padding_side == "right"  # restored after generating
    assert not model.training


def test_left_padding_does_not_change_greedy_answers(policy):
    model, tok = policy
    greedy = SamplingSettings(max_new_tokens=8, do_sample=False)
    alone = [generate(model, tok, [p], greedy)[0].response_ids for p in PROMPTS]
    batched = [r.response_ids for r in generate(model, tok, PROMPTS, greedy, batch_size=8)]
    assert batched == alone


def test_stop_string_ends_a_response(policy):
    model, tok = policy
    torch.manual_seed(1)
    out = generate(model, tok, PROMPTS, SamplingSettings(max_new_tokens=30), num_samples=4,
                   stop_strings=["e"])
    stopped = 0
    for r in out:
        ids = [t for t in r.response_ids if t != tok.eos_token_id]
        if "e" in r.text:
            stopped += 1
            # nothing was generated after the token that completed the stop string
            assert "e" not in tok.decode(ids[:-1]) and "e" in tok.decode(ids[-1:])
    assert stopped >= 6  # a random model writes 'e' often: most responses were cut


def test_response_length_is_drawn_per_call(policy):
    model, tok = policy
    sampling = SamplingSettings(length_range=(2, 5))
    rng = random.Random(3)
    assert {sampling.draw_max_new_tokens(random.Random(3)) for _ in range(5)} == {
        random.Random(3).randint(2, 5)
    }
    torch.manual_seed(0)
    out = generate(model, tok, PROMPTS * 4, sampling, num_samples=1, batch_size=2, rng=rng)
    lengths = [len(r.response_ids) for r in out]
    assert max(lengths) <= 5
    assert len(set(lengths)) > 1  # different calls drew different lengths
    assert SamplingSettings(max_new_tokens=7).draw_max_new_tokens(rng) == 7


def test_progress_task_completes(policy):
    from rich.progress import Progress

    model, tok = policy
    with Progress(disable=True) as progress:
        generate(model, tok, PROMPTS, SamplingSettings(max_new_tokens=2), progress=progress)
        task = progress.tasks[0]
        assert task.completed == task.total == len(PROMPTS)


def test_cut_at_eos_and_rows_per_call():
    assert cut_at_eos([5, 6, 0, 0], eos=0, pad=0) == [5, 6, 0]
    assert cut_at_eos([5, 6, 9, 9], eos=0, pad=9) == [5, 6]
    assert cut_at_eos([5, 6], eos=0, pad=0) == [5, 6]
    assert _rows_per_call(8, 4) == 2 and _rows_per_call(3, 8) == 1


# ------------------------------------------------------------------ BOS, as SFT (TRL) adds it
def bos_tokenizer():
    """A LLaMA-style tokenizer in miniature: `tok(text)` starts with BOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "hello": 4, "world": 5, "x": 6}
    inner = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    inner.pre_tokenizer = pre_tokenizers.Whitespace()
    inner.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=inner, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


def test_encode_prompts_adds_bos_once_when_the_tokenizer_adds_it(policy):
    from rlhfx.rollouts import adds_bos, encode_prompts

    tok = bos_tokenizer()
    assert adds_bos(tok) and adds_bos(tok)  # the second answer comes from the cache
    assert encode_prompts(tok, ["hello world", "<s> x", "x"]) == [[1, 4, 5], [1, 6], [1, 6]]
    _, tiny = policy  # GPT-2 style: no BOS by default, ids unchanged
    assert not adds_bos(tiny)
    assert encode_prompts(tiny, ["Hi"]) == [tiny("Hi", add_special_tokens=False)["input_ids"]]


def test_generate_feeds_bos_first_with_such_a_tokenizer():
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    from rlhfx.rollouts import adds_bos

    tok = bos_tokenizer()
    torch.manual_seed(0)
    model = GPTNeoForCausalLM(GPTNeoConfig(
        vocab_size=8, hidden_size=16, num_layers=1, num_heads=2, attention_types=[[["global"], 1]],
        max_position_embeddings=32, bos_token_id=1, eos_token_id=2,
    ))
    out = generate(model, tok, ["hello world", "x"], SamplingSettings(max_new_tokens=3),
                   num_samples=2, batch_size=4)
    assert [r.prompt_ids for r in out] == [[1, 4, 5]] * 2 + [[1, 6]] * 2
    assert adds_bos(tok)


def test_raft_examples_and_prompt_lengths_count_the_bos():
    from rlhfx.plugins.align import prompts_within
    from rlhfx.plugins.raft.config import RaftConfig
    from rlhfx.plugins.raft.train import build_examples

    tok = bos_tokenizer()
    [example] = build_examples(tok, [("hello", " world")], RaftConfig(), finished=[True])
    assert example["input_ids"] == [1, 4, 5, 2]
    assert example["labels"] == [-100, -100, 5, 2]
    assert prompts_within(["hello world", "x"], tok, 2) == [False, True]
