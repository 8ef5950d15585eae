"""PPO checkpoints: trainable weights, optimizer, KL controller and step, written atomically.

A checkpoint is a directory `checkpoints/step_NNNNNN/` that appears in one rename once every
file in it is complete, so a kill at any moment leaves either the old or the new one. Only the
trainable parameters are stored (all of them, or the LoRA adapter and the value head). Every
step reseeds its random generators from (seed, step), so no RNG state needs saving.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from rlhfx.errors import UserError
from rlhfx.io import atomic_write_json

STATE = "state.json"


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:06d}"


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint (one with its state file), or None."""
    if not root.exists():
        return None
    done = [p for p in root.glob("step_*") if (p / STATE).exists()]
    return max(done, key=lambda p: p.name) if done else None


def save(
    root: Path, step: int, model: Any, optimizer: Any, state: dict[str, Any], keep: int,
    reward: Any = None,
) -> Path:
    """Write a checkpoint (main process only) and drop the older ones beyond `keep`.

    `reward` (the run's RewardSource): its `state_dict()` (e.g. running statistics of a
    `weighted` reward) is stored too, so a resumed run scores exactly as before."""
    import torch

    if reward is not None:
        state = {**state, "reward_state": reward.state_dict()}

    final = checkpoint_dir(root, step)
    tmp = root / f".tmp-{final.name}"
    for stale in root.glob(".tmp-step_*"):  # left by a kill in the middle of a save
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(model.trainable_state(), tmp / "trainable.pt")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    atomic_write_json(tmp / STATE, {"step": step, **state})
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in sorted(p for p in root.glob("step_*") if p != final)[: max(0, _count(root) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _count(root: Path) -> int:
    return sum(1 for _ in root.glob("step_*"))


def load(
    path: Path, model: Any, optimizer: Any, fingerprint: str, where: str, reward: Any = None
) -> dict[str, Any]:
    """Restore weights and optimizer (and `reward`'s state) in place; returns the saved state
    (step, controller...)."""
    import torch

    state = json.loads((path / STATE).read_text(encoding="utf-8"))
    if state.get("fingerprint") != fingerprint:
        raise UserError(
            f"{where}: the checkpoint in {path} was made with other PPO settings; rerun with "
            "--restart-from <stage> to start this stage again, or set another run.output_dir"
        )
    model.load_trainable_state(torch.load(path / "trainable.pt", map_location="cpu"))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu"))
    if reward is not None:
        reward.load_state_dict(state.get("reward_state") or {})
    return state
