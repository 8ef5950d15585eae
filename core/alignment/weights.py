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


def optimizer_state(model: Any, optimizer: Any) -> dict[str, Any]:
    """The optimizer's checkpoint state. Sharded (fsdp): gathered in full, keyed by parameter
    name (collective: every process calls it), so it reloads under fsdp with any process
    count; unsharded: torch's own state (parameters numbered)."""
    from rlhfx.sharding import holds_shards

    if not holds_shards(model):
        return dict(optimizer.state_dict())
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    return dict(get_optimizer_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True),
    ))


def load_optimizer_state(model: Any, optimizer: Any, state: dict[str, Any], where: str) -> None:
    """Restore `optimizer_state`; a checkpoint made under the other parallelism is refused in
    one line (`where` names the recipe key)."""
    from rlhfx.errors import UserError
    from rlhfx.sharding import holds_shards

    sharded = holds_shards(model)
    named = [p for g in state.get("param_groups", []) for p in g.get("params", [])]
    full = bool(named) and isinstance(named[0], str)  # gathered states name parameters
    if named and full != sharded:
        raise UserError(f"{where}: the checkpoint was made with parallelism = "
                        f"\"{'fsdp' if full else 'ddp'}\"; resume it with that setting")
    if not sharded:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    set_optimizer_state_dict(
        model, optimizer, optim_state_dict=state,
        options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
    )


def check_in_sync(model: Any, gather: Any) -> None:
    """Under data parallelism every process must hold the same weights: stop loudly if not.
    (Sharded, each process holds other slices by design: nothing to compare.) `gather` is
    the run's all-gather of a picklable value."""
    from rlhfx.sharding import holds_shards

    if holds_shards(model):
        return
    total = sum(float(p.detach().double().sum()) for p in model.parameters() if p.requires_grad)
    sums = gather(total)
    if len(sums) > 1 and max(sums) - min(sums) > 1e-6 * max(1.0, abs(sums[0])):
        raise RuntimeError(f"the processes' weights differ ({sums}); gradients were not "
                           "synchronised")


def held_mb(model: Any, optimizer: Any, gather: Any) -> float:
    """Parameter plus optimizer-state memory of the process that holds the most (MiB),
    counted from the tensors: under fsdp each process holds its shards only."""
    from rlhfx.sharding import local_parameter_bytes

    return float(max(gather(local_parameter_bytes(model, optimizer)))) / 2**20


class WithOptimizerState:
    """Checkpoint state of an algorithm that trains `self.policy` with `self.optimizer`
    (set in `setup`, with `self.run`): the policy's trainable weights and the optimizer state,
    gathered in full under fsdp, after checking that data-parallel processes agree."""

    policy: Any
    optimizer: Any
    run: Any

    def state_dict(self) -> dict[str, Any]:
        check_in_sync(self.policy, self.run.gather)
        return {"policy": trainable_state(self.policy),
                "optimizer": optimizer_state(self.policy, self.optimizer)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_trainable_state(self.policy, state["policy"])
        load_optimizer_state(self.policy, self.optimizer, state["optimizer"], self.run.where)
