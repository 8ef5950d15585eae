"""Batched generation shared by every alignment algorithm.

Left padding, the KV cache, and the k samples of a prompt in one `generate` call
(`num_return_sequences`); generation stops at EOS or at a stop string. The only Python loop is
over batches, never over samples, so the time goes to the model.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Rollout:
    prompt_id: int  # index into the `prompts` given to `generate`
    prompt: str
    prompt_ids: list[int]
    response_ids: list[int]  # up to and including EOS when the model produced one
    text: str  # decoded response, special tokens removed
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SamplingSettings:
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0  # 0 = off (the classic PPO setting: the KL estimate assumes plain sampling)
    top_p: float = 1.0
    do_sample: bool = True
    #: When set, each generate call draws its max_new_tokens uniformly from [low, high]
    #: (LMFlow's output_min_length / output_max_length), instead of using `max_new_tokens`.
    length_range: tuple[int, int] | None = None

    def draw_max_new_tokens(self, rng: random.Random) -> int:
        if self.length_range is None:
            return self.max_new_tokens
        low, high = self.length_range
        return rng.randint(low, high) if high > low else low


def adds_bos(tokenizer: Any) -> bool:
    """True when `tokenizer(text)` starts with BOS by default (LLaMA-style tokenizers), as in
    TRL's SFTTrainer. Checked once per tokenizer and cached on it."""
    cached = getattr(tokenizer, "_rlhfx_adds_bos", None)
    if cached is not None:
        return bool(cached)
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("x")["input_ids"] if bos is not None else []
    result = bool(ids) and ids[0] == bos
    # A tokenizer that refuses new attributes is simply asked again next time.
    with contextlib.suppress(AttributeError, TypeError):
        tokenizer._rlhfx_adds_bos = result
    return result


def encode_prompts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of prompts as the policy saw them in SFT: BOS first when the tokenizer adds one
    by default and the text does not already start with it, and no other special tokens
    (a response is appended to these ids, so an EOS a template might add must not be here)."""
    if not texts:
        return []
    ids = [list(row) for row in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    if adds_bos(tokenizer):
        bos = tokenizer.bos_token_id
        ids = [row if row[:1] == [bos] else [bos, *row] for row in ids]
    return ids


def _rows_per_call(batch_size: int, num_samples: int) -> int:
    """Prompts per generate call so that prompts x samples stays near `batch_size` rows."""
    return max(1, batch_size // max(1, num_samples))


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    sampling: SamplingSettings,
    num_samples: int = 1,
    batch_size: int = 8,
    stop_strings: Sequence[str] = (),
    progress: Any = None,
    description: str = "generating",
    rng: random.Random | None = None,
) -> list[Rollout]:
    """`num_samples` responses for each prompt, ordered prompt by prompt.

    `rng` draws the per-call response length when `sampling.length_range` is set.
    """
    import torch

    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    per_call = _rows_per_call(batch_size, num_samples)
    task = progress.add_task(description, total=len(prompts)) if progress is not None else None
    out: list[Rollout] = []
    rng = rng or random.Random(0)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), per_call):
            chunk = list(prompts[start : start + per_call])
            enc = tokenizer.pad(
                {"input_ids": encode_prompts(tokenizer, chunk)}, padding=True, return_tensors="pt"
            )
            enc = {k: v.to(device) for k, v in enc.items()}
            kwargs: dict[str, Any] = dict(
                max_new_tokens=sampling.draw_max_new_tokens(rng),
                do_sample=sampling.do_sample,
                num_return_sequences=num_samples,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                use_cache=True,
            )
            if sampling.do_sample:
                kwargs.update(temperature=sampling.temperature, top_k=sampling.top_k,
                              top_p=sampling.top_p)
            if stop_strings:
                kwargs.update(stop_strings=list(stop_strings), tokenizer=tokenizer)
            with torch.no_grad():
                generated = model.generate(**enc, **kwargs)
            width = enc["input_ids"].shape[1]
            responses = generated[:, width:].tolist()
            prompt_rows = enc["input_ids"].tolist()
            masks = enc["attention_mask"].tolist()
            prompt_ids = [
                [t for t, m in zip(row, mask, strict=True) if m]
                for row, mask in zip(prompt_rows, masks, strict=True)
            ]
            eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
            cut = [_cut_at_eos(r, eos, pad) for r in responses]
            texts = tokenizer.batch_decode(cut, skip_special_tokens=True)
            for row, (ids, text) in enumerate(zip(cut, texts, strict=True)):
                p = row // num_samples
                out.append(
                    Rollout(
                        prompt_id=start + p,
                        prompt=chunk[p],
                        prompt_ids=prompt_ids[p],
                        response_ids=ids,
                        text=text,
                    )
                )
            if task is not None:
                progress.advance(task, len(chunk))
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()
    return out


def _cut_at_eos(ids: list[int], eos: int | None, pad: int | None) -> list[int]:
    """Keep tokens up to and including the first EOS; drop the padding after it."""
    if eos is not None and eos in ids:
        return ids[: ids.index(eos) + 1]
    if pad is not None and pad != eos:
        while ids and ids[-1] == pad:
            ids = ids[:-1]
    return ids
