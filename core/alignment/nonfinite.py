"""A policy that diverged (NaN or infinite loss, gradient norm or sampling distribution) stops
the run in one line, before anything non-finite is stepped into the weights or saved.

The update code asks `step_allowed(loss, grad_norm)` just before each optimizer step; the
sampler checks its distributions (rollouts.py). The loop sets the policy for its updates
(`AlgorithmConfig.on_nonfinite`): `error` raises `NonFinite`, which the loop rewords with the
stage, iteration and settings to lower; `skip` drops that mini-batch's step and counts it
(`nonfinite_skipped_steps` in metrics.jsonl). Every process reaches the same verdict: the
gradient norm is taken after the gradients were averaged over processes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

from rlhfx.errors import UserError

MODES = ("error", "skip")


class NonFinite(UserError):
    """A metric of the update or the sampler is NaN or infinite."""

    def __init__(self, metric: str, value: float | str):
        self.metric, self.value = metric, value
        super().__init__(f"{metric} is {value}")


class Policy:
    """What to do with a non-finite step, and how many were skipped."""

    def __init__(self, mode: str = "error"):
        if mode not in MODES:
            raise ValueError(f"on_nonfinite: {mode!r} is not one of {MODES}")
        self.mode, self.skipped = mode, 0


_active = [Policy()]  # the innermost `policy()` last; outside any: error


@contextlib.contextmanager
def policy(mode: str) -> Iterator[Policy]:
    """Apply `mode` to the update steps inside; the yielded object counts skipped steps."""
    current = Policy(mode)
    _active.append(current)
    try:
        yield current
    finally:
        _active.remove(current)


def _as_float(value: Any) -> float:
    if hasattr(value, "full_tensor"):  # a DTensor (fsdp): the global value
        value = value.full_tensor()
    return float(value)


def step_allowed(loss: Any, grad_norm: Any) -> bool:
    """Whether the optimizer may step: True when the gradient norm is finite; else raise
    `NonFinite` (mode `error`) or count the step as skipped and return False (`skip`).

    `grad_norm` is the norm of the gradients every process will apply (after averaging);
    `loss` is this process's loss, named in the message when it is the cause."""
    norm = _as_float(grad_norm)
    if math.isfinite(norm):
        return True
    current = _active[-1]
    if current.mode == "skip":
        current.skipped += 1
        return False
    if loss is not None and not math.isfinite(_as_float(loss)):
        raise NonFinite("the loss", _as_float(loss))
    raise NonFinite("the gradient norm", norm)


def grad_norm(params: list[Any]) -> Any:
    """The total 2-norm of the gradients of `params` (a DTensor under fsdp)."""
    import torch

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads, 2.0)


def finite_weights(model: Any) -> bool:
    """Whether every weight of `model` is finite, agreed by every process (collective)."""
    import torch

    from rlhfx import distributed

    by_device: dict[Any, list[Any]] = {}  # one synchronisation per device, not per weight
    for p in model.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        if local.numel():
            by_device.setdefault(local.device, []).append(torch.isfinite(local.detach()).all())
    finite = all(bool(torch.stack(flags).all()) for flags in by_device.values())
    if distributed.world_size() > 1:
        return all(distributed.gather_objects(finite))
    return finite


def advice(stage: str, iteration: int, metric: str, value: Any, last_checkpoint: int) -> str:
    """The one-line message of a divergence, with the way out."""
    kept = (f"the checkpoint of iteration {last_checkpoint} is kept" if last_checkpoint
            else "no checkpoint was written yet")
    return (f"stages.{stage}: iteration {iteration}: {metric} is {value}: the policy diverged; "
            f"{kept}. Lower the learning rate (algorithm.learning_rate), clip the gradients "
            "(algorithm.max_grad_norm) or lower the sampling temperature, then rerun with "
            f"--restart-from {stage}; or set algorithm.on_nonfinite = \"skip\" to skip such "
            "update steps")
