"""The PPO arithmetic of TRL's classic PPOTrainer, as pure torch functions.

TRL 1.x deleted these together with the classic trainer, so they are written here again from
the published formulas (see docs/ and the rlhf reference guide): masked statistics, the four KL
estimators, the adaptive KL controller, per-token rewards, GAE and the clipped losses. Tensors
are [batch, response_tokens] with a 0/1 mask for the tokens that count, unless said otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- log-probs
def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) under softmax(logits), without materialising the whole log-softmax."""
    from trl.trainer.utils import selective_log_softmax

    return selective_log_softmax(logits, labels)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each next-token distribution, in nats (TRL's chunked implementation)."""
    from trl.trainer.utils import entropy_from_logits as trl_entropy

    return trl_entropy(logits)


# ----------------------------------------------------------------------------- masked stats
def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if dim is None:
        return (values * mask).sum() / mask.sum()
    return (values * mask).sum(dim=dim) / mask.sum(dim=dim)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked values (Bessel-corrected, as TRL)."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n < 2:
            raise ValueError("masked_var needs at least two unmasked values")
        variance = variance * n / (n - 1)
    return variance


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True
) -> torch.Tensor:
    """(x - mean) / std over the masked values; `shift_mean=False` adds the mean back."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened


# ----------------------------------------------------------------------------- KL
KL_ESTIMATORS = ("kl", "abs", "mse", "full")


def kl_penalty(logprob: torch.Tensor, ref_logprob: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token KL estimate between the policy and the reference.

    For `kl`, `abs` and `mse` the inputs are log-probs of the sampled tokens [B, T]. For `full`
    they are whole log-distributions [B, T, V] and the result is KL(policy || reference) of
    each next-token distribution [B, T].
    """
    if kind == "kl":
        return logprob - ref_logprob
    if kind == "abs":
        return (logprob - ref_logprob).abs()
    if kind == "mse":
        return 0.5 * (logprob - ref_logprob).square()
    if kind == "full":
        # kl_div(input=ref, target=policy) = sum_v p(v) * (log p(v) - log ref(v)).
        return F.kl_div(ref_logprob, logprob, log_target=True, reduction="none").sum(-1)
    raise ValueError(f"unknown KL estimator '{kind}' (choose from {', '.join(KL_ESTIMATORS)})")


class AdaptiveKLController:
    """Ziegler et al.'s proportional controller: steer the per-response KL towards `target`."""

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, current: float, n_steps: int) -> None:
        error = min(max(current / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


# ----------------------------------------------------------------------------- scores
class RunningMoments:
    """Running mean and std of all scores seen so far (Chan et al.'s parallel update).

    Starts at mean 0, std 1 like TRL's, so the first update is dominated by the first batch.
    """

    def __init__(self) -> None:
        self.mean, self.var, self.std, self.count = 0.0, 1.0, 1.0, 1e-24

    def update(self, xs: Sequence[float]) -> tuple[float, float]:
        """Fold in a batch; returns the batch's mean and (unbiased) std."""
        n = len(xs)
        if n == 0:
            return float("nan"), float("nan")
        batch_mean = sum(xs) / n
        batch_var = sum((x - batch_mean) ** 2 for x in xs) / n
        delta = batch_mean - self.mean
        total = self.count + n
        old_sum = self.var * self.count + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = (old_sum + batch_var * n) / total
        self.std = math.sqrt(self.var * total / (total - 1)) if total > 1 else 1.0
        self.count = total
        batch_std = math.sqrt(batch_var * n / (n - 1)) if n > 1 else 0.0
        return batch_mean, batch_std

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "std": self.std, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var = float(state["mean"]), float(state["var"])
        self.std, self.count = float(state["std"]), float(state["count"])


def scale_scores(
    scores: torch.Tensor, moments: RunningMoments | None, norm: bool, clip: float | None
) -> torch.Tensor:
    """TRL's optional score scaling (÷ running std), normalisation (- running mean) and clip.

    `moments` must already hold this batch (update it first); None skips scaling.
    """
    if moments is not None:
        factor = moments.std + torch.finfo(scores.dtype).eps
        scores = (scores - moments.mean) / factor if norm else scores / factor
    if clip is not None:
        scores = scores.clamp(-clip, clip)
    return scores


def compute_rewards(
    scores: torch.Tensor, kls: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef * KL everywhere, plus the score at the last response token.

    Returns (rewards, non_score_rewards), both [B, T] and zero where the mask is zero.
    """
    non_score = -kl_coef * kls * mask
    rewards = non_score.clone()
    last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(dim=1)
    rewards[torch.arange(len(scores), device=mask.device), last] += scores
    return rewards, non_score


# ----------------------------------------------------------------------------- GAE
def compute_advantages(
    values: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
    whiten_rewards: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each response, then whitened advantages.

    delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}, with V
    and r zero past the last response token. Returns (masked values, advantages, returns);
    returns = raw advantages + values (the value target), advantages whitened over the mask.
    """
    values = values * mask
    rewards = rewards * mask
    if whiten_rewards:
        # Masked again after whitening: TRL's version left (0 - mean) / std + mean on padding,
        # which GAE then carried back into the last response tokens.
        rewards = masked_whiten(rewards, mask, shift_mean=False) * mask
    length = rewards.shape[-1]
    last_gae = torch.zeros_like(rewards[:, 0])
    reversed_adv = []
    for t in reversed(range(length)):
        next_values = values[:, t + 1] if t < length - 1 else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        reversed_adv.append(last_gae)
    advantages = torch.stack(reversed_adv[::-1], dim=1)
    returns = advantages + values
    advantages = masked_whiten(advantages, mask).detach()
    return values, advantages, returns


# ----------------------------------------------------------------------------- losses
@dataclass
class LossOutput:
    policy: torch.Tensor  # clipped policy loss
    value: torch.Tensor  # vf_coef * clipped value loss
    skipped: bool  # the mean ratio exceeded ratio_threshold: both losses zeroed
    stats: dict[str, float]

    @property
    def total(self) -> torch.Tensor:
        return self.policy + self.value


def ppo_losses(
    old_logprobs: torch.Tensor,
    old_values: torch.Tensor,
    logprobs: torch.Tensor,
    vpreds: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    cliprange: float,
    cliprange_value: float,
    vf_coef: float,
    ratio_threshold: float = math.inf,
    entropy: torch.Tensor | None = None,
) -> LossOutput:
    """The clipped surrogate and the clipped value loss of one mini-batch.

    policy = mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)));
    value = vf_coef * 0.5 * mean(max((V - R)^2, (clip(V, V_old +- eps_v) - R)^2)).
    `entropy` ([B, T], optional) only feeds the stats.
    """
    vpred_clipped = torch.clamp(vpreds, old_values - cliprange_value, old_values + cliprange_value)
    vf_losses1 = (vpreds - returns) ** 2
    vf_losses2 = (vpred_clipped - returns) ** 2
    vf_loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask)
    vf_clipfrac = masked_mean(torch.gt(vf_losses2, vf_losses1).float(), mask)

    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss = masked_mean(torch.max(pg_losses, pg_losses2), mask)
    pg_clipfrac = masked_mean(torch.gt(pg_losses2, pg_losses).float(), mask)

    avg_ratio = masked_mean(ratio, mask).item()
    skipped = avg_ratio > ratio_threshold
    if skipped:
        pg_loss, vf_loss = pg_loss * 0.0, vf_loss * 0.0
    value_loss = vf_coef * vf_loss

    with torch.no_grad():
        stats = {
            "loss/policy": pg_loss.item(),
            "loss/value": vf_loss.item(),
            "loss/total": (pg_loss + value_loss).item(),
            "policy/approxkl": (0.5 * masked_mean(log_ratio**2, mask)).item(),
            "policy/policykl": masked_mean(-log_ratio, mask).item(),
            "policy/clipfrac": pg_clipfrac.item(),
            "policy/advantages_mean": masked_mean(advantages, mask).item(),
            "policy/ratio_mean": avg_ratio,
            "returns/mean": masked_mean(returns, mask).item(),
            "returns/var": _safe_var(returns, mask),
            "val/vpred": masked_mean(vpreds, mask).item(),
            "val/error": masked_mean((vpreds - returns) ** 2, mask).item(),
            "val/clipfrac": vf_clipfrac.item(),
            "val/mean": masked_mean(old_values, mask).item(),
            "val/var": _safe_var(old_values, mask),
        }
        if entropy is not None:
            stats["policy/entropy"] = masked_mean(entropy, mask).item()
    return LossOutput(pg_loss, value_loss, skipped, stats)


def _safe_var(values: torch.Tensor, mask: torch.Tensor) -> float:
    return masked_var(values, mask).item() if mask.sum() > 1 else 0.0


# ----------------------------------------------------------------------------- step stats
def sequence_stats(
    logprobs: torch.Tensor, kls: torch.Tensor, non_score: torch.Tensor, mask: torch.Tensor
) -> dict[str, Any]:
    """Per-response sums that the classic `objective/*` stats average over the batch.

    objective/kl is the mean over responses of the summed per-token KL estimate (what the
    adaptive controller compares with `target`); objective/entropy is the mean summed
    negative log-prob of the sampled tokens.
    """
    return {
        "kl": (kls * mask).sum(-1).tolist(),
        "neg_logprob": (-logprobs * mask).sum(-1).tolist(),
        "non_score": (non_score * mask).sum(-1).tolist(),
        "tokens": mask.sum(-1).tolist(),
    }


def mean_of(dicts: Sequence[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean of flat stat dicts (a key is averaged over the dicts that have it)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            sums[k] = sums.get(k, 0.0) + float(v)
            counts[k] = counts.get(k, 0) + 1
    return {k: sums[k] / counts[k] for k in sums}
