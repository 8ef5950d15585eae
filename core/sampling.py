"""The `hf` engine's decoder: a plain sampling loop over a causal LM's forward and KV cache.

`sample_responses` answers a batch of prompts k times each with the model's own forward,
without transformers' `generate` machinery:

- each prompt is pre-filled once, whole, logits for its last position only; prompts of very
  different lengths are pre-filled in separate groups (less padding), and their caches are
  laid side by side, left-padded, for decoding;
- the KV cache grows in place in a buffer sized for the whole answer (no copy of the cache
  at every step);
- bf16 weights are pre-packed for oneDNN once per call (`rlhfx.packed_linear`: the same
  products, faster); Llama-family models with bf16 weights decode through a step written out
  in fewer, larger operations (`rlhfx.fused_decode`), with C++ kernels for its attention and
  small operations on CPUs with AVX512-BF16 (`rlhfx.decode_kernels`: the same logits up to
  rounding, a step in about half the forward's time; elsewhere torch's, bit for bit);
- rows that ended (EOS or a stop string) leave the batch once they are an eighth of it, so
  the rows still writing decode (nearly) alone;
- the next token is chosen with `generate`'s arithmetic (temperature, then top-k, then top-p;
  greedy: argmax), and the random draw is made for every row at every step, finished or not,
  so a row's draws do not depend on when the others end. By default the draw is
  `generate`'s (`multinomial`, which for one draw is argmax(p / q) with q ~ Exp(1) for every
  vocabulary entry): the samples are `generate`'s own for the same seed, up to floating-point
  noise in the logits (other batch shapes, other padding) flipping a borderline draw.
  `Decoding.generate_noise = False` draws one uniform per row and step through the cumulative
  distribution instead: a draw as exact (up to float32 rounding), reproducible for a seed,
  other samples, and far less noise to make (48 rows x 49k tokens of Exp(1) per step took
  about a fifth of a short run on a loaded 2-core CPU when drawn as torch draws it;
  `_exponential_noise` draws the same numbers three times as fast).

What it returns are the tokens exactly as sampled: up to and including EOS or the token that
completed a stop string, nothing after (no padding).

`unsupported_reason` names what this loop does not do (a generation config asking for
repetition penalties and the like, encoder-decoder models); `generate` then falls back to
transformers' `generate`.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rlhfx.fused_decode import FusedDecoder, fused_decoder
from rlhfx.models import forward_arguments
from rlhfx.packed_linear import packed_linears

#: generation_config fields that make transformers' `generate` change the logits in ways this
#: loop does not: (field, value meaning "off").
_OTHER_PROCESSORS: tuple[tuple[str, Any], ...] = (
    ("repetition_penalty", 1.0), ("encoder_repetition_penalty", 1.0),
    ("no_repeat_ngram_size", 0), ("encoder_no_repeat_ngram_size", 0), ("bad_words_ids", None),
    ("min_length", 0), ("min_new_tokens", None), ("forced_bos_token_id", None),
    ("forced_eos_token_id", None), ("suppress_tokens", None), ("begin_suppress_tokens", None),
    ("sequence_bias", None), ("exponential_decay_length_penalty", None), ("min_p", None),
    ("typical_p", 1.0), ("epsilon_cutoff", 0.0), ("eta_cutoff", 0.0), ("top_h", None),
    ("renormalize_logits", False), ("guidance_scale", None), ("watermarking_config", None),
)


@dataclass
class Decoding:
    """How to pick tokens; the meaning of each field is `generate`'s."""

    max_new_tokens: int
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    eos_ids: Sequence[int] = ()
    stop_strings: Sequence[str] = ()
    #: Pre-fill prompts in groups of similar length when that saves padding.
    group_prefill: bool = True
    #: Draw the noise as `generate` does (Exp(1) for every row and vocabulary entry: the same
    #: samples as `generate` for the same seed). False: one uniform per row and step through
    #: the cumulative distribution, a draw from the same distribution (up to float32
    #: rounding), reproducible for a seed, but other samples than `generate`'s (and far less
    #: noise to draw).
    generate_noise: bool = True
    #: Decode Llama-family models with bf16 weights through `rlhfx.fused_decode` (the same
    #: arithmetic in fewer operations; with `rlhfx.decode_kernels`, the same up to rounding)
    #: instead of the model's forward.
    fused_step: bool = True
    stats: dict[str, Any] = field(default_factory=dict)  # filled in: groups, steps, rows per step
    #: Called as `watch(None, logits)` on each step's logits before a token is chosen, and
    #: returns the logits to choose from (a guard against a diverged policy's broken
    #: distributions, as a `generate` logits processor is called).
    watch: Any = None


def unsupported_reason(model: Any) -> str | None:
    """Why `sample_responses` cannot stand in for `model.generate`, or None when it can."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return "not a decoder-only model"
    gen = getattr(base, "generation_config", None)
    for name, off in _OTHER_PROCESSORS:
        value = getattr(gen, name, off) if gen is not None else off
        if value is not None and value != off and value != [] and value != {}:
            return f"its generation_config sets {name} = {value!r}"
    return None


def sample_responses(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    num_samples: int,
    decoding: Decoding,
) -> list[list[int]]:
    """`num_samples` responses to each prompt (row i * num_samples + j: prompt i, sample j),
    each a list of the token ids sampled. Call it under `torch.no_grad()` with `model` in eval
    mode; the random draws use torch's global generator (seed it with `torch.manual_seed`)."""
    k = max(1, num_samples)
    rows = len(prompt_ids) * k
    if not prompt_ids or decoding.max_new_tokens <= 0:
        return [[] for _ in range(rows)]
    lengths = [len(p) for p in prompt_ids]
    if min(lengths) == 0:
        raise ValueError("an empty prompt: nothing to continue from")
    width = max(lengths)
    accepts = forward_arguments(model)
    cache_arg = "cache" if "cache" in accepts else "past_key_values"

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    fused = fused_decoder(model, rows) if decoding.fused_step else None
    decoding.stats["fused_step"] = fused is not None
    decoding.stats["decode_kernels"] = fused is not None and fused.native
    # the fused step packs its own weights; the one pre-fill does not repay packing them all
    with packed_linears(model, rows) if fused is None else contextlib.nullcontext(0) as packed:
        decoding.stats["packed_layers"] = packed
        return _sample(model, tokenizer, prompt_ids, k, decoding, accepts, cache_arg, pad, width,
                       fused)


def _sample(
    model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], k: int,
    decoding: Decoding, accepts: set[str], cache_arg: str, pad: int, width: int,
    fused: FusedDecoder | None,
) -> list[list[int]]:
    import torch

    device = next(model.parameters()).device
    rows = len(prompt_ids) * k
    lengths = [len(p) for p in prompt_ids]
    started = time.perf_counter()
    logits, cache = _prefill(model, prompt_ids, width, accepts, cache_arg, decoding, pad)
    decoding.stats["prefill_s"] = time.perf_counter() - started
    if k > 1:
        cache.batch_repeat_interleave(k)
        logits = logits.repeat_interleave(k, dim=0)
    total = width + decoding.max_new_tokens
    _grow_in_place(cache, total, _cache_dtype(model))

    row_lengths = torch.tensor(lengths, device=device).repeat_interleave(k)
    # the attention mask of every row for every step, left padding then ones
    mask = (torch.arange(total, device=device)[None, :]
            >= (width - row_lengths)[:, None]).long()
    positions = row_lengths - 1  # position of each row's last token so far
    alive = torch.arange(rows, device=device)  # rows still writing, as indices of all rows
    alive_list = list(range(rows))
    out: list[list[int]] = [[] for _ in range(rows)]
    context = [list(prompt_ids[r // k]) for r in range(rows)] if decoding.stop_strings else []
    eos = set(decoding.eos_ids)
    stops = _stop_finder(tokenizer, tuple(decoding.stop_strings)) if context else None
    ended: set[int] = set()  # rows that finished but are still in the batch
    steps, active_rows = 0, 0
    for step in range(decoding.max_new_tokens):
        steps += 1
        active_rows += len(alive_list)
        if decoding.watch is not None:
            logits = decoding.watch(None, logits)
        tokens = _choose(logits, decoding, rows, alive)
        token_list = tokens.tolist()
        finished, checked = [], []
        for i, (r, t) in enumerate(zip(alive_list, token_list, strict=True)):
            if r in ended:
                continue
            out[r].append(t)
            if t in eos:
                finished.append(i)
            elif context:
                context[r].append(t)
                checked.append(i)
        if checked and stops is not None:
            tails = [context[alive_list[i]] for i in checked]
            finished += [i for i, hit in zip(checked, stops.completed(tails), strict=True) if hit]
        ended.update(alive_list[i] for i in finished)
        if step == decoding.max_new_tokens - 1 or len(ended) == len(alive_list):
            break
        # finished rows leave the batch once they are an eighth of it: each removal copies
        # every layer's cache, which cost more than decoding a few rows for nothing
        if ended and len(ended) * 8 >= len(alive_list):
            keep_list = [i for i, r in enumerate(alive_list) if r not in ended]
            keep = torch.tensor(keep_list, device=device)
            alive, tokens, positions, mask = alive[keep], tokens[keep], positions[keep], mask[keep]
            alive_list = [alive_list[i] for i in keep_list]
            cache.batch_select_indices(keep)
            ended.clear()
        positions = positions + 1
        if fused is not None:
            logits = fused.step(tokens, positions, mask[:, : width + step + 1], cache)
        else:
            inputs: dict[str, Any] = {
                "input_ids": tokens[:, None],
                "attention_mask": mask[:, : width + step + 1],
                cache_arg: cache,
                "use_cache": True,
            }
            if "position_ids" in accepts:
                inputs["position_ids"] = positions[:, None]
            logits = model(**inputs).logits[:, -1].float()
    decoding.stats.update(steps=steps, row_steps=active_rows)
    return out


# ------------------------------------------------------------------------------ pre-fill


def _prefill(
    model: Any, prompt_ids: Sequence[Sequence[int]], width: int, accepts: set[str],
    cache_arg: str, decoding: Decoding, pad: int,
) -> tuple[Any, Any]:
    """Logits of each prompt's last position [prompts, vocab] and the KV cache of every prompt
    token, left-padded to `width`, one row per prompt."""
    import torch

    everyone = list(range(len(prompt_ids)))
    groups = _length_groups([len(p) for p in prompt_ids]) if decoding.group_prefill else None
    decoding.stats["prefill_groups"] = 1
    if groups is None:
        return _prefill_batch(model, [prompt_ids[i] for i in everyone], accepts, cache_arg, pad)
    parts = [_prefill_batch(model, [prompt_ids[i] for i in members], accepts, cache_arg, pad)
             for members in groups]
    if not all(_plain_layers(cache) for _, cache in parts):  # cannot be laid side by side
        return _prefill_batch(model, [prompt_ids[i] for i in everyone], accepts, cache_arg, pad)
    decoding.stats["prefill_groups"] = len(groups)
    order = torch.tensor([i for members in groups for i in members])
    back = torch.empty_like(order)
    back[order] = torch.arange(len(order))
    merged = parts[0][1]
    for n, layer in enumerate(merged.layers):
        for name in ("keys", "values"):
            pieces = []
            for _, cache in parts:
                t = getattr(cache.layers[n], name)
                pieces.append(torch.nn.functional.pad(t, (0, 0, width - t.shape[-2], 0)))
            setattr(layer, name, torch.cat(pieces)[back.to(pieces[0].device)])
    logits = torch.cat([part[0] for part in parts])
    return logits[back.to(logits.device)], merged


def _prefill_batch(
    model: Any, prompt_ids: Sequence[Sequence[int]], accepts: set[str], cache_arg: str, pad: int,
) -> tuple[Any, Any]:
    """One forward pass over `prompt_ids`, left-padded to the longest: the last position's
    logits [prompts, vocab] (float32) and the cache."""
    import torch
    from transformers import DynamicCache

    device = next(model.parameters()).device
    w = max(len(p) for p in prompt_ids)
    ids = torch.tensor([[pad] * (w - len(p)) + list(p) for p in prompt_ids], device=device)
    mask = torch.tensor([[0] * (w - len(p)) + [1] * len(p) for p in prompt_ids], device=device)
    cache = DynamicCache(config=_config(model))
    inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, cache_arg: cache,
                              "use_cache": True}
    if "position_ids" in accepts:  # as generate derives them: left padding does not count
        inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    if "logits_to_keep" in accepts:
        inputs["logits_to_keep"] = 1
    return model(**inputs).logits[:, -1].float(), cache


def _length_groups(lengths: list[int], overhead: int = 16) -> list[list[int]] | None:
    """Prompts (indices) split into groups of similar length, so that the tokens run through
    the model (each group padded to its longest prompt) plus `overhead` tokens' worth per
    extra forward pass are fewest; None when one group is best."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sizes = [lengths[i] for i in order]
    n = len(sizes)
    # best[j]: least cost of the first j prompts (sorted); cut[j]: where its last group starts
    best = [0] + [0] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        best[j], cut[j] = min(
            (best[i] + (j - i) * sizes[j - 1] + overhead, i) for i in range(j)
        )
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    groups.reverse()
    return groups if len(groups) > 1 else None


def _plain_layers(cache: Any) -> bool:
    """Whether every layer of `cache` holds the whole sequence as `keys`/`values` tensors
    (no sliding window, no quantisation), so caches can be padded and joined."""
    from transformers.cache_utils import DynamicLayer

    layers = list(getattr(cache, "layers", None) or [])
    return bool(layers) and all(
        type(layer) is DynamicLayer and layer.keys is not None and layer.keys.dim() == 4
        for layer in layers
    )


# ------------------------------------------------------------------------------ the KV cache


def _cache_dtype(model: Any) -> Any:
    """The dtype `model`'s attention asks its decoding cache to be kept in
    (`decode_cache_dtype`, declared by attention that computes in another precision than the
    layers around it; one answer when its layers agree), or None: the dtype the keys and
    values come in."""
    asked = {getattr(m, "decode_cache_dtype", None) for m in model.modules()
             if hasattr(m, "decode_cache_dtype")}
    return asked.pop() if len(asked) == 1 else None


def _grow_in_place(cache: Any, capacity: int, dtype: Any = None) -> None:
    """Make each plain layer of `cache` keep its keys and values in a buffer of `capacity`
    positions (in `dtype`, unless None), written in place at every step, instead of a new
    concatenated copy per step. Other kinds of layers (sliding windows...) are left as they
    are."""
    from transformers.cache_utils import DynamicLayer

    for i, layer in enumerate(getattr(cache, "layers", [])):
        if type(layer) is DynamicLayer and layer.keys is not None and layer.keys.dim() == 4:
            cache.layers[i] = _buffered_layer_class().of(layer, capacity, dtype)


@functools.cache
def _buffered_layer_class() -> Any:
    from transformers.cache_utils import DynamicLayer

    class BufferedLayer(DynamicLayer):
        """A DynamicLayer whose keys and values are views of preallocated buffers."""

        key_buffer: Any
        value_buffer: Any
        length: int

        @classmethod
        def of(cls, layer: Any, capacity: int, dtype: Any = None) -> Any:
            new = cls()
            keys, values = layer.keys, layer.values
            new.device, new.is_initialized = keys.device, True
            b, h, n, _ = keys.shape
            dtype = dtype or keys.dtype
            new.key_buffer = keys.new_empty((b, h, capacity, keys.shape[-1]), dtype=dtype)
            new.value_buffer = values.new_empty((b, values.shape[1], capacity, values.shape[-1]),
                                                dtype=dtype)
            new.key_buffer[:, :, :n] = keys
            new.value_buffer[:, :, :n] = values
            new.length = n
            new._views()
            return new

        def _views(self) -> None:
            self.keys = self.key_buffer[:, :, : self.length]
            self.values = self.value_buffer[:, :, : self.length]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
            n, q = self.length, key_states.shape[-2]
            if n + q > self.key_buffer.shape[2]:  # more than planned for: grow as usual
                self.key_buffer = self.key_buffer.new_empty(
                    (*self.key_buffer.shape[:2], n + q, self.key_buffer.shape[-1]))
                self.value_buffer = self.value_buffer.new_empty(
                    (*self.value_buffer.shape[:2], n + q, self.value_buffer.shape[-1]))
                self.key_buffer[:, :, :n] = self.keys
                self.value_buffer[:, :, :n] = self.values
            self.key_buffer[:, :, n : n + q] = key_states
            self.value_buffer[:, :, n : n + q] = value_states
            self.length = n + q
            self._views()
            return self.keys, self.values

        def batch_select_indices(self, indices: Any) -> None:
            self.key_buffer = self.key_buffer[indices]
            self.value_buffer = self.value_buffer[indices]
            self._views()

        def batch_repeat_interleave(self, repeats: int) -> None:
            self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
            self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
            self._views()

    return BufferedLayer


# ------------------------------------------------------------------------------ token choice


def _choose(logits: Any, decoding: Decoding, rows: int, alive: Any) -> Any:
    """The next token of each live row, from its float32 logits [live rows, vocab].

    Sampling draws noise for all `rows` (finished or not, as `generate` does) and keeps the
    live rows' share, so the draws of a row do not depend on which rows finished.
    """
    import torch

    if not decoding.do_sample:
        return logits.argmax(dim=-1)
    scores = logits
    if decoding.temperature != 1.0:
        scores = scores / decoding.temperature
    if decoding.top_k:
        k = min(decoding.top_k, scores.shape[-1])
        threshold = torch.topk(scores, k).values[..., -1:]
        scores = scores.masked_fill(scores < threshold, float("-inf"))
    if decoding.top_p < 1.0:
        ascending, order = torch.sort(scores, descending=False)
        below = ascending.softmax(dim=-1).cumsum(dim=-1) <= (1 - decoding.top_p)
        below[..., -1:] = False  # the likeliest token always stays
        scores = scores.masked_fill(below.scatter(1, order, below), float("-inf"))
    probs = scores.softmax(dim=-1)
    live = probs.shape[0] != rows
    if decoding.generate_noise:
        noise = _exponential_noise((rows, probs.shape[-1]), probs.dtype, probs.device)
        return (probs / (noise[alive] if live else noise)).argmax(dim=-1)
    u = torch.rand((rows, 1), dtype=torch.float64, device=probs.device)
    return _inverse_cdf(probs, u[alive] if live else u)


def _inverse_cdf(probs: Any, u: Any, block: int = 256) -> Any:
    """For each row of `probs` [rows, vocab] (unnormalised, >= 0) the first token whose
    cumulative probability passes u times the row's total (u [rows, 1] in [0, 1), float64):
    tokens of probability 0 are never chosen.

    In two steps, blocks of `block` tokens and then the tokens of the chosen block: the
    cumulative sum of a whole float64 copy of the vocabulary, one number after another, was
    a twentieth of a bf16 sampling run. A block's total is summed in float32 (a float64 copy
    of the vocabulary alone cost more than the rest of the draw), so a block's odds may be
    off by float32 rounding, as each token's probability already is."""
    import torch

    rows, vocab = probs.shape
    whole = vocab // block * block
    sums = [probs[:, :whole].reshape(rows, -1, block).sum(-1)]
    if whole < vocab:
        sums.append(probs[:, whole:].sum(-1, keepdim=True))
    edges = torch.cat(sums, dim=1).double().cumsum(dim=-1)
    target = u * edges[:, -1:]
    chosen = torch.searchsorted(edges, target, right=True).clamp(max=edges.shape[1] - 1)
    before = torch.where(chosen > 0, edges.gather(1, (chosen - 1).clamp(min=0)), 0.0)
    index = chosen * block + torch.arange(block, device=probs.device)
    inside = probs.gather(1, index.clamp(max=vocab - 1)).double()
    inside = inside.masked_fill(index >= vocab, 0.0).cumsum(dim=-1)
    # rounding may put the remainder at the block's total: the last token that has any
    rest = torch.minimum(target - before, inside[:, -1:] * (1 - 2**-50))
    offset = torch.searchsorted(inside, rest, right=True).clamp(max=block - 1)
    return (chosen * block + offset).squeeze(1).clamp(max=vocab - 1)


def _exponential_noise(shape: tuple[int, int], dtype: Any, device: Any) -> Any:
    """Exp(1) noise, the very numbers `exponential_` draws for the generator's state.

    On a CPU torch draws each number in turn, a 53-bit uniform u and then -log1p(-u) in
    double precision, one scalar logarithm at a time (about 19 ns a number: 15% of a float32
    sampling run). The same uniforms drawn as one float64 tensor and the logarithm taken over
    the whole tensor give the same numbers about three times as fast; a probe checks that this
    torch draws that way (else, and off the CPU, `exponential_` itself)."""
    import torch

    if device.type == "cpu" and dtype == torch.float32 and _uniforms_match():
        u = torch.empty(shape, dtype=torch.float64).uniform_()
        return u.neg_().log1p_().neg_().to(dtype)
    return torch.empty(shape, dtype=dtype, device=device).exponential_(1)


@functools.cache
def _uniforms_match() -> bool:
    import torch

    seed = 20261205
    drawn = torch.empty(4096).exponential_(1, generator=torch.Generator().manual_seed(seed))
    u = torch.empty(4096, dtype=torch.float64).uniform_(
        generator=torch.Generator().manual_seed(seed))
    return torch.equal(drawn, u.neg_().log1p_().neg_().float())


# ------------------------------------------------------------------------------ stop strings


# text whose tokens, on any tokenizer, include pieces of words, punctuation and several bytes
_ADDITIVITY_PROBE = "Unbelievably, photosynthesis' quixotic résumé costs 12,345 yen。\n\nUser: ok"


@functools.lru_cache(maxsize=8)
def _stop_finder(tokenizer: Any, stops: tuple[str, ...]) -> _StopFinder:
    """One finder per tokenizer and stop strings, kept across calls: its probe and what it
    learnt about each token hold for every call (a run samples with one tokenizer)."""
    return _StopFinder(tokenizer, stops)


class _StopFinder:
    """Which rows' last token completed (or ran past the end of) a stop string: one appears in
    the text of the row's last few tokens and not in the text before the last.

    A new occurrence ends in the text the last token added, so it is either inside that text
    or that text begins with the occurrence's end. Where a probe shows that a token adds the
    same text wherever it stands (true of byte-level and SentencePiece tokenizers, apart from
    a character's bytes split over tokens), only rows whose last token can do that are
    decoded: decoding every live row's tail at every step cost about a sixth of a tiny
    policy's update."""

    def __init__(self, tokenizer: Any, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        # a token holds at least one byte, so a stop string's bytes span at most that many
        # tokens; one more: a tail's first token may decode differently out of context
        self.window = max((len(s.encode("utf-8")) for s in stops), default=0) + 1
        self.decode = _batch_decoder(tokenizer)
        self.ends = {s[j:] for s in self.stops for j in range(1, len(s))}
        self.anchor = tokenizer.encode("a", add_special_tokens=False)[:1]
        self.anchor_text = self.decode([self.anchor])[0] if self.anchor else ""
        self.can_end: dict[int, bool] = {}  # token id -> may end a stop; filled as ids appear
        self.filters = bool(self.anchor) and self._texts_add_up(tokenizer)

    def completed(self, rows: Sequence[list[int]]) -> list[bool]:
        result = [False] * len(rows)
        if self.filters:
            self._learn({ids[-1] for ids in rows if ids and ids[-1] not in self.can_end})
            candidates = [n for n, ids in enumerate(rows) if ids and self.can_end[ids[-1]]]
        else:
            candidates = [n for n, ids in enumerate(rows) if ids]
        if not candidates:
            return result
        tails = [rows[n][-self.window:] for n in candidates]
        texts = self.decode(tails)
        hits = [(n, tail, text) for n, tail, text in zip(candidates, tails, texts, strict=True)
                if any(s in text for s in self.stops)]
        if hits:
            before = self.decode([tail[:-1] for _, tail, _ in hits])
            for (n, _, text), earlier in zip(hits, before, strict=True):
                result[n] = any(text.count(s) > earlier.count(s) for s in self.stops)
        return result

    def _added(self, tokens: Sequence[int]) -> list[str | None]:
        """The text each token adds after a plain one; None where that text is not plain
        (part of a character's bytes, nothing, or a change to the text before)."""
        added: list[str | None] = []
        for text in self.decode([[*self.anchor, t] for t in tokens]):
            tail = text[len(self.anchor_text):]
            plain = text.startswith(self.anchor_text) and tail and "\ufffd" not in tail
            added.append(tail if plain else None)
        return added

    def _texts_add_up(self, tokenizer: Any) -> bool:
        ids = tokenizer.encode(_ADDITIVITY_PROBE, add_special_tokens=False)
        texts = self.decode([ids[: n + 1] for n in range(len(ids))])
        for n, tail in enumerate(self._added(ids)):
            if (n and tail is not None and "\ufffd" not in texts[n - 1] + texts[n]
                    and texts[n] != texts[n - 1] + tail):
                return False
        return True

    def _learn(self, tokens: set[int]) -> None:
        order = sorted(tokens)
        for token, tail in zip(order, self._added(order), strict=True):
            self.can_end[token] = tail is None or any(s in tail for s in self.stops) or any(
                tail.startswith(end) for end in self.ends)


def _batch_decoder(tokenizer: Any) -> Any:
    """A function decoding lists of ids as `tokenizer.decode(ids, skip_special_tokens=False)`
    does, one list at a time, or in one call to a fast tokenizer's backend where a probe shows
    the two give the same text (transformers' wrapper costs about 20 us a call: about a third
    of a tiny policy's sampling time, when every row was decoded through it at every step)."""

    def one_by_one(rows: Sequence[list[int]]) -> list[str]:
        return [tokenizer.decode(ids, skip_special_tokens=False) for ids in rows]

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "decode_batch"):
        return one_by_one
    # the wrapper's clean-up of spaces (" ." -> ".") must not be on, or the texts would differ
    probe = tokenizer.encode("x . y , z n't 's", add_special_tokens=False)
    raw = backend.decode(probe, skip_special_tokens=False)
    if " ." not in raw or raw != tokenizer.decode(probe, skip_special_tokens=False):
        return one_by_one

    def batched(rows: Sequence[list[int]]) -> list[str]:
        if len(rows) < 32:  # a batch call hands rows to a thread pool: about 1 ms on a busy CPU
            return [backend.decode(list(ids), skip_special_tokens=False) for ids in rows]
        return list(backend.decode_batch([list(ids) for ids in rows], skip_special_tokens=False))

    return batched


# ------------------------------------------------------------------------------ model details


def _config(model: Any) -> Any:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.config


