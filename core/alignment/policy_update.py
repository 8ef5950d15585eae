"""Token-level update chores shared by the policy-gradient algorithms (GRPO, RLOO, REINFORCE++,
online DPO): sampled tokens as padded tensors, log-probs of the response tokens only,
gradient averaging over processes, and mini-batch epochs that keep every process in step.

Data parallelism is done by hand: every process trains on its own samples, then
`sync_gradients` averages the gradients before each optimiser step, so all processes hold the
same weights. Each process runs the same number of optimiser steps (a process without data in
a mini-batch contributes zero gradients), and a loss is divided by the global count of what
it averages, so one process or eight give the same update. Under fsdp the sharded model
averages its gradients itself (reduce-scatter in backward), and a process without data runs a
zero-loss forward and backward instead, because the others' collectives wait for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from rlhfx import distributed
from rlhfx.alignment import nonfinite
from rlhfx.alignment.reference import ReferenceModel, position_ids_for
from rlhfx.components import Sample
from rlhfx.models import accepts_logits_to_keep


@dataclass
class TokenBatch:
    """Prompts and sampled responses as tensors.

    Layout: each prompt is left-padded to a common width P and each response right-padded to
    T, so every response token j of every row sits at column P + j. The response region is one
    block, and a model predicts all of it from the last T + 1 positions (`logits_to_keep`).
    """

    input_ids: torch.Tensor  # [B, P + T]
    attention_mask: torch.Tensor  # [B, P + T]
    labels: torch.Tensor  # [B, T] response tokens (pad beyond each response)
    mask: torch.Tensor  # [B, T] float, 1 on real response tokens
    prompt_width: int  # P

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def response_width(self) -> int:
        return int(self.labels.shape[1])

    @classmethod
    def from_samples(cls, samples: Sequence[Sample], pad_id: int, device: Any) -> TokenBatch:
        """Every sample's `prompt_ids` + `response_ids`; nothing is dropped here (the caller
        leaves out what it must not train on, e.g. token_status "prefix")."""
        if not samples:
            raise ValueError("TokenBatch.from_samples: no samples")
        prompt_width = max(len(s.prompt_ids) for s in samples)
        span = max(1, max(len(s.response_ids) for s in samples))
        rows = len(samples)
        ids = torch.full((rows, prompt_width + span), pad_id, dtype=torch.long)
        attn = torch.zeros((rows, prompt_width + span), dtype=torch.long)
        mask = torch.zeros((rows, span), dtype=torch.float32)
        for i, s in enumerate(samples):
            p, r = len(s.prompt_ids), len(s.response_ids)
            if p:
                ids[i, prompt_width - p : prompt_width] = torch.tensor(s.prompt_ids)
                attn[i, prompt_width - p : prompt_width] = 1
            if r:
                ids[i, prompt_width : prompt_width + r] = torch.tensor(s.response_ids)
                attn[i, prompt_width : prompt_width + r] = 1
                mask[i, :r] = torch.tensor(s.model_token_mask()[:r], dtype=torch.float32)
        labels = ids[:, prompt_width:].clone()
        return cls(ids.to(device), attn.to(device), labels.to(device), mask.to(device),
                   prompt_width)

    def rows(self, index: Sequence[int]) -> TokenBatch:
        """Some rows, trimmed to their own widest prompt and response."""
        at = torch.as_tensor(list(index), dtype=torch.long, device=self.input_ids.device)
        attn = self.attention_mask[at]
        mask = self.mask[at]
        prompt_real = attn[:, : self.prompt_width].sum(dim=1)
        start = self.prompt_width - int(prompt_real.max()) if len(at) else 0
        # the response length from the attention mask: `mask` has zeros inside a response
        # where an environment wrote tokens
        response_real = attn[:, self.prompt_width:].sum(dim=1)
        span = max(1, int(response_real.max())) if len(at) else 1
        end = self.prompt_width + span
        return TokenBatch(self.input_ids[at, start:end], attn[:, start:end],
                          self.labels[at, :span], mask[:, :span], self.prompt_width - start)


@dataclass
class ResponseForward:
    """One forward pass over a token batch's responses, [B, T] each, 0 off the mask."""

    logp: torch.Tensor  # log-prob of each sampled token
    entropy: torch.Tensor | None = None  # of each position's distribution (no gradient)
    values: torch.Tensor | None = None  # the critic's value of each position
    logprobs: torch.Tensor | None = None  # [B, T, V] whole log-distributions (exact KL)


def response_forward(
    model: Any, batch: TokenBatch, autocast: AbstractContextManager[Any] | None = None,
    temperature: float = 1.0, *, entropy: bool = False, critic: Any = None,
    full: bool = False,
) -> ResponseForward:
    """Log-probs of the sampled response tokens under `model`, the logits divided by the
    sampling temperature (as the samples were drawn; TRL's GRPOTrainer does the same).

    Only the response's logits are made when the model can trim them (`logits_to_keep`),
    else they are sliced off at once. With `critic` (hidden states [B, T, H] -> [B, T]), also
    each response position's value, from the same pass. `mask` 0 positions (padding, and
    tokens an environment wrote) get 0 in every output, so nothing downstream trains on them.
    """
    span = batch.response_width
    kwargs: dict[str, Any] = dict(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask,
        position_ids=position_ids_for(batch.attention_mask), use_cache=False,
    )
    if critic is not None:
        kwargs["output_hidden_states"] = True
    if accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = span + 1
    with autocast if autocast is not None else nullcontext():
        out = model(**kwargs)
        # position p predicts token p + 1: response column P + j comes from position P + j - 1
        logits = out.logits[:, -(span + 1) : -1, :].float()
        values = None
        if critic is not None:
            values = critic(out.hidden_states[-1][:, -(span + 1) : -1, :]).float() * batch.mask
    if temperature != 1.0:
        logits = logits / temperature
    # log softmax at the label only: gather minus logsumexp (no [B, T, V] log-prob tensor)
    picked = logits.gather(-1, batch.labels.unsqueeze(-1)).squeeze(-1)
    normaliser = torch.logsumexp(logits, dim=-1)
    result = ResponseForward((picked - normaliser) * batch.mask, values=values)
    if entropy or full:
        with torch.no_grad():  # the log-softmax from the normaliser above: one pass less
            every = logits.detach() - normaliser.detach().unsqueeze(-1)
            if entropy:
                result.entropy = -(every.exp() * every).sum(-1) * batch.mask
            if full:
                result.logprobs = every
    return result


def response_logprobs(
    model: Any, batch: TokenBatch, autocast: AbstractContextManager[Any] | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Log-probs [B, T] of the sampled response tokens under `model` (0 off the mask)."""
    return response_forward(model, batch, autocast, temperature).logp


def reference_forward(
    reference: ReferenceModel, batch: TokenBatch,
    autocast: AbstractContextManager[Any] | None = None, temperature: float = 1.0,
    full: bool = False,
) -> ResponseForward:
    """`response_forward` under the reference policy, without gradients."""
    network = reference.policy if reference.copy is None else reference.copy
    with torch.no_grad(), reference.context():
        return response_forward(network, batch, autocast, temperature, full=full)


def reference_logprobs(
    reference: ReferenceModel, batch: TokenBatch,
    autocast: AbstractContextManager[Any] | None = None, temperature: float = 1.0,
) -> torch.Tensor:
    """`response_logprobs` under the reference policy, without gradients."""
    return reference_forward(reference, batch, autocast, temperature).logp


# ------------------------------------------------------------------------------ optimizer


def adam(params: Sequence[torch.nn.Parameter], lr: float, weight_decay: float = 0.0,
         decoupled: bool = True) -> torch.optim.Optimizer:
    """AdamW (Adam with `decoupled=False`), with torch's fused kernel where the parameters'
    device has one: one kernel over every tensor instead of a loop of small ops per tensor
    (measured on the CPU for a 140k-parameter policy: 0.5 ms a step against 3.5-4 ms).
    The same update up to float rounding."""
    params = list(params)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                                 for p in params)
    if fused:
        try:
            return cls(params, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, ValueError):  # a device or dtype without the kernel
            pass
    return cls(params, lr=lr, weight_decay=weight_decay)


def disable_dropout(model: Any) -> None:
    """Every dropout of `model` off (LoRA's too): an update then sees the policy the samples
    came from, and the first pass's probability ratio is exactly 1."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


# ------------------------------------------------------------------------------ processes


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes, in place (returns the tensor); the identity with one process."""
    if distributed.world_size() > 1:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def zero_loss(model: Any, critic: Any = None) -> torch.Tensor:
    """A loss of 0 through every weight of a causal LM (one token in), and of its `critic`:
    what an idle process runs under fsdp so that its forward and backward collectives meet
    the others'."""
    device = next(model.parameters()).device
    out = model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=device),
                use_cache=False, output_hidden_states=critic is not None)
    loss = out.logits.float().sum() * 0.0
    if critic is not None:
        loss = loss + critic(out.hidden_states[-1]).float().sum() * 0.0
    return loss


def sync_gradients(model: Any) -> None:
    """Average every trainable parameter's gradient over processes (a missing gradient counts
    as zero), in one flat all-reduce. No-op with one process."""
    world = distributed.world_size()
    if world <= 1:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return
    flat = torch.cat([
        (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params
    ])
    all_reduce_sum(flat)
    flat /= world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


# ------------------------------------------------------------------------------ epochs


def minibatch_plan(
    n_rows: int, n_minibatches: int, epochs: int, generator: torch.Generator,
    lengths: Sequence[int] | None = None,
) -> list[list[list[int]]]:
    """For each epoch, this process's rows split into `n_minibatches` shuffled parts (some may
    be empty); the count is the same on every process.

    With `lengths`, rows are sorted by length (ties in shuffled order) and cut into
    consecutive parts whose order is then shuffled, so each mini-batch pads little (the idea
    of transformers' LengthGroupedSampler)."""
    plan = []
    for _ in range(epochs):
        order = torch.randperm(n_rows, generator=generator).tolist()
        if lengths is not None:
            order.sort(key=lambda i: lengths[i])  # stable: ties keep the shuffled order
        size, extra = divmod(n_rows, n_minibatches)
        parts, start = [], 0
        for m in range(n_minibatches):
            end = start + size + (1 if m < extra else 0)
            parts.append(order[start:end])
            start = end
        if lengths is not None:
            parts = [parts[i] for i in torch.randperm(n_minibatches, generator=generator)]
        plan.append(parts)
    return plan


@dataclass
class StepReport:
    """What the epochs did on this process (sums; combine over processes to report)."""

    optimizer_steps: int = 0
    empty_minibatches: int = 0  # skipped on every process: no data anywhere
    idle_minibatches: int = 0  # this process had none, others had some: zero gradients
    loss_sum: float = 0.0  # sum of the global mini-batch losses (this process's share)
    epochs: int = 0  # epochs run (fewer than planned after an early stop)


def run_epochs(
    model: Any,
    optimizer: Any,
    plan: list[list[list[int]]],
    weight: Callable[[list[int]], float],
    loss_of: Callable[[list[int], float], torch.Tensor],
    max_grad_norm: float | None = None,
    *,
    accumulate: int = 1,
    idle_loss: Callable[[], torch.Tensor] | None = None,
    stop_after_epoch: Callable[[], bool] | None = None,
) -> StepReport:
    """Optimise over `plan` (from `minibatch_plan`) with the same steps on every process.

    `weight(rows)` is what a mini-batch's loss averages over on this process (sequences or
    tokens); the counts of all processes are summed once up front. `loss_of(rows, total)` is
    the loss of this process's rows divided by `total`, the global count, so that the sum over
    processes is the mini-batch's loss; gradients are summed accordingly (the mean all-reduce
    times the number of processes). A mini-batch with nothing on any process is skipped
    everywhere: never an optimiser step on no data.

    `accumulate` consecutive mini-batches make one optimiser step (their losses averaged, one
    backward each). `idle_loss` is the zero loss an idle process runs under fsdp (default:
    `zero_loss(model)`). `stop_after_epoch()`, called on every process after each epoch,
    ends the epochs early when it says so (it may be collective).
    """
    from rlhfx.sharding import holds_shards

    world = distributed.world_size()
    sharded = holds_shards(model)
    counts = torch.tensor([[weight(rows) for rows in epoch] for epoch in plan],
                          dtype=torch.float64)
    totals = all_reduce_sum(counts)
    report = StepReport()
    params = [p for p in model.parameters() if p.requires_grad]
    for e, epoch in enumerate(plan):
        report.epochs += 1
        for first in range(0, len(epoch), accumulate):
            group = [m for m in range(first, min(first + accumulate, len(epoch)))
                     if float(totals[e, m]) > 0]
            report.empty_minibatches += min(accumulate, len(epoch) - first) - len(group)
            if not group:
                continue
            optimizer.zero_grad(set_to_none=True)
            step_loss = None  # what this step's mini-batches added up to (None: all idle)
            for m in group:
                rows = epoch[m]
                if rows and weight(rows) > 0:
                    loss = loss_of(rows, float(totals[e, m])) / len(group)
                    # sync_gradients averages; the loss is already a global share: scale back
                    (loss * world).backward()
                    report.loss_sum += float(loss.detach())
                    step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
                else:
                    report.idle_minibatches += 1
                    if sharded:
                        (idle_loss() if idle_loss is not None else zero_loss(model)).backward()
            if optimizer_step(model, optimizer, params, max_grad_norm, sharded, step_loss):
                report.optimizer_steps += 1
        if stop_after_epoch is not None and e + 1 < len(plan) and stop_after_epoch():
            break
    optimizer.zero_grad(set_to_none=True)
    return report


def optimizer_step(model: Any, optimizer: Any, params: list[torch.nn.Parameter],
                   max_grad_norm: float | None, sharded: bool,
                   loss: torch.Tensor | None = None) -> bool:
    """The one place an update's optimizer steps: gradients averaged over processes (unless
    fsdp did it in backward), missing ones made zero, clipped, checked for non-finite values
    (`nonfinite`: stop the run, or skip this step), then the step. True when it stepped."""
    if not sharded:
        sync_gradients(model)
    if distributed.world_size() <= 1:
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
    if max_grad_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    else:
        norm = nonfinite.grad_norm(params)
    if not nonfinite.step_allowed(loss, norm):
        return False
    optimizer.step()
    return True
