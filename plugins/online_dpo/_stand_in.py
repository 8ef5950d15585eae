"""Temporary stand-in for rlhfx.alignment.policy_update (same names); removed once merged."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from rlhfx import distributed
from rlhfx.alignment.reference import position_ids_for


@dataclass
class TokenBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    positions: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def from_samples(cls, samples: Any, pad_id: int, device: Any) -> TokenBatch:
        width = max(len(s.prompt_ids) + len(s.response_ids) for s in samples)
        span = max(len(s.response_ids) for s in samples)
        n = len(samples)
        ids = torch.full((n, width), pad_id, dtype=torch.long)
        attn = torch.zeros((n, width), dtype=torch.long)
        labels = torch.full((n, span), pad_id, dtype=torch.long)
        mask = torch.zeros((n, span))
        positions = torch.zeros((n, span), dtype=torch.long)
        for i, s in enumerate(samples):
            q, r = list(s.prompt_ids), list(s.response_ids)
            ids[i, : len(q) + len(r)] = torch.tensor(q + r)
            attn[i, : len(q) + len(r)] = 1
            labels[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1.0
            positions[i] = (len(q) - 1 + torch.arange(span)).clamp(max=width - 1)
        return cls(ids.to(device), attn.to(device), positions.to(device), labels.to(device),
                   mask.to(device))


def _gather(logits: torch.Tensor, batch: TokenBatch, temperature: float) -> torch.Tensor:
    rows = torch.arange(logits.shape[0], device=logits.device)[:, None]
    picked = logits[rows, batch.positions].float() / temperature
    logp = torch.log_softmax(picked, dim=-1)
    return logp.gather(-1, batch.labels.unsqueeze(-1)).squeeze(-1) * batch.mask


def response_logprobs(model: Any, batch: TokenBatch, autocast: Any = None,
                      temperature: float = 1.0) -> torch.Tensor:
    with autocast if autocast is not None else contextlib.nullcontext():
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    position_ids=position_ids_for(batch.attention_mask), use_cache=False)
    return _gather(out.logits, batch, temperature)


def reference_logprobs(reference: Any, batch: TokenBatch) -> torch.Tensor:
    return _gather(reference.logits(batch.input_ids, batch.attention_mask), batch, 1.0)


def sync_gradients(model: Any) -> None:
    if distributed.world_size() == 1:
        return
    import torch.distributed as dist

    for p in model.parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= distributed.world_size()
