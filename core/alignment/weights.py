"""The trainable part of a model: what checkpoints hold (all weights, or LoRA adapters).

A sharded (FSDP2) model's parameters are DTensors: each process holds a slice. Their state is
gathered into full tensors (collective: every process calls these functions, in the same order)
and loaded back by each process taking its own slice, so a checkpoint looks the same whether the
run was sharded or not.
"""

from __future__ import annotations

from typing import Any


def trainable_state(model: Any) -> dict[str, Any]:
    """Detached CPU copies of the parameters that train (all, or a LoRA adapter's), full
    tensors also when the model is sharded."""
    return {n: _full(p).detach().cpu().clone() for n, p in model.named_parameters()
            if p.requires_grad}


def load_trainable_state(model: Any, state: dict[str, Any]) -> None:
    """Copy `state` into the model's trainable parameters; all must be there."""
    import torch

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(state))
    if missing:
        raise RuntimeError(f"checkpoint lacks {len(missing)} parameters, e.g. {missing[0]}")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(_like(param, state[name]))


def _full(param: Any) -> Any:
    from torch.distributed.tensor import DTensor

    return param.full_tensor() if isinstance(param, DTensor) else param


def _like(param: Any, full: Any) -> Any:
    """`full` on the parameter's device and dtype; this process's slice of it when sharded."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    value = full.to(param.device, param.dtype)
    if isinstance(param, DTensor):
        # Every process holds the same full tensor (read from the checkpoint): each cuts its
        # own slice, nothing is sent.
        return distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None)
    return value
