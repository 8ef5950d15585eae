"""Policy-gradient arithmetic shared by the critic-free algorithms (GRPO, RLOO, REINFORCE++,
online DPO): advantage estimators on sequence rewards, KL estimators, token-level rewards and
returns, the clipped surrogate loss, loss aggregation and the DPO loss.

Pure torch functions on tensors, with no model, loop or process group inside, so each can be
checked against hand-worked numbers. Conventions:

- `rewards`: shape (N,), one scalar per sampled response.
- `groups`: shape (N,), integer ids; responses with the same id answer the same prompt (any
  order, ids need not be contiguous).
- per-token tensors: shape (N, T) over response tokens, with `mask` (N, T) 1 for real tokens
  and 0 for padding.

Nonsense input (a group of one where a baseline needs others, a negative beta, clip ranges
out of bounds) raises ValueError; algorithms turn their own option checks into user errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

#: Names of the loss aggregations `aggregate` knows (see there).
LOSS_TYPES = ("sequence", "token", "dr_grpo")


# ------------------------------------------------------------------------------ groups


def _group_index(rewards: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of each sample's group in 0..G-1, size of each group)."""
    if rewards.dim() != 1 or groups.dim() != 1 or rewards.shape != groups.shape:
        raise ValueError(
            f"rewards and groups must be 1-D of the same length, got {tuple(rewards.shape)} "
            f"and {tuple(groups.shape)}"
        )
    _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    return inverse, counts


def _group_sums(values: torch.Tensor, inverse: torch.Tensor, n_groups: int) -> torch.Tensor:
    return torch.zeros(n_groups, dtype=values.dtype, device=values.device).index_add_(
        0, inverse, values
    )


def _require_group_size(counts: torch.Tensor, what: str) -> None:
    if not counts.numel():
        return  # no samples (every group was left out): nothing to compare
    smallest = int(counts.min())
    if smallest < 2:
        raise ValueError(f"{what} needs at least 2 samples per group (k >= 2); "
                         f"a group has {smallest}")


def group_mean(rewards: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Each sample's group mean reward, shape (N,)."""
    inverse, counts = _group_index(rewards, groups)
    sums = _group_sums(rewards, inverse, counts.numel())
    return (sums / counts.to(rewards.dtype))[inverse]


def group_advantages(
    rewards: torch.Tensor, groups: torch.Tensor, scale_by_std: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """GRPO's advantage: reward minus the group mean, divided by the group's std + eps.

    GRPO (Shao et al. 2024, DeepSeekMath) divides by the group std; the std is the sample
    (unbiased, k - 1) one, as TRL and verl compute it. Dr. GRPO (Liu et al. 2025) shows the
    division favours groups that are nearly all right or all wrong and drops it:
    `scale_by_std=False`. A group whose rewards are all equal gets zeros either way.
    """
    inverse, counts = _group_index(rewards, groups)
    _require_group_size(counts, "group_advantages")
    n = counts.numel()
    means = _group_sums(rewards, inverse, n) / counts.to(rewards.dtype)
    # Exact zeros for tied groups: their float mean can miss the common value by one ulp,
    # and that noise divided by an equally tiny std would be an advantage of order one.
    flat = equal_reward_groups(rewards, groups).samples
    centred = torch.where(flat, torch.zeros_like(rewards), rewards - means[inverse])
    if not scale_by_std:
        return centred
    var = _group_sums(centred * centred, inverse, n) / (counts.to(rewards.dtype) - 1)
    std = var.sqrt()[inverse]
    return torch.where(flat, centred, centred / (std + eps))


def leave_one_out_advantages(rewards: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """RLOO's advantage: r_i minus the mean reward of the other k - 1 samples of its group.

    Ahmadian et al. 2024 ("Back to Basics"); equals k / (k - 1) * (r_i - group mean).
    """
    inverse, counts = _group_index(rewards, groups)
    _require_group_size(counts, "leave_one_out_advantages")
    sums = _group_sums(rewards, inverse, counts.numel())[inverse]
    k = counts.to(rewards.dtype)[inverse]
    return rewards - (sums - rewards) / (k - 1)


#: Sums a tensor over every process (e.g. `torch.distributed.all_reduce` in place, returning
#: the tensor), so a batch statistic covers the global batch.
AllReduce = Callable[[torch.Tensor], torch.Tensor]


def batch_normalized(
    values: torch.Tensor,
    mask: torch.Tensor | None = None,
    eps: float = 1e-8,
    all_reduce: AllReduce | None = None,
    mean: float | torch.Tensor | None = None,
    std: float | torch.Tensor | None = None,
    unbiased: bool = False,
    shift_mean: bool = True,
) -> torch.Tensor:
    """Whiten over the whole batch: (x - mean) / (std + eps), masked entries left at 0.

    REINFORCE++ (Hu 2025, OpenRLHF) normalises advantages over the global batch rather than
    per prompt; PPO whitens its GAE advantages (and, as an option, its token rewards) over
    its batch. The std is the population one (divide by the count), or with `unbiased` the
    sample one (divide by count - 1, as classic PPO). `shift_mean=False` adds the mean back
    (scale only). For a batch spread over processes, pass `all_reduce` (it sums [sum, sum of
    squares, count] over processes) or the global `mean` and `std` computed elsewhere; with
    neither, this process's batch is used.
    """
    weights = torch.ones_like(values) if mask is None else mask.to(values.dtype)
    if weights.shape != values.shape:
        raise ValueError(f"mask shape {tuple(weights.shape)} != values {tuple(values.shape)}")
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    if mean is None:
        stats = torch.stack([
            (values * weights).sum(), (values * values * weights).sum(), weights.sum()
        ])
        if all_reduce is not None:
            stats = all_reduce(stats)
        total, squares, count = stats.unbind()
        if float(count) <= (1 if unbiased else 0):
            raise ValueError("batch_normalized: too few unmasked values")
        mean_t = total / count
        var = (squares / count - mean_t * mean_t).clamp_min(0)
        std_t = (var * count / (count - 1) if unbiased else var).sqrt()
    else:
        mean_t = torch.as_tensor(mean, dtype=values.dtype, device=values.device)
        std_t = torch.as_tensor(std, dtype=values.dtype, device=values.device)
    out = (values - mean_t) / (std_t + eps)
    return (out if shift_mean else out + mean_t) * weights


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the entries where `mask` is 1 (0 when there are none)."""
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1)


class EqualGroups(NamedTuple):
    #: (N,) bool: True for samples in a group whose rewards are all equal (no learning signal).
    samples: torch.Tensor
    #: How many groups are all-equal, and how many groups there are.
    n_equal: int
    n_groups: int


def equal_reward_groups(
    rewards: torch.Tensor, groups: torch.Tensor, atol: float = 0.0
) -> EqualGroups:
    """Groups whose rewards all tie (within `atol`): their group advantages are all zero.

    DAPO (Yu et al. 2025) drops them and samples more ("dynamic sampling"); counting them
    says how much of a batch taught nothing.
    """
    inverse, counts = _group_index(rewards, groups)
    n = counts.numel()
    high = torch.full((n,), -torch.inf, dtype=rewards.dtype, device=rewards.device)
    low = torch.full((n,), torch.inf, dtype=rewards.dtype, device=rewards.device)
    high = high.scatter_reduce(0, inverse, rewards, reduce="amax")
    low = low.scatter_reduce(0, inverse, rewards, reduce="amin")
    flat = (high - low) <= atol
    return EqualGroups(flat[inverse], int(flat.sum()), n)


class Pairs(NamedTuple):
    #: Sample indices of the best and the worst response of each usable group.
    chosen: torch.Tensor
    rejected: torch.Tensor
    #: Groups skipped because their best and worst rewards tie.
    ties: int


def best_and_worst(rewards: torch.Tensor, groups: torch.Tensor) -> Pairs:
    """One (best, worst) pair per group for online DPO (the RLHFlow / LMFlow recipe).

    Among equal best (or worst) rewards the first sample in batch order is taken; a group
    whose best and worst tie has no preference in it and is skipped and counted.
    """
    inverse, counts = _group_index(rewards, groups)
    _require_group_size(counts, "best_and_worst")
    chosen: list[int] = []
    rejected: list[int] = []
    ties = 0
    for g in range(counts.numel()):
        members = (inverse == g).nonzero().flatten()
        values = rewards[members]
        best, worst = int(values.argmax()), int(values.argmin())
        if values[best] == values[worst]:
            ties += 1
            continue
        chosen.append(int(members[best]))
        rejected.append(int(members[worst]))
    return Pairs(torch.tensor(chosen, dtype=torch.long, device=rewards.device),
                 torch.tensor(rejected, dtype=torch.long, device=rewards.device), ties)


# ------------------------------------------------------------------------------ KL


def kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """The plain per-token estimator log p - log p_ref ("k1"; unbiased, can be negative)."""
    return logp - ref_logp


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's "k3" estimator exp(ref - logp) - (ref - logp) - 1 per token.

    Unbiased for KL(p || p_ref) under samples of p and never negative (e^x >= 1 + x); GRPO
    adds it to the loss with a coefficient beta.
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def full_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """The exact KL(p || p_ref) of each next-token distribution: [B, T, V] log-probs -> [B, T]."""
    return (logprobs.exp() * (logprobs - ref_logprobs)).sum(-1)


#: Per-token KL estimators on the sampled tokens' log-probs, by the name recipes use:
#: "kl" (k1), "abs" (|k1|), "mse" (k2 = (log ratio)^2 / 2), "k3". `full_kl` needs the whole
#: distributions instead.
KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "kl": kl,
    "abs": lambda logp, ref: (logp - ref).abs(),
    "mse": lambda logp, ref: 0.5 * (logp - ref).square(),
    "k3": k3_kl,
}


class KLController:
    """The KL coefficient of KL-in-reward shaping: fixed, or Ziegler et al.'s proportional
    controller that steers the per-response KL towards `target` (coef *= 1 + clip(KL /
    target - 1, +-0.2) * n / horizon)."""

    def __init__(self, value: float, target: float | None = None, horizon: float = 10000.0):
        self.value, self.target, self.horizon = value, target, horizon

    def update(self, current: float, n_samples: int) -> None:
        if self.target is None:
            return
        error = min(max(current / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_samples / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


# ------------------------------------------------------------------------------ scores


class RunningMoments:
    """Running mean and std of every score seen so far (Chan et al.'s parallel update).

    Starts at mean 0, std 1 as classic PPO's did, so the first batch dominates the first update.
    """

    def __init__(self) -> None:
        self.mean, self.var, self.std, self.count = 0.0, 1.0, 1.0, 1e-24

    def update(self, xs: list[float]) -> None:
        n = len(xs)
        if n == 0:
            return
        batch_mean = sum(xs) / n
        batch_var = sum((x - batch_mean) ** 2 for x in xs) / n
        delta = batch_mean - self.mean
        total = self.count + n
        old_sum = self.var * self.count + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = (old_sum + batch_var * n) / total
        self.std = (self.var * total / (total - 1)) ** 0.5 if total > 1 else 1.0
        self.count = total

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "std": self.std, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var = float(state["mean"]), float(state["var"])
        self.std, self.count = float(state["std"]), float(state["count"])


def scale_scores(
    scores: torch.Tensor, moments: RunningMoments | None, norm: bool, clip: float | None
) -> torch.Tensor:
    """Classic PPO's optional score scaling (/ running std), normalisation (- running mean)
    and clip. `moments` must already hold this batch; None skips the scaling."""
    if moments is not None:
        factor = moments.std + torch.finfo(scores.dtype).eps
        scores = (scores - moments.mean) / factor if norm else scores / factor
    if clip is not None:
        scores = scores.clamp(-clip, clip)
    return scores


# ------------------------------------------------------------------------------ token rewards


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token (rows must have one)."""
    lengths = mask.sum(dim=1)
    if bool((lengths <= 0).any()):
        raise ValueError("a response has no tokens (an all-zero mask row)")
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return (positions * (mask > 0)).amax(dim=1)


def token_rewards_with_kl(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """Per-token rewards: -beta * KL on every response token, the score added at the last one.

    The KL-in-reward shaping of classic RLHF PPO, used by RLOO and REINFORCE++.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    weights = mask.to(kl.dtype)
    rewards = -beta * kl * weights
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    return rewards.index_put((rows, last_token_index(mask)), scores.to(rewards.dtype),
                             accumulate=True)


def returns_to_go(
    token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0
) -> torch.Tensor:
    """G_t = r_t + gamma * G_{t'} over each row's model tokens, t' the next model token: a
    token the mask leaves out (padding, or text an environment wrote) is stepped over and
    gets 0."""
    weights = mask.to(token_rewards.dtype)
    rewards = token_rewards * weights
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        here = weights[:, t] > 0
        running = torch.where(here, rewards[:, t] + gamma * running, running)
        out[:, t] = running
    return out * weights


def gae(
    values: torch.Tensor, token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016): (advantages, returns).

    delta_t = r_t + gamma * V_t' - V_t and A_t = delta_t + gamma * lam * A_t', where t' is the
    next model token of the row (tokens the mask leaves out, padding or environment text, are
    stepped over; past the last one V = 0). returns = A + V, the value target. Both 0 off
    the mask.
    """
    weights = mask.to(token_rewards.dtype)
    values = values * weights
    rewards = token_rewards * weights
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        here = weights[:, t] > 0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = torch.where(here, delta + gamma * lam * running, running)
        next_value = torch.where(here, values[:, t], next_value)
        advantages[:, t] = running
    advantages = advantages * weights
    return advantages, (advantages + values) * weights


# ------------------------------------------------------------------------------ losses


class Surrogate(NamedTuple):
    #: (N, T) per-token loss (minus the clipped objective), 0 on padding.
    loss: torch.Tensor
    #: Share of real tokens where the clip is the active term, in total and by side.
    clip_fraction: float
    clip_low_fraction: float
    clip_high_fraction: float
    #: Mean probability ratio over real tokens.
    ratio_mean: float


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
) -> Surrogate:
    """PPO's clipped objective per token, with the ratio clipped to [1 - low, 1 + high].

    A separate, larger `clip_high` is DAPO's "clip-higher" (0.2 / 0.28 there): it lets
    unlikely tokens with positive advantage grow, against entropy collapse. `advantages` is
    (N,) per sequence (the same for every token) or (N, T) per token.
    """
    if not 0 <= clip_low < 1:
        raise ValueError(f"clip_low must be in [0, 1), got {clip_low}")
    if clip_high < 0:
        raise ValueError(f"clip_high must be >= 0, got {clip_high}")
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    weights = mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp)
    clipped_ratio = ratio.clamp(1 - clip_low, 1 + clip_high)
    plain, clipped = -ratio * advantages, -clipped_ratio * advantages
    loss = torch.maximum(plain, clipped) * weights
    with torch.no_grad():
        real = weights.sum().clamp_min(1)
        active = (clipped > plain).to(logp.dtype) * weights
        low = ((ratio < 1 - clip_low) & (advantages < 0)).to(logp.dtype) * weights
        high = ((ratio > 1 + clip_high) & (advantages > 0)).to(logp.dtype) * weights
        stats = (float(active.sum() / real), float(low.sum() / real), float(high.sum() / real),
                 float((ratio * weights).sum() / real))
    return Surrogate(loss, *stats)


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's value loss per token, 0.5 * max((V - R)^2, (clip(V, V_old +- clip) - R)^2), and
    where the clipped term is the larger (a bool tensor)."""
    clipped = torch.clamp(values, old_values - clip, old_values + clip)
    plain_loss, clipped_loss = (values - returns) ** 2, (clipped - returns) ** 2
    return 0.5 * torch.maximum(plain_loss, clipped_loss), clipped_loss > plain_loss


def aggregate(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str = "sequence",
    max_length: int | None = None,
    denominator: float | None = None,
) -> torch.Tensor:
    """One scalar from per-token losses.

    - "sequence": mean over each sequence's tokens, then over sequences (GRPO as published;
      a token of a short answer weighs more than one of a long answer).
    - "token": sum over every token / number of real tokens in the batch (DAPO): every token
      weighs the same.
    - "dr_grpo": sum over each sequence's tokens / a constant `max_length` (default: T), then
      mean over sequences (Dr. GRPO): no length normalisation bias.

    `denominator` replaces the count divided by ("token": tokens; the others: sequences), so
    a batch split into micro-batches or over processes can divide by the global count.
    """
    weights = mask.to(per_token_loss.dtype)
    masked = per_token_loss * weights
    if loss_type == "token":
        count = weights.sum().clamp_min(1) if denominator is None else denominator
        return masked.sum() / count
    if loss_type == "sequence":
        per_sequence = masked.sum(dim=1) / weights.sum(dim=1).clamp_min(1)
    elif loss_type == "dr_grpo":
        length = per_token_loss.shape[1] if max_length is None else max_length
        if length <= 0:
            raise ValueError(f"max_length must be > 0, got {length}")
        per_sequence = masked.sum(dim=1) / length
    else:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}; got {loss_type!r}")
    count = per_sequence.shape[0] if denominator is None else denominator
    return per_sequence.sum() / count


class DPOResult(NamedTuple):
    #: Mean loss over the pairs, and each pair's loss.
    loss: torch.Tensor
    losses: torch.Tensor
    #: Implicit rewards beta * (log p - log p_ref) of each chosen and rejected response.
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    #: Share of pairs whose chosen reward is above the rejected one.
    accuracy: float


def dpo_loss(
    policy_chosen_logp: torch.Tensor,
    policy_rejected_logp: torch.Tensor,
    ref_chosen_logp: torch.Tensor,
    ref_rejected_logp: torch.Tensor,
    beta: float = 0.1,
) -> DPOResult:
    """The DPO loss (Rafailov et al. 2023) on sequence log-probabilities (sums over tokens):

    -log sigmoid(beta * ((logp_w - ref_w) - (logp_l - ref_l))), averaged over pairs.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    chosen = beta * (policy_chosen_logp - ref_chosen_logp)
    rejected = beta * (policy_rejected_logp - ref_rejected_logp)
    losses = -torch.nn.functional.logsigmoid(chosen - rejected)
    accuracy = float((chosen > rejected).float().mean()) if losses.numel() else float("nan")
    return DPOResult(losses.mean(), losses, chosen.detach(), rejected.detach(), accuracy)


# ------------------------------------------------------------------------------ estimators


class EstimatorInputs(NamedTuple):
    """What an advantage estimator sees: the trained rows of one iteration on this process.

    `token_rewards` [N, T] hold each row's score on its last model token plus any per-token
    reward (the KL penalty, when the KL is in the reward); `scores` (N,) are the rows' plain
    scores; `groups` (N,) their prompt ids. `context_scores` / `context_groups` are scored
    samples of the same groups that are not trained on (their tokens are unusable): group
    baselines still count them.
    """

    token_rewards: torch.Tensor
    mask: torch.Tensor
    scores: torch.Tensor
    groups: torch.Tensor
    context_scores: torch.Tensor
    context_groups: torch.Tensor
    values: torch.Tensor | None = None
    gamma: float = 1.0
    lam: float = 1.0
    all_reduce: AllReduce | None = None


class Advantages(NamedTuple):
    #: (N,) one per response, or (N, T) per token (0 off the mask)
    advantages: torch.Tensor
    #: (N, T) what a critic learns towards, or the advantages when there is no critic
    returns: torch.Tensor


Estimator = Callable[[EstimatorInputs], Advantages]
#: Advantage estimators by name (verl's `adv_estimator`): token rewards, mask, group ids in;
#: advantages and returns out. `register_estimator` adds one.
ESTIMATORS: dict[str, Estimator] = {}


def register_estimator(name: str) -> Callable[[Estimator], Estimator]:
    def add(fn: Estimator) -> Estimator:
        ESTIMATORS[name] = fn
        return fn
    return add


def _with_context(x: EstimatorInputs, per_row: torch.Tensor,
                  fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`fn(values, groups)` over the rows and their context samples; the rows' part."""
    values = torch.cat([per_row.double(), x.context_scores.double().to(per_row.device)])
    groups = torch.cat([x.groups, x.context_groups.to(x.groups.device)])
    return fn(values, groups)[: per_row.shape[0]].to(x.token_rewards.dtype)


def _per_response(x: EstimatorInputs,
                  fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Advantages:
    """`fn(summed rewards, groups)` as each response's advantage (and return)."""
    adv = _with_context(x, x.token_rewards.sum(1), fn)
    return Advantages(adv, adv)


@register_estimator("grpo")
def grpo_estimator(x: EstimatorInputs) -> Advantages:
    """Each response's summed reward against its group: (r - mean) / std (GRPO)."""
    return _per_response(x, group_advantages)


@register_estimator("dr_grpo")
def dr_grpo_estimator(x: EstimatorInputs) -> Advantages:
    """GRPO's advantage without the division by the group std (Dr. GRPO)."""
    return _per_response(x, lambda r, g: group_advantages(r, g, scale_by_std=False))


@register_estimator("rloo")
def rloo_estimator(x: EstimatorInputs) -> Advantages:
    """Each response's summed reward minus the mean of the other responses to its prompt."""
    return _per_response(x, leave_one_out_advantages)


@register_estimator("reinforce_pp")
def reinforce_pp_estimator(x: EstimatorInputs) -> Advantages:
    """Returns-to-go of the token rewards, whitened over the whole batch of every process
    (REINFORCE++)."""
    returns = returns_to_go(x.token_rewards, x.mask, x.gamma)
    # every process must join the all-reduce, with or without rows of its own
    stats = torch.stack([(returns * x.mask).sum(), (returns * returns * x.mask).sum(),
                         x.mask.sum()]).double()
    if x.all_reduce is not None:
        stats = x.all_reduce(stats)
    total, squares, count = (float(v) for v in stats)
    if count <= 0:
        return Advantages(returns, returns)
    mean = total / count
    std = max(squares / count - mean * mean, 0.0) ** 0.5
    return Advantages(batch_normalized(returns, x.mask, mean=mean, std=std), returns)


@register_estimator("reinforce_pp_baseline")
def reinforce_pp_baseline_estimator(x: EstimatorInputs) -> Advantages:
    """REINFORCE++ with each score's group mean (of plain scores) taken off first."""
    means = _with_context(x, x.scores, group_mean)
    rows = torch.arange(x.mask.shape[0], device=x.mask.device)
    shifted = x.token_rewards.index_put((rows, last_token_index(x.mask)), -means,
                                        accumulate=True) if rows.numel() else x.token_rewards
    return reinforce_pp_estimator(x._replace(token_rewards=shifted))


@register_estimator("gae")
def gae_estimator(x: EstimatorInputs) -> Advantages:
    """Generalised advantage estimation over the critic's values (PPO)."""
    if x.values is None:
        raise ValueError("the gae estimator needs values (an algorithm with a critic)")
    advantages, returns = gae(x.values, x.token_rewards, x.mask, x.gamma, x.lam)
    return Advantages(advantages, returns)
