"""One PPO step's statistics over every process: classic TRL names, under the loop's schema.

`kl_mean`, `train_loss` and `learning_rate` are schema names (docs/metrics.md); the rest is
PPO's own and appears as `ppo/<name>` (e.g. `ppo/kl_coef`, `ppo/loss/value`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def payload(out: Any, raw: list[float], counts: Mapping[str, int],
            query_lens: list[int]) -> dict[str, Any]:
    """What one process contributes to the step's record."""
    return {
        "seq": out.seq, "raw": raw, "scaled": out.scores, "qlen": query_lens,
        "train": out.train, "skipped": out.skipped_minibatches, "epochs": out.epochs_run,
        "idle": out.idle_minibatches, "counts": dict(counts), "timings": out.timings,
    }


def _flat(parts: list[dict[str, Any]], key: str, sub: str | None = None) -> list[float]:
    out: list[float] = []
    for p in parts:
        out += p[key].get(sub, []) if sub else p[key]
    return out


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _std(xs: list[float]) -> float | None:
    """Sample standard deviation (torch.std's default, which TRL logged)."""
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5


def combine(parts: list[dict[str, Any]], kl_coef: float, lr: float) -> dict[str, Any]:
    kl = _flat(parts, "seq", "kl")
    tokens = _flat(parts, "seq", "tokens")
    counts: dict[str, int] = {}
    for p in parts:
        for k, v in p["counts"].items():
            counts[k] = counts.get(k, 0) + v
    scaled = _flat(parts, "scaled")
    metrics: dict[str, Any] = {
        "kl_mean": _mean(kl),
        "kl_coef": kl_coef,
        "entropy": _mean(_flat(parts, "seq", "neg_logprob")),
        "mean_non_score_reward": (
            sum(_flat(parts, "seq", "non_score")) / sum(tokens) if tokens else None
        ),
        "scores_mean": _mean(scaled),
        "scores_std": _std(scaled),
        "queries_len_mean": _mean([float(x) for x in _flat(parts, "qlen")]),
        "learning_rate": lr,
        "kept": len(_flat(parts, "raw")),
        "too_short": counts.get("too_short", 0),
        "discarded": counts.get("discarded", 0),
        "cut": counts.get("cut", 0),
        "retokenized": counts.get("retokenized", 0),
        "dropped_prefix": counts.get("prefix", 0),
        "skipped_minibatches": sum(p["skipped"] for p in parts),
        "idle_minibatches": sum(p["idle"] for p in parts),
        "epochs": max(p["epochs"] for p in parts),
    }
    trains = [p["train"] for p in parts if p["train"]]
    for key in sorted({k for t in trains for k in t}):
        values = [t[key] for t in trains if key in t]
        metrics[key] = sum(values) / len(values)
    if trains:
        metrics["train_loss"] = metrics.get("loss/total")
        if metrics.get("returns/var"):
            metrics["val/var_explained"] = 1 - metrics["val/error"] / metrics["returns/var"]
    for key in sorted({k for p in parts for k in p["timings"]}):
        metrics["time/" + key.removeprefix("time/ppo/")] = max(
            p["timings"].get(key, 0.0) for p in parts
        )
    return metrics
