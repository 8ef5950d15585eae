"""Batched generation shared by every alignment algorithm.

Left padding, the KV cache, and the k samples of a prompt in one `generate` call
(`num_return_sequences`); generation stops at EOS or at a stop string. The only Python loop is
over batches, never over samples, so the time goes to the model.
"""

from __future__ import annotations

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
) -> list[Rollout]:
    """`num_samples` responses for each prompt, ordered prompt by prompt."""
    import torch

    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    per_call = _rows_per_call(batch_size, num_samples)
    task = progress.add_task(description, total=len(prompts)) if progress is not None else None
    out: list[Rollout] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), per_call):
            chunk = list(prompts[start : start + per_call])
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items()}
            kwargs: dict[str, Any] = dict(
                max_new_tokens=sampling.max_new_tokens,
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
            for row, response in enumerate(responses):
                p = row // num_samples
                prompt_ids = [t for t, m in zip(prompt_rows[p], masks[p], strict=True) if m]
                ids = _cut_at_eos(response, tokenizer.eos_token_id, tokenizer.pad_token_id)
                out.append(
                    Rollout(
                        prompt_id=start + p,
                        prompt=chunk[p],
                        prompt_ids=prompt_ids,
                        response_ids=ids,
                        text=tokenizer.decode(ids, skip_special_tokens=True),
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
