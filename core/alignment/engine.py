"""The policy-gradient engine every on-policy algorithm runs on (PPO, GRPO, RLOO, REINFORCE++).

One iteration, in `PolicyGradientAlgorithm.update`:
1. `select`: this process's samples to train on (the rest note why in `extra["dropped"]`);
2. `make_experience`, once: the token batch and its model mask, rollout and reference
   log-probs (the rollout's from the update's own forward when one mini-batch follows:
   `carries_forward`), the critic's values (when there is one), token rewards (the score on
   the last model token, the KL penalty on every model token when the KL is in the reward),
   and advantages and returns from the named estimator (`rlhfx.policy_gradient.ESTIMATORS`);
3. epochs of mini-batches through `loss` and `policy_update.run_epochs` (the one place an
   optimizer steps), in step on every process;
4. `metrics`, summed over every process.

A subclass says what makes it itself: `estimator` (or `advantages`), `kl_in_loss`,
`sequence_level`, `needs_groups`, `update_settings`, and for a critic, `critic` and
`value_loss`. Every quantity honours the token batch's mask: a response token an environment
wrote (`Sample.action_mask` 0) gets no log-prob, loss, KL, entropy, value or advantage.

Imported at every CLI start (through the plugins): torch loads inside the methods only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rlhfx.alignment.batch import Batch
from rlhfx.alignment.weights import WithOptimizerState
from rlhfx.components import AlignmentAlgorithm, ConfigT, Sample

if TYPE_CHECKING:
    import torch

    from rlhfx.alignment.policy_update import ResponseForward, TokenBatch
    from rlhfx.alignment.setup import AlignmentSetup
    from rlhfx.policy_gradient import Advantages, EstimatorInputs

PREFIX = "cleaner removed text before the response"
NO_TOKENS = "no response tokens"
NO_REWARD = "no reward (discarded or non-finite)"
SMALL_GROUP = "fewer than 2 scored samples in its group"
EQUAL_GROUP = "every reward of its group is equal"


@dataclass
class UpdateSettings:
    """How the epochs run, in the engine's terms (each algorithm maps its own options)."""

    epochs: int
    minibatches: int
    clip_low: float
    clip_high: float
    #: how per-token losses become one number (`rlhfx.policy_gradient.aggregate`)
    loss_type: str = "sequence"
    max_new_tokens: int | None = None
    max_grad_norm: float | None = None
    temperature: float = 1.0
    gamma: float = 1.0
    lam: float = 1.0
    #: rows per forward pass of the experience (None: all at once)
    forward_rows: int | None = None
    #: mini-batches of rows of similar length (less padding)
    group_by_length: bool = False
    #: mini-batches per optimizer step
    accumulate: int = 1
    #: the update's dropout mode; False runs it in eval mode, as the samples were drawn
    train_mode: bool = False
    #: a mini-batch whose mean probability ratio is above this is skipped (its loss zeroed)
    ratio_threshold: float | None = None
    #: entropy of every mini-batch's forward (else of each row's first only: the metric)
    entropy_always: bool = False


@dataclass
class MinibatchLoss:
    """One mini-batch's forward and losses, for an algorithm's own statistics."""

    at: torch.Tensor  # the rows
    mask: torch.Tensor
    logp: torch.Tensor
    old_logp: torch.Tensor
    advantages: torch.Tensor
    forward: ResponseForward
    policy_loss: torch.Tensor  # this process's share, before any skip
    value_loss: torch.Tensor | None
    skipped: bool


@dataclass
class Experience:
    """One iteration's record, made once before the epochs. [N, T] tensors over the rows'
    response tokens, 0 off `mask`."""

    rows: list[Sample]
    tokens: TokenBatch | None
    mask: torch.Tensor
    scores: torch.Tensor  # (N,) each row's score, as the rewards use it
    #: rollout log-probs; None when the update is on-policy in one pass (the first
    #: mini-batch forward gives them)
    old_logp: torch.Tensor | None
    ref_logp: torch.Tensor | None
    values: torch.Tensor | None  # the critic's, at sampling time
    kl: torch.Tensor | None  # per-token KL estimate of the rollout against the reference
    token_rewards: torch.Tensor
    advantages: torch.Tensor  # (N,) per response or [N, T] per token
    returns: torch.Tensor
    timings: dict[str, float] = field(default_factory=dict)


class PolicyGradientAlgorithm(WithOptimizerState, AlignmentAlgorithm[ConfigT]):
    """Base of the on-policy algorithms: experience once, then clipped-ratio epochs."""

    #: every log-prob, KL, value and loss term follows `Sample.action_mask`, so episodes'
    #: environment tokens are never trained on
    trains_episodes = True
    #: the advantage estimator's name in `rlhfx.policy_gradient.ESTIMATORS`
    estimator: str = ""
    #: groups with fewer than 2 scored samples are skipped (they have no baseline)
    needs_groups: bool = True
    #: True: each response is one action: the ratio is of whole-response probabilities and
    #: the loss a mean over responses. False: per-token ratios aggregated by `loss_type`.
    sequence_level: bool = False
    #: drop groups whose rewards all tie (they still count in `equal_reward_groups`)
    drop_equal_groups: bool = False
    #: the per-token KL estimator of the KL in the reward (`KL_ESTIMATORS`, or "full")
    kl_estimator: str = "kl"
    #: set in `setup`: the reference model (None: no KL at all) and the critic, a module
    #: from the policy's last hidden states [B, T, H] to values [B, T] (None: no critic)
    reference: Any = None
    critic: Any = None
    run: AlignmentSetup
    #: the current update's metric sums (this process; `totals`: every process's), and each
    #: row's log-probs at its first mini-batch (the rollout's, when no pass made them)
    sums: dict[str, float]
    totals: dict[str, float]
    first_logp: torch.Tensor
    seen_first: set[int]
    #: the rollout pass's forward with gradients, kept for the update's only mini-batch
    #: (`carries_forward`)
    carried: ResponseForward | None = None

    # ------------------------------------------------------------------ what makes it itself
    def update_settings(self) -> UpdateSettings:
        raise NotImplementedError

    def kl_in_loss(self) -> bool:
        """True: beta * k3 KL per token is added to the loss (GRPO). False: the KL goes into
        the token rewards, `-kl_coef() * KL` on every model token (classic PPO, RLOO,
        REINFORCE++)."""
        return False

    def kl_coef(self) -> float:
        """The KL coefficient, in the loss or in the reward."""
        raise NotImplementedError

    def needs_rollout_logp(self) -> bool:
        """The experience needs the rollout log-probs before the epochs (the KL in the reward
        or a critic); otherwise only when the policy moves within the iteration."""
        s = self.update_settings()
        return (s.epochs > 1 or s.minibatches > 1 or self.critic is not None
                or (not self.kl_in_loss() and self.reference is not None))

    def carries_forward(self, rows: int, chunk: int) -> bool:
        """Whether the rollout log-probs come from the update's own forward pass, run with
        gradients before the advantages and kept for the loss. With one epoch of one
        mini-batch, no critic and no dropout the policy has not moved when the loss's forward
        would run, so a second pass over the same rows would give the same numbers: the KL in
        the reward (RLOO, REINFORCE++) then costs one policy forward, not two."""
        from rlhfx.sharding import holds_shards

        s = self.update_settings()
        return (s.epochs == 1 and s.minibatches == 1 and s.accumulate == 1
                and not s.train_mode and self.critic is None and chunk >= rows
                and not holds_shards(self.policy))

    def advantages(self, inputs: EstimatorInputs) -> Advantages:
        """(advantages, returns) of the rows; default: the named `estimator`."""
        from rlhfx.policy_gradient import ESTIMATORS

        return ESTIMATORS[self.estimator](inputs)

    def scores(self, rows: list[Sample]) -> torch.Tensor:
        """Each row's score (N,); default its reward."""
        import torch

        return torch.tensor([float(s.reward or 0.0) for s in rows], dtype=torch.float32)

    def value_loss(self, exp: Experience, at: torch.Tensor, values: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
        """Per-token critic loss [n, T] of a mini-batch (only with a critic)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the update
    def update(self, batch: Batch) -> Mapping[str, Any]:
        import torch

        from rlhfx.alignment import policy_update as pu
        from rlhfx.alignment.weights import held_mb

        self.policy.train(False)
        if self.critic is not None:
            self.critic.train(False)
        rows, counts = self.select(batch)
        s = self.update_settings()  # after `select`: the mini-batch count may follow it
        self.carried = None
        exp = self.make_experience(rows, batch)
        for sample, a in zip(rows, exp.advantages.tolist(), strict=True):
            sample.trained = True
            if exp.advantages.dim() == 1:
                sample.extra["advantage"] = round(float(a), 6)
        self.start_epochs(exp)
        lengths = None
        if s.group_by_length and exp.tokens is not None:
            lengths = exp.tokens.attention_mask.sum(1).tolist()
        generator = torch.Generator().manual_seed(batch.seed)
        plan = pu.minibatch_plan(len(rows), s.minibatches, s.epochs, generator, lengths)

        def weight(index: list[int]) -> float:
            if s.loss_type == "token" and not self.sequence_level:
                return float(exp.mask[index].sum()) if index else 0.0
            return float(len(index))

        t = time.perf_counter()
        report = pu.run_epochs(
            self.trained_modules(), self.optimizer, plan, weight,
            lambda index, total: self.loss(exp, index, total), s.max_grad_norm,
            accumulate=s.accumulate,
            idle_loss=lambda: pu.zero_loss(self.policy, self.critic),
            stop_after_epoch=self.stop_after_epoch,
        )
        exp.timings["optimize_step"] = time.perf_counter() - t
        out = self.metrics(exp, report, counts)
        out["memory/params_optimizer_mb"] = held_mb(self.trained_modules(), self.optimizer,
                                                    self.run.gather)
        return out

    def start_epochs(self, exp: Experience) -> None:
        """Before the epochs: the update's dropout mode, empty metric sums."""
        import torch

        train = self.update_settings().train_mode
        self.policy.train(train)
        if self.critic is not None:
            self.critic.train(train)
        self.sums = {}
        self.totals = {}
        self.first_logp = torch.zeros_like(exp.mask)
        self.seen_first = set()

    def trained_modules(self) -> Any:
        """What the optimizer trains, as one module (the policy, or policy and critic)."""
        return self.policy

    def stop_after_epoch(self) -> bool:
        """Whether the epochs end early (collective: every process calls it)."""
        return False

    # ------------------------------------------------------------------ pieces
    def select(self, batch: Batch) -> tuple[list[Sample], dict[str, int]]:
        """This process's samples to train on, and counts of what was left out (all
        processes' groups: every process computes the same)."""
        import torch

        from rlhfx.policy_gradient import equal_reward_groups

        counts = {"equal_reward_groups": 0, "small_groups": 0, "groups": 0}
        dropped_groups: set[int] = set()
        if self.needs_groups or self.drop_equal_groups:
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
                    if self.drop_equal_groups:
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

    def make_experience(self, rows: list[Sample], batch: Batch) -> Experience:
        """Everything the epochs need that does not change while the policy moves."""
        import torch

        from rlhfx.alignment import policy_update as pu
        from rlhfx.policy_gradient import (
            KL_ESTIMATORS,
            EstimatorInputs,
            last_token_index,
        )
        from rlhfx.sharding import gathered_weights_of

        s, run = self.update_settings(), self.run
        t = time.perf_counter()
        pad = run.tokenizer.pad_token_id
        pad = pad if pad is not None else run.tokenizer.eos_token_id
        tokens = pu.TokenBatch.from_samples(rows, pad, run.device) if rows else None
        mask = tokens.mask if tokens is not None else torch.zeros(0, 1)
        scores = self.scores(rows).to(mask.device)
        kl_in_reward = not self.kl_in_loss() and self.reference is not None
        full = kl_in_reward and self.kl_estimator == "full"
        passes: dict[str, torch.Tensor] = {}
        frozen = self.reference.copy if self.reference is not None else None
        # Sharded, the no-gradient passes run on gathered weights: a process's forwards then
        # need no partner (every process enters, rows or not).
        with torch.no_grad(), gathered_weights_of(self.policy, self.critic, frozen):
            if tokens is not None:
                passes = self._rollout_pass(tokens, s, full)
        old_logp, ref_logp = passes.get("logp"), passes.get("ref")
        values = passes.get("values")
        if values is None and self.critic is not None:
            values = torch.zeros_like(mask)  # no rows here
        kl = None
        if ref_logp is not None and old_logp is not None:
            kl = passes["kl"] if full else KL_ESTIMATORS[self.kl_estimator](old_logp, ref_logp)
            kl = kl * mask
        token_rewards = torch.zeros_like(mask)
        if rows:
            if kl_in_reward:
                assert kl is not None
                token_rewards = -self.kl_coef() * kl
            at = torch.arange(len(rows), device=mask.device)
            token_rewards = token_rewards.index_put((at, last_token_index(mask)), scores,
                                                    accumulate=True)
        inputs = EstimatorInputs(
            token_rewards, mask, scores.double(),
            torch.tensor([r.prompt_id for r in rows], dtype=torch.long),
            *self._context(rows, batch), values=values, gamma=s.gamma,
            lam=s.lam, all_reduce=pu.all_reduce_sum,
        )
        adv = self.advantages(inputs)
        advantages = adv.advantages.to(torch.float32).to(mask.device)
        timings = {"forward_pass": time.perf_counter() - t}
        return Experience(rows, tokens, mask, scores, old_logp, ref_logp, values,
                          kl, token_rewards, advantages, adv.returns.to(mask.device), timings)

    def _rollout_pass(self, tokens: TokenBatch, s: UpdateSettings, full: bool
                      ) -> dict[str, torch.Tensor]:
        """Rollout log-probs, values and reference log-probs of every row, in chunks of
        `forward_rows` rows of similar length; each result back in its row's place."""
        import torch

        from rlhfx.alignment import policy_update as pu
        from rlhfx.policy_gradient import full_kl

        n = len(tokens)
        chunk = min(s.forward_rows or n, n)
        order = list(range(n))
        if chunk < n:  # chunks of rows of similar length pad little
            order.sort(key=lambda i: int(tokens.attention_mask[i].sum()))
        want_logp = self.needs_rollout_logp()
        carry = want_logp and self.carries_forward(n, chunk)
        out: dict[str, torch.Tensor] = {}
        for start in range(0, n, chunk):
            index = order[start:start + chunk]
            part = tokens.rows(index) if chunk < n else tokens
            got: dict[str, torch.Tensor] = {}
            policy = None
            if carry:
                with torch.enable_grad():
                    policy = pu.response_forward(self.policy, part, self.run.autocast(),
                                                 s.temperature, entropy=True, full=full)
                self.carried = policy
                got["logp"] = policy.logp.detach()
            elif want_logp:
                policy = pu.response_forward(self.policy, part, self.run.autocast(),
                                             s.temperature, critic=self.critic, full=full)
                got["logp"] = policy.logp
                if policy.values is not None:
                    got["values"] = policy.values
            if self.reference is not None:
                ref = pu.reference_forward(self.reference, part, self.run.autocast(),
                                           s.temperature, full=full)
                got["ref"] = ref.logp
                if full:
                    assert policy is not None and policy.logprobs is not None
                    assert ref.logprobs is not None
                    got["kl"] = full_kl(policy.logprobs, ref.logprobs) * part.mask
            at = torch.as_tensor(index, device=tokens.mask.device)
            for key, value in got.items():
                if key not in out:
                    out[key] = torch.zeros_like(tokens.mask)
                out[key][at, : value.shape[1]] = value.to(out[key].dtype)
        return out

    def _context(self, rows: list[Sample], batch: Batch) -> tuple[Any, Any]:
        """Scores and prompt ids of this process's scored samples that are not trained on but
        share a group with a trained one (group baselines count them)."""
        import torch

        trained = {id(r) for r in rows}
        prompts = {r.prompt_id for r in rows}
        extra = [s for s in batch.mine if Batch.usable(s) and id(s) not in trained
                 and s.prompt_id in prompts]
        return (torch.tensor([float(s.reward or 0.0) for s in extra], dtype=torch.float64),
                torch.tensor([s.prompt_id for s in extra], dtype=torch.long))

    def loss(self, exp: Experience, index: list[int], total: float) -> torch.Tensor:
        """This process's share of a mini-batch's loss: the clipped surrogate (+ beta * k3 KL
        when the KL is in the loss, + the critic's loss), divided by the global `total`."""
        import torch

        from rlhfx.alignment import policy_update as pu
        from rlhfx.policy_gradient import aggregate, clipped_surrogate, k3_kl

        s = self.update_settings()
        assert exp.tokens is not None
        part = exp.tokens.rows(index)
        span, mask = part.response_width, part.mask
        at = torch.as_tensor(index, device=exp.mask.device)
        first = not self.seen_first.issuperset(index)
        fwd = self._carried_rows(index, span)
        if fwd is None:
            fwd = pu.response_forward(self.policy, part, self.run.autocast(), s.temperature,
                                      entropy=first or s.entropy_always, critic=self.critic)
        logp = fwd.logp
        old = exp.old_logp[at, :span] if exp.old_logp is not None else logp.detach()
        adv = exp.advantages[at] if exp.advantages.dim() == 1 else exp.advantages[at, :span]
        kl_loss = (self.kl_coef() * k3_kl(logp, exp.ref_logp[at, :span]) * mask
                   if self.kl_in_loss() and exp.ref_logp is not None else None)
        if self.sequence_level:
            # one action per response: the ratio of the responses' probabilities
            seq, seq_old = ((x * mask).sum(1, keepdim=True) for x in (logp, old))
            out = clipped_surrogate(seq, seq_old, adv, torch.ones_like(seq), s.clip_low,
                                    s.clip_high)
            per_response = out.loss[:, 0]
            if kl_loss is not None:
                per_response = per_response + kl_loss.sum(1)
            loss = per_response.sum() / total
            real = float(len(index))
        else:
            out = clipped_surrogate(logp, old, adv, mask, s.clip_low, s.clip_high)
            per_token = out.loss if kl_loss is None else out.loss + kl_loss
            loss = aggregate(per_token, mask, s.loss_type, max_length=s.max_new_tokens,
                             denominator=total)
            real = float(mask.sum())
        value = None
        if fwd.values is not None:
            value = aggregate(self.value_loss(exp, at, fwd.values, mask), mask, s.loss_type,
                              max_length=s.max_new_tokens, denominator=total)
        skipped = s.ratio_threshold is not None and out.ratio_mean > s.ratio_threshold
        self.record(MinibatchLoss(at, mask, logp, old, adv, fwd, loss, value, skipped))
        loss = loss if value is None else loss + value
        if skipped:
            loss = loss * 0.0
            self.add_sums(skipped=1)
        self.add_sums(clip=out.clip_fraction * real, clip_low=out.clip_low_fraction * real,
                      clip_high=out.clip_high_fraction * real, ratio=out.ratio_mean * real,
                      tokens=real)
        if first:
            self.seen_first.update(index)
            self.first_logp[at, :span] = logp.detach()
            assert fwd.entropy is not None
            self.add_sums(entropy=float(fwd.entropy.sum()), entropy_tokens=float(mask.sum()))
        return loss

    def _carried_rows(self, index: list[int], span: int) -> ResponseForward | None:
        """The carried forward's rows `index` (taken once), or None when there is none or
        it does not hold exactly these rows."""
        import torch

        from rlhfx.alignment.policy_update import ResponseForward

        carried, self.carried = self.carried, None
        if (carried is None or carried.logp.shape[1] != span
                or sorted(index) != list(range(carried.logp.shape[0]))):
            return None
        at = torch.as_tensor(index, device=carried.logp.device)
        return ResponseForward(carried.logp[at], entropy=None if carried.entropy is None
                               else carried.entropy[at])

    def record(self, mb: MinibatchLoss) -> None:
        """See each mini-batch's forward and losses (for statistics of one's own)."""

    def add_sums(self, **values: float) -> None:
        """Add to this update's metric sums (summed over processes in `metrics`)."""
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)

    def metrics(self, exp: Experience, report: Any, counts: dict[str, int]) -> dict[str, Any]:
        """The update's metrics over every process."""
        rollout = exp.old_logp if exp.old_logp is not None else self.first_logp
        kl_sum = 0.0
        if exp.ref_logp is not None and exp.rows:
            kl_sum = float(((rollout - exp.ref_logp) * exp.mask).sum())
        a = exp.advantages if exp.advantages.dim() == 1 else exp.advantages[exp.mask > 0]
        self.add_sums(loss=report.loss_sum, rows=float(len(exp.rows)), kl=kl_sum,
                      adv_sum=float(a.sum()), adv_sq=float((a * a).sum()),
                      adv_n=float(a.numel()), idle=float(report.idle_minibatches))
        parts = self.run.gather(self.sums)
        t = {k: sum(part.get(k, 0.0) for part in parts) for k in {k for p in parts for k in p}}
        self.totals = t

        def ratio(num: str, den: str) -> float:
            return t.get(num, 0.0) / t[den] if t.get(den) else math.nan

        steps = report.optimizer_steps
        adv_mean = ratio("adv_sum", "adv_n")
        adv_var = ratio("adv_sq", "adv_n") - adv_mean * adv_mean
        out: dict[str, Any] = {
            "train_loss": t["loss"] / steps if steps else math.nan,
            "learning_rate": self.optimizer.param_groups[0]["lr"],
            "clip_fraction": ratio("clip", "tokens"),
            "clip_low_fraction": ratio("clip_low", "tokens"),
            "clip_high_fraction": ratio("clip_high", "tokens"),
            "ratio_mean": ratio("ratio", "tokens"),
            "entropy": ratio("entropy", "entropy_tokens"),
            "advantage_mean": adv_mean,
            "advantage_std": math.sqrt(max(adv_var, 0.0)) if t["adv_n"] else math.nan,
            "optimizer_steps": steps,
            "idle_minibatches": int(t["idle"]),
            **counts,
        }
        if self.reference is not None:
            out["kl_mean"] = ratio("kl", "rows")
        return out
