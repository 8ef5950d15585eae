"""The PPO update of one step, as TRL's classic `PPOTrainer.step` did it.

Rollout forward passes (policy log-probs and values, reference log-probs) without gradients,
per-token rewards with the KL penalty, GAE, then `ppo_epochs` passes over shuffled
mini-batches with the clipped losses. accelerate provides data parallelism over processes,
gradient accumulation and gradient clipping.

Several processes: each one trains on its own rollouts, and every process runs the same number
of mini-batches per epoch (DDP needs matching backward calls), so a process whose responses
were dropped fills its empty mini-batches with a zero-loss pass. When responses were dropped,
fewer mini-batches than `batch_size / mini_batch_size` may be run (never an optimiser step on
no data at all), and when every response of the step was dropped there is no update.
"""

from __future__ import annotations

import math
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rlhfx import distributed
from rlhfx.alignment.policy_update import adam

from . import formulas as ppo_math
from .config import PPOConfig
from .value_head import PolicyWithValueHead, pick_rows, selected_logits


@dataclass
class Rollouts:
    """Padded tensors of one process's kept rollouts, response region left-aligned."""

    input_ids: torch.Tensor  # [B, L] prompt + response, right padded
    attention_mask: torch.Tensor  # [B, L]
    positions: torch.Tensor  # [B, T] index in the shifted logits of each response token
    labels: torch.Tensor  # [B, T] response tokens
    mask: torch.Tensor  # [B, T] 1 for real response tokens
    query_lens: list[int]
    response_lens: list[int]

    def __len__(self) -> int:
        return len(self.query_lens)


def build_rollouts(
    queries: list[list[int]], responses: list[list[int]], pad_id: int, device: Any
) -> Rollouts:
    lengths = [len(q) + len(r) for q, r in zip(queries, responses, strict=True)]
    width = max(lengths)
    span = max(len(r) for r in responses)
    ids = torch.full((len(queries), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(queries), width), dtype=torch.long)
    labels = torch.full((len(queries), span), pad_id, dtype=torch.long)
    mask = torch.zeros((len(queries), span), dtype=torch.float32)
    positions = torch.zeros((len(queries), span), dtype=torch.long)
    for i, (q, r) in enumerate(zip(queries, responses, strict=True)):
        ids[i, : len(q) + len(r)] = torch.tensor(q + r)
        attn[i, : len(q) + len(r)] = 1
        labels[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1.0
        # logits at position p predict token p + 1: response token j sits at len(q) + j.
        positions[i] = (len(q) - 1 + torch.arange(span)).clamp(max=width - 2)
    return Rollouts(
        ids.to(device), attn.to(device), positions.to(device), labels.to(device),
        mask.to(device), [len(q) for q in queries], [len(r) for r in responses],
    )


def subset(r: Rollouts, rows: list[int]) -> Rollouts:
    """Rows of a batch, trimmed to their own longest sequence and response."""
    index = torch.tensor(rows, device=r.input_ids.device)
    width = max(r.query_lens[i] + r.response_lens[i] for i in rows)
    span = max(r.response_lens[i] for i in rows)
    return Rollouts(
        r.input_ids[index, :width], r.attention_mask[index, :width],
        r.positions[index, :span].clamp(max=width - 2), r.labels[index, :span],
        r.mask[index, :span], [r.query_lens[i] for i in rows], [r.response_lens[i] for i in rows],
    )


#: Pick each response token's row of a [B, L, ...] tensor: -> [B, T, ...].
response_slice = pick_rows


def reference_logits(reference: Any, batch: Rollouts) -> torch.Tensor:
    """The reference's float32 logits at the response positions only ([B, T, V])."""
    network = getattr(reference, "copy", None)
    if network is None:
        network = getattr(reference, "policy", None)
    if network is None or not hasattr(reference, "context"):
        return response_slice(reference.logits(batch.input_ids, batch.attention_mask),
                              batch.positions)
    with torch.no_grad(), reference.context():
        return selected_logits(network, batch.input_ids, batch.attention_mask,
                               batch.positions)[1]


def minibatch_rows(
    rng: np.random.Generator, lengths: list[int], parts: int, by_length: bool
) -> list[np.ndarray]:
    """One epoch's mini-batches of row indices, drawn from `rng` (seeded: the same on resume).

    by_length: rows sorted by length (ties in random order) and cut into consecutive
    mini-batches, whose order is then shuffled, so each mini-batch pads little (the idea of
    transformers' LengthGroupedSampler). Otherwise a plain shuffle, as TRL did.
    """
    order = rng.permutation(len(lengths))
    if not by_length or not lengths:
        return list(np.array_split(order, parts))
    order = order[np.argsort(np.asarray(lengths)[order], kind="stable")]
    split = np.array_split(order, parts)
    return [split[i] for i in rng.permutation(parts)]


@dataclass
class StepOutput:
    """What a step produced on this process; `loop` gathers and reports it."""

    seq: dict[str, list[float]]  # per-response sums (kl, neg_logprob, non_score, tokens)
    scores: list[float]  # after scaling / clipping
    train: dict[str, float]  # mean of the mini-batch stats
    skipped_minibatches: int
    epochs_run: int
    idle_minibatches: int  # zero-loss passes standing in for mini-batches this process lacked
    timings: dict[str, float]


class PPOTrainer:
    """Holds the model, reference, optimizer and KL controller across steps."""

    def __init__(self, config: PPOConfig, model: PolicyWithValueHead, pad_id: int, device: str,
                 sharded: bool = False):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        self.config = config
        self.pad_id = pad_id
        self.world = distributed.world_size()
        #: FSDP2 already shards the model and reduces its gradients: no DDP wrapper then.
        self.sharded = sharded
        # Mixed precision: the weights stay float32 and forward passes run under autocast in
        # `config.dtype` (our own context, so generation and the reference use it too).
        # float16 also needs loss scaling: accelerate's GradScaler, on CUDA only.
        self.compute_dtype = getattr(torch, config.dtype)
        # accelerate keeps one process-wide state, so an earlier stage's Trainer (SFT or RAFT
        # in bf16, same process) would leave its mixed precision on and wrap the policy's
        # forward in bf16 autocast while the reference ran in float32: KL not 0 at step 1.
        # Clear it (not the process group, PartialState) and say what we want.
        AcceleratorState._reset_state(reset_partial_state=False)
        self.accelerator = Accelerator(
            cpu=device == "cpu", gradient_accumulation_steps=config.gradient_accumulation_steps,
            mixed_precision="fp16" if config.dtype == "float16" and device != "cpu" else "no",
        )
        self.unwrapped = model
        self.reference: Any = None  # set by the algorithm: setup.reference(policy)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = adam(params, config.learning_rate, decoupled=False)
        self.kl_ctl: Any = (
            ppo_math.AdaptiveKLController(config.init_kl_coef, config.target, config.horizon)
            if config.adap_kl_ctrl
            else ppo_math.FixedKLController(config.init_kl_coef)
        )
        self.moments = ppo_math.RunningMoments() if config.use_score_scaling else None
        self.model: Any = None

    @property
    def device(self) -> Any:
        return self.accelerator.device

    def autocast(self) -> AbstractContextManager[Any]:
        """Forward passes in the compute dtype (a no-op for float32)."""
        if self.compute_dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.compute_dtype)

    def prepare(self) -> None:
        """Wrap model and optimizer (DDP under torchrun); call after loading a checkpoint.
        Sharded (fsdp), only the optimizer is wrapped (for gradient accumulation)."""
        if self.sharded:
            self.model = self.unwrapped
            self.optimizer = self.accelerator.prepare_optimizer(self.optimizer,
                                                                device_placement=False)
            return
        self.model, self.optimizer = self.accelerator.prepare(self.unwrapped, self.optimizer)

    def full_weights(self) -> AbstractContextManager[Any]:
        """Under fsdp, the policy, value head and reference copy gathered on every process for
        the rollout pass (whose number of forwards differs between processes; sharded, each
        forward would gather). Collective: every process enters it once per step."""
        from rlhfx.sharding import gathered_weights_of

        return gathered_weights_of(self.unwrapped.policy, self.unwrapped.v_head,
                                   getattr(self.reference, "copy", None))

    # ------------------------------------------------------------------ state for checkpoints
    def state(self) -> dict[str, Any]:
        return {
            "kl_ctl": self.kl_ctl.state_dict(),
            "moments": self.moments.state_dict() if self.moments else None,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        if self.moments is not None and state.get("moments"):
            self.moments.load_state_dict(state["moments"])

    # ------------------------------------------------------------------ the step
    def scale(self, scores: list[float], all_scores: list[float]) -> list[float]:
        c = self.config
        if self.moments is not None and all_scores:
            self.moments.update(all_scores)  # the same global batch on every process
        if self.moments is None and c.score_clip is None:
            return list(scores)
        tensor = torch.tensor(scores, dtype=torch.float32)
        return ppo_math.scale_scores(tensor, self.moments, c.use_score_norm, c.score_clip).tolist()

    @torch.no_grad()
    def rollout_pass(self, batch: Rollouts) -> dict[str, torch.Tensor]:
        """Old log-probs, values, reference log-probs and KL estimates, chunk by chunk.

        Chunks of `forward_batch_size` rows of similar length (less padding); the results go
        back to each row's place, so the chunking changes nothing but the cost.
        """
        c = self.config
        chunk = c.forward_batch_size
        was_training = self.unwrapped.training
        self.unwrapped.eval()
        width = batch.mask.shape[1]
        out = {k: torch.zeros((len(batch), width), device=batch.mask.device)
               for k in ("logprobs", "values", "ref", "kls")}
        lengths = [q + r for q, r in zip(batch.query_lens, batch.response_lens, strict=True)]
        order = sorted(range(len(batch)), key=lengths.__getitem__)
        try:
            for start in range(0, len(batch), chunk):
                rows = order[start : start + chunk]
                part = subset(batch, rows)
                with self.autocast():
                    logits, values = self.unwrapped(part.input_ids, part.attention_mask,
                                                    part.positions)
                    ref_logits = reference_logits(self.reference, part)
                logprobs = ppo_math.logprobs_from_logits(logits, part.labels)
                ref_logprobs = ppo_math.logprobs_from_logits(ref_logits, part.labels)
                if c.kl_penalty == "full":
                    kls = ppo_math.kl_penalty(
                        logits.log_softmax(-1), ref_logits.log_softmax(-1), "full"
                    )
                else:
                    kls = ppo_math.kl_penalty(logprobs, ref_logprobs, c.kl_penalty)
                index = torch.tensor(rows, device=batch.mask.device)
                span = part.mask.shape[1]
                for key, value in (("logprobs", logprobs), ("ref", ref_logprobs), ("kls", kls),
                                   ("values", values)):
                    out[key][index, :span] = (value * part.mask).to(out[key].dtype)
        finally:
            self.unwrapped.train(was_training)
        return out

    def step(
        self, queries: list[list[int]], responses: list[list[int]], scores: list[float],
        all_scores: list[float], max_kept: int, seed: int,
    ) -> StepOutput:
        """One PPO update on this process's rollouts.

        `all_scores` are the raw scores of every process (for score scaling) and `max_kept` the
        most rollouts any process kept; both are the same on every process.
        """
        c = self.config
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        scaled = self.scale(scores, all_scores)
        if max_kept == 0:  # every response of the step was dropped: nothing to learn from
            return StepOutput({}, scaled, {}, 0, 0, 0, timings)
        if not queries:
            with self.full_weights():  # the others gather for their rollout pass
                pass
            return self._optimise(None, {}, t0, timings, scaled, seed, max_kept)

        t = time.perf_counter()
        batch = build_rollouts(queries, responses, self.pad_id, self.device)
        with self.full_weights():
            old = self.rollout_pass(batch)
        timings["time/ppo/forward_pass"] = time.perf_counter() - t

        t = time.perf_counter()
        score_t = torch.tensor(scaled, dtype=torch.float32, device=self.device)
        rewards, non_score = ppo_math.compute_rewards(
            score_t, old["kls"], batch.mask, self.kl_ctl.value
        )
        values, advantages, returns = ppo_math.compute_advantages(
            old["values"], rewards, batch.mask, c.gamma, c.lam, c.whiten_rewards
        )
        timings["time/ppo/compute_rewards"] = time.perf_counter() - t
        seq = ppo_math.sequence_stats(old["logprobs"], old["kls"], non_score, batch.mask)
        data = {"batch": batch, "logprobs": old["logprobs"], "values": values,
                "advantages": advantages, "returns": returns}
        return self._optimise(data, seq, t0, timings, scaled, seed, max_kept)

    def minibatch_count(self, max_kept: int) -> int:
        """Mini-batches per epoch: batch / mini-batch, fewer when fewer rollouts were kept,
        rounded up to whole accumulation groups (so each group holds real data)."""
        gas = self.config.gradient_accumulation_steps
        wanted = min(self.config.minibatches_per_epoch, max_kept)
        return -(-wanted // gas) * gas

    def _optimise(
        self, data: dict[str, Any] | None, seq: dict[str, list[float]], t0: float,
        timings: dict[str, float], scaled: list[float], seed: int, max_kept: int,
    ) -> StepOutput:
        """ppo_epochs over shuffled mini-batches (grouped by length unless `group_by_length` is
        off); the same number of passes on every process."""
        c = self.config
        t = time.perf_counter()
        n_minibatches = self.minibatch_count(max_kept)
        rng = np.random.default_rng(seed)
        lengths = ([q + r for q, r in zip(data["batch"].query_lens, data["batch"].response_lens,
                                          strict=True)] if data else [])
        stats: list[dict[str, float]] = []
        skipped = idle = 0
        epochs_run = 0
        # With dropout disabled the update runs in eval mode, as the rollout pass did, so
        # nothing mode-dependent (attention dropout read from the config, say) separates the
        # new log-probs from the old: the first mini-batch's ratio is exactly 1.
        self.unwrapped.train(not c.disable_dropout)
        for _ in range(c.ppo_epochs):
            epochs_run += 1
            for rows in minibatch_rows(rng, lengths, n_minibatches, c.group_by_length):
                with self.accelerator.accumulate(self.model):
                    if data is None or len(rows) == 0:
                        self._idle_pass()
                        idle += 1
                        mb = None
                    else:
                        mb = self._minibatch(data, [int(i) for i in rows])
                    if mb is not None:
                        stats.append(mb.stats)
                        skipped += int(mb.skipped)
                    if c.max_grad_norm is not None and self.accelerator.sync_gradients:
                        self.accelerator.clip_grad_norm_(
                            [p for p in self.unwrapped.parameters() if p.requires_grad],
                            c.max_grad_norm,
                        )
                    self.optimizer.step()
                    self.optimizer.zero_grad()
            if c.early_stopping and self._should_stop(stats[-1] if stats else None):
                break
        timings["time/ppo/optimize_step"] = time.perf_counter() - t
        timings["time/ppo/total"] = time.perf_counter() - t0
        return StepOutput(
            seq=seq, scores=scaled, train=ppo_math.mean_of(stats), skipped_minibatches=skipped,
            epochs_run=epochs_run, idle_minibatches=idle, timings=timings,
        )

    def _minibatch(self, data: dict[str, Any], rows: list[int]) -> ppo_math.LossOutput:
        c = self.config
        part = subset(data["batch"], rows)
        span = part.mask.shape[1]
        index = torch.tensor(rows, device=part.mask.device)

        def pick(key: str) -> torch.Tensor:
            return data[key][index, :span]

        with self.autocast():
            logits, vpreds = self.model(part.input_ids, part.attention_mask, part.positions)
        logprobs = ppo_math.logprobs_from_logits(logits, part.labels)
        with torch.no_grad():
            entropy = ppo_math.entropy_from_logits(logits)
        out = ppo_math.ppo_losses(
            pick("logprobs"), pick("values"), logprobs, vpreds, part.mask, pick("advantages"),
            pick("returns"), c.cliprange, c.cliprange_value, c.vf_coef, c.ratio_threshold,
            entropy=entropy,
        )
        self.accelerator.backward(out.total)
        return out

    def _idle_pass(self) -> None:
        """A zero-loss forward/backward so DDP's gradient all-reduce still lines up."""
        ids = torch.full((1, 2), self.pad_id, dtype=torch.long, device=self.device)
        with self.autocast():
            logits, values = self.model(ids, torch.ones_like(ids))
        self.accelerator.backward((logits.sum() + values.sum()) * 0.0)

    def _should_stop(self, last: dict[str, float] | None) -> bool:
        """TRL's early stop: the last mini-batch's policy KL, averaged over processes."""
        value = last["policy/policykl"] if last else math.nan
        values = [v for v in distributed.gather_objects(value) if not math.isnan(v)]
        return bool(values) and sum(values) / len(values) > 1.5 * self.config.target_kl
