"""The `hf` engine's decode loop (rlhfx.sampling) against transformers' `generate`: greedy
tokens, EOS, stop strings, lengths, temperature / top-k / top-p, seeds, prefill groups."""

from __future__ import annotations

import pytest

from rlhfx.rollouts import SamplingSettings, encode_prompts, generate
from rlhfx.sampling import (
    Decoding,
    _batch_decoder,
    _length_groups,
    _stop_finder,
    _StopFinder,
    sample_responses,
    unsupported_reason,
)

torch = pytest.importorskip("torch")

PROMPTS = [
    "###Human: Hi ###Assistant:",
    "###Human: How do I bake bread at home without a big oven? ###Assistant:",
    "###Human: Why? ###Assistant:",
    "###Human: Name three rivers in Europe, please. ###Assistant:",
]


@pytest.fixture(scope="module")
def policy():
    from rlhfx.models import load_causal_lm, load_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_causal_lm("builtin:tiny-gpt-neo").eval(), load_tokenizer("builtin:tiny-gpt-neo")
    torch.set_num_threads(threads)


def tiny_llama(vocab_size: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )).eval()


def sample(model, tok, prompts=PROMPTS, k=1, **settings):
    settings.setdefault("eos_ids", [tok.eos_token_id])
    with torch.no_grad():
        return sample_responses(model, tok, encode_prompts(tok, prompts), k,
                                Decoding(**settings))


@pytest.mark.parametrize("arch", ["gpt-neo", "llama"])
def test_greedy_tokens_are_transformers_generate(policy, arch):
    model, tok = policy
    if arch == "llama":
        model = tiny_llama(len(tok))
    ids = encode_prompts(tok, PROMPTS)
    want = []
    for row in ids:  # one prompt at a time: no padding on transformers' side
        out = model.generate(torch.tensor([row]), attention_mask=torch.ones(1, len(row)),
                             max_new_tokens=10, do_sample=False, pad_token_id=tok.eos_token_id,
                             eos_token_id=tok.eos_token_id)
        want.append(out[0, len(row):].tolist())
    got = sample(model, tok, k=2, max_new_tokens=10, do_sample=False)
    assert got == [w for w in want for _ in range(2)]
    assert len({tuple(w) for w in want}) > 1  # the prompts' answers differ
    # the same through `generate`, padding, grouping and all
    rows = generate(model, tok, PROMPTS, SamplingSettings(max_new_tokens=10, do_sample=False),
                    num_samples=2, batch_size=8)
    assert [r.response_ids for r in rows] == got


def test_grouped_prefill_gives_the_same_tokens(policy):
    model, tok = policy
    prompts = [*PROMPTS, "###Human: " + "Tell me more about bread. " * 6 + "###Assistant:"]
    settings = dict(max_new_tokens=8, do_sample=False)
    grouped = Decoding(eos_ids=[tok.eos_token_id], **settings)
    with torch.no_grad():
        got = sample_responses(model, tok, encode_prompts(tok, prompts), 2, grouped)
    assert grouped.stats["prefill_groups"] > 1
    assert got == sample(model, tok, prompts, k=2, group_prefill=False, **settings)
    assert _length_groups([5, 5, 6]) is None  # too little padding to save
    assert _length_groups([100, 3, 101, 4]) == [[1, 3], [0, 2]]


def test_eos_ends_a_row_and_the_others_go_on(policy):
    model, tok = policy
    free = sample(model, tok, max_new_tokens=10, do_sample=False, eos_ids=[])
    assert all(len(r) == 10 for r in free)
    eos = free[1][3]  # a token the second prompt's answer writes fourth
    got = sample(model, tok, max_new_tokens=10, do_sample=False, eos_ids=[eos])
    for before, after in zip(free, got, strict=True):
        if eos in before:  # cut right after its first EOS, EOS included
            assert after == before[: before.index(eos) + 1]
        else:
            assert after == before
    assert got[1][-1] == eos and len(got[1]) <= 4


@pytest.mark.parametrize("noise", [True, False])
def test_finished_rows_do_not_change_the_others_samples(policy, noise):
    """A row's random draws do not depend on when other rows end (they leave the batch)."""
    model, tok = policy
    torch.manual_seed(5)
    free = sample(model, tok, k=4, max_new_tokens=12, eos_ids=[], generate_noise=noise)
    ended = free[0][1]
    torch.manual_seed(5)
    got = sample(model, tok, k=4, max_new_tokens=12, eos_ids=[ended], generate_noise=noise)
    cut = 0
    for before, after in zip(free, got, strict=True):
        if ended in before:
            cut += 1
            assert after == before[: before.index(ended) + 1]
        else:
            assert after == before
    assert 0 < cut < len(free)


def test_stop_strings_end_a_row_at_the_completing_token(policy):
    model, tok = policy
    torch.manual_seed(1)
    rows = sample(model, tok, k=4, max_new_tokens=30, stop_strings=["e"])
    stopped = 0
    for ids in rows:
        text = tok.decode(ids)
        if "e" in text:
            stopped += 1
            assert "e" not in tok.decode(ids[:-1]) and "e" in tok.decode(ids[-1:])
        else:
            assert len(ids) == 30 or ids[-1] == tok.eos_token_id
    assert stopped >= 8


def test_calls_with_one_tokenizer_share_what_the_stop_check_learnt(policy):
    model, tok = policy
    sample(model, tok, max_new_tokens=4, stop_strings=["###Human:"])
    finder = _stop_finder(tok, ("###Human:",))
    known = dict(finder.can_end)
    assert known  # the first call's tokens were learnt
    sample(model, tok, max_new_tokens=4, stop_strings=["###Human:"])
    assert _stop_finder(tok, ("###Human:",)) is finder
    assert known.items() <= finder.can_end.items()


def test_rows_are_decoded_in_one_call_as_the_tokenizer_decodes_each(policy):
    _, tok = policy
    gen = torch.Generator().manual_seed(0)
    rows = [torch.randint(0, len(tok), (n,), generator=gen).tolist() for n in range(0, 40, 3)]
    rows.append([tok.eos_token_id, 5, tok.eos_token_id])  # special tokens are kept
    decode = _batch_decoder(tok)
    assert decode.__name__ == "batched"
    for batch in (rows, rows * 3):  # a few rows are decoded one by one, many in one call
        assert decode(batch) == [tok.decode(ids, skip_special_tokens=False) for ids in batch]


def test_a_tokenizer_whose_decode_cleans_up_spaces_is_decoded_row_by_row(policy):
    _, tok = policy

    class CleaningUp:  # a wrapper whose decode differs from its backend's
        backend_tokenizer = tok.backend_tokenizer
        encode = staticmethod(tok.encode)

        @staticmethod
        def decode(ids, skip_special_tokens=False):
            return tok.decode(ids, skip_special_tokens=skip_special_tokens).replace(" .", ".")

    decode = _batch_decoder(CleaningUp())
    ids = tok.encode("one . two", add_special_tokens=False)
    assert decode.__name__ == "one_by_one"
    assert decode([ids]) == ["one. two"]


def byte_tokens(tok, text: str) -> list[int]:
    """`text` as one byte-level token per byte."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = bytes_to_unicode()
    ids = tok.convert_tokens_to_ids([alphabet[b] for b in text.encode()])
    assert tok.unk_token_id not in ids and tok.decode(ids) == text
    return ids


@pytest.mark.parametrize("stop", ["###Human:", "stop now"])
def test_stop_finder_marks_only_the_token_that_completes_a_stop(policy, stop):
    _, tok = policy
    ids = tok.encode(f"ab {stop} cd", add_special_tokens=False)
    finder = _StopFinder(tok, [stop])
    prefixes = [ids[:n] for n in range(1, len(ids) + 1)]
    hits = finder.completed(prefixes)
    decoded = [tok.decode(p) for p in prefixes]
    first = next(n for n, t in enumerate(decoded) if stop in t)
    assert hits == [n == first for n in range(len(prefixes))]
    # the worst case: one token per byte; the window still holds the whole stop string
    per_byte = byte_tokens(tok, f"ab {stop}")
    assert finder.completed([per_byte, per_byte[:-1]]) == [True, False]


def every_tail_decoded(tok, stops, rows):
    """The stop check by its definition: every row's tail decoded, with and without its last
    token."""
    window = max(len(s.encode("utf-8")) for s in stops) + 1
    result = []
    for ids in rows:
        tail = ids[-window:]
        text, before = (tok.decode(t, skip_special_tokens=False) for t in (tail, tail[:-1]))
        result.append(bool(ids) and any(text.count(s) > before.count(s) for s in stops))
    return result


def byte_level_tokenizer():
    """A GPT-2-style tokenizer: every byte a token, a few words and a multi-byte character."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = bytes_to_unicode()
    pieces = ["<unk>"] + [alphabet[b] for b in range(256)]
    pieces += ["".join(alphabet[b] for b in w.encode("utf-8"))
               for w in [" Human", "Human", ": ", " User", "。", "\n\n"]]
    backend = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=[],
                                   unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")


def metaspace_tokenizer():
    """A SentencePiece-style tokenizer: '▁' for spaces, the first one stripped, bytes of
    characters outside the vocabulary as tokens of their own."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = ["<unk>", "▁Human", ":", "▁User", "▁a", "a", "b", "▁", "▁the", "<0xE3>",
              "<0x80>", "<0x82>", "。", "\n", ":▁"]
    backend = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=[],
                                   unk_token="<unk>", byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")


def word_end_tokenizer():
    """A tokenizer whose tokens do not add the same text wherever they stand: the last piece
    of a word carries '</w>', read as a space between words."""
    import string

    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    chars = string.ascii_letters + string.digits + ",.':"
    pieces = ["<unk>", *chars, *(c + "</w>" for c in chars), "man</w>", "Hu"]
    backend = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=[],
                                   unk_token="<unk>", end_of_word_suffix="</w>"))
    backend.decoder = decoders.BPEDecoder(suffix="</w>")
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")


@pytest.mark.parametrize("kind", ["byte-level", "metaspace", "word-end"])
def test_stop_finder_skips_rows_yet_finds_what_decoding_every_row_finds(kind):
    """Rows whose last token cannot end a stop string are not decoded; the answers are those
    of decoding every row, multi-byte characters and leading spaces included."""
    if kind == "byte-level":
        tok = byte_level_tokenizer()
        pool = list(range(257, len(tok))) * 4 + [1 + b for b in "。: \na".encode()]
        pool += list(range(1, 257, 16))
    elif kind == "metaspace":
        tok = metaspace_tokenizer()
        pool = list(range(len(tok)))
    else:
        tok = word_end_tokenizer()
        pool = [len(tok) - 2, len(tok) - 1] * 40 + list(range(len(tok)))
    # "。" written one byte at a time: only its last byte's token completes it
    split = {"byte-level": [1 + b for b in "a。".encode()], "metaspace": [5, 9, 10, 11],
             "word-end": []}[kind]
    gen = torch.Generator().manual_seed(0)
    rows = [[pool[i] for i in torch.randint(0, len(pool), (n,), generator=gen).tolist()]
            for n in torch.randint(1, 14, (400,), generator=gen).tolist()]
    rows += [split[:n] for n in range(1, len(split) + 1)]
    stop_sets = ([["uman"], ["Hu"], [" "]] if kind == "word-end"
                 else [["Human:"], ["User: ", "。\n"], ["。"], [" "]])
    for stops in stop_sets:
        finder = _StopFinder(tok, stops)
        expected = every_tail_decoded(tok, stops, rows)
        assert finder.completed(rows) == expected, stops
        assert sum(expected) >= 3, stops  # the check had something to find
        # rows are left out only where tokens add the same text wherever they stand
        assert finder.filters == (kind != "word-end")
        if stops == ["Human:"] and kind == "byte-level":  # most tokens known not to end one
            assert sum(finder.can_end.values()) < len(finder.can_end) / 2, finder.can_end


def test_max_new_tokens_and_top_k_top_p_temperature(policy):
    model, tok = policy
    greedy = sample(model, tok, max_new_tokens=6, do_sample=False)
    assert all(len(r) <= 6 for r in greedy)
    torch.manual_seed(0)
    assert sample(model, tok, max_new_tokens=6, top_k=1) == greedy
    torch.manual_seed(0)
    assert sample(model, tok, max_new_tokens=6, top_p=1e-6) == greedy
    torch.manual_seed(0)
    assert sample(model, tok, max_new_tokens=6, temperature=1e-4) == greedy
    assert sample(model, tok, max_new_tokens=0) == [[] for _ in PROMPTS]
    # first tokens: top-k draws only among the k likeliest, top-p only inside the nucleus
    ids = encode_prompts(tok, PROMPTS[:1])
    with torch.no_grad():
        logits = model(torch.tensor(ids)).logits[0, -1]
    top3 = set(torch.topk(logits, 3).indices.tolist())
    probs, order = logits.softmax(-1).sort(descending=True)
    nucleus = set(order[: int((probs.cumsum(-1) < 0.5).sum()) + 1].tolist())
    torch.manual_seed(2)
    firsts_k = {r[0] for r in sample(model, tok, PROMPTS[:1], k=300, max_new_tokens=1, top_k=3)}
    firsts_p = {r[0] for r in sample(model, tok, PROMPTS[:1], k=300, max_new_tokens=1,
                                     top_p=0.5)}
    free = {r[0] for r in sample(model, tok, PROMPTS[:1], k=300, max_new_tokens=1)}
    assert firsts_k == top3  # 300 draws see all three
    assert firsts_p <= nucleus and len(free) > len(nucleus)


@pytest.mark.parametrize("noise", [True, False])
def test_samples_are_reproducible_for_a_seed(policy, noise):
    model, tok = policy
    settings = dict(max_new_tokens=8, temperature=0.9, top_k=50, top_p=0.95,
                    generate_noise=noise)
    torch.manual_seed(3)
    a = sample(model, tok, k=3, **settings)
    torch.manual_seed(3)
    assert sample(model, tok, k=3, **settings) == a
    torch.manual_seed(4)
    assert sample(model, tok, k=3, **settings) != a
    assert len({tuple(r) for r in a}) > len(PROMPTS)  # the k copies are sampled apart


def test_generate_noise_gives_generates_samples(policy):
    model, tok = policy
    settings = dict(max_new_tokens=8, temperature=0.9, top_k=50, top_p=0.95)
    # generate's own samples for the seed (k prefills each, the old path)
    torch.manual_seed(3)
    mine = sample(model, tok, k=3, **settings)
    torch.manual_seed(3)
    theirs = generate(model, tok, PROMPTS, SamplingSettings(**settings), num_samples=3,
                      batch_size=12, decoder="generate", prefill_once=False)
    same = sum(m == t.response_ids for m, t in zip(mine, theirs, strict=True))
    assert same >= len(mine) - 2  # float noise may flip a rare borderline draw


def test_a_generation_config_it_cannot_follow_falls_back_to_generate(policy):
    _, tok = policy
    llama = tiny_llama(len(tok))
    assert unsupported_reason(llama) is None
    llama.generation_config.repetition_penalty = 1.3
    assert "repetition_penalty" in unsupported_reason(llama)
    greedy = SamplingSettings(max_new_tokens=8, do_sample=False)
    assert ([r.response_ids for r in generate(llama, tok, PROMPTS, greedy)]
            == [r.response_ids for r in generate(llama, tok, PROMPTS, greedy,
                                                 decoder="generate")])


def test_exponential_noise_is_torchs_own_draw_for_the_seed():
    from rlhfx.sampling import _exponential_noise

    torch.manual_seed(11)
    theirs = torch.empty((48, 4999)).exponential_(1)
    after_theirs = torch.rand(3)
    torch.manual_seed(11)
    mine = _exponential_noise((48, 4999), torch.float32, torch.device("cpu"))
    assert mine.dtype == torch.float32 and mine.shape == (48, 4999)
    assert torch.equal(mine, theirs)
    assert torch.equal(torch.rand(3), after_theirs)  # the generator moved on as far


@pytest.mark.parametrize("vocab", [1000, 1024, 37])
def test_inverse_cdf_in_blocks_draws_what_the_whole_cumulative_sum_draws(vocab):
    from rlhfx.sampling import _inverse_cdf

    g = torch.Generator().manual_seed(vocab)
    # multiples of 2^-20 below 2^-10: every sum exact in float32, as in float64
    probs = torch.randint(0, 1024, (400, vocab), generator=g).float() * 2.0**-20
    probs[torch.rand((400, vocab), generator=g) < 0.5] = 0.0  # top-k / top-p cuts
    probs[:5, 300 % vocab:] = 0.0  # whole blocks at the end without mass
    probs[5, :] = 0.0
    probs[5, vocab - 1] = 2.0**-10  # all the mass on the last token
    probs[6, :] = 0.0
    probs[6, 0] = 2.0**-11  # ... or the first
    u = torch.rand((400, 1), dtype=torch.float64, generator=g)
    u[:20] = 1 - 2.0**-53  # the largest draw: never past the last token with mass
    u[20:30] = 0.0
    cdf = probs.double().cumsum(-1)
    expected = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1)
    got = _inverse_cdf(probs, u, block=64)
    assert bool((probs.gather(1, got[:, None]) > 0).all())
    assert torch.equal(got[20:], expected[20:])
    # at u = 1 - 2^-53 the whole sum's search runs past the last token with mass
    last = torch.tensor([int((row > 0).nonzero().max()) for row in probs[:20]])
    assert torch.equal(got[:20], last)


def test_under_bf16_autocast_decode_logits_are_the_full_forwards(policy, monkeypatch):
    """The fused GPT-Neo attention computes in float32: the loop keeps its cache in float32
    for it, so each step's logits are what the update's full forward computes for the same
    tokens (a bf16 cache rounds the keys' products and the probabilities: 0.16-0.29 off here)."""
    import copy

    from rlhfx import sampling

    model, tok = policy
    model = copy.deepcopy(model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # larger logits than the initial weights' near-zero ones
            p.add_(torch.randn_like(p) * 0.3)
    assert sampling._cache_dtype(model) == torch.float32
    assert sampling._cache_dtype(tiny_llama(len(tok))) is None
    ids = encode_prompts(tok, PROMPTS)

    def worst_gap() -> float:
        seen = []

        def watch(_, logits):
            seen.append(logits.clone())
            return logits

        gaps = []
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = sample_responses(model, tok, ids, 1, Decoding(
                max_new_tokens=16, do_sample=False, eos_ids=[], watch=watch))
            for i, (prompt, answer) in enumerate(zip(ids, out, strict=True)):
                full = model(torch.tensor([prompt + answer])).logits[0].float()
                steps = torch.stack([s[i] for s in seen[: len(answer)]])
                at = len(prompt) - 1
                gaps.append((full[at : at + len(answer)] - steps).abs().max().item())
        return max(gaps)

    assert worst_gap() <= 0.02
    monkeypatch.setattr(sampling, "_cache_dtype", lambda model: None)  # keys' own bf16
    assert worst_gap() > 0.05
