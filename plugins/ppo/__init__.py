"""The built-in `ppo` algorithm: TRL's classic PPOTrainer (TRL <= 0.11) on rlhfx's shared
policy-gradient engine (`rlhfx.alignment.engine`), so the reward model may use another
tokenizer (rewards see text, the policy trains on its own sampled tokens, cut where the
cleaned text ends).

What is PPO's own: a value head (`value_head.py`) trained with a clipped value loss, GAE
advantages whitened over the batch, the KL in the reward under an adaptive (or fixed) KL
controller, optional score scaling, and classic PPO's statistics. The arithmetic is
`rlhfx.policy_gradient`'s; the experience, mini-batch epochs and optimizer step are the
engine's. This module is imported at every CLI start: torch loads only when a run starts.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any

from rlhfx import AlignmentSetup, Batch, Sample, UserError, hookimpl
from rlhfx.alignment.engine import PolicyGradientAlgorithm, UpdateSettings

from .config import PPOConfig

if TYPE_CHECKING:
    import torch

    from rlhfx.alignment.engine import Experience, MinibatchLoss
    from rlhfx.policy_gradient import RunningMoments

__all__ = ["PPO", "PPOConfig"]

#: Why a sample is left out of the update (written in the samples file as `dropped`).
DROPPED_PREFIX = "ppo: cleaner removed text before the response"
TOO_SHORT = "ppo: too short"
DISCARDED = "discarded"
#: The value head's weights beside the final policy (safetensors: loading runs no code).
VALUE_HEAD_FILE = "value_head.safetensors"


class PPO(PolicyGradientAlgorithm[PPOConfig]):
    """PPO with a value head, KL penalty to a reference policy, GAE and clipped losses."""

    name = "ppo"
    estimator = "gae"
    needs_groups = False
    #: mini-batches per epoch of the current iteration (set by `select`)
    minibatch_count: int = 1
    #: running score statistics when `use_score_scaling` (set in `setup`)
    moments: RunningMoments | None = None
    experience: Experience
    kept_scores: dict[int, float]
    raw_scores: list[list[float]]
    value_stats: dict[str, float]
    last_policykl: float

    def prompts_per_iteration(self) -> int:
        return self.config.batch_size

    def setup(self, setup: AlignmentSetup) -> None:
        import torch

        from rlhfx.alignment.policy_update import adam, disable_dropout
        from rlhfx.policy_gradient import KLController, RunningMoments

        from .value_head import PolicyWithValueHead

        c = self.config
        self.run = setup
        for key, value in (("batch_size", c.batch_size), ("mini_batch_size", c.mini_batch_size)):
            if value % setup.world_size:
                raise UserError(f"{setup.where}.{key}: {value} does not split evenly over "
                                f"{setup.world_size} processes")
        self.policy = setup.load_policy()
        self.generation_config = self.policy.generation_config
        reset = neutral_generation_config(self.policy, setup.tokenizer)
        if reset:
            setup.log.info("ppo: generation defaults of the policy ignored (plain sampling "
                           "keeps the KL estimate honest): %s", ", ".join(reset))
        torch.manual_seed(setup.seed)  # the same value head on every process
        self.model = PolicyWithValueHead(self.policy, 0.0 if c.disable_dropout else
                                         c.value_head_dropout)
        # Under fsdp the policy came sharded; the value head is sharded as a unit of its own.
        setup.shard(self.model.v_head, small=True)
        self.critic = self.model.v_head
        if c.disable_dropout:
            # After wrapping, so LoRA's own dropout goes too; the update then runs in eval
            # mode, the rollout pass's mode, so old and new log-probs match exactly.
            disable_dropout(self.model)
        self.reference = setup.reference(self.policy)
        self.kl_estimator = c.kl_penalty
        self.kl_ctl = KLController(c.init_kl_coef, c.target if c.adap_kl_ctrl else None,
                                   c.horizon)
        self.moments = RunningMoments() if c.use_score_scaling else None
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = adam(params, c.learning_rate, decoupled=False)

    # ------------------------------------------------------------------ the engine's hooks
    def trained_modules(self) -> Any:
        return self.model

    def kl_coef(self) -> float:
        return self.kl_ctl.value

    def update_settings(self) -> UpdateSettings:
        c = self.config
        return UpdateSettings(
            epochs=c.ppo_epochs, minibatches=self.minibatch_count, clip_low=c.cliprange,
            clip_high=c.cliprange, loss_type="token", max_grad_norm=c.max_grad_norm,
            gamma=c.gamma, lam=c.lam, forward_rows=c.forward_batch_size,
            group_by_length=c.group_by_length, accumulate=c.gradient_accumulation_steps,
            train_mode=not c.disable_dropout, ratio_threshold=c.ratio_threshold,
            entropy_always=True,
        )

    def select(self, batch: Batch) -> tuple[list[Sample], dict[str, int]]:
        kept, counts = trainable(batch.mine, self.config)
        self.kept_scores = {id(s): r for s, r in kept}
        self.raw_scores = self.run.gather([r for _, r in kept])
        # Mini-batches per epoch: batch / mini-batch, fewer when fewer rollouts were kept
        # (never one of nothing), rounded up to whole accumulation groups.
        gas = self.config.gradient_accumulation_steps
        wanted = min(self.config.minibatches_per_epoch, max(len(p) for p in self.raw_scores))
        self.minibatch_count = max(1, -(-wanted // gas) * gas)
        return [s for s, _ in kept], dict(counts)

    def scores(self, rows: list[Sample]) -> torch.Tensor:
        import torch

        from rlhfx.policy_gradient import scale_scores

        c = self.config
        if self.moments is not None:
            self.moments.update([x for part in self.raw_scores for x in part])
        raw = torch.tensor([self.kept_scores[id(s)] for s in rows], dtype=torch.float32)
        if self.moments is None and c.score_clip is None:
            return raw
        return scale_scores(raw, self.moments, c.use_score_norm, c.score_clip)

    def advantages(self, inputs: Any) -> Any:
        """GAE over the (optionally whitened) token rewards; advantages whitened (TRL)."""
        from rlhfx.policy_gradient import Advantages, batch_normalized

        whiten = float(inputs.mask.sum()) > 1
        if self.config.whiten_rewards and whiten:
            inputs = inputs._replace(token_rewards=batch_normalized(
                inputs.token_rewards, inputs.mask, unbiased=True, shift_mean=False))
        out = super().advantages(inputs)
        if not whiten:
            return out
        return Advantages(batch_normalized(out.advantages, inputs.mask, unbiased=True),
                          out.returns)

    def value_loss(self, exp: Experience, at: torch.Tensor, values: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
        from rlhfx.policy_gradient import clipped_value_loss, masked_mean

        span = mask.shape[1]
        assert exp.values is not None
        loss, clipped = clipped_value_loss(values, exp.values[at, :span],
                                           exp.returns[at, :span], self.config.cliprange_value)
        self.value_stats = {"loss/value": float(masked_mean(loss.detach(), mask)),
                            "val/clipfrac": float(masked_mean(clipped.float(), mask))}
        return self.config.vf_coef * loss

    def record(self, mb: MinibatchLoss) -> None:
        """Classic PPO's per-mini-batch statistics (averaged over mini-batches and processes)."""
        import torch

        from rlhfx.policy_gradient import clipped_surrogate, masked_mean

        exp, at, mask = self.experience, mb.at, mb.mask
        span = mask.shape[1]
        with torch.no_grad():
            log_ratio = mb.logp.detach() - mb.old_logp
            surrogate = clipped_surrogate(mb.logp.detach(), mb.old_logp, mb.advantages, mask,
                                          self.config.cliprange, self.config.cliprange)
            policy = 0.0 if mb.skipped else float(masked_mean(surrogate.loss, mask))
            value = 0.0 if mb.skipped else self.value_stats["loss/value"]
            assert mb.forward.values is not None and mb.forward.entropy is not None
            assert exp.values is not None
            returns, old = exp.returns[at, :span], exp.values[at, :span]
            stats = {
                **self.value_stats, "loss/policy": policy, "loss/value": value,
                "loss/total": policy + self.config.vf_coef * value,
                "policy/entropy": float(masked_mean(mb.forward.entropy, mask)),
                "policy/approxkl": float(0.5 * masked_mean(log_ratio**2, mask)),
                "policy/policykl": float(masked_mean(-log_ratio, mask)),
                "policy/clipfrac": surrogate.clip_fraction,
                "policy/advantages_mean": float(masked_mean(mb.advantages, mask)),
                "policy/ratio_mean": surrogate.ratio_mean,
                "returns/mean": float(masked_mean(returns, mask)),
                "returns/var": _var(returns, mask),
                "val/vpred": float(masked_mean(mb.forward.values, mask)),
                "val/error": float(masked_mean((mb.forward.values - returns) ** 2, mask)),
                "val/mean": float(masked_mean(old, mask)), "val/var": _var(old, mask),
            }
        self.add_sums(minibatches=1, **{"mb:" + k: v for k, v in stats.items()})
        self.last_policykl = stats["policy/policykl"]

    def stop_after_epoch(self) -> bool:
        """TRL's early stop: the last mini-batch's policy KL, averaged over processes."""
        if not self.config.early_stopping:
            return False
        values = [v for v in self.run.gather(self.last_policykl) if not math.isnan(v)]
        return bool(values) and sum(values) / len(values) > 1.5 * self.config.target_kl

    # ------------------------------------------------------------------ the step
    def make_experience(self, rows: list[Sample], batch: Batch) -> Experience:
        self.last_policykl = math.nan
        self.experience = super().make_experience(rows, batch)
        return self.experience

    def metrics(self, exp: Experience, report: Any, counts: dict[str, int]) -> dict[str, Any]:
        kl_coef = self.kl_ctl.value
        base = super().metrics(exp, report, counts)
        t = self.totals
        mask = exp.mask
        old = exp.old_logp if exp.old_logp is not None else mask
        kl = exp.kl if exp.kl is not None else mask * 0
        mine = {"kl": (kl * mask).sum(-1).tolist(), "neg_logprob": (-old * mask).sum(-1).tolist(),
                "non_score": ((exp.token_rewards * mask).sum(-1) - exp.scores).tolist(),
                "tokens": mask.sum(-1).tolist(), "scaled": exp.scores.tolist(),
                "qlen": [float(len(s.prompt_ids)) for s in exp.rows]}
        parts = self.run.gather((mine, counts, exp.timings))
        every = {k: [x for p, _, _ in parts for x in p[k]] for k in mine}
        count: Counter[str] = Counter()
        for _, c, _ in parts:
            count.update(c)
        out: dict[str, Any] = {
            "kl_mean": _mean(every["kl"]), "kl_coef": kl_coef,
            "entropy": _mean(every["neg_logprob"]),
            "mean_non_score_reward": (sum(every["non_score"]) / sum(every["tokens"])
                                      if every["tokens"] else None),
            "scores_mean": _mean(every["scaled"]), "scores_std": _std(every["scaled"]),
            "queries_len_mean": _mean(every["qlen"]), "learning_rate": base["learning_rate"],
            "kept": len(every["scaled"]), "too_short": count["too_short"],
            "discarded": count["discarded"], "cut": count["cut"],
            "retokenized": count["retokenized"], "dropped_prefix": count["prefix"],
            "skipped_minibatches": int(t.get("skipped", 0)),
            "idle_minibatches": base["idle_minibatches"],
            "epochs": max(self.run.gather(report.epochs if exp.rows else 0)),
        }
        if t.get("minibatches"):
            for key in sorted(k for k in t if k.startswith("mb:")):
                out[key[3:]] = t[key] / t["minibatches"]
            out["train_loss"] = out["loss/total"]
            if out["returns/var"]:
                out["val/var_explained"] = 1 - out["val/error"] / out["returns/var"]
        for key in ("forward_pass", "optimize_step"):
            out["time/" + key] = max(p[2].get(key, 0.0) for p in parts)
        out["time/total"] = out["time/forward_pass"] + out["time/optimize_step"]
        if out["kept"]:
            self.kl_ctl.update(out["kl_mean"], out["kept"])
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        from rlhfx.alignment.weights import check_in_sync, optimizer_state, trainable_state

        check_in_sync(self.model, self.run.gather)
        # Full tensors also under fsdp (gathered by every process; the main one writes).
        return {"model": trainable_state(self.model),
                "optimizer": optimizer_state(self.model, self.optimizer),
                "kl_coef": self.kl_ctl.state_dict(),
                "score_moments": self.moments.state_dict() if self.moments else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from rlhfx.alignment.weights import load_optimizer_state, load_trainable_state

        load_trainable_state(self.model, state["model"])
        load_optimizer_state(self.model, self.optimizer, state["optimizer"], self.run.where)
        self.kl_ctl.load_state_dict(state["kl_coef"])
        if self.moments is not None and state["score_moments"]:
            self.moments.load_state_dict(state["score_moments"])

    def final_model(self) -> Any:
        from rlhfx.sharding import full_state_dict

        model = super().final_model()
        model.generation_config = self.generation_config
        self._value_head = full_state_dict(self.model.v_head)  # every process: may gather
        return model

    def save_extras(self, directory: Any) -> None:
        from rlhfx.alignment.state_files import save_tensors

        save_tensors(self._value_head, directory / VALUE_HEAD_FILE)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _std(xs: list[float]) -> float | None:
    """Sample standard deviation (torch.std's default, which TRL logged)."""
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5


def _var(values: Any, mask: Any) -> float:
    from rlhfx.policy_gradient import masked_mean

    n = float(mask.sum())
    if n < 2:
        return 0.0
    mean = masked_mean(values, mask)
    return float(masked_mean((values - mean) ** 2, mask)) * n / (n - 1)


def trainable(samples: list[Sample], c: PPOConfig) -> tuple[list[tuple[Sample, float]],
                                                              Counter[str]]:
    """The samples PPO trains on, each with its score, and counts of what was left out
    (noted in `sample.extra["dropped"]`): discarded ones (unless `discarded_score` gives them
    a score), ones whose kept text starts after tokens a cleaner removed, too-short ones."""
    counts: Counter[str] = Counter()
    kept = []
    for s in samples:
        counts[s.token_status] += 1
        counts["discarded"] += s.discarded
        if s.token_status == "prefix":
            s.extra["dropped"] = DROPPED_PREFIX
            continue
        if len(s.response_ids) < c.min_response_tokens:
            counts["too_short"] += 1
            s.extra["dropped"] = TOO_SHORT
            continue
        reward = s.reward
        if s.discarded:
            if c.discarded_score is None or s.extra.get("nonfinite_reward") is not None:
                s.extra["dropped"] = DISCARDED
                continue
            reward = c.discarded_score
        if reward is not None:
            kept.append((s, float(reward)))
    return kept, counts


def neutral_generation_config(model: Any, tokenizer: Any) -> list[str]:
    """Replace the model's generation defaults with neutral ones; returns what was reset.

    A checkpoint's generation_config.json may carry min_length, repetition_penalty, top_k and
    the like; `generate` would apply them silently and the sampled tokens would no longer come
    from the policy's distribution (the HH example's negative KL came from min_length).
    """
    from transformers import GenerationConfig

    old = model.generation_config
    fresh = GenerationConfig(
        bos_token_id=getattr(old, "bos_token_id", None),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    changed = []
    for key in ("min_length", "min_new_tokens", "repetition_penalty", "no_repeat_ngram_size",
                "bad_words_ids", "typical_p", "epsilon_cutoff", "eta_cutoff", "min_p",
                "encoder_repetition_penalty", "suppress_tokens", "begin_suppress_tokens",
                "forced_bos_token_id", "forced_eos_token_id", "temperature", "top_p"):
        if getattr(old, key, None) != getattr(fresh, key, None):
            changed.append(f"{key}={getattr(old, key, None)!r}")
    model.generation_config = fresh
    return changed


@hookimpl
def rlhfx_register_algorithms(register):
    register(PPO)
