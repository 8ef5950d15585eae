"""The update every critic-free policy-gradient algorithm shares (GRPO, RLOO, REINFORCE++).

An algorithm built on `CriticFreeAlgorithm` says only how its advantages are made and where
its KL goes; this module does the rest once: which samples are trained on, the rollout and
reference log-probs, the clipped surrogate over mini-batch epochs in step on every process,
the optimiser, checkpoint state and the metrics.

Which samples count:
- Group statistics (means, std, leave-one-out baselines, equal-reward groups) use every
  process's samples with a reward (`Batch.usable`): a discarded sample, or one whose reward
  was dropped as non-finite, is treated as missing, and its group's statistics come from the
  others. A group left with fewer than 2 such samples has no baseline: it is skipped
  (`small_groups`) by group-based algorithms.
- A sample is trained on when it is usable, its tokens are its own (token_status is not
  "prefix": a cleaner removed text before the response, whose tokens cannot be cut away), it
  has at least one response token, and its group was not dropped. Every other sample notes
  why in `extra["dropped"]` (shown in the samples file).

Imported at every CLI start (through the plugins): torch loads inside the methods only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlhfx.alignment.batch import Batch
from rlhfx.alignment.critic_free_config import CriticFreeConfig
from rlhfx.alignment.weights import WithOptimizerState
from rlhfx.components import AlignmentAlgorithm, Sample
from rlhfx.errors import UserError

if TYPE_CHECKING:
    import torch

    from rlhfx.alignment.setup import AlignmentSetup

PREFIX = "cleaner removed text before the response"
NO_TOKENS = "no response tokens"
NO_REWARD = "no reward (discarded or non-finite)"
SMALL_GROUP = "fewer than 2 scored samples in its group"
EQUAL_GROUP = "every reward of its group is equal"


@dataclass
class AdvantageInputs:
    """What an algorithm's `advantages` may use. `rows` are this process's trained samples in
    tensor order; `scored` every process's usable samples (in (prompt, sample) order)."""

    rows: list[Sample]
    scored: list[Sample]
    mask: torch.Tensor  # [N, T] of the rows
    #: rollout log-probs of the rows and reference log-probs ([N, T]); None when not needed
    #: (see `needs_rollout_kl`) or without a reference (beta = 0)
    logp: torch.Tensor | None
    ref_logp: torch.Tensor | None
    beta: float


class CriticFreeAlgorithm(WithOptimizerState, AlignmentAlgorithm):
    """Base of GRPO, RLOO and REINFORCE++: no value model, a clipped ratio, k samples."""

    Config = CriticFreeConfig
    config: CriticFreeConfig
    #: whether groups with fewer than 2 scored samples are skipped (they have no baseline)
    needs_groups: bool = True
    #: True: each response is one action (RLOO): the ratio is of whole-response
    #: probabilities and the loss a mean over responses (`loss_type` does not apply).
    #: False: per-token ratios aggregated by `loss_type`.
    sequence_level: bool = False

    # ------------------------------------------------------------------ what makes it itself
    def kl_in_loss(self) -> bool:
        """True: beta * k3 KL per token is added to the loss (GRPO). False: the algorithm
        folds the KL into its rewards itself (then `needs_rollout_kl`)."""
        return True

    def needs_rollout_kl(self) -> bool:
        """The advantages need the rollout and reference log-probs (KL in the reward)."""
        return not self.kl_in_loss() and self.config.beta > 0

    def advantages(self, inputs: AdvantageInputs) -> torch.Tensor:
        """(N,) per response or (N, T) per token, for `inputs.rows`, the same on every
        process for the same sample."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the contract
    def prompts_per_iteration(self) -> int:
        return self.config.batch_size

    def samples_per_prompt(self) -> int:
        return self.config.k

    def setup(self, run: AlignmentSetup) -> None:
        from rlhfx.alignment.policy_update import adam

        c = self.config
        self.run = run
        responses = c.batch_size * c.k
        if c.mini_batch_size is not None and c.mini_batch_size > responses:
            raise UserError(f"{run.where}.mini_batch_size: {c.mini_batch_size} is more than the "
                            f"{responses} responses of an iteration (batch_size x k)")
        self.policy = run.load_policy()
        tok = run.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        # beta = 0: no reference at all (no copy of the policy in memory, no forward pass)
        self.reference = run.reference(self.policy) if c.beta > 0 else None
        params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = adam(params, c.learning_rate, c.weight_decay)

    def minibatches(self) -> int:
        c = self.config
        if c.mini_batch_size is None:
            return 1
        return -(-(c.batch_size * c.k) // c.mini_batch_size)

    def update(self, batch: Batch) -> Mapping[str, Any]:
        import torch

        from rlhfx.alignment import policy_update as pu
        from rlhfx.alignment.weights import held_mb
        from rlhfx.policy_gradient import aggregate, clipped_surrogate, k3_kl
        from rlhfx.sharding import gathered_weights_of

        c, run = self.config, self.run
        # The update runs without dropout (eval mode), as the samples were drawn, so the
        # first pass's ratio is exactly 1.
        self.policy.train(False)
        rows, counts = self.select(batch)
        scored = [s for s in batch.samples if Batch.usable(s)]
        n_mb = self.minibatches()
        rollout_pass = c.epochs > 1 or n_mb > 1 or self.needs_rollout_kl()
        tokens = pu.TokenBatch.from_samples(rows, self.pad_id, run.device) if rows else None
        autocast = run.autocast
        logp_old = ref_logp = None
        # Sharded, the no-gradient passes run on gathered weights: a process's forwards then
        # need no partner (every process enters, rows or not).
        with torch.no_grad(), gathered_weights_of(self.policy,
                                                  getattr(self.reference, "copy", None)):
            if tokens is not None:
                if rollout_pass:
                    logp_old = pu.response_logprobs(self.policy, tokens, autocast(),
                                                    c.temperature)
                if self.reference is not None:
                    ref_logp = pu.reference_logprobs(self.reference, tokens, autocast(),
                                                     c.temperature)
        mask = tokens.mask if tokens is not None else torch.zeros(0, 1)
        adv = self.advantages(AdvantageInputs(rows, scored, mask, logp_old, ref_logp, c.beta))
        adv = adv.to(mask.device)
        for s, a in zip(rows, adv.tolist(), strict=True):
            s.trained = True
            if adv.dim() == 1:
                s.extra["advantage"] = round(float(a), 6)

        first_logp = torch.zeros_like(mask)
        stats = {"clip": 0.0, "clip_low": 0.0, "clip_high": 0.0, "ratio": 0.0, "tokens": 0.0,
                 "entropy": 0.0, "entropy_tokens": 0.0}
        seen_first: set[int] = set()
        add_kl_loss = self.kl_in_loss() and ref_logp is not None

        def weight(index: list[int]) -> float:
            if c.loss_type == "token" and not self.sequence_level:
                return float(mask[index].sum()) if index else 0.0
            return float(len(index))

        def loss_of(index: list[int], total: float) -> torch.Tensor:
            assert tokens is not None
            part = tokens.rows(index)
            span = part.response_width
            first = not seen_first.issuperset(index)
            got = pu.response_logprobs(self.policy, part, autocast(), c.temperature,
                                       with_entropy=first)
            logp, entropy = got if first else (got, None)
            at = torch.as_tensor(index, device=mask.device)
            old = logp_old[at, :span] if logp_old is not None else logp.detach()
            a = adv[at] if adv.dim() == 1 else adv[at, :span]
            if self.sequence_level:
                # one action per response: the ratio of the responses' probabilities
                seq, seq_old = ((x * part.mask).sum(1, keepdim=True) for x in (logp, old))
                out = clipped_surrogate(seq, seq_old, a, torch.ones_like(seq), c.clip_low,
                                        c.clip_high)
                per_response = out.loss[:, 0]
                if add_kl_loss:
                    assert ref_logp is not None
                    kl_tokens = k3_kl(logp, ref_logp[at, :span]) * part.mask
                    per_response = per_response + c.beta * kl_tokens.sum(1)
                loss = per_response.sum() / total
                real = float(len(index))
            else:
                out = clipped_surrogate(logp, old, a, part.mask, c.clip_low, c.clip_high)
                per_token = out.loss
                if add_kl_loss:
                    assert ref_logp is not None
                    per_token = per_token + c.beta * k3_kl(logp, ref_logp[at, :span])
                loss = aggregate(per_token, part.mask, c.loss_type,
                                 max_length=c.max_new_tokens, denominator=total)
                real = float(part.mask.sum())
            stats["clip"] += out.clip_fraction * real
            stats["clip_low"] += out.clip_low_fraction * real
            stats["clip_high"] += out.clip_high_fraction * real
            stats["ratio"] += out.ratio_mean * real
            stats["tokens"] += real
            if first:
                seen_first.update(index)
                first_logp[at, :span] = logp.detach()
                assert entropy is not None
                stats["entropy"] += float((entropy * part.mask).sum())
                stats["entropy_tokens"] += float(part.mask.sum())
            return loss

        generator = torch.Generator().manual_seed(batch.seed)
        plan = pu.minibatch_plan(len(rows), n_mb, c.epochs, generator)
        report = pu.run_epochs(self.policy, self.optimizer, plan, weight, loss_of,
                               c.max_grad_norm)

        # ---- metrics over every process
        kl_sum = 0.0
        if ref_logp is not None and rows:
            rollout = logp_old if logp_old is not None else first_logp
            kl_sum = float(((rollout - ref_logp) * mask).sum())
        a_flat = adv if adv.dim() == 1 else adv[mask > 0]
        local = {
            **stats, "loss": report.loss_sum, "rows": float(len(rows)), "kl": kl_sum,
            "adv_sum": float(a_flat.sum()), "adv_sq": float((a_flat * a_flat).sum()),
            "adv_n": float(a_flat.numel()), "idle": float(report.idle_minibatches),
        }
        total = {k: sum(part[k] for part in run.gather(local)) for k in local}
        out = self.metrics(total, report, counts)
        out["memory/params_optimizer_mb"] = held_mb(self.policy, self.optimizer, run.gather)
        return out

    # ------------------------------------------------------------------ pieces
    def select(self, batch: Batch) -> tuple[list[Sample], dict[str, int]]:
        """This process's samples to train on, and counts of what was left out (all
        processes' groups: every process computes the same)."""
        from rlhfx.policy_gradient import equal_reward_groups

        c = self.config
        counts = {"equal_reward_groups": 0, "small_groups": 0, "groups": 0}
        dropped_groups: set[int] = set()
        if self.needs_groups or getattr(c, "drop_equal_reward_groups", False):
            import torch

            for group in batch.groups():
                counts["groups"] += 1
                scored = [s for s in group if Batch.usable(s)]
                if len(scored) < 2:
                    counts["small_groups"] += 1
                    if self.needs_groups:
                        dropped_groups.add(group[0].prompt_id)
                        for s in group:
                            s.extra.setdefault("dropped", SMALL_GROUP)
                    continue
                rewards = torch.tensor([float(s.reward or 0.0) for s in scored],
                                       dtype=torch.float64)
                if equal_reward_groups(rewards, torch.zeros(len(scored))).n_equal:
                    counts["equal_reward_groups"] += 1
                    if getattr(c, "drop_equal_reward_groups", False):
                        dropped_groups.add(group[0].prompt_id)
                        for s in group:
                            s.extra.setdefault("dropped", EQUAL_GROUP)
        rows = []
        for s in batch.mine:
            if not Batch.usable(s):
                s.extra.setdefault("dropped", NO_REWARD)
            elif s.token_status == "prefix":
                s.extra["dropped"] = PREFIX
            elif not s.response_ids:
                s.extra["dropped"] = NO_TOKENS
            elif s.prompt_id not in dropped_groups:
                rows.append(s)
        counts["prefix_dropped"] = sum(
            1 for s in batch.samples if s.token_status == "prefix" and Batch.usable(s))
        return rows, counts

    def metrics(self, t: dict[str, float], report: Any, counts: dict[str, int]
                ) -> dict[str, Any]:
        rows = t["rows"]
        steps = report.optimizer_steps
        adv_mean = t["adv_sum"] / t["adv_n"] if t["adv_n"] else math.nan
        adv_var = t["adv_sq"] / t["adv_n"] - adv_mean * adv_mean if t["adv_n"] else math.nan
        out: dict[str, Any] = {
            "train_loss": t["loss"] / steps if steps else math.nan,
            "learning_rate": self.optimizer.param_groups[0]["lr"],
            "clip_fraction": t["clip"] / t["tokens"] if t["tokens"] else math.nan,
            "clip_low_fraction": t["clip_low"] / t["tokens"] if t["tokens"] else math.nan,
            "clip_high_fraction": t["clip_high"] / t["tokens"] if t["tokens"] else math.nan,
            "ratio_mean": t["ratio"] / t["tokens"] if t["tokens"] else math.nan,
            "entropy": t["entropy"] / t["entropy_tokens"] if t["entropy_tokens"] else math.nan,
            "advantage_mean": adv_mean,
            "advantage_std": math.sqrt(max(adv_var, 0.0)) if t["adv_n"] else math.nan,
            "optimizer_steps": steps,
            "idle_minibatches": int(t["idle"]),
            **counts,
        }
        if self.reference is not None:
            out["kl_mean"] = t["kl"] / rows if rows else math.nan
        return out


def sequence_rewards(samples: list[Sample]) -> tuple[Any, Any]:
    """(rewards, group ids) tensors of usable samples, float64 for exact group statistics."""
    import torch

    rewards = torch.tensor([float(s.reward) for s in samples if s.reward is not None],
                           dtype=torch.float64)
    groups = torch.tensor([s.prompt_id for s in samples if s.reward is not None])
    return rewards, groups


def group_values(scored: list[Sample], fn: Any) -> Any:
    """`fn(rewards, groups)` over the usable samples of groups with at least 2 of them (the
    others get 0: they have no baseline and are not trained on); float64, in `scored` order."""
    import torch

    rewards, groups = sequence_rewards(scored)
    values = rewards.new_zeros(rewards.shape)
    if rewards.numel():
        _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
        keep = counts[inverse] >= 2
        if bool(keep.any()):
            values[keep] = fn(rewards[keep], groups[keep])
    return values


def per_row(values: Any, scored: list[Sample], rows: list[Sample]) -> Any:
    """Pick the values computed over `scored` for `rows` (matched by prompt and sample)."""
    import torch

    at = {(s.prompt_id, s.sample): i for i, s in enumerate(scored)}
    index = torch.tensor([at[(s.prompt_id, s.sample)] for s in rows], dtype=torch.long)
    return values[index].to(torch.float32) if len(rows) else torch.zeros(0)
