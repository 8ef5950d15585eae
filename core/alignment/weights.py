"""The trainable part of a model: what checkpoints hold (all weights, or LoRA adapters)."""

from __future__ import annotations

from typing import Any


def trainable_state(model: Any) -> dict[str, Any]:
    """Detached CPU copies of the parameters that train (all, or a LoRA adapter's)."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: Any, state: dict[str, Any]) -> None:
    """Copy `state` into the model's trainable parameters; all must be there."""
    import torch

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(state))
    if missing:
        raise RuntimeError(f"checkpoint lacks {len(missing)} parameters, e.g. {missing[0]}")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state[name].to(param.device, param.dtype))
