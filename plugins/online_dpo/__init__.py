"""Online (iterative) DPO as the built-in `online_dpo` algorithm, in the style of RLHFlow's and
LMFlow's iterative DPO (Xiong et al. 2024, Dong et al. 2024): each iteration the shared loop
samples k responses per prompt and scores them; the best and the worst response of each prompt
form a preference pair, and the policy takes DPO steps (Rafailov et al. 2023) on those pairs
against the starting policy as the reference. Groups whose best and worst rewards tie hold no
preference: they are skipped and counted.

This module is imported at every CLI start: torch and friends load only when a run starts.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

from rlhfx import AlignmentAlgorithm, AlignmentSetup, Batch, Sample, UserError, hookimpl
from rlhfx.alignment.weights import WithOptimizerState

from .config import OnlineDPOConfig

__all__ = ["OnlineDPO", "OnlineDPOConfig", "preference_pairs"]

#: Why a sample cannot be half of a pair (written in the samples file as `dropped`).
DROPPED_PREFIX = "online_dpo: cleaner removed text before the response"
DROPPED_EMPTY = "online_dpo: no response tokens"


def preference_pairs(samples: list[Sample]) -> tuple[list[tuple[Sample, Sample]], Counter[str]]:
    """(best, worst) of each prompt's usable samples, and counts of what was left out.

    A sample is usable when it is scored, not discarded, and its tokens are the cleaned text's
    own (a "prefix" token_status means a cleaner cut text away before the response, so the
    sampled tokens are not the text that was scored) and not empty. A prompt with fewer than
    two usable samples counts as `short_groups`, one whose best and worst tie as
    `tied_groups`.
    """
    import torch

    from rlhfx.policy_gradient import best_and_worst

    counts: Counter[str] = Counter()
    usable: list[Sample] = []
    for s in samples:
        if not Batch.usable(s):
            counts["dropped_unscored"] += 1
        elif s.token_status == "prefix":
            counts["dropped_prefix"] += 1
            s.extra["dropped"] = DROPPED_PREFIX
        elif not s.response_ids:
            counts["dropped_empty"] += 1
            s.extra["dropped"] = DROPPED_EMPTY
        else:
            usable.append(s)
    sizes = Counter(s.prompt_id for s in usable)
    counts["short_groups"] = len({s.prompt_id for s in samples} - {p for p, n in sizes.items()
                                                                      if n >= 2})
    grouped = [s for s in usable if sizes[s.prompt_id] >= 2]
    counts["tied_groups"] = 0
    if not grouped:
        return [], counts
    rewards = torch.tensor([float(s.reward) for s in grouped if s.reward is not None],
                           dtype=torch.float64)
    groups = torch.tensor([s.prompt_id for s in grouped])
    found = best_and_worst(rewards, groups)
    counts["tied_groups"] = found.ties
    pairs = [(grouped[int(c)], grouped[int(r)])
             for c, r in zip(found.chosen, found.rejected, strict=True)]
    return sorted(pairs, key=lambda pair: pair[0].prompt_id), counts


class OnlineDPO(WithOptimizerState, AlignmentAlgorithm[OnlineDPOConfig]):
    """Iterative DPO: the best and the worst of k samples per prompt as a preference pair."""

    name = "online_dpo"
    trains_episodes = True  # its token loss follows Sample.action_mask

    def prompts_per_iteration(self) -> int:
        return self.config.batch_size

    def samples_per_prompt(self) -> int:
        return self.config.k

    def setup(self, setup: AlignmentSetup) -> None:
        from rlhfx.alignment.policy_update import adam, disable_dropout

        c = self.config
        self.run = setup
        if c.mini_batch_size % setup.world_size:
            raise UserError(f"{setup.where}.mini_batch_size: {c.mini_batch_size} does not "
                            f"split evenly over {setup.world_size} processes")
        self.policy = setup.load_policy()
        if c.disable_dropout:
            disable_dropout(self.policy)
        self.reference = setup.reference(self.policy)
        params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = adam(params, c.learning_rate, c.weight_decay)

    # ------------------------------------------------------------------ the step
    def update(self, batch: Batch) -> Mapping[str, Any]:
        from rlhfx.alignment.weights import held_mb

        run = self.run
        pairs, counts = preference_pairs(batch.mine)
        for chosen, rejected in pairs:
            chosen.trained = rejected.trained = True
            chosen.extra["dpo"], rejected.extra["dpo"] = "chosen", "rejected"
        sizes = run.gather(len(pairs))
        stats = self._train(pairs, sizes, batch.seed) if max(sizes) else {}
        if not max(sizes):
            run.log.warning("online_dpo: iteration %d: no preference pair (%d tied groups); "
                            "no update", batch.iteration, sum(run.gather(counts["tied_groups"])))
        out = self._metrics(run.gather((counts, stats)))
        out["memory/params_optimizer_mb"] = held_mb(self.policy, self.optimizer, run.gather)
        return out

    def _train(self, pairs: list[tuple[Sample, Sample]], sizes: list[int],
               seed: int) -> dict[str, float]:
        """`epochs` passes over this process's pairs in mini-batches; every process takes the
        same number of optimiser steps (the busiest process's count), gradients averaged over
        processes (`rlhfx.alignment.policy_update`)."""
        import math

        import torch

        from rlhfx.alignment.policy_update import minibatch_plan, run_epochs
        from rlhfx.policy_gradient import dpo_loss
        from rlhfx.sharding import gathered_weights_of

        c, run = self.config, self.run
        share = c.mini_batch_size // run.world_size
        # The reference pass's forwards differ in number between processes: on gathered
        # weights when sharded (every process enters, pairs or not).
        with gathered_weights_of(self.reference.copy):
            ref_chosen, ref_rejected = self._sequence_logprobs(pairs, share, reference=True)
        sums: defaultdict[str, float] = defaultdict(float)
        seen: set[int] = set()

        def loss_of(rows: list[int], total: float) -> Any:
            chosen, rejected = self._sequence_logprobs([pairs[i] for i in rows], share)
            out = dpo_loss(chosen, rejected, ref_chosen[rows], ref_rejected[rows],
                           beta=c.beta)
            sums["loss"] += float(out.losses.detach().sum())
            sums["loss_n"] += len(rows)
            for j, row in enumerate(rows):
                if row not in seen:  # each pair's first pass: the implicit rewards before
                    seen.add(row)   # this iteration's steps moved it much
                    sums["chosen"] += float(out.chosen_rewards[j])
                    sums["rejected"] += float(out.rejected_rewards[j])
                    sums["correct"] += float(out.chosen_rewards[j] > out.rejected_rewards[j])
                    sums["n"] += 1
            return out.losses.sum() / total

        plan = minibatch_plan(len(pairs), math.ceil(max(sizes) / share), c.epochs,
                              torch.Generator().manual_seed(seed))
        report = run_epochs(self.policy, self.optimizer, plan, lambda rows: float(len(rows)),
                            loss_of, c.max_grad_norm)
        sums["steps"] = report.optimizer_steps
        sums["idle_minibatches"] = report.idle_minibatches
        for chosen_s, rejected_s in pairs:
            sums["reward_gap"] += float(chosen_s.reward or 0) - float(rejected_s.reward or 0)
        return dict(sums)

    def _sequence_logprobs(self, pairs: list[tuple[Sample, Sample]], chunk: int,
                           reference: bool = False) -> Any:
        """Sums of response-token log-probs of each pair's chosen and rejected response:
        under the reference without gradients (in chunks), else under the policy."""
        import torch

        from rlhfx.alignment.policy_update import (
            TokenBatch,
            reference_logprobs,
            response_logprobs,
        )

        run = self.run
        pad = run.tokenizer.pad_token_id
        pad = pad if pad is not None else run.tokenizer.eos_token_id
        step = chunk if reference else max(1, len(pairs))
        parts = []
        for start in range(0, len(pairs), step):
            part = pairs[start:start + step]
            tokens = TokenBatch.from_samples([s for s, _ in part] + [s for _, s in part], pad,
                                             run.device)
            if reference:
                logp = reference_logprobs(self.reference, tokens, autocast=run.autocast())
            else:
                logp = response_logprobs(self.policy, tokens, autocast=run.autocast())
            parts.append((logp * tokens.mask).sum(-1).view(2, len(part)))
        joined = torch.cat(parts, dim=1) if parts else torch.zeros(2, 0)
        return joined[0], joined[1]

    def _metrics(self, parts: list[tuple[Counter[str], dict[str, float]]]) -> dict[str, Any]:
        counts: Counter[str] = Counter()
        sums: defaultdict[str, float] = defaultdict(float)
        for part_counts, part_sums in parts:
            counts.update(part_counts)
            for key, value in part_sums.items():
                sums[key] += value
        n = sums["n"]  # pairs trained on, all processes (each seen once in the first epoch)
        out: dict[str, Any] = {
            "pairs": int(n), "tied_groups": counts["tied_groups"],
            "short_groups": counts["short_groups"], "dropped_prefix": counts["dropped_prefix"],
            "learning_rate": self.optimizer.param_groups[0]["lr"],
            "optimizer_steps": int(sums["steps"] // max(1, len(parts))),
            "idle_minibatches": int(sums["idle_minibatches"]),
        }
        if n:
            out.update({
                "train_loss": sums["loss"] / sums["loss_n"],
                "chosen_reward": sums["chosen"] / n,
                "rejected_reward": sums["rejected"] / n,
                "reward_margin": (sums["chosen"] - sums["rejected"]) / n,
                "preference_accuracy": sums["correct"] / n,
                "pair_reward_gap": sums["reward_gap"] / n,
            })
        return out


@hookimpl
def rlhfx_register_algorithms(register):
    register(OnlineDPO)
